"""Modules, layers, losses against closed forms, and saving to .npz without pickle."""
import numpy as np
import pytest

from tinygrad_mnist import Tensor, nn, manual_seed
from tinygrad_mnist.gradcheck import gradcheck

rng = np.random.default_rng(1)


def softmax_np(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def onehot(labels, n):
    return np.eye(n)[labels]


def test_cross_entropy_value_is_mean_negative_log_softmax():
    z = rng.normal(size=(6, 4))
    y = rng.integers(0, 4, size=6)
    loss = nn.cross_entropy(Tensor(z, dtype=np.float64), y)
    expected = -np.log(softmax_np(z)[np.arange(6), y]).mean()
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_cross_entropy_grad_is_softmax_minus_onehot():
    logits = Tensor(rng.normal(size=(8, 10)), requires_grad=True, dtype=np.float64)
    labels = rng.integers(0, 10, size=8)
    nn.cross_entropy(logits, labels).backward()
    expected = (softmax_np(logits.data) - onehot(labels, 10)) / 8      # dZ = (A - Y) / m
    np.testing.assert_allclose(logits.grad, expected, rtol=1e-10)


def test_cross_entropy_gradcheck_and_tensor_targets():
    logits = Tensor(rng.normal(size=(5, 3)), requires_grad=True, dtype=np.float64)
    labels = Tensor(np.array([0, 2, 1, 1, 0]))
    assert gradcheck(lambda z: nn.cross_entropy(z, labels) * 2.5, [logits])


def test_cross_entropy_finite_for_huge_logits():
    logits = Tensor([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4]], requires_grad=True)
    loss = nn.cross_entropy(logits, [1, 2])
    loss.backward()
    assert loss.item() == pytest.approx(1e4, rel=1e-6)   # row 0 misses by 2e4, row 1 is right
    assert np.isfinite(logits.grad).all()
    np.testing.assert_allclose(logits.grad, [[0.5, -0.5, 0.0], [0.0, 0.0, 0.0]], atol=1e-7)


def test_cross_entropy_rejects_bad_targets_with_shapes():
    z = Tensor(np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"\[0, 3\).*\(4, 3\)"):
        nn.cross_entropy(z, [0, 1, 3, 0])
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(3,\)"):
        nn.cross_entropy(z, [0, 1, 2])
    with pytest.raises(ValueError, match="integer"):
        nn.cross_entropy(z, [0.0, 1.0, 2.0, 0.0])
    with pytest.raises(ValueError, match=r"\(4, 3, 1\)"):
        nn.cross_entropy(Tensor(np.zeros((4, 3, 1))), [0, 1, 2, 0])


def test_mse_loss_value_and_grad():
    p = Tensor(rng.normal(size=(3, 2)), requires_grad=True, dtype=np.float64)
    t = rng.normal(size=(3, 2))
    assert nn.mse_loss(p, t).item() == pytest.approx(((p.data - t) ** 2).mean())
    nn.mse_loss(p, t).backward()
    np.testing.assert_allclose(p.grad, 2 * (p.data - t) / 6)
    with pytest.raises(ValueError, match=r"\(3, 2\).*\(2, 3\)"):
        nn.mse_loss(p, np.zeros((2, 3)))


def test_binary_cross_entropy_value_grad_and_clamp():
    p = Tensor(rng.uniform(0.1, 0.9, size=6), requires_grad=True, dtype=np.float64)
    t = (rng.random(6) < 0.5).astype(float)
    expected = -(t * np.log(p.data) + (1 - t) * np.log(1 - p.data)).mean()
    assert nn.binary_cross_entropy(p, t).item() == pytest.approx(expected)
    assert gradcheck(lambda p: nn.binary_cross_entropy(p, t), [p])
    edge = nn.binary_cross_entropy(Tensor([0.0, 1.0]), [1.0, 0.0])
    assert edge.item() == pytest.approx(100.0)            # each log clamped at -100
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        nn.binary_cross_entropy(Tensor([1.5]), [1.0])


def test_linear_matches_formula_and_default_init_is_kaiming_uniform():
    manual_seed(0)
    layer = nn.Linear(400, 300)
    bound = np.sqrt(6 / 400)
    w = layer.weight.data
    assert w.shape == (300, 400) and w.dtype == np.float32
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    assert w.std() == pytest.approx(bound / np.sqrt(3), rel=0.02)  # std of U(-b, b)
    np.testing.assert_array_equal(layer.bias.data, 0)
    x = rng.normal(size=(5, 400)).astype(np.float32)
    np.testing.assert_allclose(layer(x).data, x @ w.T, rtol=1e-5, atol=1e-5)
    assert np.abs(nn.Linear(50, 30, init="xavier").weight.data).max() <= np.sqrt(6 / 80)


def test_linear_grads_match_finite_differences():
    layer = nn.Linear(4, 3)
    x = Tensor(rng.normal(size=(5, 4)), requires_grad=True, dtype=np.float64)
    w = Tensor(layer.weight.data, requires_grad=True, dtype=np.float64)
    b = Tensor(rng.normal(size=3), requires_grad=True, dtype=np.float64)

    def f(x, w, b):
        layer.weight, layer.bias = w, b
        return (layer(x) ** 2).sum()
    assert gradcheck(f, [x, w, b])
    layer.bias = None
    assert gradcheck(lambda x, w: (setattr(layer, "weight", w) or layer(x)).sum() ** 2, [x, w])


def test_linear_accepts_batched_input_and_rejects_wrong_width():
    layer = nn.Linear(4, 2)
    x = Tensor(rng.normal(size=(3, 5, 4)))
    assert layer(x).shape == (3, 5, 2)
    with pytest.raises(ValueError, match=r"\(3, 5\).*4"):
        layer(Tensor(np.ones((3, 5))))


def test_parameters_are_found_recursively_in_order():
    class Net(nn.Module):
        def __init__(self):
            self.body = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
            self.heads = [nn.Linear(2, 1), nn.Linear(2, 1, bias=False)]
            self.extra = {"scale": Tensor(1.0, requires_grad=True)}
            self.frozen = Tensor(np.ones(3))              # no grad: not a parameter
            self.shared = self.body[0].weight              # counted once

        def forward(self, x):
            return self.body(x)

    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names == ["body.0.weight", "body.0.bias", "body.2.weight", "body.2.bias",
                     "heads.0.weight", "heads.0.bias", "heads.1.weight", "extra.scale"]
    assert len(net.parameters()) == 8


def test_tensor_stored_during_forward_is_not_a_parameter():
    class Caching(nn.Module):
        def __init__(self):
            self.layer = nn.Linear(3, 2)
            self.last_input = None

        def forward(self, x):
            self.last_input = x                    # kept for inspection, not learned
            self.hidden = self.layer(x)            # a new attribute, set during forward
            return self.hidden

    net = Caching()
    net(Tensor(np.ones((4, 3)), requires_grad=True))
    assert [n for n, _ in net.named_parameters()] == ["layer.weight", "layer.bias"]
    fresh = Caching()
    fresh.load_state_dict(net.state_dict())        # loads into a module that never ran
    np.testing.assert_array_equal(fresh.layer.weight.data, net.layer.weight.data)


def test_module_that_refers_to_its_parent_does_not_loop():
    class Child(nn.Module):
        def __init__(self, parent):
            self.parent = parent
            self.w = Tensor(np.ones(2), requires_grad=True)

    class Parent(nn.Module):
        def __init__(self):
            self.b = Tensor(np.zeros(2), requires_grad=True)
            self.child = Child(self)

    net = Parent()
    assert [n for n, _ in net.named_parameters()] == ["b", "child.w"]
    assert net.modules() == [net, net.child]
    net.eval()
    assert not net.training and not net.child.training
    assert list(net.state_dict()) == ["b", "child.w"]


def test_reassigned_or_deleted_attributes_follow_the_module():
    net = nn.Module()
    net.w = Tensor(np.ones(2), requires_grad=True)
    net.layers = []
    net.layers.append(nn.Linear(2, 2))             # a list filled after assignment
    assert [n for n, _ in net.named_parameters()] == ["w", "layers.0.weight", "layers.0.bias"]
    net.w = Tensor(np.ones(2))                     # now a constant
    del net.layers
    assert net.named_parameters() == []


def test_mlp_structure_and_zero_grad():
    mlp = nn.MLP([6, 5, 4, 3], activation="tanh", dropout=0.2)
    assert [repr(layer) for layer in mlp.layers] == ["Linear(6→5)", "Linear(5→4)", "Linear(4→3)"]
    assert [n for n, _ in mlp.named_parameters()] == [
        "layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias",
        "layers.2.weight", "layers.2.bias"]
    x = Tensor(rng.normal(size=(2, 6)))
    mlp.eval()
    a = mlp.layers[0](x).tanh()
    expected = mlp.layers[2](mlp.layers[1](a).tanh())
    np.testing.assert_allclose(mlp(x).data, expected.data, rtol=1e-6)
    mlp.train()
    nn.cross_entropy(mlp(x), [0, 2]).backward()
    assert all(p.grad is not None for p in mlp.parameters())
    mlp.zero_grad()
    assert all(p.grad is None for p in mlp.parameters())
    with pytest.raises(ValueError, match="activation"):
        nn.MLP([2, 2], activation="gelu")


def test_mlp_gradients_match_finite_differences():
    mlp = nn.MLP([4, 5, 3], activation="sigmoid")
    x = rng.normal(size=(6, 4))
    y = rng.integers(0, 3, size=6)
    params = [Tensor(p.data, requires_grad=True, dtype=np.float64) for p in mlp.parameters()]

    def loss(*ps):
        for layer, (w, b) in zip(mlp.layers, zip(ps[::2], ps[1::2])):
            layer.weight, layer.bias = w, b
        return nn.cross_entropy(mlp(Tensor(x, dtype=np.float64)), y)
    assert gradcheck(loss, params)


def test_dropout_respects_train_and_eval():
    manual_seed(3)
    drop = nn.Dropout(0.25)
    x = Tensor(np.ones((200, 100)), requires_grad=True)
    out = drop(x)
    kept = out.data != 0
    assert abs(kept.mean() - 0.75) < 0.01
    np.testing.assert_allclose(out.data[kept], 1 / 0.75)     # survivors scaled up
    out.sum().backward()
    np.testing.assert_allclose(x.grad, kept / 0.75)           # gradient follows the mask
    drop.eval()
    assert drop(x).data is x.data
    model = nn.MLP([3, 3, 2], dropout=0.5).eval()
    assert all(not m.training for m in model.modules())
    assert all(m.training for m in model.train().modules())
    with pytest.raises(ValueError, match="p must"):
        nn.Dropout(1.0)


def test_evaluating_restores_each_modules_own_mode():
    model = nn.MLP([3, 3, 2], dropout=0.5)
    model.layers[0].eval()                      # one module already in eval mode
    before = [m.training for m in model.modules()]
    with model.evaluating():
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == before
    from tinygrad_mnist.mnist.evaluation import predict_logits
    model.eval()
    x = np.ones((4, 3), np.float32)
    np.testing.assert_array_equal(predict_logits(model, x), predict_logits(model, x))
    assert not any(m.training for m in model.modules())   # an eval model stays in eval


def test_state_dict_round_trip_through_npz(tmp_path):
    a, b = nn.MLP([4, 3, 2]), nn.MLP([4, 3, 2])
    path = tmp_path / "model.npz"
    nn.save(a, path)
    assert sorted(np.load(path).files) == sorted(a.state_dict())
    nn.load(nn.MLP([4, 3, 2], activation="tanh", dropout=0.3), path)   # same names
    nn.load(b, path)
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert na == nb
        np.testing.assert_array_equal(pa.data, pb.data)
    x = Tensor(rng.normal(size=(2, 4)))
    np.testing.assert_array_equal(a(x).data, b(x).data)
    assert not list(tmp_path.glob(".tmp-*"))                   # no temporary file left behind


def test_load_refuses_pickle_and_bad_state_without_changing_the_model(tmp_path):
    model = nn.MLP([4, 3, 2])
    before = {k: v.copy() for k, v in model.state_dict().items()}
    state = model.state_dict()

    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, **{**state, "layers.0.weight": np.array([object()], dtype=object)})
    with pytest.raises(ValueError, match="pickled.npz"):
        nn.load(model, pickled)

    missing = tmp_path / "missing.npz"
    np.savez(missing, **{k: v for k, v in state.items() if k != "layers.1.bias"})
    with pytest.raises(KeyError, match="layers.1.bias"):
        nn.load(model, missing)

    wrong_shape = tmp_path / "shape.npz"
    np.savez(wrong_shape, **{**state, "layers.1.bias": np.zeros(5, np.float32)})
    with pytest.raises(ValueError, match=r"layers.1.bias.*\(5,\).*\(2,\)"):
        nn.load(model, wrong_shape)

    wrong_dtype = tmp_path / "dtype.npz"
    np.savez(wrong_dtype, **{**state, "layers.0.bias": np.zeros(3, np.int64)})
    with pytest.raises(TypeError, match="layers.0.bias.*int64"):
        nn.load(model, wrong_dtype)

    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="garbage.npz"):
        nn.load(model, garbage)

    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])            # nothing was half-loaded


def test_mlp_input_dropout_drops_pixels_in_training_only():
    """One linear layer and one image: d sum(out) / d W[:, j] = mask_j * x_j / (1 - p), so a
    dropped pixel's column is zero and a kept one is x_j scaled by 1/(1-p); eval is untouched."""
    p = 0.25
    x = np.random.default_rng(0).random((1, 400)) + 0.5          # no zero pixels
    plain = nn.MLP([400, 3])
    noisy = nn.MLP([400, 3], input_dropout=p)
    noisy.load_state_dict(plain.state_dict())
    manual_seed(3)
    noisy(Tensor(x)).sum().backward()
    grad = noisy.layers[0].weight.grad                            # (3, 400)
    dropped = np.all(grad == 0, axis=0)
    assert 0.15 < dropped.mean() < 0.35                           # about p of the pixels
    expected = np.where(dropped, 0.0, x[0] / (1 - p))
    np.testing.assert_allclose(grad, np.broadcast_to(expected, grad.shape), rtol=1e-6)
    noisy.eval(), plain.eval()
    np.testing.assert_allclose(noisy(Tensor(x)).data, plain(Tensor(x)).data)
    assert "input_dropout=0.25" in repr(noisy)

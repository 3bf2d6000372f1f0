"""Sequence layers: nn.Embedding, nn.LayerNorm, nn.RNN, nn.GRU, nn.LSTM and
nn.MultiheadAttention, against the equations written out in NumPy, against finite
differences, against PyTorch itself where it is installed (the same state_dict loads across),
and backpropagation through time under the jit."""
import warnings

import numpy as np
import pytest

from tinygrad_mnist import JitWarning, Tensor, func, jit, manual_seed, nn
from tinygrad_mnist.attention import causal_mask
from tinygrad_mnist.gradcheck import gradcheck

F64 = np.float64


def _double(module):
    """The module's parameters in float64 (for finite differences and exact comparisons)."""
    for p in module.parameters():
        p._data = p._data.astype(F64)
    return module


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


# ---------------------------------------------------------------- the equations in NumPy

def _numpy_lstm(x, params, layers, hidden):
    """PyTorch's LSTM equations, gates i, f, g, o, over (L, N, I)."""
    h_n, c_n = [], []
    for k in range(layers):
        w_ih, w_hh, b_ih, b_hh = (params[f"{n}_l{k}"] for n in ("weight_ih", "weight_hh",
                                                                   "bias_ih", "bias_hh"))
        h = np.zeros((x.shape[1], hidden))
        c = np.zeros_like(h)
        outputs = []
        for x_t in x:
            pre = x_t @ w_ih.T + b_ih + h @ w_hh.T + b_hh
            i, f, g, o = np.split(pre, 4, axis=-1)
            c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
            h = _sigmoid(o) * np.tanh(c)
            outputs.append(h)
        x = np.stack(outputs)
        h_n.append(h)
        c_n.append(c)
    return x, np.stack(h_n), np.stack(c_n)


def _numpy_gru(x, params, hidden):
    w_ih, w_hh, b_ih, b_hh = (params[f"{n}_l0"] for n in ("weight_ih", "weight_hh", "bias_ih",
                                                           "bias_hh"))
    h = np.zeros((x.shape[1], hidden))
    outputs = []
    for x_t in x:
        xr, xz, xn = np.split(x_t @ w_ih.T + b_ih, 3, axis=-1)
        hr, hz, hn = np.split(h @ w_hh.T + b_hh, 3, axis=-1)
        r, z = _sigmoid(xr + hr), _sigmoid(xz + hz)
        n = np.tanh(xn + r * hn)
        h = (1 - z) * n + z * h
        outputs.append(h)
    return np.stack(outputs), h[None]


def _numpy_attention(x, params, heads, mask=None):
    """(N, L, E) self-attention as nn.MultiheadAttention computes it."""
    n, length, e = x.shape
    d = e // heads
    q, k, v = np.split(x @ params["in_proj_weight"].T + params["in_proj_bias"], 3, axis=-1)
    split = [t.reshape(n, length, heads, d).transpose(0, 2, 1, 3) for t in (q, k, v)]
    scores = split[0] @ split[1].swapaxes(-1, -2) / np.sqrt(d)
    if mask is not None:
        scores = np.where(mask, -np.inf, scores)
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    out = (weights @ split[2]).transpose(0, 2, 1, 3).reshape(n, length, e)
    return out @ params["out_proj.weight"].T + params["out_proj.bias"], weights.mean(axis=1)


def _arrays(module):
    return {k: np.asarray(v.data if isinstance(v, Tensor) else v, dtype=F64)
            for k, v in module.state_dict().items()}


# ---------------------------------------------------------------- layouts and equations

@pytest.mark.parametrize("kind, gates", [("RNN", 1), ("GRU", 3), ("LSTM", 4)])
def test_recurrent_layers_have_pytorchs_parameters(kind, gates):
    manual_seed(0)
    layer = getattr(nn, kind)(3, 5, num_layers=2)
    shapes = {k: tuple(v.shape) for k, v in layer.state_dict().items()}
    assert shapes == {"weight_ih_l0": (5 * gates, 3), "weight_hh_l0": (5 * gates, 5),
                      "bias_ih_l0": (5 * gates,), "bias_hh_l0": (5 * gates,),
                      "weight_ih_l1": (5 * gates, 5), "weight_hh_l1": (5 * gates, 5),
                      "bias_ih_l1": (5 * gates,), "bias_hh_l1": (5 * gates,)}
    values = np.concatenate([p.data.ravel() for p in layer.parameters()])
    assert np.abs(values).max() <= 1 / np.sqrt(5) and values.std() > 0.2   # U(-1/sqrt(H), ..)


def test_lstm_follows_pytorchs_equations_and_gate_order():
    manual_seed(1)
    lstm = _double(nn.LSTM(3, 4, num_layers=2))
    x = np.random.default_rng(0).normal(size=(6, 2, 3))
    out, (h_n, c_n) = lstm(Tensor(x, dtype=F64))
    expected = _numpy_lstm(x, _arrays(lstm), 2, 4)
    for got, want in zip((out, h_n, c_n), expected):
        np.testing.assert_allclose(got.data, want, rtol=1e-12, atol=1e-14)
    batch_first = _double(nn.LSTM(3, 4, num_layers=2, batch_first=True))
    batch_first.load_state_dict(lstm.state_dict())
    out_bf, _ = batch_first(Tensor(x.transpose(1, 0, 2), dtype=F64))
    np.testing.assert_allclose(out_bf.data.transpose(1, 0, 2), expected[0], rtol=1e-12)
    single, (h1, _) = lstm(Tensor(x[:, 0], dtype=F64))                # unbatched (L, I)
    np.testing.assert_allclose(single.data, expected[0][:, 0], rtol=1e-12)
    assert h1.shape == (2, 4)


def test_gru_follows_pytorchs_equations_and_gate_order():
    manual_seed(2)
    gru = _double(nn.GRU(3, 4))
    x = np.random.default_rng(1).normal(size=(5, 2, 3))
    out, h_n = gru(Tensor(x, dtype=F64))
    want_out, want_h = _numpy_gru(x, _arrays(gru), 4)
    np.testing.assert_allclose(out.data, want_out, rtol=1e-12)
    np.testing.assert_allclose(h_n.data, want_h, rtol=1e-12)


@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
def test_backpropagation_through_time_equals_finite_differences(kind):
    manual_seed(3)
    layer = _double(getattr(nn, kind)(2, 3, num_layers=2))
    x0 = Tensor(np.random.default_rng(2).normal(size=(4, 2, 2)), dtype=F64, requires_grad=True)
    h0 = Tensor(np.random.default_rng(3).normal(size=(2, 2, 3)), dtype=F64, requires_grad=True)
    weights = np.random.default_rng(4).normal(size=(4, 2, 3))

    def loss(x, h, *params):
        state = (h, h * 0.5) if kind == "LSTM" else h
        out = func.functional_call(layer, dict(zip(layer.state_dict(), params)), (x, state))[0]
        return (out * Tensor(weights, dtype=F64)).sum()
    params = [Tensor(p.data, dtype=F64, requires_grad=True) for p in layer.parameters()]
    assert gradcheck(loss, [x0, h0, *params])


def test_multihead_attention_follows_the_equations_with_masks():
    manual_seed(4)
    attention = _double(nn.MultiheadAttention(8, 2, batch_first=True))
    x = np.random.default_rng(5).normal(size=(3, 5, 8))
    causal = causal_mask(5)
    np.testing.assert_array_equal(causal, np.triu(np.ones((5, 5), bool), 1))
    for mask in (None, causal):
        out, weights = attention(Tensor(x, dtype=F64), Tensor(x, dtype=F64),
                                 Tensor(x, dtype=F64), attn_mask=mask)
        want_out, want_weights = _numpy_attention(x, _arrays(attention), 2, mask)
        np.testing.assert_allclose(out.data, want_out, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(weights.data, want_weights, rtol=1e-10, atol=1e-12)
    assert np.all(weights.data[:, 0, 1:] == 0)         # the first position sees itself only
    padded = np.zeros((3, 5), bool)
    padded[1, 3:] = True
    _, weights = attention(Tensor(x, dtype=F64), Tensor(x, dtype=F64), Tensor(x, dtype=F64),
                           key_padding_mask=padded)
    assert np.all(weights.data[1, :, 3:] == 0) and np.all(weights.data[0, :, 3:] > 0)


def test_multihead_attention_gradients_equal_finite_differences():
    manual_seed(5)
    attention = _double(nn.MultiheadAttention(4, 2))
    rng = np.random.default_rng(6)
    x = Tensor(rng.normal(size=(3, 2, 4)), dtype=F64, requires_grad=True)
    weights = rng.normal(size=(3, 2, 4))

    def loss(x, *params):
        out, _ = func.functional_call(attention, dict(zip(attention.state_dict(), params)),
                                      (x, x, x), {"is_causal": True})
        return (out * Tensor(weights, dtype=F64)).sum()
    params = [Tensor(p.data, dtype=F64, requires_grad=True) for p in attention.parameters()]
    assert gradcheck(loss, [x, *params])


def test_embedding_rows_and_their_gradient_add_up():
    manual_seed(6)
    table = nn.Embedding(5, 3)
    assert table.weight.shape == (5, 3) and 0.5 < table.weight.data.std() < 1.5   # N(0, 1)
    indices = np.array([[1, 0, 3], [2, 2, 4]])
    out = table(indices)
    np.testing.assert_array_equal(out.data, table.weight.data[indices])
    out.sum().backward()
    np.testing.assert_array_equal(table.weight.grad, np.array([1, 1, 2, 1, 1])[:, None] *
                                  np.ones((1, 3)))
    with pytest.raises(IndexError, match="embedding: an index is out of range for a table "
                                         "of 5 rows"):
        table(np.array([5]))
    with pytest.raises(TypeError, match="embedding: indices must be integers"):
        table(Tensor([0.0]))


def test_layer_norm_normalizes_each_row_and_is_pytorchs_module():
    norm = nn.LayerNorm((2, 3))
    assert {k: tuple(v.shape) for k, v in norm.state_dict().items()} == {"weight": (2, 3),
                                                                         "bias": (2, 3)}
    x = np.random.default_rng(7).normal(size=(4, 2, 3)) * 5 + 2
    y = norm(Tensor(x, dtype=F64)).data
    np.testing.assert_allclose(y.reshape(4, -1).mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(y.reshape(4, -1).var(axis=1), 1, rtol=1e-4)
    with pytest.raises(ValueError, match=r"LayerNorm: input of shape \(4, 3\) does not end "
                                         r"in normalized_shape \(2, 3\)"):
        norm(Tensor(np.zeros((4, 3))))


# ---------------------------------------------------------------- the jit and vmap

def test_an_unrolled_lstm_step_replays_under_the_jit_once_per_length():
    """Backpropagation through time is plain backward: a 28-step LSTM classifier's training
    step records once per sequence length and replays the same numbers as eager steps."""
    from tinygrad_mnist import optim

    def make():
        manual_seed(7)
        lstm, head = nn.LSTM(28, 16, batch_first=True), nn.Linear(16, 10)
        return lstm, head, optim.Adam(lstm.parameters() + head.parameters(), lr=0.01)

    def step_of(lstm, head, opt):
        def step(x, y):
            opt.zero_grad()
            out, _ = lstm(x)
            loss = nn.cross_entropy(head(out[:, -1]), y)
            loss.backward()
            opt.step()
            return loss.detach()
        return step
    eager, replayed = make(), make()
    eager_step, jitted = step_of(*eager), jit(step_of(*replayed))
    rng = np.random.default_rng(8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", JitWarning)
        for length in (28, 28, 28, 12, 12):
            x = Tensor(rng.normal(size=(4, length, 28)).astype(np.float32))
            y = rng.integers(0, 10, size=4)
            np.testing.assert_allclose(jitted(x, y).item(), eager_step(x, y).item(),
                                       rtol=1e-5)
    assert jitted.recordings == 2                       # one per sequence length
    for a, b in zip(eager[0].parameters(), replayed[0].parameters()):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-4, atol=1e-6)


def test_per_example_gradients_of_a_gru_equal_a_loop():
    manual_seed(9)
    gru = _double(nn.GRU(2, 3, batch_first=True))
    params = {k: Tensor(v.data, dtype=F64) for k, v in gru.state_dict().items()}
    xs = Tensor(np.random.default_rng(9).normal(size=(4, 5, 2)), dtype=F64)

    def loss(p, x):
        out, _ = func.functional_call(gru, p, (x[None],))
        return (out[0, -1] ** 2).sum()
    per_example = func.vmap(func.grad(loss), in_axes=(None, 0))(params, xs)
    for i in range(4):
        one = func.grad(loss)(params, xs[i])
        for name in params:
            np.testing.assert_allclose(per_example[name].data[i], one[name].data, rtol=1e-10,
                                       atol=1e-12)


# ---------------------------------------------------------------- PyTorch itself

@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM", "MultiheadAttention"])
def test_a_state_dict_loads_into_pytorch_and_gives_its_numbers(kind):
    torch = pytest.importorskip("torch")
    manual_seed(10)
    if kind == "MultiheadAttention":
        ours, theirs = nn.MultiheadAttention(8, 2), torch.nn.MultiheadAttention(8, 2)
    else:
        ours = getattr(nn, kind)(3, 4, num_layers=2, batch_first=True)
        theirs = getattr(torch.nn, kind)(3, 4, num_layers=2, batch_first=True)
    state = ours.state_dict()
    assert list(state) == list(theirs.state_dict())
    theirs.load_state_dict({k: torch.tensor(np.asarray(v.data if isinstance(v, Tensor) else v))
                            for k, v in state.items()})
    x = np.random.default_rng(11).normal(size=(2, 5, 3 if kind != "MultiheadAttention" else 8))
    x = x.astype(np.float32)
    if kind == "MultiheadAttention":
        ours_out = ours(Tensor(x), Tensor(x), Tensor(x), is_causal=True,
                        attn_mask=np.triu(np.ones((2, 2), bool), 1))[0].data
        mask = torch.triu(torch.ones(2, 2, dtype=torch.bool), 1)
        theirs_out = theirs(*(torch.tensor(x),) * 3, attn_mask=mask)[0].detach().numpy()
    else:
        ours_out = ours(Tensor(x))[0].data
        theirs_out = theirs(torch.tensor(x))[0].detach().numpy()
    np.testing.assert_allclose(ours_out, theirs_out, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- MNIST as sequences

@pytest.mark.slow
@pytest.mark.parametrize("arch, parameters", [("lstm", 82_186), ("vit", 139_018)])
def test_the_trainer_reads_digits_as_sequences(arch, parameters, tmp_path, mnist_dir, capsys):
    """--arch lstm (28 rows) and --arch vit (16 patches) go through the whole trainer: the
    jit, checkpoints, --resume, eval."""
    from tinygrad_mnist.mnist import cli
    from tinygrad_mnist.mnist.models import build
    assert sum(p.size for p in build(arch).parameters()) == parameters
    out = tmp_path / arch
    common = ["--arch", arch, "--subset", "1000", "--data-dir", str(mnist_dir), "--out",
              str(out), "--quiet", "--threads", "1"]
    assert cli.main(["train", *common, "--epochs", "1"]) == 0
    assert cli.main(["train", *common, "--epochs", "2", "--resume"]) == 0
    import json
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["config"]["optimizer"] == "adam"
    assert metrics["test_accuracy"] > 0.2            # twice chance after 2,000 images: learning
    capsys.readouterr()
    assert cli.main(["eval", "--model", str(out / "model.npz"), "--quiet"]) == 0
    said = capsys.readouterr().out.splitlines()[-1]          # every test image, not --subset's
    assert said.endswith("on 10000 mnist test images") and float(said.split()[2][:-1]) > 15


def test_the_gates_picture_shows_the_gates_the_lstm_used():
    """examples/digit_sequences.py hears each LSTM step's pre-activations through the observer
    seam: the gates computed from them, run through the LSTM's equations, give the model's
    own last state and answer."""
    import importlib.util
    from conftest import ROOT
    from tinygrad_mnist import no_grad, observe
    from tinygrad_mnist.mnist.models import RowLSTM
    spec = importlib.util.spec_from_file_location("digit_sequences",
                                                  ROOT / "examples" / "digit_sequences.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    manual_seed(0)
    model = RowLSTM().eval()
    image = np.random.default_rng(0).normal(size=(1, 784)).astype(np.float32)
    with no_grad(), observe(example.Heard("lstm_cell")) as heard:
        logits = model(Tensor(image))
    assert len(heard.seen) == 28
    H = 128
    c = np.zeros(H)
    for (pre, _), _ in heard.seen:
        pre = pre[0].astype(np.float64)
        i, f, o = (example._sigmoid(pre[k * H:(k + 1) * H]) for k in (0, 1, 3))
        c = f * c + i * np.tanh(pre[2 * H:3 * H])
    h = example._sigmoid(pre[3 * H:]) * np.tanh(c)
    np.testing.assert_allclose(h, heard.seen[-1][1][0, :H], rtol=1e-4, atol=1e-6)
    expected = h @ model.head.weight.data.T.astype(np.float64) + model.head.bias.data
    np.testing.assert_allclose(logits.data[0], expected, rtol=1e-4, atol=1e-5)


def test_an_unrolled_lstm_keeps_21_values_per_unit_a_step_and_backward_frees_them():
    """The memory of backpropagation through time, as the README gives it: each step of an
    LSTM (batch N, H units) keeps 21 N H values until backward (the step's input projection
    4H, h W_hh^T 4H, the gates' pre-activations 4H and activations 4H, tanh(g) H, [h | c] 2H,
    tanh(c) H, the stacked output H); backward frees them all, leaving the gradients."""
    import gc
    import tracemalloc
    manual_seed(0)
    N, H = 128, 128                                   # the row LSTM's
    lstm = nn.LSTM(28, H, batch_first=True)

    def held(length):
        x = Tensor(np.random.default_rng(0).normal(size=(N, length, 28)).astype(np.float32))
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            out, (h, c) = lstm(x)
            loss = h.sum()
            forward = tracemalloc.get_traced_memory()[0] - base
            loss.backward()
            del out, h, c, loss
            gc.collect()
            after = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
        for p in lstm.parameters():
            p.grad = None
        return forward, after
    short, _ = held(10)
    long, after = held(30)
    per_step = (long - short) / 20
    assert per_step == pytest.approx(21 * N * H * 4, rel=0.05)          # float32 values
    gradients = sum(p.size for p in lstm.parameters()) * 4
    assert gradients <= after <= gradients + 64 * 1024                 # the graph is gone

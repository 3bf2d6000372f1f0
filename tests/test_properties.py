"""Property-based tests: random expression graphs against finite differences, extreme logits
through cross_entropy, and save/load round trips of random models."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tinygrad_mnist import Tensor, nn
from tinygrad_mnist.gradcheck import gradcheck

# smooth ops, bounded where they could overflow, so finite differences are exact enough
UNARY = [
    ("tanh", lambda x: x.tanh()),
    ("sigmoid", lambda x: x.sigmoid()),
    ("exp_tanh", lambda x: x.tanh().exp()),
    ("log1p_sq", lambda x: (x * x + 1).log()),
    ("sqrt1p_sq", lambda x: (x * x + 1).sqrt()),
    ("square", lambda x: x ** 2 * 0.5),
    ("neg", lambda x: -x),
    ("softmax", lambda x: x.softmax(axis=-1) if x.ndim else x),
    ("log_softmax", lambda x: x.log_softmax(axis=-1) * 0.3 if x.ndim else x),
    ("transpose", lambda x: x.T),
]
BINARY = [
    ("add", lambda a, b: a + b),
    ("sub", lambda a, b: a - b),
    ("mul", lambda a, b: a * b),
    ("div", lambda a, b: a / (b * b + 1)),
    ("maximum_shifted", lambda a, b: a.maximum(b + 10)),
]


@st.composite
def broadcast_shapes(draw):
    """A base shape and up to three leaf shapes that broadcast against it."""
    base = tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=3)))
    leaves = []
    for _ in range(draw(st.integers(1, 3))):
        drop = draw(st.integers(0, len(base)))
        shape = tuple(1 if draw(st.booleans()) else n for n in base[drop:])
        leaves.append(shape)
    return base, leaves


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shapes=broadcast_shapes(), data=st.data())
def test_random_graphs_match_finite_differences(shapes, data):
    base, leaf_shapes = shapes
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16)))
    leaves = [Tensor(rng.normal(size=s), requires_grad=True, dtype=np.float64)
              for s in leaf_shapes]
    steps = data.draw(st.lists(st.tuples(st.booleans(), st.integers(0, 99)), min_size=1,
                               max_size=30))

    def f(*xs):
        nodes = list(xs)
        out = nodes[0]
        for binary, k in steps:
            if binary:
                other = nodes[k % len(nodes)]
                try:
                    out = BINARY[k % len(BINARY)][1](out, other)
                except ValueError:
                    pass                         # shapes that do not broadcast: skip the pair
            else:
                out = UNARY[k % len(UNARY)][1](out)
            nodes.append(out)
        weights = np.linspace(-1, 1, out.size).reshape(out.shape) if out.ndim else 0.7
        return (out * weights).sum()

    assert gradcheck(f, leaves, atol=1e-5, rtol=1e-4)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 8), c=st.integers(2, 10), scale=st.sampled_from([1.0, 1e3, 1e4, 1e30]),
       seed=st.integers(0, 2 ** 16))
def test_cross_entropy_stays_finite_for_extreme_logits(n, c, scale, seed):
    rng = np.random.default_rng(seed)
    logits = Tensor((rng.uniform(-1, 1, size=(n, c)) * scale).astype(np.float32),
                    requires_grad=True)
    labels = rng.integers(0, c, size=n)
    loss = nn.cross_entropy(logits, labels)
    loss.backward()
    assert np.isfinite(loss.item()) and loss.item() >= 0
    assert np.isfinite(logits.grad).all()
    np.testing.assert_allclose(logits.grad.sum(axis=1), 0, atol=1e-5)   # softmax - onehot
    assert np.all(np.abs(logits.grad) <= 1 / n + 1e-6)


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 12), min_size=2, max_size=5),
       activation=st.sampled_from(["relu", "sigmoid", "tanh"]),
       dropout=st.sampled_from([0.0, 0.3]), seed=st.integers(0, 1000))
def test_save_load_round_trip_of_random_models(tmp_path_factory, sizes, activation, dropout,
                                               seed):
    path = tmp_path_factory.mktemp("models") / "model.npz"
    model = nn.MLP(sizes, activation=activation, dropout=dropout)
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data[...] = rng.normal(size=p.shape)
    nn.save(model, path, meta={"sizes": sizes})
    copy = nn.load(nn.MLP(sizes, activation=activation), path)
    assert nn.load_meta(path) == {"sizes": sizes}
    for (na, pa), (nb, pb) in zip(model.named_parameters(), copy.named_parameters()):
        assert na == nb and pa.dtype == pb.dtype
        np.testing.assert_array_equal(pa.data, pb.data)
    x = Tensor(rng.normal(size=(3, sizes[0])))
    np.testing.assert_array_equal(model.eval()(x).data, copy(x).data)

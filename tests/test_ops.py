"""Every op of the API against central finite differences in float64."""
import numpy as np
import pytest

from tinygrad_mnist import Tensor
from tinygrad_mnist.gradcheck import gradcheck

rng = np.random.default_rng(0)

# pairs that broadcast in both directions, with 0-d tensors on either side
SHAPES = [((), ()), ((3,), (3,)), ((2, 3), (3,)), ((3,), (2, 3)), ((2, 3), (1, 3)),
          ((4, 1), (1, 5)), ((), (2, 3)), ((2, 3), ()), ((2, 1, 3), (4, 1))]


def t64(shape, low=None, high=None):
    data = rng.normal(size=shape) if low is None else rng.uniform(low, high, size=shape)
    return Tensor(data, requires_grad=True, dtype=np.float64)


def off_kink(shape, kinks=(0.0,)):
    """Normal samples moved away from the points where the op has no derivative."""
    x = rng.normal(size=shape)
    for k in kinks:
        x[np.abs(x - k) < 1e-2] = k + 0.5
    return Tensor(x, requires_grad=True, dtype=np.float64)


BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "pow": lambda a, b: a ** b,
    "maximum": lambda a, b: a.maximum(b),
    "minimum": lambda a, b: a.minimum(b),
}


@pytest.mark.parametrize("name", BINARY)
@pytest.mark.parametrize("sa, sb", SHAPES)
def test_binary_op_grad(name, sa, sb):
    a = t64(sa, 0.5, 2.0)                      # positive: a ** b and log(a) are defined
    b = t64(sb, 0.5, 2.0) if name != "sub" else t64(sb)
    if name in ("maximum", "minimum"):
        b = Tensor(b.data + 3.0 * (rng.random(sb) < 0.5) - 1.5, requires_grad=True,
                   dtype=np.float64)           # a and b differ by a margin: no ties
    weights = rng.normal(size=np.broadcast_shapes(sa, sb))   # a non-uniform upstream grad
    assert gradcheck(lambda a, b: (BINARY[name](a, b) * weights).sum(), [a, b])


@pytest.mark.parametrize("name, op", [
    ("radd", lambda a: 2.5 + a), ("rsub", lambda a: 2.5 - a), ("rmul", lambda a: 2.5 * a),
    ("rdiv", lambda a: 2.5 / a), ("rpow", lambda a: 2.5 ** a), ("neg", lambda a: -a),
    ("pow_const", lambda a: a ** 3), ("pow_half", lambda a: a ** 0.5), ("square", lambda a: a ** 2),
    ("numpy_left", lambda a: np.full(a.shape, 1.5) * a),
])
def test_constant_operand_grad(name, op):
    a = t64((2, 3), 0.5, 2.0)
    assert gradcheck(lambda a: (op(a) * np.arange(6.0).reshape(2, 3)).sum(), [a])


UNARY = {
    "exp": (lambda x: x.exp(), None),
    "log": (lambda x: x.log(), (0.2, 3.0)),
    "sqrt": (lambda x: x.sqrt(), (0.2, 3.0)),
    "abs": (lambda x: x.abs(), "kink"),
    "relu": (lambda x: x.relu(), "kink"),
    "sigmoid": (lambda x: x.sigmoid(), None),
    "tanh": (lambda x: x.tanh(), None),
    "clip": (lambda x: x.clip(-0.5, 0.7), "clip"),
    "softmax": (lambda x: x.softmax(), None),
    "softmax_axis0": (lambda x: x.softmax(axis=0), None),
    "log_softmax": (lambda x: x.log_softmax(), None),
    "log_softmax_neg_axis": (lambda x: x.log_softmax(axis=-2), None),
}


@pytest.mark.parametrize("name", UNARY)
@pytest.mark.parametrize("shape", [(), (5,), (3, 4)])
def test_unary_op_grad(name, shape):
    op, domain = UNARY[name]
    if name.startswith(("softmax", "log_softmax")) and len(shape) < 2:
        shape = (4,) if "neg_axis" not in name and "axis0" not in name else (3, 4)
    if domain == "kink":
        x = off_kink(shape)
    elif domain == "clip":
        x = off_kink(shape, kinks=(-0.5, 0.7))
    elif domain is None:
        x = t64(shape)
    else:
        x = t64(shape, *domain)
    weights = rng.normal(size=op(x).shape)
    assert gradcheck(lambda x: (op(x) * weights).sum(), [x])


REDUCTIONS = {"sum": lambda x, **k: x.sum(**k), "mean": lambda x, **k: x.mean(**k),
              "max": lambda x, **k: x.max(**k)}


@pytest.mark.parametrize("name", REDUCTIONS)
@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 2), (-1, -3), ()])
@pytest.mark.parametrize("keepdims", [False, True])
def test_reduction_grad(name, axis, keepdims):
    x = t64((2, 3, 4))
    out_shape = REDUCTIONS[name](x, axis=axis, keepdims=keepdims).shape
    weights = rng.normal(size=out_shape)
    assert gradcheck(lambda x: (REDUCTIONS[name](x, axis=axis, keepdims=keepdims)
                                * weights).sum(), [x])


def test_reduction_of_scalar():
    x = t64(())
    assert gradcheck(lambda x: x.sum() * 3 + x.mean() + x.max(), [x])


def test_max_ties_share_the_gradient_evenly():
    x = Tensor([1.0, 3.0, 3.0, 2.0], requires_grad=True)
    x.max().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 0.5, 0.5, 0.0])
    y = Tensor([[5.0, 5.0, 5.0], [1.0, 2.0, 0.0]], requires_grad=True)
    y.max(axis=1).sum().backward()
    np.testing.assert_allclose(y.grad, [[1 / 3, 1 / 3, 1 / 3], [0, 1, 0]])


def test_maximum_tie_splits_between_inputs():
    a, b = Tensor(2.0, requires_grad=True), Tensor(2.0, requires_grad=True)
    a.maximum(b).backward()
    assert a.grad == 0.5 and b.grad == 0.5


MATMUL_SHAPES = [((3, 4), (4, 5)), ((4,), (4,)), ((4,), (4, 5)), ((3, 4), (4,)),
                 ((2, 3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)), ((2, 1, 3, 4), (5, 4, 2)),
                 ((4,), (2, 4, 5)), ((2, 3, 4), (4,))]


@pytest.mark.parametrize("sa, sb", MATMUL_SHAPES)
def test_matmul_grad(sa, sb):
    a, b = t64(sa), t64(sb)
    out = a @ b
    np.testing.assert_allclose(out.data, a.data @ b.data)
    weights = rng.normal(size=out.shape)
    assert gradcheck(lambda a, b: ((a @ b) * weights).sum(), [a, b])


def test_rmatmul_with_numpy_left_operand():
    w = t64((4, 2))
    x = rng.normal(size=(3, 4))
    assert gradcheck(lambda w: (x @ w).sum(), [w])


@pytest.mark.parametrize("name, op, shape", [
    ("reshape", lambda x: x.reshape(4, -1), (2, 6)),
    ("reshape_tuple", lambda x: x.reshape((3, 2, 2)), (12,)),
    ("flatten", lambda x: x.flatten(), (2, 3, 2)),
    ("transpose", lambda x: x.transpose(), (2, 3, 4)),
    ("transpose_perm", lambda x: x.transpose(1, 2, 0), (2, 3, 4)),
    ("transpose_swap_two", lambda x: x.transpose(0, 2), (2, 3, 4)),
    ("T", lambda x: x.T, (3, 5)),
    ("slice", lambda x: x[1:, ::2], (4, 5)),
    ("int_and_none", lambda x: x[2, None, -3:], (4, 5)),
    ("ellipsis", lambda x: x[..., 1], (2, 3, 4)),
    ("int_array", lambda x: x[np.array([0, 2, 3])], (4, 5)),
    ("int_array_repeated", lambda x: x[np.array([1, 1, 3, 1])], (4, 5)),
    ("pair_of_arrays_repeated", lambda x: x[np.array([0, 0, 2]), np.array([1, 1, 4])], (3, 5)),
    ("list_index", lambda x: x[[2, 2, 0]], (3, 2)),
    ("bool_mask", lambda x: x[np.array([True, False, True])], (3, 2)),
    ("tensor_index", lambda x: x[Tensor(np.array([1, 0, 1]))], (3, 2)),
])
def test_shape_op_grad(name, op, shape):
    x = t64(shape)
    weights = rng.normal(size=op(x).shape)
    assert gradcheck(lambda x: (op(x) * weights).sum(), [x])


def test_repeated_indices_add_up():
    x = Tensor(np.zeros(4), requires_grad=True)
    x[np.array([1, 1, 1, 3])].sum().backward()
    np.testing.assert_array_equal(x.grad, [0, 3, 0, 1])


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concat_grad(axis):
    a, b, c = t64((2, 3)), t64((2, 3)), t64((2, 3))
    weights = rng.normal(size=Tensor.concat([a, b, c], axis=axis).shape)
    assert gradcheck(lambda a, b, c: (Tensor.concat([a, b, c], axis=axis) * weights).sum(),
                     [a, b, c])


def test_concat_of_different_lengths():
    a, b = t64((2, 3)), t64((4, 3))
    assert Tensor.concat([a, b]).shape == (6, 3)
    assert gradcheck(lambda a, b: (Tensor.concat([a, b]) ** 2).sum(), [a, b])


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_stack_grad(axis):
    a, b = t64((2, 3)), t64((2, 3))
    weights = rng.normal(size=Tensor.stack([a, b], axis=axis).shape)
    assert gradcheck(lambda a, b: (Tensor.stack([a, b], axis=axis) * weights).sum(), [a, b])


def test_forward_values_match_numpy():
    x = rng.normal(size=(3, 4))
    t = Tensor(x, dtype=np.float64)
    np.testing.assert_allclose(t.softmax().data, np.exp(x) / np.exp(x).sum(-1, keepdims=True))
    np.testing.assert_allclose(t.log_softmax(axis=0).data,
                               x - np.log(np.exp(x).sum(0, keepdims=True)))
    np.testing.assert_allclose(t.sigmoid().data, 1 / (1 + np.exp(-x)))
    np.testing.assert_allclose(t.max(axis=(0, 1)).data, x.max())
    np.testing.assert_allclose(t.clip(-0.1, 0.2).data, np.clip(x, -0.1, 0.2))


def test_softmax_and_sigmoid_are_finite_for_huge_inputs():
    x = Tensor([[1e4, -1e4, 0.0]], requires_grad=True)
    np.testing.assert_allclose(x.softmax().data, [[1.0, 0.0, 0.0]])
    assert np.isfinite(x.log_softmax().data).all()
    assert np.array_equal(x.sigmoid().data, [[1.0, 0.0, 0.5]])

"""NumPy's own functions on Tensors: each listed ufunc and function gives NumPy's value and
records the graph (gradients against finite differences), with broadcasting, with the Tensor
on either side and mixed with arrays; anything else is a TypeError that names the function."""
import numpy as np
import pytest

from tinygrad_mnist import Tensor
from tinygrad_mnist.gradcheck import gradcheck

rng = np.random.default_rng(0)
POSITIVE = (0.5, 2.0)

# name -> (function of (a, b), shape of a, shape of b, domain of both)
BINARY = {
    "add": (np.add, (2, 3), (3,), None), "subtract": (np.subtract, (2, 1), (1, 3), None),
    "multiply": (np.multiply, (2, 3), (), None), "divide": (np.divide, (3,), (2, 3), POSITIVE),
    "true_divide": (np.true_divide, (2, 3), (2, 3), POSITIVE),
    "power": (np.power, (2, 3), (3,), POSITIVE), "maximum": (np.maximum, (2, 3), (3,), None),
    "minimum": (np.minimum, (3,), (2, 3), None), "matmul": (np.matmul, (2, 3), (3, 4), None),
    "dot": (np.dot, (2, 3), (3,), None),
}
UNARY = {
    "negative": (np.negative, None), "exp": (np.exp, None), "log": (np.log, POSITIVE),
    "sqrt": (np.sqrt, POSITIVE), "abs": (np.abs, None), "absolute": (np.absolute, None),
    "tanh": (np.tanh, None), "sum": (lambda x: np.sum(x, axis=0), None),
    "mean": (lambda x: np.mean(x, axis=(0, 1), keepdims=True), None),
    "max": (lambda x: np.max(x, axis=1), None), "amax": (lambda x: np.amax(x), None),
    "transpose": (np.transpose, None), "reshape": (lambda x: np.reshape(x, (3, 2)), None),
    "clip": (lambda x: np.clip(x, -0.5, 0.5), None),
    "where": (lambda x: np.where(np.array([[True], [False]]), x, -x), None),
}
JOINS = {"concatenate": lambda a, b: np.concatenate([a, b], axis=1),
         "stack": lambda a, b: np.stack([a, b], axis=0)}


def data(shape, domain):
    x = rng.normal(size=shape) if domain is None else rng.uniform(*domain, size=shape)
    x[np.abs(x) < 0.05] = 0.3                         # away from abs/max/clip kinks
    return x


def t64(array):
    return Tensor(array, requires_grad=True, dtype=np.float64)


@pytest.mark.parametrize("name", BINARY)
@pytest.mark.parametrize("sides", ["tensor, tensor", "tensor, array", "array, tensor"])
def test_binary_functions_value_and_gradient(name, sides):
    fn, sa, sb, domain = BINARY[name]
    a, b = data(sa, domain), data(sb, domain)
    if name in ("maximum", "minimum"):
        b = b + 3.0 * (rng.random(sb) < 0.5) - 1.5                 # no ties
    expected = fn(a, b)
    left, right = [t64(v) if side == "tensor" else v for v, side in zip((a, b),
                                                                     sides.split(", "))]
    out = fn(left, right)
    assert isinstance(out, Tensor) and out.requires_grad
    np.testing.assert_allclose(out.data, expected, rtol=1e-12)
    tensors = [v for v in (left, right) if isinstance(v, Tensor)]
    weights = rng.normal(size=np.shape(expected))

    def f(*ts):
        it = iter(ts)
        args = [next(it) if isinstance(v, Tensor) else v for v in (left, right)]
        return (fn(*args) * weights).sum()
    assert gradcheck(f, tensors)


@pytest.mark.parametrize("name", UNARY)
def test_unary_functions_value_and_gradient(name):
    fn, domain = UNARY[name]
    x = data((2, 3), domain)
    out = fn(t64(x))
    assert isinstance(out, Tensor) and out.requires_grad
    np.testing.assert_allclose(out.data, fn(x), rtol=1e-12)
    weights = rng.normal(size=np.shape(fn(x)))
    assert gradcheck(lambda t: (fn(t) * weights).sum(), [t64(x)])


@pytest.mark.parametrize("name", JOINS)
def test_joining_tensors_and_arrays(name):
    fn = JOINS[name]
    a, b = rng.normal(size=(2, 3)), rng.normal(size=(2, 3))
    out = fn(t64(a), b)                                       # a tensor beside an array
    np.testing.assert_allclose(out.data, fn(a, b))
    weights = rng.normal(size=out.shape)
    assert gradcheck(lambda x, y: (fn(x, y) * weights).sum(), [t64(a), t64(b)])


def test_numpy_scalars_and_arrays_on_the_left_keep_the_tensor_dtype():
    t = Tensor([1.0, 2.0])                                     # float32
    for out in (np.float64(2.0) * t, np.ones(2) + t, np.exp(t), np.sum(t)):
        assert isinstance(out, Tensor) and out.dtype == np.float32


@pytest.mark.parametrize("call, words", [
    (lambda t: np.cumsum(t), ["np.cumsum", "no Tensor rule"]),
    (lambda t: np.argmax(t), ["np.argmax", "t.argmax"]),
    (lambda t: np.arctan(t), ["np.arctan", "no Tensor rule"]),
    (lambda t: np.add.reduce(t), ["np.add.reduce"]),
    (lambda t: np.exp(t, out=np.empty(2)), ["np.exp", "out"]),
])
def test_a_function_without_a_rule_is_a_type_error_naming_it(call, words):
    with pytest.raises(TypeError) as info:
        call(Tensor([1.0, 2.0], requires_grad=True))
    for word in words:
        assert word in str(info.value)


def test_asarray_still_gives_the_data():
    t = Tensor([1.0, 2.0], requires_grad=True)
    assert np.asarray(t) is t.data
    assert np.asarray(t, dtype=np.float64).dtype == np.float64

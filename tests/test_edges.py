"""Regression tests for the wrong gradients and crashes found by fuzzing against PyTorch and by
new users, one per reproduced case, and the PyTorch habits users reach for: each new method's
values against NumPy or a closed form and its gradients against finite differences."""
import numpy as np
import pytest

from tinygrad_mnist import Tensor, grad, hessian, hvp, nn
from tinygrad_mnist.gradcheck import (GradcheckError, NotDifferentiableError, gradcheck,
                                      gradgradcheck)
from tinygrad_mnist.ops import Op

rng = np.random.default_rng(7)


def t64(values, requires_grad=True):
    return Tensor(np.asarray(values, dtype=np.float64), requires_grad=requires_grad,
                  dtype=np.float64)


# ---------------------------------------------------------------- 1. 0-d gradients added up

def test_a_scalar_used_twice_backpropagates_into_an_index():
    x = Tensor([1.0, 2.0, 3.0], requires_grad=True)
    t = x[1]
    (t * t).backward()                          # two 0-d gradients meet at t
    np.testing.assert_array_equal(x.grad, [0.0, 4.0, 0.0])


def test_a_users_op_receives_an_array_even_where_0_d_gradients_add_up():
    seen = []

    class Record(Op):
        def forward(self, x):
            return x * 1.0

        def backward(self, gz):
            seen.append(type(gz))
            return (gz,)

    x = Tensor(3.0, requires_grad=True)
    y = Record.apply(x)
    (y * y + y).backward()
    assert seen == [np.ndarray] and x.grad == 7.0


# ---------------------------------------------------------------- 2. np.where's condition

@pytest.mark.parametrize("condition", [np.array([1, 0, 2]), np.array([1.0, 0.0, -0.5]),
                                       np.array([True, False, True])])
def test_where_counts_any_non_zero_condition_as_true(condition):
    x, y = t64([1.0, 2.0, 3.0]), t64([4.0, 5.0, 6.0])
    out = np.where(condition, x, y)
    np.testing.assert_array_equal(out.data, np.where(condition, x.data, y.data))
    out.sum().backward()
    np.testing.assert_array_equal(x.grad, [1, 0, 1])
    np.testing.assert_array_equal(y.grad, [0, 1, 0])


def test_where_of_two_constants_on_a_tensor_condition_is_a_constant_tensor():
    t = Tensor([1.0, 2.0, 3.0])
    out = np.where(t > 1.5, 1.0, 0.0)
    assert isinstance(out, Tensor) and not out.requires_grad
    np.testing.assert_array_equal(out.data, [0.0, 1.0, 1.0])


def test_where_with_a_condition_alone_gives_the_indices():
    (indices,) = np.where(Tensor([0.0, 2.0, 0.0, 1.0]))
    np.testing.assert_array_equal(indices, [1, 3])


# ---------------------------------------------------------------- 3. a zero base

def test_power_with_a_zero_base_has_pytorchs_exponent_gradient():
    e = t64([1.0, 2.0, 3.0])
    (t64([0.0, 0.0, 2.0], requires_grad=False) ** e).sum().backward()
    np.testing.assert_allclose(e.grad, [0.0, 0.0, 8 * np.log(2)])


def test_power_with_a_zero_base_is_finite_at_second_order():
    e = t64([0.0, 0.5, 2.0])
    base = np.zeros(3)
    (g,) = grad((base ** e).sum(), e, create_graph=True)
    (h,) = grad(g.sum(), e)
    assert np.isfinite(g.data).all() and np.isfinite(h.data).all()
    np.testing.assert_array_equal(g.data, [0.0, 0.0, 0.0])


# ---------------------------------------------------------------- 4. np.array copies

def test_np_array_of_a_tensor_is_a_copy_and_asarray_shares():
    t = Tensor([1.0, 2.0])
    a = np.array(t)
    a[0] = 99
    assert t.data[0] == 1.0
    assert np.asarray(t) is t.data
    with pytest.raises(ValueError, match="copy"):
        np.asarray(t, dtype=np.float64, copy=False)


# ---------------------------------------------------------------- 5. high curvature is smooth

@pytest.mark.parametrize("f", [lambda x: (1e4 * x ** 2).sum(),
                               lambda x: (-1000 * x ** 2).exp().sum(),
                               lambda x: ((100 * x).tanh() ** 2).sum()],
                         ids=["1e4 x^2", "exp(-1000 x^2)", "tanh(100 x)^2"])
def test_gradcheck_passes_smooth_functions_of_high_curvature_at_zero(f):
    assert gradcheck(f, [t64(np.zeros(3))])


@pytest.mark.parametrize("f", [lambda x: x.relu().sum(), lambda x: abs(x).sum(),
                               lambda x: (abs(x) + 1e4 * x ** 2).sum()],
                         ids=["relu", "abs", "abs plus curvature"])
def test_gradcheck_still_calls_a_kink_a_kink(f):
    with pytest.raises(NotDifferentiableError, match="element"):
        gradcheck(f, [t64(np.zeros(2))])


def test_gradcheck_can_return_false_instead_of_raising():
    class WrongSquare(Op):
        def forward(self, x):
            self.x = x
            return x * x

        def backward(self, gz):
            return (gz * 3 * self.x,)

    x = t64([0.5, -1.5])
    assert gradcheck(lambda x: WrongSquare.apply(x).sum(), [x], raise_exception=False) is False
    assert gradgradcheck(lambda x: (x * x * x).sum(), [x], raise_exception=False) is True
    with pytest.raises(GradcheckError):
        gradcheck(lambda x: WrongSquare.apply(x).sum(), [x])


# ---------------------------------------------------------------- 6. hvp and hessian inputs

def test_hvp_of_one_tensor_returns_one_array_of_its_shape():
    for shape in [(13,), (1, 4), (2, 3)]:
        w = t64(rng.normal(size=shape), requires_grad=False)
        v = rng.normal(size=shape)
        product = hvp(lambda w: (w ** 3).sum(), w, v)       # H = diag(6 w)
        assert isinstance(product, np.ndarray) and product.shape == shape
        np.testing.assert_allclose(product, 6 * w.data * v)
        (as_tuple,) = hvp(lambda w: (w ** 3).sum(), [w], [v])
        np.testing.assert_allclose(as_tuple, product)


def test_hessian_of_a_tuple_gives_blocks():
    a, b = t64([1.0, 2.0]), t64([3.0])
    blocks = hessian(lambda a, b: (a * a * b).sum(), (a, b))    # f = b * sum(a^2)
    np.testing.assert_allclose(blocks[0][0], 2 * 3.0 * np.eye(2))
    np.testing.assert_allclose(blocks[0][1], [[2.0], [4.0]])       # d2f / da db = 2a
    np.testing.assert_allclose(blocks[1][0], [[2.0, 4.0]])
    np.testing.assert_allclose(blocks[1][1], [[0.0]])
    np.testing.assert_allclose(hessian(lambda a: (a * a).sum(), a.reshape(1, 2)),
                               2 * np.eye(2))


# ---------------------------------------------------------------- 7. a lazily built layer

def test_a_sub_module_built_during_forward_is_registered_and_trained():
    class Lazy(nn.Module):
        def forward(self, x):
            if not hasattr(self, "fc"):
                self.fc = nn.Linear(x.shape[-1], 2)
                self.extra = [nn.ReLU(), nn.Linear(2, 1)]
            self.cache = self.fc(x)              # a tensor stored during forward: not a parameter
            h = self.extra[0](self.cache)
            return self.extra[1](h)

    model = Lazy()
    model(Tensor(np.ones((1, 3))))
    names = [n for n, _ in model.named_parameters()]
    assert names == ["fc.weight", "fc.bias", "extra.1.weight", "extra.1.bias"]


# ---------------------------------------------------------------- 8. a user's backward

def test_a_users_op_whose_backward_uses_np_cos_is_differentiable_twice():
    class MySin(Op):
        def forward(self, x):
            self.x = x
            return np.sin(x)

        def backward(self, gz):
            return (gz * np.cos(self.x),)

    x = t64([0.5, 1.2])
    (g,) = grad(MySin.apply(x).sum(), x, create_graph=True)
    (h,) = grad(g.sum(), x)
    np.testing.assert_allclose(g.data, np.cos(x.data))
    np.testing.assert_allclose(h.data, -np.sin(x.data))
    assert gradgradcheck(lambda x: MySin.apply(x).sum(), [x])


def test_a_backward_without_a_tensor_rule_names_the_op_and_the_remedy():
    class MyAtan(Op):
        def forward(self, x):
            self.x = x
            return np.arctan(x)

        def backward(self, gz):
            return (gz / (1 + np.square(self.x)),)

    x = t64([0.5])
    with pytest.raises(TypeError) as info:
        grad(MyAtan.apply(x).sum(), x, create_graph=True)
    message = str(info.value)
    for words in ("myatan", "create_graph=True", "np.square", "forward"):
        assert words in message


# ---------------------------------------------------------------- 9. layer sizes

@pytest.mark.parametrize("args, error, words", [
    ((-1, 2), ValueError, "in_features must not be negative"),
    ((2.5, 2), TypeError, "in_features must be an int"),
    ((2, True), TypeError, "out_features must be an int"),
])
def test_linear_with_a_bad_size_is_one_clear_error(args, error, words):
    with pytest.raises(error, match=words):
        nn.Linear(*args)


def test_linear_with_no_inputs_gives_its_bias_as_pytorch():
    layer = nn.Linear(0, 2)
    assert layer.weight.shape == (2, 0)
    np.testing.assert_array_equal(layer(Tensor(np.zeros((3, 0)))).data, np.zeros((3, 2)))


# ---------------------------------------------------------------- new methods: values

def test_sin_and_cos_match_numpy_and_their_derivatives():
    x = t64(rng.normal(size=5))
    np.testing.assert_allclose(x.sin().data, np.sin(x.data))
    np.testing.assert_allclose(np.cos(x).data, np.cos(x.data))
    (x.sin() + x.cos()).sum().backward()
    np.testing.assert_allclose(x.grad, np.cos(x.data) - np.sin(x.data))


@pytest.mark.parametrize("axis, ddof, keepdims", [(None, 0, False), (0, 1, False),
                                                  ((0, 2), 0, True), (-1, 2, False)])
def test_var_and_std_match_numpy(axis, ddof, keepdims):
    a = rng.normal(size=(3, 4, 5))
    t = Tensor(a, dtype=np.float64)
    np.testing.assert_allclose(t.var(axis=axis, ddof=ddof, keepdims=keepdims).data,
                               np.var(a, axis=axis, ddof=ddof, keepdims=keepdims))
    np.testing.assert_allclose(t.std(axis=axis, ddof=ddof, keepdims=keepdims).data,
                               np.std(a, axis=axis, ddof=ddof, keepdims=keepdims))


def test_var_gradient_is_the_closed_form():
    x = t64(rng.normal(size=6))
    x.var(ddof=1).backward()                    # d/dx_i = 2 (x_i - mean) / (n - 1)
    np.testing.assert_allclose(x.grad, 2 * (x.data - x.data.mean()) / 5)


def test_var_with_too_few_elements_is_inf_or_nan_as_numpy():
    with pytest.warns(RuntimeWarning):
        expected = np.var(np.array([1.0, 3.0]), ddof=2)
    np.testing.assert_array_equal(Tensor([1.0, 3.0]).var(ddof=2).data, expected)


def test_shape_helpers_match_pytorch():
    t = Tensor(np.arange(6.0).reshape(2, 1, 3))
    assert t.unsqueeze(0).shape == (1, 2, 1, 3) and t.unsqueeze(-1).shape == (2, 1, 3, 1)
    assert t.squeeze().shape == (2, 3) and t.squeeze(1).shape == (2, 3)
    assert t.squeeze(0).shape == (2, 1, 3)         # not of size 1: left as it is
    assert t.view(3, 2).shape == (3, 2) and t.view(-1).shape == (6,)
    with pytest.raises(ValueError, match="unsqueeze"):
        t.unsqueeze(4)
    np.testing.assert_array_equal(Tensor.cat([t, t], axis=1).data,
                                  np.concatenate([t.data, t.data], axis=1))


def test_constructors_match_numpy_and_pytorch_dtypes():
    assert Tensor.arange(5).dtype == np.int64
    np.testing.assert_array_equal(Tensor.arange(2, 8, 3).data, [2, 5])
    r = Tensor.arange(0, 1, 0.25)
    assert r.dtype == np.float32 and np.allclose(r.data, [0, 0.25, 0.5, 0.75])
    assert Tensor.arange(3, dtype=np.float64).dtype == np.float64
    u = Tensor.rand(1000, seed=3)
    assert u.dtype == np.float32 and 0 <= u.data.min() and u.data.max() < 1
    assert abs(u.data.mean() - 0.5) < 0.05
    np.testing.assert_array_equal(u.data, Tensor.rand(1000, seed=3).data)
    k = Tensor.randint(2, 5, (4, 100), seed=1)
    assert k.shape == (4, 100) and k.dtype == np.int64 and set(np.unique(k.data)) == {2, 3, 4}
    with pytest.raises(ValueError, match="randint"):
        Tensor.randint(3, 3, (2,))


def test_to_changes_dtype_and_the_gradient_comes_back_in_the_inputs_dtype():
    x = Tensor([1.0, 2.0], requires_grad=True)               # float32
    y = x.double()
    assert y.dtype == np.float64 and y.requires_grad
    (y * y).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad, [2.0, 4.0])
    assert x.float() is x and x.to("float32") is x and x.astype(np.float64).dtype == np.float64
    whole = x.to(np.int32)
    assert whole.dtype == np.int32 and not whole.requires_grad


def test_requires_grad_in_place_freezes_and_unfreezes_a_leaf():
    w = Tensor([1.0, 2.0])
    assert w.requires_grad_() is w and w.requires_grad
    (w * w).sum().backward()
    np.testing.assert_array_equal(w.grad, [2.0, 4.0])
    w.requires_grad_(False)
    assert not (w * 3).requires_grad
    with pytest.raises(ValueError, match="floating"):
        Tensor([1, 2]).requires_grad_()
    with pytest.raises(RuntimeError, match="leaf"):
        (Tensor([1.0], requires_grad=True) * 2).requires_grad_(False)


def test_linalg_norm_matches_numpy_and_is_zero_gradient_at_zero():
    a = rng.normal(size=(3, 4))
    t = Tensor(a, dtype=np.float64)
    for kwargs in ({}, {"axis": 0}, {"axis": 1, "keepdims": True}, {"ord": "fro"},
                   {"axis": (0, 1)}):
        np.testing.assert_allclose(np.linalg.norm(t, **kwargs).data, np.linalg.norm(a, **kwargs))
    v = a[0]
    for order in (1, 2, 3, np.inf, -np.inf):
        np.testing.assert_allclose(np.linalg.norm(Tensor(v, dtype=np.float64), ord=order).data,
                                   np.linalg.norm(v, ord=order))
    zero = t64(np.zeros(3))
    np.linalg.norm(zero).backward()
    np.testing.assert_array_equal(zero.grad, [0.0, 0.0, 0.0])
    with pytest.raises(TypeError, match="ord=2"):
        np.linalg.norm(t, ord=2)                       # the spectral norm of a matrix


# ---------------------------------------------------------------- losses

def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy_reductions_and_label_smoothing_are_the_closed_form(reduction, smoothing):
    z = rng.normal(size=(5, 4))
    y = rng.integers(0, 4, size=5)
    target = (1 - smoothing) * np.eye(4)[y] + smoothing / 4
    per_row = -(target * np.log(_softmax(z))).sum(axis=1)
    expected = {"mean": per_row.mean(), "sum": per_row.sum(), "none": per_row}[reduction]
    logits = t64(z)
    loss = nn.cross_entropy(logits, y, reduction=reduction, label_smoothing=smoothing)
    np.testing.assert_allclose(loss.data, expected, rtol=1e-12)
    upstream = rng.normal(size=loss.shape)
    loss.backward(upstream)
    scale = {"mean": upstream / 5, "sum": upstream, "none": upstream[:, None] if
             reduction == "none" else upstream}[reduction]
    np.testing.assert_allclose(logits.grad, (_softmax(z) - target) * scale, rtol=1e-10)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_and_binary_cross_entropy_reductions(reduction):
    p, t = rng.uniform(0.1, 0.9, size=(2, 3)), rng.uniform(size=(2, 3))
    reduce = {"mean": np.mean, "sum": np.sum, "none": lambda a: a}[reduction]
    np.testing.assert_allclose(nn.mse_loss(t64(p), t, reduction=reduction).data,
                               reduce((p - t) ** 2))
    np.testing.assert_allclose(
        nn.binary_cross_entropy(t64(p), t, reduction=reduction).data,
        reduce(-(t * np.log(p) + (1 - t) * np.log(1 - p))))


def test_bad_loss_options_are_errors_naming_the_loss():
    z = Tensor(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="cross_entropy: reduction"):
        nn.cross_entropy(z, [0, 1], reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        nn.cross_entropy(z, [0, 1], label_smoothing=1.5)
    with pytest.raises(ValueError, match="mse_loss: reduction"):
        nn.mse_loss(z, np.zeros((2, 3)), reduction=None)

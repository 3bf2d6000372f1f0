"""The checker itself: right on known derivatives, and it catches a wrong backward."""
import re

import numpy as np
import pytest

from tinygrad_mnist import Tensor, ops
from tinygrad_mnist.gradcheck import (GradcheckError, NotDifferentiableError, gradcheck,
                                      numerical_grad)


def test_numerical_grad_matches_closed_form():
    x = Tensor([0.3, -1.2, 2.0], dtype=np.float64)
    y = Tensor([[1.0, 2.0]], dtype=np.float64)
    gx, gy = numerical_grad(lambda x, y: x.exp().sum() * y.sum(),
                            [x, y])
    np.testing.assert_allclose(gx, np.exp(x.data) * 3.0, rtol=1e-8)
    np.testing.assert_allclose(gy, np.full((1, 2), np.exp(x.data).sum()), rtol=1e-8)


def test_numerical_grad_works_in_float64_for_float32_inputs():
    x = Tensor([1.0, 2.0])                      # float32
    (g,) = numerical_grad(lambda x: (x * x * x).sum(), [x])
    np.testing.assert_allclose(g, 3 * x.data.astype(np.float64) ** 2, rtol=1e-8)
    assert x.dtype == np.float32                # the caller's tensor is untouched


def test_integer_inputs_get_no_numerical_grad():
    x = Tensor([1.0, 2.0, 3.0], requires_grad=True)
    idx = Tensor(np.array([2, 0]))
    g, none = numerical_grad(lambda x, i: x[i].sum(), [x, idx])
    assert none is None
    np.testing.assert_allclose(g, [1, 0, 1], atol=1e-8)
    assert gradcheck(lambda x, i: (x[i] ** 2).sum(), [x, idx])


class WrongSquare(ops.Op):
    """z = x**2, with a backward that forgets the factor 2."""
    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, gz):
        return (gz * self.x,)


def test_gradcheck_catches_a_wrong_backward_and_names_the_worst_element():
    x = Tensor([0.1, -3.0, 0.5], requires_grad=True, dtype=np.float64)
    with pytest.raises(GradcheckError) as info:
        gradcheck(lambda x: WrongSquare.apply(x).sum(), [x])
    message = str(info.value)
    assert "input 0" in message and "element (1,)" in message       # |x| largest at index 1
    assert "autograd -3" in message and "finite differences -6" in message


def test_gradcheck_reports_missing_gradient():
    x = Tensor([1.0, 2.0], requires_grad=True, dtype=np.float64)
    with pytest.raises(GradcheckError, match="no gradient"):
        gradcheck(lambda x: Tensor(x.data * 2, dtype=np.float64).sum(), [x])   # graph cut


class WrongColumn(ops.Op):
    """z = x * w for (3, 4) tensors, with a backward that doubles the gradient of column 2."""
    name = "wrong_column"

    def forward(self, x, w):
        self.x, self.w = x, w
        return x * w

    def backward(self, gz):
        scale = np.ones(self.x.shape[-1])
        scale[2] = 2.0
        return gz * self.w * scale, gz * self.x


@pytest.mark.parametrize("fast_mode", [False, True])
def test_gradcheck_checks_every_output_element_of_a_matrix_output(fast_mode):
    rng = np.random.default_rng(0)
    x = Tensor(rng.normal(size=(3, 4)), requires_grad=True, dtype=np.float64)
    w = Tensor(rng.normal(size=(3, 4)), dtype=np.float64)
    assert gradcheck(lambda x: x * w, [x], fast_mode=fast_mode)            # right: passes
    with pytest.raises(GradcheckError) as info:
        gradcheck(lambda x: WrongColumn.apply(x, w), [x], fast_mode=fast_mode)
    message = str(info.value)
    if fast_mode:
        assert "fast mode" in message and "input 0" in message and "projection" in message
    else:                     # the worst element is in column 2, checked through its output
        assert re.search(r"element \(\d, 2\) for output element \(\d, 2\)", message), message
        assert "autograd" in message and "finite differences" in message


def test_fast_mode_is_seeded_and_cheap_in_backward_passes():
    x = Tensor(np.linspace(-1, 1, 12).reshape(3, 4), requires_grad=True, dtype=np.float64)
    calls = []

    def f(x):
        calls.append(1)
        return x.tanh() * 2
    assert gradcheck(f, [x], fast_mode=True, seed=3)
    assert len(calls) == 3                    # one recorded evaluation, two perturbed ones
    calls.clear()
    assert gradcheck(f, [x])
    assert len(calls) == 1 + 2 * x.size       # the full Jacobian: two evaluations an element


@pytest.mark.parametrize("name, f, x", [
    ("relu at 0", lambda x: x.relu(), [0.0, 1.0]),
    ("abs at 0", lambda x: abs(x), [2.0, 0.0]),
    ("max tie", lambda x: x.max(), [3.0, 3.0]),
    ("clip bound", lambda x: x.clip(0.0, 1.0), [1.0, 0.5]),
])
def test_a_kink_is_reported_as_not_differentiable(name, f, x):
    t = Tensor(x, requires_grad=True, dtype=np.float64)
    with pytest.raises(NotDifferentiableError, match=r"not differentiable at element .*left "
                                                     r"derivative .*right derivative"):
        gradcheck(lambda x: f(x).sum(), [t])


def test_a_model_with_dropout_in_training_mode_passes_gradcheck():
    from tinygrad_mnist import manual_seed, nn
    manual_seed(0)
    model = nn.MLP([5, 8, 3], activation="tanh", dropout=0.5)
    for p in model.parameters():
        p.data = p.data.astype(np.float64)
    x = Tensor(np.random.default_rng(1).normal(size=(4, 5)), dtype=np.float64)
    weight = model.layers[0].weight

    def loss(w):
        model.layers[0].weight = w
        return nn.cross_entropy(model(x), [0, 1, 2, 1])
    assert model.training
    assert gradcheck(loss, [weight])
    assert gradcheck(loss, [weight], fast_mode=True)


def test_numerical_grad_needs_a_scalar():
    x = Tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(ValueError, match=r"one element.*\(2,\)"):
        numerical_grad(lambda x: x * 2, [x])


def test_numerical_grad_perturbs_any_memory_layout():
    a = np.arange(6.0).reshape(2, 3) + 1.0
    x = Tensor(a.T, dtype=np.float64, requires_grad=True)     # Fortran-ordered data
    assert x.data.flags.f_contiguous and not x.data.flags.c_contiguous
    weights = np.arange(6.0).reshape(3, 2)
    (g,) = numerical_grad(lambda x: (x * x * weights).sum(), [x])
    np.testing.assert_allclose(g, 2 * a.T * weights, rtol=1e-8)
    assert gradcheck(lambda x: (x * x * weights).sum(), [x])


def _user_op(jvp_sign=1.0, batch=True, backward_factor=3.0):
    from tinygrad_mnist import ops as ops_module

    class Cube(ops_module.Op):
        """z = x^3 * s    dz/dx = 3 x^2 s    dz/ds = x^3"""
        def forward(self, x, s):
            self.x, self.s = x, s
            return x ** 3 * s

        def backward(self, gz):
            return gz * backward_factor * self.x ** 2 * self.s, gz * self.x ** 3

        def jvp(self, tx, ts):                     # a tangent None is zero
            out = 0.0
            if tx is not None:
                out = out + tx * 3 * self.x ** 2 * self.s
            if ts is not None:
                out = out + ts * self.x ** 3
            return jvp_sign * out
    if batch:
        from tinygrad_mnist.engine import batching
        Cube.batch = batching.elementwise
    return Cube


def test_check_op_runs_every_check_of_the_op_table_on_a_users_op():
    from tinygrad_mnist.gradcheck import check_op
    report = check_op(_user_op(), (2, 3), (3,))
    assert report == {"gradients by finite differences": "ok", "gradients of gradients": "ok",
                      "jvp against finite differences": "ok", "jvp against reverse mode": "ok",
                      "jacfwd against jacrev": "ok", "vmap against a loop": "ok"}
    assert "skipped" in check_op(_user_op(batch=False), (3,), (3,))["vmap against a loop"]


@pytest.mark.parametrize("wrong, message", [
    ({"backward_factor": 2.0}, "cube's gradients by finite differences differ"),
    ({"jvp_sign": -1.0}, "cube's jvp against finite differences differ"),
])
def test_check_op_names_the_op_and_what_differs(wrong, message):
    from tinygrad_mnist.gradcheck import GradcheckError, check_op
    with pytest.raises(GradcheckError, match=message):
        check_op(_user_op(**wrong), (2, 3), (3,))

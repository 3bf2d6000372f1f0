"""The checker itself: right on known derivatives, and it catches a wrong backward."""
import numpy as np
import pytest

from tinygrad_mnist import Tensor, ops
from tinygrad_mnist.gradcheck import GradcheckError, gradcheck, numerical_grad


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


def test_gradcheck_rejects_non_scalar_output():
    x = Tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(ValueError, match=r"scalar.*\(2,\)"):
        gradcheck(lambda x: x * 2, [x])


def test_numerical_grad_perturbs_any_memory_layout():
    a = np.arange(6.0).reshape(2, 3) + 1.0
    x = Tensor(a.T, dtype=np.float64, requires_grad=True)     # Fortran-ordered data
    assert x.data.flags.f_contiguous and not x.data.flags.c_contiguous
    weights = np.arange(6.0).reshape(3, 2)
    (g,) = numerical_grad(lambda x: (x * x * weights).sum(), [x])
    np.testing.assert_allclose(g, 2 * a.T * weights, rtol=1e-8)
    assert gradcheck(lambda x: (x * x * weights).sum(), [x])

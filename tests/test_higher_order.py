"""Gradients of gradients: grad(), create_graph, hessian, hvp and gradgradcheck, checked
against finite differences, closed forms and hand-computed steps."""
import gc
import weakref

import numpy as np
import pytest

from tinygrad_mnist import Tensor, grad, hessian, hvp, manual_seed, nn
from tinygrad_mnist.gradcheck import GradcheckError, gradcheck, gradgradcheck, numerical_grad
from tinygrad_mnist.ops import Op
from tinygrad_mnist import enable_grad

rng = np.random.default_rng(1)

# every op's second derivatives against finite differences: tests/test_ops.py


def t64(*values):
    return Tensor(np.array(values, dtype=np.float64).reshape(-1) if len(values) > 1 else
                  values[0], requires_grad=True, dtype=np.float64)


def test_third_derivative_of_a_cube():
    x = t64(2.0)
    (d1,) = grad(x ** 3, x, create_graph=True)
    (d2,) = grad(d1, x, create_graph=True)
    (d3,) = grad(d2, x)
    assert (d1.item(), d2.item(), d3.item()) == (12.0, 12.0, 6.0)   # 3x^2, 6x, 6


def test_higher_derivatives_of_exp_tanh_and_division():
    x = t64(0.7)
    f = (x.tanh() / (1 + x * x)).exp()
    derivatives = []
    for _ in range(3):
        (f,) = grad(f, x, create_graph=True)
        derivatives.append(f.item())

    def g(v):
        return np.exp(np.tanh(v) / (1 + v * v))
    h = 1e-3                                        # central differences of order 1, 2, 3
    expected = [(g(0.7 + h) - g(0.7 - h)) / (2 * h),
                (g(0.7 + h) - 2 * g(0.7) + g(0.7 - h)) / h ** 2,
                (g(0.7 + 2 * h) - 2 * g(0.7 + h) + 2 * g(0.7 - h) - g(0.7 - 2 * h)) / (2 * h ** 3)]
    np.testing.assert_allclose(derivatives, expected, rtol=1e-4)


def _mlp_loss(sizes=(3, 4, 2), activation="tanh"):
    manual_seed(0)
    model = nn.MLP(list(sizes), activation=activation)
    for p in model.parameters():
        p.data = p.data.astype(np.float64)
    x = Tensor(rng.normal(size=(5, sizes[0])), dtype=np.float64)
    labels = rng.integers(0, sizes[-1], size=5)
    weight = model.layers[0].weight

    def loss(w):
        model.layers[0].weight = w
        return nn.cross_entropy(model(x), labels)
    return loss, weight


def test_hessian_of_an_mlp_loss_matches_finite_differences():
    loss, weight = _mlp_loss()
    h = hessian(loss, weight)
    assert h.shape == (weight.size, weight.size)
    np.testing.assert_allclose(h, h.T, atol=1e-12)                      # symmetric

    def gradient_at(flat):
        w = Tensor(flat.reshape(weight.shape), requires_grad=True, dtype=np.float64)
        return grad(loss(w), w)[0].data.reshape(-1)
    flat, eps = weight.data.reshape(-1).copy(), 1e-6
    columns = []
    for j in range(flat.size):
        step = np.zeros_like(flat)
        step[j] = eps
        columns.append((gradient_at(flat + step) - gradient_at(flat - step)) / (2 * eps))
    np.testing.assert_allclose(h, np.stack(columns, axis=1), rtol=1e-5, atol=1e-8)
    assert weight.grad is None                                           # untouched


def test_hessian_of_a_quadratic_is_its_matrix():
    a = rng.normal(size=(4, 4))
    a = a + a.T
    x = t64(0.1, 0.2, -0.3, 0.4)
    np.testing.assert_allclose(hessian(lambda x: 0.5 * (x @ (Tensor(a, dtype=np.float64) @ x)),
                                       x), a, rtol=1e-12)


def test_hvp_equals_hessian_times_vector():
    loss, weight = _mlp_loss()
    v = rng.normal(size=weight.shape)
    (product,) = hvp(loss, [weight], [v])
    expected = hessian(loss, weight) @ v.reshape(-1)
    np.testing.assert_allclose(product.reshape(-1), expected, rtol=1e-9, atol=1e-12)
    a, b = t64(1.0, 2.0), t64(0.5, -1.0)
    pa, pb = hvp(lambda a, b: (a * a * b).sum(), [a, b], [np.ones(2), np.zeros(2)])
    np.testing.assert_allclose(pa, 2 * b.data)                          # d2/da2 = 2b
    np.testing.assert_allclose(pb, 2 * a.data)                          # d2/dadb = 2a


def test_grad_with_grad_outputs_on_a_non_scalar_output():
    x = t64(1.0, 2.0, 3.0)
    y = x * x                                                           # dy_i/dx_i = 2 x_i
    v = np.array([1.0, -1.0, 0.5])
    (g,) = grad(y, x, grad_outputs=v)
    np.testing.assert_array_equal(g.data, 2 * x.data * v)
    with pytest.raises(RuntimeError, match=r"grad: .*one-element output.*\(3,\)"):
        grad(x * x, x)


def test_grad_returns_one_tensor_per_input_and_leaves_dot_grad_alone():
    a, b = t64(2.0), t64(3.0)
    a.grad = np.array(100.0)
    ga, gb = grad(a * b + b, [a, b])
    assert (ga.item(), gb.item()) == (3.0, 3.0)
    assert ga.dtype == np.float64 and ga.shape == ()
    assert a.grad == 100.0 and b.grad is None


def test_allow_unused():
    a, b = t64(2.0), t64(3.0)
    with pytest.raises(RuntimeError, match=r"input 1 .*not used.*allow_unused=True"):
        grad(a * a, [a, b])
    ga, gb = grad(a * a, [a, b], allow_unused=True)
    assert ga.item() == 4.0 and gb is None


def test_without_create_graph_gradients_carry_no_graph():
    x = t64(1.0, 2.0)
    (g,) = grad((x ** 3).sum(), x)
    assert not g.requires_grad and g.op is None
    (g2,) = grad((x ** 3).sum(), x, create_graph=True)
    assert g2.requires_grad and g2.op is not None


def test_grad_frees_the_graph_unless_it_is_retained():
    x = t64(1.0, 2.0)
    hidden = x * 2
    ref = weakref.ref(hidden)
    out = (hidden.exp()).sum()
    del hidden
    grad(out, x)
    gc.collect()
    assert ref() is None
    with pytest.raises(RuntimeError, match="already freed"):
        grad(out, x)


def test_gradient_penalty_step_matches_the_step_by_hand():
    """loss = (w.x)^2 + lam * |d loss0/dx|^2: a WGAN-GP style penalty on the input gradient."""
    w = Tensor([0.5, -1.0, 2.0], requires_grad=True, dtype=np.float64)
    x = Tensor([1.0, 0.5, -0.25], requires_grad=True, dtype=np.float64)
    lam, lr = 0.1, 0.01
    base = (w * x).sum() ** 2
    (gx,) = grad(base, x, create_graph=True)                # 2 (w.x) w
    loss = base + lam * (gx * gx).sum()
    loss.backward()
    s = float(w.data @ x.data)
    # by hand: loss = s^2 + 4 lam s^2 |w|^2, s = w.x
    by_hand = 2 * s * x.data + lam * (8 * s * (w.data @ w.data) * x.data + 8 * s * s * w.data)
    np.testing.assert_allclose(w.grad, by_hand, rtol=1e-12)
    stepped = w.data - lr * w.grad
    np.testing.assert_allclose(stepped, w.data - lr * by_hand, rtol=1e-12)


class _SquareWithCopy(Op):
    """z = x**2 with the right first derivative, 2 x gz, but it saves a copy of x: under
    create_graph the copy is a constant, so the second derivative comes out 0, not 2."""
    name = "square_with_copy"

    def forward(self, x):
        self.x = x.copy()
        return x * x

    def backward(self, gz):
        return (2 * gz * self.x,)


class _Square(_SquareWithCopy):
    name = "square"

    def forward(self, x):
        self.x = x                       # the input itself: it stands for x under create_graph
        return x * x


def test_gradgradcheck_catches_a_backward_that_is_not_differentiable_correctly():
    x = t64(0.5, -1.5, 2.0)
    assert gradcheck(lambda x: _SquareWithCopy.apply(x).sum(), [x])      # first: right
    with pytest.raises(GradcheckError):
        gradgradcheck(lambda x: (_SquareWithCopy.apply(x) * x).sum(), [x])
    assert gradgradcheck(lambda x: (_Square.apply(x) * x).sum(), [x])    # a user's op, right


def test_gradient_graph_of_a_long_chain():
    def chain(x, n=20_000):
        y = x
        for _ in range(n):
            y = y + 1e-5 * y * y                            # y grows from 0.5 to about 0.556
        return y

    def first_derivative(value):
        x = t64(value)
        chain(x).backward()                                 # the plain, array path
        return x.grad.item()

    x = t64(0.5)
    (g,) = grad(chain(x), x, create_graph=True)
    (g2,) = grad(g, x)
    assert g.item() == pytest.approx(first_derivative(0.5), rel=1e-12)
    eps = 1e-5
    numeric = (first_derivative(0.5 + eps) - first_derivative(0.5 - eps)) / (2 * eps)
    assert g2.item() == pytest.approx(numeric, rel=1e-6)
    (constant,) = grad(x * 3.0, x, create_graph=True)
    assert not constant.requires_grad                       # a gradient that is a constant


def test_numerical_second_derivatives_agree_with_hessian_of_tanh():
    x = t64(0.3, -0.7)
    h = hessian(lambda x: x.tanh().sum(), x)
    t = np.tanh(x.data)
    np.testing.assert_allclose(h, np.diag(-2 * t * (1 - t ** 2)), rtol=1e-12)
    def first(x):
        with enable_grad():                               # numerical_grad runs under no_grad
            return grad(x.tanh().sum(), x, create_graph=True)[0].sum()
    (n,) = numerical_grad(first, [x])
    np.testing.assert_allclose(n, np.diag(h), rtol=1e-6)


def test_curvature_example_bounds_the_gradients_curvature_by_the_sharpest(mnist_dir, capsys):
    import sys
    from conftest import ROOT
    sys.path.insert(0, str(ROOT / "examples"))
    import curvature
    curvature.main(["--data-dir", str(mnist_dir), "--epochs", "1"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [r[0] for r in rows] == ["0", "1"]
    for _, loss, along, sharpest in rows:
        assert 0 < float(along) <= float(sharpest) * (1 + 1e-6)   # a Rayleigh quotient
    assert float(rows[1][1]) < float(rows[0][1])                     # training lowered the loss


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_gradients_with_create_graph_equal_those_without(training):
    """Under create_graph batch norm recomputes x_hat from x as tensors (so that its
    gradient can be differentiated again): the first-order gradients must be the same."""
    from tinygrad_mnist.engine.norm import BatchNorm
    rng = np.random.default_rng(12)
    x = Tensor(rng.normal(size=(4, 3, 2, 2)) * 2 + 1, requires_grad=True, dtype=np.float64)
    w = Tensor(rng.normal(size=3), requires_grad=True, dtype=np.float64)
    b = Tensor(rng.normal(size=3), requires_grad=True, dtype=np.float64)
    weights = rng.normal(size=(4, 3, 2, 2))
    results = []
    for create_graph in (False, True):
        out = BatchNorm.apply(x, w, b, Tensor(np.zeros(3), dtype=np.float64),
                              Tensor(np.ones(3), dtype=np.float64), axes=(0, 2, 3),
                              momentum=0.0, training=training)
        results.append([g.numpy() for g in grad((out * weights).sum(), [x, w, b],
                                                  create_graph=create_graph)])
    for plain, recorded in zip(*results):
        np.testing.assert_allclose(recorded, plain, rtol=1e-10, atol=1e-12)

"""tinygrad_mnist.func: forward mode checked three ways on every row of the op table (against
finite differences, against reverse mode through the transpose identity, jacfwd against
jacrev), the Hessian forward over reverse against reverse over reverse, and the transforms'
contracts."""
import numpy as np
import pytest

from tinygrad_mnist import Tensor, func, hessian as reverse_hessian, manual_seed, nn
from tinygrad_mnist.op_cases import OP_CASES

CHECKS = [pytest.param(case, shapes, id=f"{case.name} {shapes}")
          for case in OP_CASES for shapes in case.shapes]


def seeded(fn):
    """fn with the generator reset on every call: a row that draws (randn, dropout) draws
    the same numbers in every evaluation a check makes."""
    def call(*xs):
        manual_seed(0)
        return fn(*xs)
    return call


def f64(array):
    return Tensor(np.asarray(array, dtype=np.float64), dtype=np.float64)


def _case_inputs(case, shapes, seed):
    rng = np.random.default_rng(seed)
    inputs = [f64(x.data) for x in case.inputs(shapes, rng)]
    tangents = [f64(rng.normal(size=x.shape)) for x in inputs]
    return rng, inputs, tangents


@pytest.mark.parametrize("case, shapes", CHECKS)
def test_jvp_matches_finite_differences(case, shapes):
    _, inputs, tangents = _case_inputs(case, shapes, 1)
    f = seeded(case.fn)
    out, tangent = func.jvp(f, tuple(inputs), tuple(tangents))
    eps = 1e-6
    plus = f(*[f64(x.data + eps * v.data) for x, v in zip(inputs, tangents)]).data
    minus = f(*[f64(x.data - eps * v.data) for x, v in zip(inputs, tangents)]).data
    np.testing.assert_allclose(out.data, f(*inputs).data, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(tangent.data, (plus - minus) / (2 * eps), rtol=1e-5, atol=1e-6)
    assert tangent.shape == out.shape and tangent.dtype == out.dtype


@pytest.mark.parametrize("case, shapes", CHECKS)
def test_forward_agrees_with_reverse_through_the_transpose(case, shapes):
    """<u, J v> by one jvp equals <J^T u, v> by one vjp, for random u and v."""
    rng, inputs, tangents = _case_inputs(case, shapes, 2)
    f = seeded(case.fn)
    out, jv = func.jvp(f, tuple(inputs), tuple(tangents))
    u = f64(rng.normal(size=out.shape))
    _, pull = func.vjp(f, *inputs)
    jtu = pull(u)
    forward = float((u.data * jv.data).sum())
    reverse = sum(float((g.data * v.data).sum()) for g, v in zip(jtu, tangents))
    assert forward == pytest.approx(reverse, rel=1e-10, abs=1e-10)


@pytest.mark.parametrize("case, shapes", CHECKS)
def test_jacfwd_equals_jacrev(case, shapes):
    _, inputs, _ = _case_inputs(case, shapes, 3)
    f = seeded(case.fn)
    every = tuple(range(len(inputs)))
    for by_forward, by_reverse in zip(func.jacfwd(f, every)(*inputs),
                                      func.jacrev(f, every)(*inputs)):
        np.testing.assert_allclose(by_forward.data, by_reverse.data, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case, shapes", CHECKS)
def test_hessian_forward_over_reverse_equals_reverse_over_reverse(case, shapes):
    rng, inputs, _ = _case_inputs(case, shapes, 4)
    scalar = seeded(case.weighted(rng, inputs))
    first = inputs[0]
    rest = inputs[1:]

    def of_first(x):
        return scalar(x, *rest)
    by_forward = func.hessian(of_first)(first)
    assert by_forward.shape == first.shape + first.shape
    by_reverse = reverse_hessian(of_first, first)
    np.testing.assert_allclose(by_forward.data.reshape(first.size, first.size), by_reverse,
                               rtol=1e-9, atol=1e-10)


# ---------------------------------------------------------------- the transforms' contracts

def test_grad_argnums_and_aux():
    w, x = f64([1.0, -2.0]), f64([3.0, 0.5])

    def loss(w, x):
        value = (w * x).sum() ** 2
        return value, {"value": value}
    (gw, gx), aux = func.grad(loss, argnums=(0, 1), has_aux=True)(w, x)
    s = (w.data * x.data).sum()
    np.testing.assert_allclose(gw.data, 2 * s * x.data)
    np.testing.assert_allclose(gx.data, 2 * s * w.data)
    assert aux["value"].item() == pytest.approx(s ** 2)
    assert w.grad is None and not w.requires_grad          # the arguments are untouched


def test_grad_of_grad_is_the_second_derivative():
    x = f64(0.7)
    d2 = func.grad(func.grad(lambda x: x.sin() * x))(x)
    assert d2.item() == pytest.approx(2 * np.cos(0.7) - 0.7 * np.sin(0.7))


def test_jvp_records_no_graph_and_refuses_nesting():
    w = Tensor(np.ones(3), requires_grad=True, dtype=np.float64)
    out, tangent = func.jvp(lambda x: (x * w).sum(), (f64([1.0, 2.0, 3.0]),),
                            (f64([1.0, 0.0, 0.0]),))
    assert out.op is None and tangent.item() == 1.0
    with pytest.raises(NotImplementedError, match="forward over forward"):
        func.jvp(lambda x: func.jvp(lambda y: y * y, (x,), (x,))[1], (f64(1.0),), (f64(1.0),))


def test_a_user_op_without_a_jvp_gets_one_from_its_backward():
    from tinygrad_mnist.ops import Op

    class Cube(Op):
        __slots__ = ("x",)

        def forward(self, x):
            self.x = x
            return x ** 3

        def backward(self, gz):
            return (gz * 3 * self.x ** 2,)
    x, v = f64([0.5, -1.5, 2.0]), f64([1.0, 2.0, -1.0])
    _, tangent = func.jvp(lambda x: Cube.apply(x), (x,), (v,))
    np.testing.assert_allclose(tangent.data, 3 * x.data ** 2 * v.data)


def test_jvp_errors_name_the_mismatch():
    with pytest.raises(ValueError, match=r"tangent 0 has shape \(2,\), primal 0 has shape "
                                         r"\(3,\)"):
        func.jvp(lambda x: x, (f64([1, 2, 3]),), (f64([1, 2]),))
    with pytest.raises(ValueError, match="2 primals but 1 tangents"):
        func.jvp(lambda x, y: x, (f64(1), f64(2)), (f64(1),))


def test_functional_call_uses_the_given_parameters_and_restores_the_module():
    manual_seed(0)
    model = nn.MLP([3, 4, 2])
    x = Tensor(np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32))
    params = {name: Tensor(np.zeros(p.shape, np.float32)) for name, p in
              model.named_parameters()}
    params["layers.1.bias"] = Tensor(np.array([1.0, -1.0], np.float32))
    np.testing.assert_array_equal(func.functional_call(model, params, (x,)).data,
                                  np.tile([1.0, -1.0], (5, 1)))
    assert model.layers[1].bias is dict(model.named_parameters())["layers.1.bias"]
    assert np.abs(model(x).data - np.tile([1.0, -1.0], (5, 1))).max() > 0.01
    with pytest.raises(KeyError, match="no parameter or buffer 'layers.7.weight'"):
        func.functional_call(model, {"layers.7.weight": x}, (x,))


def test_per_parameter_gradients_through_functional_call():
    manual_seed(0)
    model = nn.MLP([3, 4, 2])
    params = dict(model.named_parameters())
    x = Tensor(np.random.default_rng(1).normal(size=(6, 3)).astype(np.float32))
    y = np.array([0, 1, 1, 0, 1, 0])

    def loss(p):
        return nn.cross_entropy(func.functional_call(model, p, (x,)), y)
    grads = func.grad(loss)(params)
    loss_ = nn.cross_entropy(model(x), y)
    loss_.backward()
    for name, p in params.items():
        np.testing.assert_allclose(grads[name].data, p.grad, rtol=1e-5, atol=1e-7)

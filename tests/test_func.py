"""tinygrad_mnist.func: forward mode checked three ways on every row of the op table (against
finite differences, against reverse mode through the transpose identity, jacfwd against
jacrev), the Hessian forward over reverse against reverse over reverse, and the transforms'
contracts."""
import numpy as np
import pytest

from tinygrad_mnist import Tensor, func, hessian as reverse_hessian, manual_seed, nn
from tinygrad_mnist.op_cases import OP_CASES
from tinygrad_mnist.ops import Op

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


@pytest.mark.parametrize("case, shapes", CHECKS)
def test_reverse_over_forward_equals_forward_over_reverse(case, shapes):
    """grad of a jvp (reverse over forward) gives the Hessian-vector product that a jvp of a
    grad (forward over reverse) gives: H v, by two different compositions."""
    rng, inputs, tangents = _case_inputs(case, shapes, 14)
    scalar = seeded(case.weighted(rng, inputs))
    first, rest, v = inputs[0], inputs[1:], tangents[0]

    def of_first(x):
        return scalar(x, *rest)
    by_reverse_of_forward = func.grad(lambda x: func.jvp(of_first, (x,), (v,))[1])(first)
    _, by_forward_of_reverse = func.jvp(func.grad(of_first), (first,), (v,))
    np.testing.assert_allclose(by_reverse_of_forward.data, by_forward_of_reverse.data,
                               rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("case, shapes", CHECKS)
def test_forward_over_forward_equals_forward_over_reverse(case, shapes):
    """A jvp of a jvp (u^T H v, a second directional derivative) against the Hessian-vector
    product of a jvp of a grad."""
    rng, inputs, tangents = _case_inputs(case, shapes, 15)
    scalar = seeded(case.weighted(rng, inputs))
    first, rest, v = inputs[0], inputs[1:], tangents[0]
    u = f64(rng.normal(size=first.shape))

    def of_first(x):
        return scalar(x, *rest)
    _, twice = func.jvp(lambda x: func.jvp(of_first, (x,), (v,))[1], (first,), (u,))
    _, hv = func.jvp(func.grad(of_first), (first,), (v,))
    assert float(twice.data) == pytest.approx(float((u.data * hv.data).sum()), rel=1e-9,
                                              abs=1e-10)


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


def test_jvp_records_no_graph_and_nests():
    w = Tensor(np.ones(3), requires_grad=True, dtype=np.float64)
    out, tangent = func.jvp(lambda x: (x * w).sum(), (f64([1.0, 2.0, 3.0]),),
                            (f64([1.0, 0.0, 0.0]),))
    assert out.op is None and tangent.item() == 1.0
    # the inner jvp is 2 y y = 2 x^2 (its tangent is y itself); the outer one, d/dx: 4x
    _, twice = func.jvp(lambda x: func.jvp(lambda y: y * y, (x,), (x,))[1], (f64(1.5),),
                        (f64(1.0),))
    assert twice.item() == pytest.approx(6.0)


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


# ---------------------------------------------------------------- vmap

# rows vmap refuses, each with the reason's words: they draw random numbers, index by a value
# computed from the batch, or (batch norm in training) compute statistics over the batch
REFUSED = {"randn": "random", "rand": "random", "randint": "random", "dropout": "random",
           "argmax": "index computed from a batched tensor", "batch_norm": "training mode"}
EXAMPLES = 3


def _stacked_inputs(case, shapes, seed):
    rng = np.random.default_rng(seed)
    examples = [[x.data for x in case.inputs(shapes, rng)] for _ in range(EXAMPLES)]
    return examples, [f64(np.stack(column)) for column in zip(*examples)]


def _refused(case):
    if "mask from a comparison" in case.name:       # a result whose shape differs per example
        return "index computed from a batched tensor"
    if case.op == "batch_norm" and "eval" in case.name:
        return None
    if case.op == "dropout" and "mask" in case.name:
        return None
    return REFUSED.get(case.op)


@pytest.mark.parametrize("case, shapes", CHECKS)
def test_vmap_equals_a_loop_over_examples(case, shapes):
    examples, batched = _stacked_inputs(case, shapes, 5)
    reason = _refused(case)
    if reason is not None:
        with pytest.raises(func.VmapError, match=reason):
            func.vmap(case.fn)(*batched)
        return
    out = func.vmap(case.fn)(*batched)
    loop = np.stack([case.fn(*[f64(x) for x in example]).data for example in examples])
    assert out.shape == loop.shape
    np.testing.assert_allclose(out.data, loop, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case, shapes", [c for c in CHECKS if len(c.values[1]) > 1 and
                                           _refused(c.values[0]) is None])
def test_vmap_with_shared_arguments(case, shapes):
    """in_axes=None for every input but the first: those are shared by all examples."""
    examples, batched = _stacked_inputs(case, shapes, 6)
    shared = [f64(x) for x in examples[0][1:]]
    in_axes = (0,) + (None,) * len(shared)
    out = func.vmap(case.fn, in_axes=in_axes)(batched[0], *shared)
    loop = np.stack([case.fn(f64(example[0]), *shared).data for example in examples])
    np.testing.assert_allclose(out.data, loop, rtol=1e-12, atol=1e-12)


def test_nested_vmap_in_and_out_axes():
    rng = np.random.default_rng(7)
    a, b = f64(rng.normal(size=(4, 3, 5))), f64(rng.normal(size=(5, 2)))

    def f(x, w):                                     # one row of 5 times a (5, 2) matrix
        return (x @ w).tanh()
    out = func.vmap(func.vmap(f, in_axes=(0, None)), in_axes=(1, None), out_axes=1)(a, b)
    expected = np.tanh(a.data @ b.data)              # (4, 3, 2): rows of every matrix
    np.testing.assert_allclose(out.data, expected.transpose(0, 1, 2), rtol=1e-12)
    assert out.shape == (4, 3, 2)


def _mlp_loss(model):
    def loss(params, x, y):
        logits = func.functional_call(model, params, (x[None],))
        return nn.cross_entropy(logits, y[None])
    return loss


@pytest.mark.parametrize("arch", ["mlp", "lenet5"])
def test_per_example_gradients_equal_a_loop(arch):
    from tinygrad_mnist.mnist import models
    manual_seed(0)
    model = models.build(arch, hidden=[16])
    params = {k: Tensor(p.data, dtype=np.float64) for k, p in model.named_parameters()}
    for p in model.parameters():
        p.data = p.data.astype(np.float64)
    rng = np.random.default_rng(8)
    xs, ys = f64(rng.normal(size=(4, 784))), Tensor(rng.integers(0, 10, 4))
    loss = _mlp_loss(model)
    per_example = func.vmap(func.grad(loss), in_axes=(None, 0, 0))(params, xs, ys)
    for i in range(4):
        one = func.grad(loss)(params, f64(xs.data[i]), Tensor(ys.data[i]))
        for name in params:
            np.testing.assert_allclose(per_example[name].data[i], one[name].data,
                                       rtol=1e-10, atol=1e-12, err_msg=f"{name}, example {i}")
    assert per_example["features.0.weight"].shape[0] == 4 if arch == "lenet5" else True


def test_vmap_refuses_what_it_cannot_batch():
    from tinygrad_mnist.ops import Op

    class Twice(Op):
        def forward(self, x):
            return 2 * x

        def backward(self, gz):
            return (2 * gz,)
    xs = f64(np.arange(6.0).reshape(3, 2))
    with pytest.raises(func.VmapError, match=r"no batching rule for the op twice"):
        func.vmap(lambda x: Twice.apply(x))(xs)
    with pytest.raises(func.VmapError, match="reads the value of a batched tensor"):
        func.vmap(lambda x: x * 2 if x.sum().item() > 0 else x)(xs)
    w = Tensor(np.ones(2), requires_grad=True, dtype=np.float64)
    with pytest.raises(func.VmapError, match="backward"):
        func.vmap(lambda x: (x * w).sum().backward())(xs)
    with pytest.raises(ValueError, match="argument 1 has 2 examples"):
        func.vmap(lambda x, y: x + y)(xs, f64(np.ones((2, 2))))
    jacobians = func.vmap(func.jacrev(lambda x: x * x))(xs)     # refused before: now each's
    np.testing.assert_allclose(jacobians.data, [np.diag(2 * x) for x in xs.data])


def test_the_per_example_gradients_example_agrees_with_its_loop(mnist_dir, capsys):
    import runpy
    from conftest import ROOT
    example = runpy.run_path(str(ROOT / "examples" / "per_example_gradients.py"))
    largest = example["main"](["--data-dir", str(mnist_dir), "--batch", "16"])
    printed = capsys.readouterr().out
    assert largest < 1e-6
    assert "16 of 16 clipped" in printed or "clipped to 1.0" in printed
    before, after = map(float, printed.split("batch loss ")[1].split(" -> "))
    assert after < before                      # the private step still descends


def test_a_user_jvp_rule_of_the_wrong_shape_is_an_error_naming_the_op():
    class Doubled(Op):
        def forward(self, x):
            return x * 2

        def backward(self, gz):
            return (gz * 2,)

        def jvp(self, t):
            return t[:1] * 2                       # (1,) for an output of (3,)
    x = f64(np.arange(3.0))
    with pytest.raises(ValueError, match=r"doubled's jvp rule returned a tangent of shape "
                                         r"\(1,\) for an output of shape \(3,\)"):
        func.jvp(lambda x: Doubled.apply(x), (x,), (x,))

    class Broken(Doubled):
        def jvp(self, t):
            return t @ np.ones((5, 5))              # fails inside NumPy
    with pytest.raises(ValueError, match="func.jvp: broken's jvp rule failed on tangents of "
                                         r"shapes \[\(3,\)\]"):
        func.jvp(lambda x: Broken.apply(x), (x,), (x,))


def test_the_jvp_derived_for_a_user_op_keeps_float64_precision():
    class Cube(Op):                                # no jvp rule: derived from backward
        def forward(self, x):
            self.x = x
            return x ** 3

        def backward(self, gz):
            return (gz * 3 * self.x ** 2,)
    x = f64([0.1234567891234, 2.0, -3.0])
    out, tangent = func.jvp(lambda x: Cube.apply(x), (x,), (f64(np.ones(3)),))
    assert tangent.dtype == np.float64
    np.testing.assert_allclose(tangent.data, 3 * x.data ** 2, rtol=1e-14)


def test_functional_call_replaces_a_tied_weight_at_every_use():
    class Tied(nn.Module):
        def __init__(self):
            self.encode, self.decode = nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False)
            self.decode.weight = self.encode.weight          # one tensor, two places

        def forward(self, x):
            return self.decode(self.encode(x).tanh())
    manual_seed(0)
    model = Tied()
    x = f64(np.random.default_rng(0).normal(size=(3, 4)))
    assert [n for n, _ in model.named_parameters()] == ["encode.weight"]

    def loss(params):
        return (func.functional_call(model, params, (x,)) ** 2).sum()
    params = {name: f64(p.data) for name, p in model.named_parameters()}
    grads = func.grad(loss)(params)
    w = Tensor(model.encode.weight.data, requires_grad=True, dtype=np.float64)
    model.encode.weight = model.decode.weight = w           # the module's own backward
    (model(x) ** 2).sum().backward()
    np.testing.assert_allclose(grads["encode.weight"].data, w.grad, rtol=1e-10, atol=1e-12)
    other = f64(np.ones((4, 4)))                             # and the value is the given one
    out = func.functional_call(model, {"encode.weight": other}, (x,))
    np.testing.assert_allclose(out.data, np.tanh(x.data @ other.data.T) @ other.data.T)
    assert model.encode.weight is w and model.decode.weight is w         # restored


@pytest.mark.parametrize("case, shapes", [c for c in CHECKS if _refused(c.values[0]) is None])
def test_vmap_over_an_empty_batch_gives_empty_results_of_an_examples_shape(case, shapes):
    examples, _ = _stacked_inputs(case, shapes, 8)
    one = case.fn(*[f64(x) for x in examples[0]])
    empty = [f64(np.zeros((0,) + np.shape(x))) for x in examples[0]]
    out = func.vmap(case.fn)(*empty)
    assert out.shape == (0,) + one.shape and out.dtype == one.dtype


def test_per_example_gradients_of_an_empty_batch_are_empty():
    w = f64(np.ones((3, 2)))
    grads = func.vmap(func.grad(lambda w, x: (x @ w).tanh().sum()), in_axes=(None, 0))(
        w, f64(np.zeros((0, 3))))
    assert grads.shape == (0, 3, 2)


def test_vmap_takes_in_axes_of_an_arguments_own_structure_and_passes_keywords():
    rng = np.random.default_rng(9)
    params = {"w": f64(rng.normal(size=(3, 2))), "b": f64(rng.normal(size=(4, 2)))}
    xs = f64(rng.normal(size=(4, 3)))

    def f(p, x, scale=1.0):
        return (x @ p["w"] + p["b"]) * scale
    out = func.vmap(f, in_axes=({"w": None, "b": 0}, 0))(params, xs, scale=2.0)
    loop = np.stack([(xs.data[i] @ params["w"].data + params["b"].data[i]) * 2.0
                     for i in range(4)])
    np.testing.assert_allclose(out.data, loop, rtol=1e-12)
    pair = (f64(rng.normal(size=(4, 3))), f64(rng.normal(size=(3,))))
    out = func.vmap(lambda ab: ab[0] * ab[1], in_axes=((0, None),))(pair)
    np.testing.assert_allclose(out.data, pair[0].data * pair[1].data, rtol=1e-12)


@pytest.mark.parametrize("in_axes, message", [
    (({"w": None}, 0), r"in_axes for argument 0 is a dict with keys \['w'\]; the argument is a "
                       r"dict with keys \['b', 'w'\]"),
    (((0, None), 0), r"in_axes for argument 0 has 2 entries; the argument is a dict"),
    (({"w": None, "b": "0"}, 0), r"in_axes for argument 0\['b'\] must be an int, None, or"),
])
def test_nested_in_axes_that_do_not_fit_name_the_argument(in_axes, message):
    params = {"w": f64(np.ones((3, 2))), "b": f64(np.ones((4, 2)))}
    with pytest.raises((ValueError, TypeError), match=message):
        func.vmap(lambda p, x: x @ p["w"] + p["b"], in_axes=in_axes)(params, f64(np.ones((4, 3))))


def test_out_axes_of_the_outputs_own_structure():
    xs = f64(np.arange(12.0).reshape(4, 3))
    out = func.vmap(lambda x: {"a": x * 2, "b": (x.sum(), x + 1)},
                    out_axes={"a": 1, "b": (0, 1)})(xs)
    assert out["a"].shape == (3, 4) and out["b"][0].shape == (4,) and out["b"][1].shape == (3, 4)
    np.testing.assert_allclose(out["b"][1].data, (xs.data + 1).T)


def _numerical_jacobian(f, x, eps=1e-6):
    """d f(x) / dx by central differences: f of an array returns an array."""
    flat = x.reshape(-1)
    columns = []
    for i in range(flat.size):
        step = np.zeros_like(flat)
        step[i] = eps
        columns.append((f((flat + step).reshape(x.shape)) - f((flat - step).reshape(x.shape)))
                       / (2 * eps))
    return np.stack(columns, axis=-1).reshape(np.shape(columns[0]) + x.shape)


def test_jacobians_of_several_outputs_and_arguments_come_in_their_structure():
    rng = np.random.default_rng(11)
    x, y = f64(rng.normal(size=(3,))), f64(rng.normal(size=(2,)))

    def f(x, y):
        return (x * x).sum() * y, (x.sin(), y.exp())
    for transform in (func.jacfwd, func.jacrev):
        (jy_x, jy_y), ((js_x, js_y), (je_x, je_y)) = transform(f, argnums=(0, 1))(x, y)
        assert jy_x.shape == (2, 3) and js_y.shape == (3, 2) and je_y.shape == (2, 2)
        np.testing.assert_allclose(jy_x.data, np.outer(y.data, 2 * x.data), rtol=1e-10)
        np.testing.assert_allclose(js_x.data, np.diag(np.cos(x.data)), rtol=1e-10)
        np.testing.assert_allclose(je_y.data, np.diag(np.exp(y.data)), rtol=1e-10)
        assert not js_y.data.any() and not je_x.data.any()


def test_jacobian_and_hessian_of_a_dict_argument():
    rng = np.random.default_rng(12)
    params = {"w": f64(rng.normal(size=(3, 2))), "b": f64(rng.normal(size=(2,)))}
    x = f64(rng.normal(size=(4, 3)))

    def loss(p):
        return ((x @ p["w"] + p["b"]).tanh() ** 2).sum()
    hess = func.hessian(loss)(params)
    assert set(hess) == {"w", "b"} and set(hess["w"]) == {"w", "b"}
    assert hess["w"]["b"].shape == (3, 2, 2) and hess["b"]["b"].shape == (2, 2)

    def grad_b_of_w(w):                        # d/dw of dloss/db, by finite differences
        p = {"w": Tensor(w, dtype=np.float64), "b": Tensor(params["b"].data, dtype=np.float64)}
        return func.grad(loss)(p)["b"].data
    np.testing.assert_allclose(hess["b"]["w"].data, _numerical_jacobian(grad_b_of_w,
                                                                        params["w"].data),
                               rtol=1e-6, atol=1e-8)
    jac = func.jacfwd(lambda p: (x @ p["w"] + p["b"]).tanh())(params)
    np.testing.assert_allclose(jac["b"].data, func.jacrev(
        lambda p: (x @ p["w"] + p["b"]).tanh())(params)["b"].data, rtol=1e-10)


def test_hessian_of_two_arguments_is_a_tuple_of_tuples():
    rng = np.random.default_rng(13)
    x, y = f64(rng.normal(size=(3,))), f64(rng.normal(size=(2,)))

    def f(x, y):
        return (x.sin().sum() * y * y).sum()
    (hxx, hxy), (hyx, hyy) = func.hessian(f, argnums=(0, 1))(x, y)
    assert hxx.shape == (3, 3) and hxy.shape == (3, 2) and hyx.shape == (2, 3)
    s = np.sin(x.data).sum()
    np.testing.assert_allclose(hxx.data, -np.diag(np.sin(x.data)) * (y.data ** 2).sum(),
                               rtol=1e-10)
    np.testing.assert_allclose(hxy.data, np.outer(np.cos(x.data), 2 * y.data), rtol=1e-10)
    np.testing.assert_allclose(hyx.data, hxy.data.T, rtol=1e-10)
    np.testing.assert_allclose(hyy.data, 2 * s * np.eye(2), rtol=1e-10)


@pytest.mark.parametrize("make", ["detach", "Tensor(x)", "Tensor(x, dtype)", "astype"])
def test_vmap_sees_tensors_made_without_an_op(make):
    """x.detach(), Tensor(x) and conversions of a batched value stay batched: every example
    gets its own, never example 0's (a stop-gradient target inside a per-example loss)."""
    made = {"detach": lambda x: x.detach(), "Tensor(x)": lambda x: Tensor(x),
            "Tensor(x, dtype)": lambda x: Tensor(x, dtype=np.float32).double(),
            "astype": lambda x: x.astype(np.float32).astype(np.float64)}[make]
    xs = f64(np.arange(6.0).reshape(3, 2) + 1)
    out = func.vmap(lambda x: x * made(x))(xs)
    np.testing.assert_allclose(out.data, xs.data ** 2, rtol=1e-6)
    alone = func.vmap(made)(xs)                       # returned as it is made
    np.testing.assert_allclose(alone.data, xs.data, rtol=1e-6)
    w = f64(np.ones(2) * 0.5)                          # no gradient flows through the copy

    def loss(w, x):
        target = made(x * w)
        return ((x * w - target) ** 2).sum() + (x * w).sum()
    grads = func.vmap(func.grad(loss), in_axes=(None, 0))(w, xs)
    np.testing.assert_allclose(grads.data, xs.data, rtol=1e-6)


def _penalty_case():
    rng = np.random.default_rng(21)
    w, xs, v = (f64(rng.normal(size=s)) for s in ((3,), (4, 3), (3,)))

    def loss(w, x):
        return (x * w).sum().tanh() ** 2

    def penalty(w):                                  # a gradient penalty on per-example grads
        return (func.vmap(func.grad(loss), in_axes=(None, 0))(w, xs) ** 2).sum()

    def penalty_np(wv):
        total = 0.0
        for x in xs.data:
            s = np.tanh((x * wv).sum())
            total += ((2 * s * (1 - s * s) * x) ** 2).sum()
        return total
    return w, v, penalty, penalty_np


def test_per_example_gradients_are_differentiated_by_an_outer_grad_backward_and_jvp():
    w, v, penalty, penalty_np = _penalty_case()
    expected = _numerical_jacobian(penalty_np, w.data)
    np.testing.assert_allclose(func.grad(penalty)(w).data, expected, rtol=1e-6)
    leaf = Tensor(w.data, requires_grad=True, dtype=np.float64)
    (penalty(leaf) + (leaf * leaf).sum()).backward()          # plain reverse mode too
    np.testing.assert_allclose(leaf.grad, expected + 2 * w.data, rtol=1e-6)
    _, tangent = func.jvp(penalty, (w,), (v,))
    assert float(tangent.data) == pytest.approx(float(expected @ v.data), rel=1e-6)


def test_grad_of_a_jvp_and_jacrev_of_jacfwd_are_the_second_derivatives():
    x = f64([0.3, -0.7, 1.1])
    v = f64([1.0, 2.0, -1.0])
    g = func.grad(lambda x: func.jvp(lambda y: (y.exp() * y).sum(), (x,), (v,))[1])(x)
    np.testing.assert_allclose(g.data, (2 + x.data) * np.exp(x.data) * v.data, rtol=1e-12)

    def f(x):
        return x.sin() * x.sum()
    np.testing.assert_allclose(func.jacrev(func.jacfwd(f))(x).data,
                               func.jacfwd(func.jacrev(f))(x).data, rtol=1e-12, atol=1e-14)
    assert np.abs(func.jacrev(func.jacfwd(f))(x).data).max() > 0.1


@pytest.mark.parametrize("transform", ["jvp", "vjp", "jacrev", "jacfwd", "hessian",
                                       "jacfwd of grad", "grad of grad"])
def test_every_transform_inside_vmap_equals_a_loop(transform):
    """Per-example Jacobian-vector products, pull-backs, Jacobians and second derivatives."""
    rng = np.random.default_rng(22)
    xs, vs = f64(rng.normal(size=(4, 3))), f64(rng.normal(size=(4, 3)))

    def f(y):
        return (y.sin() * y).sum() * y

    def scalar(y):
        return (y.sin() * y).sum() ** 2
    per_example = {
        "jvp": lambda x, v: func.jvp(f, (x,), (v,))[1],
        "vjp": lambda x, v: func.vjp(f, x)[1](v)[0],
        "jacrev": lambda x, v: func.jacrev(f)(x),
        "jacfwd": lambda x, v: func.jacfwd(f)(x),
        "hessian": lambda x, v: func.hessian(scalar)(x),
        "jacfwd of grad": lambda x, v: func.jacfwd(func.grad(scalar))(x),
        "grad of grad": lambda x, v: func.grad(lambda y: (func.grad(scalar)(y) ** 2).sum())(x),
    }[transform]
    out = func.vmap(per_example)(xs, vs)
    loop = np.stack([per_example(f64(x), f64(v)).data for x, v in zip(xs.data, vs.data)])
    np.testing.assert_allclose(out.data, loop, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("update, expected", [
    ("y = 3 * x; y += x", lambda x, v: 4 * v),
    ("y = x * 1.0; y *= y", lambda x, v: 2 * x * v),
    ("y = Tensor.zeros(3, dtype=np.float64); y += x", lambda x, v: v),
])
def test_forward_mode_and_vmap_follow_in_place_updates(update, expected):
    def f(x):
        namespace = {"x": x, "Tensor": Tensor, "np": np}
        exec(update, namespace)
        return namespace["y"]
    x, v = f64([1.0, 2.0, 3.0]), f64([1.0, 1.0, 2.0])
    _, tangent = func.jvp(f, (x,), (v,))
    np.testing.assert_allclose(tangent.data, expected(x.data, v.data))
    xs = f64(np.arange(6.0).reshape(2, 3) + 1)
    np.testing.assert_allclose(func.vmap(f)(xs).data, np.stack([f(f64(r)).data for r in xs.data]))


def test_a_value_that_escapes_vmap_is_a_named_error_not_a_stale_constant():
    kept = []

    def f(x):
        y = x * 2
        kept.append(y)                         # one example's stand-in, kept past vmap
        return y.sum()
    out = func.vmap(f)(f64(np.arange(6.0).reshape(3, 2)))
    np.testing.assert_allclose(out.data, [2.0, 10.0, 18.0])
    with pytest.raises(RuntimeError, match="add: this tensor was made inside vmap's function "
                                           "from a batched value"):
        kept[0] + 1


@pytest.mark.parametrize("nested", ["jacfwd(jacfwd)", "jacfwd(grad)", "jvp(jvp)"])
def test_second_derivatives_of_a_fused_op_inside_vmap_equal_a_loop(nested):
    """Found by the composition fuzzer: an inner tangent broadcast to its output's shape (a
    softmax's tangent sum) was made outside the outer transforms' sight, so vmap kept example
    0's value for it."""
    rng = np.random.default_rng(23)
    w, v, u = (f64(rng.normal(size=4)) for _ in range(3))

    def f(x):
        return (x.softmax() * w).sum()
    per_example = {
        "jacfwd(jacfwd)": func.jacfwd(func.jacfwd(f)),
        "jacfwd(grad)": func.jacfwd(func.grad(f)),
        "jvp(jvp)": lambda x: func.jvp(lambda y: func.jvp(f, (y,), (v,))[1], (x,), (u,))[1],
    }[nested]
    xs = f64(rng.normal(size=(3, 4)))
    loop = np.stack([per_example(f64(x)).data for x in xs.data])
    np.testing.assert_allclose(func.vmap(per_example)(xs).data, loop, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("inner", ["grad", "vjp", "grad with a shared argument"])
def test_grad_inside_nested_vmaps_equals_a_double_loop(inner):
    """Found by comparing with torch.func: func.grad (and vjp, built on it) two vmaps deep was
    refused as a backward() inside the outer vmap; the outer vmap now batches the inner
    backward from its recorded ops."""
    rng = np.random.default_rng(24)
    xs, scales = f64(rng.normal(size=(2, 3, 4))), f64(rng.normal(size=3))

    def f(y):
        return (y.sin() * y).sum() * y.sum()
    per_example = {
        "grad": lambda x, s: func.grad(f)(x * s),
        "vjp": lambda x, s: func.vjp(f, x * s)[1](f64(2.0))[0],
        "grad with a shared argument": lambda x, s: func.grad(lambda w: f(x * w))(s),
    }[inner]
    got = func.vmap(func.vmap(per_example, in_axes=(0, 0)), in_axes=(0, None))(xs, scales)
    loop = np.stack([np.stack([per_example(f64(x), f64(s)).data
                               for x, s in zip(row, scales.data)]) for row in xs.data])
    np.testing.assert_allclose(got.data, loop, rtol=1e-10, atol=1e-12)
    # and differentiated once more, against finite differences of the whole map
    total = lambda a: (func.vmap(func.vmap(per_example, in_axes=(0, 0)), in_axes=(0, None))(
        a, scales) ** 2).sum()
    g = func.grad(total)(xs).data
    e = np.zeros(xs.shape)
    e[1, 2, 3] = 1e-6
    fd = (total(f64(xs.data + e)).item() - total(f64(xs.data - e)).item()) / 2e-6
    np.testing.assert_allclose(g[1, 2, 3], fd, rtol=1e-6)


@pytest.mark.parametrize("transform", ["grad", "vjp", "jvp", "jacrev", "jacfwd",
                                       "grad inside vmap", "jacrev inside vmap"])
def test_has_aux_hands_back_the_callers_own_values(transform):
    """As torch.func: with has_aux, f returns (output, aux); the result is the transform's
    own with aux beside it, computed once, the caller's object itself."""
    x, v = f64([0.5, -1.0, 2.0]), f64([1.0, 2.0, 3.0])
    calls = []

    def f(y):
        note = {"calls": len(calls), "value": (y * y).sum()}
        calls.append(note)
        return (y.sin() * y).sum(), note
    expected = np.sin(x.data) + x.data * np.cos(x.data)
    if transform == "grad":
        g, aux = func.grad(f, has_aux=True)(x)
    elif transform == "vjp":
        _, pull, aux = func.vjp(f, x, has_aux=True)
        (g,) = pull(f64(1.0))
    elif transform == "jvp":
        _, tangent, aux = func.jvp(f, (x,), (v,), has_aux=True)
        g = None
        np.testing.assert_allclose(tangent.data, expected @ v.data, rtol=1e-12)
    elif transform in ("jacrev", "jacfwd"):
        g, aux = getattr(func, transform)(f, has_aux=True)(x)
    else:
        inner = func.grad if transform == "grad inside vmap" else func.jacrev
        def per_example(y):
            gradient, note = inner(f, has_aux=True)(y)
            return gradient, note["value"]             # vmap returns Tensors
        g, value = func.vmap(per_example)(f64(x.data[None]))
        g, aux = g[0], {"calls": None, "value": value[0]}
    if g is not None:
        np.testing.assert_allclose(g.data, expected, rtol=1e-12)
    assert aux["value"].item() == pytest.approx(5.25)
    if aux["calls"] is not None:
        assert aux is calls[-1]                    # the object f returned, not a copy


@pytest.mark.parametrize("transform", ["grad", "jacrev", "jacfwd", "hessian"])
def test_nested_argnums_give_results_of_their_structure(transform):
    a, b, c = f64([0.5, -1.0]), f64([2.0]), f64([1.5, 0.25, -0.5])

    def f(a, b, c):
        return (a.sin() * b).sum() + (c * c).sum() * b.sum()
    result = getattr(func, transform)(f, argnums=(0, (1, 2)))(a, b, c)
    flat = getattr(func, transform)(f, argnums=(0, 1, 2))(a, b, c)
    if transform == "hessian":            # ((H00, (H01, H02)), ((H10, (H11, H12)), (H20, ...)))
        assert len(result) == 2 and len(result[1]) == 2 and len(result[0][1]) == 2
        pairs = [(result[0][0], flat[0][0]), (result[1][1][1][1], flat[2][2]),
                 (result[1][0][1][0], flat[1][1]), (result[0][1][1], flat[0][2])]
    else:
        assert len(result) == 2 and len(result[1]) == 2
        pairs = [(result[0], flat[0]), (result[1][0], flat[1]), (result[1][1], flat[2])]
    for got, expected in pairs:
        np.testing.assert_allclose(got.data, expected.data, rtol=1e-12)
    if transform == "grad":
        np.testing.assert_allclose(result[1][1].data, 2 * c.data * 2.0, rtol=1e-12)
    with pytest.raises(ValueError, match="func.grad: argnums \\(0, \\(1, 5\\)\\) does not fit 3"):
        func.grad(f, argnums=(0, (1, 5)))(a, b, c)

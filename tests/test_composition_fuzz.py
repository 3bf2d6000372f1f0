"""A composition fuzzer: random op-table rows under random stacks of transforms (grad, jvp,
jacfwd, jacrev, vmap, jit, functional_call, in-place updates and detach), each checked
against a reference that does not share the code under test: the reverse-over-reverse Hessian
of the engine (graph.grad with create_graph), central finite differences, or a Python loop over
examples.

    python -m pytest tests/test_composition_fuzz.py --composition-budget 10000

CI runs COMPOSITION_BUDGET programs; a failure prints the seed, the row and the stack.
"""
import warnings

import numpy as np
import pytest

from tinygrad_mnist import Tensor, func, hessian as reverse_hessian, jit, nn
from tinygrad_mnist.op_cases import OP_CASES

pytestmark = pytest.mark.slow        # 25 s of random programs (pytest -m "not slow" skips it)

COMPOSITION_BUDGET = 120
STACKS = ["grad(jvp)", "jvp(grad)", "jvp(jvp)", "jacrev(jacfwd)", "jacfwd(jacrev)",
          "jacfwd(jacfwd)", "hessian", "grad(grad.v)"]
WRAPPERS = [None, "vmap", "jit", "functional_call", "in-place", "detach"]
# rows with one smooth floating input or more (the first is differentiated, the rest fixed)
ROWS = [c for c in OP_CASES if not c.kinks and c.op not in (
    "randn", "rand", "randint", "argmax", "compare", "dropout", "batch_norm", "max_pool2d",
    "window_gather", "window_scatter", "max", "min", "maximum", "minimum", "abs", "relu",
    "clip", "norm")]


def _inputs(case, rng):
    shapes = case.shapes[rng.integers(len(case.shapes))]
    return [Tensor(x.data, dtype=np.float64) for x in case.inputs(shapes, rng)]


def _second_order(stack, f, x, v, u):
    """The stack's quantity, computed by the transforms under test."""
    if stack == "grad(jvp)":
        return func.grad(lambda y: func.jvp(f, (y,), (v,))[1])(x)
    if stack == "jvp(grad)":
        return func.jvp(func.grad(f), (x,), (v,))[1]
    if stack == "jvp(jvp)":
        return func.jvp(lambda y: func.jvp(f, (y,), (v,))[1], (x,), (u,))[1]
    if stack == "grad(grad.v)":
        return func.grad(lambda y: (func.grad(f)(y) * v).sum())(x)
    transform = {"jacrev(jacfwd)": lambda: func.jacrev(func.jacfwd(f)),
                 "jacfwd(jacrev)": lambda: func.jacfwd(func.jacrev(f)),
                 "jacfwd(jacfwd)": lambda: func.jacfwd(func.jacfwd(f)),
                 "hessian": lambda: func.hessian(f)}[stack]()
    return transform(x)


def _reference(stack, h, v, u):
    """The same quantity from the reverse-over-reverse Hessian h (n, n)."""
    if stack in ("grad(jvp)", "jvp(grad)", "grad(grad.v)"):
        return (h @ v.data.reshape(-1)).reshape(v.shape)
    if stack == "jvp(jvp)":
        return np.asarray(u.data.reshape(-1) @ h @ v.data.reshape(-1))
    return h.reshape(v.shape + v.shape)


def _scalar_of(case, rng, inputs):
    """f(x) = sum(case.fn(x, *rest) * w): the first input differentiated, the rest fixed."""
    weights = rng.normal(size=case.fn(*inputs).shape)
    rest = inputs[1:]

    def f(x):
        return (case.fn(x, *rest) * Tensor(weights, dtype=np.float64)).sum()
    return f


def _wrapped(wrapper, f, rng, shape):
    """f changed by a wrapper that must not change its value (or changes it knowably)."""
    if wrapper == "functional_call":
        class Scale(nn.Module):
            def __init__(self):
                self.w = Tensor(np.ones(shape), requires_grad=True, dtype=np.float64)

            def forward(self, x):
                return f(x * self.w)
        module = Scale()
        return lambda x: func.functional_call(module, {"w": Tensor(np.ones(shape),
                                                                   dtype=np.float64)}, (x,))
    if wrapper == "in-place":
        def g(x):
            y = x * 0.5
            y += x * 0.5                         # y = x, through a recorded in-place add
            return f(y)
        return g
    if wrapper == "detach":
        def g(x):
            return f(x) + (x * x.detach()).sum() - (x * x.detach()).sum()
        return g
    return f


def run_program(seed):
    """One random program: returns a description, raises AssertionError on a mismatch."""
    rng = np.random.default_rng(seed)
    case = ROWS[rng.integers(len(ROWS))]
    stack = STACKS[rng.integers(len(STACKS))]
    wrapper = WRAPPERS[rng.integers(len(WRAPPERS))]
    inputs = _inputs(case, rng)
    x = inputs[0]
    f = _wrapped(wrapper, _scalar_of(case, rng, inputs), rng, x.shape)
    v, u = (Tensor(rng.normal(size=x.shape), dtype=np.float64) for _ in range(2))
    where = f"seed {seed}: {stack} of {case.name} {x.shape}, wrapped: {wrapper}"
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        if wrapper == "vmap":                    # every example's, against a loop
            xs = Tensor(np.stack([x.data, x.data + 0.01 * rng.normal(size=x.shape)]),
                        dtype=np.float64)
            try:
                got = func.vmap(lambda y: _second_order(stack, f, y, v, u))(xs).data
            except func.VmapError as error:      # refused by name: a mask from the values
                assert "data-dependent" in str(error), f"{where}: {error}"
                return f"{where}: refused ({error})"
            expected = np.stack([_reference(stack, reverse_hessian(f, Tensor(e, dtype=np.float64)),
                                            v, u) for e in xs.data])
        elif wrapper == "jit":
            step = jit(lambda y: _second_order(stack, f, y, v, u).detach())
            got = step(x).data
            expected = _reference(stack, reverse_hessian(f, x), v, u)
        else:
            got = _second_order(stack, f, x, v, u).data
            expected = _reference(stack, reverse_hessian(f, x), v, u)
    assert got.shape == expected.shape, f"{where}: shape {got.shape}, expected {expected.shape}"
    np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-8, err_msg=where)
    return where


def pytest_generate_tests(metafunc):
    if "composition_seed" in metafunc.fixturenames:
        budget = metafunc.config.getoption("--composition-budget") or COMPOSITION_BUDGET
        metafunc.parametrize("composition_seed", range(budget))


def test_a_random_stack_of_transforms_equals_its_reference(composition_seed):
    run_program(composition_seed)


def test_the_fuzzer_reaches_every_stack_and_wrapper():
    seen = {(STACKS[np.random.default_rng(s).integers(len(STACKS))]) for s in range(200)}
    assert seen == set(STACKS)


def test_the_fuzzer_finds_a_planted_bug(monkeypatch):
    """A transform that is wrong on purpose (forward over forward halving its tangent) is
    found within the CI budget."""
    original = func.jvp

    def halved(f, primals, tangents):
        out, tangent = original(f, primals, tangents)
        return out, tangent * 0.5 if isinstance(tangent, Tensor) else tangent
    monkeypatch.setattr(func, "jvp", halved)
    with pytest.raises(AssertionError):
        for seed in range(COMPOSITION_BUDGET):
            run_program(seed)

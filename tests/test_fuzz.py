"""A fuzzer of our own: random expression graphs over every op of the op table (random
broadcastable shapes, reductions with axis and keepdims, slices with negative steps, integer
arrays and masks, fan-out), checked against float64 finite differences to first and second
order, run in float32 against float64, and forward mode against reverse mode. A failure is shrunk to a few lines and printed as
a script (tests/fuzz_graphs.py builds the graphs).

The CI budget is CI_BUDGET graphs with fixed seeds; `pytest tests/test_fuzz.py
--fuzz-budget 2000` runs a longer search by hand.
"""
import numpy as np
import pytest

from fuzz_graphs import OPS, build, shrink
from tinygrad_mnist import Tensor, grad, manual_seed, ops
from tinygrad_mnist.gradcheck import NotDifferentiableError, gradcheck, gradgradcheck
from tinygrad_mnist.op_cases import OP_CASES

CI_BUDGET = 500


def _inputs(program, dtype=np.float64):
    # float32-representable values, so that both precisions start from the same numbers
    return [Tensor(a.astype(np.float32).astype(dtype), requires_grad=True, dtype=dtype)
            for a in program.inputs]


def first_order(program):
    gradcheck(program.function(), _inputs(program))


def second_order(program):
    gradgradcheck(program.function(), _inputs(program))


def float32_like_float64(program):
    """Forward values and gradients in float32 equal float64's to float32 precision, and stay
    float32."""
    f = program.function()
    results = {}
    for dtype in (np.float32, np.float64):
        manual_seed(0)                                   # the same dropout draws
        xs = _inputs(program, dtype)
        with np.errstate(all="ignore"):
            out = f(*xs)
            gs = grad(out, xs, allow_unused=True)
        assert out.dtype == dtype, f"the output is {out.dtype} for {np.dtype(dtype)} inputs"
        for i, g in enumerate(gs):
            assert g is None or g.dtype == dtype, f"gradient {i} is {g.dtype}"
        results[dtype] = [out.data] + [None if g is None else g.data for g in gs]
    for i, (a, b) in enumerate(zip(results[np.float32], results[np.float64])):
        if b is None:
            continue
        scale = 1 + np.abs(b).max(initial=0)
        np.testing.assert_allclose(a, b, rtol=1e-2, atol=1e-3 * scale,
                                   err_msg=f"{'output' if i == 0 else f'gradient {i - 1}'}")


def forward_like_reverse(program):
    """Forward mode against reverse mode: <u, J v> by one jvp equals <J^T u, v> by one vjp,
    for random u and v (the transpose identity)."""
    from tinygrad_mnist import func
    f = program.function()

    def seeded(*xs):
        manual_seed(0)                                   # the same dropout draws each call
        return f(*xs)
    xs = [Tensor(x.data, dtype=np.float64) for x in _inputs(program)]
    rng = np.random.default_rng(0)
    vs = [Tensor(rng.normal(size=x.shape), dtype=np.float64) for x in xs]
    with np.errstate(all="ignore"):
        out, jv = func.jvp(seeded, tuple(xs), tuple(vs))
        u = rng.normal(size=out.shape)
        _, pull = func.vjp(seeded, *xs)
        jtu = pull(Tensor(u, dtype=np.float64))
    forward = float((u * jv.data).sum())
    reverse = sum(float((g.data * v.data).sum()) for g, v in zip(jtu, vs))
    if not (np.isfinite(forward) and np.isfinite(reverse)):
        return                                  # overflow on this graph: nothing to compare
    assert abs(forward - reverse) <= 1e-7 * (1 + abs(forward) + abs(reverse)), \
        f"<u, Jv> = {forward} by forward mode, <J^T u, v> = {reverse} by reverse mode"


CHECKS = [first_order, float32_like_float64, second_order, forward_like_reverse]


def _failure(check, program):
    """The exception `check` raises on `program` (None if it passes, or for a kink)."""
    try:
        check(program)
    except NotDifferentiableError:
        return None
    except Exception as error:           # a wrong gradient or a crash: both are findings
        return error
    return None


def test_random_graph(fuzz_seed):
    program = build(fuzz_seed)
    if program is None:
        pytest.skip("no valid graph for this seed")
    for check in CHECKS:
        error = _failure(check, program)
        if error is None:
            continue
        kind = type(error)

        small = shrink(program, lambda candidate: isinstance(_failure(check, candidate), kind))
        pytest.fail(f"{check.__name__} failed on graph {fuzz_seed}: {type(error).__name__}: "
                    f"{error}\n\nshrunk to:\n{small.reproduction()}")


def test_the_fuzzer_reaches_every_op_of_the_op_table():
    """Over a few hundred graphs, every op class (each has rows in the op table) appears."""
    seen = set()
    for seed in range(300):
        program = build(seed)
        if program is not None:
            seen |= _nodes(program)
    classes = {c.name for c in vars(ops).values()
               if isinstance(c, type) and issubclass(c, ops.Op) and c is not ops.Op}
    assert classes <= {case.op for case in OP_CASES}
    assert classes - seen == set()


def _nodes(program):
    """The names of every op the program runs, differentiable or not (an observer hears them)."""
    from tinygrad_mnist import Observer, observe

    class Names(Observer):
        def __init__(self):
            self.names = set()

        def on_op(self, op, inputs, output):
            self.names.add(op.name)
    with observe(Names()) as names:
        program.function()(*_inputs(program))
    return names.names


def test_a_planted_bug_is_found_and_shrunk(monkeypatch):
    """The fuzzer finds a wrong derivative and prints a short reproduction."""
    monkeypatch.setattr(ops.Tanh, "backward", lambda self, gz: (gz * (1 - self.out),))
    found = None
    for seed in range(200):
        program = build(seed)
        if program is not None and "tanh" in program.source():
            error = _failure(first_order, program)
            if error is not None:
                found = shrink(program, lambda p: _failure(first_order, p) is not None)
                break
    assert found is not None
    assert len(found.lines) <= 5 and "tanh" in found.source()
    assert "gradcheck(f, [" in found.reproduction()


def test_a_bug_planted_in_a_jvp_rule_is_found(monkeypatch):
    """The forward-mode arm: a wrong tangent rule (sigmoid's, missing a factor) is caught by
    the transpose identity against reverse mode and shrunk to a few lines."""
    monkeypatch.setattr(ops.Sigmoid, "jvp", lambda self, t: t * self.out)
    found = None
    for seed in range(300):
        program = build(seed)
        if program is not None and "sigmoid" in program.source():
            if _failure(forward_like_reverse, program) is not None:
                found = shrink(program, lambda p: _failure(forward_like_reverse, p) is not None)
                break
    assert found is not None
    assert len(found.lines) <= 5 and "sigmoid" in found.source()

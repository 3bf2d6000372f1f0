"""The jit's fused chains (jit/fusion.py): each op's forward_into equals its forward bit for
bit, a replay fuses exactly the chains whose intermediates nothing else reads, and a fused
replay equals eager execution."""
import numpy as np
import pytest

from tinygrad_mnist import Tensor, jit, nn, no_grad, optim
from tinygrad_mnist.engine import ops
from tinygrad_mnist.jit import fusion
from tinygrad_mnist.op_cases import OP_CASES


def _with_forward_into():
    found, stack = set(), [ops.Op]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.forward_into is not None:
            found.add(cls)
    return found


def _last_ops(case, dtype, rng):
    """The op each of the row's checks ends with, run on inputs of `dtype`."""
    for shapes in case.shapes:
        tensors = [Tensor(t.data.astype(dtype), requires_grad=True)
                   for t in case.inputs(shapes, rng)]
        out = case.fn(*tensors)
        yield out.op, out.data


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_into_equals_forward_on_every_row(dtype):
    rng = np.random.default_rng(0)
    covered = set()
    for case in OP_CASES:
        for op, expected in _last_ops(case, dtype, rng):
            if op is None or type(op).forward_into is None:
                continue
            covered.add(type(op))
            out = np.full(expected.shape, np.nan, expected.dtype)
            type(op).forward_into(out, *[t.data for t in op.inputs], **op.options)
            assert out.dtype == expected.dtype
            np.testing.assert_array_equal(out, expected, err_msg=case.name)
    assert covered == _with_forward_into()       # every such op has a row that checks it


def _gelu(x):
    return 0.5 * x * (1 + (0.7978846 * (x + 0.044715 * (x * x * x))).tanh())


def _program(step):
    (entry,) = step.programs.values()
    (program,) = entry.programs
    return program


def _kinds(program, recorder_steps=None):
    return [len(chain) for chain in program.fused]


def test_a_no_grad_chain_is_fused_and_equals_eager():
    @jit
    def step(x):
        with no_grad():
            return _gelu(x)

    x = Tensor(np.random.default_rng(1).normal(size=(64, 33)).astype(np.float32))
    expected = _gelu(x).data
    for _ in range(3):
        np.testing.assert_array_equal(step(x).data, expected)
    # 0.5 * x, then * (1 + tanh(...)); and x * x * x ... + 1: the inner chain of seven
    assert sorted(len(c) for c in _program(step).fused) == [2, 7]
    other = Tensor(np.random.default_rng(2).normal(size=(64, 33)).astype(np.float32))
    np.testing.assert_array_equal(step(other).data, _gelu(other).data)


def test_a_fused_replay_allocates_its_chain_once():
    @jit
    def step(x):
        with no_grad():
            return (x.exp() + 1).log()

    x = Tensor(np.ones((8, 8), np.float32))
    step(x)
    step(x)
    program = _program(step)
    (chain,) = program.fused
    buffer = program.buffers[chain[0]]
    before = buffer.copy()
    y = step(Tensor(np.zeros((8, 8), np.float32)))
    np.testing.assert_allclose(y.data, np.log(2.0), rtol=1e-6)
    assert not np.array_equal(buffer, before)          # the replay wrote into the chain's array
    assert not np.shares_memory(y.data, buffer)       # and the result is a copy of it


def test_what_breaks_a_chain():
    @jit
    def step(x, y, column):
        with no_grad():
            a = x.exp()
            read_twice = a * a + a               # a is read twice: a * a starts a chain
            widened = (column + 1) * y           # (4, 1) -> (4, 5): another shape
            promoted = (x + 1) * Tensor(2.0, dtype=np.float64)  # float64: promoted
            kept = x.tanh()
            ends = kept.sin()                     # kept is the result too: not an intermediate
            return read_twice, widened, promoted, kept, ends

    rng = np.random.default_rng(3)
    x = Tensor(rng.normal(size=(4, 5)).astype(np.float32))
    y = Tensor(rng.normal(size=(4, 5)).astype(np.float32))
    column = Tensor(rng.normal(size=(4, 1)).astype(np.float32))
    expected = [t.data for t in step.fn(x, y, column)]
    for _ in range(3):
        for got, want in zip(step(x, y, column), expected):
            np.testing.assert_array_equal(got.data, want)
    assert _program(step).fused == [[1, 2]]        # exp's result is read twice: not in it


def test_ops_a_backward_runs_through_are_not_fused_and_the_rest_is():
    model = nn.Linear(6, 3)
    opt = optim.SGD(model.parameters(), lr=0.1)

    @jit
    def step(x, target):
        opt.zero_grad()
        with no_grad():                          # a target computed in the step: no gradient
            soft = ((target * 2).tanh() + 1) * 0.5
        out = (model(x).tanh() + 1) * 0.5        # a backward runs through: saved, not fused
        loss = ((out - soft) * (out - soft)).mean()
        loss.backward()
        opt.step()
        return loss

    rng = np.random.default_rng(4)
    x = Tensor(rng.normal(size=(10, 6)).astype(np.float32))
    t = Tensor(rng.normal(size=(10, 3)).astype(np.float32))
    eager_model = nn.Linear(6, 3)
    eager_model.load_state_dict(model.state_dict())
    eager_opt = optim.SGD(eager_model.parameters(), lr=0.1)
    for _ in range(4):
        loss = step(x, t)
        eager_opt.zero_grad()
        soft = ((t * 2).tanh() + 1) * 0.5
        out = (eager_model(x).tanh() + 1) * 0.5
        eager = ((out - soft) * (out - soft)).mean()
        eager.backward()
        eager_opt.step()
        np.testing.assert_array_equal(loss.data, eager.data)
        np.testing.assert_array_equal(model.weight.data, eager_model.weight.data)
    (chain,) = _program(step).fused                # the target's mul, tanh, add, mul only
    assert len(chain) == 4


def test_an_update_between_chain_members_is_seen_where_eager_sees_it():
    @jit
    def step(x, y):
        with no_grad():
            a = x * 2
            y += 1                               # y changes after a, before b reads it
            b = a + y
            return b.exp()

    x = Tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
    y_jit = Tensor(np.zeros((2, 3), np.float32))
    y_eager = Tensor(np.zeros((2, 3), np.float32))
    for _ in range(3):
        got = step(x, y_jit)
        want = step.fn(x, y_eager)
        np.testing.assert_array_equal(got.data, want.data)
        np.testing.assert_array_equal(y_jit.data, y_eager.data)
    assert [len(c) for c in _program(step).fused] == [3]


def test_random_chains_replay_as_eager():
    """Random no-grad chains over a few arrays, each value read a random number of times."""
    unary = [lambda t: t.exp(), lambda t: t.tanh(), lambda t: t.relu(), lambda t: -t,
             lambda t: t.sigmoid(), lambda t: t.clip(-0.5, 0.5), lambda t: abs(t).sqrt(),
             lambda t: t ** 2, lambda t: t.sin()]
    binary = [lambda a, b: a + b, lambda a, b: a - b, lambda a, b: a * b,
              lambda a, b: a.maximum(b), lambda a, b: a.minimum(b), lambda a, b: a / (1 + b * b)]
    fused_any = 0
    for seed in range(40):
        rng = np.random.default_rng([7, seed])
        plan = [(int(rng.integers(0, 2)), int(rng.integers(0, 9)), int(rng.integers(0, 6)),
                 int(rng.integers(0, 1 << 20))) for _ in range(int(rng.integers(2, 12)))]

        def body(x, y):
            values = [x, y]
            with no_grad():
                for is_binary, u, b, pick in plan:
                    a = values[-1 if pick % 3 else pick % len(values)]
                    other = values[pick % len(values)]
                    values.append(binary[b](a, other) if is_binary else unary[u](a))
            return values[-1], values[len(values) // 2]

        step = jit(body)
        dtype = np.float32 if seed % 2 else np.float64
        x = Tensor(rng.normal(size=(3, 4)).astype(dtype))
        y = Tensor(rng.normal(size=(4,)).astype(dtype))
        for _ in range(3):
            for got, want in zip(step(x, y), body(x, y)):
                np.testing.assert_array_equal(got.data, want.data, err_msg=f"seed {seed}")
        fused_any += bool(_program(step).fused)
    assert fused_any >= 10


def test_fusion_off_replays_the_same(monkeypatch):
    monkeypatch.setattr(fusion, "ENABLED", False)

    @jit
    def step(x):
        with no_grad():
            return _gelu(x)

    x = Tensor(np.random.default_rng(5).normal(size=(5, 7)).astype(np.float32))
    for _ in range(3):
        np.testing.assert_array_equal(step(x).data, _gelu(x).data)
    assert _program(step).fused == []


def test_a_replay_lets_its_large_arrays_go_after_their_last_read():
    """After a replayed step, the slots hold none of its large intermediates (they would
    stay allocated until the next call, which would then take new memory for its own)."""
    model = nn.Sequential(nn.Linear(300, 256), nn.Tanh(), nn.Linear(256, 10))
    opt = optim.SGD(model.parameters(), lr=0.01)

    @jit
    def step(x, y):
        opt.zero_grad()
        loss = nn.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        with no_grad():
            probs = model(x).softmax(-1)
        return loss, probs

    rng = np.random.default_rng(6)
    x = Tensor(rng.normal(size=(512, 300)).astype(np.float32))
    y = Tensor(rng.integers(0, 10, 512))
    for _ in range(3):
        loss, probs = step(x, y)
    program = _program(step)
    parameters = set(program.captured_slot.values())     # read afresh: the tensors' own
    kept = [i for i, v in enumerate(program.slots) if isinstance(v, np.ndarray)
            and v.nbytes >= 500_000 and i not in parameters]     # (512, 256) float32 and up
    assert kept == []
    with no_grad():
        np.testing.assert_allclose(probs.data, model(x).softmax(-1).data, rtol=1e-6)

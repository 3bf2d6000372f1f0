"""Fused chains: recorded elementwise ops whose intermediate results nothing else reads, run
in one preallocated array.

    y = 0.5 * x * (1 + (c * (x + 0.044715 * x ** 3)).tanh())     # under no_grad

records nine ops and, eagerly, nine new arrays of x's size. In a replay each op of the chain
writes its result into the chain's own array (`forward_into`, beside each op's forward), over
the result of the op before it: no array is allocated, and the data stays in cache between
one op and the next. NumPy 2's own loops beat a fused-expression evaluator here (numexpr ran
this chain 3 to 4 times slower: its exp and tanh are not vectorized on this build), so the
fusion is in memory, not in one loop.

Only ops that no backward pass of the step runs through are fused: an op a backward runs
through saved its inputs or output (an Exp its result, a Mul both inputs) for its gradient,
and they must stay as they are. So a replay fuses evaluation and inference work, and work on
values that need no gradient (a mask, a target, a schedule) inside a training step.

A chain: ops with a `forward_into`, each reading the op before it, whose result only that
next op reads (not another op, not array work, not a backward pass, not the step's result),
with every result and every array input of the chain's shape and dtype as recorded (an input
of another dtype would be promoted differently when written into the chain's array). Each
op runs where it was recorded, so what the steps between them change is seen as in eager.
"""
import numpy as np

from .recorder import slots_read

ENABLED = True       # False: every op allocates its own result (benchmarks compare the two)


def reads(steps, output_slots):
    """slot -> how many times the step's later work reads it (the result counts once)."""
    count = {}
    for step in steps:
        for slot in slots_read(step):
            count[slot] = count.get(slot, 0) + 1
    for slot in output_slots:
        count[slot] = count.get(slot, 0) + 1
    return count


def chains(recorder, output_slots, in_backward):
    """The chains to fuse: lists of step indices, each op reading the one before it.
    `in_backward`: the ids of the ops a backward pass runs through."""
    if not ENABLED:
        return []
    steps, seen = recorder.steps, recorder.seen
    count = reads(steps, output_slots)

    def array_of(ref):
        kind, value = ref
        if kind == "slot":
            return seen[value]
        if kind == "tensor":
            return value.data
        return value if isinstance(value, np.ndarray) else None

    def fusible(step):
        _, op, inputs, options, out = step
        if type(op).forward_into is None or id(op) in in_backward:
            return False
        if any(ref[0] != "value" for ref in options.values()):
            return False
        result = seen[out]
        if result.dtype.kind != "f":
            return False
        for ref in inputs:
            if ref[0] == "tuple":
                return False
            array = array_of(ref)
            if not isinstance(array, np.ndarray) or array.dtype != result.dtype:
                return False
        return True

    found, tail_of = [], {}         # tail_of: the output slot of a chain's last op -> chain
    for index, step in enumerate(steps):
        if step[0] != "op" or not fusible(step):
            continue
        result = seen[step[4]]
        chain = None
        for ref in step[2]:
            if ref[0] == "slot" and count.get(ref[1]) == 1 and ref[1] in tail_of:
                before = tail_of.pop(ref[1])
                if seen[steps[before[-1]][4]].shape == result.shape:
                    chain = before
                    break
        if chain is None:
            chain = [index]
            found.append(chain)
        else:
            chain.append(index)
        tail_of[step[4]] = chain
    return [chain for chain in found if len(chain) > 1]

"""The graph: one topological order, and the backward pass over it.

A tensor made by an op holds it (`t.op`, internally `t._ctx`), and the op holds its input
tensors (`op.inputs`). backward walks the nodes behind its outputs in reverse topological
order: each node is reached after every node that consumes it, so its gradient is complete
when its op runs backward. Iterative (graphs of millions of nodes), accumulating (a tensor used
twice gets both contributions), releasing (each op is dropped as soon as it has run, so the
graph is freed while the output lives).
"""
import functools
import gc

import numpy as np

from .mode import MODE, tell


class _Released:
    """Marks a node whose graph backward() already freed."""
    name = "released"


RELEASED = _Released()


IN_PLACE_SEEN = [False]       # set by the first recorded in-place op: only then do ops carry
                              # versions, and the walk asks for them


# tensors a recorded in-place op changed: id -> (weak reference, version, {earlier version: the
# node it was}); kept beside the tensors, so that a tensor carries nothing for it
CHANGED = {}


def version_of(t):
    """How many recorded in-place ops changed t (0: none)."""
    entry = CHANGED.get(id(t))
    return entry[1] if entry is not None and entry[0]() is t else 0


def history_of(t):
    """{earlier version: the node t was} for a tensor changed in place."""
    entry = CHANGED.get(id(t))
    return entry[2] if entry is not None and entry[0]() is t else {}


def inputs_of(op):
    """The op's inputs as the nodes they were when it ran: an input changed in place since
    (t += ...) stands for its node of that version; an input the op saved for its backward and
    that was changed in place since is an error naming the op, as PyTorch's version counter."""
    versions = getattr(op, "versions", None)
    if versions is None:
        return op.inputs
    nodes = []
    for t, version in zip(op.inputs, versions):
        if version_of(t) != version:
            saved = [n for n in saved_names(op) if getattr(op, n, None) is t._data]
            if saved:
                raise RuntimeError(f"backward: {op.name} saved a tensor of shape {t.shape} "
                                   f"for its backward ({saved[0]}), and it was changed in "
                                   f"place after: compute it out of place (t = t + ...)")
            t = history_of(t)[version]
        nodes.append(t)
    return tuple(nodes)


def topo_order(roots, constants=False, freed=None):
    """Every tensor behind `roots` (a tensor or a sequence of them) that requires grad (with
    constants=True, every one), each after the inputs of its op: the one depth-first walk
    that backward, the drawings, the explorer and the tests all use. `freed`: the message of
    the error raised on reaching a graph an earlier backward freed (otherwise the walk ends
    there)."""
    roots = roots if isinstance(roots, (list, tuple)) else (roots,)
    order, seen = [], set()                    # tensors hash by identity
    append, add = order.append, seen.add
    stack = [(root, False) for root in reversed(roots)]
    pop, push = stack.pop, stack.append
    while stack:
        node, inputs_done = pop()
        if inputs_done:
            append(node)                       # every input is already in `order`
            continue
        if node in seen:
            continue
        add(node)
        push((node, True))
        op = node._ctx
        if op is not None:
            if op is RELEASED:
                if freed is not None:
                    raise RuntimeError(freed)
                continue
            for parent in reversed(inputs_of(op) if IN_PLACE_SEEN[0] else op.inputs):
                if parent not in seen and (constants or parent.requires_grad):
                    push((parent, False))
    return order


def sum_to_shape(g, shape, op="backward"):
    """Undo NumPy broadcasting: add up every axis that was prepended or stretched. A gradient
    that `shape` does not broadcast to is an error naming the op that returned it."""
    lead = g.ndim - len(shape)
    if lead < 0 or any(n != 1 and n != m for n, m in zip(shape, g.shape[lead:])):
        raise ValueError(f"{op}: backward returned a gradient of shape {g.shape} for an input "
                         f"of shape {shape}")
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape)
                                      if n == 1 and g.shape[lead + i] != 1)
    return g.sum(axis=axes, keepdims=True).reshape(shape) if axes else g.reshape(shape)


def _protocol_error(op, input_grads, inputs):
    """backward returns one gradient per input, as a tuple: anything else names the op."""
    got = f"a tuple of {len(input_grads)}" if isinstance(input_grads, tuple) else \
        f"a {type(input_grads).__name__}"
    return TypeError(f"{op.name}: backward must return a tuple with one gradient per input "
                     f"({len(inputs)}), got {got}")


def backward_plan(roots):
    """The backward pass behind `roots`: steps in reverse topological order (each node after
    every node that consumes it). A step is (op, node, inputs) for a node made by an op, and
    (None, leaf, None) for a leaf; a graph that an earlier backward freed is an error. A
    node's gradient gathers in its `_pending` slot while the pass runs (a leaf's, shared
    between graphs, in a dict of the pass)."""
    steps = []
    append = steps.append
    for node in reversed(topo_order(roots, freed=_FREED)):
        op = node._ctx
        if op is None:
            append((None, node, None))
        else:
            node._pending = None
            append((op, node, inputs_of(op) if IN_PLACE_SEEN[0] else op.inputs))
    return steps


_FREED = ("backward: the graph behind this tensor was already freed by an earlier backward(); "
          "pass retain_graph=True to the first call to run backward twice")


def run_backward(roots, seeds, retain_graph, create_graph=False, capture=None):
    """Backpropagate seeds[i] from roots[i] through the recorded graph.

    Without `capture`, gradients accumulate into the leaves' .grad (and, with retain_graph,
    every node keeps its own). With `capture` (ids of tensors, for grad()) the total gradient
    of each of those is returned and no .grad is touched. With create_graph the gradients are
    recorded Tensors, computed by the same backward methods (see ops.py), so they can be
    differentiated again."""
    observers = MODE.observers
    if observers:
        tell(observers, "on_backward_start", roots, seeds, create_graph, capture)
    # Backward creates no reference cycles, so the cyclic collector has nothing to find;
    # pausing it saves a third of the time on graphs of millions of nodes.
    collecting = gc.isenabled()
    gc.disable()
    recording = MODE.grad_enabled
    MODE.grad_enabled = create_graph       # record the backward only when asked to
    try:
        return run_plan(backward_plan(roots), roots, seeds, retain_graph, create_graph,
                        capture, observers)
    finally:
        MODE.grad_enabled = recording
        if collecting:
            gc.enable()
        if observers:
            tell(observers, "on_backward_end")


def run_plan(steps, roots, seeds, retain_graph=False, create_graph=False, capture=None,
             observers=()):
    """Run a backward plan (backward_plan's steps) from seeds[i] at roots[i]: the one backward
    loop, for backward(), grad() and a jit's replays. A node is anything with a tensor's
    `_pending`, `_ctx`, `_data` (for its shape) and `requires_grad`, and a leaf also
    `_accumulate(g, owned)`: a replay runs the loop on stand-ins of its own."""
    at_leaves = {}                    # leaf -> its gradient so far (nodes hash by identity)
    try:
        for root, seed in zip(roots, seeds):
            if root._ctx is None:
                previous = at_leaves.get(root)
                at_leaves[root] = seed if previous is None else previous + seed
            else:
                root._pending = seed if root._pending is None else root._pending + seed
        return _run(steps, retain_graph, create_graph, capture, observers, at_leaves)
    except BaseException:
        for op, node, _ in steps:       # nothing half-gathered stays behind for the next pass
            if op is not None:
                node._pending = None
        raise


# what ops return for 0-d results besides arrays: kept as they are until a node's gradient is
# complete (then made an array once), instead of an array per contribution
_NUMPY_SCALARS = frozenset({np.float64, np.float32, np.float16, np.longdouble})


def _run(steps, retain_graph, create_graph, capture, observers, at_leaves):
    captured = {}
    owned = set()            # arrays already stored as some leaf's .grad in this pass
    ndarray, asarray, scalars, released = np.ndarray, np.asarray, _NUMPY_SCALARS, RELEASED
    free = not retain_graph                     # drop each op once it has run
    keep = retain_graph and capture is None     # every node keeps its .grad
    # a slice's gradient added in place into its input's (see _scatter_into); observers and
    # create_graph see every op's backward as it is written
    scatters, scattered = not (create_graph or observers), {}
    for op, node, inputs in steps:
        if op is None:                                    # a leaf: its gradient is complete
            g = at_leaves.pop(node, None)
            scattered.pop(node, None)
            if g is None:
                continue
            if type(g) is not ndarray and not create_graph:
                g = asarray(g)
            if capture is None:
                node._accumulate(g, owned)
            elif id(node) in capture:
                captured[id(node)] = g
            if observers:
                tell(observers, "on_gradient", node, g)
            continue
        g = node._pending
        if free:
            node._ctx = released                  # the op, and what it saved, can go
        if g is None:                             # nothing reached it
            continue
        node._pending = None
        scattered.pop(node, None)
        if type(g) is not ndarray and not create_graph:
            g = asarray(g)           # 0-d arrays added together give a NumPy scalar
        if capture is not None:
            if id(node) in capture:
                captured[id(node)] = g
        elif keep:
            node._accumulate(g, None)        # a copy
        if observers:
            tell(observers, "before_backward", op, g)
        if scatters and type(op).scatter_backward is not None and inputs[0].requires_grad:
            _scatter_into(inputs[0], op.scatter_backward(g), at_leaves, scattered)
            continue
        input_grads = backward_on_tensors(op, node, g) if create_graph else op.backward(g)
        if type(input_grads) is not tuple or len(input_grads) != len(inputs):
            raise _protocol_error(op, input_grads, inputs)
        if observers:
            tell(observers, "on_backward", op, g, input_grads)
        for parent, pg in zip(inputs, input_grads):
            if pg is None or not parent.requires_grad:
                continue
            if create_graph:
                if not hasattr(pg, "_ctx"):                   # a constant: wrap it
                    pg = type(g)._wrap(asarray(pg))
            elif type(pg) is not ndarray and type(pg) not in scalars:
                pg = asarray(pg)
            if pg.shape != parent._data.shape:
                pg = sum_to_shape(asarray(pg) if not create_graph else pg,
                                  parent._data.shape, op.name)
            if parent._ctx is None:
                previous = at_leaves.get(parent)
                at_leaves[parent] = pg if previous is None else previous + pg
            else:
                previous = parent._pending
                parent._pending = pg if previous is None else previous + pg
    return captured


def _scatter_into(parent, scatter, at_leaves, scattered):
    """Add a gradient that is zero except at `index` (an op's scatter_backward: a slice's,
    (index, values, advanced)) into the parent's gradient so far, in place, in an array this
    pass made for it: x[t] for each of a sequence's steps then costs one array of x's shape,
    not one per step and a sum of them. Anything else found there is copied first, as ops
    never change the gradients they pass on."""
    index, values, advanced = scatter
    leaf = parent._ctx is None
    so_far = at_leaves.get(parent) if leaf else parent._pending
    buffer = scattered.get(parent)
    if buffer is None or buffer is not so_far:
        shape = parent._data.shape
        dtype = np.result_type(values, so_far) if so_far is not None else values.dtype
        buffer = np.zeros(shape, dtype) if so_far is None else np.array(
            np.broadcast_to(so_far, shape), dtype)
        scattered[parent] = buffer
        if leaf:
            at_leaves[parent] = buffer
        else:
            parent._pending = buffer
    if advanced:
        np.add.at(buffer, index, values)       # unbuffered: repeated indices add up
    else:
        buffer[index] += values


# ---------------------------------------------------------------- gradients of gradients

def backward_on_tensors(op, node, gz):
    """op.backward(gz) with gz a Tensor, while every array the op saved that is one of its
    inputs' or its output's data stands for that tensor: the gradient is then recorded, and
    differentiating it differentiates through the inputs and the output."""
    return _on_tensors(op, node, lambda: op.backward(gz), "backward",
                       "under create_graph=True (grad of a grad, hessian, hvp, gradgradcheck)")


def jvp_on_tensors(op, node, tangents):
    """op.jvp(*tangents) with Tensor tangents, the saved arrays standing for the inputs and
    the output as in backward_on_tensors: the tangent is recorded, so that a reverse pass can
    differentiate it (reverse over forward)."""
    return _on_tensors(op, node, lambda: op.jvp(*tangents), "jvp",
                       "inside a jvp that is differentiated again (grad of a jvp)")


def _on_tensors(op, node, call, rule, when):
    standing = {id(t._data): t for t in op.inputs}
    standing[id(node._data)] = node
    swapped = []
    try:
        for name in saved_names(op):
            value = getattr(op, name, None)
            if type(value) is np.ndarray and id(value) in standing:
                swapped.append((name, value))
                setattr(op, name, standing[id(value)])
        return call()
    except TypeError as error:
        raise TypeError(
            f"{op.name}: its {rule} cannot run {when}, where it receives Tensors: {error}. "
            f"Write it with operators, Tensor methods (t.cos(), t.exp(), ...) or NumPy "
            f"functions that have a Tensor rule, or compute the value in forward and save it "
            f"(it is then a constant)") from error
    finally:
        for name, value in swapped:
            setattr(op, name, value)


_BASE_SLOTS = ("inputs", "options", "needs_input_grad", "modules", "created_at", "versions")


def saved_names(op):
    """The attributes an op can have saved: its classes' __slots__, and its __dict__."""
    return list(_slot_names(type(op))) + list(getattr(op, "__dict__", ()))


@functools.lru_cache(maxsize=None)
def _slot_names(cls):
    return tuple(n for c in cls.__mro__ for n in c.__dict__.get("__slots__", ())
                 if n not in ("__dict__", "__weakref__") and n not in _BASE_SLOTS)


def keep_output(op, scalar, array):
    """NumPy returns a scalar, not a 0-d array, for some 0-d results (np.exp of a 0-d array).
    The output tensor holds `array`; whatever the op saved of `scalar` becomes `array` too, so
    that the saved output stands for the output tensor under create_graph."""
    for name in _slot_names(type(op)):
        if getattr(op, name, None) is scalar:
            setattr(op, name, array)
    extra = getattr(op, "__dict__", None)            # a user's op without __slots__
    if extra:
        for name, value in list(extra.items()):
            if value is scalar:
                extra[name] = array

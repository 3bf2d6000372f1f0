"""vmap: a function of one example made a function of a batch, by batching rules per op.

f is traced once, on the first example: an observer notes every op it runs (its class, its
options, its input and output tensors) and which tensors carry the batch (those computed from
a batched argument). Then the trace is run again on whole batches: each op whose inputs carry
the batch is computed by its batching rule, on "physical" tensors whose axis 0 is the batch,
with the engine's own ops (so the op's math is the one in its class, and a batched computation
is a graph like any other). Each op's batching rule is its `batch` classmethod, beside its
forward, backward and jvp; vmap knows no particular op. An op none of whose inputs carry the
batch keeps the value it had in the trace. An op without a batching rule is an error naming
it, never a Python loop.

func.grad inside vmap (per-example gradients): the ops of the function being differentiated
are run again batched, from leaves that hold each example's own copy of the arguments
(broadcast when they are shared, in_axes=None), and one backward pass of the sum of the
examples' outputs gives every example's gradient at once (the examples never mix).

What cannot be batched is refused while tracing: reading a batched value (item(), .data,
bool), an index computed from a batched tensor, random draws (dropout in training mode),
batch norm in training mode, backward() and other transforms inside vmap besides func.grad.
"""
import numpy as np

from ..engine import Observer, Tensor, enable_grad, grad as _reverse, observe
from ..engine.batching import VmapError, with_batch
from ..engine.tensor import mark_escaped
from . import forward
from .trees import tree_leaves, tree_rebuild, vmap_traces

# ---------------------------------------------------------------- the trace

class _GradStep:
    """func.grad called inside the trace: steps[start:end] computed `output` from `leaves`
    (standing for `sources`); `grads` are the example's gradients."""

    def __init__(self, start, end, leaves, sources, output, grads):
        self.start, self.end = start, end
        self.leaves, self.sources, self.output, self.grads = leaves, sources, output, grads


class _Adopt:
    """A step of the trace: a tensor made without an op from a batched tensor's array (its
    detach(), Tensor(x), a conversion) carries the batch from here on."""


class _Rebind:
    """A step of the trace: the tensor `output` holds the value of `inputs[0]` from here on (an
    in-place update: the target's old value, then its new one)."""


class _Trace(Observer):
    follows_in_place = True               # t += v reaches us as an op and two effects

    def __init__(self):
        self.steps = []                  # (op class, options, inputs, output)
        self.batched = set()             # ids of traced tensors that carry the batch
        self.batched_arrays = set()      # ids of their arrays (an index taken from one)
        self.owner = {}                  # id(batched array) -> the batched tensor holding it
        self.derived = {}                # id(array) -> (function, sources): made from them
        self.grad_steps = {}             # start index -> _GradStep
        self.in_grad = False
        self.keep = []                   # every traced tensor, alive until the replay

    def mark(self, tensor):
        self.batched.add(id(tensor))
        self.batched_arrays.add(id(tensor._data))
        self.owner.setdefault(id(tensor._data), tensor)

    def adopt(self, tensor):
        """A tensor holding a batched array that no op made: it carries the batch."""
        if id(tensor) not in self.batched and id(tensor._data) in self.batched_arrays:
            self.steps.append((_Adopt, {}, (), tensor))
            self.keep.append(tensor)
            self.mark(tensor)

    def on_array(self, function, arrays, result):
        """Array work outside ops (Tensor(x) copies x's array): from a batched array, a
        batched array, made again from every example's in the replay."""
        if any(isinstance(a, np.ndarray) and id(a) in self.batched_arrays for a in arrays):
            self.derived[id(result)] = (function, [self.owner.get(id(a), a) for a in arrays])
            self.batched_arrays.add(id(result))
            self.keep.append(result)

    def is_batched(self, tensor):
        return id(tensor) in self.batched

    def on_op(self, op, inputs, output):
        kind = type(op)
        if kind.draws_random:
            raise VmapError(f"vmap: f draws random numbers ({op.name}): each example would "
                            f"get the same draw; draw outside vmap and pass the numbers in "
                            f"(for dropout: model.eval(), or masks as an argument)")
        options = dict(op.options or {})
        for value in _index_arrays(options):
            if id(value) in self.batched_arrays:
                raise VmapError(f"vmap: {op.name} takes an index computed from a batched "
                                f"tensor: a data-dependent index has no batching rule")
        for t in inputs:
            self.adopt(t)
        self.steps.append((kind, options, inputs, output))
        self.keep.append(output)
        if any(id(t) in self.batched for t in inputs):
            self.mark(output)

    def on_read(self, tensor, what):
        if id(tensor) in self.batched:
            raise VmapError(f"vmap: f reads the value of a batched tensor of shape "
                            f"{tensor.shape} ({what}): a value that differs per example "
                            f"cannot steer Python code; use Tensor ops (where, maximum, ...)")

    def on_backward_start(self, outputs, grads, create_graph, capture):
        # a recorded backward that returns its gradients (an inner vmap's func.grad, or
        # graph.grad(create_graph=True)) is made of ops this trace sees and batches
        if not self.in_grad and not (create_graph and capture is not None):
            raise VmapError("vmap: backward() or grad() inside vmap: use func.grad, whose "
                            "batching gives every example its own gradient")

    def on_effect(self, kind, target, value):
        if kind in ("in_place_snapshot", "in_place_result"):
            source, holder = (target, value) if kind == "in_place_snapshot" else (value, target)
            self.steps.append((_Rebind, {}, (source,), holder))
            self.keep.append(holder)
            if id(source) in self.batched:
                self.mark(holder)
            return
        if kind in ("in_place", "data") and isinstance(target, Tensor) and \
                id(target) in self.batched:
            raise VmapError(f"vmap: f changes a batched tensor in place ({kind}): write "
                            f"it as a new tensor instead")


def _index_arrays(options):
    index = options.get("index")
    if index is None:
        return []
    parts = index if isinstance(index, tuple) else (index,)
    return [p for p in parts if isinstance(p, np.ndarray)]


def traced_grad(trace, f, args, nums, has_aux):
    """func.grad(f)(*args) inside a vmap trace: the example's gradients, noted so that the
    replay computes every example's."""
    if trace.in_grad:
        raise NotImplementedError("vmap: func.grad of func.grad inside vmap (per-example "
                                  "second derivatives) is not supported")
    args = list(args)
    sources, leaves = [], []
    for a in nums:
        tensors = tree_leaves(args[a])
        fresh = []
        for t in tensors:
            if not isinstance(t, Tensor) or t.dtype.kind != "f":
                raise TypeError(f"func.grad: argument {a} is differentiated and must be "
                                f"floating-point Tensors")
            leaf = Tensor.from_numpy(t._data, requires_grad=True)   # not a read of a value
            forward.share_tangent(leaf, t)                # a running jvp's tangent rides on
            if trace.is_batched(t):
                trace.mark(leaf)
            sources.append(t)
            fresh.append(leaf)
        leaves += fresh
        args[a] = tree_rebuild(args[a], iter(fresh))
    start = len(trace.steps)
    trace.in_grad = True
    try:
        with enable_grad():
            out = f(*args)
            aux = None
            if has_aux:
                out, aux = out
            if not isinstance(out, Tensor) or out.size != 1:
                raise ValueError(f"func.grad: f must return a one-element Tensor, got "
                                 f"{getattr(out, 'shape', type(out).__name__)}")
            # inside a jvp (forward over reverse): the backward recorded, so that the jvp's
            # tangents go through it, and the trace sees those ops too
            # an outer vmap batches the backward from its ops (the jit replays them): recorded
            recorded = forward.active() or len(vmap_traces()) > 1 or forward.jit_recording()
            grads = (_reverse(out, leaves, allow_unused=True, create_graph=recorded)
                     if out.requires_grad else [None] * len(leaves))
    finally:
        trace.in_grad = False
    grads = [Tensor(np.zeros(x.shape, x.dtype), dtype=x.dtype) if g is None else g
             for x, g in zip(leaves, grads)]
    step = _GradStep(start, len(trace.steps), leaves, sources, out, grads)
    trace.grad_steps[start] = step
    for g in grads:
        trace.keep.append(g)
        if trace.is_batched(out):
            trace.mark(g)
    tracked = [args[a] for a in nums]
    filled = iter(grads)
    results = [tree_rebuild(arg, filled) for arg in tracked]
    return results, aux


# ---------------------------------------------------------------- running the trace batched

class _Replay:
    """The trace run on whole batches: env maps a traced tensor's id to (physical tensor,
    batched)."""

    def __init__(self, trace, size):
        self.trace, self.size, self.env = trace, size, {}

    def lookup(self, t):
        return self.env.get(id(t), (t, False))

    def run(self, start=0, end=None, within=None):
        """Steps start..end; `within`: the grad step whose function they are."""
        steps = self.trace.steps
        end = len(steps) if end is None else end
        i = start
        while i < end:
            grad_step = self.trace.grad_steps.get(i)
            if grad_step is not None and grad_step is not within:
                self._grad(grad_step)
                i = grad_step.end
                continue
            kind, options, inputs, output = steps[i]
            if kind is _Adopt:
                self.env[id(output)] = (self._adopted(output), True)
                i += 1
                continue
            if kind is _Rebind:
                value, batched = self.lookup(inputs[0])
                if batched or id(output) in self.env:
                    self.env[id(output)] = (value, batched)
                i += 1
                continue
            args = [self.lookup(t) for t in inputs]
            if any(batched for _, batched in args):
                if kind.batch is None:
                    raise VmapError(f"vmap: no batching rule for the op {kind.name} "
                                    f"({kind.__name__}); give the op a batch() rule "
                                    f"(docs/architecture.md), or call it outside vmap")
                self.env[id(output)] = (kind.batch(self.size, options, args), True)
            i += 1

    def _adopted(self, tensor):
        """Every example's value of a tensor the trace adopted: the same array work on the
        batch (Tensor(x)), or the batched tensor whose array it shares, detached."""
        made = self.trace.derived.get(id(tensor._data))
        if made is not None:
            function, sources = made
            arrays = [self.lookup(s)[0]._data if isinstance(s, Tensor) else s for s in sources]
            return Tensor.from_numpy(function(*arrays))
        return self.lookup(self.trace.owner[id(tensor._data)])[0].detach()

    def _grad(self, step):
        leaves, tracked = [], False
        for leaf, source in zip(step.leaves, step.sources):
            value, batched = self.lookup(source)
            if value.requires_grad:
                # an outer derivative tracks it: each example's copy stays in its graph, and
                # the per-example gradients are recorded (differentiated again, as vmap(grad)
                # inside a grad, a penalty on them, a meta-gradient)
                with enable_grad():
                    copy = value.reshape(value.shape) if batched else value.broadcast_to(
                        (self.size,) + value.shape)
                tracked = True
            else:        # each example's own copy of a shared argument: a broadcast view
                copy = Tensor.from_numpy(value._data if batched else np.broadcast_to(
                    value._data, (self.size,) + value.shape), requires_grad=True)
                forward.share_tangent(copy, value, None if batched else self.size)
            self.env[id(leaf)] = (copy, True)
            leaves.append(copy)
        # a jvp runs (its tangents go through), or an outer vmap or the jit takes this
        # backward's ops
        tracked = (tracked or forward.active() or bool(vmap_traces())
                   or forward.jit_recording())
        with enable_grad():
            self.run(step.start, step.end, within=step)
            out, batched = self.lookup(step.output)
            if not batched:
                out = out.reshape(()).broadcast_to((self.size,))
            total = out.sum()
            self.trace.in_grad = True
            try:
                grads = (_reverse(total, leaves, allow_unused=True, create_graph=tracked)
                         if total.requires_grad else [None] * len(leaves))
            finally:
                self.trace.in_grad = False
        for placeholder, leaf, g in zip(step.grads, leaves, grads):
            g = Tensor(np.zeros(leaf.shape, leaf.dtype)) if g is None else g
            self.env[id(placeholder)] = (g.reshape((self.size,) + placeholder.shape), True)


# ---------------------------------------------------------------- vmap

def _axes_for(in_axes, args):
    """One in_axes entry per positional argument (each an int, None, or a tree)."""
    if isinstance(in_axes, (int, type(None))):
        return [in_axes] * len(args)
    if not isinstance(in_axes, (tuple, list)):
        raise TypeError(f"vmap: in_axes must be an int, None, or a tuple or list with one entry "
                        f"per argument, got {type(in_axes).__name__}")
    if len(in_axes) != len(args):
        raise ValueError(f"vmap: in_axes has {len(in_axes)} entries for {len(args)} arguments")
    return list(in_axes)


def _spread(axes, tree, where):
    """An axis (int or None) for every leaf of `tree`: `axes` is one for all its leaves, or a
    tuple, list or dict of the tree's own structure (as JAX and torch.func take them)."""
    if axes is None or (isinstance(axes, int) and not isinstance(axes, bool)):
        return [axes] * len(tree_leaves(tree))
    if isinstance(axes, dict):
        if not isinstance(tree, dict) or set(axes) != set(tree):
            raise ValueError(f"vmap: in_axes for {where} is a dict with keys {sorted(axes)}; "
                             f"the argument is {_structure(tree)}")
        return [a for k in tree for a in _spread(axes[k], tree[k], f"{where}[{k!r}]")]
    if isinstance(axes, (tuple, list)):
        if not isinstance(tree, (tuple, list)) or len(tree) != len(axes):
            raise ValueError(f"vmap: in_axes for {where} has {len(axes)} entries; the argument "
                             f"is {_structure(tree)}")
        return [a for k, (ax, t) in enumerate(zip(axes, tree))
                for a in _spread(ax, t, f"{where}[{k}]")]
    raise TypeError(f"vmap: in_axes for {where} must be an int, None, or a tuple, list or dict "
                    f"of the argument's structure, got {axes!r}")


def _structure(tree):
    if isinstance(tree, dict):
        return f"a dict with keys {sorted(tree)}"
    if isinstance(tree, (tuple, list)):
        return f"a {type(tree).__name__} of {len(tree)}"
    return f"a {type(tree).__name__}"


def vmap(f, in_axes=0, out_axes=0):
    """f mapped over axis `in_axes` of its arguments, its outputs stacked on `out_axes`.
    in_axes is an int for every argument, or one entry per argument: an int, None (shared by
    every example), or a tuple, list or dict of the argument's own structure giving each leaf
    its axis. Keyword arguments pass through unmapped. out_axes is an int for every output,
    or one per output leaf."""

    def batched(*args, **kwargs):
        axes = _axes_for(in_axes, args)
        size, examples, sources = None, [], []
        for i, (arg, axis) in enumerate(zip(args, axes)):
            leaf_axes = _spread(axis, arg, f"argument {i}")
            if all(a is None for a in leaf_axes):
                examples.append(arg)
                continue
            leaves = []
            for t, axis in zip(tree_leaves(arg), leaf_axes):
                if axis is None:
                    leaves.append(t)
                    continue
                if not isinstance(t, Tensor):
                    raise TypeError(f"vmap: argument {i} is mapped (in_axes {axis}) but holds "
                                    f"a {type(t).__name__}, not a Tensor")
                if not -t.ndim <= axis < t.ndim:
                    raise ValueError(f"vmap: in_axes {axis} is out of range for argument {i} "
                                     f"of shape {t.shape}")
                physical = t if axis % t.ndim == 0 else t.transpose(
                    (axis % t.ndim,) + tuple(a for a in range(t.ndim) if a != axis % t.ndim))
                if size is None:
                    size = physical.shape[0]
                elif physical.shape[0] != size:
                    raise ValueError(f"vmap: argument {i} has {physical.shape[0]} examples "
                                     f"along axis {axis}, another argument {size}")
                if physical.shape[0] == 0:
                    # no example: f runs on a batch of one stand-in (ones), and every result
                    # keeps none of it
                    physical = Tensor.from_numpy(np.ones((1,) + physical.shape[1:],
                                                         physical.dtype))
                example = physical[0]
                sources.append((example, physical))
                leaves.append(example)
            examples.append(tree_rebuild(arg, iter(leaves)))
        if size is None:
            raise ValueError("vmap: no argument is mapped (every in_axes is None)")
        trace = _Trace()
        for example, _ in sources:
            trace.mark(example)
        vmap_traces().append(trace)
        try:
            with observe(trace):
                outputs = f(*examples, **kwargs)
        finally:
            vmap_traces().pop()
        for out in tree_leaves(outputs):              # returned as made: detach(), Tensor(x)
            if isinstance(out, Tensor):
                trace.adopt(out)
        replay = _Replay(trace, size or 1)            # an empty batch runs one stand-in
        for example, physical in sources:
            replay.env[id(example)] = (physical, True)
        replay.run()
        outs = tree_leaves(outputs)
        if isinstance(out_axes, int):
            out_axis_list = [out_axes] * len(outs)
        elif isinstance(out_axes, (tuple, list)) and len(out_axes) == len(outs) and all(
                isinstance(a, int) for a in out_axes):
            out_axis_list = list(out_axes)          # one per output leaf, in order
        else:                                       # a tree of the outputs' structure
            out_axis_list = _spread(out_axes, outputs, "the outputs")
            if any(a is None for a in out_axis_list):
                raise ValueError("vmap: out_axes None is not supported: every output is "
                                 "stacked along an axis")
        results = []
        for out, axis in zip(outs, out_axis_list):
            if not isinstance(out, Tensor):
                raise TypeError(f"vmap: f returned a {type(out).__name__}; return Tensors")
            value, is_batched = replay.lookup(out)
            value = with_batch(size or 1, value, is_batched)
            if size == 0:
                value = value[:0]
            axis = axis % value.ndim
            if axis:
                order = tuple(range(1, axis + 1)) + (0,) + tuple(range(axis + 1, value.ndim))
                value = value.transpose(order)
            results.append(value)
        if not vmap_traces():             # the outermost vmap: its stand-ins must not leak
            for t in trace.keep:
                if isinstance(t, Tensor) and id(t) in trace.batched:
                    mark_escaped(t, "this tensor was made inside vmap's function from a batched "
                                    "value, as one example's stand-in; it has no value outside "
                                    "vmap: return it from the function instead of keeping it")
        return tree_rebuild(outputs, iter(results))        # the outputs' own structure
    return batched

"""vmap: a function of one example made a function of a batch, by batching rules per op.

f is traced once, on the first example: an observer notes every op it runs (its class, its
options, its input and output tensors) and which tensors carry the batch (those computed from
a batched argument). Then the trace is run again on whole batches: each op whose inputs carry
the batch is computed by its batching rule, on "physical" tensors whose axis 0 is the batch,
with the engine's own ops (so the op's math is the one in ops.py, and a batched computation
is a graph like any other). An op none of whose inputs carry the batch keeps the value it had
in the trace. An op without a batching rule is an error naming it, never a Python loop.

func.grad inside vmap (per-example gradients): the ops of the function being differentiated
are run again batched, from leaves that hold each example's own copy of the arguments
(broadcast when they are shared, in_axes=None), and one backward pass of the sum of the
examples' outputs gives every example's gradient at once (the examples never mix).

What cannot be batched is refused while tracing: reading a batched value (item(), .data,
bool), an index computed from a batched tensor, random draws (dropout in training mode),
batch norm in training mode, backward() and other transforms inside vmap besides func.grad.
"""
import threading

import numpy as np

from .. import ops
from ..engine import Observer, Tensor, enable_grad, grad as _reverse, observe
from ..engine.conv import Geometry

_active = threading.local()


def _traces():
    if not hasattr(_active, "traces"):
        _active.traces = []
    return _active.traces


def tracing():
    """The innermost vmap trace running in this thread, or None."""
    traces = _traces()
    return traces[-1] if traces else None


class VmapError(ValueError):
    """f does something that vmap cannot batch; the message says what and where."""


# ---------------------------------------------------------------- the trace

class _GradStep:
    """func.grad called inside the trace: steps[start:end] computed `output` from `leaves`
    (standing for `sources`); `grads` are the example's gradients."""

    def __init__(self, start, end, leaves, sources, output, grads):
        self.start, self.end = start, end
        self.leaves, self.sources, self.output, self.grads = leaves, sources, output, grads


class _Trace(Observer):
    def __init__(self):
        self.steps = []                  # (op class, options, inputs, output)
        self.batched = set()             # ids of traced tensors that carry the batch
        self.batched_arrays = set()      # ids of their arrays (an index taken from one)
        self.grad_steps = {}             # start index -> _GradStep
        self.in_grad = False
        self.keep = []                   # every traced tensor, alive until the replay

    def mark(self, tensor):
        self.batched.add(id(tensor))
        self.batched_arrays.add(id(tensor._data))

    def is_batched(self, tensor):
        return id(tensor) in self.batched

    def on_op(self, op, inputs, output):
        kind = type(op)
        if kind in _RANDOM or kind is ops.Dropout:
            raise VmapError(f"vmap: f draws random numbers ({op.name}): each example would "
                            f"get the same draw; draw outside vmap and pass the numbers in "
                            f"(for dropout: model.eval(), or masks as an argument)")
        options = dict(op.options or {})
        for value in _index_arrays(options):
            if id(value) in self.batched_arrays:
                raise VmapError(f"vmap: {op.name} takes an index computed from a batched "
                                f"tensor: a data-dependent index has no batching rule")
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
        if not self.in_grad:
            raise VmapError("vmap: backward() or grad() inside vmap: use func.grad, whose "
                            "batching gives every example its own gradient")

    def on_effect(self, kind, target, value):
        if kind in ("in_place", "data") and isinstance(target, Tensor) and \
                id(target) in self.batched:
            raise VmapError(f"vmap: f changes a batched tensor in place ({kind}): write "
                            f"it as a new tensor instead")


_RANDOM = (ops.RandomNormal, ops.RandomUniform, ops.RandomInteger)


def _index_arrays(options):
    index = options.get("index")
    if index is None:
        return []
    parts = index if isinstance(index, tuple) else (index,)
    return [p for p in parts if isinstance(p, np.ndarray)]


def traced_grad(trace, f, args, nums, has_aux):
    """func.grad(f)(*args) inside a vmap trace: the example's gradients, noted so that the
    replay computes every example's."""
    from .transforms import tree_leaves, tree_rebuild
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
            grads = (_reverse(out, leaves, allow_unused=True) if out.requires_grad
                     else [None] * len(leaves))
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
            args = [self.lookup(t) for t in inputs]
            if any(batched for _, batched in args):
                rule = RULES.get(kind)
                if rule is None:
                    raise VmapError(f"vmap: no batching rule for the op {kind.name} "
                                    f"({kind.__name__}); give vmap's RULES one, or call it "
                                    f"outside vmap")
                self.env[id(output)] = (rule(self.size, options, args, kind), True)
            i += 1

    def _grad(self, step):
        leaves = []
        for leaf, source in zip(step.leaves, step.sources):
            value, batched = self.lookup(source)
            # each example's own copy of a shared argument: a broadcast view, not a copy
            data = value._data if batched else np.broadcast_to(
                value._data, (self.size,) + value.shape)
            fresh = Tensor.from_numpy(data, requires_grad=True)
            self.env[id(leaf)] = (fresh, True)
            leaves.append(fresh)
        with enable_grad():
            self.run(step.start, step.end, within=step)
            out, batched = self.lookup(step.output)
            if not batched:
                out = ops.BroadcastTo.apply(out.reshape(()), shape=(self.size,))
            total = out.sum()
            self.trace.in_grad = True
            try:
                grads = (_reverse(total, leaves, allow_unused=True) if total.requires_grad
                         else [None] * len(leaves))
            finally:
                self.trace.in_grad = False
        for placeholder, leaf, g in zip(step.grads, leaves, grads):
            g = Tensor(np.zeros(leaf.shape, leaf.dtype)) if g is None else g
            self.env[id(placeholder)] = (g.reshape((self.size,) + placeholder.shape), True)


# ---------------------------------------------------------------- batching rules
# Each rule gets the batch size, the op's options and its inputs as (physical tensor,
# batched) pairs, and returns the physical output (batch on axis 0), built from ops.

def _logical_ndim(t, batched):
    return t.ndim - 1 if batched else t.ndim


def _lift(t, batched, ndim):
    """A batched tensor with 1s inserted after the batch axis up to `ndim` logical axes, so
    that it broadcasts against the others as its example would (unbatched: as it is)."""
    have = _logical_ndim(t, batched)
    if not batched or have >= ndim:
        return t
    return t.reshape((t.shape[0],) + (1,) * (ndim - have) + t.shape[1:])


def _with_batch(size, t, batched):
    """Every example's copy: a batched tensor as it is, a shared one broadcast to the batch."""
    return t if batched else ops.BroadcastTo.apply(t, shape=(size,) + t.shape)


def _elementwise(size, options, args, kind):
    ndim = max(_logical_ndim(t, b) for t, b in args)
    return kind.apply(*[_lift(t, b, ndim) for t, b in args], **options)


def _shifted(axis, ndim):
    """A normalized axis option (None: every axis) for the physical tensor."""
    if axis is None:
        return tuple(range(1, ndim + 1))
    if isinstance(axis, tuple):
        return tuple(a + 1 for a in axis)
    return axis + 1


def _reduction(size, options, args, kind):
    (t, _), = args
    options = dict(options)
    options["axis"] = _shifted(options.get("axis"), t.ndim - 1)
    return kind.apply(t, **options)


def _argmax(size, options, args, kind):
    (t, _), = args
    if options.get("axis") is None:
        return kind.apply(t.reshape(size, -1), axis=1)
    return kind.apply(t, axis=options["axis"] + 1)


def _reshape(size, options, args, kind):
    (t, _), = args
    return kind.apply(t, shape=(size,) + tuple(options["shape"]))


def _transpose(size, options, args, kind):
    (t, _), = args
    return kind.apply(t, axes=(0,) + tuple(a + 1 for a in options["axes"]))


def _broadcast_to(size, options, args, kind):
    (t, b), = args
    shape = tuple(options["shape"])
    return kind.apply(_lift(t, b, len(shape)), shape=(size,) + shape)


def _batched_index(index, advanced):
    """The index with the batch axis kept in front, and where NumPy then puts the batch axis
    (non-adjacent integer arrays move their axes first)."""
    parts = index if isinstance(index, tuple) else (index,)
    new = (slice(None),) + parts
    if not advanced:
        return new, 0
    arrays = [i for i, p in enumerate(parts) if isinstance(p, np.ndarray)]
    if arrays and arrays != list(range(arrays[0], arrays[-1] + 1)):
        shapes = [p.shape if p.dtype != bool else (int(p.sum()),) for p in parts
                  if isinstance(p, np.ndarray)]
        return new, len(np.broadcast_shapes(*shapes))
    return new, 0


def _getitem(size, options, args, kind):
    (t, _), = args
    index, where = _batched_index(options["index"], options["advanced"])
    out = kind.apply(t, index=index, advanced=options["advanced"])
    if where:
        order = (where,) + tuple(i for i in range(out.ndim) if i != where)
        out = ops.Transpose.apply(out, axes=order)
    return out


def _index_add(size, options, args, kind):
    (t, _), = args
    index, where = _batched_index(options["index"], options["advanced"])
    if where:
        raise VmapError("vmap: index_add with non-adjacent integer arrays has no batching rule")
    return kind.apply(t, index=index, shape=(size,) + tuple(options["shape"]),
                      advanced=options["advanced"])


def _join(size, options, args, kind):
    tensors = [_with_batch(size, t, b) for t, b in args]
    return kind.apply(*tensors, axis=options["axis"] + 1)


def _matmul(size, options, args, kind):
    (a, ba), (b, bb) = args
    row = column = False
    if ba and a.ndim == 2:                        # a batched vector: a row per example
        a, row = a.reshape(a.shape[0], 1, a.shape[1]), True
    if bb and b.ndim == 2:                        # ... and a column
        b, column = b.reshape(b.shape[0], b.shape[1], 1), True
    ndim = max(_logical_ndim(a, ba), _logical_ndim(b, bb))
    out = kind.apply(_lift(a, ba, ndim), _lift(b, bb, ndim))
    shape = list(out.shape)
    if column:
        del shape[-1]
    if row:            # the row's axis: before the column's, or last if b was a plain vector
        del shape[-1 if (b.ndim == 1 and not bb) or column else -2]
    return out.reshape(tuple(shape)) if len(shape) != out.ndim else out


def _linear(size, options, args, kind):
    (x, bx), (w, bw), *rest = args
    bias = rest[0] if rest else None
    if not bw and (bias is None or not bias[1]):
        return kind.apply(x, w, *([bias[0]] if bias else []))      # (B, ..., in) rows
    wt = (ops.Transpose.apply(w, axes=(0, 2, 1)) if bw else w.T, bw)
    out = _matmul(size, {}, [(x, bx), wt], ops.MatMul)
    if bias is not None:
        out = _elementwise(size, {}, [(out, True), bias], ops.Add)
    return out


def _cross_entropy(size, options, args, kind):
    (logits, bl), (targets, bt) = args
    logits, targets = _with_batch(size, logits, bl), _with_batch(size, targets, bt)
    n, classes = logits.shape[1:]
    per_row = kind.apply(logits.reshape(size * n, classes), targets.reshape(size * n),
                         reduction="none",
                         label_smoothing=options.get("label_smoothing", 0.0))
    return _reduced(per_row.reshape(size, n), options.get("reduction", "mean"))


def _reduced(losses, reduction):
    """Each example's losses (axis 0 the batch) reduced as the op's `reduction` asks."""
    if reduction == "none":
        return losses
    axes = tuple(range(1, losses.ndim))
    return losses.mean(axis=axes) if reduction == "mean" else losses.sum(axis=axes)


def _binary_cross_entropy(size, options, args, kind):
    (p, bp), (t, bt) = args
    ndim = max(_logical_ndim(p, bp), _logical_ndim(t, bt))
    p, t = _with_batch(size, _lift(p, bp, ndim), bp), _with_batch(size, _lift(t, bt, ndim), bt)
    shape = np.broadcast_shapes(p.shape, t.shape)
    p, t = ops.BroadcastTo.apply(p, shape=shape), ops.BroadcastTo.apply(t, shape=shape)
    return _reduced(kind.apply(p, t, reduction="none"), options.get("reduction", "mean"))


def _images(size, t):
    """(B, N, C, H, W) as (B*N, C, H, W)."""
    return t.reshape((size * t.shape[1],) + t.shape[2:])


def _unimages(size, t):
    return t.reshape((size, t.shape[0] // size) + t.shape[1:])


def _per_image(size, options, args, kind):
    """Ops on whole images (pooling, their gradients): the examples' images as one batch."""
    (t, _), = args
    options = dict(options)
    if "input_shape" in options:
        options["input_shape"] = (size * options["input_shape"][0],) + tuple(
            options["input_shape"][1:])
    if "choice" in options:                        # the same windows for every example
        options["choice"] = np.tile(options["choice"], (size, 1, 1, 1))
    return _unimages(size, kind.apply(_images(size, t), **options))


def _grouped(geometry, size):
    return Geometry(geometry.kernel, geometry.stride, geometry.padding, geometry.dilation,
                    geometry.groups * size)


def _examples_as_channels(size, t):
    """(B, N, C, H, W) as (N, B*C, H, W): each example's channels a group of their own."""
    n = t.shape[1]
    return ops.Transpose.apply(t, axes=(1, 0, 2, 3, 4)).reshape(
        (n, size * t.shape[2]) + t.shape[3:])


def _channels_as_examples(size, t):
    """(N, B*O, H, W) back to (B, N, O, H, W)."""
    n = t.shape[0]
    return ops.Transpose.apply(t.reshape((n, size, t.shape[1] // size) + t.shape[2:]),
                               axes=(1, 0, 2, 3, 4))


def _conv2d(size, options, args, kind):
    (x, bx), (w, bw), *rest = args
    bias = rest[0] if rest else None
    geometry = options["geometry"]
    if not bw:
        out = _unimages(size, kind.apply(_images(size, _with_batch(size, x, bx)), w,
                                         geometry=geometry))
    else:                                # per-example weights: examples as groups
        x = _examples_as_channels(size, _with_batch(size, x, bx))
        weights = w.reshape((size * w.shape[1],) + w.shape[2:])
        out = _channels_as_examples(size, kind.apply(x, weights,
                                                     geometry=_grouped(geometry, size)))
    if bias is not None:
        b, bb = bias
        b = b.reshape((size, 1, -1, 1, 1)) if bb else b.reshape((-1, 1, 1))
        out = out + b
    return out


def _conv_input_grad(size, options, args, kind):
    (g, bg), (w, bw) = args
    shape, geometry = options["input_shape"], options["geometry"]
    if not bw:
        return _unimages(size, kind.apply(_images(size, _with_batch(size, g, bg)), w,
                                          geometry=geometry,
                                          input_shape=(size * shape[0],) + tuple(shape[1:])))
    g = _examples_as_channels(size, _with_batch(size, g, bg))     # examples as groups
    weights = w.reshape((size * w.shape[1],) + w.shape[2:])
    out = kind.apply(g, weights, geometry=_grouped(geometry, size),
                     input_shape=(shape[0], size * shape[1]) + tuple(shape[2:]))
    return _channels_as_examples(size, out)


def _conv_weight_grad(size, options, args, kind):
    (x, bx), (g, bg) = args
    x = _examples_as_channels(size, _with_batch(size, x, bx))
    g = _examples_as_channels(size, _with_batch(size, g, bg))
    o, *rest = options["weight_shape"]
    out = kind.apply(x, g, geometry=_grouped(options["geometry"], size),
                     weight_shape=(size * o,) + tuple(rest))
    return out.reshape((size, o) + tuple(rest))


def _batch_norm(size, options, args, kind):
    if options.get("training", True):
        raise VmapError("vmap: batch_norm in training mode computes statistics over the "
                        "batch and updates running statistics in place: call model.eval() "
                        "first, or apply it outside vmap")
    (x, bx), *params = args
    if not any(b for _, b in params):
        return _unimages(size, kind.apply(_images(size, x), *[t for t, _ in params],
                                          **options))
    # per-example weights or statistics: eval mode is elementwise, each per-channel vector
    # shaped to meet the channels (physical axis 2 of a batched x, 1 of a shared one)
    x = _with_batch(size, x, bx)
    trailing = (1,) * (x.ndim - 3)

    def channels(t, batched):
        return t.reshape((size, 1, -1) + trailing) if batched else t.reshape((-1,) + trailing)
    (w, bw), (b, bb), (mean, bm), (var, bv) = params
    inv_std = 1.0 / (channels(var, bv) + options.get("eps", 1e-5)).sqrt()   # as the op rounds
    return (x - channels(mean, bm)) * inv_std * channels(w, bw) + channels(b, bb)


def _unary(size, options, args, kind):
    (t, _), = args
    return kind.apply(t, **options)


def _softmax(size, options, args, kind):
    (t, _), = args
    return kind.apply(t, axis=options["axis"] + 1)


RULES = {kind: _elementwise for kind in (
    ops.Add, ops.Sub, ops.Mul, ops.Div, ops.Pow, ops.Maximum, ops.Minimum, ops.Where,
    ops.Compare, ops.DropoutMask)}
RULES.update({kind: _unary for kind in (
    ops.Neg, ops.PowConst, ops.Exp, ops.Log, ops.Sqrt, ops.Sin, ops.Cos, ops.Abs, ops.ReLU,
    ops.Sigmoid, ops.Tanh, ops.Clip, ops.Cast)})
RULES.update({kind: _reduction for kind in (ops.Sum, ops.Mean, ops.Max, ops.Min, ops.Norm)})
RULES.update({ops.Softmax: _softmax, ops.LogSoftmax: _softmax, ops.ArgMax: _argmax,
              ops.Reshape: _reshape, ops.Transpose: _transpose,
              ops.BroadcastTo: _broadcast_to, ops.GetItem: _getitem,
              ops.IndexAdd: _index_add, ops.Concat: _join, ops.Stack: _join,
              ops.MatMul: _matmul, ops.Linear: _linear, ops.CrossEntropy: _cross_entropy,
              ops.BinaryCrossEntropy: _binary_cross_entropy, ops.Conv2d: _conv2d,
              ops.ConvInputGrad: _conv_input_grad, ops.ConvWeightGrad: _conv_weight_grad,
              ops.MaxPool2d: _per_image, ops.AvgPool2d: _per_image,
              ops.WindowScatter: _per_image, ops.WindowGather: _per_image,
              ops.AvgPoolScatter: _per_image, ops.BatchNorm: _batch_norm})


# ---------------------------------------------------------------- vmap

def _axes_for(in_axes, args):
    if isinstance(in_axes, (int, type(None))):
        return [in_axes] * len(args)
    if len(in_axes) != len(args):
        raise ValueError(f"vmap: in_axes has {len(in_axes)} entries for {len(args)} arguments")
    return list(in_axes)


def vmap(f, in_axes=0, out_axes=0):
    """f mapped over axis `in_axes` of its arguments (an int for all, or one int or None per
    argument; None: shared by every example), its outputs stacked on `out_axes`. A
    differentiated argument (func.grad inside) may be a dict, list or tuple of Tensors; an
    argument with an int axis is a Tensor, or such a collection of them."""
    from .transforms import tree_leaves, tree_rebuild

    def batched(*args):
        axes = _axes_for(in_axes, args)
        size, examples, sources = None, [], []
        for i, (arg, axis) in enumerate(zip(args, axes)):
            if axis is None:
                examples.append(arg)
                continue
            leaves = []
            for t in tree_leaves(arg):
                if not isinstance(t, Tensor):
                    raise TypeError(f"vmap: argument {i} is mapped (in_axes {axis}) but holds "
                                    f"a {type(t).__name__}, not a Tensor")
                if not -t.ndim <= axis < t.ndim:
                    raise ValueError(f"vmap: in_axes {axis} is out of range for argument {i} "
                                     f"of shape {t.shape}")
                physical = t if axis % t.ndim == 0 else ops.Transpose.apply(
                    t, axes=(axis % t.ndim,) + tuple(a for a in range(t.ndim)
                                                     if a != axis % t.ndim))
                if size is None:
                    size = physical.shape[0]
                elif physical.shape[0] != size:
                    raise ValueError(f"vmap: argument {i} has {physical.shape[0]} examples "
                                     f"along axis {axis}, another argument {size}")
                example = physical[0]
                sources.append((example, physical))
                leaves.append(example)
            examples.append(tree_rebuild(arg, iter(leaves)))
        if size is None:
            raise ValueError("vmap: no argument is mapped (every in_axes is None)")
        if size == 0:
            raise ValueError("vmap: the mapped axis has no examples")
        trace = _Trace()
        for example, _ in sources:
            trace.mark(example)
        _traces().append(trace)
        try:
            with observe(trace):
                outputs = f(*examples)
        finally:
            _traces().pop()
        replay = _Replay(trace, size)
        for example, physical in sources:
            replay.env[id(example)] = (physical, True)
        replay.run()
        outs = tree_leaves(outputs)
        out_axis_list = [out_axes] * len(outs) if isinstance(out_axes, int) else list(out_axes)
        if len(out_axis_list) != len(outs):
            raise ValueError(f"vmap: out_axes has {len(out_axis_list)} entries for "
                             f"{len(outs)} outputs")
        results = []
        for out, axis in zip(outs, out_axis_list):
            if not isinstance(out, Tensor):
                raise TypeError(f"vmap: f returned a {type(out).__name__}; return Tensors")
            value, is_batched = replay.lookup(out)
            value = _with_batch(size, value, is_batched)
            axis = axis % value.ndim
            if axis:
                order = tuple(range(1, axis + 1)) + (0,) + tuple(range(axis + 1, value.ndim))
                value = ops.Transpose.apply(value, axes=order)
            results.append(value)
        return tree_rebuild(outputs, iter(results))        # the outputs' own structure
    return batched

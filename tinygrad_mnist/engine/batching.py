"""What batching rules share: the helpers every op's `batch` rule is written with.

An op's batching rule (`batch`, a classmethod beside its forward, backward and jvp) is what
vmap runs for it: it gets the batch size, the op's options and its inputs as (physical tensor,
batched) pairs, where a batched tensor carries the examples on axis 0 and a shared one is one
example's value, and returns the physical output (the batch on axis 0), computed with ops.
Elementwise ops need one line (`batch = batching.elementwise`).

Only tensor methods are used here, so this module imports no op and no Tensor.
"""
import numpy as np


class VmapError(ValueError):
    """Something vmap cannot batch; the message says what and where."""


def logical_ndim(t, batched):
    """The rank of one example."""
    return t.ndim - 1 if batched else t.ndim


def lift(t, batched, ndim):
    """A batched tensor with 1s inserted after the batch axis up to `ndim` logical axes, so
    that it broadcasts against the others as its example would (unbatched: as it is)."""
    have = logical_ndim(t, batched)
    if not batched or have >= ndim:
        return t
    return t.reshape((t.shape[0],) + (1,) * (ndim - have) + t.shape[1:])


def with_batch(size, t, batched):
    """Every example's copy: a batched tensor as it is, a shared one broadcast to the batch."""
    return t if batched else t.broadcast_to((size,) + t.shape)


def shifted_axis(axis, ndim):
    """A normalized axis option (None: every axis of an example of rank `ndim`) for the
    physical tensor, whose axis 0 is the batch."""
    if axis is None:
        return tuple(range(1, ndim + 1))
    if isinstance(axis, tuple):
        return tuple(a + 1 for a in axis)
    return axis + 1


def reduced(losses, reduction):
    """Each example's losses (axis 0 the batch) reduced as a loss's `reduction` asks."""
    if reduction == "none":
        return losses
    axes = tuple(range(1, losses.ndim))
    return losses.mean(axis=axes) if reduction == "mean" else losses.sum(axis=axes)


def batched_index(index, advanced):
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


def images(size, t):
    """(B, N, C, H, W) as (B*N, C, H, W): every example's images as one batch of images."""
    return t.reshape((size * t.shape[1],) + t.shape[2:])


def unimages(size, t, count):
    """(B*N, ...) back to (B, N, ...), N = `count` images per example (given: with no
    examples it cannot be read off the shape)."""
    return t.reshape((size, count) + t.shape[1:])


def examples_as_channels(size, t):
    """(B, N, C, H, W) as (N, B*C, H, W): each example's channels a group of their own."""
    n = t.shape[1]
    return t.transpose(1, 0, 2, 3, 4).reshape((n, size * t.shape[2]) + t.shape[3:])


def channels_as_examples(size, t, channels):
    """(N, B*O, H, W) back to (B, N, O, H, W), O = `channels` per example."""
    n = t.shape[0]
    return t.reshape((n, size, channels) + t.shape[2:]).transpose(1, 0, 2, 3, 4)


# ---------------------------------------------------------------- rules shared by many ops
# Written as functions of (op class, size, options, args); an op takes one as its rule with
# `batch = batching.elementwise`.

def _elementwise(op, size, options, args):
    """Inputs broadcast against each other as their examples would."""
    ndim = max(logical_ndim(t, b) for t, b in args)
    return op.apply(*[lift(t, b, ndim) for t, b in args], **options)


def _unary(op, size, options, args):
    """One input, elementwise: the op on the whole batch as it is."""
    (t, _), = args
    return op.apply(t, **options)


def _reduction(op, size, options, args):
    """A reduction over `axis` (None: every axis of the example)."""
    (t, _), = args
    options = dict(options)
    options["axis"] = shifted_axis(options.get("axis"), t.ndim - 1)
    return op.apply(t, **options)


def _along_axis(op, size, options, args):
    """One input and one int `axis` of the example (softmax, log_softmax)."""
    (t, _), = args
    return op.apply(t, **{**options, "axis": options["axis"] + 1})


def _per_image(op, size, options, args):
    """Ops on whole images (pooling and their gradients): the examples' images as one
    batch, with the same windows chosen for every example."""
    (t, _), = args
    options = dict(options)
    if "input_shape" in options:
        options["input_shape"] = (size * options["input_shape"][0],) + tuple(
            options["input_shape"][1:])
    if "choice" in options:
        options["choice"] = np.tile(options["choice"], (size, 1, 1, 1))
    return unimages(size, op.apply(images(size, t), **options), t.shape[1])


elementwise = classmethod(_elementwise)
unary = classmethod(_unary)
reduction = classmethod(_reduction)
along_axis = classmethod(_along_axis)
per_image = classmethod(_per_image)

"""Pooling kernels on NCHW arrays: one pass per kernel offset over strided views of the
padded input (never a loop over pixels), and a plain reference of each.

Max-pooling notes which element of each window won (`choice`, the first largest in
row-major window order, one byte per output), so that its gradient is one write per offset.
"""
import numpy as np

from .windows import channels_last, crop, offsets, pad, windows, zeros


def _views(x, geometry, out_hw, fill=0.0):
    """Per kernel offset (row-major), its strided (N, C, OH, OW) view of the padded input."""
    xp = pad(x, geometry.padding, fill)
    return [xp[:, :, rows, cols] for rows, cols in offsets(geometry, out_hw)]


def _two_by_two(geometry):
    """The usual pooling: 2x2 windows side by side (stride 2, no padding, no dilation)."""
    return (geometry.kernel == (2, 2) and geometry.stride == (2, 2)
            and geometry.padding == (0, 0) and geometry.dilation == (1, 1))


def _max_pool_2x2(x, out_hw):
    """max_pool for 2x2 windows side by side, as a tournament: the larger of each row's pair,
    then of the two rows; `choice` from the three comparisons in byte arithmetic (ten passes
    over quarter-size arrays instead of twenty). Strict comparisons keep the first largest."""
    oh, ow = out_hw
    a, b, c, d = (x[:, :, i:2 * oh:2, j:2 * ow:2] for i in (0, 1) for j in (0, 1))
    top, bottom = np.maximum(a, b), np.maximum(c, d)
    right = np.greater(b, a).view(np.int8)                # top row: 1 where b won
    choice = np.greater(d, c).view(np.int8)               # bottom row: 1 where d won
    lower = np.greater(bottom, top).view(np.int8)         # the bottom row won
    np.maximum(top, bottom, out=top)
    choice -= right                                        # lower ? 2 + choice : right
    choice += 2
    choice *= lower
    choice += right
    return top, choice


def max_pool(x, geometry):
    """Each window's largest element (padding never wins), and which one it was."""
    out_hw = geometry.output_size("max_pool2d", *x.shape[2:])
    if _two_by_two(geometry) and x.dtype.kind == "f":
        return _max_pool_2x2(x, out_hw)
    fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    views = _views(x, geometry, out_hw, fill)
    out = views[0].copy(order="K")          # the input's memory order (channels last)
    for view in views[1:]:
        np.maximum(out, view, out=out)
    # the first offset equal to the largest: counted in bytes, without fancy indexing
    dtype = np.int8 if len(views) < 128 else np.int64
    choice = np.zeros_like(out, dtype=dtype)
    taken = views[0] == out
    for k, view in enumerate(views[1:], 1):
        hit = view == out
        hit &= ~taken
        choice += hit.astype(dtype) * dtype(k)
        taken |= hit
    return out, choice


def as_channels_last(a):
    """An NCHW array with channels-last memory: itself if it has it, else a copy."""
    if a.ndim == 4 and not channels_last(a).flags.c_contiguous:
        return np.ascontiguousarray(channels_last(a)).transpose(0, 3, 1, 2)
    return a


def window_gather(x, choice, geometry):
    """Each window's element number `choice` (N, C, OH, OW)."""
    views = _views(x, geometry, choice.shape[2:])
    out = np.zeros_like(views[0])
    for k, view in enumerate(views):
        np.copyto(out, view, where=choice == k)
    return out


def window_scatter(g, choice, geometry, input_shape):
    """Zeros of the input's shape with g[n, c, y, x] added at its window's element `choice`.
    Windows that neither overlap nor pad (stride = kernel: the usual pooling) are written
    directly; others add up."""
    # g arrives NCHW after a flatten: one copy into the input's channels-last memory makes
    # each offset's multiply 6x faster than one that mixes the two layouts
    g = as_channels_last(g)
    tiled = (geometry.stride == geometry.kernel and geometry.padding == (0, 0)
             and geometry.dilation == (1, 1))
    if tiled:              # every element written once: no zeros first but past the windows
        n, c, height, width = input_shape
        gx = np.empty((n, height, width, c), g.dtype).transpose(0, 3, 1, 2)
        (kh, kw), (oh, ow) = geometry.kernel, choice.shape[2:]
        gx[:, :, kh * oh:] = 0
        gx[:, :, :, kw * ow:] = 0
        hit = np.empty_like(choice, dtype=bool)           # in choice's (channels-last) order
        for k, (rows, cols) in enumerate(offsets(geometry, choice.shape[2:])):
            np.equal(choice, k, out=hit)
            np.multiply(g, hit, out=gx[:, :, rows, cols])
        return gx
    gxp = pad(zeros(input_shape, g), geometry.padding)
    for k, (rows, cols) in enumerate(offsets(geometry, choice.shape[2:])):
        gxp[:, :, rows, cols] += np.where(choice == k, g, 0)
    return crop(gxp, geometry.padding, input_shape)


def avg_pool(x, geometry):
    """Each window's mean (padding counts as zeros, PyTorch's default)."""
    out_hw = geometry.output_size("avg_pool2d", *x.shape[2:])
    views = _views(x, geometry, out_hw)
    out = views[0].astype(x.dtype, order="K", copy=True)
    for view in views[1:]:
        out += view
    out /= np.prod(geometry.kernel)
    return out


def avg_pool_scatter(g, geometry, input_shape):
    """g / (KH*KW) added to every element of its window: avg_pool's gradient."""
    gxp = pad(zeros(input_shape, g), geometry.padding)
    share = as_channels_last(g) / np.prod(geometry.kernel)          # as window_scatter's g
    for rows, cols in offsets(geometry, g.shape[2:]):
        gxp[:, :, rows, cols] += share
    return crop(gxp, geometry.padding, input_shape)


# ---------------------------------------------------------------- references
# From a (N, C, OH, OW, KH, KW) windows view, with argmax and np.add.at: no per-offset
# passes, no layout choices.

def _flat_windows(x, geometry, fill=0.0):
    out_hw = geometry.output_size("pool", *x.shape[2:])
    view = windows(x, geometry, out_hw, fill)
    return view.reshape(view.shape[:4] + (view.shape[4] * view.shape[5],))


def reference_max_pool(x, geometry):
    fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    view = _flat_windows(x, geometry, fill)
    choice = view.argmax(axis=-1)                 # the first largest, row-major
    return np.take_along_axis(view, choice[..., None], -1)[..., 0], choice


def reference_window_scatter(g, choice, geometry, input_shape):
    (ph, pw), (sh, sw), (dh, dw) = geometry.padding, geometry.stride, geometry.dilation
    kw = geometry.kernel[1]
    n, c, height, width = input_shape
    gxp = np.zeros((n, c, height + 2 * ph, width + 2 * pw), g.dtype)
    ni, ci, yi, xi = np.indices(g.shape)
    rows = yi * sh + (choice // kw) * dh
    cols = xi * sw + (choice % kw) * dw
    np.add.at(gxp, (ni, ci, rows, cols), g)
    return gxp[:, :, ph:ph + height, pw:pw + width]


def reference_window_gather(x, choice, geometry):
    view = _flat_windows(x, geometry)
    return np.take_along_axis(view, choice[..., None].astype(np.int64), -1)[..., 0]


def reference_avg_pool(x, geometry):
    return _flat_windows(x, geometry).mean(axis=-1)


def reference_avg_pool_scatter(g, geometry, input_shape):
    kh, kw = geometry.kernel
    total = np.zeros(input_shape, g.dtype)
    for k in range(kh * kw):
        choice = np.full(g.shape, k)
        total += reference_window_scatter(g / (kh * kw), choice, geometry, input_shape)
    return total

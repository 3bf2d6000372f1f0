"""Convolution kernels on NCHW arrays: the forward product and the two gradients, each with
the layouts and strategies chosen for speed, and a plain reference of each to check them by.

im2col: a convolution is one matrix product. The input's windows are laid out as rows (one
per output pixel) of columns (one per input channel and kernel offset); the weights are a
(out channels, columns) matrix:

    out[n, o, y, x] = sum over c, i, j of w[o, c, i, j] * xp[n, c, y*sh + i*dh, x*sw + j*dw]
    rows (N*OH*OW, C*KH*KW) @ weights^T (C*KH*KW, O) -> (N*OH*OW, O) -> NCHW

Columns of COLUMN_CHUNK_BYTES and more (the CNN's second layer: 80 MB a batch) are made and
multiplied a few images at a time in one reused buffer, so that the product reads them from
cache; the weight gradient then makes them again the same way instead of keeping them (a
CNN training process peaks at 278 MiB instead of 455).

The forward has four algorithms: im2col and, where they apply, Winograd F(2x2, 3x3), shifted
views (conv_algorithms.py) and the Fourier transform (fourier.py, whose spectrum the weight
gradient uses again); for large products they are measured once per layer shape (CHOSEN,
PINNED_FORWARD), small ones take im2col.

The input gradient (A_w^T g, a transposed convolution) has four strategies, measured once per
layer shape for large products (CHOSEN, PINNED; `--profile` prints them), chosen by
`input_grad_method`'s rule for small ones:
- "turned": with stride 1 it is a convolution of g, padded, with the turned kernel;
- "col2im": each kernel offset's columns are added back into the input as one strided
  slice, a few images at a time so the columns are still in cache;
- "col2im_offset_major": the same with the columns computed transposed, so each offset adds
  blocks whose runs are image rows (few input channels);
- "fourier": the Fourier algorithm's maps transposed (stride 1, small images).
"""
import os
import time

import numpy as np

from .blas import column_sums, matmul
from .conv_algorithms import shifted_applies, shifted_conv, winograd_applies, winograd_conv
from .fourier import (Spectrum, fourier_applies, fourier_conv, fourier_input_grad,
                      fourier_pays, fourier_weight_grad)
from .windows import Geometry, channels_last, crop, offsets, pad_nhwc, windows

OFFSET_MAJOR_CHANNELS = 12      # at most this many input channels: col2im offset-major
COL2IM_BYTES = 16 * 2 ** 20     # the columns col2im adds back, per chunk of images
COLUMN_CHUNK_BYTES = 8 * 2 ** 20  # larger im2col matrices are made and used a chunk at a time


class Columns:
    """im2col's matrix, (M, G, K): a row per output pixel, each group's K columns in (kernel
    row, kernel column, channel) order. offset_major: its memory is (K, M), a column per
    kernel offset along the image rows (one input channel), which the weight gradient reads
    as it is."""
    __slots__ = ("matrix", "offset_major")

    def __init__(self, matrix, offset_major):
        self.matrix, self.offset_major = matrix, offset_major


def columns(x, geometry, out_hw):
    """im2col of x; one copy, of whole runs of channels (or, for one channel, of whole runs
    along the image's rows, 6x faster than runs of KW)."""
    xp = pad_nhwc(channels_last(x), geometry.padding)
    n, c = xp.shape[0], xp.shape[3]
    (kh, kw), (sh, sw), (dh, dw) = geometry.kernel, geometry.stride, geometry.dilation
    s = xp.strides
    m, g = n * out_hw[0] * out_hw[1], geometry.groups
    if c == 1:
        offset_major = np.lib.stride_tricks.as_strided(
            xp, (kh, kw, n) + tuple(out_hw),
            (s[1] * dh, s[2] * dw, s[0], s[1] * sh, s[2] * sw), writeable=False)
        return Columns(offset_major.reshape(kh * kw, m).T[:, None, :], True)
    win = _window_views(x, geometry, out_hw, xp)(0, n)
    if g == 1:
        return Columns(win.reshape(m, 1, kh * kw * c), False)
    return Columns(win.reshape(m, kh * kw, g, c // g).transpose(0, 2, 1, 3)
                   .reshape(m, g, kh * kw * (c // g)), False)


def grouped_weights(w, groups):
    """(O, C/G, KH, KW) -> (G, O/G, KH*KW*C/G), in the columns' order."""
    o, cg, kh, kw = w.shape
    return w.reshape(groups, o // groups, cg, kh, kw).transpose(0, 1, 3, 4, 2).reshape(
        groups, o // groups, kh * kw * cg)


def _from_rows(rows, n, out_hw):
    """(N*OH*OW, O) rows as an NCHW array (NHWC memory: no copy)."""
    return rows.reshape((n,) + tuple(out_hw) + (rows.shape[1],)).transpose(0, 3, 1, 2)


def chunk_images(x_shape, geometry, out_hw, itemsize=4):
    """Images per chunk of im2col for a product done chunk by chunk, or None for one product
    over all of them: chunks when the columns would be large (COLUMN_CHUNK_BYTES and more)
    and have several input channels (one channel has its own, offset-major layout)."""
    n, c = x_shape[0], x_shape[1]
    kh, kw = geometry.kernel
    per_image = out_hw[0] * out_hw[1] * kh * kw * c * itemsize
    if c == 1 or geometry.groups != 1 or n * per_image < COLUMN_CHUNK_BYTES:
        return None
    return max(1, COLUMN_CHUNK_BYTES // per_image)


def _window_views(x, geometry, out_hw, xp=None):
    """A function of (start, stop): images start to stop's windows as a (n, OH, OW, KH, KW, C)
    view of the padded channels-last input `xp` (made here unless given): im2col's rows before
    the copy."""
    xp = pad_nhwc(channels_last(x), geometry.padding) if xp is None else xp
    (sh, sw), (dh, dw) = geometry.stride, geometry.dilation
    s = xp.strides

    def view(start, stop):
        part = xp[start:stop]
        return np.lib.stride_tricks.as_strided(
            part, (part.shape[0],) + tuple(out_hw) + tuple(geometry.kernel) + (xp.shape[3],),
            (s[0], s[1] * sh, s[2] * sw, s[1] * dh, s[2] * dw, s[3]), writeable=False)
    return view


def _chunks(x, geometry, out_hw, chunk):
    """(start, stop, columns) per chunk of images: the chunk's im2col rows, copied into one
    buffer used again for every chunk, so that the product reads them from cache."""
    view = _window_views(x, geometry, out_hw)
    k = geometry.kernel[0] * geometry.kernel[1] * x.shape[1]
    buffer = np.empty((chunk * out_hw[0] * out_hw[1], k), x.dtype)
    for start in range(0, x.shape[0], chunk):
        stop = min(start + chunk, x.shape[0])
        rows = buffer[:(stop - start) * out_hw[0] * out_hw[1]]
        yield start, stop, im2col_into(rows, view(start, stop))


def im2col_into(rows, windows_view):
    """The windows copied into `rows` (im2col's matrix for some images): what an im2col
    costs, apart from the product."""
    np.copyto(rows.reshape(windows_view.shape), windows_view)
    return rows


def forward_methods(geometry, x_shape, weight_shape=None):
    """The forward algorithms that apply to this geometry and input (with the weight's shape:
    that are worth measuring)."""
    out = ["im2col"]
    if winograd_applies(geometry):
        out.append("winograd")
    if shifted_applies(geometry, x_shape[1]):
        out.append("shifted")
    if fourier_applies(geometry, x_shape) and (
            weight_shape is None or fourier_pays(geometry, x_shape, weight_shape[0])):
        out.append("fourier")
    return out


def conv(x, w, geometry, cols=None, chunk=None, method=None):
    """The convolution (N, O, OH, OW) of x and w, and what the weight gradient can use again:
    the Columns im2col made (None when it went chunk by chunk, `chunk` images at a time, by
    default as chunk_images says), the Fourier algorithm's Spectrum, or None. The algorithm
    measured for this shape unless `method` names one; given columns or a chunk size mean
    im2col (a given Spectrum is of no use to another weight: it is ignored)."""
    out_hw = geometry.output_size("conv2d", *x.shape[2:])
    if isinstance(cols, Spectrum):
        cols = None
    if cols is None and chunk is None:
        if method is None:
            method, done = _chosen_forward(x, w, geometry)
            if done is not None:
                return done
        if method != "im2col":
            if method not in _OTHER_ALGORITHMS:
                raise ValueError(f"conv2d: unknown algorithm {method!r}")
            if method not in forward_methods(geometry, x.shape):
                raise ValueError(f"conv2d: the {method} algorithm does not apply to {geometry}")
            return _OTHER_ALGORITHMS[method](x, w, geometry)
        chunk = chunk_images(x.shape, geometry, out_hw, x.itemsize)
    if chunk is not None and geometry.groups == 1 and x.shape[1] > 1:
        wt = grouped_weights(w, 1)[0].T                                  # (K, O)
        pixels = out_hw[0] * out_hw[1]
        rows = np.empty((x.shape[0] * pixels, w.shape[0]), np.result_type(x, w))
        for start, stop, part in _chunks(x, geometry, out_hw, chunk):
            matmul(part, wt, out=rows[start * pixels:stop * pixels])
        return _from_rows(rows, x.shape[0], out_hw), None
    cols = columns(x, geometry, out_hw) if cols is None else cols
    matrix, wg = cols.matrix, grouped_weights(w, geometry.groups)
    if geometry.groups == 1:
        rows = matmul(matrix[:, 0], wg[0].T)                          # (M, K) @ (K, O)
    else:                                      # (G, M, K) @ (G, K, O/G) -> (G, M, O/G)
        rows = matmul(matrix.transpose(1, 0, 2), wg.transpose(0, 2, 1)).transpose(1, 0, 2)
        rows = rows.reshape(rows.shape[0], rows.shape[1] * rows.shape[2])
    return _from_rows(rows, x.shape[0], out_hw), cols


# the forward algorithms besides im2col: (output, what the weight gradient can use again)
_OTHER_ALGORITHMS = {"winograd": lambda x, w, geometry: (winograd_conv(x, w, geometry), None),
                     "shifted": lambda x, w, geometry: (shifted_conv(x, w, geometry), None),
                     "fourier": fourier_conv}


def _output_rows(g, groups):
    """dz (N, O, OH, OW) as rows per output pixel, grouped: (G, M, O/G)."""
    o = g.shape[1]
    return channels_last(g).reshape(-1, groups, o // groups).transpose(1, 0, 2)


def _turned(w, groups):
    """The weights of the transposed convolution: (C, O/G, KH, KW), each group's in and out
    channels exchanged and the kernel turned by 180 degrees."""
    o, cg, kh, kw = w.shape
    turned = w.reshape(groups, o // groups, cg, kh, kw)[:, :, :, ::-1, ::-1]
    return turned.transpose(0, 2, 1, 3, 4).reshape(groups * cg, o // groups, kh, kw)


def _turned_padding(geometry):
    """The padding of the turned convolution, or None where it does not apply (it needs
    stride 1 and padding at most the kernel's span)."""
    (kh, kw), (ph, pw), (dh, dw) = geometry.kernel, geometry.padding, geometry.dilation
    full = (dh * (kh - 1) - ph, dw * (kw - 1) - pw)
    return full if geometry.stride == (1, 1) and min(full) >= 0 else None


def input_grad_method(geometry, input_shape, weight_shape):
    """The strategy a rule picks for small products (larger ones are measured). The turned
    convolution copies O*KH*KW columns per input pixel, col2im C*KH*KW per output pixel:
    col2im wins where there are more out channels than in; offset-major wins for few input
    channels."""
    if _turned_padding(geometry) is not None and input_shape[1] >= weight_shape[0]:
        return "turned"
    if geometry.groups == 1 and input_shape[1] <= OFFSET_MAJOR_CHANNELS:
        return "col2im_offset_major"
    return "col2im"


def input_grad_methods(geometry, weight_shape, input_shape=None):
    """The strategies that apply to this geometry (and input, for the Fourier one)."""
    out = ["col2im"]
    if _turned_padding(geometry) is not None:
        out.append("turned")
    if geometry.groups == 1:
        out.append("col2im_offset_major")
    if (input_shape is not None and fourier_applies(geometry, input_shape)
            and fourier_pays(geometry, input_shape, weight_shape[0])):
        out.append("fourier")
    return out


# The forward's algorithm and the input gradient's strategy per layer shape: measured once per
# process for products of MEASURED_MACS multiply-adds and more (each candidate timed twice on
# the layer's own arrays, the fastest kept), a rule below that. CHOSEN maps (geometry, input
# shape, weight shape, dtype, kind) to what was picked and why ("measured" or "rule"); kind is
# "forward" or "input gradient". PINNED (input gradient) and PINNED_FORWARD, when set to a
# name, are used wherever they apply instead.
# TINYGRAD_MNIST_MEASURE=0 measures nothing: the rules choose, the same algorithms in every
# process, so that two runs of one seed give the same bits (measured choices can differ
# between processes where two candidates are close; a checkpoint keeps a run's own).
MEASURED_MACS = (float("inf") if os.environ.get("TINYGRAD_MNIST_MEASURE", "1") == "0"
                 else 10_000_000)
CHOSEN = {}
PINNED = None
PINNED_FORWARD = None
FORWARD, INPUT_GRAD = "forward", "input gradient"


def _measure(key, methods, run):
    """The fastest of `methods` by run(method), each timed twice: (method, its result)."""
    best, result = None, None
    for method in methods:
        for _ in range(2):
            started = time.perf_counter()
            out = run(method)
            spent = time.perf_counter() - started
            if best is None or spent < best[1]:
                best, result = (method, spent), out
    CHOSEN[key] = (best[0], "measured")
    return best[0], result


def _choose(key, pinned, candidates, run):
    """(method, its result if measuring computed it, else None). candidates() gives the
    methods that apply, the rule's pick and the multiply-adds: only on a shape's first call
    (or with a pin), as run(method) makes its arrays only when measuring."""
    if pinned is None and key in CHOSEN:           # every call after a shape's first
        return CHOSEN[key][0], None
    methods, rule, macs = candidates()
    if pinned in methods:
        return pinned, None
    if key in CHOSEN:
        return CHOSEN[key][0], None
    if macs < MEASURED_MACS or len(methods) == 1:
        CHOSEN[key] = (rule, "rule")
        return rule, None
    return _measure(key, methods, run)


def _chosen_forward(x, w, geometry):
    """The forward's algorithm for this shape, timed as a training step uses it: the forward
    and the weight gradient from what the forward kept (im2col's columns, the Fourier
    spectrum, or nothing: columns made again)."""
    key = (geometry.key(), tuple(x.shape), tuple(w.shape), np.result_type(x, w).str, FORWARD)
    out_hw = geometry.output_size("conv2d", *x.shape[2:])

    def candidates():
        macs = x.shape[0] * out_hw[0] * out_hw[1] * w.size
        return forward_methods(geometry, x.shape, w.shape), "im2col", macs

    def run(method):
        result = conv(x, w, geometry, method=method)
        g = np.ones((x.shape[0], w.shape[0]) + tuple(out_hw), np.result_type(x, w))
        weight_grad(x, g, geometry, w.shape, result[1])
        return result
    return _choose(key, PINNED_FORWARD, candidates, run)


def _chosen_method(g, w, geometry, input_shape, chunk_bytes):
    """The input gradient's strategy for this shape: (method, its gradient if measuring
    computed it, else None)."""
    key = (geometry.key(), tuple(input_shape), tuple(w.shape), g.dtype.str, INPUT_GRAD)

    def candidates():
        return (input_grad_methods(geometry, w.shape, input_shape),
                input_grad_method(geometry, input_shape, w.shape),
                g.size * w.size // max(w.shape[0], 1))
    return _choose(key, PINNED, candidates,
                   lambda method: input_grad(g, w, geometry, input_shape, method, chunk_bytes))


def saved_choices():
    """The algorithms measured so far, as JSON-ready lists (a checkpoint keeps them: a resumed
    run must compute with the same algorithms to continue exactly)."""
    return [[[list(pair) for pair in key[0][:4]] + [key[0][4]], list(key[1]), list(key[2]),
             key[3], method, key[4]] for key, (method, how) in CHOSEN.items()
            if how == "measured"]


def restore_choices(saved):
    """Use the algorithms saved_choices() gave, for those shapes, from now on (entries
    without a kind, from older checkpoints, are input gradients)."""
    for geometry, shape, weight, dtype, method, *kind in saved:
        key = (tuple(map(tuple, geometry[:4])) + (geometry[4],), tuple(shape), tuple(weight),
               dtype, kind[0] if kind else INPUT_GRAD)
        CHOSEN[key] = (method, "measured")


def describe_choices():
    """One line per layer shape whose algorithm was chosen (for --profile)."""
    return [f"conv2d {kind}, input {shape}, weight {weight}, {Geometry(*key)}: "
            f"{method} ({how})" for (key, shape, weight, _, kind), (method, how)
            in CHOSEN.items()]


def input_grad(g, w, geometry, input_shape, method=None, chunk_bytes=COL2IM_BYTES):
    """A_w^T g: the gradient of conv(x, w) with respect to x (of input_shape); the strategy
    measured for this shape unless `method` names one."""
    if method is None:
        method, done = _chosen_method(g, w, geometry, input_shape, chunk_bytes)
        if done is not None:
            return done
    if method == "turned":
        full = _turned_padding(geometry)
        if full is None:
            raise ValueError(f"conv2d input gradient: the turned convolution needs stride 1 "
                             f"and padding at most the kernel's span, got {geometry}")
        turned = Geometry(geometry.kernel, (1, 1), full, geometry.dilation, geometry.groups)
        return conv(g, _turned(w, geometry.groups), turned)[0]
    if method == "col2im_offset_major":
        if geometry.groups != 1:
            raise ValueError(f"conv2d input gradient: offset-major col2im needs groups=1, "
                             f"got {geometry}")
        return _col2im_offset_major(g, w, geometry, input_shape, chunk_bytes)
    if method == "col2im":
        return _col2im(g, w, geometry, input_shape, chunk_bytes)
    if method == "fourier":
        if not fourier_applies(geometry, input_shape):
            raise ValueError(f"conv2d input gradient: the Fourier algorithm needs stride 1, "
                             f"no dilation, one group and a small image, got {geometry} "
                             f"on {tuple(input_shape)}")
        return fourier_input_grad(g, w, geometry, input_shape)
    raise ValueError(f"conv2d input gradient: unknown method {method!r}")


def _chunk(n_images, per_image_bytes, chunk_bytes):
    """Images per chunk, so that a chunk's columns take about chunk_bytes."""
    return max(1, min(n_images, chunk_bytes // max(per_image_bytes, 1)))


def _col2im(g, w, geometry, input_shape, chunk_bytes):
    """Each kernel offset's columns added back into the input as one strided slice, a few
    images at a time (a third faster than one product for the whole batch: the columns are
    still in cache when they are added)."""
    (kh, kw), (ph, pw), groups = geometry.kernel, geometry.padding, geometry.groups
    n, c = input_shape[:2]
    out_hw = g.shape[2:]
    wg = grouped_weights(w, groups)
    at = offsets(geometry, out_hw)
    gxp = np.zeros((n, input_shape[2] + 2 * ph, input_shape[3] + 2 * pw, c), g.dtype)
    chunk = _chunk(n, out_hw[0] * out_hw[1] * kh * kw * c * g.itemsize, chunk_bytes)
    for start in range(0, n, chunk):
        part = slice(start, min(n, start + chunk))
        gcols = matmul(_output_rows(g[part], groups), wg)                  # (G, M, K)
        # (G, M, KH*KW*C/G) -> (n, OH, OW, KH, KW, C): each offset's columns, a strided view
        gwin = gcols.reshape(groups, -1, out_hw[0], out_hw[1], kh, kw, c // groups)
        gwin = gwin[0] if groups == 1 else gwin.transpose(1, 2, 3, 4, 5, 0, 6).reshape(
            -1, out_hw[0], out_hw[1], kh, kw, c)
        target = gxp[part]
        for k, (rows, cols) in enumerate(at):
            i, j = divmod(k, kw)
            target[:, rows, cols, :] += gwin[:, :, :, i, j, :]
    return crop(gxp.transpose(0, 3, 1, 2), geometry.padding, input_shape)


def _col2im_offset_major(g, w, geometry, input_shape, chunk_bytes):
    """col2im for few input channels: the columns computed transposed, (KH*KW*C, M), so each
    kernel offset adds a (C, N, OH, OW) block whose runs are image rows, not runs of a few
    channels (2.4x faster for LeNet-5's second convolution); the sum is laid out back to
    channels last once at the end."""
    (kh, kw), (ph, pw) = geometry.kernel, geometry.padding
    n, c, height, width = input_shape
    o, out_hw = w.shape[0], g.shape[2:]
    weights = w.transpose(2, 3, 1, 0).reshape(kh * kw * c, o)          # (K, O), K = (i, j, c)
    gxp = np.zeros((c, n, height + 2 * ph, width + 2 * pw), g.dtype)
    at = offsets(geometry, out_hw)
    chunk = _chunk(n, out_hw[0] * out_hw[1] * kh * kw * c * g.itemsize, chunk_bytes)
    for start in range(0, n, chunk):
        part = slice(start, min(n, start + chunk))
        rows = channels_last(g[part]).reshape(-1, o)                   # (m, O)
        gwin = matmul(weights, rows.T).reshape(kh, kw, c, -1, *out_hw)  # (KH, KW, C, n, OH, OW)
        target = gxp[:, part]
        for k, (rows_at, cols_at) in enumerate(at):
            i, j = divmod(k, kw)
            target[:, :, rows_at, cols_at] += gwin[i, j]
    nhwc = np.ascontiguousarray(gxp.transpose(1, 2, 3, 0)[:, ph:ph + height, pw:pw + width])
    return nhwc.transpose(0, 3, 1, 2)


def weight_grad(x, g, geometry, weight_shape, cols=None, chunk=None):
    """B_x^T g: the gradient of conv(x, w) with respect to w (of weight_shape), from what the
    forward kept (its columns, or its Spectrum), or from columns made again (chunk by chunk
    where the forward went so)."""
    if isinstance(cols, Spectrum):
        return fourier_weight_grad(x, g, geometry, weight_shape, cols)
    out_hw = g.shape[2:]
    if chunk is None and cols is None:
        chunk = chunk_images(x.shape, geometry, out_hw, x.itemsize)
    if chunk is not None and geometry.groups == 1 and x.shape[1] > 1:
        rows = _output_rows(g, 1)[0]                                       # (M, O)
        pixels = out_hw[0] * out_hw[1]
        o, c, kh, kw = weight_shape
        gw = np.zeros((o, kh * kw * c), np.result_type(x, g))
        for start, stop, part in _chunks(x, geometry, out_hw, chunk):
            gw += matmul(rows[start * pixels:stop * pixels].T, part)      # (O, m) @ (m, K)
        return np.ascontiguousarray(gw.reshape(o, kh, kw, c).transpose(0, 3, 1, 2))
    cols = columns(x, geometry, g.shape[2:]) if cols is None else cols
    groups, matrix = geometry.groups, cols.matrix
    rows = _output_rows(g, groups)
    if groups == 1 and cols.offset_major:
        gw = matmul(matrix[:, 0].T, rows[0]).T                         # ((K, M) @ (M, O))^T
    elif groups == 1:
        gw = matmul(rows[0].T, matrix[:, 0])                           # (O, M) @ (M, K)
    else:
        gw = matmul(rows.transpose(0, 2, 1), matrix.transpose(1, 0, 2))  # (G, O/G, M) @ (G, M, K)
    o, cg, kh, kw = weight_shape
    return np.ascontiguousarray(gw.reshape(groups, o // groups, kh, kw, cg)
                                .transpose(0, 1, 4, 2, 3).reshape(weight_shape))


def add_channel_bias(out, bias):
    """out (N, C, H, W) += bias (C,) in place. On channels-last memory each image is one
    row of H*W*C values and the bias is tiled along it: NumPy broadcasts over a short inner
    axis of C 3-7x slower."""
    nhwc = channels_last(out)
    if not nhwc.flags.c_contiguous:
        out += bias.reshape(1, -1, 1, 1)
        return
    flat = nhwc.reshape(out.shape[0], out.shape[1] * out.shape[2] * out.shape[3])
    flat += np.tile(bias, flat.shape[1] // bias.shape[0])


def channel_sums(g):
    """g (N, C, H, W) summed over all but C, as sums of its channels-last rows."""
    return column_sums(channels_last(g).reshape(-1, g.shape[1]))


# ---------------------------------------------------------------- references
# The same three maps written plainly from their definitions (einsum over a windows view),
# with no layout or strategy: what the tests check every kernel above against.

def _grouped(x, w, geometry, out_hw):
    groups = geometry.groups
    n, c = x.shape[:2]
    view = windows(x, geometry, out_hw)                       # (N, C, OH, OW, KH, KW)
    view = view.reshape((n, groups, c // groups) + view.shape[2:])
    return view, w.reshape((groups, w.shape[0] // groups) + w.shape[1:])


def reference_conv(x, w, geometry):
    out_hw = geometry.output_size("conv2d", *x.shape[2:])
    view, wg = _grouped(x, w, geometry, out_hw)
    out = np.einsum("ngcyxij,gocij->ngoyx", view, wg)
    return out.reshape((x.shape[0], w.shape[0]) + tuple(out_hw))


def reference_input_grad(g, w, geometry, input_shape):
    groups, (_, kw), (ph, pw) = geometry.groups, geometry.kernel, geometry.padding
    n, c, height, width = input_shape
    gg = g.reshape((n, groups, g.shape[1] // groups) + g.shape[2:])
    wg = w.reshape((groups, w.shape[0] // groups) + w.shape[1:])
    gxp = np.zeros((n, groups, c // groups, height + 2 * ph, width + 2 * pw), g.dtype)
    for k, (rows, cols) in enumerate(offsets(geometry, g.shape[2:])):
        i, j = divmod(k, kw)
        gxp[:, :, :, rows, cols] += np.einsum("ngoyx,goc->ngcyx", gg, wg[:, :, :, i, j])
    return gxp.reshape(n, c, height + 2 * ph, width + 2 * pw)[:, :, ph:ph + height,
                                                                pw:pw + width]


def reference_weight_grad(x, g, geometry, weight_shape):
    view, _ = _grouped(x, np.zeros(weight_shape, x.dtype), geometry, g.shape[2:])
    groups = geometry.groups
    gg = g.reshape((g.shape[0], groups, g.shape[1] // groups) + g.shape[2:])
    return np.einsum("ngcyxij,ngoyx->gocij", view, gg).reshape(weight_shape)

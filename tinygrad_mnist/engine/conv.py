"""Convolution and pooling on NCHW arrays, with PyTorch's meaning of every argument.

im2col: a convolution is one matrix product. The input's windows are a strided view of the
padded input (no copy), laid out as rows (one per output pixel) of columns (one per input
channel and kernel offset); the weights are a (out channels, columns) matrix:

    out[n, o, y, x] = sum over c, i, j of w[o, c, i, j] * xp[n, c, y*sh + i*dh, x*sw + j*dw]
    rows (N*OH*OW, C*KH*KW) @ weights^T (C*KH*KW, O) -> (N*OH*OW, O) -> NCHW

The backward's column-to-image adds each kernel offset's columns into the input gradient as
one strided slice: KH*KW additions, never a loop over pixels.

Three ops are closed under differentiation, so gradients of gradients of a conv net work:
with y = conv(x, w) (linear in x for a fixed w: y = A_w x, and in w for a fixed x: y = B_x w),
  conv2d(x, w)                 dx = input_grad(dy, w)          dw = weight_grad(x, dy)
  input_grad(g, w) = A_w^T g   dg = conv2d(dz, w)              dw = weight_grad(dz, g)
  weight_grad(x, g) = B_x^T g  dx = input_grad(g, dz)          dg = conv2d(x, dz)
Pooling is the same: max_pool2d gathers each window's first largest element, and its
gradient scatters back to it (window_scatter, whose gradient is window_gather); avg_pool2d's
gradient spreads dz/(KH*KW) over each window (avg_pool_scatter, whose gradient is avg_pool2d).
"""
import numpy as np

from . import batching
from . import tensor as _tensor
from .blas import column_sums, matmul
from .ops import Op, add_tangents


class Geometry:
    """A convolution's or pooling's kernel, stride, padding and dilation, each a (h, w) pair,
    and the groups; `output_size` checks an input against them."""
    __slots__ = ("kernel", "stride", "padding", "dilation", "groups")

    def __init__(self, kernel, stride, padding, dilation=(1, 1), groups=1):
        self.kernel, self.stride, self.padding = kernel, stride, padding
        self.dilation, self.groups = dilation, groups

    def __eq__(self, other):
        return isinstance(other, Geometry) and self.key() == other.key()

    def __hash__(self):
        return hash(self.key())

    def key(self):
        return (self.kernel, self.stride, self.padding, self.dilation, self.groups)

    def __repr__(self):
        return ("Geometry(kernel={}, stride={}, padding={}, dilation={}, groups={})"
                .format(*self.key()))

    def grouped(self, factor):
        """The same geometry with `factor` times the groups (vmap: examples as groups)."""
        return Geometry(self.kernel, self.stride, self.padding, self.dilation,
                        self.groups * factor)

    def output_size(self, op, height, width):
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (self.kernel, self.stride, self.padding,
                                                  self.dilation)
        span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
        if height + 2 * ph < span_h or width + 2 * pw < span_w:
            raise ValueError(f"{op}: the kernel spans {span_h}x{span_w} (kernel {kh}x{kw}, "
                             f"dilation {dh}x{dw}) but the padded input is only "
                             f"{height + 2 * ph}x{width + 2 * pw} (input {height}x{width}, "
                             f"padding {ph}x{pw})")
        return (height + 2 * ph - span_h) // sh + 1, (width + 2 * pw - span_w) // sw + 1


def pair(op, name, value, minimum):
    """An int or a pair of ints, as a (h, w) pair of ints >= minimum; `op` names the call
    (with its shapes) in an error."""
    given = value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value), int(value))
    elif (isinstance(value, (tuple, list)) and len(value) == 2 and
          all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)):
        value = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    if min(value) < minimum:
        raise ValueError(f"{op}: {name} must be at least {minimum}, got {given!r}")
    return value


# ---------------------------------------------------------------- windows of an input
# The arithmetic runs channels-last: an NCHW tensor's array may be an NHWC array seen through
# a transposed view (what conv2d returns), and every kernel offset then reads whole runs of
# channels. Elementwise ops keep that layout; nothing depends on it but speed.

def _offsets(geometry, out_hw):
    """For each kernel offset (row-major), the (height, width) slices of the padded input
    that the offset reads for every output pixel."""
    (kh, kw), (sh, sw), (dh, dw) = geometry.kernel, geometry.stride, geometry.dilation
    oh, ow = out_hw
    return [(slice(i * dh, i * dh + sh * (oh - 1) + 1, sh),
             slice(j * dw, j * dw + sw * (ow - 1) + 1, sw)) for i in range(kh) for j in range(kw)]


def _channels_last(x):
    """An NCHW array as NHWC, a view when its memory already is."""
    return x.transpose(0, 2, 3, 1)


def _pad_nhwc(xh, padding, value=0.0):
    ph, pw = padding
    if not ph and not pw:
        return xh
    return np.pad(xh, ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=value)


def _pad(x, padding, value=0.0):
    """An NCHW array padded on H and W (the result keeps channels last in memory)."""
    return _pad_nhwc(_channels_last(x), padding, value).transpose(0, 3, 1, 2)


def _zeros(shape, like):
    """Zeros of an NCHW shape, channels last in memory like the arrays around them (an
    elementwise op on two layouts is several times slower than on one)."""
    return np.zeros((shape[0], shape[2], shape[3], shape[1]), like.dtype).transpose(0, 3, 1, 2)


def _crop(gxp, padding, shape):
    ph, pw = padding
    return gxp[:, :, ph:ph + shape[2], pw:pw + shape[3]]


# ---------------------------------------------------------------- convolution, in NumPy

def _columns(x, geometry, out_hw):
    """im2col: (N*OH*OW, G, KH*KW*C/G), a row per output pixel, each group's columns in
    (kernel row, kernel column, channel) order; one copy, of whole runs of channels."""
    xp = _pad_nhwc(_channels_last(x), geometry.padding)
    n, c = xp.shape[0], xp.shape[3]
    (kh, kw), (sh, sw), (dh, dw) = geometry.kernel, geometry.stride, geometry.dilation
    s = xp.strides
    win = np.lib.stride_tricks.as_strided(
        xp, (n,) + tuple(out_hw) + (kh, kw, c),
        (s[0], s[1] * sh, s[2] * sw, s[1] * dh, s[2] * dw, s[3]), writeable=False)
    m, g = n * out_hw[0] * out_hw[1], geometry.groups
    if c == 1:
        # one channel: copied offset by offset, each a run along the image's rows (6x faster
        # than runs of KW), into a (KH*KW, M) array returned as its transposed view
        offset_major = np.lib.stride_tricks.as_strided(
            xp, (kh, kw, n) + tuple(out_hw),
            (s[1] * dh, s[2] * dw, s[0], s[1] * sh, s[2] * sw), writeable=False)
        return offset_major.reshape(kh * kw, m).T[:, None, :]
    if g == 1:
        return win.reshape(m, 1, kh * kw * c)
    return (win.reshape(m, kh * kw, g, c // g).transpose(0, 2, 1, 3)
            .reshape(m, g, kh * kw * (c // g)))


def _grouped_weights(w, groups):
    """(O, C/G, KH, KW) -> (G, O/G, KH*KW*C/G), in the columns' order."""
    o, cg, kh, kw = w.shape
    return w.reshape(groups, o // groups, cg, kh, kw).transpose(0, 1, 3, 4, 2).reshape(
        groups, o // groups, kh * kw * cg)


def _from_rows(rows, n, out_hw):
    """(N*OH*OW, O) rows as an NCHW array (NHWC memory: no copy)."""
    return rows.reshape((n,) + tuple(out_hw) + (-1,)).transpose(0, 3, 1, 2)


def _conv(x, w, geometry, columns=None):
    """The convolution's output (N, O, OH, OW) and the columns it used."""
    out_hw = geometry.output_size("conv2d", *x.shape[2:])
    cols = _columns(x, geometry, out_hw) if columns is None else columns
    wg = _grouped_weights(w, geometry.groups)
    if geometry.groups == 1:
        rows = matmul(cols[:, 0], wg[0].T)                             # (M, O)
    else:                                      # (G, M, K) @ (G, K, O/G) -> (G, M, O/G)
        rows = matmul(cols.transpose(1, 0, 2), wg.transpose(0, 2, 1)).transpose(1, 0, 2)
        rows = rows.reshape(rows.shape[0], -1)
    return _from_rows(rows, x.shape[0], out_hw), cols


def _output_rows(g, groups):
    """dz (N, O, OH, OW) as rows per output pixel, grouped: (G, M, O/G)."""
    o = g.shape[1]
    rows = _channels_last(g).reshape(-1, groups, o // groups)
    return rows.transpose(1, 0, 2)


def _flipped(w, groups):
    """The weights of the transposed convolution: (C, O/G, KH, KW), each group's in and out
    channels exchanged and the kernel turned by 180 degrees."""
    o, cg, kh, kw = w.shape
    flipped = w.reshape(groups, o // groups, cg, kh, kw)[:, :, :, ::-1, ::-1]
    return flipped.transpose(0, 2, 1, 3, 4).reshape(groups * cg, o // groups, kh, kw)


_COL2IM_BYTES = 16 * 2 ** 20     # the columns col2im adds back, per chunk of images


def _input_grad(g, w, geometry, input_shape):
    """A_w^T g: the gradient of conv2d with respect to its input. With stride 1 it is itself
    a convolution (of g, padded, with the turned kernel); otherwise, or where that costs
    more, each kernel offset's columns are added back into the input as one strided slice."""
    (kh, kw), (ph, pw), (dh, dw) = geometry.kernel, geometry.padding, geometry.dilation
    full = (dh * (kh - 1) - ph, dw * (kw - 1) - pw)
    # the turned convolution copies O*KH*KW columns per input pixel, col2im C*KH*KW per
    # output pixel: col2im wins where there are more out channels than in (measured)
    if geometry.stride == (1, 1) and min(full) >= 0 and input_shape[1] >= w.shape[0]:
        turned = Geometry(geometry.kernel, (1, 1), full, geometry.dilation, geometry.groups)
        return _conv(g, _flipped(w, geometry.groups), turned)[0]
    groups = geometry.groups
    if groups == 1 and input_shape[1] <= OFFSET_MAJOR_CHANNELS:
        return _col2im_offset_major(g, w, geometry, input_shape)
    wg = _grouped_weights(w, groups)
    n, c = input_shape[:2]
    out_hw = g.shape[2:]
    offsets = _offsets(geometry, out_hw)
    gxp = np.zeros((n, input_shape[2] + 2 * ph, input_shape[3] + 2 * pw, c), g.dtype)
    # a few images at a time, so that their columns are still in cache when they are added
    # back (measured: a third faster than one product for the whole batch)
    per_image = out_hw[0] * out_hw[1] * kh * kw * c * g.itemsize
    chunk = max(1, _COL2IM_BYTES // max(per_image, 1))
    for start in range(0, n, chunk):
        part = slice(start, min(n, start + chunk))
        gcols = matmul(_output_rows(g[part], groups), wg)                  # (G, M, K)
        # (G, M, KH*KW*C/G) -> (n, OH, OW, KH, KW, C): each offset's columns, a strided view
        gwin = gcols.reshape(groups, -1, out_hw[0], out_hw[1], kh, kw, c // groups)
        gwin = gwin[0] if groups == 1 else gwin.transpose(1, 2, 3, 4, 5, 0, 6).reshape(
            -1, out_hw[0], out_hw[1], kh, kw, c)
        target = gxp[part]
        for k, (rows, cols) in enumerate(offsets):
            i, j = divmod(k, kw)
            target[:, rows, cols, :] += gwin[:, :, :, i, j, :]
    return _crop(gxp.transpose(0, 3, 1, 2), geometry.padding, input_shape)


OFFSET_MAJOR_CHANNELS = 12      # at most this many input channels: col2im offset-major (measured)


def _col2im_offset_major(g, w, geometry, input_shape):
    """col2im for few input channels: the columns computed transposed, (KH*KW*C, M), so each
    kernel offset adds a (C, N, OH, OW) block whose runs are image rows, not runs of a few
    channels (2.4x faster for LeNet-5's second convolution); the sum is laid out back to
    channels last once at the end."""
    (kh, kw), (ph, pw) = geometry.kernel, geometry.padding
    n, c, height, width = input_shape
    o, out_hw = w.shape[0], g.shape[2:]
    weights = w.transpose(2, 3, 1, 0).reshape(kh * kw * c, o)          # (K, O), K = (i, j, c)
    gxp = np.zeros((c, n, height + 2 * ph, width + 2 * pw), g.dtype)
    offsets = _offsets(geometry, out_hw)
    per_image = out_hw[0] * out_hw[1] * kh * kw * c * g.itemsize
    chunk = max(1, _COL2IM_BYTES // max(per_image, 1))
    for start in range(0, n, chunk):
        part = slice(start, min(n, start + chunk))
        rows = _channels_last(g[part]).reshape(-1, o)                  # (m, O)
        gwin = matmul(weights, rows.T).reshape(kh, kw, c, -1, *out_hw)  # (KH, KW, C, n, OH, OW)
        target = gxp[:, part]
        for k, (rows_at, cols_at) in enumerate(offsets):
            i, j = divmod(k, kw)
            target[:, :, rows_at, cols_at] += gwin[i, j]
    nhwc = np.ascontiguousarray(gxp.transpose(1, 2, 3, 0)[:, ph:ph + height, pw:pw + width])
    return nhwc.transpose(0, 3, 1, 2)


def _weight_grad(x, g, geometry, weight_shape, columns=None):
    """B_x^T g: the gradient of conv2d with respect to its weights."""
    cols = _columns(x, geometry, g.shape[2:]) if columns is None else columns
    groups = geometry.groups
    rows = _output_rows(g, groups)
    if groups == 1 and not cols.flags.c_contiguous:   # offset-major columns (one channel)
        gw = matmul(cols[:, 0].T, rows[0]).T                           # ((K, M) @ (M, O))^T
    elif groups == 1:
        gw = matmul(rows[0].T, cols[:, 0])                             # (O, M) @ (M, K)
    else:
        gw = matmul(rows.transpose(0, 2, 1), cols.transpose(1, 0, 2))  # (G, O/G, M) @ (G, M, K)
    o, cg, kh, kw = weight_shape
    return np.ascontiguousarray(gw.reshape(groups, o // groups, kh, kw, cg)
                                .transpose(0, 1, 4, 2, 3).reshape(weight_shape))


def _add_channel_bias(out, bias):
    """out (N, C, H, W) += bias (C,) in place. On channels-last memory each image is one
    row of H*W*C values and the bias is tiled along it: NumPy broadcasts over a short inner
    axis of C 3-7x slower."""
    nhwc = _channels_last(out)
    if not nhwc.flags.c_contiguous:
        out += bias.reshape(1, -1, 1, 1)
        return
    flat = nhwc.reshape(out.shape[0], -1)
    flat += np.tile(bias, flat.shape[1] // bias.shape[0])


def _channel_sums(g):
    """g (N, C, H, W) summed over all but C, as sums of its channels-last rows."""
    return column_sums(_channels_last(g).reshape(-1, g.shape[1]))


# ---------------------------------------------------------------- the three conv ops

def _tensor_of(value):
    Tensor = _tensor.Tensor
    return value if isinstance(value, Tensor) else Tensor._wrap(np.asarray(value))


def _all_arrays(*values):
    return all(isinstance(v, np.ndarray) for v in values)


def conv_input_grad(g, w, geometry, input_shape):
    """A_w^T g, on arrays, or recorded on tensors (create_graph)."""
    if _all_arrays(g, w):
        return _input_grad(g, w, geometry, input_shape)
    return ConvInputGrad.apply(_tensor_of(g), _tensor_of(w), geometry=geometry,
                               input_shape=tuple(input_shape))


def conv_weight_grad(x, g, geometry, weight_shape):
    """B_x^T g, on arrays, or recorded on tensors (create_graph)."""
    if _all_arrays(x, g):
        return _weight_grad(x, g, geometry, weight_shape)
    return ConvWeightGrad.apply(_tensor_of(x), _tensor_of(g), geometry=geometry,
                                weight_shape=tuple(weight_shape))


def conv(x, w, geometry):
    """conv2d without a bias, on arrays, or recorded on tensors (create_graph)."""
    if _all_arrays(x, w):
        return _conv(x, w, geometry)[0]
    return Conv2d.apply(_tensor_of(x), _tensor_of(w), geometry=geometry)


class Conv2d(Op):
    """z = conv2d(x, w) + b (cross-correlation, as PyTorch)    dx = A_w^T dz
    dw = B_x^T dz    db = dz summed over N, H and W   (see the module docstring)"""
    __slots__ = ("x", "weight", "columns", "geometry")
    name = "conv2d"
    float_result = True
    input_names = ("x", "weight", "bias")

    def forward(self, x, weight, bias=None, geometry=None):
        self.x, self.weight, self.geometry = x, weight, geometry
        out, self.columns = _conv(x, weight, geometry)
        if bias is not None:
            _add_channel_bias(out, bias)
        return out

    def backward(self, gz):
        x, w, geometry = self.x, self.weight, self.geometry
        need = self.needs_input_grad
        fast = _all_arrays(gz, x, w)
        gx = gw = gb = None
        if need[0]:
            gx = conv_input_grad(gz, w, geometry, x.shape)
        if need[1]:
            gw = (_weight_grad(x, gz, geometry, w.shape, self.columns) if fast else
                  conv_weight_grad(x, gz, geometry, w.shape))
        if len(need) == 2:
            return gx, gw
        if need[2]:
            gb = _channel_sums(gz) if fast else gz.sum(axis=(0, 2, 3))
        return gx, gw, gb

    def jvp(self, tx, tw, tb=None):              # conv(tx, w) + conv(x, tw) + tb
        x, w, geometry = self.x, self.weight, self.geometry
        out = add_tangents(None if tx is None else _conv(tx, w, geometry)[0],
                           None if tw is None else _conv(x, tw, geometry, self.columns)[0])
        return add_tangents(out, None if tb is None else tb.reshape(1, -1, 1, 1))

    @classmethod
    def batch(cls, size, options, args):
        (x, bx), (w, bw), *rest = args
        geometry = options["geometry"]
        x = batching.with_batch(size, x, bx)
        if not bw:                         # shared weights: every example's images at once
            out = batching.unimages(size, cls.apply(batching.images(size, x), w,
                                                    geometry=geometry))
        else:                              # per-example weights: examples as groups
            weights = w.reshape((size * w.shape[1],) + w.shape[2:])
            out = batching.channels_as_examples(size, cls.apply(
                batching.examples_as_channels(size, x), weights,
                geometry=geometry.grouped(size)))
        if rest:
            (b, bb), = rest
            out = out + (b.reshape((size, 1, -1, 1, 1)) if bb else b.reshape((-1, 1, 1)))
        return out



class ConvInputGrad(Op):
    """z = A_w^T g (conv2d's input gradient, a transposed convolution)
    dg = conv2d(dz, w)    dw = B_dz^T g"""
    __slots__ = ("g", "weight", "geometry")
    name = "conv2d_input_grad"
    float_result = True

    def forward(self, g, weight, geometry=None, input_shape=None):
        self.g, self.weight, self.geometry = g, weight, geometry
        return _input_grad(g, weight, geometry, input_shape)

    def backward(self, gz):
        need = self.needs_input_grad
        return (conv(gz, self.weight, self.geometry) if need[0] else None,
                conv_weight_grad(gz, self.g, self.geometry, self.weight.shape)
                if need[1] else None)

    def jvp(self, tg, tw):
        shape = self.options["input_shape"]
        return add_tangents(
            None if tg is None else _input_grad(tg, self.weight, self.geometry, shape),
            None if tw is None else _input_grad(self.g, tw, self.geometry, shape))

    @classmethod
    def batch(cls, size, options, args):
        (g, bg), (w, bw) = args
        shape, geometry = options["input_shape"], options["geometry"]
        g = batching.with_batch(size, g, bg)
        if not bw:
            return batching.unimages(size, cls.apply(
                batching.images(size, g), w, geometry=geometry,
                input_shape=(size * shape[0],) + tuple(shape[1:])))
        weights = w.reshape((size * w.shape[1],) + w.shape[2:])      # examples as groups
        out = cls.apply(batching.examples_as_channels(size, g), weights,
                        geometry=geometry.grouped(size),
                        input_shape=(shape[0], size * shape[1]) + tuple(shape[2:]))
        return batching.channels_as_examples(size, out)



class ConvWeightGrad(Op):
    """z = B_x^T g (conv2d's weight gradient)    dx = A_dz^T g    dg = conv2d(x, dz)"""
    __slots__ = ("x", "g", "geometry")
    name = "conv2d_weight_grad"
    float_result = True

    def forward(self, x, g, geometry=None, weight_shape=None):
        self.x, self.g, self.geometry = x, g, geometry
        return _weight_grad(x, g, geometry, weight_shape)

    def backward(self, gz):
        need = self.needs_input_grad
        return (conv_input_grad(self.g, gz, self.geometry, self.x.shape) if need[0] else None,
                conv(self.x, gz, self.geometry) if need[1] else None)

    def jvp(self, tx, tg):
        shape = self.options["weight_shape"]
        return add_tangents(
            None if tx is None else _weight_grad(tx, self.g, self.geometry, shape),
            None if tg is None else _weight_grad(self.x, tg, self.geometry, shape))

    @classmethod
    def batch(cls, size, options, args):
        (x, bx), (g, bg) = args
        x = batching.examples_as_channels(size, batching.with_batch(size, x, bx))
        g = batching.examples_as_channels(size, batching.with_batch(size, g, bg))
        o, *rest = options["weight_shape"]
        out = cls.apply(x, g, geometry=options["geometry"].grouped(size),
                        weight_shape=(size * o,) + tuple(rest))
        return out.reshape((size, o) + tuple(rest))



# ---------------------------------------------------------------- max pooling

def _slices(x, geometry, out_hw, fill=0.0):
    """The padded input and, per kernel offset (row-major), its strided (N, C, OH, OW) view."""
    xp = _pad(x, geometry.padding, fill)
    return xp, [xp[:, :, rows, cols] for rows, cols in _offsets(geometry, out_hw)]


def _window_gather(x, choice, geometry):
    """Each window's element number `choice` (N, C, OH, OW)."""
    _, views = _slices(x, geometry, choice.shape[2:])
    out = np.zeros_like(views[0])
    for k, view in enumerate(views):
        np.copyto(out, view, where=choice == k)
    return out


def _window_scatter(g, choice, geometry, input_shape):
    """Zeros of the input's shape with g[n, c, y, x] added at its window's element `choice`.
    Windows that neither overlap nor pad (stride = kernel: the usual pooling) are written
    directly; others add up."""
    gxp = _pad(_zeros(input_shape, g), geometry.padding)
    tiled = geometry.stride == geometry.kernel and geometry.padding == (0, 0)
    for k, (rows, cols) in enumerate(_offsets(geometry, choice.shape[2:])):
        if tiled:
            np.multiply(g, choice == k, out=gxp[:, :, rows, cols])
        else:
            gxp[:, :, rows, cols] += np.where(choice == k, g, 0)
    return _crop(gxp, geometry.padding, input_shape)


def window_gather(x, choice, geometry):
    if isinstance(x, np.ndarray):
        return _window_gather(x, choice, geometry)
    return WindowGather.apply(x, choice=choice, geometry=geometry)


def window_scatter(g, choice, geometry, input_shape):
    if isinstance(g, np.ndarray):
        return _window_scatter(g, choice, geometry, input_shape)
    return WindowScatter.apply(g, choice=choice, geometry=geometry,
                               input_shape=tuple(input_shape))


class MaxPool2d(Op):
    """z = the largest element of each window (padding never wins)
    dx = dz sent to that element (the first one, in row-major window order, where several tie)

    The forward notes which element won (choice, one byte per output): the backward is then
    one write per kernel offset."""
    __slots__ = ("choice", "geometry", "shape")
    name = "max_pool2d"

    def forward(self, x, geometry=None):
        out_hw = geometry.output_size("max_pool2d", *x.shape[2:])
        fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
        _, views = _slices(x, geometry, out_hw, fill)
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
        self.choice, self.geometry, self.shape = choice, geometry, x.shape
        return out

    def backward(self, gz):
        return (window_scatter(gz, self.choice, self.geometry, self.shape),)

    def jvp(self, t):
        return _window_gather(t, self.choice, self.geometry)

    batch = batching.per_image



class WindowScatter(Op):
    """z = zeros of the input's shape, g added at each window's chosen element (max-pool's
    gradient)    dg = the chosen elements of dz"""
    __slots__ = ("choice", "geometry")
    name = "window_scatter"

    def forward(self, g, choice=None, geometry=None, input_shape=None):
        self.choice, self.geometry = choice, geometry
        return _window_scatter(g, choice, geometry, input_shape)

    def backward(self, gz):
        return (window_gather(gz, self.choice, self.geometry),)

    def jvp(self, t):
        return _window_scatter(t, self.choice, self.geometry,
                               self.options["input_shape"])

    batch = batching.per_image



class WindowGather(Op):
    """z = each window's chosen element    dx = dz added at the chosen elements"""
    __slots__ = ("choice", "geometry", "shape")
    name = "window_gather"

    def forward(self, x, choice=None, geometry=None):
        self.choice, self.geometry, self.shape = choice, geometry, x.shape
        return _window_gather(x, choice, geometry)

    def backward(self, gz):
        return (window_scatter(gz, self.choice, self.geometry, self.shape),)

    def jvp(self, t):
        return _window_gather(t, self.choice, self.geometry)

    batch = batching.per_image



# ---------------------------------------------------------------- average pooling

def _avg_pool(x, geometry):
    out_hw = geometry.output_size("avg_pool2d", *x.shape[2:])
    _, views = _slices(x, geometry, out_hw)
    out = views[0].astype(x.dtype, order="K", copy=True)
    for view in views[1:]:
        out += view
    out /= np.prod(geometry.kernel)
    return out


def _avg_pool_scatter(g, geometry, input_shape):
    gxp = _pad(_zeros(input_shape, g), geometry.padding)
    share = g / np.prod(geometry.kernel)
    for rows, cols in _offsets(geometry, g.shape[2:]):
        gxp[:, :, rows, cols] += share
    return _crop(gxp, geometry.padding, input_shape)


def avg_pool(x, geometry):
    if isinstance(x, np.ndarray):
        return _avg_pool(x, geometry)
    return AvgPool2d.apply(x, geometry=geometry)


def avg_pool_scatter(g, geometry, input_shape):
    if isinstance(g, np.ndarray):
        return _avg_pool_scatter(g, geometry, input_shape)
    return AvgPoolScatter.apply(g, geometry=geometry, input_shape=tuple(input_shape))


class AvgPool2d(Op):
    """z = the mean of each window (padding counts, as zeros: PyTorch's default)
    dx = dz / (KH*KW) added to every element of its window"""
    __slots__ = ("geometry", "shape")
    name = "avg_pool2d"
    float_result = True

    def forward(self, x, geometry=None):
        self.geometry, self.shape = geometry, x.shape
        return _avg_pool(x, geometry)

    def backward(self, gz):
        return (avg_pool_scatter(gz, self.geometry, self.shape),)

    def jvp(self, t):
        return _avg_pool(t, self.geometry)

    batch = batching.per_image



class AvgPoolScatter(Op):
    """z = g / (KH*KW) spread over each window (avg-pool's gradient)    dg = avg_pool2d(dz)"""
    __slots__ = ("geometry",)
    name = "avg_pool_scatter"
    float_result = True

    def forward(self, g, geometry=None, input_shape=None):
        self.geometry = geometry
        return _avg_pool_scatter(g, geometry, input_shape)

    def backward(self, gz):
        return (avg_pool(gz, self.geometry),)

    def jvp(self, t):
        return _avg_pool_scatter(t, self.geometry, self.options["input_shape"])

    batch = batching.per_image



__all__ = ["Conv2d", "ConvInputGrad", "ConvWeightGrad", "MaxPool2d", "WindowScatter",
           "WindowGather", "AvgPool2d", "AvgPoolScatter", "Geometry"]


# ---------------------------------------------------------------- Tensor.conv2d and the pools

def _batched(op, x):
    """(N, C, H, W) as it is, or an unbatched (C, H, W) as a batch of one (as PyTorch)."""
    if x.ndim not in (3, 4):
        raise ValueError(f"{op}: expected an NCHW input (4-d, or 3-d unbatched), got shape "
                         f"{x.shape}")
    return (x, False) if x.ndim == 4 else (x.reshape((1,) + x.shape), True)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """torch.nn.functional.conv2d: x (N, C, H, W), weight (O, C/groups, KH, KW), bias (O,);
    stride, padding, dilation an int or a pair (padding also "valid" or "same")."""
    Tensor = _tensor.Tensor
    weight = weight if isinstance(weight, Tensor) else Tensor(weight)
    x, unbatched = _batched("conv2d", x)
    if weight.ndim != 4:
        raise ValueError(f"conv2d: weight must be 4-d (out channels, in channels / groups, "
                         f"kh, kw), got shape {weight.shape}")
    if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"conv2d: groups must be a positive int, got {groups!r}")
    out_channels, per_group = weight.shape[:2]
    if x.shape[1] != per_group * groups or out_channels % groups:
        raise ValueError(f"conv2d: input {x.shape} has {x.shape[1]} channels; weight "
                         f"{weight.shape} with groups={groups} expects {per_group * groups} "
                         f"(and out channels divisible by groups)")
    kernel = weight.shape[2:]
    op = f"conv2d of input {x.shape} and weight {weight.shape}"
    stride = pair(op, "stride", stride, 1)
    dilation = pair(op, "dilation", dilation, 1)
    if isinstance(padding, str):
        padding = _named_padding(padding, kernel, stride, dilation)
    padding = pair(op, "padding", padding, 0)
    geometry = Geometry(tuple(kernel), stride, padding, dilation, int(groups))
    geometry.output_size("conv2d", *x.shape[2:])
    inputs = (x, weight)
    if bias is not None:
        bias = bias if isinstance(bias, Tensor) else Tensor(bias)
        if bias.shape != (out_channels,):
            raise ValueError(f"conv2d: bias must have shape ({out_channels},) for weight "
                             f"{weight.shape}, got {bias.shape}")
        inputs += (bias,)
    out = Conv2d.apply(*inputs, geometry=geometry)
    return out.reshape(out.shape[1:]) if unbatched else out


def _named_padding(padding, kernel, stride, dilation):
    if padding == "valid":
        return 0
    if padding == "same":
        if stride != (1, 1):
            raise ValueError("conv2d: padding='same' needs stride 1")
        spans = [d * (k - 1) for k, d in zip(kernel, dilation)]
        if any(s % 2 for s in spans):
            raise ValueError(f"conv2d: padding='same' with an even kernel span {spans} would "
                             f"pad one side more than the other; pad the input explicitly")
        return (spans[0] // 2, spans[1] // 2)
    raise ValueError(f"conv2d: padding must be an int, a pair, 'valid' or 'same', got "
                     f"{padding!r}")


def pool2d(kind, x, kernel_size=2, stride=None, padding=0):
    """torch.nn.functional.max_pool2d / avg_pool2d: stride defaults to the kernel size; the
    padding is at most half the kernel (PyTorch's rule)."""
    x, unbatched = _batched(f"{kind}_pool2d", x)
    op = f"{kind}_pool2d of input {x.shape}"
    kernel = pair(op, "kernel_size", kernel_size, 1)
    stride = kernel if stride is None else pair(op, "stride", stride, 1)
    padding = pair(op, "padding", padding, 0)
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"{op}: padding {padding} must be at most half the kernel {kernel}")
    geometry = Geometry(kernel, stride, padding)
    geometry.output_size(op, *x.shape[2:])
    out = (MaxPool2d if kind == "max" else AvgPool2d).apply(x, geometry=geometry)
    return out.reshape(out.shape[1:]) if unbatched else out

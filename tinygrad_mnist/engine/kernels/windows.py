"""Sliding windows over NCHW images: a convolution's or pooling's geometry, and the padded,
strided views every kernel offset reads.

The arithmetic runs channels-last: an NCHW array may be an NHWC array seen through a
transposed view (what a convolution returns), and each kernel offset then reads whole runs
of channels. Results keep that layout; nothing depends on it but speed.
"""
import numpy as np


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


def offsets(geometry, out_hw):
    """For each kernel offset (row-major), the (height, width) slices of the padded input
    that the offset reads for every output pixel."""
    (kh, kw), (sh, sw), (dh, dw) = geometry.kernel, geometry.stride, geometry.dilation
    oh, ow = out_hw
    return [(slice(i * dh, i * dh + sh * (oh - 1) + 1, sh),
             slice(j * dw, j * dw + sw * (ow - 1) + 1, sw)) for i in range(kh) for j in range(kw)]


def channels_last(x):
    """An NCHW array as NHWC, a view when its memory already is."""
    return x.transpose(0, 2, 3, 1)


def pad_nhwc(xh, padding, value=0.0):
    ph, pw = padding
    if not ph and not pw:
        return xh
    return np.pad(xh, ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=value)


def pad(x, padding, value=0.0):
    """An NCHW array padded on H and W (the result keeps channels last in memory)."""
    return pad_nhwc(channels_last(x), padding, value).transpose(0, 3, 1, 2)


def zeros(shape, like):
    """Zeros of an NCHW shape, channels last in memory like the arrays around them (an
    elementwise op on two layouts is several times slower than on one)."""
    return np.zeros((shape[0], shape[2], shape[3], shape[1]), like.dtype).transpose(0, 3, 1, 2)


def crop(gxp, padding, shape):
    """The unpadded part of a padded NCHW array."""
    ph, pw = padding
    return gxp[:, :, ph:ph + shape[2], pw:pw + shape[3]]


def windows(x, geometry, out_hw, fill=0.0):
    """Every window of the padded NCHW input as a (N, C, OH, OW, KH, KW) strided view (no
    copy): the plain form the reference kernels compute from."""
    xp = np.pad(x, ((0, 0), (0, 0)) + tuple((p, p) for p in geometry.padding),
                constant_values=fill)
    (kh, kw), (sh, sw), (dh, dw) = geometry.kernel, geometry.stride, geometry.dilation
    s = xp.strides
    return np.lib.stride_tricks.as_strided(
        xp, x.shape[:2] + tuple(out_hw) + (kh, kw),
        (s[0], s[1], s[2] * sh, s[3] * sw, s[2] * dh, s[3] * dw), writeable=False)

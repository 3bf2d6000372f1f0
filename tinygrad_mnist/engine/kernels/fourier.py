"""Convolution through the discrete Fourier transform, with every transform a matrix product.

A stride-1 convolution is a circular correlation of the padded image with the kernel, where
no output reads past the padded edge. Per frequency f of the padded image's real 2-D DFT it
is a product: Y_f = X_f conj(W_f), summed over input channels: for each of the F frequencies
one (images, C) @ (C, O) complex product, instead of KH*KW real ones per output pixel. The
CNN's 5x5 layer (14x14 images, 32 to 64 channels) needs 180 frequencies: 189M real
multiply-adds where the direct sum needs 1,285M; with the transforms, 0.82x its count
(fourier_pays), all in products that reach half the machine's BLAS peak.

Everything here is a linear map written as a real matrix, so the gradients are the same
matrices transposed:

    X = A_in x                 (2F, H*W)   the input's spectrum, real and imaginary parts
    W = K w                    (2F, KH*KW) the kernel's
    Y_f = X_f conj(W_f)        per frequency, over channels
    y = A_out Y                (OH*OW, 2F) the inverse transform at the output pixels

and the input gradient is A_in^T (conj(W_f)^T per frequency) A_out^T g, the weight gradient
K^T (X_f^T per frequency) A_out^T g. The transforms are dense matrices (small images only:
`fourier_applies`); the per-frequency products are real products of [re; im] stacks, a row
per image for the real parts and then for the imaginary ones:

    [Xr; Xi] @ Wr and [Xr; Xi] @ Wi:   Yr = Xr Wr + Xi Wi,   Yi = Xi Wr - Xr Wi

Rounding: float32 results within 2e-5 of the largest output of the float64 definition
(tests), as im2col's.
"""
import functools
import threading

import numpy as np

from .blas import matmul

MAX_TRANSFORM = 4_000_000       # entries of a transform matrix: small images only
SCRATCH_SHAPES = 3              # work arrays kept per name (Plan.scratch)
WORTH_MEASURING = 4             # see fourier_pays


class Plan:
    """The transform matrices of one geometry and image size, in the working dtype, each a
    dense matrix whose rows (or columns) run over the frequencies (u, v) of the padded
    image's real DFT, the real and imaginary part of each on consecutive rows:

        a_in  (2F, H*W)     input pixel (y, x) -> e^{-2 pi i (u (y + ph) / Hp + v (x + pw) / Wp)}
        k     (2F, KH*KW)   kernel offset (i, j) -> e^{-2 pi i (u i / Hp + v j / Wp)}
        a_out (OH*OW, 2F)   the inverse real DFT at the output pixels:
                            Re(sum of c_v Y e^{+2 pi i (u y / Hp + v x / Wp)}) / (Hp Wp)

    with c_v = 2 for the frequencies whose mirror image the real DFT leaves out."""

    def __init__(self, height, width, padding, kernel, dtype):
        (ph, pw), (kh, kw) = padding, kernel
        hp, wp = height + 2 * ph, width + 2 * pw
        self.out_hw = (hp - kh + 1, wp - kw + 1)
        u = np.arange(hp)[:, None] / hp
        v = np.arange(wp // 2 + 1)[None, :] / wp
        self.frequencies = u.size * v.size

        def spectrum(rows, cols, sign=-1.0):
            """(2F, rows*cols): position (y, x) -> e^{sign 2 pi i (u y + v x)}."""
            angle = 2 * np.pi * (rows[:, None, None, None] * u + cols[None, :, None, None] * v)
            parts = np.stack([np.cos(angle), sign * np.sin(angle)])      # (2, y, x, u, v)
            return parts.reshape(2, rows.size * cols.size, -1).transpose(2, 0, 1).reshape(
                2 * self.frequencies, rows.size * cols.size)

        self.a_in = spectrum(np.arange(height) + ph, np.arange(width) + pw).astype(dtype)
        self.k = spectrum(np.arange(kh), np.arange(kw)).astype(dtype)
        weight = np.full(v.size, 2.0)
        weight[0] = 1.0
        if wp % 2 == 0:
            weight[-1] = 1.0
        weight = np.repeat(np.tile(weight, u.size), 2)[:, None] / (hp * wp)
        # Re(Y e^{+i t}) = Yr cos t - Yi sin t: the imaginary rows of e^{+i t} negated
        inverse = spectrum(np.arange(self.out_hw[0]), np.arange(self.out_hw[1]), 1.0)
        inverse[1::2] *= -1
        self.a_out = (inverse * weight).T.astype(dtype)
        self.dtype = dtype
        self._local = threading.local()

    def scratch(self, name, shape):
        """A work array of this thread, used again by every call with this name and shape
        (the last SCRATCH_SHAPES shapes of each name are kept: a training batch, an
        evaluation batch, an epoch's short last batch): the intermediates are tens of MB,
        and fresh memory costs a page fault per 4 KB (a CNN layer's forward took 27 ms on
        fresh arrays, 14 ms on reused ones). Never returned to a caller."""
        shapes = self._local.__dict__.setdefault("arrays", {}).setdefault(name, {})
        array = shapes.pop(shape, None)
        if array is None:
            array = np.empty(shape, self.dtype)
            if len(shapes) >= SCRATCH_SHAPES:
                shapes.pop(next(iter(shapes)))
        shapes[shape] = array                     # the most recently used last
        return array


@functools.lru_cache(maxsize=32)
def plan(height, width, padding, kernel, dtype):
    return Plan(height, width, padding, kernel, np.dtype(dtype))


def fourier_applies(geometry, x_shape):
    """Stride 1, no dilation, one group, and images small enough for dense transforms."""
    if (geometry.stride != (1, 1) or geometry.dilation != (1, 1) or geometry.groups != 1
            or len(x_shape) != 4):
        return False
    (ph, pw), (h, w) = geometry.padding, x_shape[2:]
    frequencies = (h + 2 * ph) * ((w + 2 * pw) // 2 + 1)
    return 2 * frequencies * h * w <= MAX_TRANSFORM


def fourier_pays(geometry, x_shape, out_channels):
    """Whether the transforms and the products take under WORTH_MEASURING times the direct
    sum's multiply-adds: worth measuring (an im2col copy costs more than its multiply-adds
    on few channels: LeNet-5's second layer is 2.8x and Fourier measured fastest). One input
    channel never is (45x for the CNN's first layer)."""
    n, c, h, w = x_shape
    (ph, pw), (kh, kw) = geometry.padding, geometry.kernel
    oh, ow = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
    frequencies = (h + 2 * ph) * ((w + 2 * pw) // 2 + 1)
    fourier = 2 * frequencies * n * (h * w * c + oh * ow * out_channels + 2 * c * out_channels)
    return fourier < WORTH_MEASURING * n * oh * ow * out_channels * c * kh * kw


class Spectrum:
    """What the forward keeps for the weight gradient: the input's spectrum (F, 2N, C)."""
    __slots__ = ("x",)

    def __init__(self, x):
        self.x = x


def _spectrum(p, a, matrix, name=None):
    """matrix (2F, pixels) applied to a (N, C, h, w) -> (F, 2N, C): per frequency a row per
    image of its channels' real parts, then a row per image of their imaginary parts. Into
    the scratch array `name`, or a new array without one."""
    n, c, h, w = a.shape
    rows = p.scratch("pixels", (h, w, n, c))
    np.copyto(rows, a.transpose(2, 3, 0, 1))
    shape = (p.frequencies, 2 * n, c)
    out = np.empty(shape, p.dtype) if name is None else p.scratch(name, shape)
    matmul(matrix, rows.reshape(h * w, n * c), out=out.reshape(2 * p.frequencies, n * c))
    return out


def _image(p, spectrum, out_hw, matrix):
    """matrix (pixels, 2F) applied to a (F, 2N, C) spectrum -> NCHW pixels, channels last in
    memory."""
    n, c = spectrum.shape[1] // 2, spectrum.shape[2]
    flat = p.scratch("image", tuple(out_hw) + (n, c))                     # (y, x, n, c)
    matmul(matrix, spectrum.reshape(2 * p.frequencies, n * c),
           out=flat.reshape(out_hw[0] * out_hw[1], n * c))
    return np.ascontiguousarray(flat.transpose(2, 0, 1, 3)).transpose(0, 3, 1, 2)


_recent = threading.local()     # .dy: (g, plan, its spectrum) from the last input gradient


def _gradient_spectrum(p, g, keep):
    """a_out^T g, the spectrum of the output's gradient (F, 2N, O). A backward needs it for
    both gradients: the input gradient computes it and keeps it (keep=True), and the weight
    gradient that follows, for the same g, takes it instead of computing it again (only
    the weight gradient takes it: a measurement times the input gradient twice on one g)."""
    last = getattr(_recent, "dy", None)
    _recent.dy = None
    if not keep and last is not None and last[0] is g and last[1] is p:
        return last[2]
    spectrum = _spectrum(p, g.astype(p.dtype, copy=False), p.a_out.T, "dy")
    if keep:
        _recent.dy = (g, p, spectrum)
    return spectrum


def _kernel_spectrum(p, w):
    """The kernel's spectrum: its real and imaginary parts, each (F, C, O)."""
    o, c, kh, kw = w.shape
    ks = matmul(p.k, w.transpose(2, 3, 1, 0).reshape(kh * kw, c * o))     # (2F, C*O)
    ks = ks.reshape(p.frequencies, 2, c, o)
    return ks[:, 0], ks[:, 1]


def _plan_for(shape, geometry, *arrays):
    dtype = np.result_type(*arrays)
    return plan(shape[2], shape[3], geometry.padding, geometry.kernel, dtype.str), dtype


def fourier_conv(x, w, geometry):
    """conv2d of x and w (stride 1): the output, and the Spectrum the weight gradient uses.
    Per frequency Y = X conj(W): Yr = Xr Wr + Xi Wi, Yi = Xi Wr - Xr Wi."""
    n = x.shape[0]
    p, dtype = _plan_for(x.shape, geometry, x, w)
    spectrum = _spectrum(p, x.astype(dtype, copy=False), p.a_in)          # (F, 2N, C)
    wr, wi = _kernel_spectrum(p, w.astype(dtype, copy=False))
    shape = (p.frequencies, 2 * n, w.shape[0])
    y = np.matmul(spectrum, wr, out=p.scratch("by wr", shape))            # [Xr Wr; Xi Wr]
    by_wi = np.matmul(spectrum, wi, out=p.scratch("by wi", shape))        # [Xr Wi; Xi Wi]
    y[:, :n] += by_wi[:, n:]
    y[:, n:] -= by_wi[:, :n]
    return _image(p, y, p.out_hw, p.a_out), Spectrum(spectrum)


def fourier_input_grad(g, w, geometry, input_shape):
    """A_w^T g through the transposed maps: a_out^T takes g to a spectrum, the products run
    transposed (gXr = gYr Wr^T - gYi Wi^T, gXi = gYr Wi^T + gYi Wr^T), and a_in^T takes
    that back to the input's pixels."""
    n = input_shape[0]
    p, dtype = _plan_for(input_shape, geometry, g, w)
    gy = _gradient_spectrum(p, g, keep=True)                              # (F, 2N, O)
    wr, wi = _kernel_spectrum(p, w.astype(dtype, copy=False))
    shape = (p.frequencies, 2 * n, input_shape[1])
    by_wr = np.matmul(gy, wr.transpose(0, 2, 1), out=p.scratch("by wr", shape))  # [gYr; gYi] Wr^T
    by_wi = np.matmul(gy, wi.transpose(0, 2, 1), out=p.scratch("by wi", shape))  # [gYr; gYi] Wi^T
    by_wr[:, :n] -= by_wi[:, n:]
    by_wr[:, n:] += by_wi[:, :n]
    return _image(p, by_wr, input_shape[2:], p.a_in.T)


def fourier_weight_grad(x, g, geometry, weight_shape, spectrum=None):
    """B_x^T g: per frequency dWr = Xr^T gYr + Xi^T gYi and dWi = Xi^T gYr - Xr^T gYi, and
    K^T takes those back to the kernel's offsets; x's spectrum from the forward where it
    kept one."""
    o, c, kh, kw = weight_shape
    n = x.shape[0]
    p, dtype = _plan_for(x.shape, geometry, x, g)
    xs = (spectrum.x if spectrum is not None else
          _spectrum(p, x.astype(dtype, copy=False), p.a_in, "x"))         # (F, 2N, C)
    gy = _gradient_spectrum(p, g, keep=False)                             # (F, 2N, O)
    grads = np.empty((p.frequencies, 2, c, o), dtype)
    np.matmul(xs.transpose(0, 2, 1), gy, out=grads[:, 0])                 # dWr
    xr, xi, gyr, gyi = xs[:, :n], xs[:, n:], gy[:, :n], gy[:, n:]
    np.matmul(xi.transpose(0, 2, 1), gyr, out=grads[:, 1])
    grads[:, 1] -= np.matmul(xr.transpose(0, 2, 1), gyi)                  # dWi
    gw = matmul(p.k.T, grads.reshape(2 * p.frequencies, c * o))           # (KH*KW, C*O)
    return np.ascontiguousarray(gw.reshape(kh, kw, c, o).transpose(3, 2, 0, 1))

"""The forward convolution's algorithms besides im2col (convolution.py), as candidates that
convolution.conv measures per layer shape. Both compute on channels-last memory and return
NCHW arrays whose memory is channels last, as im2col's product does.

Winograd F(2x2, 3x3) (Lavin and Gray, 2016): each 4x4 tile of the input (tiles two pixels
apart) gives a 2x2 tile of the output. With d a tile, g a 3x3 kernel,

    Y = A^T [ (G g G^T) * (B^T d B) ] A        (* elementwise, over 16 positions)

and the sum over input channels moves inside: for each of the 16 positions one product
(tiles, C) @ (C, O). That is 16 multiplies per output tile where the direct sum has 36: 2.25x
fewer multiply-adds, bought with the two transforms, which are additions over strided views.
Rounding: the transforms' coefficients are 0, +-1 and +-1/2; float32 results stay within
2e-5 of the largest output of the float64 definition (tests), as im2col's do.

Shifted views: for stride 1, the padded input flattened to rows (N*Hp*Wp, C) holds every
kernel offset's input as one contiguous slice of rows, starting i*Wp + j rows in. The
output, computed on the padded grid (rows past an image's edge are discarded at the end), is
the sum over offsets of slice @ w[:, :, i, j]^T: KH*KW products and no im2col copy.
"""
import numpy as np

from .windows import channels_last, pad_nhwc

# G of F(2x2, 3x3); B^T and A^T are applied as additions (_apply_bt, _apply_at)
_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
WINOGRAD_CHUNK = 8          # images per chunk: a chunk's tiles stay in cache between steps


def winograd_applies(geometry):
    return (geometry.kernel == (3, 3) and geometry.stride == (1, 1)
            and geometry.dilation == (1, 1) and geometry.groups == 1)


def winograd_kernel(w):
    """U = G w G^T for every (out, in) channel pair: (16, C, O), position-major."""
    o, c = w.shape[:2]
    u = np.einsum("ai,ocij,bj->abco", _G, w, _G)
    return np.ascontiguousarray(u.reshape(16, c, o), dtype=w.dtype)


def _apply_bt(rows, out):
    """out[k] = (B^T rows)[k] for the four views rows[0..3]: B^T's rows are (1, 0, -1, 0),
    (0, 1, 1, 0), (0, -1, 1, 0) and (0, 1, 0, -1)."""
    np.subtract(rows[0], rows[2], out=out[0])
    np.add(rows[1], rows[2], out=out[1])
    np.subtract(rows[2], rows[1], out=out[2])
    np.subtract(rows[1], rows[3], out=out[3])


def _apply_at(m, out):
    """out[k] = (A^T m)[k] for the four views m[0..3]: A^T's rows are (1, 1, 1, 0) and
    (0, 1, -1, -1)."""
    np.add(m[0], m[1], out=out[0])
    out[0] += m[2]
    np.subtract(m[1], m[2], out=out[1])
    out[1] -= m[3]


def winograd_conv(x, w, geometry, chunk=WINOGRAD_CHUNK):
    """conv2d of x (N, C, H, W) and a 3x3 w (O, C, 3, 3), stride 1, any padding."""
    n, c, height, width = x.shape
    o = w.shape[0]
    (ph, pw) = geometry.padding
    oh, ow = geometry.output_size("conv2d", height, width)
    th, tw = (oh + 1) // 2, (ow + 1) // 2                   # output tiles down and across
    # the padded input, with a row or column of zeros more where the output is odd
    xp = np.zeros((n, 2 * th + 2, 2 * tw + 2, c), np.result_type(x, w))
    xp[:, ph:ph + height, pw:pw + width] = channels_last(x)
    s = xp.strides
    tiles = np.lib.stride_tricks.as_strided(
        xp, (n, th, tw, 4, 4, c), (s[0], 2 * s[1], 2 * s[2], s[1], s[2], s[3]),
        writeable=False)
    u = winograd_kernel(w.astype(xp.dtype, copy=False))
    y = np.empty((n, th, 2, tw, 2, o), xp.dtype)
    k = max(1, min(chunk, n))
    across = np.empty((4, k, th, tw, 4, c), xp.dtype)          # B^T d, then B^T d B:
    v = np.empty((4, 4, k, th, tw, c), xp.dtype)
    m = np.empty((16, k * th * tw, o), xp.dtype)
    down = np.empty((2, 4, k, th, tw, o), xp.dtype)            # A^T M, then A^T M A
    for start in range(0, n, k):
        b = min(n, start + k) - start
        d, t, vb, r = tiles[start:start + b], across[:, :b], v[:, :, :b], down[:, :, :b]
        _apply_bt([d[:, :, :, i] for i in range(4)], t)
        _apply_bt([t[..., j, :] for j in range(4)], [vb[:, j] for j in range(4)])
        vb = vb.reshape(16, b * th * tw, c)
        mb = np.matmul(vb, u, out=m[:, :b * th * tw] if b == k else None)
        mb = mb.reshape(4, 4, b, th, tw, o)
        _apply_at(mb, r)
        out = y[start:start + b]
        for i in range(2):
            _apply_at(r[i], [out[:, :, i, :, j] for j in range(2)])
    return y.reshape(n, 2 * th, 2 * tw, o)[:, :oh, :ow].transpose(0, 3, 1, 2)


# Shifted views are a candidate for 2 to SHIFTED_CHANNELS input channels. With one channel
# each offset's product is an outer product with a short inner axis: measured 15-45x slower
# than im2col, whose offset-major columns are one strided copy there (benchmarks/CONV.md).
SHIFTED_CHANNELS = 8


def shifted_applies(geometry, in_channels):
    return (geometry.stride == (1, 1) and geometry.groups == 1
            and 2 <= in_channels <= SHIFTED_CHANNELS)


def shifted_conv(x, w, geometry):
    """conv2d of x (N, C, H, W) and w (O, C, KH, KW), stride 1: one product per kernel
    offset over contiguous rows of the padded input (see the module's docstring)."""
    (kh, kw), (dh, dw) = geometry.kernel, geometry.dilation
    oh, ow = geometry.output_size("conv2d", *x.shape[2:])
    dtype = np.result_type(x, w)
    xp = np.ascontiguousarray(pad_nhwc(channels_last(x), geometry.padding), dtype)
    n, hp, wp, c = xp.shape
    rows = xp.reshape(n * hp * wp, c)
    total, o = rows.shape[0], w.shape[0]
    out = np.zeros((total, o), dtype)
    weights = np.ascontiguousarray(w.transpose(2, 3, 1, 0), dtype)        # (KH, KW, C, O)
    for i in range(kh):
        for j in range(kw):
            shift = i * dh * wp + j * dw
            out[:total - shift] += rows[shift:] @ weights[i, j]
    return out.reshape(n, hp, wp, o)[:, :oh, :ow].transpose(0, 3, 1, 2)

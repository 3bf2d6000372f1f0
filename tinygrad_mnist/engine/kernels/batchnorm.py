"""The layouts batch norm's formula runs on: each gives the per-channel sums and the
per-channel factors the formula needs, in the form that is fastest for its memory.

- PerChannel: any array (or, under create_graph, a Tensor), normalized over `axes`; sums
  are reductions over those axes, factors are (1, C, 1, ...) broadcasts.
- ChannelsLast: NCHW images whose memory is channels last (what conv2d returns),
  normalized over (N, H, W): the values as one long row per image, per-channel sums as
  products with ones (10x faster than NumPy's reduction over a long leading axis), sums of
  products without a temporary (einsum over the images, then over the pixels), and
  per-channel factors tiled along the row (3x faster than broadcasting over a short C).

`layout_for(x, axes)` picks one. The formula itself is written once, in engine/norm.py.
"""
import math

import numpy as np

from .blas import column_sums


class PerChannel:
    def __init__(self, shape, axes):
        self.axes, self.ndim = tuple(axes), len(shape)
        self.count = math.prod(shape[a] for a in axes)     # values per channel

    def rows(self, a):
        return a

    def image(self, a):
        return a

    def per_channel(self, v):
        return v.reshape((1, -1) + (1,) * (self.ndim - 2))

    def channel_sum(self, a):
        return a.sum(axis=self.axes)

    def sum_of_squares(self, a):
        return self.sum_of_products(a, a)

    def sum_of_products(self, a, b):
        if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):    # no temporary
            letters = "abcdefgh"[:self.ndim]
            kept = "".join(letters[i] for i in range(self.ndim) if i not in self.axes)
            return np.einsum(f"{letters},{letters}->{kept}", a, b)
        return (a * b).sum(axis=self.axes)


class ChannelsLast:
    def __init__(self, shape, dtype):
        self.shape, self.dtype = shape, dtype
        n, c, h, w = shape
        self.channels, self.pixels, self.count = c, h * w, n * h * w

    def rows(self, a):
        """(N, H*W*C): a view of channels-last memory, a copy of anything else."""
        nhwc = a.transpose(0, 2, 3, 1)
        if not nhwc.flags.c_contiguous:
            nhwc = np.ascontiguousarray(nhwc)
        return nhwc.reshape(self.shape[0], self.pixels * self.channels)

    def image(self, rows):
        n, c, h, w = self.shape
        return rows.reshape(n, h, w, c).transpose(0, 3, 1, 2)

    def per_channel(self, v):
        return np.tile(np.asarray(v).astype(self.dtype, copy=False), self.pixels)

    def channel_sum(self, a):
        return column_sums(a.reshape(-1, self.channels))

    def sum_of_squares(self, a):
        return self.sum_of_products(a, a)

    def sum_of_products(self, a, b):
        """Per channel, sum of a * b over the rows (N, H*W*C): the images summed first, as
        one pass with no temporary for the products (einsum), then the H*W pixels of each
        channel (7x faster than squares and a product with ones, and more accurate than one
        running sum over all N*H*W)."""
        per_position = np.einsum("ij,ij->j", a, b)
        return per_position.reshape(self.pixels, self.channels).sum(axis=0)


def layout_for(x, axes):
    """ChannelsLast for channels-last NCHW image arrays normalized over (N, H, W); PerChannel
    for everything else."""
    if (isinstance(x, np.ndarray) and x.ndim == 4 and tuple(axes) == (0, 2, 3)
            and x.transpose(0, 2, 3, 1).flags.c_contiguous):
        return ChannelsLast(x.shape, x.dtype)
    return PerChannel(x.shape, axes)


def scale_(a, factor):
    """a * factor, into a itself where a is an array (tensors under create_graph are
    never changed in place)."""
    if isinstance(a, np.ndarray):
        a *= factor
        return a
    return a * factor


def subtract_(a, b):
    """a - b, into a itself where a is an array."""
    if isinstance(a, np.ndarray):
        a -= b
        return a
    return a - b

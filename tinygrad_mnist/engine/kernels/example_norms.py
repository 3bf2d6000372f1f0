"""Squared norms of each example's parameter gradient, from what a layer's backward already
has (its input and its output's gradient), without writing the per-example gradients when
that is cheaper (Goodfellow 2015; "ghost" norms).

For a product z_t = W x_t over an example's positions t (one position for an MLP's layer,
a sequence's steps, an image's output pixels for a convolution's columns), the example's
gradient is G = sum_t g_t x_t^T, and

    ||G||^2 = sum_{t,s} (x_t . x_s) (g_t . g_s)          (T^2 (in + out) multiply-adds)

or G written out and squared (T in out multiply-adds): whichever is less work. With one
position it is ||x||^2 ||g||^2.
"""
import numpy as np

from .blas import matmul
from .convolution import Columns, columns


def row_squares(a):
    """(B, ...) -> (B,): each example's sum of squares."""
    flat = a.reshape(a.shape[0], -1)
    return np.einsum("bi,bi->b", flat, flat)


def product_norms(x, g):
    """x (B, T, in), g (B, T, out) -> (B,): ||sum_t g_t x_t^T||^2 per example."""
    b, t, n_in = x.shape
    n_out = g.shape[2]
    if t == 1:
        return row_squares(x) * row_squares(g)
    if t * (n_in + n_out) <= n_in * n_out:
        gram_x = matmul(x, x.transpose(0, 2, 1))                 # (B, T, T)
        gram_g = matmul(g, g.transpose(0, 2, 1))
        return np.einsum("bts,bts->b", gram_x, gram_g)
    return row_squares(matmul(g.transpose(0, 2, 1), x))        # (B, out, in) written out


def summed_norms(g):
    """g (B, T, out) -> (B,): ||sum_t g_t||^2 per example (a bias's gradient)."""
    return row_squares(g.sum(axis=1))


def embedding_norms(indices, g, rows):
    """indices (B, T) into a table of `rows` rows, g (B, T, D) -> (B,): the squared norm of
    each example's table gradient, whose row v is the sum of g_t over the positions t that
    read v (a row read twice gets both)."""
    b, t = indices.shape
    keys = (np.arange(b)[:, None] * rows + indices).reshape(-1)
    unique, where = np.unique(keys, return_inverse=True)
    summed = np.zeros((len(unique), g.shape[-1]), g.dtype)
    np.add.at(summed, where.reshape(-1), g.reshape(b * t, -1))
    return np.bincount(unique // rows, weights=np.einsum("ud,ud->u", summed, summed),
                       minlength=b).astype(g.dtype)


def conv_norms(x, g, geometry, cols=None, chunk_bytes=16 * 2 ** 20):
    """A convolution's weight and bias gradient norms per example, through its im2col
    columns (each example's output pixels are its positions): the forward's own columns
    when it kept them (`cols`), else made again a chunk of images at a time so that they
    stay small."""
    n, o = g.shape[:2]
    pixels = g.shape[2] * g.shape[3]
    rows = g.transpose(0, 2, 3, 1).reshape(n, pixels, o)         # (N, P, O)
    bias = summed_norms(rows)
    if isinstance(cols, Columns):
        return product_norms(cols.matrix.reshape(n, pixels, -1), rows), bias
    per_image = pixels * geometry.kernel[0] * geometry.kernel[1] * x.shape[1] * x.itemsize
    chunk = max(1, chunk_bytes // max(per_image, 1))
    weight = np.empty(n, np.result_type(x, g))
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        part = columns(x[start:stop], geometry, g.shape[2:]).matrix      # (m, 1, K)
        weight[start:stop] = product_norms(part.reshape(stop - start, pixels, -1),
                                           rows[start:stop])
    return weight, bias

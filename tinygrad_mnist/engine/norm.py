"""Batch normalization, fused: one op for a whole layer's forward and its closed-form backward.

Over the axes `axes` (every axis but the channels: (0,) for (N, C), (0, 2) for (N, C, L),
(0, 2, 3) for NCHW), with n values per channel:

    x_hat = (x - mean) / sqrt(var + eps)         (batch statistics; var biased)
    y = weight * x_hat + bias
    dbias = sum dy    dweight = sum dy * x_hat
    dx = weight / sqrt(var + eps) / n * (n dy - sum dy - x_hat * sum(dy * x_hat))

In training the running statistics are updated in place by the forward, as PyTorch does
(running = (1 - momentum) running + momentum * batch, the variance unbiased), so that a jit's
replay, which runs the forward again, updates them too. In eval mode the running statistics
are constants: y = weight * (x - running_mean) / sqrt(running_var + eps) + bias.

Under create_graph the backward recomputes x_hat from x, a Tensor then, so that the gradient
can be differentiated again through the batch statistics.
"""
import numpy as np

from . import batching
from .blas import column_sums
from .ops import Op, add_tangents


def _channels(array, ndim):
    """A per-channel (C,) array or tensor shaped to broadcast against (N, C, ...)."""
    return array.reshape((1, -1) + (1,) * (ndim - 2))


def _image_rows(x, axes):
    """NCHW images normalized over (N, H, W) whose memory is channels last: their values as
    (N*H*W, C) rows (a view); None for anything else."""
    if not isinstance(x, np.ndarray) or x.ndim != 4 or tuple(axes) != (0, 2, 3):
        return None
    nhwc = x.transpose(0, 2, 3, 1)
    return nhwc.reshape(-1, x.shape[1]) if nhwc.flags.c_contiguous else None


def _as_nchw(flat, shape):
    """(N, H*W*C) rows of images as an NCHW view."""
    n, c, h, w = shape
    return flat.reshape(n, h, w, c).transpose(0, 3, 1, 2)


def _einsum_squares(ndim, axes):
    """The einsum that sums x * x over `axes`, keeping the others: "abcd,abcd->b"."""
    letters = "abcdefgh"[:ndim]
    kept = "".join(letters[i] for i in range(ndim) if i not in axes)
    return f"{letters},{letters}->{kept}"


class BatchNorm(Op):
    __slots__ = ("x", "weight", "x_hat", "inv_std", "shift", "axes", "eps", "training")
    name = "batch_norm"
    float_result = True
    input_names = ("x", "weight", "bias", "running_mean", "running_var")

    def forward(self, x, weight, bias, running_mean, running_var, axes=(0,), eps=1e-5,
                momentum=0.1, training=True):
        self.x, self.weight, self.axes, self.eps, self.training = x, weight, axes, eps, training
        rows = _image_rows(x, axes)
        if rows is not None:
            return self._forward_channels_last(x, rows, weight, bias, running_mean,
                                               running_var, eps, momentum, training)
        if training:
            mean = x.mean(axis=axes, keepdims=True)
            centered = x - mean
            var = np.einsum(_einsum_squares(x.ndim, axes), centered, centered).reshape(
                mean.shape) / (x.size // mean.size)             # sum of squares, no temporary
            if momentum:                     # the running statistics, in place
                n = x.size // var.size
                running_mean *= 1 - momentum
                running_mean += momentum * mean.reshape(-1)
                running_var *= 1 - momentum
                running_var += momentum * var.reshape(-1) * (n / max(n - 1, 1))
        else:
            self.shift = _channels(running_mean, x.ndim).copy()     # a constant of the op
            centered = x - self.shift
            var = _channels(running_var, x.ndim)
        self.inv_std = (1.0 / np.sqrt(var + eps)).astype(x.dtype, copy=False)
        self.x_hat = centered
        self.x_hat *= self.inv_std                # in place: centered is not needed again
        return self.x_hat * _channels(weight, x.ndim) + _channels(bias, x.ndim)

    def _forward_channels_last(self, x, rows, weight, bias, running_mean, running_var, eps,
                               momentum, training):
        """The forward on NCHW images whose memory is channels last (what conv2d returns),
        as the arithmetic of one long row per image: per-channel sums as products with ones,
        per-channel factors tiled along the row (3x faster than broadcasting over C)."""
        n, c, h, w = x.shape                                   # rows: (N*H*W, C), a view
        if training:
            mean = column_sums(rows) / rows.shape[0]
            centered = x.transpose(0, 2, 3, 1).reshape(n, -1) - np.tile(mean, h * w)
            var = column_sums(np.square(centered).reshape(-1, c)) / rows.shape[0]
            if momentum:                     # the running statistics, in place
                count = rows.shape[0]
                running_mean *= 1 - momentum
                running_mean += momentum * mean
                running_var *= 1 - momentum
                running_var += momentum * var * (count / max(count - 1, 1))
        else:
            self.shift = _channels(running_mean, 4).copy()
            centered = (x.transpose(0, 2, 3, 1).reshape(n, -1)
                        - np.tile(running_mean.astype(x.dtype, copy=False), h * w))
            var = running_var
        inv_std = (1.0 / np.sqrt(var + eps)).astype(x.dtype, copy=False)
        self.inv_std = _channels(inv_std, 4)
        centered *= np.tile(inv_std, h * w)                     # x_hat, in place
        out = centered * np.tile(weight.astype(x.dtype, copy=False), h * w)
        out += np.tile(bias.astype(x.dtype, copy=False), h * w)
        self.x_hat = _as_nchw(centered, x.shape)
        return _as_nchw(out, x.shape)

    def _backward_channels_last(self, gz):
        x_hat, inv_std = self.x_hat, self.inv_std.reshape(-1)
        n, c, h, w = gz.shape
        g = np.ascontiguousarray(gz.transpose(0, 2, 3, 1)).reshape(n, -1)
        xh = x_hat.transpose(0, 2, 3, 1).reshape(n, -1)        # a view: made channels last
        need = self.needs_input_grad
        sum_gz = column_sums(g.reshape(-1, c))
        product = g * xh
        sum_gz_x_hat = column_sums(product.reshape(-1, c))
        gx = None
        if need[0]:
            scale = self.weight.astype(gz.dtype, copy=False) * inv_std
            gx = g * np.tile(scale, h * w)
            if self.training:
                count = g.size // c
                np.multiply(xh, np.tile(sum_gz_x_hat * scale / count, h * w), out=product)
                gx -= product
                gx -= np.tile(sum_gz * scale / count, h * w)
            gx = _as_nchw(gx, gz.shape)
        return (gx, sum_gz_x_hat if need[1] else None, sum_gz if need[2] else None,
                None, None)

    def backward(self, gz):
        x, axes = self.x, self.axes
        x_hat, inv_std = self.x_hat, self.inv_std
        if (isinstance(x, np.ndarray) and isinstance(gz, np.ndarray)
                and _image_rows(x_hat, axes) is not None):
            return self._backward_channels_last(gz)
        if not isinstance(x, np.ndarray):          # create_graph: x_hat as a function of x
            if self.training:
                centered = x - x.mean(axis=axes, keepdims=True)
                inv_std = ((centered * centered).mean(axis=axes, keepdims=True) +
                           self.eps) ** -0.5
                x_hat = centered * inv_std
            else:
                x_hat = (x - self.shift) * inv_std
        # sum dy and sum dy * x_hat serve the bias, the weight and x alike
        need = self.needs_input_grad
        sum_gz = gz.sum(axis=axes, keepdims=True)
        sum_gz_x_hat = (gz * x_hat).sum(axis=axes, keepdims=True)
        gbias = sum_gz.reshape(-1) if need[2] else None
        gweight = sum_gz_x_hat.reshape(-1) if need[1] else None
        gx = None
        if need[0]:
            scale = _channels(self.weight, gz.ndim) * inv_std
            if self.training:
                n = gz.size // inv_std.size
                gx = (gz - sum_gz / n - x_hat * (sum_gz_x_hat / n)) * scale
            else:
                gx = gz * scale
        return gx, gweight, gbias, None, None

    def jvp(self, tx, tw, tb, t_mean=None, t_var=None):
        """t_y = tw x_hat + w t_x_hat + tb, with t_x_hat = inv_std (tx - mean(tx) -
        x_hat mean(x_hat tx)) in training (the batch statistics move with x) and
        inv_std tx in eval; the running statistics are constants."""
        ndim, axes = self.x_hat.ndim, self.axes
        t_x_hat = None
        if tx is not None:
            t_x_hat = tx * self.inv_std
            if self.training:
                t_x_hat = t_x_hat - t_x_hat.mean(axis=axes, keepdims=True) - self.x_hat * (
                    self.x_hat * t_x_hat).mean(axis=axes, keepdims=True)
            t_x_hat = t_x_hat * _channels(self.weight, ndim)
        return add_tangents(t_x_hat, None if tw is None else self.x_hat * _channels(tw, ndim),
                            None if tb is None else _channels(tb, ndim))

    @classmethod
    def batch(cls, size, options, args):
        if options.get("training", True):
            raise batching.VmapError(
                "vmap: batch_norm in training mode computes statistics over the batch and "
                "updates running statistics in place: call model.eval() first, or apply it "
                "outside vmap")
        (x, bx), *params = args
        if not any(b for _, b in params):
            return batching.unimages(size, cls.apply(batching.images(size, x),
                                                     *[t for t, _ in params], **options))
        # per-example weights or statistics: eval mode is elementwise, each per-channel vector
        # shaped to meet the channels (physical axis 2 of a batched x, 1 of a shared one)
        x = batching.with_batch(size, x, bx)
        trailing = (1,) * (x.ndim - 3)

        def channels(t, batched):
            return t.reshape((size, 1, -1) + trailing) if batched else t.reshape((-1,) + trailing)
        (w, bw), (b, bb), (mean, bm), (var, bv) = params
        inv_std = 1.0 / (channels(var, bv) + options.get("eps", 1e-5)).sqrt()  # as the op rounds
        return (x - channels(mean, bm)) * inv_std * channels(w, bw) + channels(b, bb)

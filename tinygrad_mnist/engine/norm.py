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

The formula is written once per direction (forward, backward, jvp) over a layout
(kernels/batchnorm.py) that gives per-channel sums and factors in the form fastest for the
array's memory. Under create_graph the backward recomputes x_hat from x, a Tensor then, with
the same forward formula, so that the gradient can be differentiated again through the batch
statistics.
"""
import math

import numpy as np

from . import batching
from .kernels.batchnorm import PerChannel, layout_for, scale_, subtract_
from .kernels.example_norms import row_squares
from .ops import Op, add_tangents


def _normalize(layout, rows, eps, mean=None, var=None):
    """x_hat = (x - mean) / sqrt(var + eps) on the layout's rows, with the batch statistics
    where mean and var are not given; returns x_hat, 1/sqrt(var + eps), mean and var (each
    per channel)."""
    if mean is None:
        mean = layout.channel_sum(rows) / layout.count
        centered = rows - layout.per_channel(mean)
        var = layout.sum_of_squares(centered) / layout.count        # biased
    else:
        centered = rows - layout.per_channel(mean)
    inv_std = 1.0 / np.sqrt(var + eps)
    return scale_(centered, layout.per_channel(inv_std)), inv_std, mean, var


class BatchNorm(Op):
    __slots__ = ("x", "weight", "x_hat", "inv_std", "shift", "axes", "eps", "training",
                 "layout")
    name = "batch_norm"
    float_result = True
    input_names = ("x", "weight", "bias", "running_mean", "running_var")

    def forward(self, x, weight, bias, running_mean, running_var, axes=(0,), eps=1e-5,
                momentum=0.1, training=True):
        self.x, self.weight, self.axes, self.eps, self.training = x, weight, axes, eps, training
        layout = self.layout = layout_for(x, axes)
        if training:
            x_hat, inv_std, mean, var = _normalize(layout, layout.rows(x), eps)
            if momentum:                     # the running statistics, in place
                n = layout.count
                running_mean *= 1 - momentum
                running_mean += momentum * mean
                running_var *= 1 - momentum
                running_var += momentum * var * (n / max(n - 1, 1))     # unbiased
        else:
            self.shift = running_mean.copy()                 # a constant of the op
            x_hat, inv_std, _, _ = _normalize(layout, layout.rows(x), eps, self.shift,
                                              running_var)
        self.inv_std = inv_std.astype(x.dtype, copy=False)
        self.x_hat = layout.image(x_hat)
        out = x_hat * layout.per_channel(weight)
        out += layout.per_channel(bias)
        return layout.image(out)

    def backward(self, gz):
        """dx = weight * inv_std / n * (n dy - sum dy - x_hat * sum(dy * x_hat)) in training
        (the batch statistics move with x), weight * inv_std * dy in eval."""
        x, layout, x_hat, inv_std = self.x, self.layout, self.x_hat, self.inv_std
        if not isinstance(x, np.ndarray):          # create_graph: x_hat as a function of x
            layout = PerChannel(x.shape, self.axes)
            x_hat, inv_std = self._x_hat_of(x, layout)
        elif not isinstance(gz, np.ndarray):
            layout = PerChannel(x.shape, self.axes)
        g, x_hat = layout.rows(gz), layout.rows(x_hat)
        need = self.needs_input_grad
        # sum dy and sum dy * x_hat serve the bias, the weight and x alike
        sum_gz = layout.channel_sum(g)
        sum_gz_x_hat = layout.sum_of_products(g, x_hat)
        gx = None
        if need[0]:
            scale = self.weight * inv_std
            gx = g * layout.per_channel(scale)
            if self.training:
                n = layout.count
                gx = subtract_(gx, x_hat * layout.per_channel(sum_gz_x_hat * scale / n))
                gx = subtract_(gx, layout.per_channel(sum_gz * scale / n))
            gx = layout.image(gx)
        return (gx, sum_gz_x_hat if need[1] else None, sum_gz if need[2] else None,
                None, None)

    def example_norms(self, gz):
        """The weight's and bias's gradient norms per example (privacy), in eval mode; None
        in training, where every example's output depends on the whole batch."""
        if self.training:
            return None
        b = gz.shape[0]
        spatial = tuple(a for a in self.axes if a != 0)
        channel = [a for a in range(gz.ndim) if a not in self.axes][0]
        g = np.moveaxis(gz.sum(axis=spatial, keepdims=True), channel, 1).reshape(b, -1)
        gx = np.moveaxis((gz * self.x_hat).sum(axis=spatial, keepdims=True), channel,
                         1).reshape(b, -1)
        return (None, row_squares(gx), row_squares(g), None, None)

    def _x_hat_of(self, x, layout):
        """x_hat and 1/sqrt(var + eps) as functions of the tensor x (the batch statistics in
        training, the running ones in eval), so that they are differentiated too."""
        if self.training:
            x_hat, inv_std, _, _ = _normalize(layout, x, self.eps)
            return x_hat, inv_std
        return (x - layout.per_channel(self.shift)) * layout.per_channel(self.inv_std), \
            self.inv_std

    def jvp(self, tx, tw, tb, t_mean=None, t_var=None):
        """t_y = tw x_hat + w t_x_hat + tb, with t_x_hat = inv_std (tx - mean(tx) -
        x_hat mean(x_hat tx)) in training (the batch statistics move with x) and
        inv_std tx in eval; the running statistics are constants."""
        layout = PerChannel(self.x_hat.shape, self.axes)
        channels, axes = layout.per_channel, self.axes
        x_hat, inv_std = self.x_hat, self.inv_std
        if not isinstance(self.x, np.ndarray):     # on tensors: x_hat as a function of x
            x_hat, inv_std = self._x_hat_of(self.x, layout)
        t_x_hat = None
        if tx is not None:
            t_x_hat = tx * channels(inv_std)
            if self.training:
                t_x_hat = t_x_hat - t_x_hat.mean(axis=axes, keepdims=True) - x_hat * (
                    x_hat * t_x_hat).mean(axis=axes, keepdims=True)
            t_x_hat = t_x_hat * channels(self.weight)
        return add_tangents(t_x_hat, None if tw is None else x_hat * channels(tw),
                            None if tb is None else np.broadcast_to(channels(tb),
                                                                    self.x_hat.shape))

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
                                                     *[t for t, _ in params], **options),
                                     x.shape[1])
        # per-example weights or statistics: eval mode is elementwise, each per-channel vector
        # shaped to meet the channels (physical axis 2 of a batched x, 1 of a shared one)
        x = batching.with_batch(size, x, bx)
        trailing = (1,) * (x.ndim - 3)

        def channels(t, batched):
            return t.reshape((size, 1, -1) + trailing) if batched else t.reshape((-1,) + trailing)
        (w, bw), (b, bb), (mean, bm), (var, bv) = params
        inv_std = 1.0 / (channels(var, bv) + options.get("eps", 1e-5)).sqrt()  # as the op rounds
        return (x - channels(mean, bm)) * inv_std * channels(w, bw) + channels(b, bb)


# ---------------------------------------------------------------- layer normalization

def _row_statistics(x, axes, eps):
    """x_hat and 1/sqrt(var + eps) over `axes` of each row (biased variance), for arrays and,
    under create_graph, for tensors alike."""
    centered = x - x.mean(axis=axes, keepdims=True)
    inv_std = ((centered * centered).mean(axis=axes, keepdims=True) + eps) ** -0.5
    return centered * inv_std, inv_std


class LayerNorm(Op):
    """Layer normalization over the last `dims` axes of x, each row on its own (as
    torch.nn.functional.layer_norm), with n values per row:

        x_hat = (x - mean) / sqrt(var + eps)        (the row's statistics; var biased)
        y = weight * x_hat + bias                   (weight and bias of those axes' shape)
        dbias = sum dy    dweight = sum dy * x_hat  (over the leading axes)
        dx = inv_std * (g - mean g - x_hat * mean(g * x_hat)),  g = dy * weight

    Under create_graph the backward recomputes x_hat from x, a Tensor then, so the gradient
    can be differentiated again through the row statistics."""
    __slots__ = ("x", "weight", "x_hat", "inv_std", "axes", "eps")
    name = "layer_norm"
    float_result = True
    input_names = ("x", "weight", "bias")

    def forward(self, x, weight, bias, dims=1, eps=1e-5):
        self.axes = tuple(range(x.ndim - dims, x.ndim))
        self.x, self.weight, self.eps = x, weight, eps
        self.x_hat, inv_std = _row_statistics(x, self.axes, eps)
        self.inv_std = inv_std.astype(x.dtype, copy=False)
        return self.x_hat * weight + bias

    def _statistics(self):
        if isinstance(self.x, np.ndarray):
            return self.x_hat, self.inv_std
        return _row_statistics(self.x, self.axes, self.eps)      # as functions of x

    def backward(self, gz):
        x_hat, inv_std = self._statistics()
        axes, need = self.axes, self.needs_input_grad
        leading = tuple(range(gz.ndim - len(axes)))
        gx = None
        if need[0]:
            g = gz * self.weight
            gx = inv_std * (g - g.mean(axis=axes, keepdims=True)
                            - x_hat * (g * x_hat).mean(axis=axes, keepdims=True))
        return (gx, (gz * x_hat).sum(axis=leading) if need[1] else None,
                gz.sum(axis=leading) if need[2] else None)

    def example_norms(self, gz):
        """The weight's and bias's gradient norms per example (privacy): sums over the
        example's positions; None when the rows include the batch axis."""
        if len(self.axes) >= gz.ndim:
            return None
        b, n = gz.shape[0], math.prod(gz.shape[gz.ndim - len(self.axes):])
        g, x_hat = gz.reshape(b, -1, n), self.x_hat.reshape(b, -1, n)
        return (None, row_squares((g * x_hat).sum(axis=1)), row_squares(g.sum(axis=1)))

    def jvp(self, tx, tw, tb):
        """t_y = w t_x_hat + tw x_hat + tb, t_x_hat = inv_std (tx - mean tx - x_hat
        mean(x_hat tx))."""
        x_hat, inv_std = self._statistics()
        axes = self.axes
        t_x = None
        if tx is not None:
            t = tx * inv_std
            t_x = (t - t.mean(axis=axes, keepdims=True)
                   - x_hat * (x_hat * t).mean(axis=axes, keepdims=True)) * self.weight
        return add_tangents(t_x, None if tw is None else x_hat * tw, tb)

    @classmethod
    def batch(cls, size, options, args):
        """Rows stay rows: a batched x is more leading axes; per-example weight or bias (a
        meta-gradient's) meet each example's rows by broadcasting."""
        (x, bx), (w, bw), (b, bb) = args
        if not (bw or bb):
            return cls.apply(batching.with_batch(size, x, bx), w, b, **options)
        dims = options.get("dims", 1)
        x = batching.with_batch(size, x, bx)
        one = (w[0] if bw else w) * 0.0 + 1.0           # an example's weight's shape
        zero = (b[0] if bb else b) * 0.0
        x_hat = cls.apply(x, one, zero, **options)
        lead = (1,) * (x.ndim - 1 - dims)

        def meet(t, batched):
            return t.reshape((size,) + lead + tuple(t.shape[1:])) if batched else t
        return x_hat * meet(w, bw) + meet(b, bb)

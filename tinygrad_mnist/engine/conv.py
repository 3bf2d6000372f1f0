"""Convolution and pooling ops on NCHW tensors, with PyTorch's meaning of every argument.

The ops read as math; the array work (im2col, col2im, the pooling windows, each strategy and
its measured threshold) is in kernels/convolution.py and kernels/pooling.py.

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
from .arguments import pair
from .kernels import convolution as kconv, example_norms, pooling as kpool
from .kernels.windows import Geometry
from .ops import Op, add_tangents


# ---------------------------------------------------------------- the three conv ops

def _tensor_of(value):
    Tensor = _tensor.Tensor
    return value if isinstance(value, Tensor) else Tensor._wrap(np.asarray(value))


def _all_arrays(*values):
    return all(isinstance(v, np.ndarray) for v in values)


def conv_input_grad(g, w, geometry, input_shape):
    """A_w^T g, on arrays, or recorded on tensors (create_graph)."""
    if _all_arrays(g, w):
        return kconv.input_grad(g, w, geometry, input_shape)
    return ConvInputGrad.apply(_tensor_of(g), _tensor_of(w), geometry=geometry,
                               input_shape=tuple(input_shape))


def conv_weight_grad(x, g, geometry, weight_shape):
    """B_x^T g, on arrays, or recorded on tensors (create_graph)."""
    if _all_arrays(x, g):
        return kconv.weight_grad(x, g, geometry, weight_shape)
    return ConvWeightGrad.apply(_tensor_of(x), _tensor_of(g), geometry=geometry,
                                weight_shape=tuple(weight_shape))


def conv(x, w, geometry):
    """conv2d without a bias, on arrays, or recorded on tensors (create_graph)."""
    if _all_arrays(x, w):
        return kconv.conv(x, w, geometry)[0]
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
        out, self.columns = kconv.conv(x, weight, geometry)
        if bias is not None:
            kconv.add_channel_bias(out, bias)
        return out

    def backward(self, gz):
        x, w, geometry = self.x, self.weight, self.geometry
        need = self.needs_input_grad
        fast = _all_arrays(gz, x, w)
        gx = gw = gb = None
        if need[0]:
            gx = conv_input_grad(gz, w, geometry, x.shape)
        if need[1]:
            gw = (kconv.weight_grad(x, gz, geometry, w.shape, self.columns) if fast else
                  conv_weight_grad(x, gz, geometry, w.shape))
        if len(need) == 2:
            return gx, gw
        if need[2]:
            gb = kconv.channel_sums(gz) if fast else gz.sum(axis=(0, 2, 3))
        return gx, gw, gb

    def example_norms(self, gz):
        """The weight's and bias's gradient norms per example (privacy), through the
        columns; None (no rule: the per-example gradients are written) for groups."""
        if self.geometry.groups != 1:
            return None
        weight, bias = example_norms.conv_norms(self.x, gz, self.geometry, self.columns)
        return (None, weight) if len(self.needs_input_grad) == 2 else (None, weight, bias)

    def jvp(self, tx, tw, tb=None):              # conv(tx, w) + conv(x, tw) + tb
        x, w, geometry = self.x, self.weight, self.geometry
        if _all_arrays(x, w, *[t for t in (tx, tw) if t is not None]):
            out = add_tangents(None if tx is None else kconv.conv(tx, w, geometry)[0],
                               None if tw is None else kconv.conv(x, tw, geometry,
                                                                  self.columns)[0])
        else:                                   # on tensors: recorded, as backward is
            out = add_tangents(None if tx is None else conv(tx, w, geometry),
                               None if tw is None else conv(x, tw, geometry))
        if tb is None:
            return out
        if out is None:                          # the bias's tangent alone: every pixel's
            out_hw = geometry.output_size("conv2d", *x.shape[2:])
            return np.broadcast_to(tb.reshape(1, -1, 1, 1), (x.shape[0], len(tb)) + out_hw)
        return out + tb.reshape(1, -1, 1, 1)

    @classmethod
    def batch(cls, size, options, args):
        (x, bx), (w, bw), *rest = args
        geometry = options["geometry"]
        x = batching.with_batch(size, x, bx)
        if not bw:                         # shared weights: every example's images at once
            out = batching.unimages(size, cls.apply(batching.images(size, x), w,
                                                    geometry=geometry), x.shape[1])
        else:                              # per-example weights: examples as groups
            weights = w.reshape((size * w.shape[1],) + w.shape[2:])
            out = batching.channels_as_examples(size, cls.apply(
                batching.examples_as_channels(size, x), weights,
                geometry=geometry.grouped(size)), w.shape[1])
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
        return kconv.input_grad(g, weight, geometry, input_shape)

    def backward(self, gz):
        need = self.needs_input_grad
        return (conv(gz, self.weight, self.geometry) if need[0] else None,
                conv_weight_grad(gz, self.g, self.geometry, self.weight.shape)
                if need[1] else None)

    def jvp(self, tg, tw):
        shape = self.options["input_shape"]
        return add_tangents(
            None if tg is None else conv_input_grad(tg, self.weight, self.geometry, shape),
            None if tw is None else conv_input_grad(self.g, tw, self.geometry, shape))

    @classmethod
    def batch(cls, size, options, args):
        (g, bg), (w, bw) = args
        shape, geometry = options["input_shape"], options["geometry"]
        g = batching.with_batch(size, g, bg)
        if not bw:
            return batching.unimages(size, cls.apply(
                batching.images(size, g), w, geometry=geometry,
                input_shape=(size * shape[0],) + tuple(shape[1:])), g.shape[1])
        weights = w.reshape((size * w.shape[1],) + w.shape[2:])      # examples as groups
        out = cls.apply(batching.examples_as_channels(size, g), weights,
                        geometry=geometry.grouped(size),
                        input_shape=(shape[0], size * shape[1]) + tuple(shape[2:]))
        return batching.channels_as_examples(size, out, shape[1])



class ConvWeightGrad(Op):
    """z = B_x^T g (conv2d's weight gradient)    dx = A_dz^T g    dg = conv2d(x, dz)"""
    __slots__ = ("x", "g", "geometry")
    name = "conv2d_weight_grad"
    float_result = True

    def forward(self, x, g, geometry=None, weight_shape=None):
        self.x, self.g, self.geometry = x, g, geometry
        return kconv.weight_grad(x, g, geometry, weight_shape)

    def backward(self, gz):
        need = self.needs_input_grad
        return (conv_input_grad(self.g, gz, self.geometry, self.x.shape) if need[0] else None,
                conv(self.x, gz, self.geometry) if need[1] else None)

    def jvp(self, tx, tg):
        shape = self.options["weight_shape"]
        return add_tangents(
            None if tx is None else conv_weight_grad(tx, self.g, self.geometry, shape),
            None if tg is None else conv_weight_grad(self.x, tg, self.geometry, shape))

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

def window_gather(x, choice, geometry):
    if isinstance(x, np.ndarray):
        return kpool.window_gather(x, choice, geometry)
    return WindowGather.apply(x, choice=choice, geometry=geometry)


def window_scatter(g, choice, geometry, input_shape):
    if isinstance(g, np.ndarray):
        return kpool.window_scatter(g, choice, geometry, input_shape)
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
        out, choice = kpool.max_pool(x, geometry)
        self.choice, self.geometry, self.shape = choice, geometry, x.shape
        return out

    def backward(self, gz):
        return (window_scatter(gz, self.choice, self.geometry, self.shape),)

    def jvp(self, t):
        return window_gather(t, self.choice, self.geometry)

    batch = batching.per_image



class WindowScatter(Op):
    """z = zeros of the input's shape, g added at each window's chosen element (max-pool's
    gradient)    dg = the chosen elements of dz"""
    __slots__ = ("choice", "geometry")
    name = "window_scatter"

    def forward(self, g, choice=None, geometry=None, input_shape=None):
        self.choice, self.geometry = choice, geometry
        return kpool.window_scatter(g, choice, geometry, input_shape)

    def backward(self, gz):
        return (window_gather(gz, self.choice, self.geometry),)

    def jvp(self, t):
        return window_scatter(t, self.choice, self.geometry, self.options["input_shape"])

    batch = batching.per_image



class WindowGather(Op):
    """z = each window's chosen element    dx = dz added at the chosen elements"""
    __slots__ = ("choice", "geometry", "shape")
    name = "window_gather"

    def forward(self, x, choice=None, geometry=None):
        self.choice, self.geometry, self.shape = choice, geometry, x.shape
        return kpool.window_gather(x, choice, geometry)

    def backward(self, gz):
        return (window_scatter(gz, self.choice, self.geometry, self.shape),)

    def jvp(self, t):
        return window_gather(t, self.choice, self.geometry)

    batch = batching.per_image



# ---------------------------------------------------------------- average pooling

def avg_pool(x, geometry):
    if isinstance(x, np.ndarray):
        return kpool.avg_pool(x, geometry)
    return AvgPool2d.apply(x, geometry=geometry)


def avg_pool_scatter(g, geometry, input_shape):
    if isinstance(g, np.ndarray):
        return kpool.avg_pool_scatter(g, geometry, input_shape)
    return AvgPoolScatter.apply(g, geometry=geometry, input_shape=tuple(input_shape))


class AvgPool2d(Op):
    """z = the mean of each window (padding counts, as zeros: PyTorch's default)
    dx = dz / (KH*KW) added to every element of its window"""
    __slots__ = ("geometry", "shape")
    name = "avg_pool2d"
    float_result = True

    def forward(self, x, geometry=None):
        self.geometry, self.shape = geometry, x.shape
        return kpool.avg_pool(x, geometry)

    def backward(self, gz):
        return (avg_pool_scatter(gz, self.geometry, self.shape),)

    def jvp(self, t):
        return avg_pool(t, self.geometry)

    batch = batching.per_image



class AvgPoolScatter(Op):
    """z = g / (KH*KW) spread over each window (avg-pool's gradient)    dg = avg_pool2d(dz)"""
    __slots__ = ("geometry",)
    name = "avg_pool_scatter"
    float_result = True

    def forward(self, g, geometry=None, input_shape=None):
        self.geometry = geometry
        return kpool.avg_pool_scatter(g, geometry, input_shape)

    def backward(self, gz):
        return (avg_pool(gz, self.geometry),)

    def jvp(self, t):
        return avg_pool_scatter(t, self.geometry, self.options["input_shape"])

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

"""Neural-network building blocks: Module, layers, losses, and saving weights to .npz (the
base and the simplest layers live in module.py, the losses in losses.py, the recurrent layers
in recurrent.py and attention in attention.py; nn gathers them under PyTorch's names)."""
import json
import math
import os
import zipfile
import zlib

import numpy as np

from .engine import Tensor, get_rng, ops
from .engine import norm
from .engine.arguments import pair
from .files import atomic_write
from .losses import _reduction, binary_cross_entropy, cross_entropy, mse_loss  # noqa: F401
from .module import (Dropout, GELU, Linear, Module, ModuleList, ReLU, Sequential,  # noqa: F401
                     SiLU, Sigmoid, Tanh, _as_tensor, _size)
from .recurrent import GRU, LSTM, RNN  # noqa: F401
from .attention import MultiheadAttention  # noqa: F401
from . import functional  # noqa: F401  (nn.functional.scaled_dot_product_attention, ...)


# ---------------------------------------------------------------- convolutional layers

class Conv2d(Module):
    """torch.nn.Conv2d: weight (out, in/groups, kh, kw) and bias (out,), both initialized
    as PyTorch does, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = in/groups * kh * kw
    (kaiming_uniform with a = sqrt(5))."""
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True):
        in_channels = _size("Conv2d", "in_channels", in_channels)
        out_channels = _size("Conv2d", "out_channels", out_channels)
        kh, kw = pair("Conv2d", "kernel_size", kernel_size, 1)
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2d: in_channels ({in_channels}) and out_channels "
                             f"({out_channels}) must be divisible by groups ({groups})")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, (kh, kw)
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        bound = 1.0 / np.sqrt(in_channels // groups * kh * kw)
        rng = get_rng()
        self.weight = Tensor.from_numpy(rng.uniform(
            -bound, bound, (out_channels, in_channels // groups, kh, kw)).astype(np.float32),
            requires_grad=True)
        self.bias = Tensor.from_numpy(rng.uniform(-bound, bound, out_channels).astype(
            np.float32), requires_grad=True) if bias else None

    def forward(self, x):
        x = _as_tensor(x)
        if x.ndim not in (3, 4) or x.shape[-3] != self.in_channels:
            raise ValueError(f"conv2d: input of shape {x.shape} does not fit {self!r}: it must "
                             f"be (N, {self.in_channels}, H, W)")
        return x.conv2d(self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)

    def __repr__(self):
        extras = "".join(f", {k}={v}" for k, v in (("stride", self.stride),
                                                    ("padding", self.padding),
                                                    ("dilation", self.dilation),
                                                    ("groups", self.groups))
                         if v != (1 if k != "padding" else 0))
        return (f"Conv2d({self.in_channels}→{self.out_channels}, "
                f"{self.kernel_size[0]}x{self.kernel_size[1]}{extras}"
                + (", bias=False)" if self.bias is None else ")"))


class MaxPool2d(Module):
    def __init__(self, kernel_size=2, stride=None, padding=0):
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x):
        return _as_tensor(x).max_pool2d(self.kernel_size, self.stride, self.padding)

    def __repr__(self):
        return f"MaxPool2d({self.kernel_size})"


class AvgPool2d(MaxPool2d):
    def forward(self, x):
        return _as_tensor(x).avg_pool2d(self.kernel_size, self.stride, self.padding)

    def __repr__(self):
        return f"AvgPool2d({self.kernel_size})"


class Flatten(Module):
    """Every axis from start_dim on as one (torch.nn.Flatten: (N, C, H, W) -> (N, C*H*W))."""
    def __init__(self, start_dim=1):
        self.start_dim = start_dim

    def forward(self, x):
        x = _as_tensor(x)          # the size counted, not -1: an empty batch flattens too
        return x.reshape(x.shape[:self.start_dim] + (math.prod(x.shape[self.start_dim:]),))

    def __repr__(self):
        return "Flatten()"


class _BatchNorm(Module):
    """torch.nn.BatchNorm: normalize each channel by the batch's mean and variance in training
    (and update the running statistics, saved and loaded with the model as buffers), by the
    running statistics in eval mode; then scale by weight and shift by bias."""
    dims = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True):
        num_features = _size(type(self).__name__, "num_features", num_features)
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = Tensor.ones(num_features, requires_grad=affine)
        self.bias = Tensor.zeros(num_features, requires_grad=affine)
        self.register_buffer("running_mean", Tensor.zeros(num_features))
        self.register_buffer("running_var", Tensor.ones(num_features))

    def forward(self, x):
        x = _as_tensor(x)
        name = type(self).__name__
        if x.ndim not in self.dims or x.shape[1] != self.num_features:
            raise ValueError(f"{name}: input of shape {x.shape} does not fit {self!r}: it "
                             f"must have {' or '.join(map(str, self.dims))} dimensions and "
                             f"{self.num_features} channels on axis 1")
        if self.training and x.size <= x.shape[1]:
            raise ValueError(f"{name}: training needs more than one value per channel, got "
                             f"input of shape {x.shape} (an empty batch normalizes in eval "
                             f"mode)")
        axes = (0,) + tuple(range(2, x.ndim))
        return norm.BatchNorm.apply(x, self.weight, self.bias, self.running_mean,
                                    self.running_var, axes=axes, eps=self.eps,
                                    momentum=self.momentum, training=self.training)

    def __repr__(self):
        return f"{type(self).__name__}({self.num_features})"


class LayerNorm(Module):
    """torch.nn.LayerNorm: each row normalized over its last len(normalized_shape) axes by
    its own mean and variance, then scaled by weight and shifted by bias (of
    normalized_shape); the same in training and eval (one fused op, engine/norm.py)."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True):
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(
            normalized_shape)
        for n in shape:
            _size("LayerNorm", "normalized_shape", n)
        self.normalized_shape, self.eps = shape, eps
        self.weight = Tensor.ones(*shape, requires_grad=elementwise_affine)
        self.bias = Tensor.zeros(*shape, requires_grad=elementwise_affine)

    def forward(self, x):
        x = _as_tensor(x)
        k = len(self.normalized_shape)
        if x.shape[x.ndim - k:] != self.normalized_shape or x.ndim < k:
            raise ValueError(f"LayerNorm: input of shape {x.shape} does not end in "
                             f"normalized_shape {self.normalized_shape}")
        return norm.LayerNorm.apply(x, self.weight, self.bias, dims=k, eps=self.eps)

    def __repr__(self):
        return f"LayerNorm({self.normalized_shape}, eps={self.eps:g})"


class Embedding(Module):
    """torch.nn.Embedding: a table of num_embeddings rows of embedding_dim, initialized from
    N(0, 1); module(indices) is the rows at an integer tensor of indices (shape
    indices.shape + (embedding_dim,)), and its gradient adds each position's row gradient
    into the row it read (an index used twice gets both)."""

    def __init__(self, num_embeddings, embedding_dim):
        self.num_embeddings = _size("Embedding", "num_embeddings", num_embeddings)
        self.embedding_dim = _size("Embedding", "embedding_dim", embedding_dim)
        self.weight = Tensor.randn(num_embeddings, embedding_dim, requires_grad=True)

    def forward(self, indices):
        indices = indices if isinstance(indices, Tensor) else Tensor(np.asarray(indices))
        return ops.Embedding.apply(self.weight, indices)

    def __repr__(self):
        return f"Embedding({self.num_embeddings}, {self.embedding_dim})"


class BatchNorm1d(_BatchNorm):
    """Over (N, C) or (N, C, L)."""
    dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Over NCHW."""
    dims = (4,)


_ACTIVATIONS = {"relu": (ReLU, "kaiming"), "sigmoid": (Sigmoid, "xavier"),
                "tanh": (Tanh, "xavier")}


class MLP(Module):
    """A multilayer perceptron: MLP([784, 128, 10]) is Linear(784→128), ReLU, Linear(128→10).

    The activation (relu, sigmoid or tanh) follows every layer but the last, then dropout if
    dropout > 0; input_dropout > 0 also drops input values (pixels) with that probability
    (Srivastava et al. 2014 used 0.2 with 0.5 on the hidden layers). Layers are initialized
    for the activation (Kaiming for ReLU, Xavier otherwise).
    Parameters are named layers.0.weight, layers.0.bias, layers.1.weight, ... whatever the
    activation and dropout, so weights move freely between such variants.
    """
    def __init__(self, sizes, activation="relu", dropout=0.0, input_dropout=0.0):
        if len(sizes) < 2:
            raise ValueError(f"MLP: needs at least an input and an output size, got {sizes}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"MLP: unknown activation {activation!r}; use one of "
                             f"{sorted(_ACTIVATIONS)}")
        act_class, init = _ACTIVATIONS[activation]
        self.sizes, self.activation, self.dropout = list(sizes), activation, dropout
        self.layers = [Linear(n_in, n_out, init=init) for n_in, n_out in zip(sizes, sizes[1:])]
        self.act = act_class()
        self.drop = Dropout(dropout) if dropout > 0 else None
        self.input_dropout = input_dropout
        self.input_drop = Dropout(input_dropout) if input_dropout > 0 else None

    def forward(self, x):
        *hidden, last = self.layers
        if self.input_drop is not None:
            x = self.input_drop(x)
        for layer in hidden:
            x = self.act(layer(x))
            if self.drop is not None:
                x = self.drop(x)
        return last(x)

    def __repr__(self):
        extra = f", input_dropout={self.input_dropout}" if self.input_dropout else ""
        return (f"MLP({self.sizes}, activation={self.activation!r}, dropout={self.dropout}"
                f"{extra})")


# ---------------------------------------------------------------- saving and loading

def save_arrays(arrays, path):
    """Write a dict of arrays to an .npz atomically (files.atomic_write): a crash or a full disk
    never leaves a half-written file under `path`."""
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def load_arrays(path):
    """Read every array of an .npz without pickle; anything else is a ValueError naming the file."""
    path = os.fspath(path)
    with open(path, "rb") as f:                     # FileNotFoundError names the path
        magic = f.read(4)
    if magic != b"PK\x03\x04":                     # every .npz is a zip archive
        raise ValueError(f"load: '{path}' is not a NumPy .npz archive (a file saved by "
                         f"nn.save or np.savez)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, zlib.error) as error:
        reason = "it holds pickled objects, which are never loaded" if "pickle" in str(error) \
            else error
        raise ValueError(f"load: cannot read '{path}' as a NumPy .npz of plain arrays: "
                         f"{reason}") from None


META_KEY = "__meta__"


def save(module, path, meta=None):
    """Save a module's parameters to an .npz (plain arrays, no pickle), atomically. `meta`, a
    JSON-able dict (say, the architecture), is stored beside them as a string."""
    arrays = module.state_dict()
    if meta is not None:
        arrays[META_KEY] = np.array(json.dumps(meta))
    save_arrays(arrays, path)


def load(module, path):
    """Load parameters saved by save(); the file is fully checked before the model changes."""
    arrays = load_arrays(path)
    arrays.pop(META_KEY, None)
    module.load_state_dict(arrays)
    return module


def load_meta(path):
    """The `meta` dict given to save(), or None."""
    arrays = load_arrays(path)
    if META_KEY not in arrays:
        return None
    try:
        return json.loads(str(arrays[META_KEY]))
    except ValueError:
        raise ValueError(f"load_meta: '{path}' has a {META_KEY} entry that is not JSON") from None


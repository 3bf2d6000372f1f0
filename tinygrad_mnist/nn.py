"""Neural-network building blocks: Module, layers, losses, and saving weights to .npz."""
import json
import math
import os
import zipfile
import zlib

import numpy as np

from .engine import Tensor, get_rng, notify_module, observers, ops
from .engine import norm
from .engine.arguments import pair
from .files import atomic_write


def _as_tensor(x):
    return x if isinstance(x, Tensor) else Tensor(x)


class Module:
    """Base class of every layer and model: subclasses define forward(), and calling the
    module calls forward.

    Attributes are registered as they are assigned: sub-modules, and tensors that require grad
    and are leaves (parameters), directly or inside lists, tuples, dicts or Sequential. A tensor
    assigned while the module's own forward runs (a cache of activations, say) is never
    registered; a sub-module assigned then (a layer built lazily on the first call) is. The
    module knows it is inside its own forward from a counter its __call__ keeps.

    Calling a module tells the attached observers (on_module_call and on_module_return, the
    seam the drawings' module boxes use). One walk of the module tree, which visits each
    module once (a child may refer back to its parent), serves parameters, modules,
    train/eval and state_dict.
    """
    training = True

    def __setattr__(self, name, value):
        object.__setattr__(self, name, value)
        registered = self.__dict__.get("_registered")
        if registered is None:          # subclasses need not call Module.__init__
            registered = {}
            object.__setattr__(self, "_registered", registered)
        if self.__dict__.get("_in_forward") and not _holds_module(value):
            registered.pop(name, None)   # a tensor stored during forward: a value, not a parameter
        else:
            registered[name] = None      # a dict keeps assignment order

    def __delattr__(self, name):
        object.__delattr__(self, name)
        self.__dict__.get("_registered", {}).pop(name, None)

    def __call__(self, *args, **kwargs):
        inside = self.__dict__.get("_in_forward", 0)
        self.__dict__["_in_forward"] = inside + 1
        told = bool(observers())
        if told:
            notify_module("on_module_call", self)
        try:
            return self.forward(*args, **kwargs)
        finally:
            self.__dict__["_in_forward"] = inside
            if told:
                notify_module("on_module_return", self)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def _members(self):
        """(name, value) for each registered attribute, in assignment order."""
        return [(name, getattr(self, name)) for name in self.__dict__.get("_registered", ())]

    def _walk(self):
        """(dotted name, module or parameter) for everything below this module, depth first in
        definition order; each module once, so references back up the tree do not loop."""
        visited, stack = set(), [("", self)]
        while stack:
            name, value = stack.pop()
            if isinstance(value, Module):
                if id(value) in visited:
                    continue
                visited.add(id(value))
                yield name, value
                items = value._members()
            elif isinstance(value, Tensor):
                if value.requires_grad and value.is_leaf:
                    yield name, value
                continue
            elif isinstance(value, (list, tuple)):
                items = [(str(i), v) for i, v in enumerate(value)]
            elif isinstance(value, dict):
                items = [(str(k), v) for k, v in value.items()]
            else:
                continue
            # reversed, so the stack pops them in definition order
            stack.extend((f"{name}.{key}" if name else key, v) for key, v in reversed(items))

    def register_buffer(self, name, tensor):
        """A tensor that is state but not a parameter (BatchNorm's running statistics): it is
        saved and loaded with the parameters, and no optimizer sees it."""
        setattr(self, name, tensor)
        names = self.__dict__.setdefault("_buffer_names", [])
        if name not in names:
            names.append(name)

    def named_buffers(self):
        """(dotted name, tensor) for every buffer below this module, in definition order."""
        return [(f"{prefix}.{name}" if prefix else name, getattr(module, name))
                for prefix, module in self._walk() if isinstance(module, Module)
                for name in module.__dict__.get("_buffer_names", ())]

    def named_parameters(self):
        seen, found = set(), []
        for name, value in self._walk():
            if isinstance(value, Tensor) and id(value) not in seen:
                seen.add(id(value))
                found.append((name, value))
        return found

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def modules(self):
        """This module and every sub-module, depth first, each once."""
        return [m for _, m in self._walk() if isinstance(m, Module)]

    def _own_parameters(self):
        """The parameters assigned on this module itself, not on its sub-modules."""
        return [v for _, v in self._members() if isinstance(v, Tensor) and v.requires_grad
                and v.is_leaf]

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def train(self, mode=True):
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        return self.train(False)

    def state_dict(self):
        """Parameter and buffer name -> a copy of its array, in definition order."""
        return {name: p.data.copy() for name, p in self._state_tensors().items()}

    def _state_tensors(self):
        return dict(self.named_parameters() + self.named_buffers())

    def check_state_dict(self, state):
        """Raise if `state` cannot be loaded: missing or unexpected names, other shapes, or
        dtypes that are not floating point. Changes nothing."""
        params = self._state_tensors()
        missing = [k for k in params if k not in state]
        unexpected = [k for k in state if k not in params]
        if missing or unexpected:
            raise KeyError(f"load_state_dict: {type(self).__name__} is missing {missing} and "
                           f"does not have {unexpected}")
        for name, p in params.items():
            value = np.asarray(state[name])
            if value.shape != p.shape:
                raise ValueError(f"load_state_dict: '{name}' has shape {value.shape}, the "
                                 f"model expects {p.shape}")
            if value.dtype.kind != "f":
                raise TypeError(f"load_state_dict: '{name}' has dtype {value.dtype}, the model "
                                f"expects floating point ({p.dtype})")
        return params

    def load_state_dict(self, state):
        """Copy arrays into the parameters. Everything is checked before anything changes."""
        for name, p in self.check_state_dict(state).items():
            p.data[...] = state[name]

    def __repr__(self):
        return f"{type(self).__name__}()"


def _holds_module(value):
    """A module, or a list, tuple or dict with a module in it."""
    if isinstance(value, Module):
        return True
    if isinstance(value, dict):
        value = list(value.values())
    return isinstance(value, (list, tuple)) and any(_holds_module(v) for v in value)


def _size(layer, name, value):
    """A layer's size argument: an int, at least 0, or an error naming the layer."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{layer}: {name} must be an int, got {value!r}")
    if value < 0:
        raise ValueError(f"{layer}: {name} must not be negative, got {value}")
    return int(value)


class Sequential(Module):
    """Layers applied one after the other; parameters are named '0.weight', '1.bias', ..."""
    def __init__(self, *layers):
        self.layers = list(layers)

    def _members(self):
        return [(str(i), layer) for i, layer in enumerate(self.layers)]

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

    def __getitem__(self, i):
        return self.layers[i]

    def __len__(self):
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __repr__(self):
        inner = "\n".join(f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential(\n{inner}\n)"


class Linear(Module):
    """y = x @ W^T + b, W of shape (out_features, in_features) as in PyTorch.

    Initialization: init="kaiming" (default) is He/Kaiming-uniform for ReLU networks,
    W ~ U(-sqrt(6/fan_in), sqrt(6/fan_in)), which keeps the variance of activations constant
    through ReLU layers; init="xavier" is Glorot-uniform, U(-sqrt(6/(fan_in+fan_out)), ...),
    for sigmoid and tanh. The bias starts at zero.
    """
    def __init__(self, in_features, out_features, bias=True, init="kaiming"):
        in_features = _size("Linear", "in_features", in_features)
        out_features = _size("Linear", "out_features", out_features)
        # no inputs (in_features 0): nothing to scale, a weight of zero elements, as PyTorch
        if init == "kaiming":
            bound = np.sqrt(6.0 / in_features) if in_features else 0.0
        elif init == "xavier":
            fans = in_features + out_features
            bound = np.sqrt(6.0 / fans) if fans else 0.0
        else:
            raise ValueError(f"Linear: unknown init {init!r}; use 'kaiming' or 'xavier'")
        self.in_features, self.out_features = in_features, out_features
        weight = get_rng().uniform(-bound, bound, size=(out_features, in_features))
        self.weight = Tensor.from_numpy(weight.astype(np.float32), requires_grad=True)
        self.bias = Tensor.zeros(out_features, requires_grad=True) if bias else None

    def forward(self, x):
        x = _as_tensor(x)
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"linear: input of shape {x.shape} does not fit {self!r}: the "
                             f"last dimension must be {self.in_features}")
        inputs = (x, self.weight) if self.bias is None else (x, self.weight, self.bias)
        return ops.Linear.apply(*inputs)

    def __repr__(self):
        return f"Linear({self.in_features}→{self.out_features}" + \
            (", bias=False)" if self.bias is None else ")")


class ReLU(Module):
    def forward(self, x):
        return _as_tensor(x).relu()

    def __repr__(self):
        return "ReLU()"


class Sigmoid(Module):
    def forward(self, x):
        return _as_tensor(x).sigmoid()

    def __repr__(self):
        return "Sigmoid()"


class GELU(Module):
    def forward(self, x):
        return _as_tensor(x).gelu()

    def __repr__(self):
        return "GELU()"


class SiLU(Module):
    def forward(self, x):
        return _as_tensor(x).silu()

    def __repr__(self):
        return "SiLU()"


class Tanh(Module):
    def forward(self, x):
        return _as_tensor(x).tanh()

    def __repr__(self):
        return "Tanh()"


class Dropout(Module):
    """In training, zero each element with probability p and scale the rest by 1/(1-p)
    (inverted dropout, so eval() needs no rescaling). In eval mode, the identity."""
    def __init__(self, p=0.5):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x):
        x = _as_tensor(x)
        if not self.training or self.p == 0.0:
            return x
        return ops.Dropout.apply(x, p=self.p)

    def __repr__(self):
        return f"Dropout(p={self.p})"


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


# ---------------------------------------------------------------- losses

_REDUCTIONS = ("mean", "sum", "none")


def _reduction(loss, reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{loss}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return reduction


def cross_entropy(logits, targets, reduction="mean", label_smoothing=0.0):
    """Softmax cross-entropy of (N, C) logits against N integer class targets: the mean over
    the rows (reduction="mean"), their sum ("sum") or one loss per row ("none"). With
    label_smoothing s the target of each row is (1 - s) on its class and s / C spread over
    all classes, as in PyTorch. Stable for logits of any size; the gradient is
    (softmax - target) / N for the mean. Targets out of [0, C) are refused by the op itself,
    so a jit replay checks them too."""
    logits = _as_tensor(logits)
    if logits.dtype.kind != "f":
        logits = logits.float()
    targets = targets if isinstance(targets, Tensor) else Tensor.from_numpy(np.asarray(targets))
    _reduction("cross_entropy", reduction)
    if logits.ndim != 2:
        raise ValueError(f"cross_entropy: logits must be (N, C), got shape {logits.shape}")
    if targets.shape != (logits.shape[0],) or targets.dtype.kind not in "iu":
        raise ValueError(f"cross_entropy: targets must be {logits.shape[0]} integer class "
                         f"indices for logits of shape {logits.shape}, got shape "
                         f"{targets.shape} of dtype {targets.dtype}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must lie in [0, 1], got "
                         f"{label_smoothing}")
    options = {} if reduction == "mean" and not label_smoothing else \
        {"reduction": reduction, "label_smoothing": float(label_smoothing)}
    return ops.CrossEntropy.apply(logits, targets, **options)


def mse_loss(pred, target, reduction="mean"):
    """Squared differences of pred and target (the same shape): their mean, sum, or each
    ("none")."""
    pred = _as_tensor(pred)
    _reduction("mse_loss", reduction)
    if pred.shape != np.shape(target):
        raise ValueError(f"mse_loss: pred has shape {pred.shape} but target has shape "
                         f"{np.shape(target)}")
    diff = pred - target                     # a NumPy target takes pred's dtype
    squares = diff * diff
    if reduction == "none":
        return squares
    return squares.mean() if reduction == "mean" else squares.sum()


def binary_cross_entropy(prob, target, reduction="mean"):
    """-(t log p + (1-t) log(1-p)) for probabilities p in [0, 1], logs clamped at -100: the
    mean, the sum, or each element ("none")."""
    prob = _as_tensor(prob)
    target = target.to(prob.dtype) if isinstance(target, Tensor) else \
        Tensor(target, dtype=prob.dtype)
    _reduction("binary_cross_entropy", reduction)
    if prob.shape != target.shape:
        raise ValueError(f"binary_cross_entropy: prob has shape {prob.shape} but target has "
                         f"shape {target.shape}")
    options = {} if reduction == "mean" else {"reduction": reduction}
    return ops.BinaryCrossEntropy.apply(prob, target, **options)


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

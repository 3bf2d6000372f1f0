"""The Module base class and the layers everything else is built from (Sequential,
ModuleList, Linear, the activations, Dropout); nn re-exports them."""
import contextlib

import numpy as np

from .engine import Tensor, get_rng, notify_module, observers, ops

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

    @contextlib.contextmanager
    def evaluating(self):
        """Eval mode inside the block; each module's own mode (not one for all) restored after."""
        modes = [(m, m.training) for m in self.modules()]
        self.eval()
        try:
            yield self
        finally:
            for m, mode in modes:
                m.training = mode

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


class ModuleList(Module):
    """torch.nn.ModuleList: a list of modules, registered (parameters '0.weight', '1.bias',
    ...), indexed, iterated and appended to; it has no forward of its own."""
    def __init__(self, modules=()):
        self.layers = list(modules)

    def _members(self):
        return [(str(i), layer) for i, layer in enumerate(self.layers)]

    def append(self, module):
        self.layers.append(module)
        return self

    def extend(self, modules):
        self.layers.extend(modules)
        return self

    def __getitem__(self, i):
        return self._of(self.layers[i]) if isinstance(i, slice) else self.layers[i]

    def _of(self, layers):
        return ModuleList(layers)

    def __len__(self):
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __repr__(self):
        inner = "\n".join(f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"{type(self).__name__}(\n{inner}\n)"


class Sequential(ModuleList):
    """Layers applied one after the other; parameters are named '0.weight', '1.bias', ..."""
    def __init__(self, *layers):
        super().__init__(layers)

    def _of(self, layers):
        return Sequential(*layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


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

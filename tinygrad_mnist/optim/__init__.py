"""Optimizers with PyTorch's update rules. State is kept per parameter, in the parameter's
dtype, and updated in place without full-size temporaries.

Denormals: a momentum or Adam buffer entry that stops receiving gradient (a rarely lit pixel)
decays geometrically into the denormal range, where float arithmetic is many times slower.
Every FLUSH_EVERY steps, state entries too small to stay normal until the next flush (below
tiny / decay**(FLUSH_EVERY + 1), at most FLUSH_CAP) are set to zero: they could move no weight
by a visible amount. This is portable (no CPU flags) and costs about one comparison per state
element every FLUSH_EVERY steps.
"""
import math

import numpy as np

from ..engine import Tensor
from ..engine.kernels.blas import axpby, axpy

FLUSH_EVERY = 64
FLUSH_CAP = 1e-15


class Optimizer:
    """Base class: `param_groups` is a list of dicts, each with its "params" and its own
    hyperparameters (lr, weight_decay, ...), as in PyTorch; `params` may be a list of tensors
    (one group) or of such dicts, whose missing hyperparameters take the constructor's."""

    def __init__(self, params, defaults):
        name = type(self).__name__
        if hasattr(params, "parameters") and callable(params.parameters):
            raise TypeError(f"{name}: got the module {type(params).__name__} itself; pass its "
                            f"parameters: {name}({type(params).__name__.lower()}.parameters(), "
                            f"...)")
        if isinstance(params, Tensor):
            raise TypeError(f"{name}: got one Tensor; pass a list of them: {name}([t], ...)")
        try:
            params = list(params)
        except TypeError:
            raise TypeError(f"{name}: params must be an iterable of Tensors (model.parameters())"
                            f" or of param-group dicts, got {type(params).__name__}") from None
        if not params:
            raise ValueError(f"{name}: got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups, self.params, seen = [], [], set()
        for k, group in enumerate(groups):
            if not isinstance(group, dict) or "params" not in group:
                raise TypeError(f"{name}: param group {k} must be a dict with 'params'")
            unknown = set(group) - set(defaults) - {"params"}
            if unknown:
                raise ValueError(f"{name}: param group {k} has unknown options {sorted(unknown)}; "
                                 f"it takes {sorted(defaults)}")
            group = {**defaults, **group, "params": list(group["params"])}
            self._check(group, k)
            for p in group["params"]:
                if not isinstance(p, Tensor) or not p.requires_grad:
                    raise ValueError(f"{name}: parameter {len(self.params)} is not a tensor "
                                     f"that requires grad")
                if id(p) in seen:
                    raise ValueError(f"{name}: a parameter appears in more than one group")
                seen.add(id(p))
                self.params.append(p)
            self.param_groups.append(group)
        # All state is arrays, counters included, so that saving and loading it at any step
        # continues exactly as if nothing had happened.
        self.state = [{} for _ in self.params]      # one dict of arrays per parameter
        self.steps = np.zeros((), dtype=np.int64)   # step() calls so far (times the flush)
        self._work = [None] * len(self.params)      # per-parameter scratch buffers, not state

    def _check(self, group, k):
        if group["lr"] < 0 or group["weight_decay"] < 0:
            raise ValueError(f"{type(self).__name__}: lr ({group['lr']}) and weight_decay "
                             f"({group['weight_decay']}) must not be negative")

    def __getattr__(self, name):
        """opt.momentum, opt.betas, ...: the first group's hyperparameter."""
        groups = self.__dict__.get("param_groups")
        if groups and name in groups[0] and name != "params":
            return groups[0][name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    @property
    def lr(self):
        """The first group's learning rate; setting it sets every group's."""
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value):
        for group in self.param_groups:
            group["lr"] = value

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def step(self):
        update, state, works, i = self._update, self.state, self._work, 0
        for group in self.param_groups:
            for p in group["params"]:
                grad = p.grad
                if grad is not None:
                    data, work = p.data, works[i]
                    if work is None or work.shape != data.shape or work.dtype != data.dtype:
                        work = works[i] = np.empty_like(data)
                    update(data, grad, state[i], work, group)
                i += 1
        self.steps += 1
        if int(self.steps) % FLUSH_EVERY == 0:
            self._flush_denormals()

    def _update(self, data, grad, state, work, group):
        """One parameter's step: change `data` in place from its gradient `grad`."""
        raise NotImplementedError

    def _decays(self, group):
        """State buffer name -> the factor it is multiplied by each step."""
        return {}

    def _flush_denormals(self):
        i = 0
        for group in self.param_groups:
            decays = [(key, decay) for key, decay in self._decays(group).items()
                      if 0 < decay < 1]
            for _ in group["params"]:
                for key, decay in decays:
                    value = self.state[i].get(key)
                    if value is not None:
                        limit = min(np.finfo(value.dtype).tiny * decay ** -(FLUSH_EVERY + 1),
                                    FLUSH_CAP)
                        value[np.abs(value) < limit] = 0
                i += 1

    @staticmethod
    def _buffer(state, key, data):
        """The state array `key` of a parameter, created as zeros on first use."""
        value = state.get(key)
        if value is None:
            value = state[key] = np.zeros_like(data)
        return value

    @staticmethod
    def _grad_with_decay(data, grad, group):
        """L2 regularization as PyTorch adds it: g = grad + weight_decay * p."""
        decay = group["weight_decay"]
        return grad + decay * data if decay else grad

    def state_dict(self):
        """The optimizer state as flat named arrays ('steps', '3.exp_avg', 'group.0.lr', ...),
        ready for an .npz: every parameter's buffers and every group's hyperparameters (a
        scheduler changes lr); copies, so later steps do not change it."""
        arrays = {"steps": self.steps.copy()}
        arrays.update({f"{i}.{key}": value.copy() for i, state in enumerate(self.state)
                       for key, value in state.items()})
        for k, group in enumerate(self.param_groups):
            arrays.update({f"group.{k}.{key}": np.array(value) for key, value in group.items()
                           if key != "params"})
        return arrays

    def load_state_dict(self, arrays):
        """Restore a state_dict(); everything is checked before anything changes. Group
        entries may be absent (a state saved before they were kept): the groups then keep
        their hyperparameters."""
        name = type(self).__name__
        new_state, steps = [{} for _ in self.params], np.zeros((), dtype=np.int64)
        groups = [dict(group) for group in self.param_groups]
        for key, value in arrays.items():
            value = np.asarray(value)
            if key == "steps":
                if value.shape != () or value.dtype.kind not in "iu":
                    raise ValueError(f"{name}.load_state_dict: 'steps' must be one integer, got "
                                     f"shape {value.shape} of dtype {value.dtype}")
                steps = value.astype(np.int64)
                continue
            if key.startswith("group."):
                _, k, option = key.split(".", 2) if key.count(".") >= 2 else (key, "", "")
                if not k.isdigit() or int(k) >= len(groups) or not option \
                        or option == "params" or value.dtype.kind not in "fiub":
                    raise KeyError(f"{name}.load_state_dict: unexpected entry '{key}' for "
                                   f"{len(groups)} parameter groups")
                # an option a scheduler added (initial_lr, max_lr, ...) may be new here
                current = groups[int(k)].get(option, () if value.ndim else None)
                restored = tuple(value.tolist()) if isinstance(current, tuple) else value.item()
                if isinstance(current, tuple) and len(restored) != len(current):
                    raise ValueError(f"{name}.load_state_dict: '{key}' has {len(restored)} "
                                     f"values, the optimizer {len(current)}")
                groups[int(k)][option] = restored
                continue
            index, _, entry = key.partition(".")
            if not index.isdigit() or int(index) >= len(self.params) or not entry:
                raise KeyError(f"{name}.load_state_dict: unexpected entry '{key}' for "
                               f"{len(self.params)} parameters")
            p = self.params[int(index)]
            if value.dtype.kind not in "fiu" or (value.ndim and value.shape != p.shape):
                raise ValueError(f"{name}.load_state_dict: '{key}' has shape {value.shape} and "
                                 f"dtype {value.dtype}; parameter {index} has shape {p.shape}")
            new_state[int(index)][entry] = value.copy()    # arrays stay arrays, 0-d included
        for k, group in enumerate(groups):
            self._check(group, k)
        self.state, self.steps = new_state, steps
        for group, restored in zip(self.param_groups, groups):
            group.update(restored)


class SGD(Optimizer):
    """g = grad + wd*p;  v = momentum*v + g (v = g at the first step);
    p -= lr * (g + momentum*v if nesterov else v)"""
    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov,
                                      weight_decay=weight_decay))

    def _check(self, group, k):
        super()._check(group, k)
        if group["momentum"] < 0:
            raise ValueError(f"SGD: momentum must not be negative, got {group['momentum']}")
        if group["nesterov"] and group["momentum"] == 0:
            raise ValueError("SGD: nesterov needs a momentum above zero")

    def _decays(self, group):
        return {"momentum_buffer": group["momentum"]}

    def _update(self, data, grad, state, work, group):
        g = self._grad_with_decay(data, grad, group)
        momentum = group["momentum"]
        if momentum:
            v = state.get("momentum_buffer")
            if v is None:
                v = state["momentum_buffer"] = np.array(g, dtype=data.dtype)
            else:
                axpby(1, g, momentum, v)                    # v = momentum * v + g
            if group["nesterov"]:
                np.multiply(v, momentum, out=work)
                work += g                                   # g + momentum * v
                g = work
            else:
                g = v
        axpy(-group["lr"], g, data, work)                   # data -= lr * g


class RMSProp(Optimizer):
    """g = grad + wd*p;  s = alpha*s + (1-alpha)*g**2;  p -= lr * g / (sqrt(s) + eps)"""
    def __init__(self, params, lr, alpha=0.99, eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay))

    def _check(self, group, k):
        super()._check(group, k)
        if not 0 <= group["alpha"] < 1:
            raise ValueError(f"RMSProp: alpha must lie in [0, 1), got {group['alpha']}")

    def _decays(self, group):
        return {"square_avg": group["alpha"]}

    def _update(self, data, grad, state, work, group):
        alpha = group["alpha"]
        g = self._grad_with_decay(data, grad, group)
        s = self._buffer(state, "square_avg", data)
        s *= alpha
        np.multiply(g, g, out=work)
        work *= 1 - alpha
        s += work
        np.sqrt(s, out=work)
        work += group["eps"]
        np.divide(g, work, out=work)
        work *= group["lr"]
        data -= work


class Adam(Optimizer):
    """g = grad + wd*p;  m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g**2;  t += 1
    p -= lr/(1-b1**t) * m / (sqrt(v)/sqrt(1-b2**t) + eps)"""
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay))

    def _check(self, group, k):
        super()._check(group, k)
        group["betas"] = tuple(group["betas"])
        if not all(0 <= b < 1 for b in group["betas"]):
            raise ValueError(f"{type(self).__name__}: betas must lie in [0, 1), got "
                             f"{group['betas']}")

    def _decays(self, group):
        return {"exp_avg": group["betas"][0], "exp_avg_sq": group["betas"][1]}

    def _update(self, data, grad, state, work, group):
        beta1, beta2 = group["betas"]
        g = self._decay(data, grad, group)
        m, v = self._buffer(state, "exp_avg", data), self._buffer(state, "exp_avg_sq", data)
        step = state.setdefault("step", np.zeros((), dtype=np.int64))   # a counter, as an array
        step += 1
        t = int(step)
        m *= beta1
        np.multiply(g, 1 - beta1, out=work)
        m += work
        v *= beta2
        np.multiply(g, g, out=work)
        work *= 1 - beta2
        v += work
        # p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
        np.sqrt(v, out=work)
        work *= 1 / math.sqrt(1 - beta2 ** t)
        work += group["eps"]
        np.divide(m, work, out=work)
        work *= group["lr"] / (1 - beta1 ** t)
        data -= work

    def _decay(self, data, grad, group):
        return self._grad_with_decay(data, grad, group)


class AdamW(Adam):
    """Adam with decoupled weight decay: p *= 1 - lr*wd first; the decay never enters m or v."""
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)

    def _decay(self, data, grad, group):
        if group["weight_decay"]:
            data *= 1 - group["lr"] * group["weight_decay"]
        return grad


from . import lr_scheduler  # noqa: E402  (optim.lr_scheduler, as in PyTorch)

"""Optimizers with PyTorch's update rules. State is kept per parameter, in float32 for float32
parameters, and updated in place."""
import math

import numpy as np

from .tensor import Tensor


class Optimizer:
    def __init__(self, params, lr, weight_decay=0.0):
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        for i, p in enumerate(self.params):
            if not isinstance(p, Tensor) or not p.requires_grad:
                raise ValueError(f"{type(self).__name__}: parameter {i} is not a tensor that "
                                 f"requires grad")
        if lr < 0 or weight_decay < 0:
            raise ValueError(f"{type(self).__name__}: lr ({lr}) and weight_decay "
                             f"({weight_decay}) must not be negative")
        self.lr, self.weight_decay = lr, weight_decay
        self.state = [{} for _ in self.params]      # one dict of arrays per parameter

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def step(self):
        raise NotImplementedError

    def _grad_with_decay(self, p):
        """L2 regularization as PyTorch adds it: g = grad + weight_decay * p."""
        return p.grad + self.weight_decay * p.data if self.weight_decay else p.grad

    def state_dict(self):
        """The optimizer state as flat named arrays ('3.exp_avg', ...), ready for an .npz."""
        return {f"{i}.{key}": np.asarray(value) for i, state in enumerate(self.state)
                for key, value in state.items()}

    def load_state_dict(self, arrays):
        new_state = [{} for _ in self.params]
        for name, value in arrays.items():
            index, _, key = name.partition(".")
            if not index.isdigit() or int(index) >= len(self.params) or not key:
                raise KeyError(f"{type(self).__name__}.load_state_dict: unexpected entry "
                               f"'{name}' for {len(self.params)} parameters")
            p = self.params[int(index)]
            value = np.asarray(value)
            if value.ndim and value.shape != p.shape:
                raise ValueError(f"{type(self).__name__}.load_state_dict: '{name}' has shape "
                                 f"{value.shape}, parameter {index} has shape {p.shape}")
            new_state[int(index)][key] = value.copy() if value.ndim else value.item()
        self.state = new_state


class SGD(Optimizer):
    """g = grad + wd*p;  v = momentum*v + g (v = g at the first step);
    p -= lr * (g + momentum*v if nesterov else v)"""
    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params, lr, weight_decay)
        if momentum < 0:
            raise ValueError(f"SGD: momentum must not be negative, got {momentum}")
        if nesterov and momentum == 0:
            raise ValueError("SGD: nesterov needs a momentum above zero")
        self.momentum, self.nesterov = momentum, nesterov

    def step(self):
        for p, state in zip(self.params, self.state):
            if p.grad is None:
                continue
            g = self._grad_with_decay(p)
            if self.momentum:
                v = state.get("momentum_buffer")
                if v is None:
                    v = state["momentum_buffer"] = np.array(g, dtype=p.dtype)
                else:
                    v *= self.momentum
                    v += g
                g = g + self.momentum * v if self.nesterov else v
            p.data -= self.lr * g


class RMSProp(Optimizer):
    """g = grad + wd*p;  s = alpha*s + (1-alpha)*g**2;  p -= lr * g / (sqrt(s) + eps)"""
    def __init__(self, params, lr, alpha=0.99, eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr, weight_decay)
        if not 0 <= alpha < 1:
            raise ValueError(f"RMSProp: alpha must lie in [0, 1), got {alpha}")
        self.alpha, self.eps = alpha, eps

    def step(self):
        for p, state in zip(self.params, self.state):
            if p.grad is None:
                continue
            g = self._grad_with_decay(p)
            s = state.setdefault("square_avg", np.zeros_like(p.data))
            s *= self.alpha
            s += (1 - self.alpha) * g * g
            p.data -= self.lr * g / (np.sqrt(s) + self.eps)


class Adam(Optimizer):
    """g = grad + wd*p;  m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g**2;  t += 1
    p -= lr/(1-b1**t) * m / (sqrt(v)/sqrt(1-b2**t) + eps)"""
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr, weight_decay)
        if not all(0 <= b < 1 for b in betas):
            raise ValueError(f"{type(self).__name__}: betas must lie in [0, 1), got {betas}")
        self.betas, self.eps = tuple(betas), eps

    def step(self):
        beta1, beta2 = self.betas
        for p, state in zip(self.params, self.state):
            if p.grad is None:
                continue
            g = self._decay(p)
            m = state.setdefault("exp_avg", np.zeros_like(p.data))
            v = state.setdefault("exp_avg_sq", np.zeros_like(p.data))
            t = state["step"] = state.get("step", 0) + 1
            m *= beta1
            m += (1 - beta1) * g
            v *= beta2
            v += (1 - beta2) * g * g
            denominator = np.sqrt(v) / math.sqrt(1 - beta2 ** t) + self.eps
            p.data -= (self.lr / (1 - beta1 ** t)) * m / denominator

    def _decay(self, p):
        return self._grad_with_decay(p)


class AdamW(Adam):
    """Adam with decoupled weight decay: p *= 1 - lr*wd first; the decay never enters m or v."""
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)

    def _decay(self, p):
        if self.weight_decay:
            p.data *= 1 - self.lr * self.weight_decay
        return p.grad

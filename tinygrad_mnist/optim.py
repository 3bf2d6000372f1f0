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

from .tensor import Tensor, replayable

FLUSH_EVERY = 64
FLUSH_CAP = 1e-15


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
        # All state is arrays, counters included, so that saving and loading it at any step
        # continues exactly as if nothing had happened.
        self.state = [{} for _ in self.params]      # one dict of arrays per parameter
        self.steps = np.zeros((), dtype=np.int64)   # step() calls so far (times the flush)
        self._work = [None] * len(self.params)      # per-parameter scratch buffers, not state

    @replayable
    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @replayable
    def step(self):
        update = self._update
        for i, (p, state, work) in enumerate(zip(self.params, self.state, self._work)):
            if p._grad is None:
                continue
            if work is None or work.shape != p.data.shape or work.dtype != p.data.dtype:
                work = self._work[i] = np.empty_like(p.data)
            update(p, state, work)
        self.steps += 1
        if int(self.steps) % FLUSH_EVERY == 0:
            self._flush_denormals()

    def _update(self, p, state, work):
        raise NotImplementedError

    def _decays(self):
        """State buffer name -> the factor it is multiplied by each step."""
        return {}

    def _flush_denormals(self):
        for key, decay in self._decays().items():
            if not 0 < decay < 1:
                continue
            for state in self.state:
                value = state.get(key)
                if value is not None:
                    limit = min(np.finfo(value.dtype).tiny * decay ** -(FLUSH_EVERY + 1),
                                FLUSH_CAP)
                    value[np.abs(value) < limit] = 0

    @staticmethod
    def _buffer(state, key, p):
        """The state array `key` of parameter p, created as zeros on first use."""
        value = state.get(key)
        if value is None:
            value = state[key] = np.zeros_like(p.data)
        return value

    def _grad_with_decay(self, p):
        """L2 regularization as PyTorch adds it: g = grad + weight_decay * p."""
        return p._grad + self.weight_decay * p.data if self.weight_decay else p._grad

    def state_dict(self):
        """The optimizer state as flat named arrays ('steps', '3.exp_avg', ...), ready for an
        .npz; copies, so later steps do not change it."""
        arrays = {"steps": self.steps.copy()}
        arrays.update({f"{i}.{key}": value.copy() for i, state in enumerate(self.state)
                       for key, value in state.items()})
        return arrays

    def load_state_dict(self, arrays):
        """Restore a state_dict(); everything is checked before anything changes."""
        name = type(self).__name__
        new_state, steps = [{} for _ in self.params], np.zeros((), dtype=np.int64)
        for key, value in arrays.items():
            value = np.asarray(value)
            if key == "steps":
                if value.shape != () or value.dtype.kind not in "iu":
                    raise ValueError(f"{name}.load_state_dict: 'steps' must be one integer, got "
                                     f"shape {value.shape} of dtype {value.dtype}")
                steps = value.astype(np.int64)
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
        self.state, self.steps = new_state, steps


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

    def _decays(self):
        return {"momentum_buffer": self.momentum}

    def _update(self, p, state, work):
        g = self._grad_with_decay(p)
        if self.momentum:
            v = state.get("momentum_buffer")
            if v is None:
                v = state["momentum_buffer"] = np.array(g, dtype=p.dtype)
            else:
                v *= self.momentum
                v += g
            if self.nesterov:
                np.multiply(v, self.momentum, out=work)
                work += g                                   # g + momentum * v
                g = work
            else:
                g = v
        np.multiply(g, self.lr, out=work)
        p.data -= work


class RMSProp(Optimizer):
    """g = grad + wd*p;  s = alpha*s + (1-alpha)*g**2;  p -= lr * g / (sqrt(s) + eps)"""
    def __init__(self, params, lr, alpha=0.99, eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr, weight_decay)
        if not 0 <= alpha < 1:
            raise ValueError(f"RMSProp: alpha must lie in [0, 1), got {alpha}")
        self.alpha, self.eps = alpha, eps

    def _decays(self):
        return {"square_avg": self.alpha}

    def _update(self, p, state, work):
        g = self._grad_with_decay(p)
        s = self._buffer(state, "square_avg", p)
        s *= self.alpha
        np.multiply(g, g, out=work)
        work *= 1 - self.alpha
        s += work
        np.sqrt(s, out=work)
        work += self.eps
        np.divide(g, work, out=work)
        work *= self.lr
        p.data -= work


class Adam(Optimizer):
    """g = grad + wd*p;  m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g**2;  t += 1
    p -= lr/(1-b1**t) * m / (sqrt(v)/sqrt(1-b2**t) + eps)"""
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr, weight_decay)
        if not all(0 <= b < 1 for b in betas):
            raise ValueError(f"{type(self).__name__}: betas must lie in [0, 1), got {betas}")
        self.betas, self.eps = tuple(betas), eps

    def _decays(self):
        return {"exp_avg": self.betas[0], "exp_avg_sq": self.betas[1]}

    def _update(self, p, state, work):
        beta1, beta2 = self.betas
        g = self._decay(p)
        m, v = self._buffer(state, "exp_avg", p), self._buffer(state, "exp_avg_sq", p)
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
        work += self.eps
        np.divide(m, work, out=work)
        work *= self.lr / (1 - beta1 ** t)
        p.data -= work

    def _decay(self, p):
        return self._grad_with_decay(p)


class AdamW(Adam):
    """Adam with decoupled weight decay: p *= 1 - lr*wd first; the decay never enters m or v."""
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)

    def _decay(self, p):
        if self.weight_decay:
            p.data *= 1 - self.lr * self.weight_decay
        return p._grad

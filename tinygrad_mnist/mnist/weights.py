"""What the trainer does to the weights between steps, for the records' recipes:

- max_norm_: Srivastava et al. 2014's constraint: each hidden unit's incoming weight vector
  (a row of a linear layer's weight, a conv filter) rescaled to norm at most c after every
  update (the output layer is left free, as in the paper);
- momentum_at: momentum rising linearly from a start value to its final one over the first
  epochs (the paper's 0.5 -> 0.99);
- WeightAverage: an exponential moving average of the weights (and batch norm's running
  statistics), evaluated and saved instead of the raw weights.

All of them change arrays in place, outside the (replayed) training step: a jit replay reads
the same arrays and sees the change.
"""
import numpy as np

from .. import nn


def _constrained(model):
    """The weights max-norm constrains: every linear and conv layer's but the last linear's."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    last = max((i for i, m in enumerate(layers) if isinstance(m, nn.Linear)), default=None)
    return [m.weight for i, m in enumerate(layers) if i != last]


def max_norm_(model, c):
    """Rescale each unit's incoming weights (axis 0 indexes the units) to norm <= c, in place."""
    for weight in _constrained(model):
        w = weight.data
        rows = w.reshape(w.shape[0], -1)
        norms = np.sqrt(np.einsum("ij,ij->i", rows, rows, dtype=np.float64))
        over = norms > c
        if over.any():
            rows[over] *= (c / norms[over])[:, None].astype(w.dtype)


def momentum_at(step, total_ramp_steps, start, final):
    """Momentum at `step` (0-based): from `start` up to `final` linearly over the ramp."""
    if total_ramp_steps <= 0 or step >= total_ramp_steps:
        return final
    return start + (final - start) * step / total_ramp_steps


class WeightAverage:
    """average = decay * average + (1 - decay) * weights after every step, from the initial
    weights; `swapped_in(model)` puts the average into the model's arrays in place (and
    `swapped_out` puts the raw weights back)."""

    def __init__(self, model, decay):
        if not 0 < decay < 1:
            raise ValueError(f"--ema: the decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.tensors = _state_tensors(model)
        self.average = {k: t.data.copy() for k, t in self.tensors.items()}
        self._raw = None

    def update(self):
        for name, t in self.tensors.items():
            average = self.average[name]
            average *= self.decay
            average += (1 - self.decay) * t.data

    def swapped_in(self):
        self._raw = {k: t.data.copy() for k, t in self.tensors.items()}
        for name, t in self.tensors.items():
            t.data[...] = self.average[name]

    def swapped_out(self):
        for name, t in self.tensors.items():
            t.data[...] = self._raw[name]
        self._raw = None

    def state(self):
        return {f"ema.{k}": v for k, v in self.average.items()}

    def load(self, arrays):
        missing = [k for k in self.average if f"ema.{k}" not in arrays]
        if missing:
            raise ValueError(f"--resume: the checkpoint holds no weight average for "
                             f"{', '.join(missing[:3])}: it was made without --ema")
        for k in self.average:
            self.average[k][...] = arrays[f"ema.{k}"]


def _state_tensors(model):
    """name -> tensor of everything state_dict saves: the parameters and the buffers."""
    tensors = dict(model.named_parameters())
    tensors.update(model.named_buffers())
    return tensors

"""Each example's gradient norm, at about the cost of one batched gradient.

    norms = privacy.example_norms(model, loss_fn, x, y)   # loss_fn(model, x, y): (B,) losses
    norms.total            # (B,): ||grad of loss_i|| over every parameter
    norms.by_parameter     # name -> (B,)

One backward pass of the summed losses runs with an observer (the engine's one seam) that
hears, for every op taking a parameter, the gradient of its output; the op's own
`example_norms` rule (beside its backward: Linear, Conv2d through its columns, Embedding,
LayerNorm, BatchNorm in eval mode, and the biases they take) turns that and what its
forward saved into each example's squared norm. The parameters' own gradients are not
computed in that pass; nothing of size batch x parameters is written.

Where a rule cannot apply (an op without one, a parameter used by several ops, such as a
recurrent layer's weights at every step, or an op whose output has no batch axis) the norms
come from per-example gradients written out by vmap(grad) instead: correct, and slower (a
warning says so once per reason).
"""
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..engine import Observer, Tensor, observe, observers
from ..engine.mode import notify_read
from ..engine.graph import sum_to_shape
from ..engine.kernels.example_norms import row_squares

__all__ = ["example_norms", "ExampleNorms", "PrivacyWarning"]


class PrivacyWarning(UserWarning):
    """Per-example gradients are written out, where the norms alone would be faster."""


@dataclass
class ExampleNorms:
    """Per-example gradient norms: `total` (B,), `by_parameter` name -> (B,), and `method`
    ("ghost": from the ops' rules, or "vmap": per-example gradients written out)."""
    total: np.ndarray
    by_parameter: dict = field(default_factory=dict)
    method: str = "ghost"


class _Heard(Observer):
    """One backward pass: each op that takes a parameter, with its output's gradient. The
    parameters' own gradients of this pass are not wanted (the clipped ones are computed
    afterwards), so the op is told not to compute them."""

    def __init__(self, names):
        self.names = names                   # id(parameter) -> its name
        self.ops = []                        # (op, gz, {input position: name}, needs)

    def before_backward(self, op, gz):
        where = {i: self.names[id(t)] for i, t in enumerate(op.inputs)
                 if id(t) in self.names}
        if where:
            needs = op.needs_input_grad
            self.ops.append((op, gz, where, needs))
            op.needs_input_grad = tuple(n and i not in where for i, n in enumerate(needs))


def _parameters(model):
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


def refuse_mixing(model, what):
    """Batch norm in training mode normalizes each example by the batch's statistics: an
    example's gradient then depends on the others, and clipping bounds nothing."""
    for module in model.modules():
        if getattr(module, "training", False) and "BatchNorm" in type(module).__name__:
            raise ValueError(f"{what}: the model has a {type(module).__name__} in training "
                             f"mode, which mixes the examples of a batch (each one's gradient "
                             f"depends on the others); put it in eval mode, or use LayerNorm")


class Pass:
    """The losses of one batch and what one backward pass of their sum told: per-example
    squared norms by parameter, and how to form sum_i w_i g_i for per-example weights w."""

    def __init__(self, model, loss_fn, batch):
        self.parameters = _parameters(model)
        self.model, self.loss_fn, self.batch = model, loss_fn, batch
        self.size = int(np.shape(batch[0])[0])
        losses = loss_fn(model, *batch)
        if not isinstance(losses, Tensor) or losses.shape != (self.size,):
            raise ValueError(f"privacy: loss_fn must return one loss per example, a Tensor of "
                             f"shape ({self.size},), got "
                             f"{getattr(losses, 'shape', type(losses).__name__)}")
        self.losses = losses
        # the norms and the clipping are array work on the pass's gradients, outside ops: a
        # jit recording could not replay it, so it hears a read of values and runs eagerly
        if observers():
            notify_read(losses, "per-example gradient norms")
        heard = _Heard({id(p): name for name, p in self.parameters})
        with observe(heard):
            losses.sum().backward()
        self.heard = heard.ops
        self.squares, self.written, why = self._ghost()
        if why is not None:
            warnings.warn(f"privacy: {why}, so per-example gradients are written out with "
                          f"vmap(grad) (correct, slower)", PrivacyWarning, stacklevel=3)
            self.written = self._vmap_gradients()
            self.squares = {name: row_squares(g) for name, g in self.written.items()}

    def _ghost(self):
        """name -> (B,) squared norms from the ops' rules, or the reason they do not apply."""
        used = {}
        for _, _, where, _ in self.heard:
            for name in where.values():
                used[name] = used.get(name, 0) + 1
        shared = [name for name, count in used.items() if count > 1]
        if shared:
            return None, None, f"{shared[0]} is used by {used[shared[0]]} ops (its example " \
                               f"gradients are sums over them)"
        squares = {}
        for op, gz, where, _ in self.heard:
            rule = getattr(op, "example_norms", None)
            if np.ndim(gz) == 0 or np.shape(gz)[0] != self.size:
                return None, None, f"{op.name}'s output (shape {np.shape(gz)}) has no batch axis"
            norms = rule(np.asarray(gz)) if rule is not None else None
            if norms is None:
                return None, None, f"{op.name} has no per-example norm rule here"
            for i, name in where.items():
                squares[name] = norms[i]
        for name, p in self.parameters:              # unused by this batch: zero gradients
            squares.setdefault(name, np.zeros(self.size, p.dtype))
        return squares, None, None

    def _vmap_gradients(self):
        from ..func import functional_call, grad, vmap
        model, loss_fn = self.model, self.loss_fn
        params = {name: p.detach() for name, p in self.parameters}

        class Substituted:                  # the model called with these parameters
            def __init__(self, values):
                self.values = values

            def __call__(self, *args):
                return functional_call(model, self.values, args)

            def __getattr__(self, name):
                return getattr(model, name)

        def one_loss(values, *example):
            batch = tuple(e[None] if isinstance(e, Tensor) else np.asarray(e)[None]
                          for e in example)
            return loss_fn(Substituted(values), *batch).sum()
        batch = tuple(b if isinstance(b, Tensor) else Tensor.from_numpy(np.asarray(b))
                      for b in self.batch)
        per_example = vmap(grad(one_loss), in_axes=(None,) + (0,) * len(batch))(params, *batch)
        return {name: np.asarray(g.data) for name, g in per_example.items()}

    def norms(self):
        total = np.sqrt(sum(self.squares.values()))
        by_parameter = {name: np.sqrt(s) for name, s in self.squares.items()}
        return ExampleNorms(total, by_parameter, "ghost" if self.written is None else "vmap")

    def weighted_sum(self, weights):
        """name -> sum_i weights[i] * (example i's gradient): each op's backward again, for
        its parameters only, from its output's gradient scaled per example."""
        if self.written is not None:
            return {name: np.tensordot(weights.astype(g.dtype), g, axes=1)
                    for name, g in self.written.items()}
        sums = {}
        for op, gz, where, needs in self.heard:
            gz = np.asarray(gz)
            scaled = gz * weights.astype(gz.dtype).reshape((-1,) + (1,) * (gz.ndim - 1))
            op.needs_input_grad = tuple(i in where for i in range(len(needs)))
            try:
                grads = op.backward(scaled)
            finally:
                op.needs_input_grad = needs
            for i, name in where.items():
                g = np.asarray(grads[i])
                shape = op.inputs[i].shape
                g = g if g.shape == shape else sum_to_shape(g, shape, op.name)
                sums[name] = g if name not in sums else sums[name] + g
        return sums


def example_norms(model, loss_fn, *batch):
    """Each example's gradient norm, in total and per parameter, without writing per-example
    gradients where the ops' rules apply. loss_fn(model, *batch) returns one loss per example
    (e.g. nn.cross_entropy(model(x), y, reduction="none")). Leaves the parameters' .grad as
    they were."""
    refuse_mixing(model, "privacy.example_norms")
    grads = [(p, p.grad) for _, p in _parameters(model)]
    try:
        return Pass(model, loss_fn, batch).norms()
    finally:
        for p, g in grads:
            p.grad = g

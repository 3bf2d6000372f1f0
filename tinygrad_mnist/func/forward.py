"""Forward mode: tangents carried through each op's own jvp rule, in the same pass as the
values, by an observer of the engine (no graph is recorded, no backward runs).

A tangent rides on a tensor: the observer keeps, per tensor made while it is attached, the
directional derivative of that tensor along the tangents the inputs were given. After each op
it calls the op's `jvp(*input_tangents)` (ops.py: beside forward and backward). An op without
one, a user's Op, gets its tangent from its backward by the double-vjp construction: its
backward applied to a tensor u is the linear map u -> J^T u; the gradient of <J^T u, v> with
respect to u is J v. That costs a recorded backward and a backward of it, about three times
the op's own backward, and needs a backward written with operations that work on tensors (as
create_graph needs too).
"""
import contextlib
import threading

import numpy as np

from ..engine import Observer, Tensor, enable_grad, grad, no_grad, observe, observers
from ..engine.graph import backward_on_tensors, jvp_on_tensors
from ..jit.recorder import Recorder
from .trees import tracing, tree_leaves, tree_rebuild

_active = threading.local()         # the forward passes running in this thread, innermost last


def _stack():
    if not hasattr(_active, "modes"):
        _active.modes = []
    return _active.modes


class Tangents(Observer):
    """The tangent of every tensor made while attached (None: zero). With `recorded`, tangents
    are Tensors computed by recorded ops from the primals (each rule run on tensors, as
    backward is under create_graph), so that an outer reverse pass differentiates them."""

    def __init__(self, recorded=False, outer=()):
        self.tangents = {}               # id(tensor) -> (tensor, tangent): the tensor kept alive
        self.recorded = recorded
        self.outer = tuple(outer)        # observers attached outside: they see the tangents' ops

    follows_in_place = True               # t += v reaches us as an op and two effects

    def set(self, tensor, tangent):
        self.tangents[id(tensor)] = (tensor, tangent)

    def on_effect(self, kind, target, value):
        if kind == "in_place_snapshot":     # value: target's value until now, a tensor
            tangent = self.get(target)
            if tangent is not None:
                self.set(value, tangent)
        elif kind == "in_place_result":     # target holds value's result from now on
            self.set(target, self.get(value))

    def get(self, tensor):
        entry = self.tangents.get(id(tensor))
        return None if entry is None or entry[0] is not tensor else entry[1]

    def on_op(self, op, inputs, output):
        if output.dtype.kind != "f":                # comparisons, argmax, integer draws
            return
        tangents = [self.get(t) for t in inputs]
        if all(t is None for t in tangents):
            return
        if self.recorded:
            self.set(output, self._recorded_tangent(op, inputs, tangents, output))
            return
        rule = getattr(op, "jvp", None)
        if rule is None:
            tangent = derived_jvp(op, inputs, tangents, output)
        else:
            try:
                tangent = rule(*tangents)
            except (ValueError, TypeError, IndexError) as error:
                raise type(error)(f"func.jvp: {op.name}'s jvp rule failed on tangents of "
                                  f"shapes {[None if t is None else t.shape for t in tangents]}"
                                  f": {error}") from error
        if tangent is not None:
            self.set(output, _fitted(op, np.asarray(tangent), inputs, output))

    def _recorded_tangent(self, op, inputs, tangents, output):
        """The op's tangent as a recorded Tensor (None: zero). Every op of it runs with the
        outer observers attached (an outer jvp carries tangents on them, a vmap batches them)."""
        with observe(*self.outer) if self.outer else contextlib.nullcontext():
            if getattr(op, "jvp", None) is None:
                tangent = derived_jvp(op, inputs, [None if t is None else t.data
                                                   for t in tangents], output, recorded=True)
            else:
                with enable_grad():
                    tangent = jvp_on_tensors(op, output, tangents)
            if tangent is None:
                return None
            if not isinstance(tangent, Tensor):
                tangent = Tensor.from_numpy(np.asarray(tangent))
            if tangent.shape != output.shape:
                _fitted(op, np.broadcast_to(np.zeros((), output.dtype), tangent.shape), inputs,
                        output)                    # the same shape rule, named the same way
                with enable_grad():
                    tangent = tangent.broadcast_to(output.shape)
            if tangent.dtype != output.dtype:
                with enable_grad():
                    tangent = tangent.to(output.dtype)
        return tangent


def _fitted(op, tangent, inputs, output):
    """A rule's tangent as the output's: its shape, or an input's own tangent broadcast as the
    forward broadcast that input (add's rule returns tb alone); any other shape is a wrong
    rule, named."""
    if tangent.shape != output.shape:
        if tangent.shape not in [t.shape for t in inputs] or not _broadcasts(
                tangent.shape, output.shape):
            raise ValueError(f"func.jvp: {op.name}'s jvp rule returned a tangent of shape "
                             f"{tangent.shape} for an output of shape {output.shape}")
        tangent = np.broadcast_to(tangent, output.shape)
    return tangent if tangent.dtype == output.dtype else tangent.astype(output.dtype)


def _broadcasts(shape, target):
    try:
        return np.broadcast_shapes(shape, target) == tuple(target)
    except ValueError:
        return False


def active():
    """True while a jvp runs in this thread (gradients inside it must then be recorded, so
    that their ops carry tangents: forward over reverse)."""
    return bool(_stack())


def jit_recording():
    """Whether the jit records this call: what a transform computes must then be ops."""
    return any(isinstance(o, Recorder) for o in observers())


def share_tangent(new, old, examples=None):
    """`new` (a fresh leaf standing for `old`) carries old's tangent in every running jvp;
    with `examples`, new is `examples` copies of old stacked (vmap's per-example copies)."""
    for mode in _stack():
        tangent = mode.get(old)
        if tangent is None:
            continue
        if examples is not None:
            tangent = (tangent.broadcast_to((examples,) + tangent.shape)
                       if isinstance(tangent, Tensor)
                       else np.broadcast_to(tangent, (examples,) + tangent.shape))
        mode.set(new, tangent)


def derived_jvp(op, inputs, tangents, output, recorded=False):
    """J v from the op's backward (double vjp): see the module docstring. recorded: J v as a
    Tensor whose graph reaches the op's inputs (its backward run on tensors)."""
    with enable_grad():
        u = Tensor(np.zeros(output.shape, output.dtype), requires_grad=True,
                   dtype=output.dtype)
        op.needs_input_grad = tuple(t is not None for t in tangents)
        try:
            pulled = backward_on_tensors(op, output, u) if recorded else op.backward(u)
        except Exception as error:
            raise TypeError(
                f"func.jvp: {op.name} has no jvp rule, and its backward cannot be applied to a "
                f"Tensor to derive one ({type(error).__name__}: {error}); give {type(op).__name__} "
                f"a jvp(*tangents) method") from error
        total = None
        for g, v in zip(pulled, tangents):
            if g is None or v is None:
                continue
            g = g if isinstance(g, Tensor) else Tensor(np.asarray(g), dtype=np.asarray(g).dtype)
            term = (g * Tensor(v, dtype=v.dtype)).sum()     # the tangent keeps its precision
            total = term if total is None else total + term
        if total is None or not total.requires_grad:
            return None                                   # J does not depend on u: zero
        (jv,) = grad(total, [u], allow_unused=True, create_graph=recorded)
    if jv is None:
        return None
    return jv if recorded else jv.data


def _as_tensors(what, values):
    if isinstance(values, Tensor):
        return (values,), True
    if isinstance(values, (tuple, list)) and all(isinstance(v, Tensor) for v in values):
        return tuple(values), False
    raise TypeError(f"func.jvp: {what} must be a Tensor or a tuple of Tensors, got "
                    f"{type(values).__name__}")


def jvp(f, primals, tangents, has_aux=False):
    """(f(*primals), J v): the outputs and their tangents along `tangents` (one per primal, of
    its shape), in one forward pass. primals and tangents are tuples of Tensors (or single
    Tensors); outputs may be a Tensor or tuples, lists and dicts of them, and their tangents
    come in the same structure (zeros where an output does not depend on the primals). With
    has_aux, f returns (outputs, aux) and jvp returns (outputs, tangents, aux)."""
    primals, _ = _as_tensors("primals", primals)
    tangents, _ = _as_tensors("tangents", tangents)
    if len(primals) != len(tangents):
        raise ValueError(f"func.jvp: {len(primals)} primals but {len(tangents)} tangents")
    # an outer reverse pass tracks a primal or a tangent (grad of a jvp), or an outer jvp runs
    # (forward over forward): the tangents are tensors made by ops from the primals, recorded
    # for the reverse pass and seen by the outer jvp, which carries its own tangents on them
    # inside vmap or the jit, the trace batches or replays those ops too
    recorded = (any(t.requires_grad for t in primals + tangents) or active()
                or tracing() is not None or jit_recording())
    mode = Tangents(recorded, outer=observers())
    inputs = []
    for i, (p, t) in enumerate(zip(primals, tangents)):
        if t.shape != p.shape:
            raise ValueError(f"func.jvp: tangent {i} has shape {t.shape}, primal {i} has "
                             f"shape {p.shape}")
        if p.dtype.kind != "f":
            raise TypeError(f"func.jvp: primal {i} has dtype {p.dtype}; tangents need "
                            f"floating-point primals")
        if recorded:                  # an op of p: the outer passes follow it into f
            with enable_grad():
                x = p.reshape(p.shape)
            tangent = t if t.dtype == p.dtype else t.to(p.dtype)
        else:
            x = Tensor.from_numpy(p.data)
            tangent = np.asarray(t.data, dtype=p.dtype)
        mode.set(x, tangent)
        inputs.append(x)
    stack = _stack()
    stack.append(mode)
    try:
        # values and tangents: nothing to record, unless an outer reverse pass needs them
        with (enable_grad() if recorded else no_grad()), observe(mode):
            outputs = f(*inputs)
    finally:
        stack.pop()
    aux = None
    if has_aux:
        if not (isinstance(outputs, tuple) and len(outputs) == 2):
            raise TypeError(f"func.jvp: with has_aux=True, f must return (outputs, aux), got "
                            f"{type(outputs).__name__}")
        outputs, aux = outputs
    outs = tree_leaves(outputs)
    results = []
    for i, out in enumerate(outs):
        if not isinstance(out, Tensor):
            raise TypeError(f"func.jvp: f returned a {type(out).__name__} as output {i}; "
                            f"return Tensors")
        tangent = mode.get(out)
        if tangent is None:
            tangent = Tensor(np.zeros(out.shape, out.dtype), dtype=out.dtype)
        elif not isinstance(tangent, Tensor):
            tangent = Tensor(tangent, dtype=out.dtype)
        results.append(tangent)
    tangents_out = tree_rebuild(outputs, iter(results))     # the outputs' own structure
    return (outputs, tangents_out, aux) if has_aux else (outputs, tangents_out)

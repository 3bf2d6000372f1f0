"""jit(fn, check=True): each replay is compared with eager execution of the same call.

The step runs eagerly first; what it changed (tensors' values and gradients, the state of the
objects whose methods it called, the random generator, the arguments' arrays) is noted and put
back as it was; then the replay runs, and every one of those, and the outputs, must agree with
eager's within float rounding. The step's effects happen once: the replay's stay.
"""
import copy

import numpy as np

from ..engine import Tensor, get_rng
from .recorder import leaves


class JitMismatchError(AssertionError):
    """A checked replay differed from eager execution of the same call."""


def _copy_state(value):
    """A copy of the arrays, lists and dicts in `value`; anything else (tensors, modules,
    numbers) is itself."""
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, dict):
        copied = copy.copy(value)                  # the same type (a parameter group)
        for key, item in value.items():
            dict.__setitem__(copied, key, _copy_state(item))
        return copied
    if isinstance(value, list):
        copied = copy.copy(value)
        list.__setitem__(copied, slice(None), [_copy_state(item) for item in value])
        return copied
    if type(value) is tuple:
        return tuple(_copy_state(item) for item in value)
    return value


def _state_of(obj):
    """The arrays and numbers an object keeps in its attributes, lists and dicts, by path
    (attributes starting with _ are scratch space, not state)."""
    found = {}

    def walk(value, path):
        if isinstance(value, np.ndarray):
            found[path] = value.copy()
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            found[path] = np.asarray(value)
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                walk(item, f"{path}[{i}]")
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}[{key!r}]")
    for name, value in vars(obj).items():
        if not name.startswith("_"):
            walk(value, f"{type(obj).__name__}.{name}")
    return found


class Snapshot:
    """Everything a call of the step may change, copied so that it can be put back."""

    def __init__(self, program, args, kwargs):
        arguments = list(leaves(args + tuple(kwargs.values())))
        tensors = program.tensors() + [a for a in arguments if isinstance(a, Tensor)]
        self.tensors = list({id(t): t for t in tensors}.values())
        self.names = program.names()
        for i, a in enumerate(arguments):
            if isinstance(a, Tensor):
                self.names.setdefault(id(a), f"argument {i}")
        self.saved = [(t, t.data, t.data.copy(), t.grad,
                       None if t.grad is None else t.grad.copy()) for t in self.tensors]
        self.arrays = [(a, a.copy()) for a in arguments if isinstance(a, np.ndarray)]
        # objects whose methods the step calls (an optimizer, a scheduler): their state
        self.objects = program.called_objects()
        self.states = [(o, _copy_state(dict(vars(o)))) for o in self.objects]
        self.rng = get_rng().bit_generator.state

    def restore(self):
        for t, array, values, grad, grad_values in self.saved:
            if t.data is not array:
                t.data = array
            np.copyto(array, values)
            t.grad = grad
            if grad is not None:
                np.copyto(grad, grad_values)
        for array, values in self.arrays:
            np.copyto(array, values)
        for o, state in self.states:
            vars(o).clear()
            vars(o).update(state)
        get_rng().bit_generator.state = self.rng

    def results(self, output):
        """name -> array (or None) of everything the call changed or returned, copied."""
        found = {}
        for t in self.tensors:
            name = self.names.get(id(t), f"a tensor of shape {t.shape}")
            found[name] = t.data.copy()
            found[f"{name}.grad"] = None if t.grad is None else t.grad.copy()
        for i, (array, _) in enumerate(self.arrays):
            found[f"array argument {i}"] = array.copy()
        for o in self.objects:
            found.update(_state_of(o))
        outputs = output if isinstance(output, (tuple, list)) else (output,)
        for i, value in enumerate(outputs):
            if isinstance(value, Tensor):
                found[f"output {i}"] = value.data.copy()
        return found


def compare(eager, replayed, function):
    """Raise JitMismatchError naming the first result that differs beyond float rounding."""
    for name, e in eager.items():
        r = replayed.get(name)
        if (e is None) != (r is None):
            raise JitMismatchError(
                f"jit check of {function}: {name} is {'None' if r is None else 'set'} after "
                f"the replay but {'None' if e is None else 'set'} after eager execution")
        if e is None:
            continue
        if e.shape != r.shape:
            raise JitMismatchError(f"jit check of {function}: {name} has shape {r.shape} after "
                                   f"the replay, {e.shape} after eager execution")
        if e.dtype.kind not in "fc":
            if not np.array_equal(e, r):
                raise JitMismatchError(f"jit check of {function}: {name} differs from eager "
                                       f"execution")
            continue
        # the same operations in the same order; a BLAS may split a product differently
        eps = np.finfo(e.dtype).eps
        finite = np.isfinite(e)
        if not np.array_equal(finite, np.isfinite(r)) or not np.array_equal(
                e[~finite], r[~finite], equal_nan=True):
            raise JitMismatchError(f"jit check of {function}: {name} has NaN or inf where "
                                   f"eager execution has not, or the reverse")
        e, r = e[finite].astype(np.float64), r[finite].astype(np.float64)
        scale = float(np.max(np.abs(e))) if e.size else 0.0
        difference = float(np.max(np.abs(r - e))) if e.size else 0.0
        tolerance = 1000 * eps * (1 + scale)
        if difference > tolerance:
            raise JitMismatchError(
                f"jit check of {function}: {name} differs from eager execution by "
                f"{difference:.3g} (largest absolute difference; tolerance {tolerance:.3g})")

"""What the jit watches during a recording besides the engine's events, without the library's
help: library calls whose effects live outside the graph, module calls, attribute writes,
printing and draws from the global random generators.

A profile function (sys.setprofile, this thread only, for the recording call alone) sees
each Python call:
- an effect: `step`/`zero_grad` of an optimizer, a scheduler, a module or a tensor, and
  `manual_seed`. The call is recorded as one step that a replay calls again; while it runs
  the recorder ignores the engine's events (its reads and writes are the call's own).
- a module's __call__: the module is guarded before every replay (for func.functional_call,
  every module as it is before the call swaps parameters in).
- print(), or a write to sys.stdout: refused (a replay would not print).
Attribute writes: the state of every module, optimizer, parameter group and scheduler the
step can reach is noted when the recording starts and after each effect, and compared
before each effect and at the end: a difference the step made itself is refused.
"""
import builtins
import random
import sys

import numpy as np

from ..engine import Tensor, manual_seed
from ..nn import Module
from ..optim import Optimizer
from ..optim.lr_scheduler import LRScheduler

EFFECT_METHODS = {"step": (Optimizer, LRScheduler), "zero_grad": (Optimizer, Module, Tensor)}
EFFECT_FUNCTIONS = {manual_seed.__code__: manual_seed}
_MODULE_CALL = Module.__call__.__code__
_NAMES = frozenset(EFFECT_METHODS) | {"__call__", "write", "manual_seed", "functional_call"}
_FUNCTIONAL_CALL_MODULE = "tinygrad_mnist.func.transforms"


def _function_of(obj, code):
    """The function `code` belongs to among obj's class and its bases (a subclass's step
    that calls super().step() is the one called)."""
    for cls in type(obj).__mro__:
        for value in vars(cls).values():
            if getattr(value, "__code__", None) is code:
                return value
    return None


def _arguments(frame):
    """The positional arguments a call received, in order (a profile function sees the frame
    before the body runs: its locals are the arguments)."""
    code = frame.f_code
    names = code.co_varnames[:code.co_argcount]
    return tuple(frame.f_locals[n] for n in names)


# ---------------------------------------------------------------- state, for attribute writes

def _state(obj):
    """What an object's attributes hold, by identity (and a dict's items, a list's and a
    dict's members one level down)."""
    items = obj.items() if isinstance(obj, dict) else vars(obj).items()
    state = {}
    for name, value in items:
        if name == "_in_forward":                    # a module's own call depth
            continue
        members = None
        if isinstance(value, dict):
            members = tuple(map(id, value)) + tuple(map(id, value.values()))
        elif isinstance(value, list):
            members = tuple(map(id, value))
        state[name] = (value, members)
    return state


def _changed(before, after):
    """The first name whose value is another object (or holds others), or None."""
    for name in before.keys() | after.keys():
        if name not in before or name not in after:
            return name
        (old, old_members), (new, new_members) = before[name], after[name]
        if new is not old and not (type(new) is type(old) and isinstance(new, (int, float, str))
                                   and new == old):
            return name
        if old_members != new_members:
            return name
    return None


def _owned(obj):
    """The objects whose state `obj` carries: a module's sub-modules, an optimizer's groups,
    a scheduler's optimizer and its groups."""
    if isinstance(obj, Module):
        return obj.modules()
    if isinstance(obj, Optimizer):
        return [obj] + list(obj.param_groups)
    if isinstance(obj, LRScheduler):
        return [obj] + _owned(obj.optimizer)
    return []


class Watch:
    """Around the recording call: sys.setprofile in this thread, the global generators'
    states, and the library objects' states."""

    def __init__(self, recorder, reachable):
        self.recorder = recorder
        self.depth = 0                   # > 0 inside an effect call
        self.effect_frame = None
        self.watched = {}                # id(obj) -> (obj, state)
        for obj in reachable:
            self.follow(obj)

    def follow(self, obj):
        for o in _owned(obj):
            if id(o) not in self.watched:
                self.watched[id(o)] = (o, _state(o))

    def check_writes(self):
        """Refuse an attribute written since the last look."""
        for obj, state in self.watched.values():
            name = _changed(state, _state(obj))
            if name is not None:
                kind = "a parameter group" if isinstance(obj, dict) else type(obj).__name__
                self.recorder.refuse(f"writes {kind}.{name}; a replay would not write it "
                                     f"again: change it between calls")
                return

    def renew(self):
        for key, (obj, _) in list(self.watched.items()):
            self.watched[key] = (obj, _state(obj))

    # the profile function ------------------------------------------------------------

    def profile(self, frame, event, arg):
        if event == "call":
            code = frame.f_code
            if self.depth or code.co_name not in _NAMES:
                return
            if code is _MODULE_CALL:
                module = frame.f_locals.get("self")
                self.follow(module)
                self.recorder.module_called(module)
                return
            if code.co_name == "functional_call" and \
                    frame.f_globals.get("__name__") == _FUNCTIONAL_CALL_MODULE:
                # it swaps parameters in for one call and back: the modules are noted and
                # guarded as they are before the swap, which they are again after it
                for module in frame.f_locals["module"].modules():
                    self.follow(module)
                    self.recorder.module_called(module)
                return
            function = EFFECT_FUNCTIONS.get(code)
            if function is None and code.co_name in EFFECT_METHODS:
                owner = frame.f_locals.get("self")
                if isinstance(owner, EFFECT_METHODS[code.co_name]):
                    function = _function_of(owner, code)
                    self.follow(owner)
            if function is not None:
                self.check_writes()
                self.recorder.effect_call(function, _arguments(frame))
                self.depth, self.effect_frame = 1, frame
            elif code.co_name == "write" and frame.f_locals.get("self") is sys.stdout:
                self.recorder.refuse("prints, which a replay would not do again")
        elif event == "return":
            if self.depth and frame is self.effect_frame:
                self.depth, self.effect_frame = 0, None
                self.recorder.inside_effect = False
                self.renew()
        elif event == "c_call" and not self.depth:
            owner, name = getattr(arg, "__self__", None), getattr(arg, "__name__", "")
            # the builtin print (also when a library wrapped builtins.print), or a write
            if (owner is builtins and name == "print") or (owner is sys.stdout
                                                           and name == "write"):
                self.recorder.refuse("prints, which a replay would not do again")

    def __enter__(self):
        self.numpy_state, self.python_state = np.random.get_state(), random.getstate()
        self.previous = sys.getprofile()
        sys.setprofile(self.profile)
        return self

    def __exit__(self, *exc):
        sys.setprofile(self.previous)
        self.check_writes()
        state = np.random.get_state()
        if (state[2:] != self.numpy_state[2:] or
                not np.array_equal(state[1], self.numpy_state[1])):
            self.recorder.refuse_late("draws from NumPy's global random generator "
                                      "(np.random...), which a replay would not draw again; "
                                      "use Tensor.randn, rand or randint")
        if random.getstate() != self.python_state:
            self.recorder.refuse_late("draws from Python's random module, which a replay "
                                      "would not draw again; use Tensor.randn, rand or "
                                      "randint")
        return False

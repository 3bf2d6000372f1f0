"""The recording call: an observer that writes down what the step does, and refuses what a
replay could not do again."""
import dis
import functools
import random
import sys
import types

import numpy as np

from ..callsite import user_site
from ..engine import Observer, Tensor, backward_plan
from ..engine.graph import Holder


def leaves(values):
    """The Tensors and arrays among (nested tuples of) arguments, in order."""
    for value in values:
        if isinstance(value, tuple):
            yield from leaves(value)
        elif isinstance(value, (Tensor, np.ndarray)):
            yield value


class Recorder(Observer):
    """Listens to the engine during the first call and numbers every array it sees: the
    arguments' arrays and what ops and array work produce get slots (replayed); any other
    array is a constant, and a tensor from outside the step (a parameter) is read again at
    every replay, so that it follows updates. Steps are ("op", op, inputs, options, slot),
    ("call", function, arguments, kwargs, slot or None) and ("backward", plan, roots, seeds)."""

    def __init__(self, args, kwargs):
        self.refusal = None            # (what, where) once the step did something unreplayable
        self.slot_of = {}              # id(array) -> slot
        self.alive = []                # keeps recorded objects alive, so ids stay unique
        self.constants = []            # slot -> constant array, or None for a computed one
        self.steps = []
        self.modules = {}              # id(module) -> (module, its guard), in call order
        self.captured = {}             # id(tensor) -> (tensor, shape, dtype, requires_grad)
        self.recorded_ops = set()      # ids of the ops run in the step
        self.arguments = list(leaves(args + tuple(kwargs.values())))
        self.flat = not kwargs and len(self.arguments) == len(args)
        self.argument_slots = [self._new_slot(a.data if isinstance(a, Tensor) else a)
                               for a in self.arguments]
        self.argument_tensors = {id(a): i for i, a in enumerate(self.arguments)
                                 if isinstance(a, Tensor)}

    def _new_slot(self, array, constant=None):
        self.alive.append(array)
        self.slot_of[id(array)] = len(self.constants)
        self.constants.append(constant)
        return len(self.constants) - 1

    def _ref(self, value):
        """A value as the replay finds it: ('slot', n) for an array the step computes or
        receives, ('tensor', t) for a tensor from outside the step, ('value', v) otherwise."""
        if isinstance(value, np.ndarray):
            slot = self.slot_of.get(id(value))
            return ("slot", slot) if slot is not None else ("value", value)
        if isinstance(value, Tensor):
            slot = self.slot_of.get(id(value.data))
            if slot is not None:
                return ("slot", slot)
            self.captured.setdefault(id(value), (value, value.shape, value.dtype,
                                                 value.requires_grad))
            return ("tensor", value)
        if isinstance(value, tuple) and any(isinstance(v, np.ndarray) for v in value):
            return ("tuple", tuple(self._ref(v) for v in value))
        return ("value", value)

    def _computed(self, value):
        """An array or tensor the step computed or received (it has a slot)."""
        if isinstance(value, Tensor):
            value = value.data
        return isinstance(value, np.ndarray) and id(value) in self.slot_of

    def _refuse(self, what):
        if self.refusal is None:
            self.refusal = (what, user_site())

    def _refuse_late(self, what):
        """A refusal found after the call, which names no line in it."""
        if self.refusal is None:
            self.refusal = (what, None)

    # the engine's events -----------------------------------------------------------------

    def on_op(self, op, inputs, output):
        options = op.options
        index = options.get("index") if options else None
        if any(isinstance(i, np.ndarray) and i.dtype == bool and id(i) in self.slot_of
               for i in (index if isinstance(index, tuple) else (index,))):
            self._refuse("uses a boolean mask computed in the step, whose result's shape "
                         "depends on the values, which is not recorded")
        refs = {k: self._ref(v) for k, v in options.items()} if options else {}
        self.alive.append(output)
        self.recorded_ops.add(id(op))
        self.steps.append(("op", op, [self._ref(t) for t in inputs], refs,
                           self._new_slot(output.data)))

    def on_array(self, function, arrays, result):
        """Array work outside ops: replayed when it reads an array the step computes or
        receives; a constant otherwise."""
        if id(result) in self.slot_of or not any(
                isinstance(a, np.ndarray) and id(a) in self.slot_of for a in arrays):
            return
        self.steps.append(("call", function, [self._ref(a) for a in arrays], {},
                           self._new_slot(result)))

    def on_effect(self, kind, target, value):
        if kind == "call":            # an optimizer's or a scheduler's step, zero_grad, a seed
            args, kwargs = value
            if any(self._computed(a) for a in args + tuple(kwargs.values())):
                self._refuse(f"passes a value computed in the step to "
                             f"{target.__qualname__}(), which is not recorded")
            self.steps.append(("call", target, [("value", a) for a in args], kwargs, None))
        elif kind == "in_place":      # t += v under no_grad: done again
            ufunc, operand = value
            self.steps.append(("call", _in_place(ufunc), [self._ref(target), self._ref(operand)],
                               {}, None))
        elif kind == "grad" and (value is None or isinstance(value, np.ndarray)):
            # p.grad = None, or an array: done again (a copy each time, as a fresh array; a
            # constant as it is now, before backward adds into it)
            ref = self._ref(value)
            if ref[0] == "value" and value is not None:
                ref = ("value", value.copy())
            self.steps.append(("call", _set_grad, [("value", target), ref], {}, None))
        elif kind == "requires_grad":
            if not self._computed(target):
                self._refuse("changes requires_grad of a tensor from outside the step; "
                             "freeze or unfreeze between calls")
        elif kind == "attribute":
            self._refuse(f"writes {type(target).__name__}.{value}; a replay would not write "
                         f"it again: change it between calls")
        elif kind == "random":
            self._refuse(f"makes {value} (a new layer's initialization?), which a replay "
                         f"would not draw again")
        elif kind == "data":
            self._refuse("assigns a tensor's .data; assign it between calls")
        else:
            self._refuse(f"assigns a tensor's .{kind} to a {type(value).__name__}, which is "
                         f"not recorded")

    def on_read(self, tensor, what):
        self._refuse(f"reads a tensor's value ({what})")

    def on_module_call(self, module):
        if id(module) not in self.modules:
            self.modules[id(module)] = (module, module.guard())

    def on_backward_start(self, outputs, grads, create_graph, capture):
        """One backward pass: the engine's plan of it, recorded before it runs (and frees the
        graph), with a Holder for each node's gradient; its seeds as the replay finds them."""
        if capture is not None or create_graph:
            self._refuse("uses grad() or create_graph=True, which is not recorded")
            return
        if self.refusal is not None:
            return
        for t in outputs:
            if not self._computed(t):
                self._refuse("runs backward from a graph built outside the step")
                return
        holders = {}

        def holder(t):
            h = holders.get(id(t))
            if h is None:
                if t.is_leaf:                   # a parameter stays itself; an argument, its place
                    position = self.argument_tensors.get(id(t))
                    h = t if position is None else Holder(t.shape, t.dtype, argument=position)
                    if position is None:
                        self._ref(t)            # guarded like any tensor from outside
                else:
                    h = Holder(t.shape, t.dtype)
                holders[id(t)] = h
            return h
        plan = []
        for op, node, inputs in backward_plan(list(outputs)):
            if op is None:
                plan.append((None, holder(node), None))
                continue
            if id(op) not in self.recorded_ops:
                self._refuse("runs backward into a graph built outside the step")
                return
            plan.append((op, holder(node), tuple(holder(t) if t.requires_grad else t
                                                 for t in inputs)))
        seeds = [("value", g) if self.slot_of.get(id(g)) is None else self._ref(g)
                 for g in grads]
        self.alive.append(plan)
        self.steps.append(("backward", plan, [holder(t) for t in outputs], seeds))

    # after the call ---------------------------------------------------------------------

    def finish(self, result):
        """What only shows once the step has returned: a tensor from outside whose
        requires_grad the step changed, and a result that still has its graph."""
        for t, _, _, requires_grad in self.captured.values():
            if t.requires_grad != requires_grad:
                self._refuse_late("changes requires_grad of a tensor from outside the step; "
                             "freeze or unfreeze between calls")
        for value in leaves(result if isinstance(result, tuple) else (result,)):
            if isinstance(value, Tensor) and value.op is not None:
                self._refuse_late("returns a tensor that still has its graph (no backward ran "
                             "through it in the step); a replay keeps no graph. Call "
                             "backward inside the step, return .detach(), or run it under "
                             "no_grad()")


class Watch:
    """Around the recording call, what a replay could not do again and no observer sees: a
    draw from NumPy's or Python's global random generator, and printing."""

    def __init__(self, recorder):
        self.recorder = recorder

    def __enter__(self):
        self.numpy_state, self.python_state = np.random.get_state(), random.getstate()
        self.stdout = sys.stdout
        sys.stdout = _Printing(self.stdout, self.recorder)
        return self

    def __exit__(self, *exc):
        sys.stdout = self.stdout
        state = np.random.get_state()
        if (state[2:] != self.numpy_state[2:] or
                not np.array_equal(state[1], self.numpy_state[1])):
            self.recorder._refuse_late("draws from NumPy's global random generator "
                                       "(np.random...), which a replay would not draw again; "
                                       "use Tensor.randn, rand or randint")
        if random.getstate() != self.python_state:
            self.recorder._refuse_late("draws from Python's random module, which a replay "
                                       "would not draw again; use Tensor.randn, rand or "
                                       "randint")
        return False


class _Printing:
    """sys.stdout while a step records: printing is passed on, and refused for replays."""

    def __init__(self, stream, recorder):
        self._stream, self._recorder = stream, recorder

    def write(self, text):
        self._recorder._refuse("prints, which a replay would not do again")
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _in_place(ufunc):
    def in_place(array, operand):
        ufunc(array, operand, out=array)
    return in_place


def _set_grad(tensor, value):
    tensor.grad = None if value is None else np.array(value, dtype=tensor.dtype)


# ---------------------------------------------------------------- what the function reads

_MISSING = object()
_PLAIN = (int, float, complex, str, bytes, bool, type(None))
_CODE_AND_CLASSES = (types.FunctionType, types.BuiltinFunctionType, types.MethodType,
                     types.ModuleType, type, functools.partial)


def environment_guard(fn):
    """A function that says whether what `fn` reads from outside its arguments is still what
    it was: the globals its code names, the variables of its closure, the instance of a bound
    method, and one level of attributes of plain objects among them (a namespace holding the
    model and the optimizer). Objects must be the same object; numbers and strings equal.
    Functions reached this way are looked into the same way (a step calling a helper)."""
    checks, seen = [], set()

    def watch(get, value, depth):
        checks.append((get, value))
        if (depth == 0 and hasattr(value, "__dict__") and not isinstance(value, _PLAIN)
                and not isinstance(value, _CODE_AND_CLASSES) and not _library(value)):
            attributes = vars(value)
            for name, item in list(attributes.items()):
                if not isinstance(item, _CODE_AND_CLASSES):
                    watch(functools.partial(attributes.get, name, _MISSING), item, 1)

    def look_into(function):
        function = getattr(function, "__func__", function)
        if not isinstance(function, types.FunctionType) or id(function) in seen:
            return
        seen.add(id(function))
        names = _names(function.__code__)
        globals_ = function.__globals__
        for name in sorted(names & globals_.keys()):
            value = globals_[name]
            if isinstance(value, types.FunctionType):
                look_into(value)
            elif not isinstance(value, _CODE_AND_CLASSES):
                watch(functools.partial(globals_.get, name, _MISSING), value, 0)
        for cell in function.__closure__ or ():
            try:
                value = cell.cell_contents
            except ValueError:                       # not yet assigned
                continue
            if isinstance(value, types.FunctionType):
                look_into(value)
            elif not isinstance(value, _CODE_AND_CLASSES):
                watch(functools.partial(getattr, cell, "cell_contents"), value, 0)

    target = fn
    if isinstance(fn, functools.partial):
        target = fn.func
        for value in fn.args:
            watch(lambda value=value: value, value, 0)
    if isinstance(target, types.MethodType):
        watch(lambda: target.__self__, target.__self__, 0)
    look_into(target)

    def holds():
        for get, value in checks:
            now = get()
            if now is not value and not (isinstance(value, _PLAIN) and type(now) is type(value)
                                         and now == value):
                return False
        return True
    return holds


@functools.lru_cache(maxsize=256)
def _names(code):
    """The global names a code object (and the functions and lambdas inside it) reads (not
    the attribute names, which co_names lists too)."""
    names = {i.argval for i in dis.get_instructions(code)
             if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return frozenset(names)


def _library(value):
    """A tensor, array, module, optimizer or scheduler: guarded by identity only (a module's
    own attributes are guarded when it is called; tensors are read at every replay)."""
    from ..nn import Module
    from ..optim import Optimizer
    from ..optim.lr_scheduler import LRScheduler
    from . import Jit
    return isinstance(value, (Tensor, np.ndarray, Module, Optimizer, LRScheduler, Jit))

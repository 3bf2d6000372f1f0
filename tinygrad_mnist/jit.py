"""jit: record a step once, then replay its NumPy work without building the graph again.

    @jit
    def step(x, y):
        optimizer.zero_grad()
        loss = nn.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

The first call with given argument shapes and dtypes runs eagerly while a recorder, an
observer of the engine (engine.Observer), writes down what happens: each op with its inputs
and options, each backward pass (as the engine's own plan of it), array work done on the
arguments outside ops (a copy, a conversion), and the effects outside the graph (an optimizer's
step, zero_grad, .grad assignments, in-place updates). That becomes a Program: a flat list of
steps over numbered array slots. A replay binds the new arguments to their slots, runs each
recorded op's own forward on new arrays, runs the engine's backward loop (graph.run_plan) over
the recorded plan, and calls the effects again: each op's math exists once, in its class.

What a replay cannot follow, it refuses: a step that reads a tensor's value (item(), bool(t),
numpy(), .data, .grad, ...) could branch on it, so it runs eagerly for those shapes, with a
warning naming the line. A replay assumes the same train/eval mode of every module called;
otherwise it records again.

Outputs of a replay are new tensors holding copies, without a graph.
"""
import collections
import functools
import gc
import warnings

import numpy as np

from .callsite import user_site
from .engine import (Observer, Tensor, backward_plan, is_grad_enabled, observe, observers,
                     run_plan)
from .engine.graph import Holder

CACHE_SIZE = 8          # recorded programs kept per jitted function (shapes seen lately)


class JitWarning(UserWarning):
    """A jitted step runs eagerly, because a replay could not reproduce it."""


def jit(fn=None, *, cache_size=CACHE_SIZE):
    """Decorate a step function taking Tensors, NumPy arrays, numbers and strings (numbers and
    strings are part of the cache key)."""
    if fn is None:
        return lambda f: Jit(f, cache_size)
    return Jit(fn, cache_size)


_EAGER = "eager"


class Jit:
    def __init__(self, fn, cache_size=CACHE_SIZE):
        functools.update_wrapper(self, fn)
        self.fn, self.cache_size = fn, cache_size
        self.programs = collections.OrderedDict()   # signature -> [Program or _EAGER]
        self.recordings = 0

    def __get__(self, instance, owner=None):
        """@jit on a method: the instance is one more argument (its identity is in the key)."""
        return self if instance is None else functools.partial(self, instance)

    def __call__(self, *args, **kwargs):
        if observers():
            # profiled, checked for anomalies, or inside an outer recording: eagerly, seen
            return self.fn(*args, **kwargs)
        key = (is_grad_enabled(), _signature(args, "argument"),
               _signature(tuple(kwargs.items()), "keyword argument") if kwargs else ())
        programs = self.programs.get(key)
        if programs is None:
            programs = self.programs[key] = []
            while len(self.programs) > self.cache_size:
                self.programs.popitem(last=False)
        else:
            self.programs.move_to_end(key)
        for program in programs:
            if program is _EAGER:
                return self.fn(*args, **kwargs)
            if program.applies():
                return program.run(args, kwargs)
        return self._record(programs, args, kwargs)

    def _record(self, programs, args, kwargs):
        recorder = _Recorder(args, kwargs)
        # the recorder keeps every object of the step alive until the program is compiled,
        # so the cyclic collector could only walk them again and again: it is paused (as
        # backward pauses it), and finds any garbage of the step once recording ends
        collecting = gc.isenabled()
        gc.disable()
        try:
            with observe(recorder):
                result = self.fn(*args, **kwargs)
            self.recordings += 1
            if recorder.refusal is None:
                programs.append(Program(recorder, result))
        finally:
            if collecting:
                gc.enable()
        if recorder.refusal is not None:
            what, site = recorder.refusal
            warnings.warn(f"jit: {getattr(self.fn, '__name__', 'the step')} {what} at {site}; "
                          f"a replay could not follow that, so it runs eagerly for these "
                          f"argument shapes. Return the tensor and read it outside the jitted "
                          f"function to replay the step.", JitWarning, stacklevel=3)
            programs.append(_EAGER)
        return result


def _signature(values, what):
    """What a recorded program depends on in the arguments: shapes and dtypes of arrays,
    values of numbers and strings, identity of other objects (a model, an optimizer)."""
    if what == "argument" and all(type(v) is np.ndarray for v in values):
        return tuple([(v.shape, v.dtype.str) for v in values])      # the common case, fast
    out = []
    for i, value in enumerate(values):
        name = value[0] if what == "keyword argument" else i
        value = value[1] if what == "keyword argument" else value
        if isinstance(value, Tensor):
            out.append(("T", value.shape, value.dtype.str, value.requires_grad))
        elif isinstance(value, np.ndarray):
            out.append((value.shape, value.dtype.str))
        elif isinstance(value, tuple):
            out.append(("tuple", _signature(value, what)))
        elif isinstance(value, (list, dict, set)):
            raise TypeError(f"jit: {what} {name} is a {type(value).__name__}; pass Tensors, "
                            f"NumPy arrays, tuples, numbers or strings")
        else:
            try:
                hash(value)
            except TypeError:
                raise TypeError(f"jit: {what} {name} is an unhashable "
                                f"{type(value).__name__}") from None
            out.append(("V", type(value), value))
    return tuple(out)


def _leaves(values):
    """The Tensors and arrays among (nested tuples of) arguments, in order."""
    for value in values:
        if isinstance(value, tuple):
            yield from _leaves(value)
        elif isinstance(value, (Tensor, np.ndarray)):
            yield value


# ---------------------------------------------------------------- recording

class _Recorder(Observer):
    """Listens to the engine during the first call and numbers every array it sees: the
    arguments' arrays and what ops and array work produce get slots (replayed); any other
    array is a constant, and a tensor from outside the step (a parameter) is read again at
    every replay, so that it follows updates."""

    def __init__(self, args, kwargs):
        self.refusal = None            # (what, where) once the step did something unreplayable
        self.slot_of = {}              # id(array) -> slot
        self.alive = []                # keeps recorded objects alive, so ids stay unique
        self.constants = []            # slot -> constant array, or None for a computed one
        self.steps = []
        self.guards = {}               # id(module) -> (module, training)
        self.captured = {}             # id(tensor) -> (tensor, shape, dtype): from outside
        self.recorded_ops = set()      # ids of the ops run in the step
        self.arguments = list(_leaves(args + tuple(kwargs.values())))
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
            self.captured.setdefault(id(value), (value, value.shape, value.dtype))
            return ("tensor", value)
        if isinstance(value, tuple) and any(isinstance(v, np.ndarray) for v in value):
            return ("tuple", tuple(self._ref(v) for v in value))
        return ("value", value)

    def _refuse(self, what):
        if self.refusal is None:
            self.refusal = (what, user_site())

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
        if kind == "call":                      # an optimizer's step, zero_grad: called again
            obj, args, kwargs = value
            self.steps.append(("call", target, [("value", obj)] + [("value", a) for a in args],
                               kwargs, None))
        elif kind == "in_place":                # t += v under no_grad: done again
            ufunc, operand = value
            self.steps.append(("call", lambda a, v, ufunc=ufunc: ufunc(a, v, out=a),
                               [self._ref(target), self._ref(operand)], {}, None))
        elif kind == "grad" and value is None:  # p.grad = None (set to none)
            self.steps.append(("call", _clear_grad, [("value", target)], {}, None))
        else:
            self._refuse(f"assigns {target!r}.{kind}, which is not recorded")

    def on_read(self, tensor, what):
        self._refuse(f"reads a tensor's value ({what})")

    def on_module_call(self, module):
        self.guards.setdefault(id(module), (module, module.training))

    def on_backward_start(self, outputs, grads, create_graph, capture):
        """One backward pass: the engine's plan of it, recorded before it runs (and frees the
        graph), with a Holder for each node's gradient; its seeds as the replay finds them."""
        if capture is not None or create_graph:
            self._refuse("uses grad() or create_graph=True, which is not recorded")
            return
        if self.refusal is not None:
            return
        for t in outputs:
            if not self._known(t):
                self._refuse("runs backward from a graph built outside the step")
                return
        holders = {}

        def holder(t):
            h = holders.get(id(t))
            if h is None:
                if t.is_leaf:                   # a parameter stays itself; an argument, its place
                    position = self.argument_tensors.get(id(t))
                    h = t if position is None else Holder(t.shape, t.dtype, argument=position)
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

    def _known(self, t):
        return id(t.data) in self.slot_of


def _clear_grad(tensor):
    tensor.grad = None


# ---------------------------------------------------------------- replaying

class _Buffers(dict):
    """An op's buffers in a jit program; a new array tells the program to recount them."""
    __slots__ = ("program",)

    def __init__(self, program):
        super().__init__()
        self.program = program

    def __setitem__(self, name, array):
        super().__setitem__(name, array)
        self.program._buffer_ids = None


class Program:
    """The recorded step as flat Python closures over a list of array slots."""

    def __init__(self, recorder, result):
        self.slots = list(recorder.constants)
        self.argument_slots = recorder.argument_slots
        self.guards = list(recorder.guards.values())
        self.captured = list(recorder.captured.values())
        self.ops = [step[1] for step in recorder.steps if step[0] == "op"]
        self._buffer_ids = None
        for op in self.ops:            # results written into arrays allocated once, where
            try:                           # the op asks for them (see Op.buffer)
                op.buffers = _Buffers(self)
            except AttributeError:         # an op without a buffers slot
                pass
        self.captured_slot, self.loads = {}, []     # tensors from outside the step: slots
        self.steps = [self._compile(step) for step in recorder.steps]
        self.output = self._template(result, recorder.slot_of)
        self.arguments = None
        self.flat = recorder.flat          # arguments are all Tensors and arrays: no walk

    def applies(self):
        """The modules are in the mode they were recorded in, and every tensor from outside
        the step still has its shape and dtype."""
        return (all(m.training == training for m, training in self.guards) and
                all(t.shape == shape and t.dtype == dtype for t, shape, dtype in self.captured))

    def run(self, args, kwargs):
        slots = self.slots
        self.arguments = arguments = (args if self.flat and not kwargs else
                                      list(_leaves(args + tuple(kwargs.values()))))
        for slot, value in zip(self.argument_slots, arguments):
            slots[slot] = value.data if type(value) is Tensor else value
        self._load_captured()
        for step in self.steps:
            step()
        return self._build(self.output)

    # compiling each recorded step ----------------------------------------------------

    def _compile(self, step):
        kind = step[0]
        if kind == "op":
            return self._compile_op(*step[1:])
        if kind == "call":
            return self._compile_call(*step[1:])
        return self._compile_backward(*step[1:])

    def _resolver(self, ref):
        kind, value = ref
        slots = self.slots
        if kind == "slot":
            return lambda: slots[value]
        if kind == "tensor":
            return lambda: value.data
        if kind == "tuple":
            parts = [self._resolver(r) for r in value]
            return lambda: tuple(p() for p in parts)
        return lambda: value

    def _compile_op(self, op, inputs, options, out_slot):
        """The recorded op object runs its own forward on the new arrays (saving what its
        backward needs, for the backward steps that follow)."""
        slots = self.slots
        forward, asarray, ndarray = op.forward, np.asarray, np.ndarray
        inputs = [self._slotted(ref) for ref in inputs]
        options = {k: self._slotted(ref) for k, ref in options.items()}
        static = {k: v for k, (kind, v) in options.items() if kind == "value"}
        dynamic = [(k, self._resolver(ref)) for k, ref in options.items() if ref[0] != "value"]
        if all(ref[0] == "slot" for ref in inputs) and not dynamic:
            in_slots = [ref[1] for ref in inputs]
            if len(in_slots) == 2 and not options:
                a, b = in_slots

                def run():               # the commonest op of a scalar graph, without layers
                    out = forward(slots[a], slots[b])
                    slots[out_slot] = out if type(out) is ndarray else asarray(out)
            elif len(in_slots) == 1:
                (a,) = in_slots

                def run():
                    out = forward(slots[a], **static)
                    slots[out_slot] = out if type(out) is ndarray else asarray(out)
            else:
                def run():
                    out = forward(*[slots[i] for i in in_slots], **static)
                    slots[out_slot] = out if type(out) is ndarray else asarray(out)
            return run
        arrays = [self._resolver(ref) for ref in inputs]

        def run():
            opts = dict(static)
            for name, resolve in dynamic:
                opts[name] = resolve()
            out = forward(*[r() for r in arrays], **opts)
            slots[out_slot] = out if type(out) is ndarray else asarray(out)
        return run

    def _slotted(self, ref):
        """A tensor from outside the step as the slot its array is loaded into."""
        if ref[0] != "tensor":
            return ref
        tensor = ref[1]
        slot = self.captured_slot.get(id(tensor))
        if slot is None:
            slot = self.captured_slot[id(tensor)] = len(self.slots)
            self.slots.append(None)
            self.loads.append((slot, tensor))
        return ("slot", slot)

    def _load_captured(self):
        """Every tensor from outside the step into its slot: at the start of a replay, and
        after each call (which may assign a tensor a new array)."""
        slots = self.slots
        for slot, tensor in self.loads:
            slots[slot] = tensor.data

    def _compile_call(self, function, refs, kwargs, out_slot):
        slots, load = self.slots, self._load_captured
        resolvers = [self._resolver(ref) for ref in refs]
        if out_slot is None:
            def run():
                function(*[r() for r in resolvers], **kwargs)
                load()
            return run

        def run():
            slots[out_slot] = function(*[r() for r in resolvers], **kwargs)
        return run

    def _compile_backward(self, plan, roots, seeds):
        """The engine's own backward loop over the recorded plan: the ops saved the new
        forward's arrays, and gradients accumulate into the parameters and the arguments."""
        program = self
        resolvers = [self._resolver(ref) for ref in seeds]
        constant = [ref[0] == "value" for ref in seeds]
        parameters = [node for op, node, _ in plan if op is None and type(node) is not Holder]

        def run():
            # a parameter whose .grad is still a buffer (not zeroed since the last replay)
            # keeps its sum: a copy, before this replay writes the buffer again
            buffers = program.buffer_ids()
            for p in parameters:
                g = p.grad
                if g is not None and id(g) in buffers:
                    p.grad = g.copy()
            seeds_now = [r().copy() if c else r() for r, c in zip(resolvers, constant)]
            run_plan(plan, roots, seeds_now, leaves=program.arguments, release=False)
        return run

    def buffer_ids(self):
        """The ids of every op's buffers, recomputed only after a buffer was (re)allocated."""
        if self._buffer_ids is None:
            self._buffer_ids = {id(a) for op in self.ops
                                for a in getattr(op, "buffers", {}).values()}
        return self._buffer_ids

    # outputs -------------------------------------------------------------------------

    def _template(self, value, slot_of):
        if isinstance(value, Tensor):
            slot = slot_of.get(id(value.data))
            if slot is not None and self.slots[slot] is None:
                return ("tensor", slot)
            return ("same", value)
        if isinstance(value, (tuple, list)):
            return (type(value).__name__, [self._template(v, slot_of) for v in value])
        if isinstance(value, dict):
            return ("dict", {k: self._template(v, slot_of) for k, v in value.items()})
        return ("same", value)

    def _build(self, template):
        kind, value = template
        if kind == "tensor":
            return Tensor.from_numpy(np.array(self.slots[value]))
        if kind == "same":
            return value
        if kind == "dict":
            return {k: self._build(v) for k, v in value.items()}
        items = [self._build(v) for v in value]
        return tuple(items) if kind == "tuple" else items

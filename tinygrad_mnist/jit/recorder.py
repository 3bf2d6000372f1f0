"""The recording call: an observer that writes down what the step does, and refuses what a
replay could not do again."""
import numpy as np

from ..callsite import user_site
from ..engine import Observer, Tensor, backward_plan
from .guards import module_guard


def leaves(values):
    """The Tensors and arrays among (nested tuples of) arguments, in order."""
    for value in values:
        if isinstance(value, tuple):
            yield from leaves(value)
        elif isinstance(value, (Tensor, np.ndarray)):
            yield value


def slots_read(step):
    """The slots a recorded step reads (with repeats)."""
    kind = step[0]
    refs = (list(step[2]) + list(step[3].values()) if kind == "op" else
            step[2] if kind == "call" else step[3])
    stack = list(refs)
    while stack:
        kind, value = stack.pop()
        if kind == "slot":
            yield value
        elif kind == "tuple":
            stack.extend(value)


class Holder:
    """Where a replay of a backward pass gathers one node's gradient: what the node's tensor
    is to an eager backward (`_pending`, its shape through `_data`), for the engine's own
    backward loop (graph.run_plan). With `argument`, a leaf standing for the replay's
    argument at that position: its gradient goes to `target`, that argument's tensor."""
    __slots__ = ("_pending", "_data", "_ctx", "requires_grad", "argument", "target")

    def __init__(self, shape, dtype, argument=None):
        self._pending, self.requires_grad, self.argument = None, True, argument
        self._ctx = None if argument is not None else False     # a leaf, or made by an op
        self._data = np.broadcast_to(np.zeros((), dtype), shape)     # the shape, no memory
        self.target = None

    def _accumulate(self, g, owned):
        self.target._accumulate(g, owned)


class Recorder(Observer):
    """Listens to the engine during the first call and numbers every array it sees: the
    arguments' arrays and what ops and array work produce get slots (replayed); any other
    array is a constant, and a tensor from outside the step (a parameter) is read again at
    every replay, so that it follows updates. Steps are ("op", op, inputs, options, slot),
    ("call", function, arguments, kwargs, slot or None) and ("backward", plan, roots, seeds).
    While an effect call runs (watch.py), its events are its own: none is recorded."""

    def __init__(self, args, kwargs):
        self.refusal = None            # (what, where) once the step did something unreplayable
        self.inside_effect = False     # an effect call (an optimizer's step) is running
        self.slot_of = {}              # id(array) -> slot
        self.alive = []                # keeps recorded objects alive, so ids stay unique
        self.constants = []            # slot -> constant array, or None for a computed one
        self.seen = []                 # slot -> the array it held in the recording call
        self.steps = []
        self.modules = {}              # id(module) -> (module, its guard), in call order
        self.captured = {}             # id(tensor) -> (tensor, shape, dtype, requires_grad)
        self.recorded_ops = set()      # ids of the ops run in the step
        self.made_here = {}            # id(tensor) -> (tensor, step index) made in the step
        self.remade = set()            # ids of those the replay makes again
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
        self.seen.append(array)
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
            if id(value) not in self.remade:       # one the replay makes is its own
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

    def refuse(self, what):
        if self.refusal is None:
            self.refusal = (what, user_site())

    def refuse_late(self, what):
        """A refusal found after the call, which names no line in it."""
        if self.refusal is None:
            self.refusal = (what, None)

    # the engine's events -----------------------------------------------------------------

    def on_op(self, op, inputs, output):
        if self.inside_effect:
            return
        options = op.options
        index = options.get("index") if options else None
        if any(isinstance(i, np.ndarray) and i.dtype == bool and id(i) in self.slot_of
               for i in (index if isinstance(index, tuple) else (index,))):
            self.refuse("uses a boolean mask computed in the step, whose result's shape "
                         "depends on the values, which is not recorded")
        refs = {k: self._ref(v) for k, v in options.items()} if options else {}
        self.alive.append(output)
        self.recorded_ops.add(id(op))
        self.steps.append(("op", op, [self._ref(t) for t in inputs], refs,
                           self._new_slot(output.data)))

    def on_new_tensor(self, tensor):
        if not self.inside_effect:
            self.made_here[id(tensor)] = (tensor, len(self.steps))
            self.alive.append(tensor)

    def _remake(self, target):
        """A tensor made in the step (Tensor.zeros(3)) and then changed in place: each replay
        starts it again from the value it was made with, where the step made it, as a call
        would make it anew (else the replay would keep changing one tensor)."""
        made = self.made_here.get(id(target))
        if made is None or id(target) in self.remade:
            return made is not None
        tensor, index = made
        initial, requires_grad = tensor.data.copy(), tensor.requires_grad
        self.remade.add(id(target))
        self.captured.pop(id(target), None)
        self.steps.insert(index, ("call", _restore, [("value", tensor), ("value", initial),
                                                     ("value", requires_grad)], {}, None))
        return True

    def on_array(self, function, arrays, result):
        """Array work outside ops: replayed when it reads an array the step computes or
        receives; a constant otherwise."""
        if self.inside_effect or id(result) in self.slot_of or not any(
                isinstance(a, np.ndarray) and id(a) in self.slot_of for a in arrays):
            return
        self.steps.append(("call", function, [self._ref(a) for a in arrays], {},
                           self._new_slot(result)))

    def effect_call(self, function, args):
        """A library call whose effects live outside the graph (an optimizer's or a
        scheduler's step, zero_grad, manual_seed), seen by the watch: called again."""
        self.inside_effect = True           # what this looks at is no read of the step's
        if any(self._computed(a) for a in args):
            self.refuse(f"passes a value computed in the step to {function.__qualname__}(), "
                        f"which is not recorded")
        self.steps.append(("call", function, [("value", a) for a in args], {}, None))

    def module_called(self, module):
        """A module called in the step: guarded before every replay."""
        if id(module) not in self.modules:
            self.modules[id(module)] = (module, module_guard(module))

    def on_effect(self, kind, target, value):
        if self.inside_effect:
            return
        if kind in ("in_place_snapshot", "in_place") and not self._computed(target):
            self._remake(target)
        if kind == "in_place_result":  # t += v as an op: its result copied into t's array
            self.steps.append(("call", np.copyto, [self._ref(target), self._ref(value)], {},
                               None))
            return
        if kind == "in_place_snapshot":   # t's value until now: copied again in the replay
            if not self._computed(value):    # (from t's array, which no op made)
                self.steps.append(("call", np.copy, [self._ref(target)], {},
                                   self._new_slot(value._data)))
            return
        if kind == "in_place":        # t += v under no_grad: done again
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
            if not self._computed(target) and not self._remake(target):
                self.refuse("changes requires_grad of a tensor from outside the step; "
                             "freeze or unfreeze between calls")
        elif kind == "random":
            self.refuse(f"makes {value} (a new layer's initialization?), which a replay "
                         f"would not draw again")
        elif kind == "data":
            self.refuse("assigns a tensor's .data; assign it between calls")
        else:
            self.refuse(f"assigns a tensor's .{kind} to a {type(value).__name__}, which is "
                         f"not recorded")

    def on_read(self, tensor, what):
        if not self.inside_effect:
            self.refuse(f"reads a tensor's value ({what})")

    def on_backward_start(self, outputs, grads, create_graph, capture):
        """One backward pass: the engine's plan of it, recorded before it runs (and frees the
        graph), with a Holder for each node's gradient; its seeds as the replay finds them."""
        if self.inside_effect:
            return
        if self.refusal is not None:
            return
        for t in outputs:
            if not self._computed(t):
                self.refuse("runs backward from a graph built outside the step")
                return
        if capture is not None and create_graph:
            # grad(create_graph=True), as the func transforms run under the jit: its
            # gradients are computed by ops, recorded as they run
            for op, _, _ in backward_plan(list(outputs)):
                if op is not None and id(op) not in self.recorded_ops:
                    self.refuse("runs grad() into a graph built outside the step")
            return
        if capture is not None or create_graph:
            self.refuse("uses grad() without create_graph, or backward(create_graph=True), "
                        "which is not recorded")
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
                self.refuse("runs backward into a graph built outside the step")
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
            if t.requires_grad != requires_grad and id(t) not in self.remade:
                self.refuse_late("changes requires_grad of a tensor from outside the step; "
                             "freeze or unfreeze between calls")
        for value in leaves(result if isinstance(result, tuple) else (result,)):
            if isinstance(value, Tensor) and value.op is not None:
                self.refuse_late("returns a tensor that still has its graph (no backward ran "
                             "through it in the step); a replay keeps no graph. Call "
                             "backward inside the step, return .detach(), or run it under "
                             "no_grad()")


def _restore(tensor, initial, requires_grad):
    """A tensor made in the step, made again: its first value, and its requires_grad."""
    np.copyto(tensor._data, initial)
    tensor._ctx = None
    tensor.requires_grad = requires_grad


def _in_place(ufunc):
    def in_place(array, operand):
        ufunc(array, operand, out=array)
    return in_place


def _set_grad(tensor, value):
    tensor.grad = None if value is None else np.array(value, dtype=tensor.dtype)



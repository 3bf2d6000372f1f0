"""A recorded step as a Program: flat Python closures over a list of array slots, replayed
with the ops' own forward and the engine's own backward loop."""
import types

import numpy as np

from ..engine import Tensor, freed_output, run_plan
from . import fusion
from .recorder import Holder, leaves, slots_read

RELEASE_BYTES = 65536    # arrays at least this large are let go after their last read


def _slots_in(template):
    """The slots an output template reads."""
    kind, value = template
    if kind in ("tensor", "freed"):
        yield value
    elif kind == "dict":
        for v in value.values():
            yield from _slots_in(v)
    elif kind in ("tuple", "list"):
        for v in value:
            yield from _slots_in(v)


def _has_state(obj):
    """An object whose attributes a replayed call may change (not a tensor, an array, a
    number or a class)."""
    return hasattr(obj, "__dict__") and not isinstance(obj, (
        Tensor, np.ndarray, type, types.FunctionType, types.MethodType, types.ModuleType))


class Program:
    """One recording of a step, and its guards: what must still hold for a replay."""

    def __init__(self, recorder, result, environment):
        self.environment = environment      # what the function reads besides its arguments
        self.slots = list(recorder.constants)
        self.argument_slots = recorder.argument_slots
        self.modules = [module for module, _ in recorder.modules.values()]
        self.module_guards = [guard for _, guard in recorder.modules.values()]
        self.called = list({id(step[2][0][1]): step[2][0][1] for step in recorder.steps
                            if step[0] == "call" and step[2] and step[2][0][0] == "value"
                            and _has_state(step[2][0][1])}.values())
        self.captured = [(t, t.data, requires_grad)
                         for t, _, _, requires_grad in recorder.captured.values()]
        self.captured_slot, self.loads = {}, []     # tensors from outside the step: slots
        self.plans = [step[1] for step in recorder.steps if step[0] == "backward"]
        # ops a backward runs through: what their forward saves is read by the backward
        self.in_backward = {id(op) for plan in self.plans for op, _, _ in plan if op is not None}
        self.output = self._template(result, recorder.slot_of)
        self.fused = fusion.chains(recorder, list(_slots_in(self.output)), self.in_backward)
        in_chain = {index: chain for chain in self.fused for index in chain}
        self.buffers = {}                  # a fused chain's first step -> the chain's array
        for chain in self.fused:
            seen = recorder.seen[recorder.steps[chain[-1]][4]]
            self.buffers[chain[0]] = np.empty(seen.shape, seen.dtype)
        self.steps = [self._compile_fused(step, index, in_chain[index], recorder)
                      if index in in_chain else self._compile(step)
                      for index, step in enumerate(recorder.steps)]
        self._release_after_last_read(recorder)
        self.arguments = None
        self.flat = recorder.flat          # arguments are all Tensors and arrays: no walk

    def applies(self):
        """Every module called is as it was (mode, attributes, parameters, sub-modules), and
        every tensor from outside the step still has its requires_grad, dtype and shape, and
        the globals and closure variables the function reads are the same."""
        if not self.environment():
            return False
        for holds in self.module_guards:
            if not holds():
                return False
        captured = self.captured
        for k, (t, array, requires_grad) in enumerate(captured):
            if t.requires_grad != requires_grad:
                return False
            now = t.data
            if now is not array:           # a new array (p.data = ...): its dtype and shape?
                if now.dtype != array.dtype or now.shape != array.shape:
                    return False
                captured[k] = (t, now, requires_grad)
        return True

    def tensors(self):
        """The tensors from outside the step that the replay reads or changes."""
        return [t for t, _, _ in self.captured]

    def called_objects(self):
        """The objects whose methods the step calls (an optimizer, a scheduler, a module)."""
        return list(self.called)

    def names(self):
        """id(tensor) -> its name on the modules the step called (the outermost first)."""
        names = {}
        for module in self.modules:
            for name, t in module.named_parameters():
                names.setdefault(id(t), name)
        return names

    def run(self, args, kwargs):
        slots = self.slots
        self.arguments = arguments = (args if self.flat and not kwargs else
                                      list(leaves(args + tuple(kwargs.values()))))
        for slot, value in zip(self.argument_slots, arguments):
            slots[slot] = value.data if type(value) is Tensor else value
        self._load_captured()
        for step in self.steps:
            step()
        return self._build(self.output)

    # compiling each recorded step ----------------------------------------------------

    def _release_after_last_read(self, recorder):
        """A large array the step computed is let go after the last step that reads it, as
        eager execution lets it go: kept until the next replay, every intermediate would
        stay allocated between calls, and the next call's arrays would be new memory (page
        faults, a cold cache) instead of memory just freed."""
        outputs = set(_slots_in(self.output))
        last = {}
        for index, step in enumerate(recorder.steps):
            for slot in slots_read(step):
                last[slot] = index
            made = step[4] if step[0] != "backward" else None
            if made is not None:
                last.setdefault(made, index)         # made and never read: let go at once
        release = {}
        for slot, index in last.items():
            array = recorder.seen[slot] if slot < len(recorder.seen) else None
            if (array is not None and array.nbytes >= RELEASE_BYTES and slot not in outputs
                    and self.slots[slot] is None):
                release.setdefault(index, []).append(slot)
        slots = self.slots
        for index, freed in release.items():
            run = self.steps[index]

            def run_then_release(run=run, freed=tuple(freed)):
                run()
                for slot in freed:
                    slots[slot] = None
            self.steps[index] = run_then_release

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
        backward needs, for the backward steps that follow). An op no backward runs through
        is made anew each time and dropped at once, as eager drops it (the recorded one would
        hold what it saved from one call to the next)."""
        slots = self.slots
        asarray, ndarray = np.asarray, np.ndarray
        if id(op) in self.in_backward:
            forward = op.forward
        else:
            make, unbound = type(op), type(op).forward

            def forward(*arrays, **options):
                return unbound(make(), *arrays, **options)
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

    def _compile_fused(self, step, index, chain, recorder):
        """One op of a fused chain (fusion.py): its result written into the chain's array,
        over the result of the op before it; the last op's result is the chain's array."""
        _, op, inputs, options, out_slot = step
        position, last = chain.index(index), recorder.steps[chain[-1]][4]
        buffer = self.buffers[chain[0]]
        before = recorder.steps[chain[position - 1]][4] if position else None
        into, slots = type(op).forward_into, self.slots
        arrays = [(lambda: buffer) if ref == ("slot", before) else
                  self._resolver(self._slotted(ref)) for ref in inputs]
        static = {k: v for k, (_, v) in options.items()}
        if len(arrays) == 1 and not static:
            (a,) = arrays

            def run():
                into(buffer, a())
        elif len(arrays) == 2 and not static:
            a, b = arrays

            def run():
                into(buffer, a(), b())
        else:
            def run():
                into(buffer, *[r() for r in arrays], **static)
        if out_slot != last:
            return run

        def run_last():
            run()
            slots[out_slot] = buffer
        return run_last

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
        arguments = [node for op, node, _ in plan
                     if op is None and type(node) is Holder and node.argument is not None]
        def run():
            for holder in arguments:           # this call's argument tensors take theirs
                holder.target = program.arguments[holder.argument]
            seeds_now = [r().copy() if c else r() for r, c in zip(resolvers, constant)]
            run_plan(plan, roots, seeds_now)
        return run

    # outputs -------------------------------------------------------------------------

    def _template(self, value, slot_of):
        if isinstance(value, Tensor):
            slot = slot_of.get(id(value.data))
            if slot is not None and self.slots[slot] is None:
                return ("freed" if value.graph_freed else "tensor", slot)
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
        if kind == "freed":               # a loss backward ran through: as eager leaves it
            return freed_output(np.array(self.slots[value]))
        if kind == "same":
            return value
        if kind == "dict":
            return {k: self._build(v) for k, v in value.items()}
        items = [self._build(v) for v in value]
        return tuple(items) if kind == "tuple" else items

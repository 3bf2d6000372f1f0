"""jit: record a step once, then replay its NumPy work without building the graph again.

    @jit
    def step(x, y):
        optimizer.zero_grad()
        loss = nn.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

The first call with given arguments runs eagerly while a recorder, an observer of the engine
(engine.Observer), writes down what happens: each op with its inputs and options, each
backward pass (the engine's own plan of it), array work on the arguments outside ops, and
tensors changed outside the graph. What the engine does not see, the jit watches itself
(watch.py): the library calls whose effects live outside the graph (an optimizer's or a
scheduler's step, zero_grad, manual_seed), the modules called, attribute writes and printing.
Nothing in nn, optim or the ops knows the jit. That becomes a Program (program.py): a flat
list of steps over numbered array slots. A replay binds the new arguments to their slots,
runs each recorded op's own forward, the engine's own backward loop (graph.run_plan) over the
recorded plan, and the effects again: each op's math exists once, in its class.

    recorder.py   the observer that records, and what it refuses
    watch.py      effect calls, module calls, attribute writes, printing, global generators
    guards.py     what must still hold for a replay: the environment, each module
    program.py    a recording as flat steps, and its replay
    fusion.py     chains of elementwise ops run in one preallocated array
    check.py      check=True: each replay against eager execution

The guarantee: a replay gives what eager execution of the same call would give, or the call is
not replayed. Everything a replay depends on is an argument, is guarded, or is refused.

Guarded (checked before every replay; a failed guard records again):
- each argument's shape and dtype, a Tensor argument's requires_grad, and which arguments are
  the same object (or the same array) as which others;
- the values of the step's Python-number and string arguments (and the identity of other
  objects passed: a model, an optimizer);
- what the step reads from outside its arguments (guards.py): the globals its code names,
  its closure's variables, a bound method's instance, and through them the attributes of
  plain objects and the items of dicts, lists and tuples at any depth. Numbers and strings
  must be equal, other objects the same object: a global learning rate and an item of a
  global dict are followed alike (a change records again). A step that reads more than
  guards.MAX_CHECKS such values is refused;
- whether gradients are being recorded (no_grad);
- each module the step calls: its train/eval mode and every attribute (hyperparameters such as
  Dropout's p, parameters, sub-modules, the items of its lists and dicts) the same object, so a
  parameter or a layer replaced is followed;
- each tensor from outside the step that it uses (a parameter): its requires_grad (a frozen or
  unfrozen layer), dtype and shape. Its values are read afresh at every replay: `p.data = ...`,
  in-place changes and load_state_dict between calls are followed.

Replayed (done again at every replay, as eager would): zero_grad, an optimizer's step, a
scheduler's step, manual_seed, `t.grad = None` or an array (a copy each time), in-place updates
under no_grad (`t += v`), and random draws: Tensor.randn, rand, randint and Dropout draw inside
their ops, from the generator as it is at the replay.

Refused (the recording call is the step's eager result; it warns with a JitWarning naming the
file and line, records once more at the next call, and if that is refused too, runs eagerly
for those arguments from then on):
- reading a value in any form: .data, .grad, item(), tolist(), numpy(), float(t), int(t),
  bool(t), np.asarray(t), printing a tensor;
- changing an attribute of a module, an optimizer, a parameter group or a scheduler (opt.lr =
  ..., model.eval()) or a tensor's .data or requires_grad, inside the step (a write that
  leaves the value as it was changes nothing and is not refused);
- a random draw outside an op (a layer created in the step), or from NumPy's or Python's global
  generators; printing;
- grad() or create_graph=True; a boolean mask computed in the step; backward through a graph
  built outside the step; returning a tensor that still has its graph.

Not seen, as in JAX: other Python side effects of the user's own (appending to a list, a
counter) run only when the step records. Names the step reads from other Python modules
(`config.LR` after `import config`) are not followed: pass them as arguments.

The cache is bounded: at most `cache_size` argument signatures per jitted function (least
recently used dropped first), at most VARIANTS recordings per signature (guards that failed),
and a step that records again on RECORD_LIMIT calls in a row without a replay runs eagerly from
then on, with a JitWarning: no recording is kept per call.

jit(fn, check=True) runs every replayed call eagerly as well (check.py) and raises
JitMismatchError naming the first tensor, gradient or state that differs.

Outputs: a replay returns new tensors holding copies, without a graph; a loss that backward ran
through comes back as eager leaves it (requires_grad, its graph freed).

Memory, as eager: a replay lets each large array go after the last step that reads it, and an
op no backward runs through is made anew and dropped, so nothing of one call is held until the
next. Chains of elementwise ops that no backward runs through (evaluation, values under
no_grad) and whose intermediates nothing else reads are fused (fusion.py): each op writes into
the chain's one preallocated array, bit for bit what eager computes.
"""
import collections
import functools
import gc
import warnings

import numpy as np

from ..engine import Tensor, is_grad_enabled, observe, observers
from ..nn import Module
from ..optim import Optimizer
from ..optim.lr_scheduler import LRScheduler
from .check import JitMismatchError, Snapshot, compare
from .guards import TooMuchState, environment_guard
from .program import Program
from .recorder import Recorder, leaves
from .watch import Watch

CACHE_SIZE = 8          # argument signatures kept per jitted function (shapes seen lately)
VARIANTS = 4            # recordings kept per signature (after guards that failed)
RECORD_LIMIT = 16       # recordings in a row without a replay: the step runs eagerly
RETRIES = 1             # refused recordings tried again (a layer built on the first call)

__all__ = ["jit", "Jit", "JitWarning", "JitMismatchError"]


class JitWarning(UserWarning):
    """A jitted step runs eagerly, because a replay could not reproduce it."""


def jit(fn=None, *, cache_size=CACHE_SIZE, check=False):
    """Decorate a step function taking Tensors, NumPy arrays, numbers and strings (numbers and
    strings are part of the cache key). check=True: every replay is compared with eager
    execution of the same call (JitMismatchError on a difference)."""
    if fn is None:
        return lambda f: Jit(f, cache_size, check)
    return Jit(fn, cache_size, check)


class _Entry:
    """What one argument signature has: its recordings, and how many were refused."""
    __slots__ = ("programs", "refused")

    def __init__(self):
        self.programs, self.refused = [], 0


class Jit:
    def __init__(self, fn, cache_size=CACHE_SIZE, check=False):
        functools.update_wrapper(self, fn)
        self.fn, self.cache_size, self.check = fn, cache_size, check
        self.programs = collections.OrderedDict()   # signature -> _Entry
        self.recordings = 0
        self.replays = 0
        self.recorded_in_a_row = 0
        self.eager = False             # True once it recorded on every call for a while

    def __get__(self, instance, owner=None):
        """@jit on a method: the instance is one more argument (its identity is in the key)."""
        return self if instance is None else functools.partial(self, instance)

    def __call__(self, *args, **kwargs):
        if self.eager or observers():
            # profiled, checked for anomalies, or inside an outer recording: eagerly, seen
            return self.fn(*args, **kwargs)
        key = (is_grad_enabled(), _signature(args, "argument"),
               _signature(tuple(kwargs.items()), "keyword argument") if kwargs else ())
        entry = self.programs.get(key)
        if entry is None:
            entry = self.programs[key] = _Entry()
            while len(self.programs) > self.cache_size:
                self.programs.popitem(last=False)
        else:
            self.programs.move_to_end(key)
        for program in entry.programs:
            if program.applies():
                self.recorded_in_a_row = 0
                self.replays += 1
                if self.check:
                    return self._checked(program, args, kwargs)
                return program.run(args, kwargs)
        if entry.refused > RETRIES:
            return self.fn(*args, **kwargs)
        self.recorded_in_a_row += 1
        if self.recorded_in_a_row > RECORD_LIMIT:
            self.eager = True
            warnings.warn(f"jit: {self._name()} was recorded again on each of its last "
                          f"{RECORD_LIMIT} calls (a number among its arguments, or a guarded "
                          f"module or tensor, changes every time), so it runs eagerly from now "
                          f"on", JitWarning, stacklevel=2)
            return self.fn(*args, **kwargs)
        return self._record(entry, args, kwargs)

    def _name(self):
        return getattr(self.fn, "__name__", "the step")

    def _record(self, entry, args, kwargs):
        recorder = Recorder(args, kwargs)
        library = (Tensor, np.ndarray, Module, Optimizer, LRScheduler, Jit)
        try:
            environment, reachable = environment_guard(self.fn, library)
        except TooMuchState:
            environment, reachable = None, []
            recorder.refuse_late("reads more values from globals, closures and the objects "
                                 "and containers they hold than a replay's guard can check; "
                                 "pass them as arguments")
        reachable += [a for a in args + tuple(kwargs.values()) if isinstance(a, library)]
        # the recorder keeps every object of the step alive until the program is compiled,
        # so the cyclic collector could only walk them again and again: it is paused (as
        # backward pauses it), and finds any garbage of the step once recording ends
        collecting = gc.isenabled()
        gc.disable()
        try:
            with Watch(recorder, reachable), observe(recorder):
                result = self.fn(*args, **kwargs)
            recorder.finish(result)
            self.recordings += 1
            if recorder.refusal is None:
                entry.programs.append(Program(recorder, result, environment))
                if len(entry.programs) > VARIANTS:
                    entry.programs.pop(0)
        finally:
            if collecting:
                gc.enable()
        if recorder.refusal is not None:
            entry.refused += 1
            what, site = recorder.refusal
            if entry.refused == 1:
                where = f" at {site}" if site else ""
                warnings.warn(f"jit: {self._name()} {what}{where}; a replay could not follow "
                              f"that, so it runs eagerly for these arguments.", JitWarning,
                              stacklevel=3)
        return result

    def _checked(self, program, args, kwargs):
        """Eager execution and the replay of the same call, compared; the replay's stays."""
        snapshot = Snapshot(program, args, kwargs)
        eager = snapshot.results(self.fn(*args, **kwargs))
        snapshot.restore()
        output = program.run(args, kwargs)
        compare(eager, snapshot.results(output), self._name())
        return output


def _signature(values, what):
    """What a recorded program depends on in the arguments: shapes and dtypes of arrays,
    values of numbers and strings, identity of other objects (a model, an optimizer), and
    which arguments are the same tensor or array as an earlier one."""
    if what == "argument" and all(type(v) is np.ndarray for v in values):
        signature = tuple([(v.shape, v.dtype.str) for v in values])      # the common case
        return signature + _aliasing(values) if len(values) > 1 else signature
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
    if what == "argument":
        arrays = list(leaves(values))
        if len(arrays) > 1:
            out.append(_aliasing(arrays))
    return tuple(out)


def _aliasing(values):
    """For each tensor or array argument, the position of the first one that is the same
    object or holds the same array (a step called with x twice is another program)."""
    first, pattern = {}, []
    for i, value in enumerate(values):
        keys = (id(value), id(value.data)) if isinstance(value, Tensor) else (id(value),)
        found = [first[k] for k in keys if k in first]
        pattern.append(min(found) if found else i)
        for k in keys:
            first.setdefault(k, i)
    return (tuple(pattern),)

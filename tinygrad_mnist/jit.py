"""jit: record a step once, then replay its NumPy work without building the graph again.

    @jit
    def step(x, y):
        optimizer.zero_grad()
        loss = nn.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

The first call with given argument shapes and dtypes runs eagerly while the engine reports
what it does (tensor.py's hooks): each op with its inputs, each backward walk in its order,
array work done on tensors outside ops (a dtype conversion, a comparison), and the calls with
effects outside the graph (an optimizer's step, zero_grad). That becomes a Program: a flat list
of steps over numbered array slots. Later calls bind the new arguments to their slots and run
the steps: no Tensor, no op object, no dependency counting. The hot ops (Linear, ReLU, Dropout,
cross-entropy) replay through kernels that write into buffers allocated once; every other op
calls its own forward and backward, so a user's op replays too.

What a replay cannot follow, it refuses: if the step reads a tensor's value (item(), bool(t),
numpy(), .grad) its Python could branch on it, so the step runs eagerly for those shapes, with
a warning naming the line. A replay assumes the same train/eval mode of every module called;
otherwise it records again. Raw NumPy work on `.data` inside the step is not seen: pass such
arrays in as arguments.

Outputs of a replay are new tensors holding copies, without a graph. A leaf's .grad after a
replay may be a buffer that the next replay writes again; copy it to keep it.
"""
import collections
import functools
import gc
import warnings

import numpy as np

from . import ops
from . import profiler
from . import tensor as _engine
from .blas import matmul
from .tensor import Tensor, _grad_mode

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
        if _grad_mode.anomaly or profiler.active() or _grad_mode.recorder is not None:
            return self.fn(*args, **kwargs)   # checked, profiled, or inside an outer recording
        key = (_grad_mode.enabled, _signature(args, "argument"),
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
        _grad_mode.recorder = recorder
        try:
            result = self.fn(*args, **kwargs)
            self.recordings += 1
            if recorder.refusal is None:
                programs.append(recorder.program(result))
        finally:
            _grad_mode.recorder = None
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

class _Recorder:
    """Listens to the engine during the first call and numbers every array it sees: the
    arguments' arrays, what ops and traced work produce (replayed), and the rest (constants:
    a parameter's array is read from its tensor on every replay, so it follows updates)."""

    def __init__(self, args, kwargs):
        self.depth = 0                 # inside a recorded call: its inner work is not recorded
        self.refusal = None            # (what, where) once the step did something unreplayable
        self.slot_of = {}              # id(array) -> slot
        self.alive = []                # keeps recorded objects alive, so ids stay unique
        self.initial = []              # slot -> constant array, or None for a computed one
        self.tensor_constants = []     # (slot, tensor): read tensor.data at every replay
        self.steps = []
        self.producer = {}             # id(output tensor) -> index of its op step
        self.guards = {}               # id(module) -> (module, training)
        self.arguments = list(_leaves(args + tuple(kwargs.values())))
        self.flat = not kwargs and len(self.arguments) == len(args)
        self.argument_slots = [self._new_slot(a.data if isinstance(a, Tensor) else a)
                               for a in self.arguments]
        self.argument_tensors = {id(a): i for i, a in enumerate(self.arguments)
                                 if isinstance(a, Tensor)}

    def _new_slot(self, array, constant=None):
        self.alive.append(array)
        self.slot_of[id(array)] = len(self.initial)
        self.initial.append(constant)
        return len(self.initial) - 1

    def _tensor_slot(self, t):
        slot = self.slot_of.get(id(t.data))
        if slot is None:
            slot = self._new_slot(t.data)
            self.tensor_constants.append((slot, t))
        return slot

    def _ref(self, value):
        """A value as the replay finds it: ('slot', n) for arrays, ('tensor', t) for a tensor
        whose array is not computed in the step, ('value', v) for anything else."""
        if isinstance(value, np.ndarray):
            slot = self.slot_of.get(id(value))
            return ("slot", slot if slot is not None else self._new_slot(value, value))
        if isinstance(value, Tensor):
            slot = self.slot_of.get(id(value.data))
            return ("slot", slot) if slot is not None else ("tensor", value)
        if isinstance(value, tuple) and any(isinstance(v, np.ndarray) for v in value):
            return ("tuple", tuple(self._ref(v) for v in value))
        return ("value", value)

    # the engine's hooks ------------------------------------------------------------

    def op(self, op, inputs, options, out):
        if self.depth:
            return
        if options:
            index = options.get("index")
            if any(isinstance(i, np.ndarray) and i.dtype == bool and id(i) in self.slot_of
                   for i in (index if isinstance(index, tuple) else (index,))):
                self.unsupported("a boolean mask computed in the step, whose result's shape "
                                 "depends on the values", _engine._user_site())
            options = {k: self._ref(v) for k, v in options.items()}
        slot_of = self.slot_of
        in_slots = []
        for t in inputs:
            slot = slot_of.get(id(t.data))
            in_slots.append(slot if slot is not None else self._tensor_slot(t))
        self.alive.append(out)              # out keeps op and inputs alive too
        self.producer[id(out)] = len(self.steps)
        self.steps.append(("op", op, in_slots, options, self._new_slot(out.data), inputs))

    def derive(self, function, args, result):
        """Array work outside ops: replayed when it reads an array the step computes or
        receives; a constant otherwise."""
        if id(result) in self.slot_of or not any(
                isinstance(a, np.ndarray) and id(a) in self.slot_of for a in args):
            return
        self.steps.append(("call", function, [self._ref(a) for a in args], {},
                           self._new_slot(result)))

    def effect(self, function, args):
        """An in-place change of a tensor (inside no_grad): always replayed."""
        if not self.depth:
            self.steps.append(("call", function, [self._ref(a) for a in args], {}, None))

    def call(self, method, obj, args, kwargs):
        self.steps.append(("call", method, [("value", obj)] + [("value", a) for a in args],
                           kwargs, None))
        self.depth += 1
        try:
            return method(obj, *args, **kwargs)
        finally:
            self.depth -= 1

    def guard(self, module):
        self.guards.setdefault(id(module), (module, module.training))

    def read(self, what, site):
        if self.refusal is None:
            self.refusal = (f"reads a tensor's value ({what})", site)

    def unsupported(self, what, site):
        if self.refusal is None:
            self.refusal = (f"uses {what}, which is not recorded", site)

    def backward(self, roots, seeds, trace):
        """One backward walk, in the engine's order: which node's op runs backward with which
        gradient slot, and where each of its input gradients goes."""
        if self.depth or self.refusal is not None:
            return
        grad_slot = {}

        def slot(t):
            return grad_slot.setdefault(id(t), len(grad_slot))

        seed_plan = [(slot(root), np.array(seed)) for root, seed in zip(roots, seeds)]
        walk = []
        for node, g, _ in trace:
            if g is None:
                continue                        # nothing reached it: nothing to pass on
            index = self.producer.get(id(node))
            if index is not None:
                inputs = self.steps[index][5]
                walk.append((slot(node), index, [
                    (slot(p), p.data.shape) if p.requires_grad else (None, None)
                    for p in inputs]))
            elif node._ctx is None:             # a leaf: a parameter or an argument
                position = self.argument_tensors.get(id(node))
                walk.append((slot(node), None, node if position is None else position))
            else:
                self.unsupported("a backward into a graph built outside the step",
                                 _engine._user_site())
                return
        self.alive.append(trace)
        self.steps.append(("backward", seed_plan, walk, len(grad_slot)))

    def program(self, result):
        return Program(self, result)


# ---------------------------------------------------------------- replaying

class Program:
    """The recorded step as flat Python closures over a list of array slots."""

    def __init__(self, recorder, result):
        self.slots = list(recorder.initial)
        self.argument_slots = recorder.argument_slots
        self.tensor_constants = [(slot, t, t.data.shape, t.data.dtype)
                                 for slot, t in recorder.tensor_constants]
        self.guards = list(recorder.guards.values())
        self.kernels = {}                      # op step index -> its kernel
        self.buffers = set()                   # ids of arrays a replay writes again
        self.steps = [self._compile(recorder, index, step)
                      for index, step in enumerate(recorder.steps)]
        self.output = self._template(result, recorder.slot_of)
        self.arguments = None
        self.flat = recorder.flat          # arguments are all Tensors and arrays: no walk

    def applies(self):
        """The modules are in the mode they were recorded in, and every constant tensor still
        has its shape and dtype."""
        return (all(m.training == training for m, training in self.guards) and
                all(t.data.shape == shape and t.data.dtype == dtype
                    for _, t, shape, dtype in self.tensor_constants))

    def run(self, args, kwargs):
        slots = self.slots
        self.arguments = arguments = (args if self.flat and not kwargs else
                                      list(_leaves(args + tuple(kwargs.values()))))
        for slot, value in zip(self.argument_slots, arguments):
            slots[slot] = value.data if type(value) is Tensor else value
        for slot, t, _, _ in self.tensor_constants:
            slots[slot] = t.data
        for step in self.steps:
            step()
        return self._build(self.output)

    # compiling each recorded step ----------------------------------------------------

    def _compile(self, recorder, index, step):
        kind = step[0]
        if kind == "op":
            return self._compile_op(index, *step[1:5])
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

    def _compile_op(self, index, op, in_slots, options, out_slot):
        slots = self.slots
        static = {k: v for k, (kind, v) in options.items() if kind == "value"}
        dynamic = [(k, self._resolver(ref)) for k, ref in options.items() if ref[0] != "value"]
        kernel_class = KERNELS.get(type(op))
        if kernel_class is not None and options.keys() - kernel_class.options:
            kernel_class = None               # an option the kernel does not implement
        if kernel_class is None:              # any other op replays its own methods
            self.kernels[index] = op
            forward = None if len(in_slots) == 2 and not options else _plain_forward(op)
        else:
            kernel = self.kernels[index] = kernel_class(op, self.buffers)
            forward = kernel.forward

        if forward is None:
            # the commonest op of a scalar graph, called without the kernel's extra layer
            a, b = in_slots
            op_forward, asarray, ndarray = op.forward, np.asarray, np.ndarray

            def run():
                out = op_forward(slots[a], slots[b])
                slots[out_slot] = out if type(out) is ndarray else asarray(out)
        elif dynamic:
            def run():
                opts = dict(static)
                for name, resolve in dynamic:
                    opts[name] = resolve()
                slots[out_slot] = forward(*[slots[i] for i in in_slots], **opts)
        elif len(in_slots) == 1:
            (a,) = in_slots

            def run():
                slots[out_slot] = forward(slots[a], **static)
        elif len(in_slots) == 2 and not static:
            a, b = in_slots

            def run():
                slots[out_slot] = forward(slots[a], slots[b])
        elif len(in_slots) == 2:
            a, b = in_slots

            def run():
                slots[out_slot] = forward(slots[a], slots[b], **static)
        else:
            def run():
                slots[out_slot] = forward(*[slots[i] for i in in_slots], **static)
        return run

    def _compile_call(self, function, refs, kwargs, out_slot):
        slots = self.slots
        resolvers = [self._resolver(ref) for ref in refs]
        if out_slot is None:
            return lambda: function(*[r() for r in resolvers], **kwargs)

        def run():
            slots[out_slot] = function(*[r() for r in resolvers], **kwargs)
        return run

    def _compile_backward(self, seed_plan, walk, n_grads):
        kernels, buffers, program = self.kernels, self.buffers, self
        sum_to_shape = _engine.sum_to_shape
        plan = []
        for grad_slot, index, target in walk:
            if index is None:
                plan.append((grad_slot, None, target))
            else:                               # only the inputs that take a gradient
                plan.append((grad_slot, kernels[index].backward,
                             [(i, pk, shape) for i, (pk, shape) in enumerate(target)
                              if pk is not None]))
        leaves = [t for _, index, t in walk if index is None]

        def run():
            # a leaf still holding a buffer this replay writes again keeps its old sum
            for leaf in leaves:
                leaf = program.arguments[leaf] if type(leaf) is int else leaf
                if leaf._grad is not None and id(leaf._grad) in buffers:
                    leaf._grad = leaf._grad.copy()
            grads = [None] * n_grads
            for k, seed in seed_plan:
                grads[k] = seed.copy() if grads[k] is None else grads[k] + seed
            owned = set()
            for k, backward, target in plan:
                g = grads[k]
                grads[k] = None
                if backward is None:
                    leaf = program.arguments[target] if type(target) is int else target
                    leaf._accumulate(g, owned)
                    continue
                input_grads = backward(g)
                for i, pk, shape in target:
                    pg = input_grads[i]
                    if pg is None:
                        continue
                    if type(pg) is not np.ndarray:
                        pg = np.asarray(pg)
                    if pg.shape != shape:
                        pg = sum_to_shape(pg, shape)
                    previous = grads[pk]
                    grads[pk] = pg if previous is None else previous + pg
        return run

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
            return Tensor._wrap(np.array(self.slots[value]))
        if kind == "same":
            return value
        if kind == "dict":
            return {k: self._build(v) for k, v in value.items()}
        items = [self._build(v) for v in value]
        return tuple(items) if kind == "tuple" else items


# ---------------------------------------------------------------- kernels
# A kernel replays one recorded op: forward(*arrays, **options) and backward(gz), with the
# same arithmetic as the op's own methods, in the same order (so the same float results).

def _plain_forward(op):
    """An op without a kernel replays its own forward (and backward) on the recorded op
    object. A NumPy scalar result becomes a 0-d array, as the engine makes it; a replay has no
    create_graph, so the op's saved copy of it may stay a scalar."""
    forward, asarray, ndarray = op.forward, np.asarray, np.ndarray

    def run(*arrays, **options):
        out = forward(*arrays, **options)
        return out if type(out) is ndarray else asarray(out)
    return run


class _Buffers:
    """A kernel's arrays: allocated by the first replay (a program's shapes never change),
    then written again by every one."""
    options = frozenset()                     # the op's options the kernel takes

    def __init__(self, op, owned):
        self.owned = owned
        self.needs = getattr(op, "needs_input_grad", None) or (False,) * 3   # no_grad

    def empty(self, shape, dtype):
        array = np.empty(shape, dtype)
        self.owned.add(id(array))
        return array


class _LinearKernel(_Buffers):
    """Linear: x @ W^T + b into one buffer; dx, dW, db each into their own."""
    out = None

    def forward(self, x, weight, bias=None):
        x2 = x if x.ndim == 2 else x.reshape(-1, x.shape[-1])
        if self.out is None:
            self.out = self.empty((x2.shape[0], weight.shape[0]), x.dtype)
            self.out_shape = x.shape[:-1] + (weight.shape[0],)
            self.gx = self.empty(x2.shape, x.dtype) if self.needs[0] else None
            self.gw = self.empty(weight.shape, x.dtype) if self.needs[1] else None
            self.gb = (self.empty(weight.shape[:1], x.dtype) if bias is not None and
                       self.needs[2] else None)
            self.has_bias = bias is not None
        self.x, self.x2, self.weight = x, x2, weight
        out = matmul(x2, weight.T, out=self.out)
        if bias is not None:
            out += bias
        return out if x.ndim == 2 else out.reshape(self.out_shape)

    def backward(self, gz):
        g2 = gz if gz.ndim == 2 else gz.reshape(-1, gz.shape[-1])
        gx = gw = gb = None
        if self.gx is not None:
            gx = matmul(g2, self.weight, out=self.gx)
            if self.x.ndim != 2:
                gx = gx.reshape(self.x.shape)
        if self.gw is not None:
            gw = matmul(g2.T, self.x2, out=self.gw)
        if not self.has_bias:
            return gx, gw
        if self.gb is not None:
            gb = np.add.reduce(g2, axis=0, out=self.gb)
        return gx, gw, gb


class _ReLUKernel(_Buffers):
    out = None

    def forward(self, x):
        if self.out is None:
            self.out, self.mask = self.empty(x.shape, x.dtype), self.empty(x.shape, bool)
            self.gx = self.empty(x.shape, x.dtype)
        return np.maximum(x, 0, out=self.out)

    def backward(self, gz):
        return (np.multiply(gz, np.greater(self.out, 0, out=self.mask), out=self.gx),)


class _DropoutKernel(_Buffers):
    """The mask drawn from the current generator, as ops.Dropout draws it."""
    out = None
    options = frozenset({"p"})

    def forward(self, x, p):
        if self.out is None:
            self.draw, self.kept = self.empty(x.shape, np.float32), self.empty(x.shape, bool)
            self.keep, self.out = self.empty(x.shape, x.dtype), self.empty(x.shape, x.dtype)
            self.gx = self.empty(x.shape, x.dtype)
        _engine.get_rng().random(x.shape, dtype=np.float32, out=self.draw)
        np.greater_equal(self.draw, p, out=self.kept)
        np.multiply(self.kept, x.dtype.type(1.0 / (1.0 - p)), out=self.keep)
        return np.multiply(x, self.keep, out=self.out)

    def backward(self, gz):
        return (np.multiply(gz, self.keep, out=self.gx),)


class _CrossEntropyKernel(_Buffers):
    """The fused loss; its gradient (softmax - onehot) * gz/m written into one buffer."""
    top = None
    options = frozenset({"targets"})          # the mean, without label smoothing

    def forward(self, logits, targets):
        m, dtype = logits.shape[0], logits.dtype
        if self.top is None:
            self.top, self.sum_exp = self.empty((m, 1), dtype), self.empty((m, 1), dtype)
            self.shifted, self.probs = self.empty(logits.shape, dtype), self.empty(
                logits.shape, dtype)
            self.gx, self.rows = self.empty(logits.shape, dtype), np.arange(m)
        np.max(logits, axis=1, keepdims=True, out=self.top)
        shifted = np.subtract(logits, self.top, out=self.shifted)
        np.exp(shifted, out=self.probs)
        np.add.reduce(self.probs, axis=1, keepdims=True, out=self.sum_exp)
        np.divide(self.probs, self.sum_exp, out=self.probs)
        if targets.size and (targets.min() < 0 or targets.max() >= logits.shape[1]):
            # nn.cross_entropy checks this in Python, which a replay does not run again
            raise ValueError(f"cross_entropy: targets must lie in [0, {logits.shape[1]}) for "
                             f"logits of shape {logits.shape}, got values from "
                             f"{targets.min()} to {targets.max()}")
        self.targets = targets
        target_logp = shifted[self.rows, targets] - np.log(self.sum_exp[:, 0])
        return np.asarray(-target_logp.sum() / m, dtype=dtype)

    def backward(self, gz):
        g = self.gx
        np.copyto(g, self.probs)
        g[self.rows, self.targets] -= 1
        g *= gz / g.shape[0]
        return (g,)


KERNELS = {ops.Linear: _LinearKernel, ops.ReLU: _ReLUKernel, ops.Dropout: _DropoutKernel,
           ops.CrossEntropy: _CrossEntropyKernel}

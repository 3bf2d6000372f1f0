"""The engine's only mutable state: one thread-local mode (is the graph being recorded, which
observers listen) and the random generator that ops draw from.

An Observer is the engine's one seam: the tools (jit, the profiler, anomaly detection, vmap's
trace, the drawings' module boxes) are observers, and so can yours be. The engine
calls each attached observer's methods where things happen; a method not overridden does
nothing. With no observer attached the engine tests one attribute per op.
"""
import contextlib
import functools
import threading

import numpy as np


class _Mode(threading.local):
    """Per thread: no_grad or observe() in one thread never changes what another does."""
    grad_enabled = True
    observers = ()


MODE = _Mode()


@contextlib.contextmanager
def no_grad():
    """Inside this context (or a function decorated with it) no operation is recorded."""
    previous = MODE.grad_enabled
    MODE.grad_enabled = False
    try:
        yield
    finally:
        MODE.grad_enabled = previous


@contextlib.contextmanager
def enable_grad():
    """Record operations again, inside a no_grad block (torch.enable_grad)."""
    previous = MODE.grad_enabled
    MODE.grad_enabled = True
    try:
        yield
    finally:
        MODE.grad_enabled = previous


def is_grad_enabled():
    return MODE.grad_enabled


class Observer:
    """Told what the engine does, in the thread it is attached to (`with observe(obs):`).

    The seam, for every tool:
    - on_op(op, inputs, output): after each op's forward (recorded in the graph or not);
      `op` is the object that output.op holds, op.options the keyword options it ran with.
    - on_backward(op, grad_output, grad_inputs): after each op's backward step, with the
      gradient it received and the tuple it passed on (one per input, None for none).

    For tools that time or replay what happens (all optional):
    - before_op(op, inputs) and before_backward(op, grad_output): just before the forward or
      backward runs.
    - on_backward_start(outputs, grads, create_graph, capture) and on_backward_end(): around
      a backward pass (capture: None for backward(), the ids of the tensors whose gradients
      grad() returns); on_gradient(tensor, grad) when a leaf's gradient is complete.
    - on_read(tensor, what): a tensor's value leaves the engine for Python (item(), bool(t),
      numpy(), np.asarray(t), .data, .grad, printing).
    - on_new_tensor(tensor): a tensor made by a constructor over an array of its own
      (Tensor(x), zeros, ones, arange), not by an op.
    - on_array(function, arrays, result): array work the engine does outside ops on arrays
      it was given (a Tensor made from an array, an operand converted to a tensor's dtype).
    - on_effect(kind, target, value): a change of a tensor outside the graph: "grad"
      (t.grad = value), "data" (t.data = value), "requires_grad" (t.requires_grad_(value)),
      "in_place" (t += value under no_grad); or "random" (a draw from the generator outside
      an op, value says which).

    For tools that draw or name what a model does:
    - on_module_call(module) and on_module_return(module): around each call of an
      nn.Module (nested calls nest), so that the ops in between are the module's.
    """

    def before_op(self, op, inputs):
        pass

    def on_op(self, op, inputs, output):
        pass

    def before_backward(self, op, grad_output):
        pass

    def on_backward(self, op, grad_output, grad_inputs):
        pass

    def on_backward_start(self, outputs, grads, create_graph, capture):
        pass

    def on_backward_end(self):
        pass

    def on_gradient(self, tensor, grad):
        pass

    def on_read(self, tensor, what):
        pass

    def on_new_tensor(self, tensor):
        pass

    def on_array(self, function, arrays, result):
        pass

    def on_effect(self, kind, target, value):
        pass

    def on_module_call(self, module):
        pass

    def on_module_return(self, module):
        pass


_HOOKS = [name for name in vars(Observer) if name.startswith(("on_", "before_"))]


class _Attached(tuple):
    """The observers attached now, and for each hook the bound methods that override it: an
    event nobody listens to costs a dictionary lookup."""

    def __new__(cls, observers):
        self = super().__new__(cls, observers)
        hooks = self.hooks = {}
        for o in observers:
            for name in _overridden(type(o)):
                hooks[name] = hooks.get(name, ()) + (getattr(o, name),)
        return self


@functools.lru_cache(maxsize=None)
def _overridden(cls):
    """The hooks an observer class defines itself (the rest do nothing)."""
    return tuple(name for name in _HOOKS if getattr(cls, name) is not getattr(Observer, name))


_LAST = [None, None]      # the last observer attached alone, and its _Attached


class observe:
    """`with observe(obs):` attaches observers in the current thread for the block (yielding
    the first)."""
    __slots__ = ("observers", "previous")

    def __init__(self, *observers):
        for o in observers:
            if not isinstance(o, Observer):
                raise TypeError(f"observe: expected Observer instances, got "
                                f"{type(o).__name__}")
        self.observers = observers

    def __enter__(self):
        self.previous = previous = MODE.observers
        if not previous and len(self.observers) == 1 and _LAST[0] is self.observers[0]:
            MODE.observers = _LAST[1]                   # the same one again (a module call)
        else:
            MODE.observers = _Attached(previous + self.observers)
            if not previous and len(self.observers) == 1:
                _LAST[:] = [self.observers[0], MODE.observers]
        return self.observers[0] if self.observers else None

    def __exit__(self, *exc):
        MODE.observers = self.previous
        return False


def observers():
    """The observers attached in this thread now (a tuple; empty: nobody is listening)."""
    return MODE.observers


def tell(observers, method, *args):
    """Call `method` of every observer that overrides it. Meanwhile none is attached: what an
    observer does with what it is handed (reading a tensor, computing with it) is its own,
    never an event."""
    handlers = observers.hooks.get(method)
    if handlers is None:
        return
    MODE.observers = ()
    try:
        for handler in handlers:
            handler(*args)
    finally:
        MODE.observers = observers


def notify_read(tensor, what):
    """A value leaves the engine: tell the observers (the one accessor every read uses)."""
    tell(MODE.observers, "on_read", tensor, what)


def notify_effect(kind, target, value):
    tell(MODE.observers, "on_effect", kind, target, value)


def notify_module(event, module):
    """nn.Module.__call__ tells observers ("on_module_call", "on_module_return")."""
    tell(MODE.observers, event, module)


def derived(function, *arrays):
    """function(*arrays) for array work outside ops (a conversion, a copy): the observers are
    told, so that a replay can do it again on new arrays."""
    result = function(*arrays)
    if MODE.observers:
        tell(MODE.observers, "on_array", function, arrays, result)
    return result


# ---------------------------------------------------------------- the random generator

_RNG = [np.random.default_rng()]


def manual_seed(seed):
    """Seed the generator behind Tensor.randn/rand/randint, nn.Linear's initialization and
    nn.Dropout."""
    _RNG[0] = np.random.default_rng(seed)


def generator():
    """The generator, for ops: a draw inside an op's forward is part of the op."""
    return _RNG[0]


def get_rng():
    """The generator, for draws outside ops (a layer's initialization): observers are told
    ("random"), since such a draw is not part of the graph."""
    if MODE.observers:
        notify_effect("random", None, "a draw from the generator outside an op")
    return _RNG[0]

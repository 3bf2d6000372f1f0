"""Tensor: a NumPy array that records the operations that produced it, and backward()."""
import contextlib
import functools
import gc
import os
import threading
import traceback
import warnings

import numpy as np

from . import ops

_FLOAT_DEFAULT = np.dtype(np.float32)


class _GradMode(threading.local):
    enabled = True   # per thread: no_grad in one thread never switches recording off in another
    modules = ()     # the nn.Module calls under way, outermost first (drawings group by them)
    anomaly = False  # detect_anomaly(): check every op's output and gradients for NaN and inf
    recorder = None  # the jit recording under way (jit.py), which every hook below tells


_grad_mode = _GradMode()


@contextlib.contextmanager
def no_grad():
    """Inside this context (or a function decorated with it) no operation is recorded."""
    previous = _grad_mode.enabled
    _grad_mode.enabled = False
    try:
        yield
    finally:
        _grad_mode.enabled = previous


def is_grad_enabled():
    return _grad_mode.enabled


@contextlib.contextmanager
def enable_grad():
    """Record operations again, inside a no_grad block (torch.enable_grad)."""
    previous = _grad_mode.enabled
    _grad_mode.enabled = True
    try:
        yield
    finally:
        _grad_mode.enabled = previous


class AnomalyError(FloatingPointError):
    """An op produced NaN or inf; the message names the op, the shapes and the user's line."""


@contextlib.contextmanager
def detect_anomaly():
    """Inside this context (this thread only), the first op whose forward output or backward
    gradient holds NaN or inf raises AnomalyError naming the op, the shapes involved and the
    line of user code that created it. It costs a check per op: use it to debug."""
    previous = _grad_mode.anomaly
    _grad_mode.anomaly = True
    try:
        yield
    finally:
        _grad_mode.anomaly = previous


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_APPLICATION_DIR = os.path.join(_PACKAGE_DIR, "mnist") + os.sep

# NumPy's warnings about inf and NaN (log(0), an overflow) are not repeated from inside the
# library, with its file and line: results show them, and detect_anomaly() finds the op that
# made them. Warnings raised in the user's own code are untouched.
warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"tinygrad_mnist(\.|$)")


# ---------------------------------------------------------------- what a jit recording sees
# A jit recording (jit.py) runs a step eagerly and keeps what it must replay: the ops (record),
# the backward walks, the arrays made from tensors outside ops (_traced), the calls with effects
# beyond the graph (@replayable: an optimizer's step) and any read of a value, which makes the
# step unsafe to replay (_read). With no recording under way each hook is one attribute test.

def replayable(method):
    """A method whose effects lie outside the graph (an optimizer's step, zero_grad): inside a
    jit recording it runs and is recorded, to be called again on every replay."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        recorder = _grad_mode.recorder
        if recorder is None or recorder.depth:
            return method(self, *args, **kwargs)
        return recorder.call(method, self, args, kwargs)
    return wrapper


def _read(what):
    """A tensor's value leaves the graph (item(), bool(t), numpy(), .grad): a jit recording can
    no longer promise that a replay follows what Python did with it."""
    recorder = _grad_mode.recorder
    if recorder is not None and not recorder.depth:
        recorder.read(what, _user_site())


def _traced(function, *args):
    """function(*args) for array work done outside ops on tensors' arrays (a dtype conversion,
    a comparison): a jit recording replays it on the new arrays instead of keeping the result."""
    result = function(*args)
    recorder = _grad_mode.recorder
    if recorder is not None and not recorder.depth:
        recorder.derive(function, args, result)
    return result


def _user_site():
    """'file:line: code' of the innermost caller outside the library: the user's code, or the
    MNIST application's (tinygrad_mnist/mnist/ uses the library as any user does)."""
    for frame in reversed(traceback.extract_stack()[:-1]):
        path = os.path.abspath(frame.filename)
        if not path.startswith(_PACKAGE_DIR + os.sep) or path.startswith(_APPLICATION_DIR):
            return f"{frame.filename}:{frame.lineno}: {(frame.line or '').strip()}"
    return "unknown location"


def _nonfinite(array):
    return array.dtype.kind == "f" and not np.isfinite(array).all()


def _anomaly_forward(op, inputs, out):
    site = _user_site()
    op.created_at = site
    if _nonfinite(out):
        shapes = ", ".join(str(t.shape) for t in inputs)
        bad = "NaN" if np.isnan(out).any() else "inf"
        raise AnomalyError(f"{op.name}: forward produced {bad} (inputs of shapes {shapes}, "
                           f"output {out.shape}), created at {site}")


def _anomaly_backward(op, parents, input_grads):
    for i, (parent, g) in enumerate(zip(parents, input_grads)):
        if g is not None and _nonfinite(np.asarray(g)):
            bad = "NaN" if np.isnan(g).any() else "inf"
            raise AnomalyError(f"{op.name}: backward produced {bad} in the gradient of input "
                               f"{i} (shape {parent.shape}), for the op created at "
                               f"{getattr(op, 'created_at', 'an unknown location')}")


_rng = np.random.default_rng()


def manual_seed(seed):
    """Seed the generator behind Tensor.randn, nn.Linear's initialization and nn.Dropout."""
    global _rng
    _rng = np.random.default_rng(seed)


def get_rng():
    return _rng


def sum_to_shape(g, shape, op="backward"):
    """Undo NumPy broadcasting: add up every axis that was prepended or stretched. A gradient
    that `shape` does not broadcast to is an error naming the op that returned it."""
    lead = g.ndim - len(shape)
    if lead < 0 or any(n != 1 and n != m for n, m in zip(shape, g.shape[lead:])):
        raise ValueError(f"{op}: backward returned a gradient of shape {g.shape} for an input "
                         f"of shape {shape}")
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape)
                                      if n == 1 and g.shape[lead + i] != 1)
    return g.sum(axis=axes, keepdims=True).reshape(shape) if axes else g.reshape(shape)


def _topo_order(root, constants=False):
    """Every tensor that root depends on and that requires grad (with constants, every one),
    each after its parents."""
    order, seen, stack = [], set(), [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if children_done:
            order.append(node)                 # every parent is already in `order`
        elif id(node) not in seen:
            seen.add(id(node))
            stack.append((node, True))
            stack.extend((p, False) for p in node._parents if constants or p.requires_grad)
    return order


class _Released:
    """Marks a node whose graph backward() already freed."""
    name = "released"


_RELEASED = _Released()
_CONSTANTS = {}    # (Python number, dtype) -> constant tensor; never written to, so shareable


# ---------------------------------------------------------------- arguments, checked once

def _axes(op, axis, ndim, shape):
    """An `axis` argument of a reduction: None (every axis), an int or a tuple of ints,
    negative allowed -> None or a sorted tuple."""
    if axis is None:
        return None
    out = [_axis(op, a, ndim, shape) for a in (axis if isinstance(axis, (tuple, list)) else
                                               (axis,))]
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: repeated axis in {axis} for a tensor of shape {shape}")
    return tuple(sorted(out))


def _axis(op, axis, ndim, shape):
    """A single axis (negative allowed) -> an int in range(ndim); a tuple is a TypeError."""
    if isinstance(axis, (tuple, list)):
        raise TypeError(f"{op}: takes a single int axis, got {axis!r}")
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{op}: axis must be an int, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{op}: axis {axis} is out of range for a tensor of shape {shape}")
    return int(axis) % ndim


def _shape(op, args):
    """Sizes given as f(2, 3) or f((2, 3)) -> a tuple of ints."""
    sizes = tuple(args[0]) if len(args) == 1 and isinstance(args[0], (tuple, list)) else args
    if not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in sizes):
        raise TypeError(f"{op}: sizes must be ints, got {sizes!r}")
    return tuple(int(n) for n in sizes)


def _is_basic_index(index):
    parts = index if isinstance(index, tuple) else (index,)
    return all(isinstance(p, (int, np.integer, slice)) or p is None or p is Ellipsis
               for p in parts)


def _common_float(tensors, force=False):
    """An op keeps its floating inputs' dtype: integer tensors combined with floating ones take
    the floats' dtype, and with `force` (ops whose result is always real, such as division)
    integer-only inputs become float32."""
    floats = [t.data.dtype for t in tensors if t.data.dtype.kind == "f"]
    if len(floats) == len(tensors) or not (floats or force):
        return tensors
    target = np.result_type(*floats) if floats else _FLOAT_DEFAULT
    return tuple(t if t.data.dtype.kind == "f" else
                 Tensor._wrap(_traced(lambda a: a.astype(target), t.data)) for t in tensors)


# ---------------------------------------------------------------- recording an op

def record(op_class, inputs, options):
    """Op.apply: run op_class's forward on the inputs' arrays and, if any input needs a
    gradient, record the op and its inputs on the result."""
    for t in inputs:
        if type(t) is not Tensor:
            i = [type(u) is Tensor for u in inputs].index(False)
            raise TypeError(f"{op_class.name}: input {i} is a {type(inputs[i]).__name__}, not "
                            f"a Tensor; wrap it with Tensor(...)")
    if op_class.float_result and any(t.data.dtype.kind != "f" for t in inputs):
        inputs = _common_float(inputs, force=True)
    op = op_class()
    # the common arities called directly: this is the hot path of every op
    if len(inputs) == 2 and not options:
        data = op.forward(inputs[0].data, inputs[1].data)
    elif len(inputs) == 1:
        data = op.forward(inputs[0].data, **options)
    else:
        data = op.forward(*[t.data for t in inputs], **options)
    if type(data) is not np.ndarray:
        scalar, data = data, np.asarray(data)
        if _output_names(op_class) or hasattr(op, "__dict__"):
            _keep_output(op, scalar, data)
    out = Tensor.__new__(Tensor)
    out.data = data
    out._grad = None
    if _grad_mode.anomaly:
        _anomaly_forward(op, inputs, out.data)
    if _grad_mode.enabled and (inputs[0].requires_grad or len(inputs) > 1 and (
            inputs[1].requires_grad or True in [t.requires_grad for t in inputs[2:]])):
        op.needs_input_grad = tuple([t.requires_grad for t in inputs])
        out.requires_grad, out._ctx, out._parents = True, op, inputs
        out._modules = _grad_mode.modules
    else:
        out.requires_grad, out._ctx, out._parents, out._modules = False, None, (), ()
    if _grad_mode.recorder is not None:
        _grad_mode.recorder.op(op, inputs, options, out)
    return out


def _protocol_error(op, input_grads, parents):
    """backward returns one gradient per input, as a tuple: anything else names the op."""
    got = f"a tuple of {len(input_grads)}" if isinstance(input_grads, tuple) else \
        f"a {type(input_grads).__name__}"
    return TypeError(f"{op.name}: backward must return a tuple with one gradient per input "
                     f"({len(parents)}), got {got}")


def _seed(op, output, grad, create_graph):
    """The gradient that starts backward at `output`: ones for one element, else `grad`."""
    if grad is None:
        if output.data.size != 1:
            raise RuntimeError(f"{op}: a gradient can only be implied for a one-element output, "
                               f"got shape {output.shape}; pass one of that shape")
        grad = np.ones_like(output.data)
    elif isinstance(grad, Tensor) and create_graph:
        if grad.shape != output.shape:
            raise ValueError(f"{op}: the gradient has shape {grad.shape} but the output has "
                             f"shape {output.shape}")
        return grad
    else:
        grad = np.array(grad.data if isinstance(grad, Tensor) else grad, dtype=output.dtype)
        if grad.shape != output.shape:
            raise ValueError(f"{op}: the gradient has shape {grad.shape} but the output has "
                             f"shape {output.shape}")
    return Tensor._wrap(grad) if create_graph else grad


def _run_backward(roots, seeds, retain_graph, create_graph=False, capture=None, trace=None):
    """Backpropagate seeds[i] from roots[i] through the recorded graph.

    With `capture` (a set of tensor ids, for grad()) the total gradient of each of those
    tensors is returned and no .grad is touched; otherwise gradients accumulate into the
    leaves' .grad. With `create_graph` the gradients are recorded Tensors, computed by the same
    backward methods (see ops.py), so they can be differentiated again. With `trace` (a list),
    each node is appended as it is processed, in the engine's order, with the gradient it
    received and the gradients its op passed to its inputs (what the graph explorer replays).
    """
    # Backward creates no reference cycles, so the cyclic collector has nothing to find;
    # pausing it saves a third of the time on graphs of millions of nodes.
    recorder = _grad_mode.recorder
    if recorder is not None and trace is None:
        if capture is not None or create_graph:
            recorder.unsupported("grad() and create_graph=True", _user_site())
        else:
            trace = []
    collecting = gc.isenabled()
    gc.disable()
    recording = _grad_mode.enabled
    _grad_mode.enabled = create_graph       # record the backward only when asked to
    try:
        result = _walk_backward(roots, seeds, retain_graph, create_graph, capture, trace)
        if recorder is not None and capture is None and not create_graph:
            recorder.backward(roots, seeds, trace)
        return result
    finally:
        _grad_mode.enabled = recording
        if collecting:
            gc.enable()


def _walk_backward(roots, seeds, retain_graph, create_graph, capture, trace=None):
    # Count, for every tensor behind the roots, the ops that consume it; a tensor's gradient
    # is complete, and its own op can run backward, once all of them have passed theirs on.
    pending, stack = {}, list(roots)
    while stack:
        node = stack.pop()
        for parent in node._parents:
            if parent.requires_grad:
                key = id(parent)
                if key in pending:
                    pending[key] += 1
                else:
                    pending[key] = 1
                    stack.append(parent)
    grads, ready = {}, []
    for root, seed in zip(roots, seeds):
        key = id(root)
        if key in grads:
            grads[key] = grads[key] + seed          # the same output given twice
        else:
            grads[key] = seed
            if not pending.get(key):                # not also behind another root
                ready.append(root)
    anomaly = _grad_mode.anomaly
    captured = {}
    owned = set()            # arrays already stored as some leaf's .grad in this pass
    while ready:
        node = ready.pop()
        g = grads.pop(id(node), None)
        if type(g) is not np.ndarray and g is not None and not create_graph:
            g = np.asarray(g)        # 0-d arrays added together give a NumPy scalar
        op, parents = node._ctx, node._parents
        if op is _RELEASED:
            raise RuntimeError("backward: the graph behind this tensor was already freed by "
                               "an earlier backward(); pass retain_graph=True to the first "
                               "call to run backward twice")
        if capture is not None:
            if id(node) in capture and g is not None:
                captured[id(node)] = g
        elif op is None or retain_graph:
            node._accumulate(g, owned if op is None else None)   # non-leaves keep a copy
        if op is None:
            if trace is not None:
                trace.append((node, g, ()))
            continue
        if not retain_graph:
            node._ctx, node._parents = _RELEASED, ()
        if g is None:
            input_grads = (None,) * len(parents)
        elif create_graph:
            input_grads = _backward_on_tensors(op, node, parents, g)
        else:
            input_grads = op.backward(g)
        if type(input_grads) is not tuple or len(input_grads) != len(parents):
            raise _protocol_error(op, input_grads, parents)
        if anomaly and g is not None:
            _anomaly_backward(op, parents, input_grads)
        if trace is not None:
            trace.append((node, g, input_grads))
        for parent, pg in zip(parents, input_grads):
            if not parent.requires_grad:
                continue
            key = id(parent)
            if pg is not None:
                if create_graph:
                    if not isinstance(pg, Tensor):
                        pg = Tensor._wrap(np.asarray(pg))    # a gradient that is a constant
                elif type(pg) is not np.ndarray:
                    pg = np.asarray(pg)
                if pg.shape != parent.data.shape:
                    pg = sum_to_shape(pg, parent.data.shape, op.name)
                previous = grads.get(key)
                grads[key] = pg if previous is None else previous + pg
            pending[key] -= 1
            if pending[key] == 0:
                ready.append(parent)
    return captured


def _as_tuple(op, value, what):
    items = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    for i, t in enumerate(items):
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: {what} {i} is a {type(t).__name__}, not a Tensor")
    return items


def grad(outputs, inputs, grad_outputs=None, create_graph=False, retain_graph=None,
         allow_unused=False):
    """The gradients of sum(outputs[i] * grad_outputs[i]) with respect to each input, as in
    torch.autograd.grad: a tuple with one Tensor per input (its shape and dtype); .grad is not
    touched. grad_outputs may be left out for one-element outputs.

    With create_graph=True the gradients are recorded: they can be differentiated again, used
    in a loss, or drawn. retain_graph defaults to create_graph. An input the outputs do not
    depend on is an error, or None with allow_unused=True.
    """
    outputs = _as_tuple("grad", outputs, "output")
    inputs = _as_tuple("grad", inputs, "input")
    if grad_outputs is None:
        grad_outputs = (None,) * len(outputs)
    else:
        grad_outputs = tuple(grad_outputs) if isinstance(grad_outputs, (tuple, list)) else \
            (grad_outputs,)
        if len(grad_outputs) != len(outputs):
            raise ValueError(f"grad: {len(grad_outputs)} grad_outputs for {len(outputs)} "
                             f"outputs")
    for i, out in enumerate(outputs):
        if not out.requires_grad:
            raise RuntimeError(f"grad: output {i} (shape {out.shape}) does not require grad and "
                               f"was not computed from any tensor that does")
    seeds = [_seed("grad", out, g, create_graph) for out, g in zip(outputs, grad_outputs)]
    retain = create_graph if retain_graph is None else retain_graph
    captured = _run_backward(list(outputs), seeds, retain, create_graph,
                             capture={id(t) for t in inputs})
    results = []
    for i, t in enumerate(inputs):
        g = captured.get(id(t))
        if g is None:
            if not allow_unused:
                raise RuntimeError(f"grad: input {i} (shape {t.shape}) was not used to compute "
                                   f"the outputs; pass allow_unused=True to get None for it")
            results.append(None)
            continue
        if not isinstance(g, Tensor):
            g = Tensor._wrap(np.asarray(g, dtype=t.dtype))      # no graph: a plain gradient
        results.append(g)
    return tuple(results)


def _backward_on_tensors(op, node, parents, gz):
    """op.backward(gz) with gz a Tensor, while every array the op saved that is one of its
    inputs' or its output's data stands for that tensor: the gradient is then recorded, and
    differentiating it differentiates through the inputs and the output."""
    standing = {id(t.data): t for t in parents}
    standing[id(node.data)] = node
    swapped = []
    try:
        for name in _saved_names(op):
            value = getattr(op, name, None)
            if type(value) is np.ndarray and id(value) in standing:
                swapped.append((name, value))
                setattr(op, name, standing[id(value)])
        return op.backward(gz)
    except TypeError as error:
        raise TypeError(
            f"{op.name}: its backward cannot run under create_graph=True (grad of a grad, "
            f"hessian, hvp, gradgradcheck), where it receives Tensors: {error}. Write it with "
            f"operators, Tensor methods (t.cos(), t.exp(), ...) or NumPy functions that have a "
            f"Tensor rule, or compute the value in forward and save it (it is then a "
            f"constant)") from error
    finally:
        for name, value in swapped:
            setattr(op, name, value)


def _saved_names(op):
    """The attributes an op can have saved: its classes' __slots__, and its __dict__."""
    return _slot_names(type(op)) + list(getattr(op, "__dict__", ()))


@functools.lru_cache(maxsize=None)
def _slot_names(cls):
    return [n for c in cls.__mro__ for n in c.__dict__.get("__slots__", ())
            if n not in ("__dict__", "__weakref__")]


@functools.lru_cache(maxsize=None)
def _output_names(cls):
    """The attributes an op class saves, beyond what every op has."""
    return [n for n in _slot_names(cls) if n not in ("needs_input_grad", "created_at")]


def _keep_output(op, scalar, array):
    """NumPy returns a scalar, not a 0-d array, for some 0-d results (np.exp of a 0-d array).
    The output tensor holds `array`; whatever the op saved of `scalar` becomes `array` too, so
    that the saved output stands for the output tensor under create_graph."""
    for name in _saved_names(op):
        if getattr(op, name, None) is scalar:
            setattr(op, name, array)


class Tensor:
    """An n-dimensional array (a 0-d tensor is a scalar) that can compute its gradients.

    Tensor(data, requires_grad=False, dtype=None) copies `data`, like torch.tensor: floats
    become float32 unless `dtype` says otherwise (a Tensor keeps its dtype); integer and
    boolean data stay as they are and cannot require grad. Tensor.from_numpy(array) shares the
    array instead, like torch.from_numpy.
    """
    __slots__ = ("data", "_grad", "requires_grad", "_ctx", "_parents", "_modules",
                 "__weakref__")

    def __init__(self, data, requires_grad=False, dtype=None):
        if isinstance(data, Tensor):
            data, dtype = data.data, data.data.dtype if dtype is None else dtype
        array = np.array(data, dtype=None if dtype is None else np.dtype(dtype))   # a copy
        if dtype is None and array.dtype.kind == "f" and array.dtype != _FLOAT_DEFAULT:
            array = array.astype(_FLOAT_DEFAULT)
        if _grad_mode.recorder is not None and isinstance(data, np.ndarray):
            _grad_mode.recorder.derive(lambda a: np.array(a, dtype=array.dtype), (data,), array)
        self._adopt(array, requires_grad)

    @staticmethod
    def from_numpy(array, requires_grad=False):
        """A tensor over `array` itself, without a copy: writes to either show in both. Every
        dtype is kept (float64 stays float64)."""
        if not isinstance(array, np.ndarray):
            raise TypeError(f"from_numpy: expected a NumPy array, got {type(array).__name__}")
        out = Tensor.__new__(Tensor)
        out._adopt(array, requires_grad)
        return out

    def _adopt(self, array, requires_grad):
        if array.dtype.kind not in "fiub":
            raise TypeError(f"Tensor: unsupported data type {array.dtype} (shape {array.shape})")
        if requires_grad and array.dtype.kind != "f":
            raise ValueError(f"Tensor: only floating-point tensors can require grad, "
                             f"got dtype {array.dtype} (shape {array.shape})")
        self.data = array
        self._grad = None
        self.requires_grad = bool(requires_grad)
        self._ctx = None
        self._parents = ()
        self._modules = ()

    @staticmethod
    def _wrap(array):
        """A tensor around an existing array, without the constructor's checks."""
        out = Tensor.__new__(Tensor)
        out.data, out._grad, out.requires_grad, out._ctx, out._parents = array, None, False, None, ()
        out._modules = ()
        return out

    # ------------------------------------------------------------------ operands and dtypes

    def _operand(self, value):
        """A non-Tensor operand as a Tensor. Python and NumPy numbers and arrays take this
        tensor's float dtype, so they never turn float32 work into float64; with an integer
        tensor, integer scalars take its dtype and float operands are float32."""
        if isinstance(value, Tensor):
            return value
        dtype = self.data.dtype
        if dtype.kind == "f" and type(value) in (float, int) and value:
            # the common case: a Python number, made into a constant tensor once per dtype.
            # Zero is never cached: 0.0 and -0.0 are equal keys but differ (1 / -0.0 = -inf).
            key = (value, dtype)
            constant = _CONSTANTS.get(key)
            if constant is None:
                if len(_CONSTANTS) > 1024:
                    _CONSTANTS.clear()
                constant = _CONSTANTS[key] = Tensor._wrap(np.array(value, dtype=dtype))
            return constant
        array = np.asarray(value)
        if array.dtype.kind not in "fiub":
            raise TypeError(f"cannot combine a tensor of shape {self.shape} with a "
                            f"{type(value).__name__} of dtype {array.dtype}")
        if dtype.kind == "f" or array.dtype.kind == "f" or (
                dtype.kind in "iu" and array.ndim == 0 and array.dtype.kind in "iu"):
            # floats take this tensor's float dtype (float32 for an integer tensor); an integer
            # scalar never widens an integer tensor
            target = dtype if dtype.kind == "f" or array.dtype.kind != "f" else _FLOAT_DEFAULT
            return Tensor._wrap(_traced(lambda a: np.asarray(a, dtype=target), array))
        return Tensor._wrap(array)

    def _binary(self, op_class, other, reverse=False):
        other = self._operand(other)
        a, b = (other, self) if reverse else (self, other)
        if a.data.dtype.kind != "f" or b.data.dtype.kind != "f":
            a, b = _common_float((a, b), force=op_class.float_result)
        try:
            return op_class.apply(a, b)
        except ValueError as error:
            if "broadcast" in str(error):
                raise ValueError(f"{op_class.name}: shapes {a.shape} and {b.shape} cannot be "
                                 f"broadcast together") from None
            raise

    # ------------------------------------------------------------------ backward

    def backward(self, grad=None, retain_graph=False):
        """Reverse-mode differentiation: add d(self)/d(leaf) * grad into every leaf's .grad.

        Iterative (no recursion limit). Unless `retain_graph`, each node's op and inputs are
        dropped as soon as its gradient has been passed on, so the graph can be freed.
        """
        if not self.requires_grad:
            raise RuntimeError(f"backward: this tensor (shape {self.shape}) does not require "
                               f"grad and was not computed from any tensor that does")
        _run_backward([self], [_seed("backward", self, grad, False)], retain_graph)

    def _accumulate(self, g, owned):
        """Add g into .grad. A fresh array that no other leaf holds becomes .grad as it is
        (ops never modify the gradients they pass on); anything else is copied first."""
        if g is None:
            return
        if self._grad is not None:
            self._grad += g
        elif (owned is not None and g.dtype == self.data.dtype and g.flags.owndata
              and g.flags.writeable and id(g) not in owned):
            owned.add(id(g))
            self._grad = g
        else:
            self._grad = np.array(g, dtype=self.data.dtype)

    @property
    def grad(self):
        """The accumulated gradient, a NumPy array of this tensor's shape (None until a backward
        reaches it)."""
        if _grad_mode.recorder is not None:
            _read(".grad")
        return self._grad

    @grad.setter
    def grad(self, value):
        self._grad = value

    # ------------------------------------------------------------------ basic attributes

    @property
    def shape(self):
        return self.data.shape

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self):
        return self.data.size

    def numpy(self):
        if _grad_mode.recorder is not None:
            _read("numpy()")
        return self.data

    def item(self):
        if _grad_mode.recorder is not None:
            _read("item()")
        if self.data.size != 1:
            raise ValueError(f"item: only a tensor with one element converts to a Python "
                             f"number, got shape {self.shape}")
        return self.data.item()

    def __len__(self):
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.data.shape[0]

    def __array__(self, dtype=None, copy=None):
        """np.asarray(t) shares the data; np.array(t) (copy=True) copies it, as for an
        ndarray; copy=False with another dtype is an error, as NumPy's."""
        if _grad_mode.recorder is not None:
            _read("np.asarray()")
        if dtype is None or np.dtype(dtype) == self.data.dtype:
            return self.data.copy() if copy else self.data
        if copy is False:
            raise ValueError(f"np.asarray: a tensor of dtype {self.dtype} cannot become "
                             f"{np.dtype(dtype)} without a copy (copy=False)")
        return self.data.astype(dtype)

    # NumPy's functions on tensors record the graph (numpy_interop.py has the rules)
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return _interop.array_ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return _interop.array_function(func, args, kwargs)

    def __repr__(self):
        if _grad_mode.recorder is not None:
            _read("repr() or print()")
        body = np.array2string(self.data, separator=", ", prefix="Tensor(")
        extras = "" if self.data.dtype == _FLOAT_DEFAULT else f", dtype={self.data.dtype}"
        if self.requires_grad:
            extras += ", requires_grad=True"
        if self._grad is not None and self.data.ndim == 0:
            extras += f", grad={self._grad.item():g}"
        return f"Tensor({body}{extras})"

    # ------------------------------------------------------------------ dtypes and flags

    def to(self, dtype):
        """This tensor as `dtype`. To another floating dtype it stays in the graph (the
        gradient is converted back); the same dtype gives this tensor itself; an integer or
        boolean dtype gives a tensor without gradient."""
        dtype = np.dtype(dtype)
        if dtype == self.data.dtype:
            return self
        if dtype.kind == "f":
            return ops.Cast.apply(self, dtype=dtype)
        if dtype.kind not in "iub":
            raise TypeError(f"to: unsupported data type {dtype} (tensor of shape {self.shape})")
        return Tensor._wrap(_traced(lambda a: a.astype(dtype), self.data))

    def astype(self, dtype):
        """NumPy's name for to(dtype)."""
        return self.to(dtype)

    def float(self):
        return self.to(np.float32)

    def double(self):
        return self.to(np.float64)

    def requires_grad_(self, requires_grad=True):
        """Set requires_grad in place and return this tensor, as PyTorch: a leaf starts or
        stops collecting gradients (freezing a layer); only floating tensors can require grad,
        and a tensor computed from others cannot be cut out of its graph this way (detach())."""
        if requires_grad and self.data.dtype.kind != "f":
            raise ValueError(f"requires_grad_: only floating-point tensors can require grad, "
                             f"got dtype {self.dtype} (shape {self.shape})")
        if not requires_grad and self._ctx is not None:
            raise RuntimeError(f"requires_grad_: this tensor (shape {self.shape}) was computed "
                               f"by {self._ctx.name}; only a leaf can stop requiring grad, "
                               f"use detach() for a copy cut from the graph")
        self.requires_grad = bool(requires_grad)
        return self

    def detach(self):
        """The same data (shared, same dtype), cut from the graph: no gradient flows back."""
        return Tensor._wrap(self.data)

    @replayable
    def zero_grad(self):
        self._grad = None

    # ------------------------------------------------------------------ Python protocols

    def __bool__(self):
        if _grad_mode.recorder is not None:
            _read("bool()")
        if self.data.size != 1:
            raise ValueError(f"bool: the truth value of a tensor of shape {self.shape} is "
                             f"ambiguous; only a one-element tensor converts")
        return bool(self.data)

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        if _grad_mode.recorder is not None:
            _read("use as an index")
        if self.data.dtype.kind not in "iu":
            raise TypeError(f"index: only an integer tensor can be an index, got {self.dtype}")
        return int(self.item())

    def __iter__(self):
        """Walks the first axis, as NumPy does: each row is recorded like t[i]."""
        if self.data.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.data.shape[0]))

    def __format__(self, spec):
        if not spec:
            return str(self)
        if self.data.ndim == 0:
            if _grad_mode.recorder is not None:
                _read("format()")
            return format(self.data.item(), spec)
        raise TypeError(f"format: the spec {spec!r} needs a 0-d tensor, got shape {self.shape}")

    def __abs__(self):
        return self.abs()

    # comparisons give boolean tensors, never recorded
    def _compare(self, ufunc, other):
        return Tensor._wrap(_traced(lambda a, b: np.asarray(ufunc(a, b)), self.data,
                                    self._operand(other).data))

    def __lt__(self, other): return self._compare(np.less, other)
    def __le__(self, other): return self._compare(np.less_equal, other)
    def __gt__(self, other): return self._compare(np.greater, other)
    def __ge__(self, other): return self._compare(np.greater_equal, other)
    def __eq__(self, other): return self._compare(np.equal, other)
    def __ne__(self, other): return self._compare(np.not_equal, other)
    __hash__ = object.__hash__      # tensors stay usable as dict keys and in sets, by identity

    # ------------------------------------------------------------------ arithmetic

    def __add__(self, other): return self._binary(ops.Add, other)
    def __radd__(self, other): return self._binary(ops.Add, other, reverse=True)
    def __sub__(self, other): return self._binary(ops.Sub, other)
    def __rsub__(self, other): return self._binary(ops.Sub, other, reverse=True)
    def __mul__(self, other): return self._binary(ops.Mul, other)
    def __rmul__(self, other): return self._binary(ops.Mul, other, reverse=True)
    def __truediv__(self, other): return self._binary(ops.Div, other)
    def __rtruediv__(self, other): return self._binary(ops.Div, other, reverse=True)
    def __rpow__(self, other): return self._binary(ops.Pow, other, reverse=True)
    def __neg__(self): return ops.Neg.apply(self)

    def __pow__(self, exponent):
        if isinstance(exponent, Tensor) or np.ndim(exponent) != 0 or self.data.dtype.kind != "f":
            return self._binary(ops.Pow, exponent)
        # a NumPy scalar or 0-d array as a Python number: it never changes the dtype
        return ops.PowConst.apply(self, exponent=np.asarray(exponent).item())

    def maximum(self, other): return self._binary(ops.Maximum, other)
    def minimum(self, other): return self._binary(ops.Minimum, other)

    # in place: `w -= lr * w.grad` on a weight would silently rebind w to a graph node
    def _in_place(self, ufunc, other, symbol):
        if self.requires_grad and _grad_mode.enabled:
            raise RuntimeError(
                f"{symbol}: cannot change a tensor that requires grad (shape {self.shape}) in "
                f"place: update its .data (w.data -= lr * w.grad) or do it inside "
                f"`with no_grad():`")
        value = other.data if isinstance(other, Tensor) else other
        if _grad_mode.recorder is not None:
            _grad_mode.recorder.effect(lambda a, v: ufunc(a, v, out=a), (self, value))
        try:
            ufunc(self.data, value, out=self.data)
        except (TypeError, ValueError) as error:        # dtype or shape that cannot fit
            raise type(error)(f"{symbol}: cannot update a tensor of shape {self.shape} and "
                              f"dtype {self.dtype} in place with shape {np.shape(value)}: "
                              f"{error}") from None
        return self

    def __iadd__(self, other): return self._in_place(np.add, other, "+=")
    def __isub__(self, other): return self._in_place(np.subtract, other, "-=")
    def __imul__(self, other): return self._in_place(np.multiply, other, "*=")
    def __itruediv__(self, other): return self._in_place(np.true_divide, other, "/=")

    def __matmul__(self, other):
        return Tensor._matmul(self, self._operand(other))

    def __rmatmul__(self, other):
        return Tensor._matmul(self._operand(other), self)

    def dot(self, other):
        """ndarray.dot: the matrix product for 1-d and 2-d operands (W.dot(X) in NumPy code)."""
        return np.dot(self, other)

    @staticmethod
    def _matmul(a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError(f"matmul: cannot multiply {a.shape} by {b.shape}: both inputs "
                             f"need at least one dimension")
        inner_a, inner_b = a.shape[-1], b.shape[0] if b.ndim == 1 else b.shape[-2]
        if inner_a != inner_b:
            raise ValueError(f"matmul: cannot multiply {a.shape} by {b.shape}: inner sizes "
                             f"{inner_a} and {inner_b} differ")
        a, b = _common_float((a, b))
        try:
            return ops.MatMul.apply(a, b)
        except ValueError:
            raise ValueError(f"matmul: cannot multiply {a.shape} by {b.shape}: batch "
                             f"dimensions cannot be broadcast together") from None

    # ------------------------------------------------------------------ elementwise functions

    def sin(self): return ops.Sin.apply(self)
    def cos(self): return ops.Cos.apply(self)
    def exp(self): return ops.Exp.apply(self)
    def log(self): return ops.Log.apply(self)
    def sqrt(self): return ops.Sqrt.apply(self)
    def abs(self): return ops.Abs.apply(self)
    def relu(self): return ops.ReLU.apply(self)
    def sigmoid(self): return ops.Sigmoid.apply(self)
    def tanh(self): return ops.Tanh.apply(self)

    def clip(self, lo=None, hi=None):
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"clip: lower bound {lo} is above upper bound {hi}")
        return ops.Clip.apply(self, lo=lo, hi=hi)

    def softmax(self, axis=-1):
        return ops.Softmax.apply(self, axis=_axis("softmax", axis, self.ndim, self.shape))

    def log_softmax(self, axis=-1):
        return ops.LogSoftmax.apply(self, axis=_axis("log_softmax", axis, self.ndim, self.shape))

    # ------------------------------------------------------------------ reductions

    def sum(self, axis=None, keepdims=False):
        return ops.Sum.apply(self, axis=_axes("sum", axis, self.ndim, self.shape),
                             keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        return ops.Mean.apply(self, axis=_axes("mean", axis, self.ndim, self.shape),
                              keepdims=keepdims)

    def var(self, axis=None, ddof=0, keepdims=False):
        """Variance over `axis`: the mean squared deviation from the mean, divided by n - ddof
        instead of n (NumPy's ddof: 0, the population variance, by default; 1 is PyTorch's
        default unbiased estimate). n - ddof <= 0 gives inf or NaN, as in NumPy."""
        axes = _axes("var", axis, self.ndim, self.shape)
        n = int(np.prod([self.shape[a] for a in (range(self.ndim) if axes is None else axes)]))
        centred = self - self.mean(axis=axes, keepdims=True)
        squares = (centred * centred).sum(axis=axes, keepdims=keepdims)
        with np.errstate(divide="ignore", invalid="ignore"):
            return squares / float(max(n - ddof, 0))

    def std(self, axis=None, ddof=0, keepdims=False):
        """Standard deviation: the square root of var(axis, ddof, keepdims). Where the
        variance is 0 the gradient is 0, as PyTorch's (not 0 * inf)."""
        var = self.var(axis=axis, ddof=ddof, keepdims=keepdims)
        zero = _traced(lambda v: v == 0, var.data)
        return np.where(zero, 0.0, np.where(zero, 1.0, var).sqrt())

    def max(self, axis=None, keepdims=False):
        """Largest element over `axis`. Tied maxima share the gradient evenly."""
        return self._extreme(ops.Max, axis, keepdims)

    def min(self, axis=None, keepdims=False):
        """Smallest element over `axis`. Tied minima share the gradient evenly."""
        return self._extreme(ops.Min, axis, keepdims)

    def _extreme(self, op_class, axis, keepdims):
        axis = _axes(op_class.name, axis, self.ndim, self.shape)
        reduced = range(self.ndim) if axis is None else axis
        if any(self.shape[a] == 0 for a in reduced):
            raise ValueError(f"{op_class.name}: cannot reduce over an empty axis of a tensor "
                             f"of shape {self.shape}")
        return op_class.apply(self, axis=axis, keepdims=keepdims)

    def argmax(self, axis=None):
        """Indices of the maxima (an integer tensor, no gradient)."""
        if axis is not None:
            axis = _axis("argmax", axis, self.ndim, self.shape)
        return Tensor._wrap(_traced(lambda a: np.asarray(a.argmax(axis=axis)), self.data))

    # ------------------------------------------------------------------ shape

    def reshape(self, *shape):
        shape = _shape("reshape", shape)
        try:
            return ops.Reshape.apply(self, shape=shape)
        except ValueError:
            raise ValueError(f"reshape: cannot reshape a tensor of shape {self.shape} "
                             f"({self.size} elements) to {shape}") from None

    def view(self, *shape):
        """As reshape (the data is always shared when NumPy can view it)."""
        return self.reshape(*shape)

    def flatten(self):
        return self.reshape(-1)

    def unsqueeze(self, axis):
        """A new axis of size 1 at `axis` (negative counts from the end of the result)."""
        axis = _axis("unsqueeze", axis, self.ndim + 1, self.shape)
        return self.reshape(self.shape[:axis] + (1,) + self.shape[axis:])

    def squeeze(self, axis=None):
        """Drop axes of size 1: every one, or those in `axis` (an int or a tuple); as in
        PyTorch, a named axis whose size is not 1 is left as it is."""
        axes = range(self.ndim) if axis is None else _axes("squeeze", axis, self.ndim,
                                                           self.shape)
        return self.reshape(tuple(n for i, n in enumerate(self.shape)
                                  if not (i in axes and n == 1)))

    def transpose(self, *axes):
        """NumPy's transpose on every rank: no axes reverses them, otherwise `axes` is a
        permutation of all of them. To exchange two axes, use swapaxes."""
        axes = _shape("transpose", axes)
        if not axes:
            axes = tuple(reversed(range(self.ndim)))
        perm = tuple(_axis("transpose", a, self.ndim, self.shape) for a in axes)
        if sorted(perm) != list(range(self.ndim)):
            raise ValueError(f"transpose: axes {axes} are not a permutation of the "
                             f"{self.ndim} axes of shape {self.shape}; to exchange two axes "
                             f"use swapaxes")
        return ops.Transpose.apply(self, axes=perm)

    def swapaxes(self, axis1, axis2):
        """Exchange two axes (torch.transpose(a, b) and np.swapaxes)."""
        perm = list(range(self.ndim))
        i, j = (_axis("swapaxes", a, self.ndim, self.shape) for a in (axis1, axis2))
        perm[i], perm[j] = perm[j], perm[i]
        return ops.Transpose.apply(self, axes=tuple(perm))

    @property
    def T(self):
        return self.transpose()

    def __getitem__(self, index):
        """Basic slicing, integer arrays and boolean masks (t[t > 0]), as in NumPy."""
        parts = index if isinstance(index, tuple) else (index,)
        parts = tuple(p.data if isinstance(p, Tensor) else np.asarray(p)
                      if isinstance(p, list) else p for p in parts)
        index = parts if isinstance(index, tuple) else parts[0]
        try:
            return ops.GetItem.apply(self, index=index, advanced=not _is_basic_index(index))
        except IndexError as error:
            raise IndexError(f"getitem: {error} (tensor of shape {self.shape})") from None

    @staticmethod
    def concat(tensors, axis=0):
        tensors = Tensor._joinable("concat", tensors)
        if tensors[0].ndim == 0:
            raise ValueError("concat: cannot join 0-d tensors; use stack")
        first = tensors[0].shape
        a = _axis("concat", axis, len(first), first)
        if not all(len(t.shape) == len(first) and t.shape[:a] + t.shape[a + 1:] ==
                   first[:a] + first[a + 1:] for t in tensors):
            raise ValueError(f"concat: shapes {[t.shape for t in tensors]} do not match "
                             f"along axis {axis}")
        return ops.Concat.apply(*tensors, axis=a)

    @staticmethod
    def cat(tensors, axis=0):
        """torch.cat: the same as concat."""
        return Tensor.concat(tensors, axis)

    @staticmethod
    def stack(tensors, axis=0):
        tensors = Tensor._joinable("stack", tensors)
        first = tensors[0].shape
        if not all(t.shape == first for t in tensors):
            raise ValueError(f"stack: shapes {[t.shape for t in tensors]} must all be equal")
        return ops.Stack.apply(*tensors, axis=_axis("stack", axis, len(first) + 1, first))

    @staticmethod
    def _joinable(op, tensors):
        tensors = [t if isinstance(t, Tensor) else Tensor(t) for t in tensors]
        if not tensors:
            raise ValueError(f"{op}: needs at least one tensor")
        return _common_float(tuple(tensors))

    # ------------------------------------------------------------------ constructors

    @staticmethod
    def zeros(*shape, requires_grad=False, dtype=_FLOAT_DEFAULT):
        return Tensor.from_numpy(np.zeros(_shape("zeros", shape), dtype=dtype), requires_grad)

    @staticmethod
    def ones(*shape, requires_grad=False, dtype=_FLOAT_DEFAULT):
        return Tensor.from_numpy(np.ones(_shape("ones", shape), dtype=dtype), requires_grad)

    @staticmethod
    def arange(start, stop=None, step=1, dtype=None):
        """Evenly spaced values in [start, stop), as torch.arange: integers give int64, any
        float gives float32 unless `dtype` says otherwise."""
        if stop is None:
            start, stop = 0, start
        if step == 0:
            raise ValueError("arange: step must not be zero")
        values = np.arange(start, stop, step)
        if dtype is None and values.dtype.kind == "f":
            dtype = _FLOAT_DEFAULT
        return Tensor.from_numpy(values if dtype is None else values.astype(dtype))

    @staticmethod
    def rand(*shape, seed=None, requires_grad=False, dtype=_FLOAT_DEFAULT):
        """Uniform samples in [0, 1); `seed` as in randn."""
        rng = np.random.default_rng(seed) if seed is not None else _rng
        data = rng.random(_shape("rand", shape)).astype(dtype)
        return Tensor.from_numpy(data, requires_grad)

    @staticmethod
    def randint(low, high, shape, seed=None):
        """Integers drawn uniformly from [low, high) (int64), as torch.randint."""
        if high <= low:
            raise ValueError(f"randint: high ({high}) must be above low ({low})")
        rng = np.random.default_rng(seed) if seed is not None else _rng
        shape = _shape("randint", (shape,) if isinstance(shape, (tuple, list)) else (shape,))
        return Tensor.from_numpy(rng.integers(low, high, size=shape, dtype=np.int64))

    @staticmethod
    def randn(*shape, seed=None, requires_grad=False, dtype=_FLOAT_DEFAULT):
        """Standard normal samples; `seed` gives a reproducible draw, otherwise the generator
        set by manual_seed is used."""
        rng = np.random.default_rng(seed) if seed is not None else _rng
        data = rng.standard_normal(_shape("randn", shape)).astype(dtype)
        return Tensor.from_numpy(data, requires_grad)


from . import numpy_interop as _interop  # noqa: E402  (it builds on Tensor, defined above)

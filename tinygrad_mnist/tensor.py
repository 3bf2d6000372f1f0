"""Tensor: a NumPy array that records the operations that produced it, and backward()."""
import contextlib
import gc
import os
import threading
import traceback

import numpy as np

from . import ops

_FLOAT_DEFAULT = np.dtype(np.float32)


class _GradMode(threading.local):
    enabled = True   # per thread: no_grad in one thread never switches recording off in another
    modules = ()     # the nn.Module calls under way, outermost first (drawings group by them)
    anomaly = False  # detect_anomaly(): check every op's output and gradients for NaN and inf


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


def _user_site():
    """'file:line: code' of the innermost caller outside this package."""
    for frame in reversed(traceback.extract_stack()[:-1]):
        if not os.path.abspath(frame.filename).startswith(_PACKAGE_DIR + os.sep):
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


def sum_to_shape(g, shape):
    """Undo NumPy broadcasting: add up every axis that was prepended or stretched."""
    lead = g.ndim - len(shape)
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


def _normalize_axis(op, axis, ndim, shape):
    """None, an int or a tuple of ints (negative allowed) -> None or a sorted tuple."""
    if axis is None:
        return None
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    out = []
    for a in axes:
        if not isinstance(a, (int, np.integer)) or not -ndim <= a < ndim:
            raise ValueError(f"{op}: axis {a} is out of range for a tensor of shape {shape}")
        out.append(int(a) % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: repeated axis in {axis} for a tensor of shape {shape}")
    return tuple(sorted(out))


def _is_basic_index(index):
    parts = index if isinstance(index, tuple) else (index,)
    return all(isinstance(p, (int, np.integer, slice)) or p is None or p is Ellipsis
               for p in parts)


class Tensor:
    """An n-dimensional array (a 0-d tensor is a scalar) that can compute its gradients.

    Tensor(data, requires_grad=False, dtype=None): floats become float32 unless `dtype` says
    otherwise; integer and boolean data stay as they are and cannot require grad. A NumPy
    array of the target dtype is used without a copy (like torch.from_numpy).
    """
    __slots__ = ("data", "grad", "requires_grad", "_ctx", "_parents", "_modules", "__weakref__")
    __array_ufunc__ = None      # `ndarray * tensor` must reach Tensor.__rmul__, not NumPy

    def __init__(self, data, requires_grad=False, dtype=None):
        if isinstance(data, Tensor):
            data = data.data
        if dtype is not None:
            array = np.asarray(data, dtype=np.dtype(dtype))
        else:
            array = np.asarray(data)
            if array.dtype.kind == "f" and array.dtype != _FLOAT_DEFAULT:
                array = array.astype(_FLOAT_DEFAULT)
        if array.dtype.kind not in "fiub":
            raise TypeError(f"Tensor: unsupported data type {array.dtype} (shape {array.shape})")
        if requires_grad and array.dtype.kind != "f":
            raise ValueError(f"Tensor: only floating-point tensors can require grad, "
                             f"got dtype {array.dtype} (shape {array.shape})")
        self.data = array
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._ctx = None
        self._parents = ()
        self._modules = ()

    # ------------------------------------------------------------------ graph recording

    @staticmethod
    def _apply(op_class, *inputs, **options):
        """Run op_class's forward on the inputs' arrays and, if any input needs a gradient,
        record the op and its inputs on the result."""
        op = op_class()
        data = op.forward(*[t.data for t in inputs], **options)
        out = Tensor.__new__(Tensor)
        out.data = data if type(data) is np.ndarray else np.asarray(data)
        out.grad = None
        if _grad_mode.anomaly:
            _anomaly_forward(op, inputs, out.data)
        needs = tuple([t.requires_grad for t in inputs]) if _grad_mode.enabled else (False,)
        if True in needs:
            op.needs_input_grad = needs
            out.requires_grad, out._ctx, out._parents = True, op, inputs
            out._modules = _grad_mode.modules
        else:
            out.requires_grad, out._ctx, out._parents, out._modules = False, None, (), ()
        return out

    @staticmethod
    def _wrap(array):
        """A tensor around an existing array, without the constructor's checks."""
        out = Tensor.__new__(Tensor)
        out.data, out.grad, out.requires_grad, out._ctx, out._parents = array, None, False, None, ()
        out._modules = ()
        return out

    def _constant(self, value):
        """A non-Tensor operand as a Tensor; floats take this tensor's float dtype so that a
        Python or NumPy number never turns float32 work into float64."""
        if isinstance(value, Tensor):
            return value
        dtype = self.data.dtype if self.data.dtype.kind == "f" else None
        if dtype is not None and type(value) in (float, int):
            # the common case: a Python number, made into a constant tensor once per dtype
            key = (value, dtype)
            constant = _CONSTANTS.get(key)
            if constant is None:
                if len(_CONSTANTS) > 1024:
                    _CONSTANTS.clear()
                constant = _CONSTANTS[key] = Tensor._wrap(np.array(value, dtype=dtype))
            return constant
        array = np.asarray(value)
        if dtype is not None and array.dtype.kind in "fiub":
            return Tensor(array, dtype=dtype)
        return Tensor(array)

    def _binary(self, op_class, other, reverse=False):
        other = self._constant(other)
        a, b = (other, self) if reverse else (self, other)
        try:
            return Tensor._apply(op_class, a, b)
        except ValueError as error:
            if "broadcast" in str(error):
                raise ValueError(f"{op_class.__name__.lower()}: shapes {a.shape} and {b.shape} "
                                 f"cannot be broadcast together") from None
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
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward: a gradient can only be implied for a scalar "
                                   f"output, got shape {self.shape}; pass grad= of that shape")
            grad = np.ones_like(self.data)
        else:
            grad = np.array(grad.data if isinstance(grad, Tensor) else grad, dtype=self.dtype)
            if grad.shape != self.shape:
                raise ValueError(f"backward: grad has shape {grad.shape} but the tensor has "
                                 f"shape {self.shape}")
        # Backward creates no reference cycles, so the cyclic collector has nothing to find;
        # pausing it saves a third of the time on graphs of millions of nodes.
        collecting = gc.isenabled()
        gc.disable()
        try:
            self._backward(grad, retain_graph)
        finally:
            if collecting:
                gc.enable()

    def _backward(self, grad, retain_graph):
        # Count, for every tensor behind self, the ops that consume it; a tensor's gradient is
        # complete, and its own op can run backward, once all of them have passed theirs on.
        pending, stack = {}, [self]
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
        anomaly = _grad_mode.anomaly
        grads = {id(self): grad}
        owned = set()            # arrays already stored as some leaf's .grad in this pass
        ready = [self]
        while ready:
            node = ready.pop()
            g = grads.pop(id(node), None)
            op, parents = node._ctx, node._parents
            if op is _RELEASED:
                raise RuntimeError("backward: the graph behind this tensor was already freed by "
                                   "an earlier backward(); pass retain_graph=True to the first "
                                   "call to run backward twice")
            if op is None:
                node._accumulate(g, owned)
                continue
            if retain_graph:
                node._accumulate(g, None)            # every node keeps its .grad, as a copy
            else:
                node._ctx, node._parents = _RELEASED, ()
            input_grads = () if g is None else op.backward(g)
            if len(parents) == 1 and g is not None:
                input_grads = (input_grads,)
            if anomaly and g is not None:
                _anomaly_backward(op, parents, input_grads)
            for i, parent in enumerate(parents):
                if not parent.requires_grad:
                    continue
                key = id(parent)
                pg = input_grads[i] if input_grads else None
                if pg is not None:
                    if pg.shape != parent.data.shape:
                        pg = sum_to_shape(pg, parent.data.shape)
                    previous = grads.get(key)
                    grads[key] = pg if previous is None else previous + pg
                pending[key] -= 1
                if pending[key] == 0:
                    ready.append(parent)

    def _accumulate(self, g, owned):
        """Add g into .grad. A fresh array that no other leaf holds becomes .grad as it is
        (ops never modify the gradients they pass on); anything else is copied first."""
        if g is None:
            return
        if self.grad is not None:
            self.grad += g
        elif (owned is not None and g.dtype == self.data.dtype and g.flags.owndata
              and g.flags.writeable and id(g) not in owned):
            owned.add(id(g))
            self.grad = g
        else:
            self.grad = np.array(g, dtype=self.data.dtype)

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
        return self.data

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item: only a tensor with one element converts to a Python "
                             f"number, got shape {self.shape}")
        return self.data.item()

    def __len__(self):
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.data.shape[0]

    def __array__(self, dtype=None, copy=None):
        return self.data if dtype is None else self.data.astype(dtype)

    def __repr__(self):
        body = np.array2string(self.data, separator=", ", prefix="Tensor(")
        extras = "" if self.data.dtype == _FLOAT_DEFAULT else f", dtype={self.data.dtype}"
        if self.requires_grad:
            extras += ", requires_grad=True"
        if self.grad is not None and self.data.ndim == 0:
            extras += f", grad={self.grad.item():g}"
        return f"Tensor({body}{extras})"

    def detach(self):
        """The same data, cut from the graph: no gradient flows through the result."""
        return Tensor(self.data)

    def zero_grad(self):
        self.grad = None

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
    def __neg__(self): return Tensor._apply(ops.Neg, self)

    def __pow__(self, exponent):
        if isinstance(exponent, Tensor):
            return self._binary(ops.Pow, exponent)
        if np.ndim(exponent) != 0:
            return self._binary(ops.Pow, exponent)
        return Tensor._apply(ops.PowConst, self, exponent=exponent)

    def maximum(self, other): return self._binary(ops.Maximum, other)
    def minimum(self, other): return self._binary(ops.Minimum, other)

    def __matmul__(self, other):
        return Tensor._matmul(self, self._constant(other))

    def __rmatmul__(self, other):
        return Tensor._matmul(self._constant(other), self)

    @staticmethod
    def _matmul(a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError(f"matmul: cannot multiply {a.shape} by {b.shape}: both inputs "
                             f"need at least one dimension")
        inner_a, inner_b = a.shape[-1], b.shape[0] if b.ndim == 1 else b.shape[-2]
        if inner_a != inner_b:
            raise ValueError(f"matmul: cannot multiply {a.shape} by {b.shape}: inner sizes "
                             f"{inner_a} and {inner_b} differ")
        try:
            return Tensor._apply(ops.MatMul, a, b)
        except ValueError:
            raise ValueError(f"matmul: cannot multiply {a.shape} by {b.shape}: batch "
                             f"dimensions cannot be broadcast together") from None

    # ------------------------------------------------------------------ elementwise functions

    def exp(self): return Tensor._apply(ops.Exp, self)
    def log(self): return Tensor._apply(ops.Log, self)
    def sqrt(self): return Tensor._apply(ops.Sqrt, self)
    def abs(self): return Tensor._apply(ops.Abs, self)
    def relu(self): return Tensor._apply(ops.ReLU, self)
    def sigmoid(self): return Tensor._apply(ops.Sigmoid, self)
    def tanh(self): return Tensor._apply(ops.Tanh, self)

    def clip(self, lo=None, hi=None):
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"clip: lower bound {lo} is above upper bound {hi}")
        return Tensor._apply(ops.Clip, self, lo=lo, hi=hi)

    def softmax(self, axis=-1):
        return Tensor._apply(ops.Softmax, self, axis=self._one_axis("softmax", axis))

    def log_softmax(self, axis=-1):
        return Tensor._apply(ops.LogSoftmax, self, axis=self._one_axis("log_softmax", axis))

    def _one_axis(self, op, axis):
        return _normalize_axis(op, axis, self.ndim, self.shape)[0]

    # ------------------------------------------------------------------ reductions

    def sum(self, axis=None, keepdims=False):
        axis = _normalize_axis("sum", axis, self.ndim, self.shape)
        return Tensor._apply(ops.Sum, self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        axis = _normalize_axis("mean", axis, self.ndim, self.shape)
        return Tensor._apply(ops.Mean, self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims=False):
        """Largest element over `axis`. Tied maxima share the gradient evenly."""
        axis = _normalize_axis("max", axis, self.ndim, self.shape)
        if self.size == 0:
            raise ValueError(f"max: cannot take the maximum of an empty tensor of shape "
                             f"{self.shape}")
        return Tensor._apply(ops.Max, self, axis=axis, keepdims=keepdims)

    def argmax(self, axis=None):
        """Indices of the maxima (an integer tensor, no gradient)."""
        if axis is not None:
            axis = self._one_axis("argmax", axis)
        return Tensor(self.data.argmax(axis=axis))

    # ------------------------------------------------------------------ shape

    def reshape(self, *shape):
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) \
            else shape
        try:
            return Tensor._apply(ops.Reshape, self, shape=shape)
        except ValueError:
            raise ValueError(f"reshape: cannot reshape a tensor of shape {self.shape} "
                             f"({self.size} elements) to {shape}") from None

    def flatten(self):
        return self.reshape(-1)

    def transpose(self, *axes):
        """NumPy's transpose: no axes reverses them, otherwise a full permutation. Two axes on a
        tensor of more than two dimensions swap just those two, as torch.transpose does."""
        axes = tuple(axes[0]) if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
        if not axes:
            axes = tuple(reversed(range(self.ndim)))
        elif len(axes) == 2 and self.ndim > 2:
            i, j = (self._one_axis("transpose", a) for a in axes)
            perm = list(range(self.ndim))
            perm[i], perm[j] = perm[j], perm[i]
            axes = tuple(perm)
        if sorted(_normalize_axis("transpose", a, self.ndim, self.shape)[0] for a in axes) \
                != list(range(self.ndim)):
            raise ValueError(f"transpose: axes {axes} are not a permutation of the "
                             f"{self.ndim} axes of shape {self.shape}")
        return Tensor._apply(ops.Transpose, self, axes=tuple(a % self.ndim for a in axes))

    @property
    def T(self):
        return self.transpose()

    def __getitem__(self, index):
        if isinstance(index, Tensor):
            index = index.data
        elif isinstance(index, tuple):
            index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
        elif isinstance(index, list):
            index = np.asarray(index)
        basic = _is_basic_index(index)
        if not basic:
            index = tuple(np.asarray(i) if isinstance(i, list) else i for i in
                          (index if isinstance(index, tuple) else (index,)))
            index = tuple(np.nonzero(i)[0] if isinstance(i, np.ndarray) and i.dtype == bool
                          and i.ndim == 1 else i for i in index)
        try:
            return Tensor._apply(ops.GetItem, self, index=index, advanced=not basic)
        except IndexError as error:
            raise IndexError(f"getitem: {error} (tensor of shape {self.shape})") from None

    @staticmethod
    def concat(tensors, axis=0):
        tensors = [t if isinstance(t, Tensor) else Tensor(t) for t in tensors]
        Tensor._check_joinable("concat", tensors, axis, new_axis=False)
        axis = _normalize_axis("concat", axis, tensors[0].ndim, tensors[0].shape)[0]
        return Tensor._apply(ops.Concat, *tensors, axis=axis)

    @staticmethod
    def stack(tensors, axis=0):
        tensors = [t if isinstance(t, Tensor) else Tensor(t) for t in tensors]
        Tensor._check_joinable("stack", tensors, axis, new_axis=True)
        ndim = tensors[0].ndim + 1
        axis = _normalize_axis("stack", axis, ndim, tensors[0].shape)[0]
        return Tensor._apply(ops.Stack, *tensors, axis=axis)

    @staticmethod
    def _check_joinable(op, tensors, axis, new_axis):
        shapes = [t.shape for t in tensors]
        if not tensors:
            raise ValueError(f"{op}: needs at least one tensor")
        first = shapes[0]
        if new_axis:
            ok = all(s == first for s in shapes)
        else:
            if tensors[0].ndim == 0:
                raise ValueError(f"{op}: cannot join 0-d tensors; use stack")
            a = _normalize_axis(op, axis, len(first), first)[0]
            ok = all(len(s) == len(first) and s[:a] + s[a + 1:] == first[:a] + first[a + 1:]
                     for s in shapes)
        if not ok:
            raise ValueError(f"{op}: shapes {shapes} do not match along axis {axis}")

    # ------------------------------------------------------------------ constructors

    @staticmethod
    def _shape_args(shape):
        return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) \
            else shape

    @staticmethod
    def zeros(*shape, requires_grad=False, dtype=_FLOAT_DEFAULT):
        return Tensor(np.zeros(Tensor._shape_args(shape), dtype=dtype), requires_grad)

    @staticmethod
    def ones(*shape, requires_grad=False, dtype=_FLOAT_DEFAULT):
        return Tensor(np.ones(Tensor._shape_args(shape), dtype=dtype), requires_grad)

    @staticmethod
    def randn(*shape, seed=None, requires_grad=False, dtype=_FLOAT_DEFAULT):
        """Standard normal samples; `seed` gives a reproducible draw, otherwise the generator
        set by manual_seed is used."""
        rng = np.random.default_rng(seed) if seed is not None else _rng
        data = rng.standard_normal(Tensor._shape_args(shape)).astype(dtype)
        return Tensor(data, requires_grad)

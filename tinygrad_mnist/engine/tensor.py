"""Tensor: a NumPy array that records the operations that produced it, and backward().

Every op runs through `record` (Op.apply), the one forward choke point: it runs the op's
forward on the inputs' arrays, links the result to the op when the graph is recorded, and
tells the attached observers. backward() hands the graph to graph.run_backward.
"""
import weakref

import numpy as np

from . import ops
from .arguments import axes, is_basic_index, single_axis, sizes
from .graph import (CHANGED, IN_PLACE_SEEN, RELEASED, history_of, keep_output, run_backward,
                    saved_names, version_of)
from .mode import MODE, derived, notify_effect, notify_read, tell

_FLOAT_DEFAULT = np.dtype(np.float32)
_CONSTANTS = {}    # (Python number, dtype) -> constant tensor; never written to, so shareable
# needs_input_grad of one or two inputs, made once: a graph of millions of ops holds no tuple
# of its own per op for them
_NEEDS = {a: {None: (a,), **{b: (a, b) for b in (False, True)}} for a in (False, True)}
# once an in-place op has been recorded, ops note their inputs' versions (graph.py follows an
# input changed in place since back to the node it was); before that nobody pays for it
_IN_PLACE_SEEN = IN_PLACE_SEEN


# tensors a transform made as stand-ins while tracing (vmap's one example): using one after the
# transform returned would silently give the stand-in's value, so it is an error naming why
_ESCAPED = {}          # id(tensor) -> (weak reference, message)


def mark_escaped(tensor, message):
    """Make every later op on `tensor` an error saying `message` (until it is freed)."""
    key = id(tensor)
    _ESCAPED[key] = (weakref.ref(tensor, lambda _, key=key: _ESCAPED.pop(key, None)), message)


def _check_escaped(op_class, inputs):
    for t in inputs:
        entry = _ESCAPED.get(id(t))
        if entry is not None and entry[0]() is t:
            raise RuntimeError(f"{op_class.name}: {entry[1]}")


def _common_float(tensors, force=False):
    """An op keeps its floating inputs' dtype: integer tensors combined with floating ones take
    the floats' dtype, and with `force` (ops whose result is always real, such as division)
    integer-only inputs become float32."""
    floats = [t._data.dtype for t in tensors if t._data.dtype.kind == "f"]
    if len(floats) == len(tensors) or not (floats or force):
        return tensors
    target = np.result_type(*floats) if floats else _FLOAT_DEFAULT
    return tuple(t if t._data.dtype.kind == "f" else ops.Cast.apply(t, dtype=target)
                 for t in tensors)


# ---------------------------------------------------------------- recording an op

def record(op_class, inputs, options):
    """Op.apply: run op_class's forward on the inputs' arrays and, if an input requires grad
    and the result is floating point, record the op (with its inputs and options) on the
    result. Observers hear of every op, recorded or not."""
    for t in inputs:
        if type(t) is not Tensor:
            i = [type(u) is Tensor for u in inputs].index(False)
            raise TypeError(f"{op_class.name}: input {i} is a {type(inputs[i]).__name__}, not "
                            f"a Tensor; wrap it with Tensor(...)")
    if _ESCAPED:
        _check_escaped(op_class, inputs)
    if op_class.float_result:
        for t in inputs:
            if t._data.dtype.kind != "f":
                inputs = _common_float(inputs, force=True)
                break
    op = op_class()
    mode = MODE
    observers = mode.observers
    if observers:
        op.inputs, op.options = inputs, options
        if "before_op" in observers.hooks:
            tell(observers, "before_op", op, inputs)
    # the common arities called directly: this is the hot path of every op
    if len(inputs) == 2:
        a, b = inputs
        data = op.forward(a._data, b._data, **options) if options else \
            op.forward(a._data, b._data)
        needs = _NEEDS[a.requires_grad][b.requires_grad]
    elif len(inputs) == 1:
        data = op.forward(inputs[0]._data, **options)
        needs = _NEEDS[inputs[0].requires_grad][None]
    else:
        data = op.forward(*[t._data for t in inputs], **options)
        needs = tuple([t.requires_grad for t in inputs])
    if type(data) is not np.ndarray:
        scalar, data = data, np.asarray(data)
        keep_output(op, scalar, data)
    out = Tensor.__new__(Tensor)
    out._data = data
    out._grad = None
    if True in needs and mode.grad_enabled and data.dtype.kind == "f":
        op.inputs, op.options, op.needs_input_grad = inputs, options, needs
        out.requires_grad, out._ctx = True, op
        if _IN_PLACE_SEEN[0]:
            op.versions = tuple([version_of(t) for t in inputs])
    else:
        out.requires_grad, out._ctx = False, None
    if observers and "on_op" in observers.hooks:
        tell(observers, "on_op", op, inputs, out)
    return out


def freed_output(array):
    """A tensor holding `array` as an output whose graph backward() has freed: it requires
    grad, t.op is None, and backward() on it says the graph was freed (what a jit replay
    returns for such an output, as eager execution would)."""
    out = Tensor._wrap(array)
    out.requires_grad, out._ctx = True, RELEASED
    return out


def seed_gradient(op, output, grad, create_graph):
    """The gradient that starts backward at `output`: ones for one element, else `grad`."""
    if grad is None:
        if output._data.size != 1:
            raise RuntimeError(f"{op}: a gradient can only be implied for a one-element output, "
                               f"got shape {output.shape}; pass one of that shape")
        grad = np.ones_like(output._data)
    elif isinstance(grad, Tensor) and create_graph:
        if grad.shape != output.shape:
            raise ValueError(f"{op}: the gradient has shape {grad.shape} but the output has "
                             f"shape {output.shape}")
        return grad
    else:
        if isinstance(grad, Tensor):
            grad = grad._data
        grad = derived(lambda g: np.array(g, dtype=output._data.dtype), np.asarray(grad))
        if grad.shape != output.shape:
            raise ValueError(f"{op}: the gradient has shape {grad.shape} but the output has "
                             f"shape {output.shape}")
    return Tensor._wrap(grad) if create_graph else grad


class Tensor:
    """An n-dimensional array (a 0-d tensor is a scalar) that can compute its gradients.

    Tensor(data, requires_grad=False, dtype=None) copies `data`, like torch.tensor: floats
    become float32 unless `dtype` says otherwise (a Tensor keeps its dtype); integer and
    boolean data stay as they are and cannot require grad. Tensor.from_numpy(array) shares the
    array instead, like torch.from_numpy.
    """
    __slots__ = ("_data", "_grad", "requires_grad", "_ctx", "_pending", "__weakref__")

    def __init__(self, data, requires_grad=False, dtype=None):
        if isinstance(data, Tensor):
            data, dtype = data._data, data._data.dtype if dtype is None else dtype
        target = None if dtype is None else np.dtype(dtype)
        if isinstance(data, np.ndarray):
            if target is None:
                target = _FLOAT_DEFAULT if data.dtype.kind == "f" else data.dtype
            # a copy of an array the caller has: observers see it (a jit copies it again)
            array = derived(lambda a: np.array(a, dtype=target), data)
        else:
            array = np.array(data, dtype=target)                              # a copy
            if target is None and array.dtype.kind == "f" and array.dtype != _FLOAT_DEFAULT:
                array = array.astype(_FLOAT_DEFAULT)
        self._adopt(array, requires_grad)
        if MODE.observers:
            tell(MODE.observers, "on_new_tensor", self)

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
        self._data = array
        self._grad = None
        self.requires_grad = bool(requires_grad)
        self._ctx = None

    _common_float = staticmethod(_common_float)     # the dtype rule, for numpy_interop

    @staticmethod
    def _wrap(array):
        """A tensor around an existing array, without the constructor's checks."""
        out = Tensor.__new__(Tensor)
        out._data, out._grad, out.requires_grad, out._ctx = array, None, False, None
        return out

    # ------------------------------------------------------------------ operands and dtypes

    def _operand(self, value):
        """A non-Tensor operand as a Tensor. Python and NumPy numbers and arrays take this
        tensor's float dtype, so they never turn float32 work into float64; with an integer
        tensor, integer scalars take its dtype and float operands are float32."""
        if isinstance(value, Tensor):
            return value
        dtype = self._data.dtype
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
            return Tensor._wrap(derived(lambda a: np.asarray(a, dtype=target), array))
        return Tensor._wrap(array)

    def _binary(self, op_class, other, reverse=False):
        if type(other) is not Tensor:
            other = self._operand(other)
        a, b = (other, self) if reverse else (self, other)
        if a._data.dtype.kind != "f" or b._data.dtype.kind != "f":
            a, b = _common_float((a, b), force=op_class.float_result)
        try:
            return record(op_class, (a, b), {})
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
        run_backward([self], [seed_gradient("backward", self, grad, False)], retain_graph)

    def _accumulate(self, g, owned):
        """Add g into .grad. A fresh array that no other leaf holds becomes .grad as it is
        (ops never modify the gradients they pass on); anything else is copied first."""
        if g is None:
            return
        if self._grad is not None:
            self._grad += g
        elif (owned is not None and g.dtype == self._data.dtype and g.flags.owndata
              and g.flags.writeable and id(g) not in owned):
            owned.add(id(g))
            self._grad = g
        else:
            self._grad = np.array(g, dtype=self._data.dtype)

    @property
    def grad(self):
        """The accumulated gradient, a NumPy array of this tensor's shape (None until a backward
        reaches it)."""
        if MODE.observers:
            notify_read(self, ".grad")
        return self._grad

    @grad.setter
    def grad(self, value):
        if MODE.observers:
            notify_effect("grad", self, value)
        self._grad = value

    @property
    def data(self):
        """The values, a NumPy array (shared: writing to it changes the tensor)."""
        if MODE.observers:
            notify_read(self, ".data")
        return self._data

    @data.setter
    def data(self, value):
        if MODE.observers:
            notify_effect("data", self, value)
        self._data = value

    # ------------------------------------------------------------------ the graph, read-only

    @property
    def op(self):
        """The Op that produced this tensor (None for leaves and constants, and once backward()
        has freed the graph); op.inputs are its input tensors."""
        op = self._ctx
        return None if op is RELEASED else op

    @property
    def is_leaf(self):
        """Made by no recorded op: a parameter, an input or a constant."""
        return self._ctx is None

    @property
    def graph_freed(self):
        """True once a backward() without retain_graph has freed the graph behind this tensor."""
        return self._ctx is RELEASED

    # ------------------------------------------------------------------ basic attributes

    @property
    def shape(self):
        return self._data.shape

    @property
    def ndim(self):
        return self._data.ndim

    @property
    def dtype(self):
        return self._data.dtype

    @property
    def size(self):
        return self._data.size

    def _read(self, what):
        """The values, leaving the engine for Python: the one accessor every value-reading
        method uses, which tells observers (a jit must not replay a branch on a value)."""
        if MODE.observers:
            notify_read(self, what)
        return self._data

    def numpy(self):
        return self._read("numpy()")

    def item(self):
        data = self._read("item()")
        if data.size != 1:
            raise ValueError(f"item: only a tensor with one element converts to a Python "
                             f"number, got shape {self.shape}")
        return data.item()

    def tolist(self):
        """The values as (nested) Python lists, as NumPy's and PyTorch's tolist()."""
        return self._read("tolist()").tolist()

    def __len__(self):
        if self._data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self._data.shape[0]

    def __array__(self, dtype=None, copy=None):
        """np.asarray(t) shares the data; np.array(t) (copy=True) copies it, as for an
        ndarray; copy=False with another dtype is an error, as NumPy's."""
        data = self._read("np.asarray()")
        if dtype is None or np.dtype(dtype) == data.dtype:
            return data.copy() if copy else data
        if copy is False:
            raise ValueError(f"np.asarray: a tensor of dtype {self.dtype} cannot become "
                             f"{np.dtype(dtype)} without a copy (copy=False)")
        return self._data.astype(dtype)

    # NumPy's functions on tensors record the graph (numpy_interop.py has the rules)
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return _interop.array_ufunc(Tensor, ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return _interop.array_function(Tensor, func, args, kwargs)

    def __repr__(self):
        body = np.array2string(self._read("repr() or print()"), separator=", ", prefix="Tensor(")
        extras = "" if self._data.dtype == _FLOAT_DEFAULT else f", dtype={self._data.dtype}"
        if self.requires_grad:
            extras += ", requires_grad=True"
        if self._grad is not None and self._data.ndim == 0:
            extras += f", grad={self._grad.item():g}"
        return f"Tensor({body}{extras})"

    # ------------------------------------------------------------------ dtypes and flags

    def to(self, dtype):
        """This tensor as `dtype`. To another floating dtype it stays in the graph (the
        gradient is converted back); the same dtype gives this tensor itself; an integer or
        boolean dtype gives a tensor without gradient."""
        dtype = np.dtype(dtype)
        if dtype == self._data.dtype:
            return self
        if dtype.kind == "f":
            return ops.Cast.apply(self, dtype=dtype)
        if dtype.kind not in "iub":
            raise TypeError(f"to: unsupported data type {dtype} (tensor of shape {self.shape})")
        return ops.Cast.apply(self, dtype=dtype)

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
        if requires_grad and self._data.dtype.kind != "f":
            raise ValueError(f"requires_grad_: only floating-point tensors can require grad, "
                             f"got dtype {self.dtype} (shape {self.shape})")
        if not requires_grad and self._ctx is not None:
            raise RuntimeError(f"requires_grad_: this tensor (shape {self.shape}) was computed "
                               f"by {self._ctx.name}; only a leaf can stop requiring grad, "
                               f"use detach() for a copy cut from the graph")
        if MODE.observers and bool(requires_grad) != self.requires_grad:
            notify_effect("requires_grad", self, bool(requires_grad))
        self.requires_grad = bool(requires_grad)
        return self

    def detach(self):
        """The same data (shared, same dtype), cut from the graph: no gradient flows back."""
        return Tensor._wrap(self._data)

    def zero_grad(self):
        self._grad = None

    # ------------------------------------------------------------------ Python protocols

    def __bool__(self):
        data = self._read("bool()")
        if data.size != 1:
            raise ValueError(f"bool: the truth value of a tensor of shape {self.shape} is "
                             f"ambiguous; only a one-element tensor converts")
        return bool(data)

    def __float__(self):
        data = self._read("float()")
        if data.size != 1:
            raise ValueError(f"float: only a tensor with one element converts, got shape "
                             f"{self.shape}")
        return float(data.item())

    def __int__(self):
        data = self._read("int()")
        if data.size != 1:
            raise ValueError(f"int: only a tensor with one element converts, got shape "
                             f"{self.shape}")
        return int(data.item())

    def __index__(self):
        data = self._read("use as an index")
        if data.dtype.kind not in "iu" or data.size != 1:
            raise TypeError(f"index: only a one-element integer tensor can be an index, got "
                            f"dtype {self.dtype} and shape {self.shape}")
        return int(data.item())

    def __iter__(self):
        """Walks the first axis, as NumPy does: each row is recorded like t[i]."""
        if self._data.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self._data.shape[0]))

    def __format__(self, spec):
        if not spec:
            return str(self)
        if self._data.ndim == 0:
            return format(self._read("format()").item(), spec)
        raise TypeError(f"format: the spec {spec!r} needs a 0-d tensor, got shape {self.shape}")

    def __abs__(self):
        return self.abs()

    # comparisons give boolean tensors, never recorded
    def _compare(self, ufunc, other):
        return ops.Compare.apply(self, self._operand(other), ufunc=ufunc)

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
        if isinstance(exponent, Tensor) or np.ndim(exponent) != 0 or self._data.dtype.kind != "f":
            return self._binary(ops.Pow, exponent)
        # a NumPy scalar or 0-d array as a Python number: it never changes the dtype
        return ops.PowConst.apply(self, exponent=np.asarray(exponent).item())

    def maximum(self, other): return self._binary(ops.Maximum, other)
    def minimum(self, other): return self._binary(ops.Minimum, other)

    # in place: `w -= lr * w.grad` on a weight would silently rebind w to a graph node
    def _in_place(self, op_class, ufunc, other, symbol):
        if self.requires_grad and self._ctx is None and MODE.grad_enabled:
            raise RuntimeError(
                f"{symbol}: cannot change a tensor that requires grad (shape {self.shape}) in "
                f"place: update its .data (w.data -= lr * w.grad) or do it inside "
                f"`with no_grad():`")
        recorded = MODE.grad_enabled and (self.requires_grad or (
            isinstance(other, Tensor) and other.requires_grad))
        if recorded or (MODE.observers and any(getattr(o, "follows_in_place", False)
                                               for o in MODE.observers)):
            return self._in_place_as_op(op_class, other, symbol, recorded)
        value = other._data if isinstance(other, Tensor) else other
        if MODE.observers:
            notify_effect("in_place", self, (ufunc, value))
        try:
            ufunc(self._data, value, out=self._data)
        except (TypeError, ValueError) as error:        # dtype or shape that cannot fit
            raise type(error)(f"{symbol}: cannot update a tensor of shape {self.shape} and "
                              f"dtype {self.dtype} in place with shape {np.shape(value)}: "
                              f"{error}") from None
        return self

    def _in_place_as_op(self, op_class, other, symbol, recorded):
        """t op= other as PyTorch does it: the op computed from t's value until now (a tensor
        of its own, `old`), written into t's array, and t the op's output from then on (when
        the graph is recorded); observers are told ("in_place_snapshot", then
        "in_place_result") so that tangents and traces follow t."""
        old = Tensor.__new__(Tensor)
        old._data = derived(np.copy, self._data)
        old._grad, old.requires_grad, old._ctx = None, self.requires_grad, self._ctx
        if MODE.observers:
            notify_effect("in_place_snapshot", self, old)
        result = old._binary(op_class, other)
        if result.shape != self.shape:
            raise ValueError(f"{symbol}: cannot update a tensor of shape {self.shape} in place "
                             f"with a result of shape {result.shape}")
        if result.dtype != self.dtype:
            result = result.to(self.dtype)
        np.copyto(self._data, result._data)
        if MODE.observers:
            notify_effect("in_place_result", self, result)
        if recorded and result._ctx is not None:
            op, version = result._ctx, version_of(self)
            for name in saved_names(op):          # its saved output is this tensor's array
                if getattr(op, name, None) is result._data:
                    setattr(op, name, self._data)
            history = dict(history_of(self))
            history[version] = old                  # earlier ops' input, by its version
            key = id(self)
            CHANGED[key] = (weakref.ref(self, lambda _, key=key: CHANGED.pop(key, None)),
                             version + 1, history)
            self._ctx, self.requires_grad = op, True
            _IN_PLACE_SEEN[0] = True
        return self

    def __iadd__(self, other): return self._in_place(ops.Add, np.add, other, "+=")
    def __isub__(self, other): return self._in_place(ops.Sub, np.subtract, other, "-=")
    def __imul__(self, other): return self._in_place(ops.Mul, np.multiply, other, "*=")
    def __itruediv__(self, other): return self._in_place(ops.Div, np.true_divide, other, "/=")

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
    def gelu(self): return ops.GELU.apply(self)            # x Phi(x), the exact erf form
    def silu(self): return ops.SiLU.apply(self)            # x sigmoid(x)

    def clip(self, lo=None, hi=None):
        # a NumPy scalar bound is a number like any other: it never changes the dtype
        lo, hi = (b.item() if isinstance(b, np.generic) else b for b in (lo, hi))
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"clip: lower bound {lo} is above upper bound {hi}")
        return ops.Clip.apply(self, lo=lo, hi=hi)

    def softmax(self, axis=-1, mask=None):
        """exp(x) / sum(exp(x)) along `axis`; with a boolean `mask` (broadcast to x), the
        entries where it is False get no weight (as if -inf; a row with none left is NaN)."""
        axis = single_axis("softmax", axis, self.ndim, self.shape)
        if mask is None:
            return ops.Softmax.apply(self, axis=axis)
        mask = np.asarray(mask._data if isinstance(mask, Tensor) else mask)
        if mask.dtype != bool:
            raise TypeError(f"softmax: mask must be boolean (True where kept), got {mask.dtype}")
        try:
            blocked = np.broadcast_to(np.where(mask, 0.0, -np.inf), self.shape)
        except ValueError:
            raise ValueError(f"softmax: a mask of shape {mask.shape} does not broadcast to "
                             f"{self.shape}") from None
        return ops.Softmax.apply(self + blocked.astype(self.dtype), axis=axis)

    def log_softmax(self, axis=-1):
        return ops.LogSoftmax.apply(self, axis=single_axis("log_softmax", axis, self.ndim, self.shape))

    # ------------------------------------------------------------------ reductions

    def sum(self, axis=None, keepdims=False):
        return ops.Sum.apply(self, axis=axes("sum", axis, self.ndim, self.shape),
                             keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        return ops.Mean.apply(self, axis=axes("mean", axis, self.ndim, self.shape),
                              keepdims=keepdims)

    def var(self, axis=None, ddof=0, keepdims=False):
        """Variance over `axis`: the mean squared deviation from the mean, divided by n - ddof
        instead of n (NumPy's ddof: 0, the population variance, by default; 1 is PyTorch's
        default unbiased estimate). n - ddof <= 0 gives inf or NaN, as in NumPy."""
        over = axes("var", axis, self.ndim, self.shape)
        n = int(np.prod([self.shape[a] for a in (range(self.ndim) if over is None else over)]))
        centred = self - self.mean(axis=over, keepdims=True)
        squares = (centred * centred).sum(axis=over, keepdims=keepdims)
        with np.errstate(divide="ignore", invalid="ignore"):
            return squares / float(max(n - ddof, 0))

    def std(self, axis=None, ddof=0, keepdims=False):
        """Standard deviation: the square root of var(axis, ddof, keepdims). Where the
        variance is 0 the gradient is 0, as PyTorch's (not 0 * inf)."""
        var = self.var(axis=axis, ddof=ddof, keepdims=keepdims)
        zero = var == 0.0
        return np.where(zero, 0.0, np.where(zero, 1.0, var).sqrt())

    def max(self, axis=None, keepdims=False):
        """Largest element over `axis`. Tied maxima share the gradient evenly."""
        return self._extreme(ops.Max, axis, keepdims)

    def min(self, axis=None, keepdims=False):
        """Smallest element over `axis`. Tied minima share the gradient evenly."""
        return self._extreme(ops.Min, axis, keepdims)

    def _extreme(self, op_class, axis, keepdims):
        axis = axes(op_class.name, axis, self.ndim, self.shape)
        reduced = range(self.ndim) if axis is None else axis
        if any(self.shape[a] == 0 for a in reduced):
            raise ValueError(f"{op_class.name}: cannot reduce over an empty axis of a tensor "
                             f"of shape {self.shape}")
        return op_class.apply(self, axis=axis, keepdims=keepdims)

    def argmax(self, axis=None):
        """Indices of the maxima (an integer tensor, no gradient)."""
        if axis is not None:
            axis = single_axis("argmax", axis, self.ndim, self.shape)
        return ops.ArgMax.apply(self, axis=axis)

    # ------------------------------------------------------------------ shape

    def reshape(self, *shape):
        shape = sizes("reshape", shape)
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

    def broadcast_to(self, *shape):
        """This tensor repeated along stretched or prepended axes (np.broadcast_to, PyTorch's
        broadcast_to); the gradient sums them back."""
        shape = sizes("broadcast_to", shape)
        try:
            return ops.BroadcastTo.apply(self, shape=shape)
        except ValueError:
            raise ValueError(f"broadcast_to: cannot broadcast shape {self.shape} to "
                             f"{shape}") from None

    # ------------------------------------------------------------------ convolution, pooling

    def conv2d(self, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        """torch.nn.functional.conv2d on this NCHW tensor (conv.py: im2col, one product)."""
        return _conv.conv2d(self, weight, bias, stride, padding, dilation, groups)

    def max_pool2d(self, kernel_size=2, stride=None, padding=0):
        """torch.nn.functional.max_pool2d: stride defaults to kernel_size."""
        return _conv.pool2d("max", self, kernel_size, stride, padding)

    def avg_pool2d(self, kernel_size=2, stride=None, padding=0):
        """torch.nn.functional.avg_pool2d (padding counts in the average, as PyTorch's
        default): stride defaults to kernel_size."""
        return _conv.pool2d("avg", self, kernel_size, stride, padding)

    def unsqueeze(self, axis):
        """A new axis of size 1 at `axis` (negative counts from the end of the result)."""
        axis = single_axis("unsqueeze", axis, self.ndim + 1, self.shape)
        return self.reshape(self.shape[:axis] + (1,) + self.shape[axis:])

    def squeeze(self, axis=None):
        """Drop axes of size 1: every one, or those in `axis` (an int or a tuple); as in
        PyTorch, a named axis whose size is not 1 is left as it is."""
        over = range(self.ndim) if axis is None else axes("squeeze", axis, self.ndim,
                                                          self.shape)
        return self.reshape(tuple(n for i, n in enumerate(self.shape)
                                  if not (i in over and n == 1)))

    def transpose(self, *axes):
        """NumPy's transpose on every rank: no axes reverses them, otherwise `axes` is a
        permutation of all of them. To exchange two axes, use swapaxes."""
        order = sizes("transpose", axes)
        if not order:
            order = tuple(reversed(range(self.ndim)))
        perm = tuple(single_axis("transpose", a, self.ndim, self.shape) for a in order)
        if sorted(perm) != list(range(self.ndim)):
            raise ValueError(f"transpose: axes {order} are not a permutation of the "
                             f"{self.ndim} axes of shape {self.shape}; to exchange two axes "
                             f"use swapaxes")
        return ops.Transpose.apply(self, axes=perm)

    def swapaxes(self, axis1, axis2):
        """Exchange two axes (torch.transpose(a, b) and np.swapaxes)."""
        perm = list(range(self.ndim))
        i, j = (single_axis("swapaxes", a, self.ndim, self.shape) for a in (axis1, axis2))
        perm[i], perm[j] = perm[j], perm[i]
        return ops.Transpose.apply(self, axes=tuple(perm))

    @property
    def T(self):
        return self.transpose()

    def __getitem__(self, index):
        """Basic slicing, integer arrays and boolean masks (t[t > 0]), as in NumPy."""
        parts = index if isinstance(index, tuple) else (index,)
        parts = tuple(p._data if isinstance(p, Tensor) else np.asarray(p)
                      if isinstance(p, list) else p for p in parts)
        index = parts if isinstance(index, tuple) else parts[0]
        try:
            return ops.GetItem.apply(self, index=index, advanced=not is_basic_index(index))
        except IndexError as error:
            raise IndexError(f"getitem: {error} (tensor of shape {self.shape})") from None

    @staticmethod
    def concat(tensors, axis=0):
        tensors = Tensor._joinable("concat", tensors)
        if tensors[0].ndim == 0:
            raise ValueError("concat: cannot join 0-d tensors; use stack")
        first = tensors[0].shape
        a = single_axis("concat", axis, len(first), first)
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
        return ops.Stack.apply(*tensors, axis=single_axis("stack", axis, len(first) + 1, first))

    @staticmethod
    def _joinable(op, tensors):
        tensors = [t if isinstance(t, Tensor) else Tensor(t) for t in tensors]
        if not tensors:
            raise ValueError(f"{op}: needs at least one tensor")
        return _common_float(tuple(tensors))

    # ------------------------------------------------------------------ constructors

    @staticmethod
    def _owning(array, requires_grad=False):
        """A new tensor over a new array of its own (observers hear of it: a jit replays a
        tensor made in its step as made again, not as a constant)."""
        out = Tensor.from_numpy(array, requires_grad)
        if MODE.observers:
            tell(MODE.observers, "on_new_tensor", out)
        return out

    @staticmethod
    def zeros(*shape, requires_grad=False, dtype=_FLOAT_DEFAULT):
        return Tensor._owning(np.zeros(sizes("zeros", shape), dtype=dtype), requires_grad)

    @staticmethod
    def ones(*shape, requires_grad=False, dtype=_FLOAT_DEFAULT):
        return Tensor._owning(np.ones(sizes("ones", shape), dtype=dtype), requires_grad)

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
        return Tensor._owning(values if dtype is None else values.astype(dtype))

    @staticmethod
    def rand(*shape, seed=None, requires_grad=False, dtype=_FLOAT_DEFAULT):
        """Uniform samples in [0, 1); `seed` as in randn."""
        out = ops.RandomUniform.apply(shape=sizes("rand", shape), dtype=np.dtype(dtype),
                                      seed=seed)
        return out.requires_grad_(requires_grad) if requires_grad else out

    @staticmethod
    def randint(low, high, shape, seed=None):
        """Integers drawn uniformly from [low, high) (int64), as torch.randint."""
        if high <= low:
            raise ValueError(f"randint: high ({high}) must be above low ({low})")
        shape = sizes("randint", (shape,) if isinstance(shape, (tuple, list)) else (shape,))
        return ops.RandomInteger.apply(low=low, high=high, shape=shape, seed=seed)

    @staticmethod
    def randn(*shape, seed=None, requires_grad=False, dtype=_FLOAT_DEFAULT):
        """Standard normal samples; `seed` gives a reproducible draw, otherwise the generator
        set by manual_seed is used."""
        out = ops.RandomNormal.apply(shape=sizes("randn", shape), dtype=np.dtype(dtype),
                                     seed=seed)
        return out.requires_grad_(requires_grad) if requires_grad else out




from . import numpy_interop as _interop  # noqa: E402  (NumPy's functions on Tensors)
from . import conv as _conv  # noqa: E402  (convolution and pooling ops)

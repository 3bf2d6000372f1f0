"""Differentiable operations: one class each, its forward, backward, jvp and batching rule
side by side.

The protocol, the same for every op (built-in or a user's):
- `forward(self, *arrays, **options)` takes NumPy arrays and returns a NumPy array; it saves on
  `self` what backward needs.
- `backward(self, gz)` takes `gz`, the gradient of the loss with respect to the output, and
  returns a tuple with one gradient per input, in input order (`None` for an input that needs
  none: `self.needs_input_grad` says which do). Ops never undo broadcasting: the engine does
  that once for every gradient, and checks the count and each shape.
- `jvp(self, *tangents)` (forward mode) gets one tangent per input, an array or None (zero),
  and returns the output's tangent (None for zero), from what forward saved. An op without
  one gets a tangent derived from its backward (func/forward.py).
- `batch` (a classmethod; vmap) computes the op on a batch of examples from its inputs as
  (tensor, batched) pairs; elementwise ops take one of engine/batching.py's shared rules.
- `name` is a plain class attribute, used by error messages, drawings and profiles alike.
- `forward_into(out, *arrays, **options)` (a staticmethod; elementwise ops) writes forward's
  result into `out`, bit for bit, and saves nothing: a jit replay runs chains of such ops
  whose intermediates nothing else reads in one preallocated array (jit/fusion.py).
- `MyOp.apply(*tensors, **options)` runs forward and records the op when an input requires grad.
- After apply, `op.inputs` are the input tensors and `op.options` the options, while the graph
  lives: the read-only graph view (`t.op`) that drawings, the explorer and the tests use.
- An op whose result is not floating point (a comparison, argmax) is never recorded; observers
  see it like any other op.

Each derivative is written once, with operators, methods (`.T`, `.sum`, `.reshape`, indexing)
and NumPy functions that arrays and Tensors both understand. Ordinary backward passes arrays
(the fast path); under `create_graph=True` the engine passes Tensors, with the inputs and the
output that forward saved standing for themselves, so the gradient is recorded and can be
differentiated again. What forward computed from them (a mask, a count) is a constant.
Array code chosen for speed lives in kernels/, never here.
"""
import math

import numpy as np

from . import batching
from . import tensor as _tensor
from .kernels.blas import matmul
from .kernels import example_norms
from .kernels.special import normal_cdf_and_pdf, sigmoid
from .graph import sum_to_shape
from .mode import generator

class Op:
    """Base class of every operation. Ops keep their saved arrays in __slots__: a graph of a
    million nodes holds a million of them. Besides what forward saves: the inputs and
    options (set by the engine), which inputs need a gradient, and two notes observers may
    write: the module calls the op ran in (drawings) and the user's line that made it
    (anomaly detection)."""
    __slots__ = ("inputs", "options", "needs_input_grad", "modules", "created_at", "versions")
    name = "op"
    float_result = False     # True: integer inputs are made float first (exp, division, ...)
    draws_random = False     # True: forward draws random numbers (vmap refuses it)
    batch = None             # the batching rule vmap runs (engine/batching.py); None: none
    scatter_backward = None  # a one-input op whose gradient is zero but at an index (a slice)
    forward_into = None      # forward(out, *arrays): the result written into `out`, nothing
                             # saved (an elementwise op; the jit's fused chains run it)
    input_names = ()         # what the inputs are, where that helps a drawing ("targets")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:         # a user's op without a name: its class name
            cls.name = cls.__name__.lower()

    @classmethod
    def apply(cls, *inputs, **options):
        """Run forward on the inputs' arrays; the result is a Tensor that records this op when
        any input requires grad (and recording is on)."""
        return _tensor.record(cls, inputs, options)

    def forward(self, *arrays, **options):
        raise NotImplementedError(f"{self.name}: forward() is not defined")

    def backward(self, gz):
        raise NotImplementedError(f"{self.name}: backward() is not defined")


# Helpers of the jvp rules: a tangent None is zero.

def add_tangents(*terms):
    """The sum of the terms that are not None; None if none is."""
    total = None
    for term in terms:
        if term is not None:
            total = term if total is None else total + term
    return total


def scale_tangent(t, factor):
    return None if t is None else t * factor


def filled_tangents(tangents, inputs):
    """Each input's tangent, zeros where it has none."""
    return [np.zeros(x.shape, x.dtype) if t is None else t for t, x in zip(tangents, inputs)]


def _array(x):
    """The array behind a saved input: itself, or under create_graph the Tensor's data (to
    compute a constant mask from it)."""
    return x if isinstance(x, np.ndarray) else x._data


# ---------------------------------------------------------------- elementwise, two inputs

class Add(Op):
    """z = a + b    dz/da = 1    dz/db = 1"""
    __slots__ = ()
    name = "add"

    def forward(self, a, b):
        return a + b

    @staticmethod
    def forward_into(out, a, b):
        np.add(a, b, out=out)

    def backward(self, gz):
        return gz, gz

    def jvp(self, ta, tb):
        return add_tangents(ta, tb)

    batch = batching.elementwise



class Sub(Op):
    """z = a - b    dz/da = 1    dz/db = -1"""
    __slots__ = ()
    name = "sub"

    def forward(self, a, b):
        return a - b

    @staticmethod
    def forward_into(out, a, b):
        np.subtract(a, b, out=out)

    def backward(self, gz):
        return gz, (-gz if self.needs_input_grad[1] else None)

    def jvp(self, ta, tb):
        return add_tangents(ta, scale_tangent(tb, -1))

    batch = batching.elementwise



class Mul(Op):
    """z = a * b    dz/da = b    dz/db = a"""
    __slots__ = ("a", "b")
    name = "mul"

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    @staticmethod
    def forward_into(out, a, b):
        np.multiply(a, b, out=out)

    def backward(self, gz):
        need_a, need_b = self.needs_input_grad
        return (gz * self.b if need_a else None), (gz * self.a if need_b else None)

    def jvp(self, ta, tb):
        return add_tangents(scale_tangent(ta, self.b), scale_tangent(tb, self.a))

    batch = batching.elementwise



class Div(Op):
    """z = a / b    dz/da = 1/b    dz/db = -a/b**2 = -z/b"""
    __slots__ = ("b", "out")
    name = "div"
    float_result = True

    def forward(self, a, b):
        self.b = b
        self.out = a / b
        return self.out

    @staticmethod
    def forward_into(out, a, b):
        np.divide(a, b, out=out)

    def backward(self, gz):
        ga = gz / self.b
        return ga, (-ga * self.out if self.needs_input_grad[1] else None)

    def jvp(self, ta, tb):                          # ta / b - z tb / b
        return add_tangents(scale_tangent(ta, 1 / self.b),
                            scale_tangent(tb, -self.out / self.b))

    batch = batching.elementwise



class Pow(Op):
    """z = a ** b    dz/da = b * a**(b-1)    dz/db = z * log(a)   (b a tensor)

    At a = 0 the derivatives take their limits, as PyTorch's: dz/da = 0 where b = 0 (a**0 is
    constant) and dz/db = 0 where b >= 0 (z is 0 or 1 there, and log(a) never enters)."""
    __slots__ = ("a", "b", "out")
    name = "pow"

    def forward(self, a, b):
        self.a, self.b = a, b
        self.out = a ** b
        return self.out

    def backward(self, gz):
        need_a, need_b = self.needs_input_grad
        ga = gb = None
        with np.errstate(divide="ignore", invalid="ignore"):
            if need_a:
                ga = gz * np.where(self.b == 0, 0, self.b * self.a ** (self.b - 1))
            if need_b:
                a, b = _array(self.a), _array(self.b)
                # log(1) = 0 stands in for log(0) where the limit is 0, so that no -inf is
                # multiplied by 0 here or in a second derivative
                safe_a = np.where((a == 0) & (b >= 0), 1, self.a)
                gb = gz * self.out * np.log(safe_a)
        return ga, gb

    def jvp(self, ta, tb):                          # b a**(b-1) ta + z log(a) tb
        a, b = self.a, self.b
        with np.errstate(divide="ignore", invalid="ignore"):
            da = None if ta is None else ta * np.where(_array(b) == 0, 0, b * a ** (b - 1))
            db = None if tb is None else tb * self.out * np.log(
                np.where((_array(a) == 0) & (_array(b) >= 0), 1, a))
        return add_tangents(da, db)

    batch = batching.elementwise



class Maximum(Op):
    """z = max(a, b)    dz/da = [a > b] + 0.5 [a == b]   (ties split the gradient evenly)"""
    __slots__ = ("share_a",)
    name = "maximum"

    def forward(self, a, b):
        out = np.maximum(a, b)
        self.share_a = ((a > b) + 0.5 * (a == b)).astype(out.dtype)
        return out

    @staticmethod
    def forward_into(out, a, b):
        np.maximum(a, b, out=out)

    def backward(self, gz):
        return gz * self.share_a, gz * (1 - self.share_a)

    def jvp(self, ta, tb):
        return add_tangents(scale_tangent(ta, self.share_a),
                            scale_tangent(tb, 1 - self.share_a))

    batch = batching.elementwise



class Minimum(Maximum):
    """z = min(a, b)    dz/da = [a < b] + 0.5 [a == b]   (ties split the gradient evenly)"""
    __slots__ = ()
    name = "minimum"

    def forward(self, a, b):
        out = np.minimum(a, b)
        self.share_a = ((a < b) + 0.5 * (a == b)).astype(out.dtype)
        return out

    @staticmethod
    def forward_into(out, a, b):
        np.minimum(a, b, out=out)


# ---------------------------------------------------------------- elementwise, one input

class Neg(Op):
    """z = -x    dz/dx = -1"""
    __slots__ = ()
    name = "neg"

    def forward(self, x):
        return -x

    @staticmethod
    def forward_into(out, x):
        np.negative(x, out=out)

    def backward(self, gz):
        return (-gz,)

    def jvp(self, t):
        return -t

    batch = batching.unary



class PowConst(Op):
    """z = x ** c (c a constant)    dz/dx = c * x**(c-1)   (0 everywhere for c = 0)"""
    __slots__ = ("x", "c")
    name = "pow"

    def forward(self, x, exponent):
        self.x, self.c = x, exponent
        return x ** exponent

    @staticmethod
    def forward_into(out, x, exponent):
        if exponent == 2:                 # as x ** 2 computes it (NumPy's fast path)
            np.square(x, out=out)
        else:
            np.power(x, exponent, out=out)

    def backward(self, gz):
        if self.c == 2:
            return (gz * 2 * self.x,)             # the common case, without a power
        if self.c == 0:
            return (gz * 0,)
        return (gz * self.c * self.x ** (self.c - 1),)

    def jvp(self, t):
        return None if self.c == 0 else t * self.c * self.x ** (self.c - 1)

    batch = batching.unary



class Exp(Op):
    """z = exp(x)    dz/dx = z"""
    __slots__ = ("out",)
    name = "exp"
    float_result = True

    def forward(self, x):
        self.out = np.exp(x)
        return self.out

    @staticmethod
    def forward_into(out, x):
        np.exp(x, out=out)

    def backward(self, gz):
        return (gz * self.out,)

    def jvp(self, t):
        return t * self.out

    batch = batching.unary



class Log(Op):
    """z = log(x)    dz/dx = 1/x"""
    __slots__ = ("x",)
    name = "log"
    float_result = True

    def forward(self, x):
        self.x = x
        return np.log(x)

    @staticmethod
    def forward_into(out, x):
        np.log(x, out=out)

    def backward(self, gz):
        return (gz / self.x,)

    def jvp(self, t):
        return t / self.x

    batch = batching.unary



class Sqrt(Op):
    """z = sqrt(x)    dz/dx = 1 / (2 z)"""
    __slots__ = ("out",)
    name = "sqrt"
    float_result = True

    def forward(self, x):
        self.out = np.sqrt(x)
        return self.out

    @staticmethod
    def forward_into(out, x):
        np.sqrt(x, out=out)

    def backward(self, gz):
        return (gz / (2 * self.out),)

    def jvp(self, t):
        return t / (2 * self.out)

    batch = batching.unary



class Sin(Op):
    """z = sin(x)    dz/dx = cos(x)"""
    __slots__ = ("x",)
    name = "sin"
    float_result = True

    def forward(self, x):
        self.x = x
        return np.sin(x)

    @staticmethod
    def forward_into(out, x):
        np.sin(x, out=out)

    def backward(self, gz):
        return (gz * np.cos(self.x),)

    def jvp(self, t):
        return t * np.cos(self.x)

    batch = batching.unary



class Cos(Op):
    """z = cos(x)    dz/dx = -sin(x)"""
    __slots__ = ("x",)
    name = "cos"
    float_result = True

    def forward(self, x):
        self.x = x
        return np.cos(x)

    @staticmethod
    def forward_into(out, x):
        np.cos(x, out=out)

    def backward(self, gz):
        return (-gz * np.sin(self.x),)

    def jvp(self, t):
        return -t * np.sin(self.x)

    batch = batching.unary



class Abs(Op):
    """z = |x|    dz/dx = sign(x)   (0 at x = 0)"""
    __slots__ = ("sign",)
    name = "abs"

    def forward(self, x):
        self.sign = np.sign(x)
        return np.abs(x)

    @staticmethod
    def forward_into(out, x):
        np.absolute(x, out=out)

    def backward(self, gz):
        return (gz * self.sign,)

    def jvp(self, t):
        return t * self.sign

    batch = batching.unary



class ReLU(Op):
    """z = max(x, 0)    dz/dx = [x > 0]   (0 at x = 0)"""
    __slots__ = ("out",)
    name = "relu"

    def forward(self, x):
        self.out = np.maximum(x, 0)
        return self.out

    @staticmethod
    def forward_into(out, x):
        np.maximum(x, 0, out=out)

    def backward(self, gz):
        return (gz * (self.out > 0),)

    def jvp(self, t):
        return t * (self.out > 0)

    batch = batching.unary



class Sigmoid(Op):
    """z = 1 / (1 + exp(-x))    dz/dx = z (1 - z)"""
    __slots__ = ("out",)
    name = "sigmoid"
    float_result = True

    def forward(self, x):
        self.out = sigmoid(x)
        return self.out

    @staticmethod
    def forward_into(out, x):
        sigmoid(x, out=out)

    def backward(self, gz):
        return (gz * self.out * (1 - self.out),)

    def jvp(self, t):
        return t * self.out * (1 - self.out)

    batch = batching.unary



class Tanh(Op):
    """z = tanh(x)    dz/dx = 1 - z**2"""
    __slots__ = ("out",)
    name = "tanh"
    float_result = True

    def forward(self, x):
        self.out = np.tanh(x)
        return self.out

    @staticmethod
    def forward_into(out, x):
        np.tanh(x, out=out)

    def backward(self, gz):
        return (gz * (1 - self.out * self.out),)

    def jvp(self, t):
        return t * (1 - self.out * self.out)

    batch = batching.unary


class GELU(Op):
    """z = x Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2, the normal distribution's CDF (the
    exact form, PyTorch's default)    dz/dx = Phi(x) + x phi(x), phi(x) = exp(-x^2/2) / sqrt(2 pi)"""
    __slots__ = ("x", "cdf", "pdf")
    name = "gelu"
    float_result = True

    def forward(self, x):
        self.x = x
        self.cdf, self.pdf = normal_cdf_and_pdf(x)
        return x * self.cdf

    def _slope(self):
        x = self.x      # under create_graph a Tensor: Phi(x) differentiable too (NormalCDF)
        if isinstance(x, np.ndarray):
            return self.cdf + x * self.pdf
        return NormalCDF.apply(x) + x * _normal_pdf(x)

    def backward(self, gz):
        return (gz * self._slope(),)

    def jvp(self, t):
        return t * self._slope()

    batch = batching.unary


class NormalCDF(Op):
    """z = Phi(x) = (1 + erf(x / sqrt 2)) / 2    dz/dx = phi(x) = exp(-x^2/2) / sqrt(2 pi)
    (GELU's backward under create_graph, so that its gradient can be differentiated again)"""
    __slots__ = ("x",)
    name = "normal_cdf"
    float_result = True

    def forward(self, x):
        self.x = x
        return normal_cdf_and_pdf(x)[0]

    def backward(self, gz):
        return (gz * _normal_pdf(self.x),)

    def jvp(self, t):
        return t * _normal_pdf(self.x)

    batch = batching.unary


def _normal_pdf(x):
    """phi(x), for arrays and (under create_graph) Tensors alike."""
    return np.exp(-0.5 * x * x) * (1 / math.sqrt(2 * math.pi))


class SiLU(Op):
    """z = x sigmoid(x)    dz/dx = s (1 + x (1 - s)), s = sigmoid(x)"""
    __slots__ = ("x", "sig")
    name = "silu"
    float_result = True

    def forward(self, x):
        self.x, self.sig = x, sigmoid(x)
        return x * self.sig

    def backward(self, gz):
        x = self.x      # under create_graph a Tensor: its sigmoid is differentiated too
        s = self.sig if isinstance(x, np.ndarray) else x.sigmoid()
        return (gz * (s * (1 + x * (1 - s))),)

    def jvp(self, t):
        x = self.x
        s = self.sig if isinstance(x, np.ndarray) else x.sigmoid()
        return t * (s * (1 + x * (1 - s)))

    batch = batching.unary


class Clip(Op):
    """z = min(max(x, lo), hi)    dz/dx = [lo <= x <= hi]"""
    __slots__ = ("inside",)
    name = "clip"

    def forward(self, x, lo, hi):
        self.inside = np.ones(x.shape, dtype=bool)
        if lo is not None:
            self.inside &= x >= lo
        if hi is not None:
            self.inside &= x <= hi
        return np.clip(x, lo, hi)

    @staticmethod
    def forward_into(out, x, lo, hi):
        np.clip(x, lo, hi, out=out)

    def backward(self, gz):
        return (gz * self.inside,)

    def jvp(self, t):
        return t * self.inside

    batch = batching.unary



# ---------------------------------------------------------------- reductions
# `axis` arrives normalized by the engine: None (every axis) or a sorted tuple of axes.

def _reduced_shape(shape, axis):
    """The shape of a reduction over `axis` without keepdims."""
    return tuple(n for i, n in enumerate(shape) if axis is not None and i not in axis)


def _kept_shape(shape, axis):
    """The shape of a reduction over `axis` with keepdims: the reduced axes as size 1."""
    return tuple(1 if axis is None or i in axis else n for i, n in enumerate(shape))


class Sum(Op):
    """z = sum of x over `axis`    dz/dx = 1 (the gradient is spread back over the summed axes)"""
    __slots__ = ("shape", "kept")
    name = "sum"

    def forward(self, x, axis, keepdims):
        self.shape, self.kept = x.shape, _kept_shape(x.shape, axis)
        return x.sum(axis=axis, keepdims=keepdims)

    def backward(self, gz):
        return (np.broadcast_to(gz.reshape(self.kept), self.shape),)

    def jvp(self, t):
        return t.sum(axis=self.options["axis"], keepdims=self.options["keepdims"])

    batch = batching.reduction



class Mean(Sum):
    """z = mean of x over `axis`    dz/dx = 1/n, n the number of elements averaged
    (a mean over no elements is NaN, as in NumPy)"""
    __slots__ = ("count",)
    name = "mean"
    float_result = True

    def forward(self, x, axis, keepdims):
        self.count = int(np.prod([x.shape[a] for a in (range(x.ndim) if axis is None else axis)]))
        total = super().forward(x, axis, keepdims)
        with np.errstate(invalid="ignore"):            # 0/0 is NaN, as np.mean gives
            return total / self.count

    def backward(self, gz):
        return super().backward(gz / self.count if self.count else gz)

    def jvp(self, t):
        return super().jvp(t) / self.count



class Max(Op):
    """z = max of x over `axis`    dz/dx = [x == z] / (number of ties): tied maxima share evenly"""
    __slots__ = ("share", "kept")
    name = "max"
    reduce = staticmethod(np.max)

    def forward(self, x, axis, keepdims):
        best = self.reduce(x, axis=axis, keepdims=True)
        winners = x == best
        self.share = (winners / winners.sum(axis=axis, keepdims=True)).astype(x.dtype)
        self.kept = best.shape
        if keepdims:
            return best
        return best.reshape(_reduced_shape(x.shape, axis))

    def backward(self, gz):
        return (gz.reshape(self.kept) * self.share,)

    def jvp(self, t):                          # the tied elements' mean tangent
        return (t * self.share).sum(axis=self.options["axis"],
                                    keepdims=self.options["keepdims"])

    batch = batching.reduction



class Min(Max):
    """z = min of x over `axis`    dz/dx = [x == z] / (number of ties): tied minima share evenly"""
    __slots__ = ()
    name = "min"
    reduce = staticmethod(np.min)


class Norm(Op):
    """z = sqrt(sum of x**2 over `axis`)    dz/dx = x / z   (0 where z = 0, as PyTorch: the
    smallest subgradient, instead of 0/0)"""
    __slots__ = ("x", "out", "kept")
    name = "norm"
    float_result = True

    def forward(self, x, axis, keepdims):
        self.x = x
        norm = np.sqrt((x * x).sum(axis=axis, keepdims=True))
        self.kept = norm.shape
        self.out = norm if keepdims else norm.reshape(_reduced_shape(x.shape, axis))
        return self.out

    def backward(self, gz):
        norm = self.out.reshape(self.kept)
        safe = np.where(_array(norm) == 0, 1, norm)       # x is 0 there: the gradient is 0
        return (gz.reshape(self.kept) * self.x / safe,)

    def jvp(self, t):                          # <x, t> / z
        norm = self.out.reshape(self.kept)
        dot = (self.x * t).sum(axis=self.options["axis"], keepdims=True)
        return (dot / np.where(norm == 0, 1, norm)).reshape(self.out.shape)

    batch = batching.reduction



# ---------------------------------------------------------------- shape

class Cast(Op):
    """z = x converted to another floating dtype    dx = dz converted back to x's dtype"""
    __slots__ = ("dtype",)
    name = "cast"

    def forward(self, x, dtype):
        self.dtype = x.dtype
        return x.astype(dtype)

    def backward(self, gz):
        return (gz.astype(self.dtype),)

    def jvp(self, t):
        return t.astype(self.options["dtype"])

    batch = batching.unary



class Reshape(Op):
    """z = x viewed with a new shape    dx = dz viewed with the old shape"""
    __slots__ = ("shape",)
    name = "reshape"

    def forward(self, x, shape):
        self.shape = x.shape
        return x.reshape(shape)

    def backward(self, gz):
        return (gz.reshape(self.shape),)

    def jvp(self, t):
        return t.reshape(self.options["shape"])

    @classmethod
    def batch(cls, size, options, args):
        (t, _), = args
        return cls.apply(t, shape=(size,) + tuple(options["shape"]))



class Transpose(Op):
    """z = x with its axes permuted    dx = dz with the inverse permutation"""
    __slots__ = ("inverse",)
    name = "transpose"

    def forward(self, x, axes):
        self.inverse = tuple(np.argsort(axes))
        return x.transpose(axes)

    def backward(self, gz):
        return (gz.transpose(self.inverse),)

    def jvp(self, t):
        return t.transpose(self.options["axes"])

    @classmethod
    def batch(cls, size, options, args):
        (t, _), = args
        return cls.apply(t, axes=(0,) + tuple(a + 1 for a in options["axes"]))



class BroadcastTo(Op):
    """z = x repeated along stretched or prepended axes    dx = dz summed back to x's shape"""
    __slots__ = ("shape",)
    name = "broadcast_to"

    def forward(self, x, shape):
        self.shape = x.shape
        return np.broadcast_to(x, shape)

    def backward(self, gz):
        return (sum_to_shape(gz, self.shape, self.name),)

    def jvp(self, t):
        return np.broadcast_to(t, self.options["shape"])

    @classmethod
    def batch(cls, size, options, args):
        (t, b), = args
        shape = tuple(options["shape"])
        return cls.apply(batching.lift(t, b, len(shape)), shape=(size,) + shape)



class GetItem(Op):
    """z = x[index]    dx = zeros with dz added at index (repeated indices add up)"""
    __slots__ = ("shape", "index", "advanced")
    name = "getitem"

    def forward(self, x, index, advanced):
        self.shape, self.index, self.advanced = x.shape, index, advanced
        return x[index]

    def backward(self, gz):
        return (_index_add(gz, self.index, self.shape, self.advanced),)

    def scatter_backward(self, gz):
        """The same gradient as (index, values, advanced): the engine adds it in place into
        the gradient x has so far instead of making zeros of x's shape for each slice."""
        return self.index, gz, self.advanced

    def jvp(self, t):
        return t[self.index]

    @classmethod
    def batch(cls, size, options, args):
        (t, _), = args
        index, where = batching.batched_index(options["index"], options["advanced"])
        out = cls.apply(t, index=index, advanced=options["advanced"])
        if where:                  # NumPy moved the indexed axes first: the batch back in front
            out = out.transpose((where,) + tuple(i for i in range(out.ndim) if i != where))
        return out



class IndexAdd(Op):
    """z = zeros of `shape` with x added at index (x[i] goes to z[index[i]]; repeated indices
    add up)    dx = dz[index]. It is getitem's backward, so getitem's gradient can be
    differentiated again."""
    __slots__ = ("index",)
    name = "index_add"

    def forward(self, x, index, shape, advanced):
        self.index = index
        return _index_add(x, index, shape, advanced)

    def backward(self, gz):
        return (gz[self.index],)

    def jvp(self, t):
        return _index_add(t, self.index, self.options["shape"], self.options["advanced"])

    @classmethod
    def batch(cls, size, options, args):
        (t, _), = args
        index, where = batching.batched_index(options["index"], options["advanced"])
        if where:
            raise batching.VmapError("vmap: index_add with non-adjacent integer arrays has no "
                                     "batching rule")
        return cls.apply(t, index=index, shape=(size,) + tuple(options["shape"]),
                         advanced=options["advanced"])



class Embedding(Op):
    """z = weight[indices] (a row of the table per index; indices an integer tensor of any
    shape, z of shape indices.shape + (dim,))    dweight = zeros with dz's rows added at
    their indices (an index used twice gets both rows)    the indices get no gradient"""
    __slots__ = ("indices", "shape")
    name = "embedding"
    input_names = ("weight", "indices")

    def forward(self, weight, indices):
        if indices.dtype.kind not in "iu":
            raise TypeError(f"embedding: indices must be integers, got {indices.dtype}")
        if indices.size and (indices.min() < 0 or indices.max() >= weight.shape[0]):
            raise IndexError(f"embedding: an index is out of range for a table of "
                             f"{weight.shape[0]} rows (indices from {indices.min()} to "
                             f"{indices.max()})")
        self.indices, self.shape = indices.view(), weight.shape   # a view: a constant mask
        return weight[indices]

    def backward(self, gz):
        return _index_add(gz, (self.indices,), self.shape, True), None

    def example_norms(self, gz):
        """The table's gradient norm per example (privacy), from the rows each reads."""
        b = gz.shape[0]
        return (example_norms.embedding_norms(self.indices.reshape(b, -1),
                                              gz.reshape(b, -1, gz.shape[-1]),
                                              self.shape[0]), None)

    def jvp(self, tw, ti=None):
        return None if tw is None else tw[self.indices]

    @classmethod
    def batch(cls, size, options, args):
        """Batched indices into one table: more leading axes. Per-example tables: each
        example's indices offset into the tables stacked as one."""
        (w, bw), (i, bi) = args
        if not bw:
            return cls.apply(w, batching.with_batch(size, i, bi))
        rows = w.shape[1]
        i = batching.with_batch(size, i, bi)
        offsets = (np.arange(size) * rows).reshape((size,) + (1,) * (i.ndim - 1))
        return cls.apply(w.reshape((size * rows,) + tuple(w.shape[2:])), i + offsets)


def _index_add(g, index, shape, advanced):
    """zeros(shape) with g added at index, for arrays (as NumPy does it) and for tensors (as a
    recorded IndexAdd)."""
    if not isinstance(g, np.ndarray):
        return IndexAdd.apply(g, index=index, shape=shape, advanced=advanced)
    gx = np.zeros(shape, dtype=g.dtype)
    if advanced:
        np.add.at(gx, index, g)          # unbuffered: x[[0, 0]] sends both gradients to x[0]
    else:
        gx[index] = g                    # a basic slice never repeats an element
    return gx


class Where(Op):
    """z = x where condition, else y    dx = dz where condition    dy = dz elsewhere
    (the condition, a boolean input, gets no gradient)"""
    __slots__ = ("condition", "other")
    name = "where"
    input_names = ("x", "y", "condition")

    def forward(self, x, y, condition):
        # views of the mask: under create_graph they stay constants, not the input tensor
        self.condition, self.other = condition.view(), ~condition
        return np.where(condition, x, y)

    def backward(self, gz):
        return gz * self.condition, gz * self.other, None

    def jvp(self, tx, ty, tc):
        return add_tangents(scale_tangent(tx, self.condition), scale_tangent(ty, self.other))

    batch = batching.elementwise



class Concat(Op):
    """z = the inputs joined along `axis`    each input gets its own slice of dz"""
    __slots__ = ("axis", "bounds")
    name = "concat"

    def forward(self, *xs, axis):
        self.axis = axis
        ends = np.cumsum([x.shape[axis] for x in xs]).tolist()
        self.bounds = list(zip([0] + ends[:-1], ends))      # each input's slice along axis
        return np.concatenate(xs, axis=axis)

    def backward(self, gz):
        lead = (slice(None),) * self.axis
        return tuple(gz[lead + (slice(lo, hi),)] for lo, hi in self.bounds)

    def jvp(self, *ts):
        return np.concatenate(filled_tangents(ts, self.inputs), axis=self.axis)

    @classmethod
    def batch(cls, size, options, args):
        tensors = [batching.with_batch(size, t, b) for t, b in args]
        return cls.apply(*tensors, axis=options["axis"] + 1)



class Stack(Op):
    """z = the inputs stacked along a new `axis`    each input gets its own index of dz"""
    __slots__ = ("axis", "count")
    name = "stack"

    def forward(self, *xs, axis):
        self.axis, self.count = axis, len(xs)
        return np.stack(xs, axis=axis)

    def backward(self, gz):
        lead = (slice(None),) * self.axis
        return tuple(gz[lead + (i,)] for i in range(self.count))

    def jvp(self, *ts):
        return np.stack(filled_tangents(ts, self.inputs), axis=self.axis)

    @classmethod
    def batch(cls, size, options, args):
        tensors = [batching.with_batch(size, t, b) for t, b in args]
        return cls.apply(*tensors, axis=options["axis"] + 1)



# ---------------------------------------------------------------- linear algebra

class MatMul(Op):
    """z = a @ b    da = dz @ b^T    db = a^T @ dz   (1-d inputs are promoted, then squeezed back)"""
    __slots__ = ("a", "b")
    name = "matmul"

    def forward(self, a, b):
        self.a, self.b = a, b
        return matmul(a, b)

    def backward(self, gz):
        a, b = self.a, self.b
        if b.ndim == 1:
            b, gz = b[:, None], gz[..., None]             # (n,) -> (n, 1); dz gains its column
        if a.ndim == 1:
            a, gz = a[None, :], gz[..., None, :]          # (n,) -> (1, n); dz gains its row
        need_a, need_b = self.needs_input_grad
        ga = _product(gz, b.swapaxes(-1, -2)) if need_a else None
        gb = _product(a.swapaxes(-1, -2), gz) if need_b else None
        if ga is not None and self.a.ndim == 1:
            ga = ga.reshape(ga.shape[:-2] + ga.shape[-1:])     # drop the promoted row
        if gb is not None and self.b.ndim == 1:
            gb = gb.reshape(gb.shape[:-1])                      # drop the promoted column
        return ga, gb

    def jvp(self, ta, tb):
        return add_tangents(None if ta is None else matmul(ta, self.b),
                            None if tb is None else matmul(self.a, tb))

    @classmethod
    def batch(cls, size, options, args):
        (a, ba), (b, bb) = args
        row = column = False
        if ba and a.ndim == 2:                        # a batched vector: a row per example
            a, row = a.reshape(a.shape[0], 1, a.shape[1]), True
        if bb and b.ndim == 2:                        # ... and a column
            b, column = b.reshape(b.shape[0], b.shape[1], 1), True
        ndim = max(batching.logical_ndim(a, ba), batching.logical_ndim(b, bb))
        out = cls.apply(batching.lift(a, ba, ndim), batching.lift(b, bb, ndim))
        shape = list(out.shape)
        if column:
            del shape[-1]
        if row:        # the row's axis: before the column's, or last if b was a plain vector
            del shape[-1 if (b.ndim == 1 and not bb) or column else -2]
        return out.reshape(tuple(shape)) if len(shape) != out.ndim else out



def _product(a, b):
    """a @ b; an outer product (one shared axis of size 1) of arrays as a broadcast multiply,
    which NumPy runs a few times faster than a stack of one-column products (per-example
    gradients under vmap are stacks of them)."""
    if a.shape[-1] == 1 and a.ndim > 2 and isinstance(a, np.ndarray) and \
            isinstance(b, np.ndarray):
        return a * b
    return matmul(a, b)


def _rows(x):
    """(..., n) -> (B, n): every leading axis as one (0 columns included)."""
    return x if x.ndim == 2 else x.reshape(math.prod(x.shape[:-1]), x.shape[-1])


class Linear(Op):
    """z = x @ W^T + b    dx = dz @ W    dW = dz^T @ x    db = sum of dz over the batch

    W has PyTorch's layout (out_features, in_features). Fused so that one node does the
    matrix product and the bias, and dx is skipped for the network's input.
    """
    __slots__ = ("x", "weight")
    name = "linear"
    float_result = True

    def forward(self, x, weight, bias=None):
        self.x, self.weight = x, weight
        out = matmul(_rows(x), weight.T)              # (B, in) @ (in, out) -> (B, out)
        if bias is not None:
            out += bias
        return out if x.ndim == 2 else out.reshape(x.shape[:-1] + out.shape[1:])

    def backward(self, gz):
        g2 = _rows(gz)                                 # (B, out)
        need_x, need_w = self.needs_input_grad[:2]
        gx = matmul(g2, self.weight).reshape(self.x.shape) if need_x else None
        gw = matmul(g2.T, _rows(self.x)) if need_w else None
        if len(self.needs_input_grad) == 2:
            return gx, gw
        return gx, gw, (g2.sum(axis=0) if self.needs_input_grad[2] else None)

    def example_norms(self, gz):
        """Each example's squared gradient norm per input (privacy): the weight's from the
        example's rows of x and dz, the bias's from dz; x, an activation, gets none."""
        b = gz.shape[0]
        x = self.x.reshape(b, -1, self.x.shape[-1])
        g = gz.reshape(b, -1, gz.shape[-1])
        norms = (None, example_norms.product_norms(x, g))
        return norms if len(self.needs_input_grad) == 2 else \
            norms + (example_norms.summed_norms(g),)

    def jvp(self, tx, tw, tb=None):                 # tx W^T + x tW^T + tb
        shape = self.x.shape[:-1] + self.weight.shape[:1]
        return add_tangents(
            None if tx is None else matmul(_rows(tx), self.weight.T).reshape(shape),
            None if tw is None else matmul(_rows(self.x), tw.T).reshape(shape), tb)

    @classmethod
    def batch(cls, size, options, args):
        (x, bx), (w, bw), *rest = args
        bias = rest[0] if rest else None
        if not bw and (bias is None or not bias[1]):
            return cls.apply(x, w, *([bias[0]] if bias else []))      # (B, ..., in) rows
        wt = (w.transpose(0, 2, 1) if bw else w.T, bw)                 # per-example weights
        out = MatMul.batch(size, {}, [(x, bx), wt])
        if bias is not None:
            out = Add.batch(size, {}, [(out, True), bias])
        return out



# ---------------------------------------------------------------- softmax and losses

class Softmax(Op):
    """z = exp(x) / sum(exp(x))    dx = z * (dz - sum(dz * z))"""
    __slots__ = ("axis", "out")
    name = "softmax"
    float_result = True

    def forward(self, x, axis):
        self.axis = axis
        e = np.exp(x - x.max(axis=axis, keepdims=True))   # shift by the max: exp cannot overflow
        self.out = e / e.sum(axis=axis, keepdims=True)
        return self.out

    def backward(self, gz):
        z = self.out
        return (z * (gz - (gz * z).sum(axis=self.axis, keepdims=True)),)

    def jvp(self, t):                          # z * (t - sum(z * t))
        z = self.out
        return z * (t - (z * t).sum(axis=self.axis, keepdims=True))

    batch = batching.along_axis



class LogSoftmax(Op):
    """z = x - logsumexp(x)    dx = dz - softmax(x) * sum(dz)"""
    __slots__ = ("axis", "out")
    name = "log_softmax"
    float_result = True

    def forward(self, x, axis):
        self.axis = axis
        shifted = x - x.max(axis=axis, keepdims=True)      # a constant shift: same result
        self.out = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
        return self.out

    def backward(self, gz):
        return (gz - np.exp(self.out) * gz.sum(axis=self.axis, keepdims=True),)

    def jvp(self, t):                          # t - sum(softmax * t)
        return t - (np.exp(self.out) * t).sum(axis=self.axis, keepdims=True)

    batch = batching.along_axis



def _reduce_loss(losses, reduction):
    """A loss's per-element values as reduction asks: their mean, their sum, or themselves
    (arrays, or Tensors under a rule run on tensors)."""
    if reduction == "none":
        return losses
    total = losses.sum()
    if not isinstance(losses, np.ndarray):
        return total / losses.size if reduction == "mean" else total
    return np.asarray(total / losses.size if reduction == "mean" else total, dtype=losses.dtype)


def _loss_gradient(gz, reduction, count):
    """The upstream gradient as each element's loss receives it: gz/count for a mean, gz for
    a sum, and gz's own entry (already of the losses' shape) for none."""
    return gz / count if reduction == "mean" else gz


class CrossEntropy(Op):
    """loss_i = logsumexp(z_i) - sum_c q_ic z_ic,  q_i = (1 - s) onehot(y_i) + s / C
    dloss_i/dz_i = softmax(z_i) - q_i
    (y: integer class targets, an input without gradient; s: the label smoothing; the losses
    are averaged, summed, or returned per row; a row whose target is ignore_index counts for
    nothing: its loss and gradient are 0 and a mean is over the other rows, as PyTorch's)

    Fused: the forward is a log-sum-exp, finite for logits of any size, and the backward is
    the closed form instead of a chain of softmax, log and indexing nodes.
    """
    __slots__ = ("logits", "probs", "at_target", "smoothing", "reduction", "valid", "count")
    name = "cross_entropy"
    input_names = ("logits", "targets")

    def forward(self, logits, targets, reduction="mean", label_smoothing=0.0, ignore_index=None):
        m, classes = logits.shape
        self.valid, self.count = None, m
        if ignore_index is not None:
            valid = targets != ignore_index
            if not valid.all():                  # ignored rows: a valid class stands in
                self.valid, self.count = valid, int(valid.sum())
                targets = np.where(valid, targets, 0)
        if targets.size and (targets.min() < 0 or targets.max() >= classes):
            raise ValueError(f"cross_entropy: targets must lie in [0, {classes}) for logits of "
                             f"shape {logits.shape}, got values from {targets.min()} to "
                             f"{targets.max()}")
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        sum_exp = exp.sum(axis=1, keepdims=True)
        self.logits, self.probs, self.reduction = logits, exp / sum_exp, reduction
        # each row's target entry as a flat index (take/put are the cheapest gather/scatter)
        self.at_target, self.smoothing = np.arange(0, m * classes, classes) + targets, \
            label_smoothing
        target_logp = shifted.take(self.at_target) - np.log(sum_exp[:, 0])
        if label_smoothing:           # q = (1 - s) onehot + s / C:  q . logp
            target_logp = ((1 - label_smoothing) * target_logp + label_smoothing / classes *
                           (shifted.sum(axis=1) - classes * np.log(sum_exp[:, 0])))
        if self.valid is not None:
            target_logp = target_logp * self.valid
        if reduction == "mean":
            with np.errstate(invalid="ignore", divide="ignore"):   # all ignored: NaN, as PyTorch
                return np.asarray(-target_logp.sum() / self.count, dtype=logits.dtype)
        return _reduce_loss(-target_logp, reduction)

    def _rows(self):
        """1 for each row that counts, 0 for an ignored one (None: every row counts)."""
        return None if self.valid is None else self.valid[:, None].astype(self.probs.dtype)

    def backward(self, gz):
        z = self.logits
        # the softmax forward computed, or, when z is a tensor (create_graph), the softmax of
        # z itself: differentiated again, its Jacobian is cross-entropy's Hessian
        if self.reduction == "none":
            gz = gz.reshape(-1, 1)                   # one upstream gradient per row
        scale = _loss_gradient(gz, self.reduction, self.count)
        rows = self._rows()
        if not isinstance(z, np.ndarray):
            g = (z.softmax(axis=1) - self._target()) * scale
            return (g if rows is None else g * rows, None)
        g = self.probs - self.smoothing / z.shape[1] if self.smoothing else self.probs.copy()
        g.put(self.at_target, g.take(self.at_target) - (1 - self.smoothing))   # softmax - q
        g *= scale
        if rows is not None:
            g *= rows
        return (g, None)

    def _target(self):
        """q, each row's target distribution, as an array (a constant of the derivative)."""
        q = np.full(self.probs.shape, self.smoothing / self.probs.shape[1], self.probs.dtype)
        q.put(self.at_target, q.take(self.at_target) + (1 - self.smoothing))
        return q

    def jvp(self, t_logits, t_targets):   # each row: (softmax - q) . t
        if t_logits is None:
            return None
        z = self.logits
        if not isinstance(z, np.ndarray):     # on tensors: the softmax of z itself
            rows = ((z.softmax(axis=1) - self._target()) * t_logits).sum(axis=1)
        else:
            g = self.probs * t_logits
            rows = g.sum(axis=1) - (1 - self.smoothing) * t_logits.take(self.at_target)
            if self.smoothing:
                rows -= self.smoothing / t_logits.shape[1] * t_logits.sum(axis=1)
        if self.valid is None:
            return _reduce_loss(rows, self.reduction)
        rows = rows * self.valid
        if self.reduction == "mean":
            return rows.sum() / self.count
        return _reduce_loss(rows, self.reduction)

    @classmethod
    def batch(cls, size, options, args):
        (logits, bl), (targets, bt) = args
        logits = batching.with_batch(size, logits, bl)
        targets = batching.with_batch(size, targets, bt)
        n, classes = logits.shape[1:]
        ignore = options.get("ignore_index")
        per_row = cls.apply(logits.reshape(size * n, classes), targets.reshape(size * n),
                            reduction="none",
                            label_smoothing=options.get("label_smoothing", 0.0),
                            ignore_index=ignore).reshape(size, n)
        if ignore is None or options.get("reduction", "mean") != "mean":
            return batching.reduced(per_row, options.get("reduction", "mean"))
        counted = (targets != ignore).astype(per_row.dtype).sum(axis=1)   # each example's rows
        return per_row.sum(axis=1) / counted



class BinaryCrossEntropy(Op):
    """loss = -(t log p + (1-t) log(1-p))    dloss/dp = (p - t) / (p (1-p))
    (t: the targets, an input without gradient; averaged, summed, or returned per element)

    Each log is clamped at -100 (as PyTorch does), so p = 0 or 1 gives a finite loss.
    """
    __slots__ = ("p", "t", "reduction")
    name = "binary_cross_entropy"
    float_result = True
    input_names = ("prob", "target")

    def forward(self, p, t, reduction="mean"):
        if p.size and (p.min() < 0 or p.max() > 1):
            raise ValueError(f"binary_cross_entropy: probabilities must lie in [0, 1] (shape "
                             f"{p.shape}); apply sigmoid() first")
        self.p, self.t, self.reduction = p, t.view(), reduction     # t: a constant
        with np.errstate(divide="ignore"):          # log(0) = -inf is clamped just below
            log_p = np.maximum(np.log(p), -100)
            log_1p = np.maximum(np.log1p(-p), -100)
        return _reduce_loss(-(t * log_p + (1 - t) * log_1p), reduction)

    def backward(self, gz):
        p, t = self.p, self.t
        denominator = np.maximum(p * (1 - p), 1e-12)    # bounded: finite at p = 0 or 1
        return (_loss_gradient(gz, self.reduction, p.size) * (p - t) / denominator, None)

    def jvp(self, tp, tt):
        if tp is None:
            return None
        p, t = self.p, self.t
        slope = (p - t) / np.maximum(p * (1 - p), 1e-12)
        return _reduce_loss(tp * slope, self.reduction)

    @classmethod
    def batch(cls, size, options, args):
        (p, bp), (t, bt) = args
        ndim = max(batching.logical_ndim(p, bp), batching.logical_ndim(t, bt))
        p = batching.with_batch(size, batching.lift(p, bp, ndim), bp)
        t = batching.with_batch(size, batching.lift(t, bt, ndim), bt)
        shape = np.broadcast_shapes(p.shape, t.shape)
        losses = cls.apply(p.broadcast_to(shape), t.broadcast_to(shape), reduction="none")
        return batching.reduced(losses, options.get("reduction", "mean"))



class DropoutMask(Op):
    """z = x * mask / (1 - p)    dz/dx = mask / (1 - p)   (mask fixed in forward)"""
    __slots__ = ("keep",)
    name = "dropout"

    def forward(self, x, keep):
        self.keep = keep.astype(x.dtype, copy=False)      # a constant never changes the dtype
        return x * self.keep

    def backward(self, gz):
        return (gz * self.keep,)

    def jvp(self, t, t_keep=None):
        return None if t is None else t * self.keep

    batch = batching.elementwise



class Dropout(DropoutMask):
    """z = x * mask / (1 - p), the mask drawn here from the generator manual_seed sets: drawn
    inside the op, a jit replay draws a new mask every step, as eager execution does."""
    __slots__ = ()
    name = "dropout"
    draws_random = True

    def forward(self, x, p):
        keep = generator().random(x.shape, dtype=np.float32) >= p
        return super().forward(x, keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - p)))


# ---------------------------------------------------------------- results without a gradient
# Ops like any other (observers see them; a jit replays them on new values), whose results are
# never floating point, or have no inputs: they are never recorded in the graph.

class Compare(Op):
    """z = ufunc(a, b) for a comparison ufunc (less, equal, ...): a boolean result"""
    __slots__ = ()
    name = "compare"

    def forward(self, a, b, ufunc):
        return np.asarray(ufunc(a, b))

    batch = batching.elementwise


class ArgMax(Op):
    """z = the index of the largest element over `axis` (None: of the flattened array)"""
    __slots__ = ()
    name = "argmax"

    def forward(self, x, axis):
        return np.asarray(x.argmax(axis=axis))

    @classmethod
    def batch(cls, size, options, args):
        (t, _), = args
        if options.get("axis") is None:
            return cls.apply(t.reshape(size, -1), axis=1)
        return cls.apply(t, axis=options["axis"] + 1)


class RandomNormal(Op):
    """z ~ N(0, 1) of `shape`, drawn from the generator manual_seed sets (or a fresh one from
    `seed`): drawn inside an op, so that a jit replay draws anew, as eager execution does"""
    __slots__ = ()
    name = "randn"
    draws_random = True

    def forward(self, shape, dtype, seed=None):
        rng = np.random.default_rng(seed) if seed is not None else generator()
        return rng.standard_normal(shape).astype(dtype)


class RandomUniform(RandomNormal):
    """z ~ U[0, 1) of `shape`, drawn as RandomNormal draws"""
    __slots__ = ()
    name = "rand"

    def forward(self, shape, dtype, seed=None):
        rng = np.random.default_rng(seed) if seed is not None else generator()
        return rng.random(shape).astype(dtype)


class RandomInteger(RandomNormal):
    """z: integers drawn uniformly from [low, high) of `shape` (int64), as RandomNormal draws"""
    __slots__ = ()
    name = "randint"

    def forward(self, low, high, shape, seed=None):
        rng = np.random.default_rng(seed) if seed is not None else generator()
        return rng.integers(low, high, size=shape, dtype=np.int64)


__all__ = [name for name, value in list(globals().items())
           if isinstance(value, type) and issubclass(value, Op)]

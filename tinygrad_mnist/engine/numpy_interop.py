"""NumPy's own functions on Tensors: `np.exp(t)`, `np.sum(t, axis=0)`, `ndarray * t` record the
graph like the Tensor methods they stand for, so NumPy code written for arrays runs on Tensors
and can be differentiated, and a backward written with them serves arrays and Tensors alike.

Tensor.__array_ufunc__ and Tensor.__array_function__ look the function up here, passing the
Tensor class (this module builds on Tensor without importing it). A NumPy function without a
rule is a TypeError that names it (never a plain array that silently drops the graph);
`np.asarray(t)` still gives the data.
"""
import numpy as np

from . import ops
from .arguments import axes, sizes


def _first_tensor(T, values):
    return next((v for v in values if isinstance(v, T)), None)


def _binary(method):
    """A two-operand ufunc as the Tensor operator `method`, whichever side the Tensor is on."""
    def call(T, a, b):
        if isinstance(a, T):
            return getattr(a, method)(b)
        return getattr(b._operand(a), method)(b)     # ndarray <op> Tensor: a as b's operand
    return call


def _unary(method):
    return lambda T, x: getattr(x, method)()


def _constant(ufunc):
    """A ufunc whose derivative is zero wherever it exists (sign, floor): a constant result."""
    return lambda T, *xs: T(np.asarray(ufunc(*[np.asarray(x) for x in xs])))


UFUNCS = {
    np.add: _binary("__add__"), np.subtract: _binary("__sub__"),
    np.multiply: _binary("__mul__"), np.true_divide: _binary("__truediv__"),
    np.power: _binary("__pow__"), np.matmul: _binary("__matmul__"),
    np.maximum: _binary("maximum"), np.minimum: _binary("minimum"),
    np.negative: _unary("__neg__"), np.exp: _unary("exp"), np.log: _unary("log"),
    np.sqrt: _unary("sqrt"), np.absolute: _unary("abs"), np.tanh: _unary("tanh"),
    np.sin: _unary("sin"), np.cos: _unary("cos"),
    np.equal: _binary("__eq__"), np.not_equal: _binary("__ne__"), np.less: _binary("__lt__"),
    np.less_equal: _binary("__le__"), np.greater: _binary("__gt__"),
    np.greater_equal: _binary("__ge__"), np.sign: _constant(np.sign),
}


def array_ufunc(T, ufunc, method, inputs, kwargs):
    if method != "__call__" or kwargs or ufunc not in UFUNCS:
        name = f"np.{ufunc.__name__}" + ("" if method == "__call__" else f".{method}")
        extra = f" with {', '.join(kwargs)}=" if kwargs and ufunc in UFUNCS else ""
        raise TypeError(f"{name}{extra} has no Tensor rule: it would drop the graph; use a "
                        f"Tensor method, or np.asarray(t) for the data alone")
    return UFUNCS[ufunc](T, *inputs)


# ---------------------------------------------------------------- functions

def _reduction(method):
    def call(T, a, axis=None, keepdims=False):
        return getattr(_as_tensor(T, a), method)(axis=axis, keepdims=keepdims)
    return call


def _as_tensor(T, value, like=None):
    if isinstance(value, T):
        return value
    return like._operand(value) if like is not None else T(value)


def _average(T, a, axis=None, weights=None, returned=False, *, keepdims=False):
    if weights is not None or returned:
        raise TypeError("np.average with weights= or returned= has no Tensor rule; use "
                        "(t * w).sum() / w.sum()")
    return _as_tensor(T, a).mean(axis=axis, keepdims=keepdims)


def _reshape(T, a, shape=None, order="C", *, newshape=None, copy=None):
    if order != "C" or copy:
        raise TypeError("np.reshape: only order='C' without copy has a Tensor rule")
    return a.reshape(sizes("reshape", (shape if shape is not None else newshape,)))


def _transpose(T, a, axes=None):
    return a.transpose() if axes is None else a.transpose(*axes)


def _dot(T, a, b):
    if np.ndim(a) > 2 or np.ndim(b) > 2:
        raise TypeError("np.dot of arrays of more than 2 dimensions has no Tensor rule; use @ "
                        "(np.matmul), whose batching differs")
    return _binary("__matmul__")(T, a, b)


def _joined(method):
    def call(T, tensors, axis=0):
        tensors = list(tensors)
        like = _first_tensor(T, tensors)
        return getattr(T, method)([_as_tensor(T, t, like) for t in tensors], axis=axis)
    return call


_NO_VALUE = object()


def _where(T, condition, x=_NO_VALUE, y=_NO_VALUE):
    """np.where(condition, x, y): the gradient goes to x where the condition holds and to y
    elsewhere; the condition (an input of the op, never differentiated) counts any non-zero
    value as true, as in NumPy. np.where(condition) alone gives the indices of the true
    elements."""
    if (x is _NO_VALUE) != (y is _NO_VALUE):
        raise TypeError("np.where: give both x and y, or neither")
    if x is _NO_VALUE:
        return np.nonzero(np.asarray(condition))
    mask = condition if isinstance(condition, T) else T(np.asarray(condition))
    if mask.dtype != bool:
        mask = mask != 0
    like = _first_tensor(T, (x, y))
    if like is None:                                   # constants on both sides: no graph
        return ops.Where.apply(*T._common_float((T(np.asarray(x)), T(np.asarray(y)))), mask)
    x, y = _as_tensor(T, x, like), _as_tensor(T, y, like)
    try:
        return ops.Where.apply(*T._common_float((x, y)), mask)
    except ValueError:
        raise ValueError(f"np.where: condition {mask.shape}, x {x.shape} and y {y.shape} "
                         f"cannot be broadcast together") from None


def _clip(T, a, a_min=None, a_max=None):
    return _as_tensor(T, a).clip(a_min, a_max)


def _broadcast_to(T, a, shape):
    return ops.BroadcastTo.apply(a, shape=sizes("broadcast_to", (shape,)))


def _expand_dims(T, a, axis):
    where = axis if isinstance(axis, (tuple, list)) else (axis,)
    shape = list(a.shape)
    for ax in sorted(ax % (a.ndim + len(where)) for ax in where):
        shape.insert(ax, 1)
    return a.reshape(tuple(shape))


def _squeeze(T, a, axis=None):
    return a.squeeze(axis)


def _norm(T, x, ord=None, axis=None, keepdims=False):
    """np.linalg.norm: the 2-norm (Frobenius for matrices) by default or with ord=2 or 'fro';
    for vectors also ord=1, inf, -inf and any other p > 0 as (sum |x|**p)**(1/p)."""
    x = _as_tensor(T, x)
    if axis is None:
        vector = x.ndim == 1 or ord is None
        over = None
    else:
        over = axes("np.linalg.norm", axis, x.ndim, x.shape)
        vector = len(over) == 1
    if ord is None or (ord == "fro" and not vector) or (ord == 2 and vector):
        return ops.Norm.apply(x, axis=over, keepdims=keepdims)
    if vector and isinstance(ord, (int, float)) and not isinstance(ord, bool):
        if ord == np.inf:
            return abs(x).max(axis=over, keepdims=keepdims)
        if ord == -np.inf:
            return abs(x).min(axis=over, keepdims=keepdims)
        if ord == 1:
            return abs(x).sum(axis=over, keepdims=keepdims)
        if ord > 0:
            return (abs(x) ** ord).sum(axis=over, keepdims=keepdims) ** (1.0 / ord)
    raise TypeError(f"np.linalg.norm with ord={ord!r} on a {'vector' if vector else 'matrix'} "
                    f"has no Tensor rule; the 2-norm (ord=None), 'fro', and vector ords 1, inf "
                    f"and p > 0 have")


FUNCTIONS = {
    np.sum: _reduction("sum"), np.mean: _reduction("mean"), np.average: _average,
    np.max: _reduction("max"),
    np.amax: _reduction("max"), np.min: _reduction("min"), np.amin: _reduction("min"),
    np.dot: _dot, np.transpose: _transpose, np.reshape: _reshape,
    np.concatenate: _joined("concat"), np.stack: _joined("stack"), np.clip: _clip,
    np.where: _where, np.broadcast_to: _broadcast_to, np.expand_dims: _expand_dims,
    np.squeeze: _squeeze, np.swapaxes: lambda T, a, axis1, axis2: a.swapaxes(axis1, axis2),
    np.linalg.norm: _norm, np.shape: lambda T, a: a.shape, np.ndim: lambda T, a: a.ndim,
    np.size: lambda T, a: a.size,
}

# Tensor methods to suggest when a NumPy function has no rule
_SUGGEST = {"argmax": "t.argmax(axis)", "log1p": "(1 + t).log()", "square": "t ** 2",
            "prod": "a product of slices", "cumsum": "a sum of slices"}


def array_function(T, func, args, kwargs):
    rule = FUNCTIONS.get(func)
    if rule is None:
        hint = _SUGGEST.get(func.__name__)
        raise TypeError(f"np.{func.__name__} has no Tensor rule: it would drop the graph"
                        + (f"; use {hint}" if hint else "; use a Tensor method, or "
                           "np.asarray(t) for the data alone"))
    takes = _parameters(rule)
    # a NumPy keyword at its "not given" value changes nothing; any other is named
    kwargs = {k: v for k, v in kwargs.items() if k in takes or not (v is None or v is np._NoValue)}
    unknown = [k for k in kwargs if k not in takes]
    if unknown:
        allowed = [p for p in takes if p not in ("T", "a", "tensors")]
        raise TypeError(f"np.{func.__name__}: the keyword{'s' * (len(unknown) > 1)} "
                        f"{', '.join(unknown)} {'are' if len(unknown) > 1 else 'is'} not "
                        f"supported on Tensors (it takes {', '.join(allowed) or 'none'}); "
                        + _KEYWORD_HINTS.get(unknown[0], "use a Tensor method, or "
                                                         "np.asarray(t) for the data alone"))
    return rule(T, *args, **kwargs)


_KEYWORD_HINTS = {"dtype": "cast first: t.astype(np.float64)",
                  "out": "a Tensor op returns a new tensor: assign its result",
                  "initial": "add the initial value to the result",
                  "where": "mask first: (t * mask) or t[mask]"}


def _parameters(rule):
    import inspect
    try:
        return list(inspect.signature(rule).parameters)
    except (TypeError, ValueError):
        return []

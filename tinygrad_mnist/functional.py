"""Second derivatives built on grad(create_graph=True): the Hessian, and Hessian-vector
products that never form the Hessian."""
import numpy as np

from .tensor import Tensor, grad


def _differentiable(op, x):
    """A copy of x that requires grad, so the caller's tensor and its .grad stay untouched."""
    if not isinstance(x, Tensor) or x.dtype.kind != "f":
        got = f"dtype {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
        raise TypeError(f"{op}: inputs must be floating-point Tensors, got {got}")
    return Tensor(x, requires_grad=True)


def _scalar(op, value):
    if not isinstance(value, Tensor) or value.size != 1:
        raise ValueError(f"{op}: f must return a one-element Tensor, got "
                         f"{getattr(value, 'shape', type(value).__name__)}")
    return value


def hessian(f, x):
    """The (x.size, x.size) array of second derivatives d2 f / dx_i dx_j of scalar f(x): the
    gradient of f, differentiated once per element of x."""
    x = _differentiable("hessian", x)
    (g,) = grad(_scalar("hessian", f(x)), x, create_graph=True)
    g = g.reshape(-1)
    rows = []
    for i in range(x.size):
        (row,) = grad(g[i], x, retain_graph=True, allow_unused=True)
        rows.append(np.zeros(x.size, x.dtype) if row is None else row.data.reshape(-1))
    return np.stack(rows) if rows else np.zeros((0, 0), x.dtype)


def hvp(f, inputs, v):
    """Hessian-vector products H v of scalar f(*inputs), one array per input, without forming
    H: the gradient g of f is recorded, and H v is the gradient of sum(g * v). It costs about
    two backward passes, whatever the number of parameters."""
    inputs, v = list(inputs), list(v)
    if len(inputs) != len(v):
        raise ValueError(f"hvp: {len(inputs)} inputs but {len(v)} vectors")
    xs = [_differentiable("hvp", x) for x in inputs]
    for i, (x, u) in enumerate(zip(xs, v)):
        if np.shape(u) != x.shape:
            raise ValueError(f"hvp: vector {i} has shape {np.shape(u)}, input {i} has shape "
                             f"{x.shape}")
    gs = grad(_scalar("hvp", f(*xs)), xs, create_graph=True, allow_unused=True)
    dot = sum((g * np.asarray(u)).sum() for g, u in zip(gs, v) if g is not None)
    if not isinstance(dot, Tensor) or not dot.requires_grad:
        return tuple(np.zeros_like(x.data) for x in xs)     # f is linear: H = 0
    products = grad(dot, xs, allow_unused=True)
    return tuple(np.zeros_like(x.data) if p is None else p.data for x, p in zip(xs, products))

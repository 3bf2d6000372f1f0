"""Gradients as values: grad() (torch.autograd.grad), and the second derivatives built on
grad(create_graph=True): the Hessian, and Hessian-vector products that never form it."""
import numpy as np

from .graph import run_backward
from .tensor import Tensor, seed_gradient


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
    seeds = [seed_gradient("grad", out, g, create_graph)
             for out, g in zip(outputs, grad_outputs)]
    retain = create_graph if retain_graph is None else retain_graph
    captured = run_backward(list(outputs), seeds, retain, create_graph,
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


def _inputs(op, inputs):
    """(tensors, single): a Tensor is one input (and one result, not a tuple); a list or tuple
    is several, as in PyTorch. A Tensor is never iterated into its rows."""
    if isinstance(inputs, Tensor):
        return [inputs], True
    if isinstance(inputs, (list, tuple)):
        return list(inputs), False
    raise TypeError(f"{op}: inputs must be a Tensor or a sequence of Tensors, got "
                    f"{type(inputs).__name__}")


def hessian(f, inputs):
    """Second derivatives of scalar f(*inputs). For one Tensor x: the (x.size, x.size) array
    d2 f / dx_i dx_j. For a sequence of tensors: a tuple of tuples, block [i][j] of shape
    (inputs[i].size, inputs[j].size). Each row is the gradient of one element of the
    (recorded) gradient of f."""
    tensors, single = _inputs("hessian", inputs)
    xs = [_differentiable("hessian", x) for x in tensors]
    gs = grad(_scalar("hessian", f(*xs)), xs, create_graph=True, allow_unused=True)
    blocks = [[np.zeros((a.size, b.size), np.result_type(a.dtype, b.dtype)) for b in xs]
              for a in xs]
    for i, g in enumerate(gs):
        if g is None or not g.requires_grad:
            continue                                   # f is linear in (or ignores) x_i
        g = g.reshape(-1)
        for k in range(g.size):
            rows = grad(g[k], xs, retain_graph=True, allow_unused=True)
            for j, row in enumerate(rows):
                if row is not None:
                    blocks[i][j][k] = row.data.reshape(-1)
    if single:
        return blocks[0][0]
    return tuple(tuple(row) for row in blocks)


def hvp(f, inputs, v):
    """Hessian-vector products H v of scalar f(*inputs) without forming H: the gradient g of
    f is recorded, and H v is the gradient of sum(g * v). It costs about two backward passes,
    whatever the number of parameters. `inputs` and `v` are each a Tensor (one array is
    returned) or sequences of the same length (a tuple with one array per input)."""
    tensors, single = _inputs("hvp", inputs)
    vectors = [v] if single else list(v)
    if len(tensors) != len(vectors):
        raise ValueError(f"hvp: {len(tensors)} inputs but {len(vectors)} vectors")
    xs = [_differentiable("hvp", x) for x in tensors]
    vectors = [np.asarray(u.data if isinstance(u, Tensor) else u) for u in vectors]
    for i, (x, u) in enumerate(zip(xs, vectors)):
        if u.shape != x.shape:
            raise ValueError(f"hvp: vector {i} has shape {u.shape}, input {i} has shape "
                             f"{x.shape}")
    gs = grad(_scalar("hvp", f(*xs)), xs, create_graph=True, allow_unused=True)
    dot = sum((g * u).sum() for g, u in zip(gs, vectors) if g is not None)
    if not isinstance(dot, Tensor) or not dot.requires_grad:
        products = [None] * len(xs)                       # f is linear: H = 0
    else:
        products = grad(dot, xs, allow_unused=True)
    result = tuple(np.zeros_like(x.data) if p is None else p.data for x, p in zip(xs, products))
    return result[0] if single else result

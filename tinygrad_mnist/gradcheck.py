"""Gradient checking: autograd against central finite differences, in float64."""
import numpy as np

from .tensor import Tensor, no_grad


class GradcheckError(AssertionError):
    """Autograd and finite differences disagree; the message names the input and element."""


def _float64_copies(inputs, requires_grad=None):
    copies = []
    for i, t in enumerate(inputs):
        if not isinstance(t, Tensor):
            raise TypeError(f"gradcheck: input {i} is a {type(t).__name__}, not a Tensor")
        if t.dtype.kind == "f":
            wants = t.requires_grad if requires_grad is None else requires_grad[i]
            copies.append(Tensor(t.data.astype(np.float64), requires_grad=wants, dtype=np.float64))
        else:
            copies.append(t)
    return copies


def _scalar_output(f, inputs):
    out = f(*inputs)
    out = out if isinstance(out, Tensor) else Tensor(out, dtype=np.float64)
    if out.size != 1:
        raise ValueError(f"gradcheck: f must return a scalar, got shape {out.shape}")
    return out


def numerical_grad(f, inputs, eps=1e-6):
    """Central differences (f(x+eps) - f(x-eps)) / 2eps of scalar f(*inputs) with respect to
    every element of every floating-point input, computed in float64. Returns one array per
    input (None for integer inputs such as indices)."""
    copies = _float64_copies(inputs)
    grads = []
    with no_grad():
        for t in copies:
            if t.dtype.kind != "f":
                grads.append(None)
                continue
            flat = t.data.reshape(-1)            # a view: edits reach t.data
            g = np.empty(flat.size)
            for i in range(flat.size):
                original = flat[i]
                flat[i] = original + eps
                f_plus = float(_scalar_output(f, copies).data)
                flat[i] = original - eps
                f_minus = float(_scalar_output(f, copies).data)
                flat[i] = original
                g[i] = (f_plus - f_minus) / (2 * eps)
            grads.append(g.reshape(t.shape))
    return grads


def gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-3):
    """Compare autograd's gradient of scalar f(*inputs) with numerical_grad, in float64, for
    every input that requires grad (every floating-point input if none does).

    Returns True, or raises GradcheckError naming the input, the worst element, both values
    and the absolute and relative error. Elementwise the test is |a - n| <= atol + rtol*|n|.
    """
    floats = [isinstance(t, Tensor) and t.dtype.kind == "f" for t in inputs]
    checked = [f_ and t.requires_grad for f_, t in zip(floats, inputs)]
    if not any(checked):
        checked = floats
    copies = _float64_copies(inputs, requires_grad=checked)
    out = _scalar_output(f, copies)
    if out.requires_grad:
        out.backward()
    numeric = numerical_grad(f, copies, eps)
    for i, (copy, want) in enumerate(zip(copies, checked)):
        if not want:
            continue
        analytic = copy.grad if copy.grad is not None else np.zeros_like(copy.data)
        excess = np.abs(analytic - numeric[i]) - (atol + rtol * np.abs(numeric[i]))
        if excess.size and (np.nanmax(excess) > 0 or np.isnan(excess).any()):
            worst = tuple(int(k) for k in np.unravel_index(
                np.nanargmax(np.where(np.isnan(excess), np.inf, excess)), excess.shape))
            a, n = analytic[worst], numeric[i][worst]
            note = " (autograd gave no gradient)" if copy.grad is None else ""
            raise GradcheckError(
                f"gradcheck: input {i} (shape {copy.shape}) disagrees at element {worst}: "
                f"autograd {a:.10g} vs finite differences {n:.10g}, abs error {abs(a - n):.3g}, "
                f"rel error {abs(a - n) / max(abs(n), 1e-300):.3g}{note}")
    return True

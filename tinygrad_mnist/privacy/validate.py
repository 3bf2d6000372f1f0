"""A validation report for per-example gradients: each layer's per-example norms as
example_norms gives them, against each example's gradient computed alone (one backward pass
per example), so that a user can see that the fast path computes what the definition says
on their own model and data.

    print(privacy.validation_report(model, loss_fn, x, y))
"""
import time

import numpy as np

from .norms import _parameters, example_norms


def looped_norms(model, loss_fn, *batch):
    """name -> (B,) norms of each example's gradient, one example at a time (the definition:
    slow, and independent of the ops' norm rules)."""
    size = int(np.shape(batch[0])[0])
    parameters = _parameters(model)
    kept = [(p, p.grad) for _, p in parameters]
    out = {name: np.zeros(size) for name, _ in parameters}
    try:
        for i in range(size):
            for _, p in parameters:
                p.grad = None
            one = tuple(b[i:i + 1] for b in batch)
            loss_fn(model, *one).sum().backward()
            for name, p in parameters:
                if p.grad is not None:
                    out[name][i] = np.sqrt(np.sum(np.asarray(p.grad, np.float64) ** 2))
    finally:
        for p, g in kept:
            p.grad = g
    return out


def validation_report(model, loss_fn, *batch):
    """A table: per parameter, the largest difference between example_norms and the loop,
    absolute and relative to the largest norm, and the time each took."""
    started = time.perf_counter()
    fast = example_norms(model, loss_fn, *batch)
    fast_seconds = time.perf_counter() - started
    started = time.perf_counter()
    slow = looped_norms(model, loss_fn, *batch)
    slow_seconds = time.perf_counter() - started
    size = len(fast.total)
    lines = [f"per-example gradient norms of {size} examples: {fast.method} "
             f"({fast_seconds * 1e3:.1f} ms) against one backward pass per example "
             f"({slow_seconds * 1e3:.1f} ms)",
             f"{'parameter':<28} {'shape':<16} {'largest norm':>12} {'largest diff':>12} "
             f"{'relative':>9}"]
    totals = np.zeros(size)
    for name, p in _parameters(model):
        a, b = fast.by_parameter[name], slow[name]
        totals += b ** 2
        diff, scale = float(np.max(np.abs(a - b))), float(np.max(b)) or 1.0
        lines.append(f"{name:<28} {str(p.shape):<16} {np.max(b):>12.4g} {diff:>12.2e} "
                     f"{diff / scale:>9.1e}")
    total = np.sqrt(totals)
    diff = float(np.max(np.abs(fast.total - total)))
    lines.append(f"{'total':<28} {'':<16} {np.max(total):>12.4g} {diff:>12.2e} "
                 f"{diff / (float(np.max(total)) or 1.0):>9.1e}")
    return "\n".join(lines)


__all__ = ["validation_report", "looped_norms"]

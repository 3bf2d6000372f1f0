"""Hand-derived gradients checked: a notebook's backprop formulas (dZ = A - Y, dW = dZ A^T / m,
...) against autograd and finite differences, parameter by parameter, with the likely cause
of a wrong one (a sum over the wrong axes, a constant factor, the gradient of another loss,
a transposed shape). Built on gradcheck's machinery."""
from dataclasses import dataclass

import numpy as np

from .engine import Tensor, grad
from .gradcheck import perturbed, replaying
from .tables import text_table

@dataclass
class ParamComparison:
    """One parameter: a hand-written gradient against autograd and finite differences."""
    name: str
    shape: tuple
    manual_shape: tuple
    abs_error: float              # max |manual - autograd|
    rel_error: float              # that, over max |autograd|
    numeric_rel_error: float      # max |manual - finite differences| / max |autograd|, sampled
    autograd_numeric_rel_error: float   # autograd itself against finite differences, sampled
    worst_index: tuple
    manual_value: float
    autograd_value: float
    ok: bool
    cause: str = ""


@dataclass
class ManualReport:
    rows: list
    tolerance: float

    @property
    def ok(self):
        return all(r.ok for r in self.rows)

    def __getitem__(self, name):
        return next(r for r in self.rows if r.name == name)

    def __str__(self):
        header = ["parameter", "shape", "max abs err", "rel err vs autograd",
                  "rel err vs finite diff", "worst element: hand-derived vs autograd", "verdict"]
        lines = [header]
        for r in self.rows:
            shape = str(r.shape) if r.shape == r.manual_shape else \
                f"{r.shape} (hand: {r.manual_shape})"
            lines.append([r.name, shape, f"{r.abs_error:.2e}", f"{r.rel_error:.2e}",
                          f"{r.numeric_rel_error:.2e}",
                          f"{r.worst_index}: hand {r.manual_value:.4g} vs autograd "
                          f"{r.autograd_value:.4g}",
                          "correct" if r.ok else f"WRONG: {r.cause}"])
        return text_table(lines[0], lines[1:], last_free=True)


def _factor(factor):
    """A scale factor as a reader recognizes it: 0.001 as 1/1000, 2 as 2, else 6 digits."""
    for value, text in ((factor, "{:d}"), (1 / factor, "1/{:d}")):
        whole = round(value)
        if whole and abs(value - whole) <= 1e-4 * abs(value):
            return text.format(int(whole))
    return f"{factor:.6g}"


def _relative(difference, scale):
    return float(np.abs(difference).max() / scale) if difference.size else 0.0


def _diagnose(name, manual, true, all_manual, all_true, alternatives, scale):
    """The likely cause of a wrong hand-written gradient, from a few tests of what it is."""
    close = 1e-6      # a notebook's own loss may carry an epsilon: log(p + 1e-8)
    if manual.shape != true.shape:
        if manual.size == 1 and true.size > 1:
            total = " (it equals the sum of the true gradient)" if abs(
                manual.item() - true.sum()) <= close * max(abs(true.sum()), scale) else ""
            return (f"one number where {true.shape} per-unit gradients belong: a sum over "
                    f"every axis (np.sum without axis=){total}")
        if manual.shape == true.T.shape:
            return f"transposed: shape {manual.shape} where {true.shape} belongs"
        return f"shape {manual.shape} where {true.shape} belongs"
    for alt_name, alt in alternatives.items():
        if _relative(manual - alt[name], max(np.abs(alt[name]).max(), 1e-300)) <= close:
            return (f"it is the gradient of {alt_name} instead: the formula assumes a loss that "
                    f"is not the one computed")
    denominator = float((true * true).sum())
    if denominator > 0:
        factor = float((manual * true).sum()) / denominator
        if factor and _relative(manual - factor * true, scale * abs(factor)) <= close:
            return (f"scaled by {_factor(factor)}: a constant factor that does "
                    f"not match the loss (a wrong m, or a missing or extra 1/m)")
    for other in all_true:
        if other == name:
            continue
        for label, source in (("hand-written", all_manual.get(other)), ("true", all_true[other])):
            if source is None or np.ndim(source) == 0:
                continue
            for axis in range(np.ndim(source)):
                reduced = np.sum(source, axis=axis)
                if reduced.size == manual.size and _relative(
                        reduced.reshape(manual.shape) - manual, scale) <= close:
                    return (f"it equals the sum over axis {axis} of the {label} gradient of "
                            f"{other}: built from the wrong intermediate")
    cosine = float((manual * true).sum() / max(np.linalg.norm(manual) * np.linalg.norm(true),
                                                1e-300))
    return (f"not proportional to the true gradient (cosine similarity {cosine:.3f}): a wrong "
            f"intermediate or formula")


def _positional(loss, names):
    """A loss of {name: Tensor} as a function of the tensors in order, with its random draws
    replayed at every call (the machinery gradcheck uses)."""
    return replaying(lambda *ts: loss(dict(zip(names, ts))))


def _grads_of(loss, params):
    names = list(params)
    tensors = [Tensor(np.array(params[n], dtype=np.float64), requires_grad=True,
                      dtype=np.float64) for n in names]
    gs = grad(_positional(loss, names)(*tensors), tensors, allow_unused=True)
    return {n: (g.data if g is not None else np.zeros_like(t.data))
            for n, t, g in zip(names, tensors, gs)}


def compare_manual(loss, params, manual, numeric_samples=6, alternatives=None, rtol=1e-8,
                   eps=1e-6, seed=0):
    """Check hand-derived gradients of a scalar loss, parameter by parameter, in float64.

    loss:      a function of {name: Tensor} returning a scalar Tensor (the model's forward
               pass and loss, written with this library).
    params:    {name: array}, the point at which to compare.
    manual:    {name: array}, the hand-written gradients (or a function of params giving them).
    alternatives: {description: loss function}: other losses a wrong formula may belong to,
               named in the diagnosis when one matches.

    Each row reports the max absolute error and the error relative to the largest true
    gradient against autograd, the same against central finite differences on
    `numeric_samples` sampled elements (autograd is checked there too), the worst element,
    and for a wrong gradient the likely cause. A gradient is correct when its shape matches
    and its relative error is at most rtol.
    """
    params = {n: np.asarray(v, dtype=np.float64) for n, v in params.items()}
    if callable(manual):
        manual = manual(params)
    manual = {n: np.asarray(v, dtype=np.float64) for n, v in manual.items()}
    missing = [n for n in params if n not in manual]
    if missing:
        raise KeyError(f"compare_manual: no hand-written gradient for {missing}")
    true = _grads_of(loss, params)
    alt_grads = {k: _grads_of(fn, params) for k, fn in (alternatives or {}).items()}
    rng = np.random.default_rng(seed)
    rows = []
    for name, value in params.items():
        a, m = true[name], manual[name]
        scale = max(float(np.abs(a).max()), 1e-300)
        try:
            m_full = np.broadcast_to(m, a.shape)
        except ValueError:
            m_full = np.resize(m, a.shape)         # unrelated shapes: compare what is there
        difference = np.abs(m_full - a)
        worst = tuple(int(i) for i in np.unravel_index(np.argmax(difference), a.shape))
        samples = rng.choice(a.size, size=min(numeric_samples, a.size), replace=False)
        samples = np.union1d(samples, [np.ravel_multi_index(worst, a.shape) if a.ndim else 0])
        numeric = np.array([_central_difference(loss, params, name, i, eps) for i in samples])
        flat_m, flat_a = m_full.reshape(-1), a.reshape(-1)
        rel = _relative(difference, scale)
        ok = m.shape == a.shape and rel <= rtol
        rows.append(ParamComparison(
            name, a.shape, m.shape, float(difference.max()), rel,
            _relative(flat_m[samples] - numeric, scale),
            _relative(flat_a[samples] - numeric, scale), worst, float(m_full[worst]),
            float(a[worst]), ok,
            "" if ok else _diagnose(name, m, a, manual, true, alt_grads, scale)))
    return ManualReport(rows, rtol)


def _central_difference(loss, params, name, flat_index, eps):
    """d loss / d params[name].flat[flat_index], by gradcheck's perturbation of one element."""
    names = list(params)
    tensors = [Tensor(np.array(params[n], dtype=np.float64), dtype=np.float64) for n in names]
    target = tensors[names.index(name)]
    index = np.unravel_index(flat_index, target.shape)
    f = _positional(loss, names)
    return float((perturbed(f, tensors, target, index, eps)
                  - perturbed(f, tensors, target, index, -eps)).item()) / (2 * eps)

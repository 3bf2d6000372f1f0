"""The losses as functions (nn.cross_entropy, nn.mse_loss, nn.binary_cross_entropy), each
one fused op (engine/ops.py)."""
import numpy as np

from .engine import Tensor, ops
from .module import _as_tensor

_REDUCTIONS = ("mean", "sum", "none")


def _reduction(loss, reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{loss}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return reduction


def cross_entropy(logits, targets, reduction="mean", label_smoothing=0.0, ignore_index=-100):
    """Softmax cross-entropy of (N, C) logits against N integer class targets, or of
    (N, C, d1, ...) logits against (N, d1, ...) targets (a sequence's positions, as PyTorch):
    the mean over the rows (reduction="mean"), their sum ("sum") or one loss per row
    ("none"). A target equal to ignore_index (padding) counts for nothing: its loss and
    gradient are 0 and the mean is over the other rows. With label_smoothing s the target of
    each row is (1 - s) on its class and s / C spread over all classes, as in PyTorch. Stable
    for logits of any size; the gradient is (softmax - target) / N for the mean. Targets out
    of [0, C) are refused by the op itself, so a jit replay checks them too."""
    logits = _as_tensor(logits)
    if logits.dtype.kind != "f":
        logits = logits.float()
    targets = targets if isinstance(targets, Tensor) else Tensor.from_numpy(np.asarray(targets))
    _reduction("cross_entropy", reduction)
    if logits.ndim < 2:
        raise ValueError(f"cross_entropy: logits must be (N, C) or (N, C, d1, ...), got shape "
                         f"{logits.shape}")
    expected = logits.shape[:1] + logits.shape[2:]
    if targets.shape != expected or targets.dtype.kind not in "iu":
        raise ValueError(f"cross_entropy: targets must be integer class indices of shape "
                         f"{expected} for logits of shape {logits.shape}, got shape "
                         f"{targets.shape} of dtype {targets.dtype}")
    if logits.ndim > 2:                 # every position a row: (N * d1 * ..., C)
        classes = logits.shape[1]
        order = (0,) + tuple(range(2, logits.ndim)) + (1,)
        losses = cross_entropy(logits.transpose(order).reshape((-1, classes)),
                               targets.reshape((-1,)), reduction, label_smoothing, ignore_index)
        return losses.reshape(expected) if reduction == "none" else losses
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must lie in [0, 1], got "
                         f"{label_smoothing}")
    options = {} if reduction == "mean" and not label_smoothing else \
        {"reduction": reduction, "label_smoothing": float(label_smoothing)}
    if ignore_index is not None:
        options["ignore_index"] = int(ignore_index)
    return ops.CrossEntropy.apply(logits, targets, **options)


def mse_loss(pred, target, reduction="mean"):
    """Squared differences of pred and target (the same shape): their mean, sum, or each
    ("none")."""
    pred = _as_tensor(pred)
    _reduction("mse_loss", reduction)
    if pred.shape != np.shape(target):
        raise ValueError(f"mse_loss: pred has shape {pred.shape} but target has shape "
                         f"{np.shape(target)}")
    diff = pred - target                     # a NumPy target takes pred's dtype
    squares = diff * diff
    if reduction == "none":
        return squares
    return squares.mean() if reduction == "mean" else squares.sum()


def binary_cross_entropy(prob, target, reduction="mean"):
    """-(t log p + (1-t) log(1-p)) for probabilities p in [0, 1], logs clamped at -100: the
    mean, the sum, or each element ("none")."""
    prob = _as_tensor(prob)
    target = target.to(prob.dtype) if isinstance(target, Tensor) else \
        Tensor(target, dtype=prob.dtype)
    _reduction("binary_cross_entropy", reduction)
    if prob.shape != target.shape:
        raise ValueError(f"binary_cross_entropy: prob has shape {prob.shape} but target has "
                         f"shape {target.shape}")
    options = {} if reduction == "mean" else {"reduction": reduction}
    return ops.BinaryCrossEntropy.apply(prob, target, **options)

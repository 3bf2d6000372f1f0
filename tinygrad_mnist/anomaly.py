"""detect_anomaly(): the first op whose output or gradient holds NaN or inf stops the run, with
an error naming the op, the shapes and the line of user code that created it. An observer of
the engine, attached in the current thread for the block; it costs a check per op."""
import contextlib

import numpy as np

from .callsite import user_site
from .engine import Observer, observe


class AnomalyError(FloatingPointError):
    """An op produced NaN or inf; the message names the op, the shapes and the user's line."""


def _nonfinite(array):
    array = np.asarray(array)
    return array.dtype.kind == "f" and not np.isfinite(array).all()


class AnomalyDetector(Observer):
    """Checks every op's output as it is made, and every gradient as backward passes it on."""

    def on_op(self, op, inputs, output):
        op.created_at = site = user_site()
        data = np.asarray(output)
        if _nonfinite(data):
            shapes = ", ".join(str(t.shape) for t in inputs)
            bad = "NaN" if np.isnan(data).any() else "inf"
            raise AnomalyError(f"{op.name}: forward produced {bad} (inputs of shapes {shapes}, "
                               f"output {data.shape}), created at {site}")

    def on_backward(self, op, grad_output, grad_inputs):
        for i, (parent, g) in enumerate(zip(op.inputs, grad_inputs)):
            if g is not None and _nonfinite(g):
                bad = "NaN" if np.isnan(np.asarray(g)).any() else "inf"
                raise AnomalyError(f"{op.name}: backward produced {bad} in the gradient of input "
                                   f"{i} (shape {parent.shape}), for the op created at "
                                   f"{getattr(op, 'created_at', 'an unknown location')}")


@contextlib.contextmanager
def detect_anomaly():
    """Inside this context (this thread only), the first op whose forward output or backward
    gradient holds NaN or inf raises AnomalyError naming the op, the shapes involved and the
    line of user code that created it. It costs a check per op: use it to debug."""
    with observe(AnomalyDetector()):
        yield

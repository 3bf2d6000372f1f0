"""A model's forward pass as the list of ops it runs, heard through the engine's observer seam:
what the ONNX exporter writes and the playground page computes."""
from .engine import Observer, no_grad, observe


class _Ops(Observer):
    def __init__(self):
        self.steps = []

    def on_op(self, op, inputs, output):
        self.steps.append((op, inputs, output))


def forward_ops(model, x):
    """([(op, inputs, output)] in the order they ran, model(x)), in eval mode without
    recording a graph; each module's mode is restored afterwards."""
    with model.evaluating(), no_grad(), observe(_Ops()) as ops:
        out = model(x)
    return ops.steps, out

"""Exchange with other runtimes: ONNX export and import (the `onnx` package, an optional
extra: pip install "tinygrad_mnist[onnx]").

    onnx.export(model, example_input, "model.onnx")   # the forward pass, batch axis free
    model = onnx.load("model.onnx")                   # a Module of the engine's own ops

    export.py   the forward pass traced through the observer seam, each op's ONNX nodes
    load.py     each ONNX node run by the engine's ops (so a loaded model has gradients)
"""
from .export import export
from .load import OnnxModel, load

__all__ = ["export", "load", "OnnxModel"]

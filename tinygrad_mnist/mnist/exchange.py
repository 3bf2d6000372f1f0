"""A trained model.npz taken out of the trainer: `tinygrad-mnist export` writes it as ONNX
that reads pixels, as any other runtime gets them (the standardization inside the file), and
`tinygrad-mnist playground` gives its page test digits to load."""
import os

import numpy as np

from .. import nn
from ..engine import Tensor
from .data import DATASETS


class Pixels(nn.Module):
    """model with the dataset's standardization in front: (N, 784) pixels in [0, 1] in."""

    def __init__(self, model, info):
        self.model = model
        self.mean = Tensor(np.float32(info.mean))
        self.std = Tensor(np.float32(info.std))

    def forward(self, pixels):
        return self.model((pixels - self.mean) / self.std)


def export(model, meta, model_path, out=None):
    """Write a model loaded from model_path (with its metadata) as ONNX to out (default:
    model.onnx beside model_path); the path written."""
    from .. import onnx
    info = DATASETS[meta.get("dataset", "mnist")]
    out = out or os.path.join(os.path.dirname(os.path.abspath(model_path)), "model.onnx")
    example = np.zeros((3, 784), np.float32)
    onnx.export(Pixels(model, info), example, out, input_name="pixels", output_name="logits")
    return out


def page_digits(model, images, labels, standardize, count=40, wrong=12, seed=0):
    """[(index, pixels, label, answer)]: test digits the model gets right and, first, some it
    gets wrong (as many as `wrong`, if it gets that many wrong)."""
    from .evaluation import predict_logits
    answers = predict_logits(model, standardize(images)).argmax(axis=1)
    rng = np.random.default_rng(seed)
    missed = np.flatnonzero(answers != labels)
    right = np.flatnonzero(answers == labels)
    chosen = list(rng.permutation(missed)[:wrong]) + list(
        rng.permutation(right)[:count - min(wrong, len(missed))])
    return [(int(i), images[i], int(labels[i]), int(answers[i])) for i in chosen]

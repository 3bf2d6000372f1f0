"""A trained model on a labelled set: logits in batches, accuracy, the confusion matrix."""
import numpy as np

from .. import nn
from ..engine import Tensor, no_grad
from . import models


def predict_logits(model, x, batch_size=None):
    """The model's logits for every row of x, in batches: 2,000 images at a time for an MLP,
    200 for a conv net, whose im2col columns for 2,000 images would take over a gigabyte."""
    if batch_size is None:
        batch_size = 200 if isinstance(model, models.ConvNet) else 2000
    model.eval()
    with no_grad():
        out = np.concatenate([model(Tensor.from_numpy(x[i:i + batch_size])).data
                              for i in range(0, len(x), batch_size)])
    model.train()
    return out


def confusion_matrix(labels, predictions, n_classes=10):
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def format_confusion(matrix, classes):
    width = max(5, len(str(matrix.max())) + 1)
    names = [c[:width - 1] for c in classes]
    lines = ["true \\ predicted".ljust(12) + "".join(n.rjust(width) for n in names)]
    for name, row in zip(classes, matrix):
        lines.append(name[:11].ljust(12) + "".join(str(v).rjust(width) for v in row))
    return "\n".join(lines)


def accuracy(model, inputs, labels):
    return float((predict_logits(model, inputs).argmax(axis=1) == labels).mean())


def evaluate(model, inputs, labels):
    """(mean cross-entropy, accuracy) of the model on a labelled set."""
    logits = predict_logits(model, inputs)
    loss = nn.cross_entropy(Tensor.from_numpy(logits), labels).item()
    return loss, float((logits.argmax(axis=1) == labels).mean())

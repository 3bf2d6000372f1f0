"""A trained model on a labelled set: logits in batches, accuracy, the confusion matrix."""
import numpy as np

from .. import nn
from ..engine import Tensor, no_grad
from . import models


def predict_logits(model, x, batch_size=None):
    """The model's logits for every row of x, in batches: 2,000 images at a time for an MLP,
    200 for a conv net, whose im2col columns for 2,000 images would take over a gigabyte.
    In eval mode; the model's modes are left as they were."""
    if batch_size is None:
        batch_size = 200 if isinstance(model, models.ConvNet) else 2000
    with model.evaluating(), no_grad():
        return np.concatenate([model(Tensor.from_numpy(x[i:i + batch_size])).data
                               for i in range(0, len(x), batch_size)])


SHIFTS = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))    # the image and its 1-pixel moves


def shifted(x, dy, dx, fill):
    """(N, 784) images moved dy rows down and dx columns right; uncovered pixels get fill."""
    images = x.reshape(-1, 28, 28)
    out = np.full_like(images, fill)
    rows = slice(max(dy, 0), 28 + min(dy, 0))
    cols = slice(max(dx, 0), 28 + min(dx, 0))
    out[:, rows, cols] = images[:, max(-dy, 0):28 - max(dy, 0), max(-dx, 0):28 - max(dx, 0)]
    return out.reshape(x.shape)


def mirrored(x):
    """(N, 784) images mirrored left to right."""
    return x.reshape(-1, 28, 28)[:, :, ::-1].reshape(x.shape)


def predict_logits_tta(model, x, fill, mirror=False, batch_size=None):
    """Test-time augmentation: the log of the model's probabilities averaged over each image
    and its four 1-pixel shifts (the background, `fill`, moved in), as logits; with mirror
    (a model trained on mirrored images), over the mirrored image's five views as well."""
    images = [x, mirrored(x)] if mirror else [x]
    total = 0
    for image in images:
        for dy, dx in SHIFTS:
            z = predict_logits(model, shifted(image, dy, dx, fill), batch_size)
            z = z.astype(np.float64)
            e = np.exp(z - z.max(axis=1, keepdims=True))
            total = total + e / e.sum(axis=1, keepdims=True)
    return np.log(total / (len(SHIFTS) * len(images))).astype(np.float32)


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

"""`tinygrad-mnist hardest`: the training images with the largest gradient norms under a
trained model, drawn. An example the model has learned gives a small gradient; a large one
is an image the model still gets wrong or barely right: often a mislabelled or strange
digit. The norms are each example's own (privacy.example_norms), not the batch's.
"""
import numpy as np

from .. import nn, privacy
from ..engine import Tensor

BATCH = 500


def _loss(model, x, y):
    return nn.cross_entropy(model(x), y, reduction="none")


def gradient_norms(model, images, labels, batch=BATCH, progress=None):
    """Each training example's gradient norm under `model` (in eval mode), and the model's
    answer for it."""
    model.eval()
    norms = np.empty(len(labels))
    answers = np.empty(len(labels), np.int64)
    for start in range(0, len(labels), batch):
        stop = min(start + batch, len(labels))
        x = Tensor.from_numpy(np.ascontiguousarray(images[start:stop]))
        found = privacy.example_norms(model, _loss, x, labels[start:stop])
        norms[start:stop] = found.total
        answers[start:stop] = model(x).data.argmax(axis=1)
        if progress is not None:
            progress(stop - start)
    return norms, answers


def hardest(norms, count):
    """The indices of the `count` largest norms, largest first."""
    count = min(count, len(norms))
    top = np.argpartition(-norms, count - 1)[:count]
    return top[np.argsort(-norms[top], kind="stable")]

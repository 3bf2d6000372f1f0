"""`tinygrad-mnist hardest`: the training images with the largest gradient norms under a
trained model, drawn. An example the model has learned gives a small gradient; a large one
is an image the model still gets wrong or barely right: often a mislabelled or strange
digit. The norms are each example's own (privacy.example_norms), not the batch's.
"""
import numpy as np

from .. import nn, privacy
from ..engine import Tensor

BATCH = 500


def gradient_norms(model, images, labels, batch=BATCH, progress=None):
    """Each training example's gradient norm under `model` (in eval mode), and the model's
    answer for it."""
    model.eval()
    norms = np.empty(len(labels))
    answers = np.empty(len(labels), np.int64)
    logits = []

    def loss(m, x, y):                  # the logits kept: the answers need no second forward
        logits.append(m(x))
        return nn.cross_entropy(logits[-1], y, reduction="none")
    for start in range(0, len(labels), batch):
        stop = min(start + batch, len(labels))
        x = Tensor.from_numpy(np.ascontiguousarray(images[start:stop]))
        norms[start:stop] = privacy.example_norms(model, loss, x, labels[start:stop]).total
        answers[start:stop] = logits.pop().data.argmax(axis=1)
        if progress is not None:
            progress(stop - start)
    return norms, answers


def hardest(norms, count):
    """The indices of the `count` largest norms, largest first."""
    count = min(count, len(norms))
    top = np.argpartition(-norms, count - 1)[:count]
    return top[np.argsort(-norms[top], kind="stable")]

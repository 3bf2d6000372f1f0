"""Training on the hardest part of the data (as airbench picks CIFAR-10's hardest 60% with a
small proxy model): a 784-100-10 MLP is trained for a few epochs on every training image, and
the images with the largest loss under it are kept."""
import time

import numpy as np

from .. import nn, optim
from ..engine import Tensor, manual_seed
from .evaluation import predict_logits


def hardest_fraction(losses, fraction):
    """The indices (ascending) of the round(fraction * N) largest losses; ties go to the
    earlier image."""
    keep = max(1, int(round(fraction * len(losses))))
    order = np.argsort(-np.asarray(losses), kind="stable")
    return np.sort(order[:keep])


def proxy_losses(x, labels, epochs, seed, batch_size=128, lr=0.05):
    """Each training image's cross-entropy under a small MLP trained on all of them."""
    manual_seed([seed, 99])
    proxy = nn.MLP([784, 100, 10])
    opt = optim.SGD(proxy.parameters(), lr, momentum=0.9)
    rng = np.random.default_rng([seed, 99])
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for i in range(0, len(x), batch_size):
            rows = order[i:i + batch_size]
            opt.zero_grad()
            nn.cross_entropy(proxy(Tensor.from_numpy(x[rows])), labels[rows]).backward()
            opt.step()
    logits = predict_logits(proxy, x)
    return nn.cross_entropy(Tensor.from_numpy(logits), labels, reduction="none").numpy()


def select(config, x, labels, log):
    """(kept indices, seconds): the --select-fraction hardest training images."""
    started = time.perf_counter()
    losses = proxy_losses(x, labels, config.proxy_epochs, config.seed)
    kept = hardest_fraction(losses, config.select_fraction)
    seconds = time.perf_counter() - started
    log(f"training on the {len(kept)} hardest of {len(x)} images under a proxy MLP "
        f"({config.proxy_epochs} epoch{'s' * (config.proxy_epochs > 1)}, {seconds:.1f}s, "
        f"counted in the training time)")
    return kept, seconds

"""Train a differentially private model with the library, and watch epsilon grow.

DP-SGD (Abadi et al. 2016): every batch is a Poisson sample of the training set, each
example's gradient is clipped to norm C, Gaussian noise of standard deviation sigma * C is
added to their sum. The privacy accountant turns (sigma, the sampling rate, the steps taken,
delta) into the epsilon of (epsilon, delta)-differential privacy: how much any one training
image can change what the model becomes. The per-example norms come from the ops' own rules,
at about the cost of one gradient; the first batch's norms are checked against one backward
pass per example before training.

    python examples/private_training.py [--data-dir ../shared/data/mnist] [--epochs 3]
        [--subset 20000] [--epsilon 2.0]

(The same from the command line: tinygrad-mnist train --dp --epsilon 2 ...)
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tinygrad_mnist import Tensor, manual_seed, nn, optim, privacy  # noqa: E402
from tinygrad_mnist.mnist import data  # noqa: E402
from tinygrad_mnist.mnist.models import build  # noqa: E402

DELTA, CLIP, BATCH, LR = 1e-5, 0.1, 256, 2.0


def per_example_loss(model, x, y):
    return nn.cross_entropy(model(x), y, reduction="none")


def accuracy(model, x, y):
    model.eval()
    right = sum(int((model(Tensor.from_numpy(x[i:i + 1000])).data.argmax(axis=1)
                     == y[i:i + 1000]).sum()) for i in range(0, len(y), 1000))
    model.train()
    return right / len(y)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.path.join("..", "shared", "data", "mnist"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--subset", type=int, default=20000, help="training images used")
    parser.add_argument("--epsilon", type=float, default=2.0, help="the budget")
    args = parser.parse_args(argv)
    ds = data.load("mnist", args.data_dir if os.path.isdir(args.data_dir) else None,
                   progress=False)
    x = ds.normalized(ds.train_images[:args.subset])
    y = ds.train_labels[:args.subset].astype(np.int64)
    x_test, y_test = ds.normalized(ds.test_images), ds.test_labels.astype(np.int64)

    manual_seed(0)
    model = build("lenet5", activation="tanh", dropout=0.0)
    sample_rate = BATCH / len(y)
    steps_per_epoch = round(1 / sample_rate)
    sigma = privacy.noise_multiplier_for(args.epsilon, sample_rate,
                                         steps_per_epoch * args.epochs, DELTA)
    print(f"LeNet-5 (tanh) on {len(y)} images: Poisson batches of {BATCH} on average "
          f"({steps_per_epoch} an epoch), clipping to {CLIP}, noise multiplier {sigma:.3f} "
          f"for epsilon {args.epsilon} at delta {DELTA}")
    first = np.arange(32)
    print(privacy.validation_report(model, per_example_loss, Tensor.from_numpy(x[first]),
                                    y[first]))

    dp = privacy.DPOptimizer(optim.SGD(model.parameters(), lr=LR, momentum=0.9), model,
                             noise_multiplier=sigma, max_grad_norm=CLIP,
                             expected_batch_size=BATCH)
    rng = np.random.default_rng(0)
    spent = []
    for epoch in range(1, args.epochs + 1):
        clipped = seen = 0
        for batch in privacy.poisson_batches(len(y), sample_rate, rng, steps_per_epoch):
            norms = dp.step(per_example_loss, Tensor.from_numpy(x[batch]), y[batch])
            clipped, seen = clipped + int((norms > CLIP).sum()), seen + len(batch)
        spent.append(privacy.epsilon(sigma, sample_rate, dp.steps, DELTA))
        print(f"epoch {epoch}: test accuracy {accuracy(model, x_test, y_test):.2%}, epsilon "
              f"spent {spent[-1]:.3f} (delta {DELTA}); {clipped / max(seen, 1):.0%} of the "
              f"examples' gradients were clipped")
    return spent, accuracy(model, x_test, y_test)


if __name__ == "__main__":
    main()

"""Per-example gradients with vmap(grad), and one step of DP-SGD with them.

Differentially private SGD (Abadi et al. 2016) clips every example's gradient to a norm of at
most C before averaging, then adds Gaussian noise of standard deviation sigma * C: it needs
each example's gradient, not the batch's. func.vmap(func.grad(loss)) gives all of them in one
batched pass; this script checks them against a Python loop over the examples, one gradient
at a time, and times both.

    python examples/per_example_gradients.py [--data-dir ../shared/data/mnist]
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tinygrad_mnist import Tensor, func, manual_seed, nn  # noqa: E402
from tinygrad_mnist.mnist import data  # noqa: E402

CLIP, NOISE, LR = 1.0, 1.1, 0.1


def loss_of_one(model):
    """The loss of one example (x: 784 pixels, y: its label) under parameters `params`."""
    def loss(params, x, y):
        logits = func.functional_call(model, params, (x[None],))
        return nn.cross_entropy(logits, y[None])
    return loss


def dp_sgd_update(per_example, rng):
    """Clip each example's gradient (all parameters together) to norm CLIP, average, add
    noise: the private gradient of the batch."""
    names = list(per_example)
    batch = per_example[names[0]].shape[0]
    norms = np.sqrt(sum((per_example[n].data.reshape(batch, -1) ** 2).sum(axis=1)
                        for n in names))
    factors = np.minimum(1.0, CLIP / np.maximum(norms, 1e-12))
    update = {}
    for n in names:
        g = per_example[n].data
        clipped = (g * factors.reshape((batch,) + (1,) * (g.ndim - 1))).sum(axis=0)
        update[n] = (clipped + rng.normal(0, NOISE * CLIP, size=clipped.shape)) / batch
    return norms, update


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.path.join("..", "shared", "data", "mnist"))
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args(argv)
    ds = data.load("mnist", args.data_dir if os.path.isdir(args.data_dir) else None,
                   progress=False, splits=("test",))
    x = Tensor(ds.normalized(ds.test_images[:args.batch]))
    y = Tensor(ds.test_labels[:args.batch].astype(np.int64))
    manual_seed(0)
    model = nn.MLP([784, 128, 10])
    params = dict(model.named_parameters())
    loss = loss_of_one(model)

    started = time.perf_counter()
    per_example = func.vmap(func.grad(loss), in_axes=(None, 0, 0))(params, x, y)
    vmapped = time.perf_counter() - started

    started = time.perf_counter()
    looped = [func.grad(loss)(params, x[i], y[i]) for i in range(args.batch)]
    loop = time.perf_counter() - started

    largest = max(float(np.abs(per_example[n].data[i] - looped[i][n].data).max())
                  for n in params for i in range(args.batch))
    norms, update = dp_sgd_update(per_example, np.random.default_rng(0))
    loop_norms, _ = dp_sgd_update({n: Tensor(np.stack([g[n].data for g in looped]))
                                   for n in params}, np.random.default_rng(0))
    print(f"{args.batch} examples, 784-128-10 MLP")
    print(f"per-example gradients: vmap(grad) {vmapped * 1e3:.1f} ms, a Python loop "
          f"{loop * 1e3:.1f} ms ({loop / vmapped:.0f}x); largest difference {largest:.1e}")
    print(f"gradient norms: min {norms.min():.3f}, median {np.median(norms):.3f}, max "
          f"{norms.max():.3f}; {int((norms > CLIP).sum())} of {args.batch} clipped to {CLIP}")
    print(f"norms by vmap and by the loop differ by at most "
          f"{np.abs(norms - loop_norms).max():.1e}")
    before = nn.cross_entropy(model(x), y).item()
    for n in params:                       # the DP-SGD step itself
        params[n].data = params[n].data - LR * update[n].astype(np.float32)
    after = nn.cross_entropy(model(x), y).item()
    print(f"one DP-SGD step (clip {CLIP}, noise multiplier {NOISE}, lr {LR}): batch loss "
          f"{before:.4f} -> {after:.4f}")
    return largest

if __name__ == "__main__":
    main()

"""Your own tool on the engine's seam: an Observer that watches every activation and every
gradient of a training step, the way the profiler and the jit do.

    python examples/activation_stats.py [--data-dir ../shared/data/mnist]

It prints, for each ReLU of an MLP, how many of its units are dead (zero for every image of the
batch) and the size of the gradient that reaches it, over a few steps of training. With no
--data-dir it trains on random images (the numbers are then only an illustration).
"""
import argparse
from collections import defaultdict

import numpy as np

from tinygrad_mnist import Observer, Tensor, manual_seed, nn, observe, optim


class ActivationStats(Observer):
    """For every relu: the fraction of units that no image of the batch turns on, and the norm
    of the gradient its backward passes on. Told by the engine; it changes nothing."""

    def __init__(self):
        self.layer_of = {}                 # id(op) -> which relu of the step it is
        self.dead = defaultdict(list)      # layer -> fraction of dead units, per step
        self.grad_norm = defaultdict(list)

    def on_op(self, op, inputs, output):
        if op.name == "relu":
            layer = len(self.layer_of)
            self.layer_of[id(op)] = layer
            active = output.data > 0                          # (batch, units)
            self.dead[layer].append(float((~active.any(axis=0)).mean()))

    def on_backward(self, op, grad_output, grad_inputs):
        layer = self.layer_of.get(id(op))
        if layer is not None:
            self.grad_norm[layer].append(float(np.linalg.norm(grad_inputs[0])))

    def new_step(self):
        self.layer_of.clear()


def batches(data_dir, batch, steps, rng):
    if data_dir is None:
        for _ in range(steps):
            yield rng.random((batch, 784), dtype=np.float32), rng.integers(0, 10, batch)
        return
    from tinygrad_mnist.mnist import data
    ds = data.load("mnist", data_dir, progress=False, splits=("train", "test"))
    images = data.normalize(ds.train_images, ds.info)
    for idx in data.batches(len(images), batch, rng):
        if steps == 0:
            return
        steps -= 1
        yield images[idx], ds.train_labels[idx].astype(np.int64)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args(argv)
    manual_seed(0)
    model = nn.MLP([784, 256, 128, 10])
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    stats = ActivationStats()
    with observe(stats):
        for x, y in batches(args.data_dir, 128, args.steps, np.random.default_rng(0)):
            stats.new_step()
            opt.zero_grad()
            nn.cross_entropy(model(Tensor.from_numpy(x)), y).backward()
            opt.step()
    for layer in sorted(stats.dead):
        dead, grads = stats.dead[layer], stats.grad_norm[layer]
        print(f"relu {layer + 1}: dead units {dead[0]:.1%} at the first step, "
              f"{dead[-1]:.1%} at the last; gradient norm {grads[0]:.3g} -> {grads[-1]:.3g}")
    return stats


if __name__ == "__main__":
    main()

"""How curved is the MNIST loss, and why does the learning rate have a ceiling?

Gradient descent with learning rate lr is stable along a direction only while the loss's
curvature there is below 2/lr. This script measures the curvature of an MLP's loss with
Hessian-vector products (hvp: two backward passes each, never the Hessian itself):

- along the gradient, g.H.g / g.g: how much the next step bends away from a straight line;
- the sharpest direction, the largest Hessian eigenvalue, by power iteration on hvp;

at initialization and after each epoch of training, against 2/lr. Compare the columns with
2/lr: measured here, this freshly initialized network's sharpest direction is about twice as
curved as 2/lr, so the first steps overshoot along it, and training moves on to flatter
ground, where after three epochs every curvature is far below 2/lr. A Rayleigh quotient never
exceeds the largest eigenvalue, so the gradient's column never exceeds the last. About 5 s.

    python examples/curvature.py --data-dir ../shared/data/mnist
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tinygrad_mnist import Tensor, grad, hvp, manual_seed, nn, optim  # noqa: E402
from tinygrad_mnist.mnist import data  # noqa: E402


def loss_function(model, x, y):
    """The loss as a function of the parameters alone, as hvp wants it."""
    layers = model.layers

    def loss(*params):
        for layer, w, b in zip(layers, params[0::2], params[1::2]):
            layer.weight, layer.bias = w, b
        return nn.cross_entropy(model(x), y)
    return loss


def curvature(model, x, y, iterations=20, seed=0):
    """(loss, curvature along the gradient, largest Hessian eigenvalue) at the current
    parameters, in float64 on a fixed batch."""
    params = [Tensor(p, dtype=np.float64) for p in model.parameters()]
    saved = [(layer.weight, layer.bias) for layer in model.layers]
    loss = loss_function(model, x, y)
    try:
        xs = [Tensor(p, requires_grad=True) for p in params]
        value = loss(*xs)
        g = [t.data for t in grad(value, xs)]
        hg = hvp(loss, params, g)
        along = sum((a * b).sum() for a, b in zip(g, hg)) / sum((a * a).sum() for a in g)
        rng = np.random.default_rng(seed)
        v = [rng.normal(size=p.shape) for p in params]
        sharpest = 0.0
        for _ in range(iterations):                        # power iteration: v <- Hv / |Hv|
            norm = np.sqrt(sum((a * a).sum() for a in v))
            v = [a / norm for a in v]
            hv = hvp(loss, params, v)
            sharpest = sum((a * b).sum() for a, b in zip(v, hv))     # the Rayleigh quotient
            v = hv
    finally:
        for layer, (w, b) in zip(model.layers, saved):
            layer.weight, layer.bias = w, b
    return value.item(), along, sharpest


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="MNIST files (default: the cache)")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)

    ds = data.load("mnist", args.data_dir, progress=False)
    x_train = ds.normalized(ds.train_images[:10000])
    y_train = ds.train_labels[:10000].astype(np.int64)
    probe_x = Tensor(x_train[:1000], dtype=np.float64)        # a fixed batch to measure on
    probe_y = y_train[:1000]

    manual_seed(0)
    model = nn.MLP([784, 64, 10])
    opt = optim.SGD(model.parameters(), lr=args.lr)
    rng = np.random.default_rng(0)
    print(f"784-64-10 ReLU MLP, SGD lr {args.lr}: stable while curvature < 2/lr = "
          f"{2 / args.lr:.1f}")
    print(f"{'epoch':>5}  {'loss':>7}  {'curvature along g':>17}  {'sharpest (max eig)':>18}")
    for epoch in range(args.epochs + 1):
        loss, along, sharpest = curvature(model, probe_x, probe_y)
        print(f"{epoch:>5}  {loss:7.4f}  {along:17.3f}  {sharpest:18.3f}")
        if epoch == args.epochs:
            break
        for idx in data.batches(len(y_train), 64, rng):
            opt.zero_grad()
            nn.cross_entropy(model(Tensor.from_numpy(x_train[idx])), y_train[idx]).backward()
            opt.step()


if __name__ == "__main__":
    main()

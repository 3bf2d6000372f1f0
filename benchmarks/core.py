"""Core engine benchmark: a 1,000,000-node scalar chain, and one MNIST-sized training step
(784-128-10, batch 128, SGD with momentum) with autograd versus the same network written by
hand in NumPy, measured side by side in one run.

    python benchmarks/core.py            # prints, and writes benchmarks/RESULTS.md
"""
import gc
import os
import platform
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from tinygrad_mnist import Tensor, nn, optim, manual_seed  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "RESULTS.md")


def scalar_chain(n=1_000_000):
    """Seconds for n scalar additions (forward) and for backward through them."""
    gc.collect()
    x = Tensor(0.0, requires_grad=True)
    start = time.perf_counter()
    y = x
    for _ in range(n):
        y = y + 1.0
    forward = time.perf_counter() - start
    start = time.perf_counter()
    y.backward()
    backward = time.perf_counter() - start
    assert x.grad == 1.0
    return forward, backward


class HandWrittenMLP:
    """784-128-10 ReLU MLP with the backprop formulas written out: dZ2 = (softmax - Y)/m, ..."""
    def __init__(self, w1, b1, w2, b2, lr, momentum):
        self.params = [w1.copy(), b1.copy(), w2.copy(), b2.copy()]
        self.velocity = [None] * 4
        self.lr, self.momentum = lr, momentum

    def step(self, x, y):
        w1, b1, w2, b2 = self.params
        m = x.shape[0]
        h = x @ w1.T + b1                   # (B, 784) @ (784, 128) -> (B, 128)
        a = np.maximum(h, 0)
        z = a @ w2.T + b2                   # (B, 128) @ (128, 10) -> (B, 10)
        e = np.exp(z - z.max(axis=1, keepdims=True))
        dz = e / e.sum(axis=1, keepdims=True)
        dz[np.arange(m), y] -= 1
        dz /= m                             # dZ2 = (A2 - Y) / m
        dw2, db2 = dz.T @ a, dz.sum(axis=0)
        dh = (dz @ w2) * (h > 0)            # dZ1 = W2^T dZ2 * relu'(Z1)
        dw1, db1 = dh.T @ x, dh.sum(axis=0)
        for i, g in enumerate((dw1, db1, dw2, db2)):
            if self.velocity[i] is None:
                self.velocity[i] = g.copy()
            else:
                self.velocity[i] *= self.momentum
                self.velocity[i] += g
            self.params[i] -= self.lr * self.velocity[i]


def training_steps(repeats=7, steps=100, batch=128):
    rng = np.random.default_rng(0)
    xs = rng.random((steps, batch, 784), dtype=np.float32)
    ys = rng.integers(0, 10, size=(steps, batch))
    manual_seed(0)
    model = nn.MLP([784, 128, 10])
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    w1, b1, w2, b2 = (p.data for p in model.parameters())
    hand = HandWrittenMLP(w1, b1, w2, b2, lr=0.05, momentum=0.9)

    def run_autograd():
        for x, y in zip(xs, ys):
            opt.zero_grad()
            nn.cross_entropy(model(Tensor(x)), y).backward()
            opt.step()

    def run_numpy():
        for x, y in zip(xs, ys):
            hand.step(x, y)

    timings = {"autograd": [], "numpy": []}
    for _ in range(repeats):                 # interleaved, so drift hits both alike
        for name, fn in (("numpy", run_numpy), ("autograd", run_autograd)):
            start = time.perf_counter()
            fn()
            timings[name].append((time.perf_counter() - start) / steps)
    return timings


def main():
    forward, backward = scalar_chain()
    steps = training_steps()
    med = {k: statistics.median(v) for k, v in steps.items()}
    ratio = med["autograd"] / med["numpy"]
    lines = [
        "# Core benchmark",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, NumPy {np.__version__}. Command: "
        "`python benchmarks/core.py`.",
        "",
        "| measurement | value |",
        "| --- | --- |",
        f"| 1,000,000-node scalar chain, forward | {forward:.2f} s "
        f"({forward * 1e6 / 1e6:.2f} µs per op) |",
        f"| 1,000,000-node scalar chain, backward | {backward:.2f} s "
        f"({backward * 1e6 / 1e6:.2f} µs per node) |",
        f"| training step 784-128-10, batch 128, hand-written NumPy | "
        f"{med['numpy'] * 1e3:.3f} ms (median of {len(steps['numpy'])}; min "
        f"{min(steps['numpy']) * 1e3:.3f}, max {max(steps['numpy']) * 1e3:.3f}) |",
        f"| training step 784-128-10, batch 128, autograd | "
        f"{med['autograd'] * 1e3:.3f} ms (median of {len(steps['autograd'])}; min "
        f"{min(steps['autograd']) * 1e3:.3f}, max {max(steps['autograd']) * 1e3:.3f}) |",
        f"| autograd / hand-written NumPy | {ratio:.3f}x |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    with open(RESULTS, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()

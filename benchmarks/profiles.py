"""The profiles behind the benchmark's unmet targets: where the time goes.

    python -m benchmarks.profiles        (PyTorch needed for part 2)

1. Fixed per-step cost: a 4-4-3 network, where arithmetic is negligible, so the time per step
   is the framework's bookkeeping (hand-written NumPy against autograd).
2. The matrix products alone of one 784-512-256-10 batch-128 step: NumPy's OpenBLAS against
   PyTorch's own BLAS, the same shapes, the same threads.
3. The 1,000,000-node scalar graph with Python's cyclic garbage collector on and off.
"""
import gc
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.run import Autograd, HandWritten, scalar_graph  # noqa: E402
from tinygrad_mnist import manual_seed, nn  # noqa: E402


def per_step_overhead(steps=5000):
    manual_seed(0)
    layers = nn.MLP([4, 4, 3]).layers
    weights = [l.weight.data.copy() for l in layers]
    biases = [l.bias.data.copy() for l in layers]
    x, y = np.random.default_rng(0).random((2, 4), dtype=np.float32), np.array([0, 2])
    out = {}
    for kind in (HandWritten, Autograd):
        runner = kind(weights, biases)
        times = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(steps):
                runner.step(x, y)
            times.append((time.perf_counter() - start) / steps * 1e6)
        out[kind.name] = statistics.median(times)
    return out


def product_floor(repeats=200):
    rng = np.random.default_rng(0)
    b, sizes = 128, [784, 512, 256, 10]
    shapes = []          # (m, k) @ (k, n) of one training step
    for n_in, n_out in zip(sizes, sizes[1:]):
        shapes.append((b, n_in, n_out))                # forward
        shapes.append((n_out, b, n_in))                # weight gradient
    for n_in, n_out in zip(sizes[1:-1], sizes[2:]):
        shapes.append((b, n_out, n_in))                # input gradient (not for the images)
    pairs = [(rng.random((m, k), dtype=np.float32), rng.random((k, n), dtype=np.float32))
             for m, k, n in shapes]

    def timed(fn):
        for _ in range(10):
            fn()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - start) / repeats * 1e6

    result = {"numpy": timed(lambda: [a @ c for a, c in pairs])}
    try:
        import torch
        tpairs = [(torch.from_numpy(a), torch.from_numpy(c)) for a, c in pairs]
        result["pytorch"] = timed(lambda: [a @ c for a, c in tpairs])
    except ImportError:
        pass
    return result


def scalar_gc():
    on = scalar_graph()
    gc.collect()
    gc.disable()
    try:
        off = scalar_graph()
    finally:
        gc.enable()
    return on, off


def main():
    overhead = per_step_overhead()
    print(f"1. per-step bookkeeping, 4-4-3 network: hand-written NumPy "
          f"{overhead['numpy']:.1f} µs, tinygrad_mnist {overhead['tinygrad_mnist']:.1f} µs")
    floor = product_floor()
    print("2. matrix products of one 784-512-256-10 batch-128 step: " +
          ", ".join(f"{k} {v:.0f} µs" for k, v in floor.items()))
    (on_f, on_b), (off_f, off_b) = scalar_gc()
    print(f"3. 1,000,000-node scalar graph: forward {on_f:.2f} s + backward {on_b:.2f} s with "
          f"the garbage collector; {off_f:.2f} s + {off_b:.2f} s without")


if __name__ == "__main__":
    main()

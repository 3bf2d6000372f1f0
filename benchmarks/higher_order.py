"""The cost of a Hessian-vector product relative to one gradient, on the MNIST MLP, for
tinygrad_mnist and (when importable) PyTorch: same network, same batch, float32.

    python -m benchmarks.higher_order
"""
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tinygrad_mnist import Tensor, grad, manual_seed, nn  # noqa: E402


def _timed(fn, repeats):
    fn()                                                  # warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ours(sizes, batch, repeats):
    manual_seed(0)
    model = nn.MLP(sizes)
    rng = np.random.default_rng(0)
    x = Tensor.from_numpy(rng.standard_normal((batch, sizes[0])).astype(np.float32))
    y = rng.integers(0, sizes[-1], batch)
    params = model.parameters()
    v = [rng.standard_normal(p.shape).astype(np.float32) for p in params]

    def gradient():
        return grad(nn.cross_entropy(model(x), y), params)

    def product():
        gs = grad(nn.cross_entropy(model(x), y), params, create_graph=True)
        dot = sum((g * u).sum() for g, u in zip(gs, v))
        return grad(dot, params)
    return _timed(gradient, repeats), _timed(product, repeats)


def pytorch(sizes, batch, repeats):
    import torch
    torch.manual_seed(0)
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        layers += [torch.nn.Linear(n_in, n_out)] + ([torch.nn.ReLU()] if i < len(sizes) - 2
                                                     else [])
    model = torch.nn.Sequential(*layers)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((batch, sizes[0])).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, sizes[-1], batch))
    params = list(model.parameters())
    v = [torch.from_numpy(rng.standard_normal(tuple(p.shape)).astype(np.float32))
         for p in params]
    loss = torch.nn.functional.cross_entropy

    def gradient():
        return torch.autograd.grad(loss(model(x), y), params)

    def product():
        gs = torch.autograd.grad(loss(model(x), y), params, create_graph=True)
        dot = sum((g * u).sum() for g, u in zip(gs, v))
        return torch.autograd.grad(dot, params)
    return _timed(gradient, repeats), _timed(product, repeats)


def hvp_costs(sizes=(784, 128, 10), batch=128, repeats=50):
    """{framework: (seconds per gradient, seconds per hvp)}."""
    rows = {"tinygrad_mnist": ours(list(sizes), batch, repeats)}
    try:
        rows["pytorch"] = pytorch(list(sizes), batch, repeats)
    except ImportError:
        pass
    return rows


def main():
    sizes, batch = (784, 128, 10), 128
    print(f"{'-'.join(map(str, sizes))}, batch {batch}, float32; medians")
    for name, (g, h) in hvp_costs(sizes, batch).items():
        print(f"{name:15s} gradient {g * 1e3:7.3f} ms   hvp {h * 1e3:7.3f} ms   ratio {h / g:.2f}")


if __name__ == "__main__":
    main()

"""The jit's fused chains (jit/fusion.py) against the same replay without them, eager
execution and PyTorch's eager CPU: elementwise chains a user writes by hand, and an MLP's
evaluation with such an activation, all under no_grad (where chains are fused).

    python -m benchmarks.fusion [--rounds 7] [--out benchmarks]

The arms take turns in every round; medians of the rounds (min-max) and ratios to the
unfused replay. Writes FUSION.md into --out.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import statistics  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.report import arguments, ms_range, take_turns, write_report  # noqa: E402
from tinygrad_mnist import Tensor, jit, no_grad  # noqa: E402
from tinygrad_mnist.jit import fusion  # noqa: E402
from tinygrad_mnist.engine.kernels import blas  # noqa: E402

THREADS = 2


def gelu_tanh(x):
    """GELU's tanh approximation written out: 9 elementwise ops."""
    return 0.5 * x * (1 + (0.7978846 * (x + 0.044715 * (x * x * x))).tanh())


def swish(x):
    return x * (1.702 * x).sigmoid()


def softplus(x):
    return (x.exp() + 1).log()


def mlp(weights, activation):
    def forward(x):
        for i, (w, b) in enumerate(weights):
            x = x @ w + b
            if i < len(weights) - 1:
                x = activation(x)
        return x
    return forward


def cases(rng):
    x_small = rng.normal(size=(128, 1024)).astype(np.float32)
    x_large = rng.normal(size=(1024, 1024)).astype(np.float32)
    sizes = [784, 1024, 1024, 10]
    weights = [(rng.normal(size=(m, n)).astype(np.float32) / np.float32(np.sqrt(m)),
                np.zeros(n, np.float32)) for m, n in zip(sizes, sizes[1:])]
    images = rng.random((1000, 784)).astype(np.float32)
    return [
        ("tanh-GELU by hand, (128, 1024)", gelu_tanh, [x_small]),
        ("tanh-GELU by hand, (1024, 1024)", gelu_tanh, [x_large]),
        ("swish x sigmoid(1.702 x), (1024, 1024)", swish, [x_large]),
        ("softplus log(exp(x) + 1), (1024, 1024)", softplus, [x_large]),
        ("MLP 784-1024-1024-10 with tanh-GELU, evaluating 1,000 images",
         "mlp", [images, weights]),
    ]


def arms(fn, arrays):
    """name -> a call; the jitted arms recorded now, with and without fusion. The functions
    use only operators and methods that torch tensors have too."""
    def build(wrap):
        if fn != "mlp":
            return fn, [wrap(a) for a in arrays]
        images, weights = arrays
        return mlp([(wrap(w), wrap(b)) for w, b in weights], gelu_tanh), [wrap(images)]

    function, inputs = build(Tensor)

    def eager():
        with no_grad():
            return function(*inputs)

    def step(*xs):
        with no_grad():
            return function(*xs)
    out = {"eager": eager}
    for name, enabled in (("jit, unfused", False), ("jit, fused", True)):
        fusion.ENABLED = enabled
        replay = jit(step)
        for _ in range(2):
            replay(*inputs)              # the recording, then one replay
        out[name] = (lambda r: lambda: r(*inputs))(replay)
    fusion.ENABLED = True
    expected = eager().data
    for name in ("jit, unfused", "jit, fused"):
        np.testing.assert_array_equal(out[name]().data, expected)
    try:
        import torch
    except ImportError:
        return out
    torch.set_num_threads(THREADS)
    torch_function, torch_inputs = build(torch.from_numpy)

    def pytorch():
        with torch.no_grad():
            return torch_function(*torch_inputs)
    out["PyTorch"] = pytorch
    return out


def main():
    args = arguments(__doc__)
    blas.set_num_threads(THREADS)
    rng = np.random.default_rng(0)
    lines = ["# Fused chains in a jit replay", "",
             "`python -m benchmarks.fusion`: elementwise chains under `no_grad` (where the jit "
             "fuses them: jit/fusion.py), "
             f"float32, {THREADS} threads, {args.rounds} rounds with the arms taking turns; "
             "milliseconds, median (min–max), and each arm's median against the unfused "
             "replay's. The fused replay's results are checked equal, bit for bit, to eager "
             "execution's before timing.", "",
             "| work | arm | ms | / unfused replay |", "| --- | --- | --- | --- |"]
    for title, fn, arrays in cases(rng):
        work = arms(fn, arrays)
        times = take_turns(work, args.rounds)
        base = statistics.median(times["jit, unfused"])
        for name, rounds in times.items():
            lines.append(f"| {title} | {name} | {ms_range(rounds, 2)} | "
                         f"{statistics.median(rounds) / base:.2f}x |")
            print(lines[-1], flush=True)
    lines += ["", "Chains a backward pass runs through are not fused (their ops saved their "
              "inputs or outputs for the gradient), so a training step's replay is unchanged: "
              "see docs/speed.md."]
    write_report(args.out, "FUSION.md", "\n".join(lines))


if __name__ == "__main__":
    main()

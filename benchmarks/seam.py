"""The engine's cost per op, and what its seam costs, against the micrograd-style Value
(benchmarks/scalar_value.py) in the same process: a chain of scalar additions, and what a
micrograd user writes, a neuron chain y = tanh(y * w + b) with w and b leaves shared by every
step (mul, add, tanh; gradients accumulating into the shared leaves); with no observer, and
with one observer attached that does nothing.

    python -m benchmarks.seam [--ops 200000] [--rounds 5] [--out benchmarks]

The three arms take turns in every round; medians of the rounds, and their ratios. Writes
SEAM.md into --out.
"""
import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import gc  # noqa: E402
import time  # noqa: E402

from benchmarks.run import scalar_graph  # noqa: E402
from benchmarks.scalar_value import Value  # noqa: E402
from benchmarks.report import write_report  # noqa: E402
import contextlib  # noqa: E402
import math  # noqa: E402

from tinygrad_mnist import Observer, Tensor, observe  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Nothing(Observer):
    """Attached, told of every event, does nothing: the price of the seam itself."""


def chain(kind, n, observer=None):
    """Microseconds per op of y = x + 1 + 1 + ... (n additions): forward, then backward."""
    forward, backward = scalar_graph(n, Tensor if kind == "tensor" else Value, observer)
    return forward / n * 1e6, backward / n * 1e6


def neuron_chain(kind, n, observer=None):
    """Microseconds per op of n/3 neurons y = tanh(y * w + b), w and b shared leaves: forward,
    then backward. Checked against the closed form of the chain's derivatives."""
    gc.collect()
    steps = n // 3
    if kind == "tensor":
        x, w, b = (Tensor(v, requires_grad=True, dtype="float64") for v in (0.5, 0.9, 0.1))
    else:
        x, w, b = Value(0.5), Value(0.9), Value(0.1)
    context = observe(observer) if observer is not None else contextlib.nullcontext()
    with context:
        start = time.perf_counter()
        y = x
        for _ in range(steps):
            y = (y * w + b).tanh()
        forward = time.perf_counter() - start
        start = time.perf_counter()
        y.backward()
        backward = time.perf_counter() - start
    _check_neuron_chain(steps, x, w, b)
    return forward / (3 * steps) * 1e6, backward / (3 * steps) * 1e6


def _check_neuron_chain(steps, x, w, b):
    """dy/dx, dy/dw, dy/db by the chain rule in plain floats, against the gradients."""
    value = lambda t: float(t.data)
    ys, y = [value(x)], value(x)
    for _ in range(steps):
        y = math.tanh(y * value(w) + value(b))
        ys.append(y)
    gy, gw, gb = 1.0, 0.0, 0.0
    for k in range(steps, 0, -1):                 # y_k = tanh(y_{k-1} w + b)
        local = gy * (1 - ys[k] ** 2)
        gw += local * ys[k - 1]
        gb += local
        gy = local * value(w)
    for got, want in ((x.grad, gy), (w.grad, gw), (b.grad, gb)):
        assert abs(float(got) - want) <= 1e-9 * max(1.0, abs(want)), (got, want)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.seam", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks"))
    args = parser.parse_args(argv)
    lines = ["# The cost per op, and of the observer seam", "",
             f"`python -m benchmarks.seam`: {args.ops:,} scalar ops, forward then backward, "
             f"{args.rounds} rounds with the arms taking turns in one process; medians in µs "
             f"per op (best and worst in brackets), and the ratios of the medians and of the "
             f"bests to the micrograd-style Value (benchmarks/scalar_value.py). Python's "
             f"garbage collector runs as it does for a user (its full collections over the "
             f"growing graph are a large share of both sides' forward).", ""]
    for title, measure in (("A chain of additions: y = x + 1 + 1 + ...", chain),
                           ("The neuron chain a micrograd user writes: y = tanh(y * w + b), "
                            "w and b shared leaves", neuron_chain)):
        arms = {"micrograd-style Value": lambda: measure("value", args.ops),
                "Tensor": lambda: measure("tensor", args.ops),
                "Tensor, one no-op observer attached":
                    lambda: measure("tensor", args.ops, Nothing())}
        times = {name: [] for name in arms}
        for r in range(args.rounds):
            for name, run in arms.items():
                times[name].append(run())
                print(f"{title[:24]}, round {r + 1}: {name}: forward {times[name][-1][0]:.3f} "
                      f"µs/op, backward {times[name][-1][1]:.3f} µs/op", flush=True)
        med = {name: (statistics.median(f for f, _ in t), statistics.median(b for _, b in t))
               for name, t in times.items()}
        best = {name: (min(f for f, _ in t), min(b for _, b in t)) for name, t in times.items()}
        value, plain, observed = (med[name] for name in arms)
        lines += [f"## {title}", "",
                  "| arm | forward | backward | forward / Value (median, best) | "
                  "backward / Value (median, best) |", "| --- | --- | --- | --- | --- |"]
        for name in arms:
            f, b = med[name]
            fs, bs = [t[0] for t in times[name]], [t[1] for t in times[name]]
            vb = best["micrograd-style Value"]
            lines.append(f"| {name} | {f:.3f} ({min(fs):.3f}-{max(fs):.3f}) | {b:.3f} "
                         f"({min(bs):.3f}-{max(bs):.3f}) | {f / value[0]:.2f}x, "
                         f"{min(fs) / vb[0]:.2f}x | {b / value[1]:.2f}x, {min(bs) / vb[1]:.2f}x |")
        lines += ["", f"One attached observer that does nothing costs "
                      f"{observed[0] - plain[0]:.3f} µs per op forward and "
                      f"{observed[1] - plain[1]:.3f} µs per op backward.", ""]
    write_report(args.out, "SEAM.md", "\n".join(lines))


if __name__ == "__main__":
    main()

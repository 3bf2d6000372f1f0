"""Function transforms, timed side by side in one run: per-example gradients by vmap(grad)
against one batched gradient, a Python loop over the examples and torch.func (when
installed); a jvp against one forward pass; the Hessian forward over reverse against reverse
over reverse.

    python -m benchmarks.func [--out DIR] [--rounds 7]

Writes FUNC.md into --out (default runs/benchmarks; `--out benchmarks` updates the committed
copy). Medians over rounds that take turns, with the range of the rounds' medians.
"""
import argparse
import os
import statistics
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from tinygrad_mnist import Tensor, func, hessian, manual_seed, nn  # noqa: E402
from benchmarks.report import ms_range, take_turns, write_report  # noqa: E402
from benchmarks.run import machine_line  # noqa: E402

BATCH = 128


def per_example(rounds):
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(BATCH, 784)).astype(np.float32)
    ys = rng.integers(0, 10, BATCH)
    manual_seed(0)
    model = nn.MLP([784, 128, 10])
    params = dict(model.named_parameters())
    x, y = Tensor(xs), Tensor(ys)

    def loss(p, x, y):
        return nn.cross_entropy(func.functional_call(model, p, (x[None],)), y[None])
    vmapped = func.vmap(func.grad(loss), in_axes=(None, 0, 0))
    one = func.grad(loss)

    def batched():
        for p in params.values():
            p.grad = None
        nn.cross_entropy(model(x), ys).backward()

    work = {"vmap(grad)": lambda: vmapped(params, x, y), "one batched gradient": batched,
            "Python loop of grad": lambda: [one(params, x[i], y[i]) for i in range(BATCH)]}
    try:
        import torch
        from torch.func import functional_call, grad as tgrad, vmap as tvmap
        tmodel = torch.nn.Sequential(torch.nn.Linear(784, 128), torch.nn.ReLU(),
                                     torch.nn.Linear(128, 10))
        tparams = {k: v.detach() for k, v in tmodel.named_parameters()}
        tx, ty = torch.from_numpy(xs), torch.from_numpy(ys)

        def tloss(p, x, y):
            return torch.nn.functional.cross_entropy(functional_call(tmodel, p, (x[None],)),
                                                     y[None])
        tper = tvmap(tgrad(tloss), in_dims=(None, 0, 0))
        theirs = {"torch.func vmap(grad)": lambda: tper(tparams, tx, ty)}
    except ImportError:
        theirs = {}
    for call in work.values():
        call()
    times = take_turns(work, rounds)
    # PyTorch after ours, not in turns: its OpenMP threads keep spinning after a call and
    # slow whatever OpenBLAS runs next on 2 cores
    for call in theirs.values():
        call()
    times.update(take_turns(theirs, rounds))
    return times


def forward_mode(rounds):
    rng = np.random.default_rng(1)
    manual_seed(0)
    model = nn.MLP([784, 512, 256, 10])
    x = Tensor(rng.normal(size=(BATCH, 784)).astype(np.float32))
    v = Tensor(rng.normal(size=(BATCH, 784)).astype(np.float32))
    work = {"forward pass": lambda: model(x), "jvp (forward and tangent)":
            lambda: func.jvp(model, (x,), (v,))}
    return take_turns(work, rounds)


def hessians(rounds):
    rng = np.random.default_rng(2)
    x = Tensor(rng.normal(size=(16, 8)), dtype=np.float64)
    w = Tensor(rng.normal(size=(6, 8)), dtype=np.float64)

    def f(w):
        return ((x @ w.T).tanh().sum(axis=1) ** 2).mean()
    work = {"reverse over reverse (hessian)": lambda: hessian(f, w),
            "forward over reverse (func.hessian)": lambda: func.hessian(f)(w)}
    return take_turns(work, rounds, repeats=1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join("runs", "benchmarks"))
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    lines = ["# Function transforms", "", f"{machine_line()}. `python -m benchmarks.func` "
             f"({args.rounds} rounds taking turns; medians in ms, in parentheses the range of "
             f"the rounds' medians).", ""]
    t = per_example(args.rounds)
    base = statistics.median(t["one batched gradient"])
    lines += ["## Per-example gradients, 784-128-10 MLP, 128 examples", "",
              "| method | ms | / one batched gradient |", "| --- | --- | --- |"]
    lines += [f"| {name} | {ms_range(v, 2)} | {statistics.median(v) / base:.1f}x |"
              for name, v in t.items()]
    loop = statistics.median(t["Python loop of grad"]) / statistics.median(t["vmap(grad)"])
    lines += ["", f"vmap(grad) is {loop:.1f}x faster than the loop. Each example's gradient "
              f"is a full copy of the parameters (128 x 101,770 floats, 52 MB), which one "
              f"batched gradient never writes.", ""]
    t = forward_mode(args.rounds)
    ratio = statistics.median(t["jvp (forward and tangent)"]) / statistics.median(
        t["forward pass"])
    lines += ["## Forward mode, 784-512-256-10 MLP, batch 128", "", "| pass | ms |",
              "| --- | --- |"] + [f"| {name} | {ms_range(v, 2)} |" for name, v in t.items()]
    lines += ["", f"jvp / forward: {ratio:.2f}x.", ""]
    t = hessians(args.rounds)
    names = list(t)
    ratio = statistics.median(t[names[1]]) / statistics.median(t[names[0]])
    lines += ["## The Hessian of a small network's loss (48 weights)", "", "| method | ms |",
              "| --- | --- |"] + [f"| {name} | {ms_range(v, 2)} |" for name, v in t.items()]
    lines += ["", f"forward over reverse / reverse over reverse: {ratio:.2f}x."]
    write_report(args.out, "FUNC.md", "\n".join(lines))


if __name__ == "__main__":
    main()

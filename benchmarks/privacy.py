"""Private training's costs, side by side in one run: per-example gradient norms against one
batched gradient, a DP-SGD step against a plain step, per-example gradients written out by
vmap(grad), and the peak memory of a private training run against a plain one.

    python -m benchmarks.privacy [--rounds 7] [--out benchmarks]

Batch 128, float32, 2 BLAS threads; the arms of a table take turns in every round; medians
(min-max) in milliseconds. Writes PRIVACY.md into --out.
"""
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np  # noqa: E402

from benchmarks.report import arguments, ms_range, take_turns, write_report  # noqa: E402
from tinygrad_mnist import Tensor, func, jit, nn, optim, privacy  # noqa: E402
from tinygrad_mnist.engine.kernels import blas  # noqa: E402
from tinygrad_mnist.mnist.models import build  # noqa: E402

BATCH, THREADS = 128, 2
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def per_example_loss(model, x, y):
    return nn.cross_entropy(model(x), y, reduction="none")


def networks():
    return {"MLP 784-128-10": lambda: nn.MLP([784, 128, 10]),
            "LeNet-5": lambda: build("lenet5", dropout=0.0)}


def arms(make):
    """name -> call, for one network: a batched gradient, the per-example norms, a plain
    step (eager and jitted, as the trainer runs it), a DP-SGD step, and vmap(grad)."""
    rng = np.random.default_rng(0)
    model = make()
    x = Tensor.from_numpy(rng.random((BATCH, 784), dtype=np.float32))
    y = rng.integers(0, 10, BATCH)
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    dp = privacy.DPOptimizer(optim.SGD(model.parameters(), lr=0.01, momentum=0.9), model,
                             noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=BATCH)

    def gradient():
        model.zero_grad()
        nn.cross_entropy(model(x), y).backward()

    def plain_step(x, y):
        opt.zero_grad()
        loss = nn.cross_entropy(model(Tensor.from_numpy(x)), y)
        loss.backward()
        opt.step()
        return loss
    replayed = jit(plain_step)
    params = {k: p.detach() for k, p in model.named_parameters()}

    def one_loss(p, xi, yi):
        return nn.cross_entropy(func.functional_call(model, p, (xi[None],)), yi[None])
    per_example = func.vmap(func.grad(one_loss), in_axes=(None, 0, 0))
    targets = Tensor.from_numpy(y)
    written = sum(p.size for p in model.parameters()) * BATCH * 4
    return {
        "one batched gradient": gradient,
        "per-example norms (privacy.example_norms)":
            lambda: privacy.example_norms(model, per_example_loss, x, y),
        "plain step, eager": lambda: plain_step(x.data, y),
        "plain step, jit": lambda: replayed(x.data, y),
        "DP-SGD step": lambda: dp.step(per_example_loss, x, y),
        "per-example gradients (vmap(grad))": lambda: per_example(params, x, targets),
        f"writing {written / 1e6:.0f} MB (np.ones of vmap's output size)":
            lambda: np.ones(written // 4, np.float32),
    }


MEMORY = r"""
import resource, sys
from tinygrad_mnist.mnist.options import Config
from tinygrad_mnist.mnist.train import train
options = dict(data_dir=sys.argv[1], out=sys.argv[2], epochs=1, subset=20000,
               arch=sys.argv[3], force=True)
if sys.argv[4] == "dp":
    options.update(dp=True, noise_multiplier=1.0)
elif sys.argv[4] == "plain, accountant imported":
    import dp_accounting  # noqa: F401
train(Config(**options), log=lambda line: None, progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def peak_memory(arch, kind, tmp):
    out = subprocess.run([sys.executable, "-c", MEMORY, os.path.join(ROOT, "..", "shared",
                                                                      "data", "mnist"),
                          os.path.join(tmp, f"{arch}-{kind}"), arch, kind],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    return float(out.stdout.split()[-1])


def main():
    args = arguments(__doc__)
    blas.set_num_threads(THREADS)
    lines = ["# Private training: what it costs", "",
             f"`python -m benchmarks.privacy`: batch {BATCH}, float32, {THREADS} BLAS threads, "
             f"{args.rounds} rounds with the arms taking turns; milliseconds, median (min–max), "
             "and each median against one batched gradient's (the forward and backward of the "
             "mean loss) and against the plain eager step's.", ""]
    for title, make in networks().items():
        work = arms(make)
        times = take_turns(work, args.rounds)
        gradient = statistics.median(times["one batched gradient"])
        step = statistics.median(times["plain step, eager"])
        lines += [f"## {title}", "", "| work | ms | / one gradient | / plain eager step |",
                  "| --- | --- | --- | --- |"]
        for name, rounds in times.items():
            median = statistics.median(rounds)
            lines.append(f"| {name} | {ms_range(rounds, 2)} | {median / gradient:.2f}x | "
                         f"{median / step:.2f}x |")
        lines.append("")
        print("\n".join(lines[-len(times) - 4:]), flush=True)
    import tempfile
    lines += ["## Peak memory of a training run", "",
              "One epoch on 20,000 MNIST images, in a process of its own (peak resident set, "
              "MB): the default options; the same in a process that has also imported the "
              "accountant's library (dp-accounting, with SciPy); and `--dp --noise-multiplier "
              "1`, whose accountant runs in a process of its own (the training process never "
              "imports it).", "",
              "| network | plain | plain, accountant imported | private | private / plain | "
              "private / plain with the accountant |", "| --- | --- | --- | --- | --- | --- |"]
    with tempfile.TemporaryDirectory() as tmp:
        for arch in ("mlp", "lenet5"):
            plain, imported, private = (peak_memory(arch, kind, tmp) for kind in (
                "plain", "plain, accountant imported", "dp"))
            lines.append(f"| {arch} | {plain:.0f} | {imported:.0f} | {private:.0f} | "
                         f"{private / plain:.2f}x | {private / imported:.2f}x |")
            print(lines[-1], flush=True)
    write_report(args.out, "PRIVACY.md", "\n".join(lines))


if __name__ == "__main__":
    main()

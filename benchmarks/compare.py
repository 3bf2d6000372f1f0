"""The training step of this tree against an earlier revision's, side by side: separate
processes, alternating, several rounds; medians per network and their ratio, eager and (where
the revision has it) jitted: MLPs, LeNet-5 and the CNN (Adam), and the scalar neuron chain a
micrograd user writes (forward and backward, µs per op).

    python -m benchmarks.compare REV [--rounds 5] [--out DIR]

REV is checked out into a temporary git worktree, so both sides run the same script on the
same machine at the same time of day. With --out, the table is also written to DIR/COMPARE.md
(`--out benchmarks` updates the committed copy).
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from benchmarks.report import write_report  # noqa: E402

# one measurement: median microseconds per training step (forward, backward, SGD momentum),
# eager or jitted (argv[4]); "nan" where the revision has no jit
STEP = r"""
import statistics, sys, time
import numpy as np
import tinygrad_mnist
from tinygrad_mnist import Tensor, manual_seed, nn, optim
sizes, batch, steps, mode = eval(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if mode == "jit" and not hasattr(tinygrad_mnist, "jit"):
    print("nan"); sys.exit()
if sizes in ("neuron forward", "neuron backward"):     # y = tanh(y * w + b): µs per op
    import gc
    x, w, b = (Tensor(v, requires_grad=True, dtype=np.float64) for v in (0.5, 0.9, 0.1))
    gc.collect()
    start = time.perf_counter()
    y = x
    for _ in range(steps // 3):
        y = (y * w + b).tanh()
    middle = time.perf_counter()
    y.backward()
    end = time.perf_counter()
    print(((middle - start) if sizes == "neuron forward" else (end - middle)) / steps * 1e6)
    sys.exit()
manual_seed(0)
rng = np.random.default_rng(0)
if sizes in ("lenet5", "cnn"):                   # a conv net of the trainer, with Adam
    from tinygrad_mnist.mnist.models import build
    model = build(sizes, dropout=0.0)
    opt = optim.Adam(model.parameters(), 0.001)
    sizes = [784, 10]
else:
    model = nn.MLP(sizes)
    opt = optim.SGD(model.parameters(), 0.01, momentum=0.9)
x_all = rng.standard_normal((steps * batch, sizes[0])).astype(np.float32)
y_all = rng.integers(0, sizes[-1], steps * batch)
wrap = getattr(Tensor, "from_numpy", Tensor)       # older revisions: Tensor shared float32

def step(x, y):
    opt.zero_grad()
    loss = nn.cross_entropy(model(wrap(x)), y)
    loss.backward()
    opt.step()
    return loss
if mode == "jit":
    step = tinygrad_mnist.jit(step)
times = []
for i in range(steps):
    x, y = x_all[i * batch:(i + 1) * batch], y_all[i * batch:(i + 1) * batch]
    start = time.perf_counter()
    step(x, y)
    times.append(time.perf_counter() - start)
print(statistics.median(times[steps // 10:]) * 1e6)
"""

NETWORKS = [([4, 4, 3], 8, 4000), ([784, 128, 10], 32, 1000), ([784, 128, 10], 128, 600),
            ([784, 512, 256, 10], 128, 200), ("lenet5", 128, 40), ("cnn", 128, 12),
            ("neuron forward", 0, 200_000), ("neuron backward", 0, 200_000)]


def step_time(path, sizes, batch, steps, mode):
    env = dict(os.environ, PYTHONPATH=path)
    out = subprocess.run([sys.executable, "-c", STEP, repr(sizes), str(batch), str(steps), mode],
                         env=env, capture_output=True, text=True, check=True, cwd=path)
    return float(out.stdout)


def compare(revision, rounds=5):
    """{(network, batch, mode): (earlier medians, current medians)} in microseconds."""
    with tempfile.TemporaryDirectory() as tmp:
        earlier = os.path.join(tmp, "earlier")
        subprocess.run(["git", "worktree", "add", "--detach", earlier, revision], cwd=ROOT,
                       check=True, capture_output=True)
        try:
            results = {}
            for sizes, batch, steps in NETWORKS:
                for mode in (("eager",) if "neuron" in str(sizes) else ("eager", "jit")):
                    pair = ([], [])
                    for _ in range(rounds):                 # alternate: noise hits both
                        pair[0].append(step_time(earlier, sizes, batch, steps, mode))
                        pair[1].append(step_time(ROOT, sizes, batch, steps, mode))
                    name = sizes if isinstance(sizes, str) else "-".join(map(str, sizes))
                    results[(name, batch, mode)] = pair
            return results
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", earlier], cwd=ROOT,
                           capture_output=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("revision", help="the earlier git revision (a commit, tag or branch)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating runs per side")
    parser.add_argument("--out", help="also write the table to OUT/COMPARE.md")
    args = parser.parse_args(argv)
    lines = [f"| network | batch | step | {args.revision} (µs) | this tree (µs) | ratio |",
             "| --- | --- | --- | --- | --- | --- |"]
    print("\n".join(lines), flush=True)
    for (network, batch, mode), (before, after) in compare(args.revision,
                                                           args.rounds).items():
        b, a = statistics.median(before), statistics.median(after)
        lines.append(f"| {network} | {batch} | {mode} | {b:.1f} ({min(before):.1f}-"
                     f"{max(before):.1f}) | {a:.1f} ({min(after):.1f}-{max(after):.1f}) | "
                     f"{a / b:.3f}x |")
        print(lines[-1], flush=True)
    if args.out:
        head = [f"# The training step against {args.revision}", "",
                f"`python -m benchmarks.compare {args.revision} --rounds {args.rounds}`: "
                f"median microseconds per step (forward, backward, SGD with momentum for the "
                f"MLPs, Adam for LeNet-5 and the CNN) of each side's runs, separate processes "
                f"taking turns; for the neuron chain (batch 0), microseconds per op of its "
                f"forward and of its backward; ranges in brackets; ratio = this tree / "
                f"{args.revision} (below 1: faster).", ""]
        write_report(args.out, "COMPARE.md", "\n".join(head + lines), echo=False)


if __name__ == "__main__":
    main()

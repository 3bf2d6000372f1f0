"""The benchmark: tinygrad_mnist against the same MLP hand-written in NumPy (and PyTorch's CPU
eager mode when it is installed), measured side by side, interleaved, in one process.

    python -m benchmarks [--data-dir ../shared/data/mnist] [--quick]

Writes RESULTS.md into --out (default runs/benchmarks; `--out benchmarks` updates the
committed copy the README shows). Measures:
  1. seconds per MNIST epoch (60,000 images, SGD with momentum 0.9) for several networks and
     batch sizes: same initial weights, same optimizer, same batch order for every framework;
  2. time to first reach 98% MNIST test accuracy with the recommended (default) training;
  3. microseconds per op and per backward node, scalar and (128, 10) graphs;
  4. peak RSS of a default training run, and RSS after 100 and after 10,000 steps;
  5. a Hessian-vector product's cost against one gradient's (benchmarks/higher_order.py).
`python -m benchmarks.compare REV` times the training step against an earlier revision.
"""
import argparse
import contextlib
import gc
import os
import platform
import random
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from tinygrad_mnist import Tensor, jit, manual_seed, nn, observe, optim  # noqa: E402
from tinygrad_mnist.mnist import data  # noqa: E402
from benchmarks.higher_order import hvp_costs  # noqa: E402
from benchmarks.report import write_report  # noqa: E402
from benchmarks.scalar_value import Value  # noqa: E402

DEFAULT_OUT = os.path.join("runs", "benchmarks")
LR, MOMENTUM = 0.05, 0.9
CHUNK = 25                # steps each framework runs before the next one's turn
NETWORKS = [((784, 128, 10), 32), ((784, 128, 10), 128), ((784, 128, 10), 512),
            ((784, 512, 256, 10), 128), ((784, 800, 10), 128)]


# ---------------------------------------------------------------- the three implementations

class HandWritten:
    """The classic NumPy MLP: forward, then dZ = (softmax - onehot)/m and the chain rule by
    hand, ReLU hidden layers, SGD with momentum, float32 throughout."""
    name = "numpy"

    def __init__(self, weights, biases):
        self.w = [w.copy() for w in weights]
        self.b = [b.copy() for b in biases]
        self.vw, self.vb = [None] * len(weights), [None] * len(weights)

    def step(self, x, y):
        zs, acts = [], [x]
        for i, (w, b) in enumerate(zip(self.w, self.b)):
            z = acts[-1] @ w.T + b
            zs.append(z)
            acts.append(np.maximum(z, 0) if i < len(self.w) - 1 else z)
        z = zs[-1]
        e = np.exp(z - z.max(axis=1, keepdims=True))
        dz = e / e.sum(axis=1, keepdims=True)
        dz[np.arange(len(y)), y] -= 1
        dz /= len(y)
        for i in reversed(range(len(self.w))):
            dw, db = dz.T @ acts[i], dz.sum(axis=0)
            if i:
                dz = (dz @ self.w[i]) * (zs[i - 1] > 0)
            for params, velocity, g in ((self.w, self.vw, dw), (self.b, self.vb, db)):
                if velocity[i] is None:
                    velocity[i] = g.copy()
                else:
                    velocity[i] *= MOMENTUM
                    velocity[i] += g
                params[i] -= LR * velocity[i]


class Autograd:
    """Eager execution: the graph is built and walked every step."""
    name = "eager"

    def __init__(self, weights, biases):
        self.model = nn.MLP([weights[0].shape[1]] + [w.shape[0] for w in weights])
        for layer, w, b in zip(self.model.layers, weights, biases):
            layer.weight.data[...], layer.bias.data[...] = w, b
        self.opt = optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)

    def step(self, x, y):
        self.opt.zero_grad()
        nn.cross_entropy(self.model(Tensor.from_numpy(x)), y).backward()
        self.opt.step()


class Jitted(Autograd):
    """The same step under jit: recorded at the first batch of each shape, then replayed."""
    name = "jit"

    def __init__(self, weights, biases):
        super().__init__(weights, biases)
        self.step = jit(super().step)


class Torch:
    name = "pytorch"

    def __init__(self, weights, biases):
        import torch
        self.torch = torch
        layers = []
        for i, (w, b) in enumerate(zip(weights, biases)):
            linear = torch.nn.Linear(w.shape[1], w.shape[0])
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(w))
                linear.bias.copy_(torch.from_numpy(b))
            layers += [linear] + ([torch.nn.ReLU()] if i < len(weights) - 1 else [])
        self.model = torch.nn.Sequential(*layers)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        self.loss = torch.nn.functional.cross_entropy

    def step(self, x, y):
        self.opt.zero_grad()
        self.loss(self.model(self.torch.from_numpy(x)), self.torch.from_numpy(y)).backward()
        self.opt.step()


def torch_available():
    try:
        import torch  # noqa: F401
        return True
    except Exception:
        return False


# ---------------------------------------------------------------- 1. epochs

def _timed_steps(runner, batches, x_all, y_all):
    start = time.perf_counter()
    for idx in batches:
        runner.step(x_all[idx], y_all[idx])
    return time.perf_counter() - start


def epoch_times(ds, repeats):
    x_all = ds.normalized(ds.train_images)
    y_all = ds.train_labels.astype(np.int64)
    kinds = [HandWritten, Autograd, Jitted] + ([Torch] if torch_available() else [])
    rows = []
    for sizes, batch in NETWORKS:
        manual_seed(0)
        reference = nn.MLP(list(sizes))
        weights = [layer.weight.data.copy() for layer in reference.layers]
        biases = [layer.bias.data.copy() for layer in reference.layers]
        order = [np.random.default_rng(r).permutation(len(x_all)) for r in range(repeats)]
        runners = {k.name: k(weights, biases) for k in kinds}
        times = {name: [] for name in runners}
        for r in range(repeats):
            batches = [order[r][i:i + batch] for i in range(0, len(x_all), batch)]
            spent = dict.fromkeys(runners, 0.0)
            # the NumPy-based ones take turns every CHUNK steps, in a shuffled order: a burst of
            # load from elsewhere on the machine hits them alike. PyTorch runs its epoch after
            # them, whole: its OpenMP threads and OpenBLAS's both spin for a while after their
            # work, and on 2 cores short turns would measure them fighting each other
            shuffler = random.Random(r)
            shared = [name for name in runners if name != "pytorch"]
            for lo in range(0, len(batches), CHUNK):
                shuffler.shuffle(shared)
                for name in shared:
                    spent[name] += _timed_steps(runners[name], batches[lo:lo + CHUNK], x_all,
                                                y_all)
            if "pytorch" in runners:
                time.sleep(0.5)                      # OpenBLAS's threads go to sleep
                spent["pytorch"] = _timed_steps(runners["pytorch"], batches, x_all, y_all)
            for name in runners:
                times[name].append(spent[name])
            gc.collect()
        rows.append(("-".join(map(str, sizes)), batch, times))
        print(f"  {'-'.join(map(str, sizes))} batch {batch}: " + ", ".join(
            f"{k} {statistics.median(v):.3f}s" for k, v in times.items()), flush=True)
    return rows


# ---------------------------------------------------------------- 2. time to 98%

def time_to_98(data_dir):
    from tinygrad_mnist.mnist.options import Config
    from tinygrad_mnist.mnist.train import train
    import tempfile
    with tempfile.TemporaryDirectory() as out:
        config = Config(data_dir=data_dir, out=out)
        metrics = train(config, log=lambda *a: None, progress=False)
    return metrics


# ---------------------------------------------------------------- 3. per-op overhead

def scalar_graph(n=1_000_000, kind=Tensor, observer=None):
    """Forward and backward seconds of y = x + 1 + 1 + ... (n additions), with tensors (and
    `observer` attached, if one is given) or with the micrograd-style Value."""
    gc.collect()
    x = kind(0.5, requires_grad=True) if kind is Tensor else kind(0.5)
    with observe(observer) if observer is not None else contextlib.nullcontext():
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


def scalar_graph_replayed(n=1_000_000):
    """The same graph as one jitted function: seconds of the recording call and of a replay
    (forward and backward together)."""
    def build(x):
        y = x
        for _ in range(n):
            y = y + 1.0
        y.backward()
        return y
    step = jit(build)
    times = []
    for _ in range(2):
        x = Tensor(0.5, requires_grad=True)
        gc.collect()
        start = time.perf_counter()
        step(x)
        times.append(time.perf_counter() - start)
        assert x.grad == 1.0
    return times


def small_tensor_graph(n=20_000, shape=(128, 10)):
    gc.collect()
    x = Tensor(np.random.default_rng(0).random(shape, dtype=np.float32), requires_grad=True)
    start = time.perf_counter()
    y = x
    for _ in range(n):
        y = y * 0.999
    loss = y.sum()
    forward = time.perf_counter() - start
    start = time.perf_counter()
    loss.backward()
    backward = time.perf_counter() - start
    return forward, backward, n + 1


def recording_cost(ds, sizes=(784, 128, 10), batch=128, repeats=7):
    """Seconds of a jitted step's recording call and of an eager step on the same batch and
    the same model and optimizer, both warm (their state allocated by earlier steps): for
    each repeat, the median of ten eager steps, then a new jit of the same step, whose first
    call records. Returns the two lists."""
    x_all, y_all = ds.normalized(ds.train_images), ds.train_labels.astype(np.int64)
    x, y = x_all[:batch], y_all[:batch]
    manual_seed(0)
    runner = Autograd(*zip(*[(layer.weight.data, layer.bias.data)
                             for layer in nn.MLP(list(sizes)).layers]))
    eager, recording = [], []
    for r in range(repeats + 1):
        laps = []
        for _ in range(10):
            start = time.perf_counter()
            runner.step(x, y)
            laps.append(time.perf_counter() - start)
        jitted = jit(runner.step)
        start = time.perf_counter()
        jitted(x, y)
        if r:                                            # the first pays one-time imports
            eager.append(statistics.median(laps))
            recording.append(time.perf_counter() - start)
    return eager, recording


# ---------------------------------------------------------------- 4. memory

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def rss_over_steps(ds, steps=10_000, batch=128):
    x_all, y_all = ds.normalized(ds.train_images), ds.train_labels.astype(np.int64)
    manual_seed(0)
    runner = Autograd(*zip(*[(layer.weight.data, layer.bias.data)
                             for layer in nn.MLP([784, 128, 10]).layers]))
    rng = np.random.default_rng(0)
    marks = {}
    for step in range(1, steps + 1):
        idx = rng.integers(0, len(x_all), size=batch)
        runner.step(x_all[idx], y_all[idx])
        if step in (100, 1000, steps):
            marks[step] = rss_mb()
    return marks


def peak_rss_of_default_run(data_dir):
    """The high-water mark of a default `tinygrad-mnist train` in a fresh process, read from
    its own /proc/self/status as it ends (getrusage of a child would also count the pages it
    shared with this big benchmark process before exec)."""
    import tempfile
    with tempfile.TemporaryDirectory() as out:
        argv = ["train", "--quiet", "--out", out] + (["--data-dir", data_dir] if data_dir else [])
        script = ("import sys; from tinygrad_mnist.mnist.cli import main; main(sys.argv[1:]); "
                  "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0])")
        result = subprocess.run([sys.executable, "-c", script, *argv], check=True, cwd=ROOT,
                                env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True,
                                text=True)
    line = result.stdout.strip().splitlines()[-1]            # "VmHWM:   461296 kB"
    return int(line.split()[1]) / 1024


# ---------------------------------------------------------------- report

def machine_line():
    try:
        from threadpoolctl import threadpool_info
        blas = ", ".join(f"{i['internal_api']} {i.get('version')} ({i['num_threads']} threads, "
                         f"{i.get('architecture')})" for i in threadpool_info())
    except ImportError:
        blas = "unknown (threadpoolctl not installed)"
    torch_line = ""
    if torch_available():
        import torch
        torch_line = f", PyTorch {torch.__version__} ({torch.get_num_threads()} threads)"
    return (f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"NumPy {np.__version__}, BLAS: {blas}{torch_line}")


def fmt(values):
    return f"{statistics.median(values):.3f} ({min(values):.3f}–{max(values):.3f})"


def main(argv=None):
    parser = argparse.ArgumentParser(description="tinygrad_mnist benchmarks",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="MNIST files (default: the cache)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats, a shorter run")
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help="directory for RESULTS.md (`--out benchmarks` updates the "
                             "committed copy)")
    args = parser.parse_args(argv)
    ds = data.load("mnist", args.data_dir)
    repeats = 2 if args.quick else 5
    print(machine_line(), flush=True)

    print("1. epochs", flush=True)
    epochs = epoch_times(ds, repeats)
    print("2. time to 98%", flush=True)
    metrics = time_to_98(args.data_dir)
    print("3. per-op overhead", flush=True)
    scalar_fwd, scalar_bwd = scalar_graph()
    value_fwd, value_bwd = scalar_graph(kind=Value)
    recording, replay = scalar_graph_replayed()
    small_fwd, small_bwd, small_nodes = small_tensor_graph()
    eager_steps, recordings = recording_cost(ds)
    print("4. memory", flush=True)
    marks = rss_over_steps(ds, steps=2000 if args.quick else 10_000)
    peak = peak_rss_of_default_run(args.data_dir)
    print("5. Hessian-vector products", flush=True)
    hvp = hvp_costs(repeats=20 if args.quick else 50)

    has_torch = any("pytorch" in t for _, _, t in epochs)
    lines = ["# Benchmark results", "",
             f"Machine: {machine_line()}.", "",
             f"Command: `python -m benchmarks{' --quick' if args.quick else ''}` "
             f"({repeats} repeats of each epoch, NumPy, eager and jit taking turns every {CHUNK} "
             f"steps in a shuffled order, then PyTorch's whole epoch; medians of the epoch "
             f"times, with min–max).", "",
             "## 1. Seconds per MNIST epoch (60,000 images, SGD momentum 0.9)", "",
             "| network | batch | hand-written NumPy | eager | jit |"
             + (" PyTorch |" if has_torch else "")
             + " eager / NumPy | jit / NumPy |"
             + (" eager / PyTorch | jit / PyTorch |" if has_torch else ""),
             "| --- | --- | --- | --- | --- |" + (" --- |" if has_torch else "") + " --- | --- |"
             + (" --- | --- |" if has_torch else "")]
    for sizes, batch, t in epochs:
        med = {name: statistics.median(v) for name, v in t.items()}
        row = (f"| {sizes} | {batch} | {fmt(t['numpy'])} | {fmt(t['eager'])} | "
               f"{fmt(t['jit'])} |" + (f" {fmt(t['pytorch'])} |" if has_torch else "") +
               f" {med['eager'] / med['numpy']:.3f}x | {med['jit'] / med['numpy']:.3f}x |")
        if has_torch:
            row += (f" {med['eager'] / med['pytorch']:.3f}x | "
                    f"{med['jit'] / med['pytorch']:.3f}x |")
        lines.append(row)
    to98 = metrics["seconds_to_98"]
    reached = [h["epoch"] for h in metrics["history"] if h["test_accuracy"] >= 0.98]
    first = (f"first reached 98% after {to98:.1f} s of training (epoch {reached[0]})"
             if reached else "did not reach 98%")
    lines += ["", "## 2. Time to 98% MNIST test accuracy", "",
              f"Default `tinygrad-mnist train` (jit; 784-512-256-10, dropout 0.2, SGD momentum 0.9, "
              f"lr 0.05 cosine, batch 128, {metrics['epochs']} epochs): {first}; final test "
              f"accuracy {metrics['test_accuracy'] * 100:.2f}% after "
              f"{metrics['train_seconds']:.1f} s.", "",
              "## 3. Per-op overhead", "",
              "| graph | forward | backward |", "| --- | --- | --- |",
              f"| 1,000,000 scalar additions | {scalar_fwd:.2f} s ({scalar_fwd:.2f} µs/op) | "
              f"{scalar_bwd:.2f} s ({scalar_bwd:.2f} µs/node) |",
              f"| the same with a micrograd-style Value (benchmarks/scalar_value.py) | "
              f"{value_fwd:.2f} s | {value_bwd:.2f} s |",
              f"| {small_nodes - 1:,} multiplications of a (128, 10) tensor | "
              f"{small_fwd / (small_nodes - 1) * 1e6:.2f} µs/op | "
              f"{small_bwd / small_nodes * 1e6:.2f} µs/node |",
              f"| scalar graph, forward + backward | {scalar_fwd + scalar_bwd:.2f} s (Value: "
              f"{value_fwd + value_bwd:.2f} s) | |",
              f"| the scalar graph as one jitted function: recording call, then a replay "
              f"(forward + backward) | {recording:.2f} s, then {replay:.2f} s | |", "",
              f"A jitted step's recording call (784-128-10, batch 128): "
              f"{statistics.median(recordings) * 1e3:.2f} ms ({min(recordings) * 1e3:.2f}–"
              f"{max(recordings) * 1e3:.2f}), against an eager step's "
              f"{statistics.median(eager_steps) * 1e3:.2f} ms: "
              f"{statistics.median(recordings) / statistics.median(eager_steps):.2f}x "
              f"(medians of {len(recordings)} fresh recordings).", "",
              "## 4. Memory", "",
              f"Peak RSS of a default training run (a separate process): {peak:.0f} MB.", "",
              "RSS during training steps (784-128-10, batch 128): " + ", ".join(
                  f"after {k:,} steps {v:.0f} MB" for k, v in marks.items()) + ".", "",
              "## 5. A Hessian-vector product against one gradient", "",
              "784-128-10, batch 128, float32 (`python -m benchmarks.higher_order`): hvp is "
              "`grad` with `create_graph=True`, then the gradient of `sum(g * v)`.", "",
              "| framework | gradient | hvp | hvp / gradient |", "| --- | --- | --- | --- |"]
    lines += [f"| {name} | {g * 1e3:.3f} ms | {h * 1e3:.3f} ms | {h / g:.2f}x |"
              for name, (g, h) in hvp.items()] + [""]
    text = "\n".join(lines)
    print(text)
    write_report(args.out, "RESULTS.md", text, echo=False)


if __name__ == "__main__":
    main()

"""Conv nets against PyTorch's CPU eager mode, side by side in one process, with the same
threads: LeNet-5's, the default CNN's and the 3x3 CNN's training step at batch 128, each conv
layer's forward and backward alone, each layer's algorithms (every candidate timed, the one
measured choice, GFLOP/s against this machine's matrix-product peak measured in the same run),
and where a CNN step's time goes (the per-op profile).

    python -m benchmarks.conv [--out DIR] [--rounds 7]

Writes CONV.md into --out (default runs/benchmarks; `--out benchmarks` updates the committed
copy the README shows). Every figure is a median over rounds, with the range of the per-round
medians; our runners take turns, and PyTorch runs after them (not interleaved: on 2 cores its
OpenMP threads and OpenBLAS's spin against each other).
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from tinygrad_mnist import Tensor, jit, manual_seed, nn, no_grad, optim  # noqa: E402
from tinygrad_mnist.engine.kernels import blas, convolution as conv_kernels  # noqa: E402
from tinygrad_mnist.mnist import models  # noqa: E402
from benchmarks.report import ms_range, take_turns, write_report  # noqa: E402
from benchmarks.run import machine_line  # noqa: E402

BATCH, LR, MOMENTUM = 128, 0.05, 0.9
STEPS_PER_TURN = 5
# each conv layer of the two nets: (net, input shape, weight shape, padding)
LAYERS = [("LeNet-5 conv1", (BATCH, 1, 28, 28), (6, 1, 5, 5), 2),
          ("LeNet-5 conv2", (BATCH, 6, 14, 14), (16, 6, 5, 5), 0),
          ("CNN conv1", (BATCH, 1, 28, 28), (32, 1, 5, 5), 2),
          ("CNN conv2", (BATCH, 32, 14, 14), (64, 32, 5, 5), 2),
          ("CNN 3x3 conv1", (BATCH, 1, 28, 28), (32, 1, 3, 3), 1),
          ("CNN 3x3 conv2", (BATCH, 32, 14, 14), (64, 32, 3, 3), 1)]
ARCHS = [("lenet5", 5, "LeNet-5"), ("cnn", 5, "CNN (32-64 5x5, batch norm, 256)"),
         ("cnn", 3, "CNN 3x3 (32-64, batch norm, 256)")]


# ---------------------------------------------------------------- the same nets in PyTorch

def torch_model(arch, ours, kernel=5):
    """PyTorch's layers for `arch` (the CNN's kernel `kernel`), holding our model's initial
    weights."""
    import torch
    T = torch.nn
    if arch == "lenet5":
        features = [T.Conv2d(1, 6, 5, padding=2), T.ReLU(), T.MaxPool2d(2),
                    T.Conv2d(6, 16, 5), T.ReLU(), T.MaxPool2d(2)]
        classifier = [T.Flatten(), T.Linear(400, 120), T.ReLU(), T.Linear(120, 84), T.ReLU(),
                      T.Linear(84, 10)]
    else:
        pad = kernel // 2
        features = [T.Conv2d(1, 32, kernel, padding=pad), T.BatchNorm2d(32), T.ReLU(),
                    T.MaxPool2d(2), T.Conv2d(32, 64, kernel, padding=pad), T.BatchNorm2d(64),
                    T.ReLU(), T.MaxPool2d(2)]
        classifier = [T.Flatten(), T.Linear(64 * 49, 256), T.ReLU(), T.Linear(256, 10)]
    model = T.Sequential(T.Sequential(*features), T.Sequential(*classifier))
    theirs = dict(model.state_dict())
    names = {"features": "0", "classifier": "1"}
    with torch.no_grad():
        for name, value in ours.state_dict().items():
            part, rest = name.split(".", 1)
            theirs[f"{names[part]}.{rest}"].copy_(torch.from_numpy(np.array(value)))
    return model


class OurStep:
    def __init__(self, arch, use_jit, kernel=5):
        manual_seed(0)
        self.name = "ours, jit" if use_jit else "ours, eager"
        self.model = models.build(arch, cnn_kernel=kernel)
        opt = optim.SGD(self.model.parameters(), LR, momentum=MOMENTUM)

        def step(x, y):
            opt.zero_grad()
            loss = nn.cross_entropy(self.model(Tensor.from_numpy(x)), y)
            loss.backward()
            opt.step()
            return loss
        self.step = jit(step) if use_jit else step


class TorchStep:
    name = "PyTorch"

    def __init__(self, arch, ours, kernel=5):
        import torch
        self.torch = torch
        self.model = torch_model(arch, ours, kernel)
        opt = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)

        def step(x, y):
            opt.zero_grad()
            out = self.model(torch.from_numpy(x).reshape(-1, 1, 28, 28))
            torch.nn.functional.cross_entropy(out, torch.from_numpy(y)).backward()
            opt.step()
        self.step = step


def _turns(runners, work, rounds):
    """Per runner: every round's median seconds of `work(runner)`, the runners taking turns."""
    return take_turns({r.name: (lambda r=r: work(r)) for r in runners}, rounds, STEPS_PER_TURN)


def _timed_backward(runner):
    runner.prepare()                                  # the forward, not timed
    started = time.perf_counter()
    runner.backward()
    return time.perf_counter() - started


def _ours_then_theirs(ours, theirs, work, rounds):
    """Our runners taking turns, then PyTorch's by themselves: PyTorch's OpenMP threads keep
    spinning after each call, and on 2 cores they slow whatever OpenBLAS runs next (and the
    other way round), so the two are not interleaved."""
    times = _turns(ours, work, rounds)
    times.update(_turns(theirs, work, rounds))
    return times


def step_times(arch, kernel, rounds):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, 784)).astype(np.float32)
    y = rng.integers(0, 10, BATCH)
    ours = [OurStep(arch, True, kernel), OurStep(arch, False, kernel)]
    theirs = [TorchStep(arch, ours[0].model, kernel)]
    for runner in ours + theirs:                            # record, warm up
        for _ in range(3):
            runner.step(x, y)
    def one_step(runner):
        runner.step(x, y)
    return _ours_then_theirs(ours, theirs, one_step, rounds)


# ---------------------------------------------------------------- one conv layer alone

class OurLayer:
    name = "ours"

    def __init__(self, x, w, padding):
        self.x = Tensor(x, requires_grad=True)
        self.w = Tensor(w, requires_grad=True)
        self.padding = padding

    def forward(self):
        with no_grad():
            self.x.conv2d(self.w, padding=self.padding)

    def prepare(self):
        self.x.grad = self.w.grad = None
        self.out = self.x.conv2d(self.w, padding=self.padding)
        self.seed = np.ones(self.out.shape, np.float32)

    def backward(self):
        self.out.backward(self.seed)


class TorchLayer:
    name = "PyTorch"

    def __init__(self, x, w, padding):
        import torch
        self.torch = torch
        self.x = torch.from_numpy(x).requires_grad_()
        self.w = torch.from_numpy(w).requires_grad_()
        self.padding = padding

    def forward(self):
        with self.torch.no_grad():
            self.torch.nn.functional.conv2d(self.x, self.w, padding=self.padding)

    def prepare(self):
        self.x.grad = self.w.grad = None
        self.out = self.torch.nn.functional.conv2d(self.x, self.w, padding=self.padding)
        self.seed = self.torch.ones_like(self.out)

    def backward(self):
        self.out.backward(self.seed)


def layer_times(rounds):
    rng = np.random.default_rng(1)
    rows = []
    for label, x_shape, w_shape, padding in LAYERS:
        x = rng.standard_normal(x_shape).astype(np.float32)
        w = rng.standard_normal(w_shape).astype(np.float32)
        ours, theirs = [OurLayer(x, w, padding)], [TorchLayer(x, w, padding)]
        forward = _ours_then_theirs(ours, theirs, lambda r: r.forward(), rounds)
        backward = _ours_then_theirs(ours, theirs, _timed_backward, rounds)
        ratio_f = statistics.median(forward["ours"]) / statistics.median(forward["PyTorch"])
        ratio_b = statistics.median(backward["ours"]) / statistics.median(backward["PyTorch"])
        rows.append(f"| {label} | {x_shape} * {w_shape}, padding {padding} | "
                    f"{ms_range(forward['ours'])} | {ms_range(forward['PyTorch'])} | "
                    f"{ratio_f:.2f}x | {ms_range(backward['ours'])} | "
                    f"{ms_range(backward['PyTorch'])} | {ratio_b:.2f}x |")
    return rows


# ---------------------------------------------------------------- each layer's algorithms

def matmul_peak(rounds):
    """GFLOP/s of a (2048, 2048) @ (2048, 2048) float32 product: this machine's BLAS peak."""
    rng = np.random.default_rng(2)
    a = rng.standard_normal((2048, 2048)).astype(np.float32)
    b = rng.standard_normal((2048, 2048)).astype(np.float32)
    spent = []
    for _ in range(rounds):
        started = time.perf_counter()
        a @ b
        spent.append(time.perf_counter() - started)
    return 2 * 2048 ** 3 / statistics.median(spent) / 1e9


def algorithm_rows(rounds, peak):
    """Per layer: each forward algorithm and input-gradient strategy that applies, timed in
    turns on the layer's own arrays, with GFLOP/s and the share of the product peak, and the
    one the measured choice picks in a fresh process state."""
    rng = np.random.default_rng(3)
    rows = []
    for label, x_shape, w_shape, padding in LAYERS:
        x = rng.standard_normal(x_shape).astype(np.float32)
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
        w = rng.standard_normal(w_shape).astype(np.float32)
        geometry = conv_kernels.Geometry(w_shape[2:], (1, 1), (padding, padding))
        out_hw = geometry.output_size("conv2d", *x_shape[2:])
        g = rng.standard_normal((BATCH, w_shape[0]) + out_hw).astype(np.float32)
        flops = 2 * BATCH * out_hw[0] * out_hw[1] * int(np.prod(w_shape))
        saved = dict(conv_kernels.CHOSEN)
        conv_kernels.CHOSEN.clear()
        conv_kernels.conv(x, w, geometry)
        conv_kernels.input_grad(g, w, geometry, x_shape)
        picked = {key[4]: method for key, (method, _) in conv_kernels.CHOSEN.items()
                  if key[1] == x_shape}
        conv_kernels.CHOSEN.clear()
        conv_kernels.CHOSEN.update(saved)
        work = {("forward", m): (lambda m=m: conv_kernels.conv(x, w, geometry, method=m))
                for m in conv_kernels.forward_methods(geometry, x_shape, w_shape)}
        work.update({("input gradient", m): (lambda m=m: conv_kernels.input_grad(
            g, w, geometry, x_shape, method=m))
            for m in conv_kernels.input_grad_methods(geometry, w_shape, x_shape)})
        for fn in work.values():                 # warm up (and measure nested choices)
            fn()
        times = take_turns(work, rounds, 1)
        for (kind, method), spent in times.items():
            median = statistics.median(spent)
            rate = flops / median / 1e9
            chosen = "**chosen**" if picked.get(kind) == method else ""
            rows.append(f"| {label} | {kind} | {method} | {ms_range(spent)} | {rate:.0f} | "
                        f"{rate / peak:.0%} | {chosen} |")
    return rows


# ---------------------------------------------------------------- where a step's time goes

def step_shares(arch, steps=20):
    """The per-op profile of eager CNN steps (the profiler hears ops run eagerly): each op's
    forward and backward milliseconds per step and its share of the step."""
    from tinygrad_mnist.profiler import profile
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, 784)).astype(np.float32)
    y = rng.integers(0, 10, BATCH)
    runner = OurStep(arch, False)
    for _ in range(3):
        runner.step(x, y)
    with profile() as prof:
        for _ in range(steps):
            runner.step(x, y)
    return prof.wall / steps, [(name, forward / steps, backward / steps,
                                (forward + backward) / prof.wall)
                               for name, _, forward, backward in prof.rows()]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join("runs", "benchmarks"))
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    import torch
    threads = blas.get_num_threads()
    blas.set_num_threads(threads)
    torch.set_num_threads(threads)
    lines = ["# Conv nets against PyTorch", "",
             f"{machine_line()}; both at {threads} threads. `python -m benchmarks.conv` "
             f"({args.rounds} rounds, {STEPS_PER_TURN} steps each; ours taking turns, then "
             f"PyTorch's by themselves; medians, in parentheses the range of the rounds' "
             f"medians; a backward is timed after an untimed forward).", "",
             "## A training step (batch 128, SGD with momentum)", "",
             "| network | ours, jit ms | ours, eager ms | PyTorch ms | jit / PyTorch |",
             "| --- | --- | --- | --- | --- |"]
    for arch, kernel, label in ARCHS:
        t = step_times(arch, kernel, args.rounds)
        ratio = statistics.median(t["ours, jit"]) / statistics.median(t["PyTorch"])
        lines.append(f"| {label} | {ms_range(t['ours, jit'])} | {ms_range(t['ours, eager'])} | "
                     f"{ms_range(t['PyTorch'])} | {ratio:.2f}x |")
    lines += ["", "## Each conv layer alone (batch 128, float32)", "",
              "| layer | shapes | ours forward ms | PyTorch forward ms | ratio | ours backward ms "
              "| PyTorch backward ms | ratio |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"] + layer_times(args.rounds)
    peak = matmul_peak(args.rounds)
    lines += ["", "## Each layer's algorithms (ours, batch 128, float32)", "",
              f"Every candidate that applies, timed in turns; GFLOP/s counts the direct "
              f"convolution's 2*N*OH*OW*O*C*KH*KW; the peak is a (2048, 2048) @ (2048, 2048) "
              f"float32 product in this run: {peak:.0f} GFLOP/s. **chosen**: what the "
              f"measured choice (once per layer shape, the fastest of two tries each) picked "
              f"here; layers under {conv_kernels.MEASURED_MACS / 1e6:.0f}M multiply-adds take "
              f"the rule's.", "",
              "| layer | pass | algorithm | ms | GFLOP/s | of peak | |",
              "| --- | --- | --- | --- | --- | --- | --- |"] + algorithm_rows(args.rounds, peak)
    lines += ["", "## Where a CNN training step's time goes (ours, eager, profiled)", ""]
    per_step, shares = step_shares("cnn")
    lines += [f"{per_step * 1e3:.0f} ms per step (the profiler's own cost included), of "
              f"which:", "", "| op | forward ms | backward ms | share |",
              "| --- | --- | --- | --- |"]
    lines += [f"| {name} | {forward * 1e3:.1f} | {backward * 1e3:.1f} | {share:.0%} |"
              for name, forward, backward, share in shares]
    write_report(args.out, "CONV.md", "\n".join(lines))


if __name__ == "__main__":
    main()

"""Training on a machine another program keeps busy: epoch times, quiet and contended, with the
default thread count (load-aware), a fixed count of every core, and one thread.

    python -m benchmarks.contention --data-dir ../shared/data/mnist [--rounds 3] [--out DIR]

Each measurement is a separate process training the default network for 2 epochs on
--subset images; the second epoch's time is kept (the first includes the jit recording). The
competitor is a process spinning in a Python loop (one core busy), started before and stopped
after each contended measurement. Arms take turns in every round, in a shuffled order; medians
and ranges are reported, and each arm's contended time over the default's quiet time. Writes
CONTENTION.md into --out.
"""
import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from benchmarks.report import write_report  # noqa: E402

EPOCH = r"""
import json, sys, tempfile
from tinygrad_mnist.mnist.options import Config
from tinygrad_mnist.mnist.train import train
data_dir, subset, threads = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
with tempfile.TemporaryDirectory() as out:
    config = Config(data_dir=data_dir, subset=subset, epochs=2, out=out, threads=threads)
    metrics = train(config, log=lambda *a: None, progress=False)
last = metrics["history"][-1]
print(last["seconds"], last["steps_on_fewer_threads"])
"""

ARMS = {"default (load-aware)": None, "every core, fixed": "cores", "1 thread": 1}


def _epoch(data_dir, subset, threads):
    env = dict(os.environ, PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, "-c", EPOCH, data_dir, str(subset),
                             json.dumps(threads)], env=env, capture_output=True, text=True,
                            check=True)
    seconds, reduced = result.stdout.strip().splitlines()[-1].split()
    return float(seconds), int(reduced)


def _competitor():
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.contention",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--subset", type=int, default=30000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks"))
    args = parser.parse_args(argv)
    cores = os.cpu_count()
    times = {(arm, load): [] for arm in ARMS for load in ("quiet", "contended")}
    order = list(times)
    rng = random.Random(0)
    for r in range(args.rounds):
        rng.shuffle(order)
        for arm, load in order:
            threads = ARMS[arm]
            threads = cores if threads == "cores" else threads
            busy = _competitor() if load == "contended" else None
            try:
                if busy:
                    time.sleep(0.5)                  # the competitor is up to speed
                seconds, reduced = _epoch(args.data_dir, args.subset, threads)
            finally:
                if busy:
                    busy.kill()
                    busy.wait()
            times[(arm, load)].append(seconds)
            print(f"round {r + 1}: {arm:22s} {load:9s} {seconds:.2f} s ({reduced} steps on "
                  f"fewer threads)", flush=True)
    quiet = statistics.median(times[("default (load-aware)", "quiet")])
    lines = ["# Training next to a busy program", "",
             f"`python -m benchmarks.contention` ({args.rounds} rounds, arms in a shuffled order "
             f"each round, {args.subset:,} images an epoch, the default 784-512-256-10 network, "
             f"{cores} cores). Epoch seconds, median (range); the ratio is over the default's "
             f"quiet median. The competitor is one process spinning a Python loop.", "",
             "| threads | quiet | contended | contended / default quiet |",
             "| --- | --- | --- | --- |"]
    for arm in ARMS:
        cells = []
        for load in ("quiet", "contended"):
            values = times[(arm, load)]
            cells.append(f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})")
        ratio = statistics.median(times[(arm, "contended")]) / quiet
        lines.append(f"| {arm} | {cells[0]} | {cells[1]} | {ratio:.2f}x |")
    lines.append("")
    write_report(args.out, "CONTENTION.md", "\n".join(lines))


if __name__ == "__main__":
    main()

"""Wall time of the `ablate --quick` grid under each executor, on this machine.

    python -m benchmarks.executors --data-dir ../shared/data [--out benchmarks]

Writes EXECUTORS.md into --out (default runs/benchmarks): wall seconds per executor, the
number of trials and the longest trial (every executor runs a trial on one BLAS thread), and
checks that every executor gave the same
accuracies (timings aside).
"""
import argparse
import json
import os
import re
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from tinygrad_mnist.mnist.ablation import ablate  # noqa: E402
from benchmarks.report import write_report  # noqa: E402


def _accuracies(results):
    text = json.dumps(results, sort_keys=True)
    return re.sub(r'"seconds_per_epoch": [0-9.e-]+', "", text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="holding mnist/ and fashion-mnist/")
    parser.add_argument("--out", default=os.path.join("runs", "benchmarks"))
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args(argv)
    names = ("mnist", "fashion-mnist")
    dirs = {n: os.path.join(args.data_dir, n) for n in names} if args.data_dir else None
    rows, outputs = [], {}
    for executor in ("serial", "processes", "ray"):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            outputs[executor] = ablate(names, dirs, quick=True, out_dir=out, log=lambda *a: None,
                                       executor=executor, workers=args.workers)
            wall = time.perf_counter() - start
            trials = [json.load(open(os.path.join(out, "trials", f)))
                      for f in os.listdir(os.path.join(out, "trials"))]
        longest = max(sum(t["seconds_per_epoch"] for _ in t["val_curve"]) for t in trials)
        rows.append((executor, wall, len(trials), longest))
        print(f"{executor}: {wall:.1f} s, {len(trials)} trials, longest {longest:.1f} s",
              flush=True)
    same = all(_accuracies(o) == _accuracies(outputs["serial"]) for o in outputs.values())
    serial = rows[0][1]
    lines = ["# The --quick ablation grid under each executor", "",
             f"`python -m benchmarks.executors`: {os.cpu_count()} cores, "
             f"--workers {args.workers}; MNIST and Fashion-MNIST, "
             f"{rows[0][2]} trials.", "",
             "| executor | wall seconds | speed-up | longest trial (s) |",
             "| --- | --- | --- | --- |"]
    lines += [f"| {e} | {w:.1f} | {serial / w:.2f}x | {lo:.1f} |" for e, w, _, lo in rows]
    lines += ["", "Every executor gave the same accuracies and curves: "
              f"{'yes' if same else 'NO'}.", ""]
    write_report(args.out, "EXECUTORS.md", "\n".join(lines))


if __name__ == "__main__":
    main()

"""`tinygrad-mnist sweep`: every combination of lists of training options, each a trial run by
an executor, with a results table (markdown and JSON) and a plot in one run folder.

    tinygrad-mnist sweep --lr 0.01,0.03,0.1 --hidden 128 512,256 --seeds 0,1,2

Each trial is a full `train` run in OUT/trials/KEY (checkpointed every epoch, so a trial
retried after its worker died continues from its last epoch). OUT/sweep.json holds the trial
list; `--resume` runs the same list again, skipping finished trials.
"""
import itertools
import json
import os
import statistics
import time

from ..files import atomic_write, folder_lock
from ..tables import markdown_table
from .console import counted
from .options import ARCH_DEFAULTS, SWEPT, Config       # the options a sweep varies, in the table's order


def plan_trials(options, data_dir=None, subset=None, augment=False, flip=False):
    """The product of `options` (name -> list of values) as trial dicts, in a fixed order."""
    names = [n for n in SWEPT if n in options]
    trials = []
    for i, values in enumerate(itertools.product(*(options[n] for n in names))):
        chosen = dict(zip(names, values))
        for name, value in ARCH_DEFAULTS[chosen.get("arch") or "mlp"].items():
            if chosen.get(name, value) is None:          # left out: the network's default
                chosen[name] = value
        trials.append({"key": f"trial-{i:03d}", "options": chosen,
                       "config": dict(chosen, data_dir=data_dir, subset=subset,
                                      augment=augment, flip=flip)})
    return trials


def sweep_trial(trial):
    """One trial: a `train` run in its own folder, resumed from its checkpoint if an earlier
    attempt left one. Module level, so that every executor's workers can run it."""
    out = trial["out"]
    metrics_path = os.path.join(out, "metrics.json")
    if not os.path.exists(metrics_path):
        from .train import train
        config = Config(**trial["config"], out=out, force=True,
                        resume=os.path.exists(os.path.join(out, "checkpoint.npz")))
        train(config, log=lambda *a: None, progress=False)
    with open(metrics_path) as f:
        metrics = json.load(f)
    return {"key": trial["key"], "options": trial["options"],
            "test_accuracy": metrics["test_accuracy"], "train_seconds": metrics["train_seconds"],
            "epochs": metrics["epochs"]}


def run_sweep(options, out, data_dir=None, subset=None, augment=False, executor="serial",
              workers=None, ray_address=None, resume=False, progress=True, log=print,
              flip=False):
    from .executors import check_executor
    check_executor(executor, ray_address)
    spec_path = os.path.join(out, "sweep.json")
    trials = plan_trials(options, data_dir, subset, augment, flip)
    if resume:
        if not os.path.exists(spec_path):
            raise ValueError(f"--resume: {out} holds no sweep.json to continue; start a new "
                             f"sweep without --resume")
        with open(spec_path) as f:
            saved = json.load(f)
        if [t["options"] for t in saved["trials"]] != [t["options"] for t in trials]:
            raise ValueError(f"--resume: the sweep in {out} has other trials; give the same "
                             f"lists as when it started, or another --out")
    with folder_lock(out, "tinygrad-mnist sweep"):
        if not resume and [n for n in os.listdir(out) if n != ".lock"]:
            raise ValueError(f"--out {out} is not empty; pass --resume to continue the sweep "
                             f"in it, or another --out")
        return _run_locked(trials, out, spec_path, executor, workers, ray_address, progress,
                           log)


def _run_locked(trials, out, spec_path, executor, workers, ray_address, progress, log):
    from .executors import run_trials
    with atomic_write(spec_path, "w") as f:
        json.dump({"trials": trials}, f, indent=1)
    for t in trials:
        t["out"] = os.path.join(out, "trials", t["key"])
    log(f"{counted(len(trials), 'trial')}, executor {executor}, results in {out}")
    started = time.perf_counter()
    results = run_trials(sweep_trial, trials, executor, workers, ray_address,
                         progress=progress, description="sweep",
                         store=os.path.join(out, "results"), log=log)
    wall = time.perf_counter() - started
    write_results(results, out, executor, wall)
    return results


def _varying(results):
    names = [n for n in SWEPT if n in results[0]["options"]]
    return [n for n in names if len({json.dumps(r["options"][n]) for r in results}) > 1] or names


def _show(value):
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def write_results(results, out, executor, wall):
    varying = _varying(results)
    fixed = {n: v for n, v in results[0]["options"].items() if n not in varying}
    best = max(results, key=lambda r: r["test_accuracy"])
    lines = ["# Sweep results", "",
             f"{counted(len(results), 'trial')}, executor `{executor}`, {wall:.1f} s of wall time "
             f"(training alone: {sum(r['train_seconds'] for r in results):.1f} s). "
             f"Fixed: {', '.join(f'{n} {_show(v)}' for n, v in fixed.items()) or 'nothing'}.", ""]
    lines += markdown_table(
        ["trial", *varying, "test accuracy %", "train seconds", "epochs"],
        [[r["key"], *[_show(r["options"][n]) for n in varying],
          f"{r['test_accuracy'] * 100:.2f}{' (best)' if r is best else ''}",
          f"{r['train_seconds']:.2f}", r["epochs"]] for r in results])
    if "seed" in varying and len(varying) > 1:
        rows = []
        for label, group in _by_setting(results, varying).items():
            accs = [r["test_accuracy"] * 100 for r in group]
            std = statistics.stdev(accs) if len(accs) > 1 else 0.0
            rows.append([*label, f"{statistics.mean(accs):.2f} ± {std:.2f}"])
        lines += ["", "Mean over seeds:", ""] + markdown_table(
            [*(n for n in varying if n != "seed"), "test accuracy % (mean ± std)"], rows)
    lines += ["", "![test accuracy per trial](sweep.png)", ""]
    with atomic_write(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(lines))
    with atomic_write(os.path.join(out, "results.json"), "w") as f:
        json.dump({"executor": executor, "wall_seconds": wall, "trials": results}, f, indent=1)
    _plot(results, varying, os.path.join(out, "sweep.png"))


def _by_setting(results, varying):
    groups = {}
    for r in results:
        label = tuple(_show(r["options"][n]) for n in varying if n != "seed")
        groups.setdefault(label, []).append(r)
    return groups


def _plot(results, varying, path):
    """Test accuracy per setting (the options that vary besides the seed), seeds grouped."""
    from . import report
    groups = [("\n".join(f"{n} {label[k]}" for k, n in enumerate(n for n in varying
                                                                 if n != "seed")) or "all",
               [r["test_accuracy"] * 100 for r in group])
              for label, group in _by_setting(results, varying).items()]
    report.sweep_figure(groups, path)

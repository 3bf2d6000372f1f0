"""What each component buys: optimizers, regularizers, architectures and datasets compared.

Every hyperparameter choice (each optimizer's learning rate, the epoch kept by early stopping)
is made on a validation split, the last images of the training set; the test set is used
once per final model. Writes docs/results.md, docs/results.json (every run's numbers) and one
learning-curve plot per dataset.
"""
import json
import os
import platform
import re
import statistics
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from . import data, report
from ..files import atomic_write, folder_lock, remove_entries
from ..tables import markdown_table
from ..engine import manual_seed
from .evaluation import accuracy
from .factories import make_model, make_optimizer
from .options import Config
from .train import TrainingData, train_epoch, training_step_for

# learning rates tried for each optimizer (with momentum SGD's also used by the groups below)
SWEEP = {"sgd": [0.1, 0.3, 1.0], "momentum": [0.01, 0.03, 0.1, 0.3],
         "nesterov": [0.01, 0.03, 0.1, 0.3], "rmsprop": [1e-4, 3e-4, 1e-3, 3e-3],
         "adam": [3e-4, 1e-3, 3e-3, 1e-2], "adamw": [3e-4, 1e-3, 3e-3, 1e-2]}
# AdamW is run with its usual decoupled decay (PyTorch's default); with none it is Adam
OPTIMIZER_OPTIONS = {"adamw": {"weight_decay": 1e-2}}
TARGETS = {"mnist": 0.97, "fashion-mnist": 0.87}     # validation accuracy for "epochs to"
BASE = [256]                                          # hidden sizes of the optimizer study
REGULARIZED = [512, 256]
REGULARIZERS = {"none": {}, "weight decay 5e-4": {"weight_decay": 5e-4},
                "dropout 0.2": {"dropout": 0.2}, "augmentation": {"augment": True},
                "all three": {"weight_decay": 5e-4, "dropout": 0.2, "augment": True}}
# the architecture dimension: (arch, MLP hidden sizes, activation); `ablate --arch` picks
# which kinds of network take part
ARCHITECTURES = {"784-64-10 sigmoid (notebooks 000, 003)": ("mlp", [64], "sigmoid"),
                 "784-128-10 ReLU (notebooks 001, 004)": ("mlp", [128], "relu"),
                 "784-10-10-10 ReLU (notebook 002)": ("mlp", [10, 10], "relu"),
                 "wide 784-1024-10 ReLU": ("mlp", [1024], "relu"),
                 "deep 784-256x4-10 ReLU": ("mlp", [256, 256, 256, 256], "relu"),
                 "LeNet-5 ReLU": ("lenet5", BASE, "relu"),
                 "CNN 5x5 32-64 batch norm, 256 ReLU": ("cnn", BASE, "relu"),
                 "LSTM 128 over the rows": ("lstm", BASE, "relu"),
                 "ViT 7x7 patches, 4 blocks of 64": ("vit", BASE, "relu")}


@dataclass
class Plan:
    epochs: int
    seeds: tuple
    train_size: int          # images trained on (from the start of the training set)
    val_size: int            # the last val_size training images
    test_size: int
    sweep: dict = field(default_factory=lambda: SWEEP)
    archs: tuple = ("mlp", "lenet5", "cnn")     # the kinds of network compared


FULL = Plan(epochs=10, seeds=(0, 1, 2), train_size=55000, val_size=5000, test_size=10000)
QUICK = Plan(epochs=3, seeds=(0, 1, 2), train_size=8000, val_size=2000, test_size=10000,
             sweep={k: v[1:3] for k, v in SWEEP.items()}, archs=("mlp", "lenet5"))


@dataclass
class Split:
    info: object
    train: TrainingData
    train_aug: TrainingData
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def make_split(name, data_dir, plan):
    ds = data.load(name, data_dir, progress=False)
    images, labels = ds.train_images, ds.train_labels.astype(np.int64)
    n_val = plan.val_size
    train_images, train_labels = images[:-n_val][:plan.train_size], labels[:-n_val][:plan.train_size]
    return Split(ds.info, TrainingData(train_images, train_labels, ds.info, False),
                 TrainingData(train_images, train_labels, ds.info, True),
                 ds.normalized(images[-n_val:]), labels[-n_val:],
                 ds.normalized(ds.test_images[:plan.test_size]),
                 ds.test_labels[:plan.test_size].astype(np.int64))


def run_one(split, config, test=True):
    """Train with early stopping on validation accuracy; touch the test set once, with the
    weights of the best validation epoch. Returns the run's record."""
    manual_seed(config.seed)
    model = make_model(config)
    optimizer = make_optimizer(config, model.parameters())
    train_data = split.train_aug if config.augment else split.train
    curve, seconds, best = [], [], (-1.0, 0, None)
    step = training_step_for(model, optimizer, config)
    for epoch in range(1, config.epochs + 1):
        _, _, spent = train_epoch(model, optimizer, config, epoch, train_data, step=step)
        seconds.append(spent)
        val = accuracy(model, split.val_x, split.val_y)
        curve.append(val)
        if val > best[0]:
            best = (val, epoch, model.state_dict())
    model.load_state_dict(best[2])
    record = {"seed": config.seed, "lr": config.lr, "val_curve": curve,
              "best_val": best[0], "best_epoch": best[1],
              "seconds_per_epoch": statistics.median(seconds)}
    if test:
        record["test_accuracy"] = accuracy(model, split.test_x, split.test_y)
    return record


def _epochs_to(curve, target):
    return next((i + 1 for i, v in enumerate(curve) if v >= target), None)


def summarize(runs, target):
    tests = [r["test_accuracy"] for r in runs]
    reached = [_epochs_to(r["val_curve"], target) for r in runs]
    return {"test_mean": statistics.mean(tests),
            "test_std": statistics.stdev(tests) if len(tests) > 1 else 0.0,
            "seconds_per_epoch": statistics.median(r["seconds_per_epoch"] for r in runs),
            "epochs_to_target": (statistics.mean(reached) if all(reached) else None),
            "reached": sum(1 for e in reached if e), "runs": len(runs)}


_SPLITS = {}      # (dataset, data_dir, plan sizes) -> Split, loaded once per process


def ablation_trial(trial):
    """One training run of the grid: a module-level function, so that any executor's worker
    can run it. Everything random is seeded from the trial's config."""
    plan = trial["plan"]
    key = (trial["dataset"], trial["data_dir"], plan.train_size, plan.val_size, plan.test_size)
    if key not in _SPLITS:
        _SPLITS.clear()
        _SPLITS[key] = make_split(trial["dataset"], trial["data_dir"], plan)
    record = run_one(_SPLITS[key], trial["config"])
    record["config"] = asdict(trial["config"])
    return record


def run_dataset(name, data_dir, plan, log, runner=None):
    """The grid for one dataset. `runner(trials, description)` runs a list of trials and
    returns their records (executors.run_trials); by default one after another, here."""
    runner = runner or (lambda trials, description: [ablation_trial(t) for t in trials])
    base = Config(dataset=name, hidden=BASE, dropout=0.0, epochs=plan.epochs,
                  lr_schedule="cosine")
    result = {"sweep": {}, "optimizers": {}, "regularization": {}, "architectures": {}}

    def trial(label, config):
        key = re.sub(r"[^A-Za-z0-9.-]+", "_", f"{name}-{label}-seed{config.seed}")
        return {"key": key,
                "dataset": name, "data_dir": data_dir, "plan": plan, "config": config}

    # phase 1: every optimizer's learning rates, seed 0, all at once
    sweep = [(opt, lr) for opt, rates in plan.sweep.items() for lr in rates]
    records = runner([trial(f"{opt}-lr{lr}", replace(base, optimizer=opt, lr=lr,
                                                     seed=plan.seeds[0],
                                                     **OPTIMIZER_OPTIONS.get(opt, {})))
                      for opt, lr in sweep], f"{name}: learning rates")
    tried = {}
    for (opt, lr), record in zip(sweep, records):
        tried.setdefault(opt, {})[lr] = record
        log(f"{name} sweep {opt} lr {lr}: best val {record['best_val']:.4f}")
    chosen = {opt: max(runs, key=lambda lr: runs[lr]["best_val"]) for opt, runs in tried.items()}
    for opt, runs in tried.items():
        result["sweep"][opt] = {"tried": {str(lr): r["best_val"] for lr, r in runs.items()},
                                "chosen": chosen[opt]}

    # phase 2: the other seeds of each optimizer at its chosen rate; regularizers and
    # architectures with SGD momentum at its chosen rate
    lr = chosen["momentum"]
    groups = []
    for opt in plan.sweep:
        options = OPTIMIZER_OPTIONS.get(opt, {})
        groups += [("optimizers", opt, trial(f"{opt}-lr{chosen[opt]}", replace(
            base, optimizer=opt, lr=chosen[opt], seed=s, **options))) for s in plan.seeds[1:]]
    for label, options in REGULARIZERS.items():
        config = replace(base, hidden=REGULARIZED, optimizer="momentum", lr=lr, **options)
        groups += [("regularization", label, trial(label, replace(config, seed=s)))
                   for s in plan.seeds]
    for label, (arch, hidden, activation) in ARCHITECTURES.items():
        if arch not in plan.archs:
            continue
        config = replace(base, arch=arch, hidden=hidden, activation=activation,
                         optimizer="momentum", lr=lr)
        groups += [("architectures", label, trial(label, replace(config, seed=s)))
                   for s in plan.seeds]
    records = runner([t for _, _, t in groups], f"{name}: seeds and groups")
    for opt in plan.sweep:
        result["optimizers"][opt] = [tried[opt][chosen[opt]]]
    for (group, label, _), record in zip(groups, records):
        result[group].setdefault(label, []).append(record)
    for group in ("optimizers", "regularization", "architectures"):
        for label, runs in result[group].items():
            log(f"{name} {label}: test {[round(r['test_accuracy'], 4) for r in runs]}")
    return result


CHANCE = 0.15            # test accuracy below 1.5x chance for 10 classes: the run did not learn


def _pct(x):
    return f"{x * 100:.2f}"


def results_table(group, target):
    rows = []
    for label, runs in group.items():
        s = summarize(runs, target)
        reach = (f"{s['epochs_to_target']:.1f}" if s["epochs_to_target"] is not None
                 else f"{s['reached']} of {s['runs']} runs reached it" if s["reached"]
                 else "no run reached it")
        accuracy = f"{_pct(s['test_mean'])} ± {_pct(s['test_std'])}"
        stuck = [r for r in runs if r["test_accuracy"] < CHANCE]
        if stuck:                     # a mean over failed and working runs is no result
            accuracy += (f" ⚠ {len(stuck)} of {len(runs)} seeds stayed at chance "
                         f"({', '.join(_pct(r['test_accuracy']) for r in stuck)}%): not a "
                         f"result")
        rows.append([label, accuracy,
                     f"{s['seconds_per_epoch']:.2f}", reach,
                     ", ".join(str(r["best_epoch"]) for r in runs)])
    return markdown_table(["configuration", "test accuracy % (mean ± std)", "seconds / epoch",
                           f"epochs to {target * 100:.0f}% val", "best val epoch (per seed)"],
                          rows)


def _reading(name, result, target):
    """A few sentences read off the numbers of this run (written by code, so they always
    describe the numbers above them)."""
    opt = {k: summarize(v, target) for k, v in result["optimizers"].items()}
    best, worst = max(opt, key=lambda k: opt[k]["test_mean"]), min(
        opt, key=lambda k: opt[k]["test_mean"])
    reg = {k: summarize(v, target) for k, v in result["regularization"].items()}
    none = reg["none"]
    effects = ", ".join(f"{k} {(s['test_mean'] - none['test_mean']) * 100:+.2f} points"
                        for k, s in reg.items() if k != "none")
    cost = reg["augmentation"]["seconds_per_epoch"] / max(none["seconds_per_epoch"], 1e-9)
    arch = {k: summarize(v, target) for k, v in result["architectures"].items()}
    best_arch = max(arch, key=lambda k: arch[k]["test_mean"])
    fastest = min(arch, key=lambda k: arch[k]["seconds_per_epoch"])
    return [f"- Optimizers: {best} did best ({_pct(opt[best]['test_mean'])}%), {worst} worst "
            f"({_pct(opt[worst]['test_mean'])}%), a spread of "
            f"{(opt[best]['test_mean'] - opt[worst]['test_mean']) * 100:.2f} points at "
            f"validated learning rates.",
            f"- Regularization against none ({_pct(none['test_mean'])}%): {effects}. "
            f"Augmentation costs {cost:.1f}x the time per epoch.",
            f"- Architectures: {best_arch} is most accurate "
            f"({_pct(arch[best_arch]['test_mean'])}%); {fastest} is fastest "
            f"({arch[fastest]['seconds_per_epoch']:.2f} s/epoch, "
            f"{_pct(arch[fastest]['test_mean'])}%)."]


def write_report(results, plan, mode, seconds, out_dir):
    lines = ["# What each component buys", "",
             f"Measured on {platform.machine()}, {os.cpu_count()} cores, NumPy "
             f"{np.__version__}; `tinygrad-mnist ablate{' --quick' if mode == 'quick' else ''}` "
             f"took {seconds / 60:.1f} minutes. Raw numbers: [results.json](results.json).", "",
             f"Method: train on the first {plan.train_size:,} training images, validate on the "
             f"last {plan.val_size:,}, test on {plan.test_size:,} test images. {plan.epochs} "
             f"epochs, batch 128, cosine learning-rate decay, seeds {list(plan.seeds)}. Each "
             "optimizer's learning rate is the best of a small sweep by validation accuracy "
             "(seed 0); regularizers and architectures use SGD with momentum at its validated "
             "rate. Early stopping keeps the epoch with the best validation accuracy; the test "
             "set is evaluated once per final model. AdamW uses decoupled weight decay 0.01; "
             "the regularizer strengths are fixed, not tuned (weight decay 5e-4, dropout 0.2, "
             "shifts up to 2 px and rotations up to 10°).",
             ""]
    for name, result in results.items():
        target = TARGETS[name]
        rows = []
        for opt, sweep in result["sweep"].items():
            tried = ", ".join(f"{lr}: {_pct(v)}" for lr, v in sweep["tried"].items())
            rates = [float(lr) for lr in sweep["tried"]]
            edge = " (edge of the range tried)" if sweep["chosen"] in (min(rates), max(
                rates)) and len(rates) > 2 else ""
            rows.append([opt, tried, f"{sweep['chosen']}{edge}"])
        lines += [f"## {name}", "", "Learning-rate sweep (best validation accuracy %):", ""]
        lines += markdown_table(["optimizer", "tried", "chosen"], rows)
        for title, key in (("Optimizers (784-256-10 ReLU)", "optimizers"),
                           ("Regularization (784-512-256-10 ReLU, SGD momentum)",
                            "regularization"),
                           ("Architectures (SGD momentum)", "architectures")):
            lines += ["", f"### {title}", ""] + results_table(result[key], target)
        lines += ["", f"![validation accuracy per optimizer](curves_{name}.png)", "",
                  "Reading:", ""] + _reading(name, result, target) + [""]
        curves = {opt: np.mean([r["val_curve"] for r in runs], axis=0)
                  for opt, runs in result["optimizers"].items()}
        report.optimizer_curves(curves, name, os.path.join(out_dir, f"curves_{name}.png"),
                                rates={opt: sweep["chosen"]
                                       for opt, sweep in result["sweep"].items()})
    with atomic_write(os.path.join(out_dir, "results.md"), "w") as f:
        f.write("\n".join(lines))
    with atomic_write(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump({"mode": mode, "plan": {"epochs": plan.epochs, "seeds": list(plan.seeds),
                                          "train_size": plan.train_size,
                                          "val_size": plan.val_size,
                                          "test_size": plan.test_size},
                   "minutes": seconds / 60, "results": results}, f, indent=1)


def ablate(datasets=("mnist", "fashion-mnist"), data_dirs=None, quick=False, out_dir="docs",
           plan=None, log=print, executor="serial", workers=None, ray_address=None,
           resume=False, progress=False, archs=None, force=False):
    """The whole grid, its trials run by `executor` (executors.py). Each finished trial is
    kept in OUT_DIR/trials/; with `resume`, those are not run again. A folder that holds an
    ablation is refused unless `resume` continues it or `force` replaces it. `archs` limits
    the architecture group to those kinds of network (models.ARCHS)."""
    from .executors import check_executor
    check_executor(executor, ray_address)
    plan = plan or (QUICK if quick else FULL)
    if archs is not None:
        plan = replace(plan, archs=tuple(archs))
    with folder_lock(out_dir, "tinygrad-mnist ablate"):
        held = _ablation_files(out_dir)
        if held and not (resume or force):
            raise ValueError(f"--out {out_dir} already holds an ablation ({', '.join(held[:4])}"
                             f"{', ...' if len(held) > 4 else ''}); pass --resume to continue "
                             f"it, --force to replace it, or another --out")
        if force and not resume:                # a new grid: the old one's files go first
            remove_entries(out_dir, held)
        return _ablate_locked(datasets, data_dirs, plan, quick, out_dir, log, executor,
                              workers, ray_address, progress)


def _ablation_files(out_dir):
    """What an ablation wrote into out_dir: its report, plots and finished trials."""
    names = sorted(os.listdir(out_dir)) if os.path.isdir(out_dir) else []
    trials = os.path.join(out_dir, "trials")
    return [n for n in names if n in ("results.md", "results.json") or
            (n.startswith("curves_") and n.endswith(".png")) or
            (n == "trials" and os.path.isdir(trials) and os.listdir(trials))]


def _ablate_locked(datasets, data_dirs, plan, quick, out_dir, log, executor, workers,
                   ray_address, progress):
    from .executors import run_trials
    store = os.path.join(out_dir, "trials")

    def runner(trials, description):
        return run_trials(ablation_trial, trials, executor, workers, ray_address,
                          progress=progress, description=description, store=store, log=log)
    started = time.perf_counter()
    results = {name: run_dataset(name, (data_dirs or {}).get(name), plan, log, runner)
               for name in datasets}
    write_report(results, plan, "quick" if quick else "full", time.perf_counter() - started,
                 out_dir)
    for name in os.listdir(out_dir):        # a dataset's curves the report no longer shows
        if name.startswith("curves_") and name.endswith(".png") and \
                name[len("curves_"):-len(".png")] not in results:
            os.unlink(os.path.join(out_dir, name))
    return results

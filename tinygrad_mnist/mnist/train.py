"""Training a network (MLP, LeNet-5 or CNN: models.py) on MNIST or Fashion-MNIST: the loop,
checkpoints, metrics and reports."""
import contextlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .. import nn, optim
from .threads import LoadAwareThreads, fix_threads
from ..data import DataLoader
from ..files import atomic_write
from ..optim import lr_scheduler
from . import data, models
from .models import layer_sizes  # noqa: F401  (kept importable from here)
from ..jit import jit
from ..profiler import profile
from ..engine import Tensor, manual_seed, no_grad

OPTIMIZERS = ("sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "step", "onecycle")


@dataclass
class Config:
    dataset: str = "mnist"
    data_dir: str = None
    arch: str = "mlp"           # models.ARCHS: mlp, lenet5, cnn
    hidden: list = field(default_factory=lambda: [512, 256])
    activation: str = "relu"
    optimizer: str = "momentum"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    dropout: float = 0.2
    input_dropout: float = 0.0  # MLP only: dropout of the input pixels
    cnn_kernel: int = 5         # CNN only: 5x5 or 3x3 convolutions
    label_smoothing: float = 0.0  # the training loss's targets: 1 - s on the label, s spread
    augment: bool = False
    elastic: float = 0.0        # > 0: also elastic distortions of this strength (implies augment)
    flip: bool = False          # mirror a random half of the images left to right
    batch_size: int = 128
    epochs: int = 15
    lr_schedule: str = "cosine"
    seed: int = 0
    out: str = None             # None: runs/<dataset>
    subset: int = None          # use only the first N training and test images (quick runs)
    resume: bool = False        # continue the run in `out` (or extend it to more epochs)
    force: bool = False         # replace the run in `out`
    jit: bool = True            # replay each recorded step (same numbers, faster); False: eager
    jit_check: bool = False     # also run each replayed step eagerly and compare (slower)
    threads: int = None         # BLAS threads; None: every core, fewer while other programs
                                # keep cores busy (threads.LoadAwareThreads)

    def __post_init__(self):
        if self.out is None:
            self.out = os.path.join("runs", self.dataset)

    # what must match for --resume to continue a run instead of starting another
    def fingerprint(self):
        d = asdict(self)
        for key in ("out", "data_dir", "epochs", "resume", "force", "jit", "jit_check",
                    "threads"):
            d.pop(key)
        return d


class TrainingError(RuntimeError):
    """Training cannot go on: the loss diverged. The message says what was kept and what to
    do."""
    exit_code = 1


class Interrupted(TrainingError):
    """Ctrl-C: the last complete epoch is kept."""
    exit_code = 130


def make_model(config):
    return models.build(config.arch, config.hidden, config.activation, config.dropout,
                        config.input_dropout, config.cnn_kernel)


def parameter_count(config):
    """The model's parameter count, without building an MLP that might not fit."""
    if config.arch == "mlp":
        sizes = layer_sizes(config.hidden)
        return sum(n_in * n_out + n_out for n_in, n_out in zip(sizes, sizes[1:]))
    return sum(p.size for p in make_model(config).parameters())


# float32 arrays the size of the parameters: weights, gradients, one scratch buffer, and the
# optimizer's own state
_STATE_BUFFERS = {"sgd": 3, "momentum": 4, "nesterov": 4, "rmsprop": 4, "adam": 5, "adamw": 5}


def memory_needed(config, train_size):
    """(model bytes, batch bytes, data bytes) a run needs, roughly, in float32: parameters with
    their gradients and optimizer state; a batch's activations and their gradients (a few
    arrays per layer); the standardized training and test images."""
    params = parameter_count(config)
    model = 4 * params * _STATE_BUFFERS.get(config.optimizer, 5)
    per_image = (models.activation_sizes(config.arch, config.hidden) * 6
                 + models.im2col_sizes(config.arch, config.cnn_kernel) * 2)
    batch = 4 * config.batch_size * per_image
    data = 4 * 784 * (train_size + 10_000)
    return model, batch, data


def available_memory():
    """Bytes this machine can still give a new allocation (MemAvailable on Linux, else the
    physical memory), or None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(config, train_size):
    """Refuse, before allocating anything, a network and batch that cannot fit in memory."""
    model, batch, data = memory_needed(config, train_size)
    available = available_memory()
    if available is not None and model + batch + data > available:
        gb = 1e9
        network = (f"--hidden {','.join(map(str, config.hidden))}" if config.arch == "mlp"
                   else f"--arch {config.arch}")
        raise ValueError(
            f"{network} with --batch-size "
            f"{config.batch_size} needs about {(model + batch + data) / gb:,.1f} GB (weights, "
            f"gradients and {config.optimizer} state {model / gb:,.1f} GB, a batch's "
            f"activations {batch / gb:,.1f} GB, the images {data / gb:,.1f} GB) but this "
            f"machine has {available / gb:,.1f} GB available; choose smaller layers or batches")


def make_optimizer(config, params):
    name, lr, wd = config.optimizer, config.lr, config.weight_decay
    if name == "sgd":
        return optim.SGD(params, lr, weight_decay=wd)
    if name == "momentum":
        return optim.SGD(params, lr, momentum=config.momentum, weight_decay=wd)
    if name == "nesterov":
        return optim.SGD(params, lr, momentum=config.momentum, nesterov=True, weight_decay=wd)
    if name == "rmsprop":
        return optim.RMSProp(params, lr, weight_decay=wd)
    if name == "adam":
        return optim.Adam(params, lr, weight_decay=wd)
    if name == "adamw":
        return optim.AdamW(params, lr, weight_decay=wd)
    raise ValueError(f"unknown optimizer {name!r}; choose from {OPTIMIZERS}")


def make_scheduler(config, optimizer, total_steps, last_step=-1):
    """The schedule, stepped once per batch: constant (None); cosine from lr to 0 over the
    run (CosineAnnealingLR); step: x0.1 at 50% and 75% of the run (MultiStepLR); onecycle:
    up from lr/25 to lr over the first quarter, then down along a half cosine to nearly 0,
    momentum cycling the other way (OneCycleLR). With last_step, it continues after that step
    (a later epoch, a resumed run)."""
    schedule = config.lr_schedule
    if schedule == "constant":
        return None
    if schedule == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1),
                                              last_epoch=last_step)
    if schedule == "step":
        milestones = [math.ceil(total_steps * 0.5), math.ceil(total_steps * 0.75)]
        return lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1, last_epoch=last_step)
    if schedule == "onecycle":
        group = optimizer.param_groups[0]
        cycles = "betas" in group or bool(group.get("momentum"))
        return lr_scheduler.OneCycleLR(optimizer, config.lr, max(total_steps, 1),
                                       pct_start=0.25, cycle_momentum=cycles,
                                       last_epoch=last_step)
    raise ValueError(f"unknown lr schedule {schedule!r}; choose from {SCHEDULES}")


def learning_rate(config, step, total_steps):
    """The learning rate that make_scheduler's schedule gives at `step` of `total_steps`."""
    probe = optim.SGD([Tensor.zeros(1, requires_grad=True)], config.lr)
    make_scheduler(config, probe, total_steps, last_step=step - 1)
    return probe.lr


def _epoch_rng(seed, epoch, stream):
    """Independent, reproducible random streams per (seed, epoch): a resumed run draws exactly
    what an uninterrupted one would have drawn."""
    return np.random.default_rng([seed, epoch, stream])


def predict_logits(model, x, batch_size=None):
    """The model's logits for every row of x, in batches: 2,000 images at a time for an MLP,
    200 for a conv net, whose im2col columns for 2,000 images would take over a gigabyte."""
    if batch_size is None:
        batch_size = 200 if isinstance(model, models.ConvNet) else 2000
    model.eval()
    with no_grad():
        out = np.concatenate([model(Tensor.from_numpy(x[i:i + batch_size])).data
                              for i in range(0, len(x), batch_size)])
    model.train()
    return out


def confusion_matrix(labels, predictions, n_classes=10):
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def format_confusion(matrix, classes):
    width = max(5, len(str(matrix.max())) + 1)
    names = [c[:width - 1] for c in classes]
    lines = ["true \\ predicted".ljust(12) + "".join(n.rjust(width) for n in names)]
    for name, row in zip(classes, matrix):
        lines.append(name[:11].ljust(12) + "".join(str(v).rjust(width) for v in row))
    return "\n".join(lines)


# ---------------------------------------------------------------- checkpoints

def _checkpoint_path(out):
    return os.path.join(out, "checkpoint.npz")


def save_checkpoint(out, model, optimizer, config, epoch, history, elapsed):
    arrays = {f"model.{k}": v for k, v in model.state_dict().items()}
    arrays.update({f"optim.{k}": v for k, v in optimizer.state_dict().items()})
    arrays[nn.META_KEY] = np.array(json.dumps({"epoch": epoch, "history": history,
                                          "elapsed": elapsed, "config": config.fingerprint(),
                                          "data_dir": _absolute(config.data_dir)}))
    nn.save_arrays(arrays, _checkpoint_path(out))


def _absolute(directory):
    return None if directory is None else os.path.abspath(directory)


def stored_data_dir(path):
    """The data directory a run (its checkpoint.npz or model.npz) was trained from, if it
    still exists: --resume and eval read the same files again without --data-dir."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            key = nn.META_KEY if nn.META_KEY in archive.files else "meta"   # "meta": older
            directory = json.loads(str(archive[key])).get("data_dir")
    except (OSError, KeyError, ValueError, AttributeError):
        return None
    return directory if directory and os.path.isdir(directory) else None


def load_checkpoint(out, model, optimizer, config):
    """Restore the last complete epoch. Returns (next epoch, history, elapsed seconds). The
    whole file is checked first: a bad checkpoint changes neither model nor optimizer."""
    path = _checkpoint_path(out)
    arrays = nn.load_arrays(path)
    try:
        meta = json.loads(str(arrays.pop(nn.META_KEY if nn.META_KEY in arrays else "meta")))
        epoch, history, elapsed, saved = (meta["epoch"], meta["history"], meta["elapsed"],
                                          meta["config"])
    except (KeyError, ValueError, TypeError) as error:
        raise ValueError(f"--resume: {path} has no readable 'meta' entry ({error!r})") from None
    saved = {"arch": "mlp", **saved}                 # runs from before --arch
    current = config.fingerprint()
    changed = sorted(k for k in current if saved.get(k) != current[k])
    if changed:
        raise ValueError(f"--resume: the checkpoint in {out} was made with different settings "
                         f"({', '.join(changed)}); use the same options or another --out")
    model_state = {k[6:]: v for k, v in arrays.items() if k.startswith("model.")}
    optim_state = {k[6:]: v for k, v in arrays.items() if k.startswith("optim.")}
    try:
        model.check_state_dict(model_state)
        optimizer.load_state_dict(optim_state)      # checks everything before it changes
    except (KeyError, ValueError, TypeError) as error:
        raise ValueError(f"--resume: {path} does not fit this model: {error}") from None
    if epoch > config.epochs:
        raise ValueError(f"--resume: the run in {out} has {epoch} epochs already; pass "
                         f"--epochs {epoch} or more to continue or extend it")
    model.load_state_dict(model_state)
    return epoch + 1, history, elapsed


# ---------------------------------------------------------------- the loop

class TrainingData:
    """Training images ready for batches: standardized once up front (`source`), or, with
    augmentation, kept as pixels in [0, 1] so each batch is moved first and standardized
    after (`prepare`)."""

    def __init__(self, images, labels, info, augment, elastic=0.0, flip=False):
        self.labels, self.info, self.elastic, self.flip = labels, info, elastic, flip
        self.moves = augment or elastic > 0             # shifts and rotations
        self.augment = self.moves or flip
        self.source = data.to_unit(images) if self.augment else data.normalize(images, info)

    def __len__(self):
        return len(self.labels)

    def loader(self, batch_size, seed):
        """This epoch's batches of (source rows, labels), in an order drawn from `seed`."""
        return DataLoader((self.source, self.labels), batch_size, shuffle=True, seed=seed)

    def prepare(self, rows, rng):
        """A batch of source rows as network inputs (moved, then standardized, when
        augmenting)."""
        if self.augment:
            still = {} if self.moves else {"max_shift": 0.0, "max_degrees": 0.0}
            moved = data.augment(rows, rng, elastic=self.elastic, flip=self.flip, **still)
            return data.standardize(moved, self.info)
        return rows


def training_step(model, optimizer, use_jit=True, check=False, label_smoothing=0.0):
    """step(x, y) -> (loss, logits): one update on a batch; recorded once per batch shape and
    replayed (jit/) unless use_jit is False; with check, every replay is also run eagerly and
    compared (JitMismatchError on a difference). Values are read by the caller, outside the
    step, so that the step can be replayed."""
    def step(x, y):
        optimizer.zero_grad()
        logits = model(Tensor.from_numpy(x))          # a fresh batch: no copy needed
        loss = nn.cross_entropy(logits, y, label_smoothing=label_smoothing)
        loss.backward()
        optimizer.step()
        return loss, logits
    return jit(step, check=check) if use_jit else step


def training_step_for(model, optimizer, config):
    """The run's step function: made once per run, so that its recordings serve every epoch
    (a new jit per epoch recorded again, and kept the old recordings' arrays alive until the
    garbage collector found their cycles: 300 MB more per CNN epoch)."""
    return training_step(model, optimizer, config.jit, config.jit_check, config.label_smoothing)


def train_epoch(model, optimizer, config, epoch, train_data, progress=False, scheduler=None,
                threads=None, step=None):
    """One pass over train_data in the epoch's seeded order, the learning rate set by
    `scheduler` (by default config's schedule, from this epoch's first step), the BLAS
    threads by `threads` (a threads.LoadAwareThreads; by default one for this epoch) and the
    updates by `step` (training_step_for; by default one for this epoch). Returns (mean loss,
    accuracy, seconds)."""
    model.train()
    step = training_step_for(model, optimizer, config) if step is None else step
    manual_seed([config.seed, epoch, 1])                           # dropout masks
    augment_rng = _epoch_rng(config.seed, epoch, 2)
    n = len(train_data)
    loader = train_data.loader(config.batch_size, seed=[config.seed, epoch, 0])
    steps_per_epoch = len(loader)
    if scheduler is None:
        scheduler = make_scheduler(config, optimizer, steps_per_epoch * config.epochs,
                                   last_step=(epoch - 1) * steps_per_epoch - 1)
    own_threads = threads is None
    threads = LoadAwareThreads() if own_threads else threads
    started = time.perf_counter()
    loss_sum, correct, seen = 0.0, 0, 0
    bar = _progress(n, f"epoch {epoch}/{config.epochs}", progress)
    for i, (rows, labels) in enumerate(loader):
        x, y = train_data.prepare(rows.data, augment_rng), labels.data
        loss, logits = step(x, y)
        value = loss.item()
        if not math.isfinite(value):
            bar.close()
            raise TrainingError(
                f"the training loss became {value} at epoch {epoch}, step {i + 1} (lr "
                f"{optimizer.lr:g}); nothing of this epoch was saved. Lower --lr, or run with "
                f"--detect-anomaly to find the op that produced it")
        if scheduler is not None:
            scheduler.step()
        threads.step()
        loss_sum += value * len(y)
        correct += int((logits.data.argmax(axis=1) == y).sum())
        seen += len(y)
        bar.update(len(y))
        if i % 20 == 0 or seen == n:
            bar.set_postfix_str(f"loss {loss_sum / seen:.4f}, accuracy {correct / seen:.2%}")
    bar.close()
    if own_threads:
        threads.close()
    return loss_sum / seen, correct / seen, time.perf_counter() - started


def accuracy(model, inputs, labels):
    return float((predict_logits(model, inputs).argmax(axis=1) == labels).mean())


def evaluate(model, inputs, labels):
    """(mean cross-entropy, accuracy) of the model on a labelled set."""
    logits = predict_logits(model, inputs)
    loss = nn.cross_entropy(Tensor.from_numpy(logits), labels).item()
    return loss, float((logits.argmax(axis=1) == labels).mean())


def train(config, log=print, progress=True, profiler=None):
    """Train, checkpointing after every epoch; write metrics, plots and model.npz to
    config.out. Returns the metrics dict. With `profiler` (a profiler.Profile), the training
    steps, and only they, are profiled into it."""
    check_memory(config, config.subset or 60_000)
    fix_threads(config.threads)
    if config.resume and config.data_dir is None:
        config.data_dir = stored_data_dir(_checkpoint_path(config.out))
    ds = data.load(config.dataset, config.data_dir, progress=progress)
    train_images, train_labels = ds.train_images, ds.train_labels.astype(np.int64)
    test_images, test_labels = ds.test_images, ds.test_labels.astype(np.int64)
    if config.subset:
        train_images, train_labels = train_images[:config.subset], train_labels[:config.subset]
        test_images, test_labels = test_images[:config.subset], test_labels[:config.subset]
    train_data = TrainingData(train_images, train_labels, ds.info, config.augment,
                              config.elastic, config.flip)
    x_test = ds.normalized(test_images)

    manual_seed(config.seed)
    model = make_model(config)
    optimizer = make_optimizer(config, model.parameters())
    _prepare_out(config)
    start_epoch, history, elapsed = 1, [], 0.0
    if config.resume:
        start_epoch, history, elapsed = load_checkpoint(config.out, model, optimizer, config)
        log(f"resumed from epoch {start_epoch - 1} in {_checkpoint_path(config.out)}")

    saved = start_epoch - 1
    threads = LoadAwareThreads()
    step = training_step_for(model, optimizer, config)
    try:
        for epoch in range(start_epoch, config.epochs + 1):
            reduced = threads.reduced_steps
            with profile(into=profiler) if profiler is not None else contextlib.nullcontext():
                loss, train_accuracy, seconds = train_epoch(model, optimizer, config, epoch,
                                                            train_data, progress,
                                                            threads=threads, step=step)
            if profiler is not None:
                profiler.steps += math.ceil(len(train_data) / config.batch_size)
            elapsed += seconds
            test_loss, test_accuracy = evaluate(model, x_test, test_labels)
            busy = threads.reduced_steps - reduced
            history.append({"epoch": epoch, "train_loss": loss,
                            "train_accuracy": train_accuracy, "test_loss": test_loss,
                            "test_accuracy": test_accuracy, "seconds": seconds,
                            "steps_on_fewer_threads": busy})
            log(f"epoch {epoch:3d}  train loss {loss:.4f}  train acc {train_accuracy:.4f}"
                f"  test acc {test_accuracy:.4f}  {seconds:.1f}s" +
                (f"  (fewer BLAS threads for {busy} steps: other programs kept cores busy)"
                 if busy else ""))
            save_checkpoint(config.out, model, optimizer, config, epoch, history, elapsed)
            saved = epoch
    except KeyboardInterrupt:
        kept = (f"epoch {saved} is saved in {_checkpoint_path(config.out)}; run the same "
                f"command with --resume to continue" if saved else "no epoch was complete")
        raise Interrupted(f"interrupted during epoch {saved + 1}: {kept}") from None
    except OSError as error:                  # a full disk: the file is named, nothing is lost
        raise TrainingError(f"cannot write {error.filename}: {error.strerror}; "
                            f"{_kept(config, saved)}") from None
    finally:
        threads.close()
    try:
        return _finish(config, ds.info, model, x_test, test_images, test_labels, history,
                       elapsed, log)
    except OSError as error:
        raise TrainingError(f"training finished, but {error.filename} cannot be written: "
                            f"{error.strerror}; {_kept(config, saved)}") from None


def _kept(config, saved):
    """What a run that stops now keeps, and how to go on."""
    if not saved:
        return "no epoch was complete"
    return (f"epoch {saved} is still saved in {_checkpoint_path(config.out)} (files are "
            f"replaced whole); make room and run the same command with --resume")


_OUTPUTS = ("checkpoint.npz", "model.npz", "metrics.json", "curves.png", "confusion.png",
            "samples.png")


def _prepare_out(config):
    """The run folder: never silently overwritten. A new run needs an empty folder (or
    --force, which first removes the old run's files, so that a killed new run never leaves an
    old model beside its own checkpoint); --resume needs the checkpoint it continues."""
    out = config.out
    os.makedirs(out, exist_ok=True)
    for name in os.listdir(out):                     # left by a run killed mid-write
        if name.startswith(".tmp-") and name.endswith(".npz"):
            os.unlink(os.path.join(out, name))
    existing = [name for name in _OUTPUTS if os.path.exists(os.path.join(out, name))]
    if config.resume:
        if "checkpoint.npz" not in existing:
            raise ValueError(f"--resume: {out} holds no checkpoint.npz to continue; start a "
                             f"new run without --resume")
    elif existing and not config.force:
        raise ValueError(f"--out {out} already holds a run ({', '.join(existing)}); pass "
                         f"--resume to continue it, --force to replace it, or another --out")
    elif existing:
        for name in existing:
            os.unlink(os.path.join(out, name))


def _progress(total, desc, enabled):
    from .console import progress_bar
    return progress_bar(total, desc, "img", enabled, unit_scale=True)


def _finish(config, info, model, x_test, test_images, test_labels, history, elapsed, log):
    from . import report
    predictions = predict_logits(model, x_test).argmax(axis=1)
    accuracy = float((predictions == test_labels).mean())
    matrix = confusion_matrix(test_labels, predictions, len(info.classes))
    reached = [h for h in history if h["test_accuracy"] >= 0.98]
    seconds_to_98 = (sum(h["seconds"] for h in history[:history.index(reached[0]) + 1])
                     if reached else None)
    metrics = {"test_accuracy": accuracy, "train_seconds": elapsed,
               "seconds_to_98": seconds_to_98, "epochs": len(history),
               "config": asdict(config), "history": history,
               "confusion_matrix": matrix.tolist()}
    out = config.out
    with atomic_write(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    nn.save(model, os.path.join(out, "model.npz"),
            meta={"dataset": config.dataset, "arch": config.arch, "hidden": config.hidden,
                  "activation": config.activation, "cnn_kernel": config.cnn_kernel,
                  "dropout": config.dropout,
                  "data_dir": _absolute(config.data_dir)})
    network = models.describe(config.arch, config.hidden, config.activation,
                              config.cnn_kernel)
    dataset = report.DATASET_TITLES.get(info.name, info.name)
    report.curves(history, os.path.join(out, "curves.png"),
                  title=f"{dataset}, {network}, {config.optimizer}: "
                        f"test accuracy {accuracy * 100:.2f}% after {len(history)} "
                        f"epoch{'s' if len(history) != 1 else ''}")
    report.confusion(matrix, info.classes, os.path.join(out, "confusion.png"))
    # the first test images, then the first mistakes, so the grid always shows some errors
    mistakes = np.flatnonzero(predictions != test_labels)[:16]
    shown = np.concatenate([np.setdiff1d(np.arange(min(40, len(test_labels))), mistakes)
                            [:40 - len(mistakes)], mistakes])
    report.samples(test_images[shown], test_labels[shown], predictions[shown], info.classes,
                   os.path.join(out, "samples.png"))
    log("confusion matrix (rows: true class, columns: predicted):")
    log(format_confusion(matrix, info.classes))
    log(f"wrote metrics.json, model.npz, curves.png, confusion.png, samples.png to {out}")
    log(f"test accuracy: {accuracy * 100:.2f}% ({len(history)} epochs, {elapsed:.1f}s of training)")
    return metrics

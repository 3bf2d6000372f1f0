"""Training a network (MLP, LeNet-5 or CNN: models.py) on MNIST or Fashion-MNIST: the run
and its epoch loop. The run's options are options.Config; its pieces come from factories.py,
its checkpoints from checkpoints.py, what it writes at the end from results.py."""
import contextlib
import math
import os
import time

import numpy as np

from .. import nn
from ..data import DataLoader
from ..files import folder_lock, prepare_run_folder
from ..engine import Tensor, manual_seed
from ..jit import jit
from ..profiler import profile
from . import data, distill, private, selection
from .checkpoints import checkpoint_path, load_checkpoint, save_checkpoint, stored_data_dir
from .evaluation import evaluate
from .weights import WeightAverage, max_norm_, momentum_at
from .factories import make_model, make_optimizer, make_scheduler
from .memory import check_memory
from .results import finish
from .threads import LoadAwareThreads, fix_threads

class TrainingError(RuntimeError):
    """Training cannot go on: the loss diverged. The message says what was kept and what to
    do."""
    exit_code = 1


class Interrupted(TrainingError):
    """Ctrl-C: the last complete epoch is kept."""
    exit_code = 130


def _epoch_rng(seed, epoch, stream):
    """Independent, reproducible random streams per (seed, epoch): a resumed run draws exactly
    what an uninterrupted one would have drawn."""
    return np.random.default_rng([seed, epoch, stream])


class TrainingData:
    """Training images ready for batches: standardized once up front (`source`), or, with
    augmentation, kept as pixels in [0, 1] so each batch is moved first and standardized
    after (`prepare`)."""

    def __init__(self, images, labels, info, augment, elastic=0.0, flip=False, soft=None):
        self.labels, self.info, self.elastic, self.flip = labels, info, elastic, flip
        self.soft = soft                  # a teacher's soft targets, one row per image
        self.moves = augment or elastic > 0             # shifts and rotations
        self.augment = self.moves or flip
        self.source = data.to_unit(images) if self.augment else data.normalize(images, info)

    def __len__(self):
        return len(self.labels)

    def loader(self, batch_size, seed):
        """This epoch's batches of (source rows, labels), in an order drawn from `seed`."""
        arrays = (self.source, self.labels) + ((self.soft,) if self.soft is not None else ())
        return DataLoader(arrays, batch_size, shuffle=True, seed=seed)

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


def training_step_for(model, optimizer, config, plan=None):
    """The run's step function: made once per run, so that its recordings serve every epoch
    (a jit per epoch would record again, and keep the old recordings' arrays alive until the
    garbage collector finds their cycles). With a private.Plan, DP-SGD's step."""
    if plan is not None:
        return private.private_step(model, optimizer, plan, config.label_smoothing)
    if config.teacher is not None:
        return distill.distillation_step(model, optimizer, config)
    return training_step(model, optimizer, config.jit, config.jit_check, config.label_smoothing)


class StepHooks:
    """What happens between the updates: the momentum's rise before each step, the max-norm
    constraint and the weight average after it (weights.py)."""

    def __init__(self, model, optimizer, config, average=None):
        self.model, self.optimizer, self.config, self.average = model, optimizer, config, average

    def before(self, step, steps_per_epoch):
        c = self.config
        if c.momentum_start is not None:
            ramp = (c.momentum_epochs or max(1, c.epochs // 2)) * steps_per_epoch
            for group in self.optimizer.param_groups:
                group["momentum"] = momentum_at(step, ramp, c.momentum_start, c.momentum)

    def after(self):
        if self.config.max_norm is not None:
            max_norm_(self.model, self.config.max_norm)
        if self.average is not None:
            self.average.update()


def train_epoch(model, optimizer, config, epoch, train_data, progress=False, scheduler=None,
                threads=None, step=None, plan=None, hooks=None):
    """One pass over train_data in the epoch's seeded order, the learning rate set by
    `scheduler` (by default config's schedule, from this epoch's first step), the BLAS
    threads by `threads` (a threads.LoadAwareThreads; by default one for this epoch) and the
    updates by `step` (training_step_for; by default one for this epoch); with a private.Plan,
    its Poisson batches; `hooks` (StepHooks) run around each update. Returns (mean loss,
    accuracy, seconds)."""
    model.train()
    step = training_step_for(model, optimizer, config, plan) if step is None else step
    manual_seed([config.seed, epoch, 1])                           # dropout masks, noise
    augment_rng = _epoch_rng(config.seed, epoch, 2)
    n = len(train_data)
    if plan is None:
        loader = train_data.loader(config.batch_size, seed=[config.seed, epoch, 0])
        steps_per_epoch = len(loader)
    else:
        loader = ((train_data.source[i], train_data.labels[i])
                  for i in plan.batches(_epoch_rng(config.seed, epoch, 0)))
        steps_per_epoch = n = plan.steps_per_epoch
    if scheduler is None:
        scheduler = make_scheduler(config, optimizer, steps_per_epoch * config.epochs,
                                   last_step=(epoch - 1) * steps_per_epoch - 1)
    own_threads = threads is None
    threads = LoadAwareThreads() if own_threads else threads
    started = time.perf_counter()
    loss_sum, correct, seen = 0.0, 0, 0
    bar = _progress(n, f"epoch {epoch}/{config.epochs}", progress)
    for i, (rows, labels, *soft) in enumerate(loader):
        if plan is None:                          # the loader's tensors
            rows, labels, soft = rows.data, labels.data, [t.data for t in soft]
        x, y = train_data.prepare(rows, augment_rng), labels
        if hooks is not None:
            hooks.before((epoch - 1) * steps_per_epoch + i, steps_per_epoch)
        loss, logits = step(x, y, *soft)
        if hooks is not None:
            hooks.after()
        if loss is None:                          # an empty Poisson batch: its noise only
            if scheduler is not None:
                scheduler.step()
            bar.update(1)
            continue
        value = loss.item()
        if not math.isfinite(value):
            bar.close()
            raise TrainingError(
                f"the training loss became {value} at epoch {epoch}, step {i + 1} (lr "
                f"{optimizer.lr:g}); nothing of this epoch was saved. {_likely_cause(config)}, "
                f"or run with --detect-anomaly to find the op that produced it")
        if scheduler is not None:
            scheduler.step()
        threads.step()
        loss_sum += value * len(y)
        correct += int((logits.data.argmax(axis=1) == y).sum())
        seen += len(y)
        bar.update(len(y) if plan is None else 1)          # a private epoch counts its steps
        if i % 20 == 0 or seen == n:
            bar.set_postfix_str(f"loss {loss_sum / seen:.4f}, accuracy {correct / seen:.2%}")
    bar.close()
    if own_threads:
        threads.close()
    seen = max(seen, 1)
    return loss_sum / seen, correct / seen, time.perf_counter() - started


def train(config, log=print, progress=True, profiler=None):
    """Train, checkpointing after every epoch; write metrics, plots and model.npz to
    config.out. Returns the metrics dict. With `profiler` (a profiler.Profile), the training
    steps, and only they, are profiled into it. The folder is held for this run alone
    (files.folder_lock): a second run into it is refused while this one runs."""
    if config.resume and not os.path.isfile(checkpoint_path(config.out)):
        raise ValueError(f"--resume: {config.out} holds no checkpoint.npz to continue; start a "
                         f"new run without --resume")          # before anything is made
    private.check(config)
    distill.check(config)
    _check_recipe_options(config)
    check_memory(config)                    # before anything is made
    with folder_lock(config.out, "tinygrad-mnist train"):
        return _train(config, log, progress, profiler)


def _train(config, log, progress, profiler):
    fix_threads(config.threads)
    if config.resume and config.data_dir is None:
        config.data_dir = stored_data_dir(checkpoint_path(config.out), missing_ok=False,
                                          otherwise="--data-dir '' for the download cache")
    ds = data.load(config.dataset, config.data_dir, progress=progress)
    train_images, train_labels = ds.train_images, ds.train_labels.astype(np.int64)
    test_images, test_labels = ds.test_images, ds.test_labels.astype(np.int64)
    if config.subset:
        train_images, train_labels = train_images[:config.subset], train_labels[:config.subset]
        test_images, test_labels = test_images[:config.subset], test_labels[:config.subset]
    private.check(config, len(train_labels))
    selecting = 0.0
    if config.select_fraction is not None:
        kept, selecting = selection.select(config, ds.normalized(train_images), train_labels,
                                           log)
        train_images, train_labels = train_images[kept], train_labels[kept]
    soft = None
    if config.teacher is not None:
        soft, _ = distill.prepare(config, ds.normalized(train_images), log)
    train_data = TrainingData(train_images, train_labels, ds.info, config.augment,
                              config.elastic, config.flip, soft)
    x_test = ds.normalized(test_images)
    tta_fill = float(ds.normalized(np.zeros((1, 1), np.uint8))[0, 0]) if config.tta else None

    manual_seed(config.seed)
    model = make_model(config)
    optimizer = make_optimizer(config, model.parameters())
    average = WeightAverage(model, config.ema) if config.ema is not None else None
    hooks = StepHooks(model, optimizer, config, average)
    prepare_run_folder(config.out, _OUTPUTS, config.resume, config.force)
    start_epoch, history, elapsed = 1, [], selecting
    if config.resume:
        start_epoch, history, elapsed = load_checkpoint(config.out, model, optimizer, config,
                                                        average)
        log(f"resumed from epoch {start_epoch - 1} in {checkpoint_path(config.out)}")

    saved = start_epoch - 1
    threads = LoadAwareThreads()
    plan = None
    if config.dp:
        kept = [h["noise_multiplier"] for h in history if "noise_multiplier" in h]
        plan = private.Plan(config, len(train_data), kept[-1] if kept else None)
        log(f"private training: noise multiplier {plan.noise_multiplier:.4f}, clipping to "
            f"{config.max_grad_norm:g}, sampling rate {plan.sample_rate:.5f} "
            f"({plan.steps_per_epoch} steps an epoch), delta {config.delta:g}")
        if config.epsilon is not None and plan.epsilon(config.epochs) > config.epsilon * 1.001:
            log(f"note: the noise was chosen for the run's first {history[-1]['epoch']} "
                f"epochs; {config.epochs} epochs spend epsilon "
                f"{plan.epsilon(config.epochs):.3f}, over --epsilon {config.epsilon:g}")
    step = training_step_for(model, optimizer, config, plan)
    try:
        for epoch in range(start_epoch, config.epochs + 1):
            reduced = threads.reduced_steps
            with profile(into=profiler) if profiler is not None else contextlib.nullcontext():
                loss, train_accuracy, seconds = train_epoch(model, optimizer, config, epoch,
                                                            train_data, progress,
                                                            threads=threads, step=step,
                                                            plan=plan, hooks=hooks)
            if profiler is not None:
                profiler.steps += math.ceil(len(train_data) / config.batch_size)
            elapsed += seconds
            if average is not None:               # the average is what the run evaluates
                average.swapped_in()
            # the plain model each epoch; --tta's averaged views at the end (finish): they
            # cost five or ten passes over the test set
            test_loss, test_accuracy = evaluate(model, x_test, test_labels)
            if average is not None:
                average.swapped_out()
            busy = threads.reduced_steps - reduced
            history.append({"epoch": epoch, "train_loss": loss,
                            "train_accuracy": train_accuracy, "test_loss": test_loss,
                            "test_accuracy": test_accuracy, "seconds": seconds,
                            "steps_on_fewer_threads": busy})
            if plan is not None:
                history[-1].update(epsilon=plan.epsilon(epoch), delta=config.delta,
                                   noise_multiplier=plan.noise_multiplier)
            log(f"epoch {epoch:3d}  train loss {loss:.4f}  train acc {train_accuracy:.4f}"
                f"  test acc {test_accuracy:.4f}  {seconds:.1f}s" +
                (f"  epsilon {history[-1]['epsilon']:.3f}" if plan is not None else "") +
                (f"  (fewer BLAS threads for {busy} step{'s' * (busy != 1)}: other programs kept "
                 f"cores busy)"
                 if busy else ""))
            save_checkpoint(config.out, model, optimizer, config, epoch, history, elapsed,
                            average.state() if average is not None else None)
            saved = epoch
    except KeyboardInterrupt:
        kept = (f"epoch {saved} is saved in {checkpoint_path(config.out)}; run the same "
                f"command with --resume to continue" if saved else "no epoch was complete")
        raise Interrupted(f"interrupted during epoch {saved + 1}: {kept}") from None
    except OSError as error:                  # a full disk: the file is named, nothing is lost
        raise TrainingError(f"cannot write {error.filename}: {error.strerror}; "
                            f"{_kept(config, saved)}") from None
    finally:
        threads.close()
    if average is not None:
        average.swapped_in()                  # the model saved is the average
    try:
        metrics = finish(config, ds.info, model, x_test, test_images, test_labels, history,
                         elapsed, log, tta_fill, config.flip)
    except KeyboardInterrupt:
        done = "its one epoch is" if saved == 1 else f"all {saved} epochs are"
        raise Interrupted(f"interrupted while the final files were written: {done} "
                          f"saved in {checkpoint_path(config.out)}; run the same "
                          f"command with --resume to write the model, metrics and plots "
                          f"without training again") from None
    except OSError as error:
        raise TrainingError(f"training finished, but {error.filename} cannot be written: "
                            f"{error.strerror}; {_kept(config, saved)}") from None
    hint = _chance_hint(config, metrics["test_accuracy"], len(ds.info.classes))
    if hint:
        log(hint)
    return metrics


def _check_recipe_options(config):
    """The records' options, refused by name where they cannot apply."""
    if config.momentum_start is not None and config.optimizer not in ("momentum", "nesterov"):
        raise ValueError(f"--momentum-start is an option of --optimizer momentum and nesterov, "
                         f"not of {config.optimizer}")
    if config.momentum_epochs is not None and config.momentum_start is None:
        raise ValueError("--momentum-epochs is an option of --momentum-start")
    if config.select_fraction is not None and config.dp:
        raise ValueError("--select-fraction with --dp: the proxy model reads every training "
                         "image without privacy; train without one of them")


def _likely_cause(config):
    """What to change when the loss diverges: the weight decay when each step's decay alone
    flips or blows up the weights (lr * weight decay >= 1), else the learning rate."""
    decay = config.lr * config.weight_decay
    if decay >= 1 or config.weight_decay >= 10:
        return (f"--weight-decay {config.weight_decay:g} is far too strong (each step scales "
                f"the weights by 1 - lr * decay = {1 - decay:g}): lower --weight-decay "
                f"(5e-4 is common)")
    return f"Lower --lr (now {config.lr:g} with --optimizer {config.optimizer})"


def _chance_hint(config, accuracy, classes):
    """A run that ends near chance without a NaN: say so where the number is shown."""
    if accuracy >= 1.5 / classes:
        return None
    return (f"warning: {accuracy:.2%} is chance level for {classes} classes: the network did "
            f"not learn. {_likely_cause(config)}, or try another optimizer (the defaults of "
            f"each --arch train well: tinygrad-mnist train --help)")


def _kept(config, saved):
    """What a run that stops now keeps, and how to go on."""
    if not saved:
        return "no epoch was complete"
    return (f"epoch {saved} is still saved in {checkpoint_path(config.out)} (files are "
            f"replaced whole); make room and run the same command with --resume")


_OUTPUTS = ("checkpoint.npz", "model.npz", "metrics.json", "curves.png", "confusion.png",
            "samples.png")


def _progress(total, desc, enabled):
    from .console import progress_bar
    return progress_bar(total, desc, "img", enabled, unit_scale=True)



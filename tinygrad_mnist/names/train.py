"""Training a character model of names: makemore's recipe by default (AdamW at 5e-4, weight
decay 0.01, betas (0.9, 0.99), batches of 32 names drawn at random; optionally a warmup and a
cosine schedule, and dropout in the transformer), the test loss in nats
per character every `eval_every` steps, a checkpoint written whole at each of them (so
--resume continues a killed run), and at the end the model, metrics, the loss curves and
sampled names, in the same run folder conventions as the image trainer."""
import json
import math
import os
import time
from dataclasses import asdict, dataclass, fields

import numpy as np

from .. import nn, optim
from ..engine import Tensor, manual_seed, no_grad
from ..files import atomic_write, folder_lock, prepare_run_folder
from ..jit import jit
from ..mnist.console import progress_bar
from ..mnist.threads import fix_threads
from . import data, models

OUTPUTS = ("checkpoint.npz", "model.npz", "metrics.json", "curves.png", "samples.txt")


@dataclass
class NamesConfig:
    arch: str = "transformer"
    data_dir: str = None
    out: str = None
    seed: int = 3407
    max_steps: int = 5000
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.01
    eval_every: int = 500
    dropout: float = 0.0
    hidden: int = 64                   # the RNN/GRU/LSTM state, the MLP's hidden layer
    lr_schedule: str = "constant"      # or "cosine": down to lr / 10 at max_steps
    warmup: int = 0                    # steps of a linear rise to lr first
    samples: int = 10
    resume: bool = False
    force: bool = False
    threads: int = None
    jit: bool = True

    def __post_init__(self):
        if self.out is None:
            self.out = os.path.join("runs", f"names-{self.arch}")

    def fingerprint(self):
        """What must match for --resume to continue a run instead of starting another."""
        return {k: v for k, v in asdict(self).items()
                if k in ("arch", "seed", "batch_size", "lr", "weight_decay", "dropout",
                         "hidden", "lr_schedule", "warmup")}


def learning_rate(config, step):
    """The rate of step `step` (0-based): a linear warmup over `warmup` steps, then constant,
    or a cosine from lr down to lr / 10 at max_steps. From the step alone, so a resumed run
    continues the same schedule."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    if config.lr_schedule == "constant":
        return config.lr
    span = max(config.max_steps - config.warmup, 1)
    done = min((step - config.warmup) / span, 1.0)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * done)))


def _loss(model, x, y):
    logits = model(Tensor(x))
    return nn.cross_entropy(logits.transpose((0, 2, 1)), y, ignore_index=data.IGNORE)


def evaluate(model, x, y, batch=1000):
    """The mean loss per character (nats) over every name of (x, y)."""
    model.eval()
    total, count = 0.0, 0
    with no_grad():
        for start in range(0, len(x), batch):
            xb, yb = x[start:start + batch], y[start:start + batch]
            chars = int((yb != data.IGNORE).sum())
            total += _loss(model, xb, yb).item() * chars
            count += chars
    model.train()
    return total / count


def _save_checkpoint(config, model, optimizer, step, history, seconds):
    arrays = {f"model.{k}": v for k, v in model.state_dict().items()}
    arrays.update({f"optim.{k}": v for k, v in optimizer.state_dict().items()})
    arrays[nn.META_KEY] = np.array(json.dumps({"step": step, "history": history,
                                               "seconds": seconds,
                                               "config": config.fingerprint()}))
    nn.save_arrays(arrays, os.path.join(config.out, "checkpoint.npz"))


def _load_checkpoint(config, model, optimizer):
    path = os.path.join(config.out, "checkpoint.npz")
    arrays = nn.load_arrays(path)
    meta = json.loads(str(arrays.pop(nn.META_KEY)))
    defaults = {f.name: f.default for f in fields(NamesConfig)}     # options added since
    stored = {k: meta["config"].get(k, defaults[k]) for k in config.fingerprint()}
    if stored != config.fingerprint():
        changed = sorted(k for k in stored if stored[k] != config.fingerprint()[k])
        raise ValueError(f"--resume: the checkpoint in {config.out} was made with other "
                         f"settings ({', '.join(changed)}); use the same options or another --out")
    model.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("model.")})
    optimizer.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("optim.")})
    return meta["step"], meta["history"], meta["seconds"]


def train_names(config, log=print, progress=True):
    """Train; returns the metrics dict (test loss per evaluation, samples, time)."""
    if config.resume and not os.path.isfile(os.path.join(config.out, "checkpoint.npz")):
        raise ValueError(f"--resume: {config.out} holds no checkpoint.npz to continue; start a "
                         f"new run without --resume")
    if config.data_dir is None:
        raise ValueError("names: pass --data-dir with the folder holding names.txt (nothing is "
                         "downloaded)")
    names = data.read_names(config.data_dir)
    vocab = data.Vocabulary(names)
    train_names_, test_names = data.split(names)
    x_train, y_train = vocab.encode(train_names_)
    x_test, y_test = vocab.encode(test_names)
    fix_threads(config.threads)
    with folder_lock(config.out, "tinygrad-mnist names"):
        prepare_run_folder(config.out, OUTPUTS, config.resume, config.force)
        manual_seed(config.seed)
        model = models.build(config.arch, vocab.size, vocab.block, config.dropout,
                             config.hidden)
        optimizer = optim.AdamW(model.parameters(), lr=config.lr, betas=(0.9, 0.99), eps=1e-8,
                                weight_decay=config.weight_decay)
        step, history, seconds = 0, [], 0.0
        if config.resume:
            step, history, seconds = _load_checkpoint(config, model, optimizer)
            log(f"resumed at step {step} from {config.out}/checkpoint.npz")
        log(f"names: {config.arch}, {sum(p.size for p in model.parameters()):,} parameters, "
            f"{len(train_names_):,} training and {len(test_names):,} test names")

        def train_step(x, y):
            optimizer.zero_grad()
            loss = _loss(model, x, y)
            loss.backward()
            optimizer.step()
            return loss.detach()
        run = jit(train_step) if config.jit else train_step
        bar = progress_bar(config.max_steps, "names", "step", progress)
        bar.update(step)
        running = []
        try:
            while step < config.max_steps:
                rows = np.random.default_rng([config.seed, step]).integers(
                    0, len(x_train), size=config.batch_size)      # with replacement
                optimizer.lr = learning_rate(config, step)
                started = time.perf_counter()
                loss = run(x_train[rows], y_train[rows]).item()
                seconds += time.perf_counter() - started
                if not math.isfinite(loss):
                    raise ValueError(f"names: the training loss became {loss} at step "
                                     f"{step + 1}; lower --lr")
                running.append(loss)
                step += 1
                bar.update(1)
                if step % config.eval_every == 0 or step == config.max_steps:
                    test = evaluate(model, x_test, y_test)
                    history.append({"step": step, "train_loss": float(np.mean(running)),
                                    "test_loss": test, "seconds": seconds})
                    running = []
                    bar.write(f"step {step:6d}  train loss {history[-1]['train_loss']:.4f}  "
                              f"test loss {test:.4f}  {seconds:.1f}s") if progress else log(
                        f"step {step:6d}  train loss {history[-1]['train_loss']:.4f}  "
                        f"test loss {test:.4f}  {seconds:.1f}s")
                    _save_checkpoint(config, model, optimizer, step, history, seconds)
        except KeyboardInterrupt:
            saved = history[-1]["step"] if history else 0
            raise KeyboardInterrupt(f"step {saved} is saved in {config.out}/checkpoint.npz; run "
                                    f"the same command with --resume to continue") from None
        finally:
            bar.close()
        return _finish(config, model, vocab, history, seconds, log)


def _finish(config, model, vocab, history, seconds, log):
    from ..mnist import report
    model.eval()
    samples = models.sample(model, vocab, config.samples, seed=config.seed)
    best = min(history, key=lambda h: h["test_loss"]) if history else None
    metrics = {"test_loss": history[-1]["test_loss"] if history else None,
               "best_test_loss": best and best["test_loss"],
               "best_step": best and best["step"], "train_seconds": seconds,
               "parameters": sum(p.size for p in model.parameters()),
               "config": asdict(config), "history": history, "samples": samples}
    out = config.out
    with atomic_write(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    with atomic_write(os.path.join(out, "samples.txt"), "w") as f:
        f.write("\n".join(samples) + "\n")
    nn.save(model, os.path.join(out, "model.npz"), meta={"arch": config.arch,
                                                          "hidden": config.hidden})
    report.loss_curves(history, os.path.join(out, "curves.png"),
                       f"names, {config.arch}: test loss {metrics['test_loss']:.4f} nats/char")
    log("samples: " + ", ".join(samples))
    log(f"test loss {metrics['test_loss']:.4f} (best {metrics['best_test_loss']:.4f} at step "
        f"{metrics['best_step']}); wrote {', '.join(OUTPUTS[1:])} to {out}")
    return metrics

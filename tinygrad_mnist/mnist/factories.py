"""Building a run's pieces from its Config: the model, the optimizer and the learning-rate
schedule."""
import math

from .. import optim
from ..engine import Tensor
from ..optim import lr_scheduler
from . import models
from .options import OPTIMIZERS, SCHEDULES


def make_model(config):
    return models.build(config.arch, config.hidden, config.activation, config.dropout,
                        config.input_dropout, config.cnn_kernel)


def parameter_count(config):
    """The model's parameter count, without building an MLP that might not fit."""
    if config.arch == "mlp":
        sizes = models.layer_sizes(config.hidden)
        return sum(n_in * n_out + n_out for n_in, n_out in zip(sizes, sizes[1:]))
    return sum(p.size for p in make_model(config).parameters())


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

"""Knowledge distillation (Hinton, Vinyals and Dean 2015): the student learns from a teacher's
(or an ensemble's) probabilities at a temperature T as well as from the labels.

    soft  = mean over teachers of softmax(teacher logits / T)        (once, before training)
    loss  = (1 - A) CE(student logits, labels)
            + A T^2 CE(soft, softmax(student logits / T))             (the soft targets' term)

The T^2 keeps the soft term's gradient, A T (softmax(z / T) - soft) / batch, of the size of
the hard term's as T changes (the paper's advice). The soft targets are computed on the
training images as they are (no augmentation), once.
"""
import time

import numpy as np

from .. import nn
from ..engine import Tensor
from ..jit import jit
from .evaluation import predict_logits


def soft_targets(teachers, x, temperature):
    """(N, C) float32: the teachers' probabilities at `temperature`, averaged."""
    total = 0
    for teacher in teachers:
        z = predict_logits(teacher, x).astype(np.float64) / temperature
        e = np.exp(z - z.max(axis=1, keepdims=True))
        total = total + e / e.sum(axis=1, keepdims=True)
    return (total / len(teachers)).astype(np.float32)


def distillation_loss(logits, labels, soft, temperature, weight):
    """The mean over the batch of (1 - A) CE(labels) + A T^2 CE(soft targets, student at T)."""
    hard = nn.cross_entropy(logits, labels)
    matched = (logits / temperature).log_softmax(axis=1)
    soft_term = -(soft * matched).sum(axis=1).mean()
    return hard * (1 - weight) + soft_term * (weight * temperature * temperature)


def load_teachers(config):
    """The --teacher models, each checked to be trained on the run's dataset."""
    from .saved import load_model
    teachers = []
    for path in config.teacher.split(","):
        model, meta = load_model(path.strip())
        if meta.get("dataset", "mnist") != config.dataset:
            raise ValueError(f"--teacher {path}: trained on {meta.get('dataset', 'mnist')}, "
                             f"not on --dataset {config.dataset}")
        teachers.append(model)
    return teachers


def check(config):
    if config.teacher is None:
        return
    if config.augment or config.elastic or config.flip:
        raise ValueError("--teacher: the soft targets are computed once on the training "
                         "images as they are; drop --augment, --elastic and --flip")
    if config.dp:
        raise ValueError("--teacher with --dp: the teachers' soft targets are computed from "
                         "every training image without privacy; train without --dp")


def prepare(config, x_train, log):
    """The soft targets of the training images (N, C), and the seconds they took."""
    started = time.perf_counter()
    teachers = load_teachers(config)
    soft = soft_targets(teachers, x_train, config.temperature)
    seconds = time.perf_counter() - started
    log(f"distilling from {len(teachers)} teacher{'s' * (len(teachers) > 1)} at temperature "
        f"{config.temperature:g} (weight {config.distill_weight:g}); their soft targets took "
        f"{seconds:.1f}s")
    return soft, seconds


def distillation_step(model, optimizer, config):
    """step(x, y, soft) -> (loss, logits): one update against the labels and soft targets."""
    def step(x, y, soft):
        optimizer.zero_grad()
        logits = model(Tensor.from_numpy(x))
        loss = distillation_loss(logits, y, Tensor.from_numpy(soft), config.temperature,
                                 config.distill_weight)
        loss.backward()
        optimizer.step()
        return loss, logits
    return jit(step, check=config.jit_check) if config.jit else step

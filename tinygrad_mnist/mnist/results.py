"""What a finished run writes: metrics.json, model.npz, the curves, the confusion matrix and
sample predictions."""
import json
import os
from dataclasses import asdict

import numpy as np

from .. import nn
from ..files import atomic_write
from . import models
from .checkpoints import absolute
from .evaluation import confusion_matrix, format_confusion, predict_logits, predict_logits_tta
from .console import counted

HEADLINE_ACCURACY = 0.98     # metrics.json's seconds_to_98: the training time to this accuracy


def finish(config, info, model, x_test, test_images, test_labels, history, elapsed, log,
           tta_fill=None, mirror=False):
    """Write the run's results into config.out and log them; returns the metrics. With
    tta_fill, the predictions are test-time augmented (evaluation.predict_logits_tta, with its
    mirror)."""
    from . import report
    predictions = (predict_logits(model, x_test) if tta_fill is None else
                   predict_logits_tta(model, x_test, tta_fill, mirror)).argmax(axis=1)
    accuracy = float((predictions == test_labels).mean())
    matrix = confusion_matrix(test_labels, predictions, len(info.classes))
    reached = [h for h in history if h["test_accuracy"] >= HEADLINE_ACCURACY]
    seconds_to_98 = (sum(h["seconds"] for h in history[:history.index(reached[0]) + 1])
                     if reached else None)
    metrics = {"test_accuracy": accuracy, "train_seconds": elapsed,
               "seconds_to_98": seconds_to_98, "epochs": len(history),
               "config": asdict(config), "history": history,
               "confusion_matrix": matrix.tolist()}
    if history and "epsilon" in history[-1]:          # --dp: what the run spent
        metrics.update({k: history[-1][k] for k in ("epsilon", "delta", "noise_multiplier")})
    out = config.out
    with atomic_write(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    nn.save(model, os.path.join(out, "model.npz"),
            meta={"dataset": config.dataset, "arch": config.arch, "hidden": config.hidden,
                  "activation": config.activation, "cnn_kernel": config.cnn_kernel,
                  "dropout": config.dropout,
                  "data_dir": absolute(config.data_dir)})
    network = models.describe(config.arch, config.hidden, config.activation,
                              config.cnn_kernel)
    dataset = report.DATASET_TITLES.get(info.name, info.name)
    private = (f", private (epsilon {metrics['epsilon']:.2f}, delta {metrics['delta']:g})"
               if "epsilon" in metrics else "")
    report.curves(history, os.path.join(out, "curves.png"),
                  title=f"{dataset}, {network}, {config.optimizer}{private}: "
                        f"test accuracy {accuracy * 100:.2f}% after {len(history)} "
                        f"epoch{'s' if len(history) != 1 else ''}"
                        + ("\nwith test-time augmentation (the curves: without)"
                           if tta_fill is not None else ""))
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
    views = (f" with test-time augmentation ({history[-1]['test_accuracy'] * 100:.2f}% "
             f"without)" if tta_fill is not None and history else "")
    spent = (f"; private: epsilon {metrics['epsilon']:.3f} at delta {metrics['delta']:g}"
             if "epsilon" in metrics else "")
    log(f"test accuracy: {accuracy * 100:.2f}%{views} ({counted(len(history), 'epoch')}, "
        f"{elapsed:.1f}s of training){spent}")
    return metrics

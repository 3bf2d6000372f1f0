"""Private training: per-example gradient norms at the cost of one gradient, DP-SGD with
ghost clipping, and a privacy accountant.

    norms.py       each example's gradient norm (the ops' example_norms rules; vmap(grad)
                   where none applies)
    dpsgd.py       DPOptimizer (clip, sum, noise, average, step) and Poisson batches
    accountant.py  epsilon for (noise, sampling rate, steps, delta), the noise for an
                   epsilon, and a run's ledger (dp-accounting, an optional extra)
    validate.py    a report of the norms per layer against one backward pass per example
"""
from .accountant import epsilon, ledger, noise_multiplier_for
from .dpsgd import DPOptimizer, clip_factors, poisson_batches
from .norms import ExampleNorms, PrivacyWarning, example_norms
from .validate import looped_norms, validation_report

__all__ = ["example_norms", "ExampleNorms", "PrivacyWarning", "DPOptimizer", "clip_factors",
           "poisson_batches", "epsilon", "noise_multiplier_for", "ledger", "validation_report",
           "looped_norms"]

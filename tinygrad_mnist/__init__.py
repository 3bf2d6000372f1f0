"""tinygrad_mnist: a small autograd framework over NumPy, and an MNIST trainer built on it."""
from .tensor import (AnomalyError, Tensor, detect_anomaly, grad, is_grad_enabled, manual_seed,
                     no_grad)
from .functional import hessian, hvp
from .profiler import profile
from .jit import JitWarning, jit
from . import nn, optim

__version__ = "0.1.0"
__all__ = ["Tensor", "no_grad", "is_grad_enabled", "manual_seed", "detect_anomaly",
           "AnomalyError", "grad", "hessian", "hvp", "profile", "jit", "JitWarning", "nn", "optim", "__version__"]

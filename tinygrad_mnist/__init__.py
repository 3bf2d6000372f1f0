"""tinygrad_mnist: a small autograd framework over NumPy, and an MNIST trainer built on it."""
from .tensor import (AnomalyError, Tensor, detect_anomaly, grad, is_grad_enabled, manual_seed,
                     no_grad)
from .functional import hessian, hvp
from .profiler import profile
from .jit import JitWarning, jit
from .blas import get_num_threads, set_num_threads
from . import nn, optim

__version__ = "0.1.0"
__all__ = ["Tensor", "no_grad", "is_grad_enabled", "manual_seed", "detect_anomaly",
           "AnomalyError", "grad", "hessian", "hvp", "profile", "jit", "JitWarning", "nn", "optim",
           "set_num_threads", "get_num_threads", "__version__"]

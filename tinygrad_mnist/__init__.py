"""tinygrad_mnist: a small autograd framework over NumPy, and an MNIST trainer built on it.

    engine/      Tensor, ops, the graph, grad/hessian, NumPy interop, Observer (NumPy only)
    jit, profiler, anomaly, viz, explorer, gradcheck, handcheck    tools: observers of the engine
    func/        forward mode (jvp) and function transforms: grad, vjp, jacrev, jacfwd, ...
    nn, optim/, data, files                                          the library around it
    mnist/                                                           the application
"""
from .engine import (Observer, Tensor, enable_grad, grad, hessian, hvp, is_grad_enabled,
                     manual_seed, no_grad, observe)
from .engine.kernels.blas import get_num_threads, set_num_threads
from .anomaly import AnomalyError, detect_anomaly
from .profiler import profile
from .jit import JitMismatchError, JitWarning, jit
from . import func, nn, optim

__version__ = "0.1.0"
__all__ = ["Tensor", "no_grad", "enable_grad", "is_grad_enabled", "manual_seed",
           "detect_anomaly", "AnomalyError", "grad", "hessian", "hvp", "profile", "jit",
           "JitWarning", "JitMismatchError", "Observer", "observe", "func", "nn", "optim", "set_num_threads",
           "get_num_threads", "__version__"]

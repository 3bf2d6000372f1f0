"""tinygrad_mnist: a small autograd framework over NumPy, and an MNIST trainer built on it."""
from .tensor import Tensor, no_grad, is_grad_enabled, manual_seed
from . import nn, optim

__version__ = "0.1.0"
__all__ = ["Tensor", "no_grad", "is_grad_enabled", "manual_seed", "nn", "optim", "__version__"]

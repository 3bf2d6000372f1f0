"""The engine: Tensor, the ops, the graph and its backward pass, gradients of gradients, NumPy's
functions on tensors, and the one seam (Observer) every tool uses. It imports only NumPy and
names no tool.

    mode.py          the thread-local mode (recording, observers) and the random generator
    arguments.py     axes, shapes and indices, checked once
    kernels/         array code chosen for speed (BLAS threads, im2col, pooling windows,
                     batch norm's layouts), each checked against a plain reference
    batching.py      what the ops' batching rules (vmap) share
    ops.py           one class per op: forward, backward, jvp and batching rule side by side
    conv.py norm.py  the convolution, pooling and batch-norm ops
    tensor.py        Tensor, and record(): the forward choke point every op passes
    graph.py         topo_order, sum_to_shape and the backward pass
    higher_order.py  grad(), hessian(), hvp()
    numpy_interop.py NumPy's functions on Tensors
"""
import warnings

from .graph import backward_plan, run_plan, sum_to_shape, topo_order
from .higher_order import grad, hessian, hvp
from .mode import (Observer, enable_grad, get_rng, is_grad_enabled, manual_seed, no_grad,
                   notify_module, observe, observers)
from .ops import Op
from .tensor import Tensor, freed_output

__all__ = ["Tensor", "Op", "grad", "hessian", "hvp", "no_grad", "enable_grad",
           "is_grad_enabled", "manual_seed", "get_rng", "Observer", "observe",
           "notify_module", "freed_output",
           "observers", "topo_order", "sum_to_shape", "backward_plan", "run_plan"]

# NumPy's warnings about inf and NaN (log(0), an overflow) are not repeated from inside the
# library, with its file and line: results show them, and detect_anomaly() finds the op that
# made them. Warnings raised in the user's own code are untouched.
warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"tinygrad_mnist(\.|$)")

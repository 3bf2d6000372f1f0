"""Function transforms, as torch.func and JAX: forward mode (jvp), reverse mode as functions
(grad, vjp), Jacobians both ways, the Hessian as forward over reverse, and calls of a module
with other parameters.

    from tinygrad_mnist import func
    out, tangent = func.jvp(f, (x,), (v,))          # f(x) and J v, in one forward pass
    g = func.grad(loss)(w, x, y)                    # the gradient with respect to w
"""
from .forward import jvp
from .transforms import functional_call, grad, hessian, jacfwd, jacrev, vjp

__all__ = ["jvp", "vjp", "grad", "jacrev", "jacfwd", "hessian", "functional_call"]

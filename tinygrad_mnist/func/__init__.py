"""Function transforms, as torch.func and JAX: forward mode (jvp), reverse mode as functions
(grad, vjp), Jacobians both ways, the Hessian as forward over reverse, and calls of a module
with other parameters.

    from tinygrad_mnist import func
    out, tangent = func.jvp(f, (x,), (v,))          # f(x) and J v, in one forward pass
    g = func.grad(loss)(w, x, y)                    # the gradient with respect to w
    per_example = func.vmap(func.grad(loss), in_axes=(None, 0, 0))(w, xs, ys)
"""
from .forward import jvp
from .transforms import functional_call, grad, hessian, jacfwd, jacrev, vjp
from .vmap import VmapError, vmap

__all__ = ["jvp", "vjp", "grad", "jacrev", "jacfwd", "hessian", "vmap", "VmapError",
           "functional_call"]

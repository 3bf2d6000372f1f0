"""Function transforms, as torch.func and JAX: forward mode (jvp), reverse mode as functions
(grad, vjp), Jacobians both ways, the Hessian as forward over reverse, and calls of a module
with other parameters.

    from tinygrad_mnist import func
    out, tangent = func.jvp(f, (x,), (v,))          # f(x) and J v, in one forward pass
    g = func.grad(loss)(w, x, y)                    # the gradient with respect to w
    per_example = func.vmap(func.grad(loss), in_axes=(None, 0, 0))(w, xs, ys)

Transforms nest in any order (grad of a jvp, a jvp of a jvp, vmap of grad differentiated
again, every transform inside vmap): a jvp whose primals an outer reverse pass tracks, or that
runs inside another jvp or a vmap, carries its tangents as tensors made by ops, which the outer
transform differentiates, carries its own tangents on, or batches. Arguments, outputs,
argnums, in_axes and out_axes may be nested tuples, lists and dicts.
"""
from .forward import jvp
from .transforms import functional_call, grad, hessian, jacfwd, jacrev, vjp
from .vmap import VmapError, vmap

__all__ = ["jvp", "vjp", "grad", "jacrev", "jacfwd", "hessian", "vmap", "VmapError",
           "functional_call"]

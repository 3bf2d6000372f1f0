"""Function transforms in JAX's style, built on the engine's reverse mode (grad) and on
forward mode (forward.py): grad, vjp, jacrev, jacfwd, hessian, functional_call."""
import numpy as np

from ..engine import Tensor, enable_grad, grad as _reverse
from . import forward, vmap as _vmap
from .trees import tracing, tree_leaves, tree_rebuild


def _argnums(argnums, n, name):
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    for a in nums:
        if not isinstance(a, int) or not -n <= a < n:
            raise ValueError(f"func.{name}: argnums {argnums!r} does not fit {n} arguments")
    return tuple(a % n for a in nums), isinstance(argnums, int)


def _tracked(name, x, i):
    """A tensor standing for argument i that gradients are taken with respect to: an op of x
    when an outer gradient differentiates through x (grad of grad), else a fresh leaf that
    carries x's tangent in a running jvp (forward over reverse)."""
    if not isinstance(x, Tensor) or x.dtype.kind != "f":
        got = f"dtype {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
        raise TypeError(f"func.{name}: argument {i} is differentiated and must be a "
                        f"floating-point Tensor, got {got}")
    if x.requires_grad:
        return x.reshape(x.shape)
    leaf = Tensor.from_numpy(x.data, requires_grad=True)
    forward.share_tangent(leaf, x)
    return leaf


def _nested(args):
    """Whether the gradients must be recorded: a jvp runs (forward over reverse) or an outer
    gradient differentiates through the arguments (reverse over reverse)."""
    return forward.active() or any(isinstance(a, Tensor) and a.requires_grad for a in args)


def _call(name, f, args, argnums):
    """f called with the arguments in argnums tracked (each a Tensor, or a dict, list or tuple
    of them: parameters by name). Returns (output, the tracked arguments, whether argnums was
    one int, whether gradients must be recorded)."""
    if tracing() is not None:
        raise NotImplementedError(f"vmap: func.{name} inside vmap has no batching; "
                                  f"func.grad does (per-example gradients)")
    args = list(args)
    nums, single = _argnums(argnums, len(args), name)
    create = _nested([t for a in args for t in tree_leaves(a)])
    for a in nums:
        args[a] = tree_rebuild(args[a], iter([_tracked(name, t, a) for t in tree_leaves(args[a])]))
    with enable_grad():
        out = f(*args)
    return out, [args[a] for a in nums], single, create


def _gradients(tracked, outputs, seeds, create):
    """The gradients of the outputs (with `seeds`) for each tracked argument, in its own
    structure; zeros where an output does not depend on it."""
    leaves = [t for arg in tracked for t in tree_leaves(arg)]
    live = [(o, s) for o, s in zip(outputs, seeds) if o.requires_grad]
    grads = (_reverse([o for o, _ in live], leaves, [s for _, s in live], retain_graph=True,
                      create_graph=create, allow_unused=True) if live else [None] * len(leaves))
    filled = iter(_zeros_for(leaves, grads))
    return [tree_rebuild(arg, filled) for arg in tracked]


def _zeros_for(xs, grads):
    return tuple(Tensor(np.zeros(x.shape, x.dtype), dtype=x.dtype) if g is None else g
                 for x, g in zip(xs, grads))


def grad(f, argnums=0, has_aux=False):
    """A function returning the gradient of scalar f with respect to argument `argnums` (a
    tuple of them for several, giving a tuple); with has_aux, f returns (value, aux) and the
    function returns (gradient, aux). JAX's jax.grad, torch.func.grad."""
    def gradient(*args):
        trace = tracing()
        if trace is not None:              # inside vmap: every example's gradient at once
            nums, single = _argnums(argnums, len(args), "grad")
            results, aux = _vmap.traced_grad(trace, f, args, nums, has_aux)
            result = results[0] if single else tuple(results)
            return (result, aux) if has_aux else result
        out, xs, single, create = _call("grad", f, args, argnums)
        aux = None
        if has_aux:
            if not (isinstance(out, tuple) and len(out) == 2):
                raise TypeError("func.grad: with has_aux=True, f must return (value, aux)")
            out, aux = out
        if not isinstance(out, Tensor) or out.size != 1:
            raise ValueError(f"func.grad: f must return a one-element Tensor, got "
                             f"{getattr(out, 'shape', type(out).__name__)}")
        grads = _gradients(xs, [out], [None], create)
        result = grads[0] if single else tuple(grads)
        return (result, aux) if has_aux else result
    return gradient


def vjp(f, *primals):
    """(f(*primals), vjp_fn): vjp_fn(cotangents) gives sum(cotangents * outputs)'s gradient
    with respect to every primal, a tuple (jax.vjp, torch.func.vjp)."""
    out, xs, _, create = _call("vjp", f, primals, tuple(range(len(primals))))
    outs = (out,) if isinstance(out, Tensor) else tuple(out)

    def vjp_fn(cotangents):
        cts = (cotangents,) if isinstance(cotangents, Tensor) else tuple(cotangents)
        if len(cts) != len(outs) or any(c.shape != o.shape for c, o in zip(cts, outs)):
            raise ValueError(f"func.vjp: cotangents of shapes {[c.shape for c in cts]} for "
                             f"outputs of shapes {[o.shape for o in outs]}")
        return tuple(_gradients(xs, outs, cts, create))
    return out, vjp_fn


def jacrev(f, argnums=0):
    """The Jacobian of f by reverse mode, one backward per output element: shape
    output.shape + input.shape (a tuple of them for a tuple of argnums)."""
    def jacobian(*args):
        out, xs, single, create = _call("jacrev", f, args, argnums)
        if not isinstance(out, Tensor) or not all(isinstance(x, Tensor) for x in xs):
            raise TypeError("func.jacrev: f must return one Tensor, and the arguments it is "
                            "differentiated by must be Tensors")
        rows = [[] for _ in xs]
        flat = np.eye(out.size, dtype=out.dtype)
        for k in range(out.size):
            seed = Tensor(flat[k].reshape(out.shape), dtype=out.dtype)
            for row, g in zip(rows, _gradients(xs, [out], [seed], create)):
                row.append(g)
        blocks = tuple(Tensor.stack(row).reshape(out.shape + x.shape) if out.size else
                       Tensor(np.zeros(out.shape + x.shape, out.dtype))
                       for row, x in zip(rows, xs))
        return blocks[0] if single else blocks
    return jacobian


def jacfwd(f, argnums=0):
    """The Jacobian of f by forward mode, one jvp per input element: shape
    output.shape + input.shape (a tuple of them for a tuple of argnums)."""
    def jacobian(*args):
        args = list(args)
        nums, single = _argnums(argnums, len(args), "jacfwd")
        blocks = []
        for a in nums:
            x = args[a]

            def of_x(value, a=a):
                return f(*args[:a], value, *args[a + 1:])
            columns = []
            basis = np.eye(x.size, dtype=x.dtype)
            out = None
            for j in range(x.size):
                out, tangent = forward.jvp(of_x, (x,), (Tensor(basis[j].reshape(x.shape),
                                                               dtype=x.dtype),))
                columns.append(tangent.data)
            if out is None:
                out = of_x(x)
            stacked = (np.stack(columns, axis=-1) if columns else
                       np.zeros(out.shape + (0,), out.dtype))
            blocks.append(Tensor(stacked.reshape(out.shape + x.shape), dtype=out.dtype))
        return blocks[0] if single else tuple(blocks)
    return jacobian


def hessian(f, argnums=0):
    """The Hessian of scalar f, forward over reverse: jacfwd(jacrev(f)). Shape x.shape +
    x.shape (engine.hessian is the same by reverse over reverse)."""
    return jacfwd(jacrev(f, argnums), argnums)


def functional_call(module, params, args, kwargs=None, tie_weights=True):
    """module(*args) with its parameters and buffers named in `params` (a dict as
    module.state_dict() names them, of Tensors) replaced for this call only, as
    torch.func.functional_call; the module is left as it was. With tie_weights (torch.func's
    default), a tensor the module holds in several places (decode.weight = encode.weight) is
    replaced at every one of them, whichever name the dict gives it."""
    args = args if isinstance(args, tuple) else (args,)
    replaced = {}                      # id(original tensor) -> (original, its replacement)
    for name, value in params.items():
        *path, attribute = name.split(".")
        owner = module
        try:
            for part in path:
                owner = owner[int(part)] if part.isdigit() else getattr(owner, part)
            original = getattr(owner, attribute)
        except (AttributeError, IndexError, TypeError):
            raise KeyError(f"func.functional_call: {type(module).__name__} has no parameter "
                           f"or buffer {name!r}") from None
        if not isinstance(value, Tensor) or (isinstance(original, Tensor)
                                             and value.shape != original.shape):
            raise ValueError(f"func.functional_call: {name} must be a Tensor of shape "
                             f"{getattr(original, 'shape', None)}, got "
                             f"{getattr(value, 'shape', type(value).__name__)}")
        if id(original) in replaced and replaced[id(original)][1] is not value:
            raise ValueError(f"func.functional_call: {name} is tied to another name in params "
                             f"that is given another tensor")
        replaced[id(original)] = (original, value)
    places = []                        # (owner, attribute, original): every use of each
    if tie_weights:
        for owner in module.modules():
            for attribute, held in list(vars(owner).items()):
                if isinstance(held, Tensor) and id(held) in replaced:
                    places.append((owner, attribute, held))
    else:
        for name in params:
            *path, attribute = name.split(".")
            owner = module
            for part in path:
                owner = owner[int(part)] if part.isdigit() else getattr(owner, part)
            places.append((owner, attribute, getattr(owner, attribute)))
    try:
        for owner, attribute, original in places:
            object.__setattr__(owner, attribute, replaced[id(original)][1])
        return module(*args, **(kwargs or {}))
    finally:
        for owner, attribute, original in places:
            object.__setattr__(owner, attribute, original)

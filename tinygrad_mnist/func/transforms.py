"""Function transforms in JAX's style, built on the engine's reverse mode (grad) and on
forward mode (forward.py): grad, vjp, jacrev, jacfwd, hessian, functional_call."""
import numpy as np

from ..engine import Tensor, enable_grad, grad as _reverse
from . import forward, vmap as _vmap
from .trees import tracing, tree_leaves, tree_rebuild


def _argnums(argnums, n, name):
    """(the argument positions, flat; argnums itself, whose structure the results take): an
    int, or tuples and lists of them, nested."""
    def flat(a):
        if isinstance(a, (tuple, list)):
            return [i for item in a for i in flat(item)]
        if isinstance(a, bool) or not isinstance(a, int) or not -n <= a < n:
            raise ValueError(f"func.{name}: argnums {argnums!r} does not fit {n} arguments "
                             f"(an int, or nested tuples of them)")
        return [a % n]
    return tuple(flat(argnums)), argnums


def _shaped(argnums, results):
    """results (one per flat argnum) in argnums' structure: one for an int, tuples for
    tuples."""
    results = iter(results)

    def build(a):
        return tuple(build(item) for item in a) if isinstance(a, (tuple, list)) else next(results)
    return build(argnums)


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
    leaf = Tensor.from_numpy(x._data, requires_grad=True)    # x's array: not a read of it
    forward.share_tangent(leaf, x)
    return leaf


def _nested(args):
    """Whether the gradients must be recorded: a jvp runs (forward over reverse) or an outer
    gradient differentiates through the arguments (reverse over reverse), or the jit records
    the call (a recorded backward is ops it replays)."""
    return (forward.active() or forward.jit_recording()
            or any(isinstance(a, Tensor) and a.requires_grad for a in args))


def _call(name, f, args, argnums):
    """f called with the arguments in argnums tracked (each a Tensor, or a dict, list or tuple
    of them: parameters by name). Returns (output, the tracked arguments, argnums' structure,
    whether gradients must be recorded)."""
    if tracing() is not None:
        raise NotImplementedError(f"vmap: func.{name} inside vmap has no batching; "
                                  f"func.grad does (per-example gradients)")
    args = list(args)
    nums, structure = _argnums(argnums, len(args), name)
    create = _nested([t for a in args for t in tree_leaves(a)])
    for a in nums:
        args[a] = tree_rebuild(args[a], iter([_tracked(name, t, a) for t in tree_leaves(args[a])]))
    with enable_grad():
        out = f(*args)
    return out, [args[a] for a in nums], structure, create


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
        if trace is not None and trace.in_grad:
            # a grad of a grad inside vmap: the inner one by forward mode (one jvp per input
            # element), whose recorded ops the outer, batched grad differentiates
            return jacfwd(f, argnums, has_aux=has_aux)(*args)
        if trace is not None:              # inside vmap: every example's gradient at once
            nums, structure = _argnums(argnums, len(args), "grad")
            results, aux = _vmap.traced_grad(trace, f, args, nums, has_aux)
            result = _shaped(structure, results)
            return (result, aux) if has_aux else result
        out, xs, structure, create = _call("grad", f, args, argnums)
        out, aux = _split_aux("grad", out, has_aux)
        if not isinstance(out, Tensor) or out.size != 1:
            raise ValueError(f"func.grad: f must return a one-element Tensor, got "
                             f"{getattr(out, 'shape', type(out).__name__)}")
        grads = _gradients(xs, [out], [None], create)
        result = _shaped(structure, grads)
        return (result, aux) if has_aux else result
    return gradient


def vjp(f, *primals, has_aux=False):
    """(f(*primals), vjp_fn): vjp_fn(cotangents) gives sum(cotangents * outputs)'s gradient
    with respect to every primal, a tuple (jax.vjp, torch.func.vjp). With has_aux, f returns
    (output, aux) and vjp returns (output, vjp_fn, aux)."""
    if tracing() is not None:          # inside vmap: each pull-back is a func.grad, batched
        out, aux = _split_aux("vjp", f(*primals), has_aux)
        outs = tuple(_output_leaves("vjp", out))

        def vjp_fn(cotangents):
            cts = tuple(tree_leaves(cotangents))
            if len(cts) != len(outs) or any(c.shape != o.shape for c, o in zip(cts, outs)):
                raise ValueError(f"func.vjp: cotangents of shapes {[c.shape for c in cts]} "
                                 f"for outputs of shapes {[o.shape for o in outs]}")

            def pulled(*p):
                given = tree_leaves(_split_aux("vjp", f(*p), has_aux)[0])
                return sum(((g * c).sum() for g, c in zip(given, cts)), Tensor(0.0, dtype=given[0].dtype))
            result = grad(pulled, argnums=tuple(range(len(primals))))(*primals)
            return tuple(result)
        return (out, vjp_fn, aux) if has_aux else (out, vjp_fn)
    out, xs, _, create = _call("vjp", f, primals, tuple(range(len(primals))))
    out, aux = _split_aux("vjp", out, has_aux)
    outs = (out,) if isinstance(out, Tensor) else tuple(out)

    def vjp_fn(cotangents):
        cts = (cotangents,) if isinstance(cotangents, Tensor) else tuple(cotangents)
        if len(cts) != len(outs) or any(c.shape != o.shape for c, o in zip(cts, outs)):
            raise ValueError(f"func.vjp: cotangents of shapes {[c.shape for c in cts]} for "
                             f"outputs of shapes {[o.shape for o in outs]}")
        return tuple(_gradients(xs, outs, cts, create))
    return (out, vjp_fn, aux) if has_aux else (out, vjp_fn)


def _jacobians(outputs, args, nums, structure, blocks):
    """The Jacobians in torch.func's structure: the outputs' own (a tuple for a tuple of
    outputs), each output's entry the differentiated arguments' (one, or a tuple for a tuple of
    argnums), each argument's its own (a dict of blocks for a dict of tensors). blocks[o][k]
    lists the blocks of output leaf o for the leaves of argument nums[k]."""
    per_output = []
    for o in range(len(blocks)):
        per_arg = [tree_rebuild(args[a], iter(blocks[o][k])) for k, a in enumerate(nums)]
        per_output.append(_shaped(structure, per_arg))
    return tree_rebuild(outputs, iter(per_output))


def _split_aux(name, out, has_aux):
    """(output, aux): with has_aux, f returns the pair and aux is handed back as it is."""
    if not has_aux:
        return out, None
    if not (isinstance(out, tuple) and len(out) == 2):
        raise TypeError(f"func.{name}: with has_aux=True, f must return (output, aux), got "
                        f"{type(out).__name__}")
    return out


def _output_leaves(name, out):
    outs = tree_leaves(out)
    if not all(isinstance(o, Tensor) for o in outs):
        raise TypeError(f"func.{name}: f must return Tensors (or tuples, lists and dicts of "
                        f"them)")
    return outs


def jacrev(f, argnums=0, has_aux=False):
    """The Jacobian of f by reverse mode, one backward per output element: for each output
    and differentiated input, shape output.shape + input.shape, in the structure of the
    outputs and of the arguments (torch.func.jacrev). With has_aux, f returns (output, aux)
    and the function returns (jacobian, aux)."""
    def jacobian(*args):
        if tracing() is not None:      # inside vmap: the same numbers by forward mode, batched
            return jacfwd(f, argnums, has_aux)(*args)
        out, xs, structure, create = _call("jacrev", f, args, argnums)
        out, aux = _split_aux("jacrev", out, has_aux)
        nums, _ = _argnums(argnums, len(args), "jacrev")
        outs = _output_leaves("jacrev", out)
        leaves = [tree_leaves(x) for x in xs]
        blocks = []
        for o in outs:
            rows = [[[] for _ in arg] for arg in leaves]
            flat = np.eye(o.size, dtype=o.dtype)
            for k in range(o.size):
                seeds = [Tensor(flat[k].reshape(o.shape), dtype=o.dtype) if other is o else
                         Tensor(np.zeros(other.shape, other.dtype), dtype=other.dtype)
                         for other in outs]
                grads = _gradients(xs, outs, seeds, create)
                for arg_rows, g in zip(rows, grads):
                    for leaf_row, gl in zip(arg_rows, tree_leaves(g)):
                        leaf_row.append(gl)
            blocks.append([[Tensor.stack(row).reshape(o.shape + x.shape) if o.size else
                            Tensor(np.zeros(o.shape + x.shape, o.dtype), dtype=o.dtype)
                            for row, x in zip(arg_rows, arg_leaves)]
                           for arg_rows, arg_leaves in zip(rows, leaves)])
        result = _jacobians(out, args, nums, structure, blocks)
        return (result, aux) if has_aux else result
    return jacobian


def jacfwd(f, argnums=0, has_aux=False):
    """The Jacobian of f by forward mode, one jvp per input element: for each output and
    differentiated input, shape output.shape + input.shape, in the structure of the outputs and
    of the arguments (torch.func.jacfwd). With has_aux, f returns (output, aux) and the
    function returns (jacobian, aux), aux from the last of f's calls."""
    def jacobian(*args):
        args = list(args)
        nums, structure = _argnums(argnums, len(args), "jacfwd")
        trees = [args[a] for a in nums]
        leaves = [tree_leaves(t) for t in trees]
        flat = [x for arg in leaves for x in arg]
        for x in flat:
            if not isinstance(x, Tensor) or x.dtype.kind != "f":
                raise TypeError("func.jacfwd: the differentiated arguments must be "
                                "floating-point Tensors (or tuples, lists and dicts of them)")

        aux = []

        def of_leaves(*values):
            given, filled = list(args), iter(values)
            for a, tree in zip(nums, trees):
                given[a] = tree_rebuild(tree, filled)
            out, extra = _split_aux("jacfwd", f(*given), has_aux)
            aux[:] = [extra]
            return out
        columns, out = [], None                   # columns[i][o]: tangents of output leaf o
        zeros = [Tensor(np.zeros(x.shape, x.dtype), dtype=x.dtype) for x in flat]
        for i, x in enumerate(flat):
            basis = np.eye(x.size, dtype=x.dtype)
            per_leaf = []
            for j in range(x.size):
                tangents = list(zeros)
                tangents[i] = Tensor(basis[j].reshape(x.shape), dtype=x.dtype)
                out, tangent = forward.jvp(of_leaves, tuple(flat), tuple(tangents))
                per_leaf.append(tree_leaves(tangent))   # Tensors: an outer grad goes through
            columns.append(per_leaf)
        if out is None:
            out = of_leaves(*flat)
        outs = _output_leaves("jacfwd", out)
        blocks = []
        for o, output in enumerate(outs):
            per_arg, i = [], 0
            for arg in leaves:
                row = []
                for x in arg:
                    if columns[i]:
                        stacked = Tensor.stack([c[o] for c in columns[i]], axis=-1)
                    else:
                        stacked = Tensor(np.zeros(output.shape + (0,), output.dtype),
                                         dtype=output.dtype)
                    row.append(stacked.reshape(output.shape + x.shape))
                    i += 1
                per_arg.append(row)
            blocks.append(per_arg)
        result = _jacobians(out, args, nums, structure, blocks)
        return (result, aux[0]) if has_aux else result
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

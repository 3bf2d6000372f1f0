"""The op table: every differentiable op with the inputs to check it on.

One row per op variant. The tests check each row against central finite differences and
check the op protocol on random shapes; `tinygrad-mnist gradcheck` prints the same rows.
Adding an op means one class (forward, backward, jvp and its batching rule side by side, in
engine/ops.py or its family's file), one Tensor method (and nn layer), and one row here: the
tests then check its derivatives, forward mode and vmap, and the fuzzer uses it
(docs/architecture.md).
"""
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import nn
from . import ops
from .engine import Tensor, conv

# pairs that broadcast in both directions, with 0-d tensors on either side
BROADCAST_PAIRS = [((), ()), ((3,), (3,)), ((2, 3), (3,)), ((3,), (2, 3)), ((2, 3), (1, 3)),
                   ((4, 1), (1, 5)), ((), (2, 3)), ((2, 3), ()), ((2, 1, 3), (4, 1))]
MATMUL_PAIRS = [((3, 4), (4, 5)), ((4,), (4,)), ((4,), (4, 5)), ((3, 4), (4,)),
                ((2, 3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)), ((2, 1, 3, 4), (5, 4, 2)),
                ((4,), (2, 4, 5)), ((2, 3, 4), (4,))]
UNARY_SHAPES = [[()], [(5,)], [(3, 4)]]


# ---------------------------------------------------------------- random shapes

def _sizes(rng, ndim):
    return tuple(int(n) for n in rng.integers(1, 5, size=ndim))


def _any_shape(rng, shapes):
    return [_sizes(rng, rng.integers(0, 4)) for _ in shapes]


def _resized(rng, shapes):
    """The same ranks as the row's own shapes, with other sizes (one size for all inputs)."""
    sizes = _sizes(rng, max(len(s) for s in shapes))
    return [sizes[len(sizes) - len(s):] for s in shapes]


def _broadcast_pair(rng, shapes):
    """Two shapes that broadcast together: a common shape, each side with leading axes
    dropped and some sizes set to 1."""
    full = _sizes(rng, rng.integers(0, 4))
    pair = []
    for _ in range(2):
        kept = full[rng.integers(0, len(full) + 1):]
        pair.append(tuple(1 if rng.random() < 0.3 else n for n in kept))
    return pair


def _matmul_pair(rng, shapes):
    m, k, n = _sizes(rng, 3)
    batch = _sizes(rng, rng.integers(0, 3))
    a = (k,) if rng.random() < 0.2 else batch + (m, k)
    b = (k,) if rng.random() < 0.2 else batch[rng.integers(0, len(batch) + 1):] + (k, n)
    return [a, b]


@dataclass(frozen=True)
class OpCase:
    """One row. `fn` builds the op from its input tensors; `shapes` lists the input shapes of
    each fixed check; `domains` gives (low, high) per input (None: standard normal); inputs
    within 1e-3 of a `kinks` value, where the op has no derivative, are moved off it;
    `random_shapes(rng, shapes)` draws other valid input shapes for the protocol test."""
    op: str
    name: str
    fn: Callable
    shapes: list
    domains: tuple = ()
    kinks: tuple = ()
    random_shapes: Callable = None

    def inputs(self, shapes, rng):
        """Float64 tensors that require grad, of the given shapes, inside the domains."""
        tensors = []
        for i, shape in enumerate(shapes):
            domain = self.domains[i] if i < len(self.domains) else None
            x = rng.normal(size=shape) if domain is None else rng.uniform(*domain, size=shape)
            for k in self.kinks:
                x = np.where(np.abs(x - k) < 1e-3, k + 0.5, x)
            tensors.append(Tensor(x, requires_grad=True, dtype=np.float64))
        return tensors

    def weighted(self, rng, inputs):
        """A scalar function of the inputs: the op's output times fixed random weights, so
        that the upstream gradient is not uniform."""
        weights = rng.normal(size=self.fn(*inputs).shape)
        return lambda *xs: (self.fn(*xs) * weights).sum()


_POSITIVE = (0.5, 2.0)


def _binary_rows():
    binary = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b,
              "mul": lambda a, b: a * b, "div": lambda a, b: a / b,
              "pow": lambda a, b: a ** b, "maximum": lambda a, b: a.maximum(b),
              "minimum": lambda a, b: a.minimum(b)}
    domains = {"div": (None, _POSITIVE), "pow": (_POSITIVE, None)}
    return [OpCase(op, op, fn, [list(p) for p in BROADCAST_PAIRS], domains.get(op, ()),
                   random_shapes=_broadcast_pair) for op, fn in binary.items()]


def _constant_rows():
    """The same ops with a Python number or NumPy array on one side."""
    cases = {"radd": ("add", lambda a: 2.5 + a), "rsub": ("sub", lambda a: 2.5 - a),
             "rmul": ("mul", lambda a: 2.5 * a), "rdiv": ("div", lambda a: 2.5 / a),
             "rpow": ("pow", lambda a: 2.5 ** a), "pow (constant)": ("pow", lambda a: a ** 3),
             "pow (half)": ("pow", lambda a: a ** 0.5), "square": ("pow", lambda a: a ** 2),
             "numpy on the left": ("mul", lambda a: np.full(a.shape, 1.5) * a),
             "rpow (zero base)": ("pow", lambda a: np.array([0.0, 0.0, 2.0]) ** a)}
    shapes = {"rpow (zero base)": [[(2, 3)], [(3,)]]}
    return [OpCase(op, name, fn, shapes.get(name, [[(2, 3)]]), (_POSITIVE,),
                   random_shapes=None if name in shapes else _any_shape)
            for name, (op, fn) in cases.items()]


def _unary_rows():
    unary = {"neg": (lambda x: -x, None, ()), "exp": (lambda x: x.exp(), None, ()),
             "log": (lambda x: x.log(), (0.2, 3.0), ()),
             "sqrt": (lambda x: x.sqrt(), (0.2, 3.0), ()),
             "abs": (lambda x: abs(x), None, (0.0,)), "relu": (lambda x: x.relu(), None, (0.0,)),
             "sigmoid": (lambda x: x.sigmoid(), None, ()), "tanh": (lambda x: x.tanh(), None, ()),
             "clip": (lambda x: x.clip(-0.5, 0.7), None, (-0.5, 0.7)),
             "sin": (lambda x: x.sin(), None, ()), "cos": (lambda x: x.cos(), None, ()),
             "gelu": (lambda x: x.gelu(), None, ()), "silu": (lambda x: x.silu(), None, ()),
             "normal_cdf": (lambda x: ops.NormalCDF.apply(x), None, ())}
    return [OpCase(op, op, fn, UNARY_SHAPES, (domain,), kinks, _any_shape)
            for op, (fn, domain, kinks) in unary.items()]


def _softmax_rows():
    return [
        OpCase("softmax", "softmax", lambda x: x.softmax(), [[(4,)], [(3, 4)]],
               random_shapes=_resized),
        OpCase("softmax", "softmax (axis 0)", lambda x: x.softmax(axis=0), [[(3, 4)]],
               random_shapes=_resized),
        OpCase("log_softmax", "log_softmax", lambda x: x.log_softmax(), [[(4,)], [(3, 4)]],
               random_shapes=_resized),
        OpCase("log_softmax", "log_softmax (axis -2)", lambda x: x.log_softmax(axis=-2),
               [[(3, 4)]], random_shapes=_resized),
        OpCase("softmax", "softmax (axis 0, with a mask)",
               lambda x: x.softmax(axis=0, mask=np.array([[True, False, True, True],
                                                          [True, True, False, True],
                                                          [False, True, True, True]])),
               [[(3, 4)]]),
    ]


def _reduction_rows():
    rows = []
    for op in ("sum", "mean", "max", "min"):
        for axis in (None, 0, 1, -1, (0, 2), (-1, -3), ()):
            for keepdims in (False, True):
                def fn(x, op=op, axis=axis, keepdims=keepdims):
                    return getattr(x, op)(axis=axis, keepdims=keepdims)
                rows.append(OpCase(op, f"{op} (axis={axis}, keepdims={keepdims})", fn,
                                   [[(2, 3, 4)]], random_shapes=_resized))
        rows.append(OpCase(op, f"{op} (0-d)", lambda x, op=op: getattr(x, op)(), [[()]]))
    # var and std are built from mean, sub, mul, sum, div and sqrt: rows for their options
    for op in ("var", "std"):
        for axis, ddof, keepdims in ((None, 0, False), (1, 1, False), ((0, 2), 0, True),
                                     (-1, 2, True)):
            def fn(x, op=op, axis=axis, ddof=ddof, keepdims=keepdims):
                return getattr(x, op)(axis=axis, ddof=ddof, keepdims=keepdims)
            rows.append(OpCase("sub", f"{op} (axis={axis}, ddof={ddof}, keepdims={keepdims})",
                               fn, [[(2, 3, 4)]], random_shapes=None if ddof else _resized))
    for axis, keepdims in ((None, False), (0, False), (-1, True), ((0, 1), False)):
        rows.append(OpCase("norm", f"np.linalg.norm (axis={axis}, keepdims={keepdims})",
                           lambda x, axis=axis, keepdims=keepdims:
                           np.linalg.norm(x, axis=axis, keepdims=keepdims), [[(3, 4)]]))
    rows += [
        OpCase("norm", "np.linalg.norm (vector)", lambda x: np.linalg.norm(x), [[(5,)], [()]]),
        OpCase("abs", "np.linalg.norm (ord=1)", lambda x: np.linalg.norm(x, ord=1), [[(5,)]],
               kinks=(0.0,)),
        OpCase("pow", "np.linalg.norm (ord=3)", lambda x: np.linalg.norm(x, ord=3), [[(5,)]],
               kinks=(0.0,)),
    ]
    return rows


def _shape_rows():
    index = {
        "slices": lambda x: x[1:, ::2], "int and None": lambda x: x[2, None, -3:],
        "ellipsis": lambda x: x[..., 1], "int array": lambda x: x[np.array([0, 2, 3])],
        "repeated indices": lambda x: x[np.array([1, 1, 3, 1])],
        "pair of arrays": lambda x: x[np.array([0, 0, 2]), np.array([1, 1, 4])],
        "list": lambda x: x[[2, 2, 0]], "1-d mask": lambda x: x[np.array([1, 0, 1, 1], bool)],
        "mask from a comparison": lambda x: x[x > 0], "tensor index": lambda x: x[Tensor([1, 0, 1])],
    }
    rows = [OpCase("getitem", f"getitem ({name})", fn, [[(4, 5)]]) for name, fn in index.items()]
    return rows + [
        OpCase("reshape", "reshape", lambda x: x.reshape(4, -1), [[(2, 6)]]),
        OpCase("reshape", "reshape (tuple)", lambda x: x.reshape((3, 2, 2)), [[(12,)]]),
        OpCase("reshape", "flatten", lambda x: x.flatten(), [[(2, 3, 2)]], random_shapes=_resized),
        OpCase("reshape", "view", lambda x: x.view(3, -1), [[(2, 3, 2)]]),
        OpCase("reshape", "unsqueeze", lambda x: x.unsqueeze(-1), [[(2, 3)], [()]],
               random_shapes=_any_shape),
        OpCase("reshape", "unsqueeze (middle)", lambda x: x.unsqueeze(1), [[(2, 3)]]),
        OpCase("reshape", "squeeze", lambda x: x.squeeze(), [[(2, 1, 3, 1)]],
               random_shapes=_any_shape),
        OpCase("reshape", "squeeze (axis)", lambda x: x.squeeze((0, 1)), [[(1, 2, 3)]]),
        OpCase("cast", "cast", lambda x: ops.Cast.apply(x, dtype=np.float64), [[(2, 3)]],
               random_shapes=_any_shape),
        OpCase("transpose", "transpose", lambda x: x.transpose(), [[(2, 3, 4)]],
               random_shapes=_resized),
        OpCase("transpose", "transpose (permutation)", lambda x: x.transpose(1, 2, 0),
               [[(2, 3, 4)]], random_shapes=_resized),
        OpCase("transpose", "swapaxes", lambda x: x.swapaxes(0, 2), [[(2, 3, 4)]],
               random_shapes=_resized),
        OpCase("transpose", "T", lambda x: x.T, [[(3, 5)]], random_shapes=_resized),
        OpCase("getitem", "iteration", lambda x: Tensor.stack(list(x)), [[(3, 2)]],
               random_shapes=_resized),
        OpCase("concat", "concat (axis 0)", lambda a, b: Tensor.concat([a, b]),
               [[(2, 3), (4, 3)]]),
        OpCase("concat", "concat (axis -1)", lambda a, b, c: Tensor.concat([a, b, c], axis=-1),
               [[(2, 3), (2, 1), (2, 2)]]),
        OpCase("concat", "concat (one input)", lambda a: Tensor.concat([a]), [[(2, 3)]],
               random_shapes=_resized),
        OpCase("stack", "stack (axis 0)", lambda a, b: Tensor.stack([a, b]),
               [[(2, 3), (2, 3)]], random_shapes=_resized),
        OpCase("stack", "stack (axis -1)", lambda a, b: Tensor.stack([a, b], axis=-1),
               [[(2, 3), (2, 3)]], random_shapes=_resized),
        OpCase("stack", "stack (one input)", lambda a: Tensor.stack([a], axis=1), [[(2, 3)]],
               random_shapes=_resized),
    ]


def _fused_rows():
    targets = np.array([0, 2, 1, 2])
    return [
        OpCase("matmul", "matmul", lambda a, b: a @ b, [list(p) for p in MATMUL_PAIRS],
               random_shapes=_matmul_pair),
        OpCase("matmul", "matmul (NumPy on the left)", lambda w: np.ones((3, 4)) @ w,
               [[(4, 2)]]),
        OpCase("linear", "linear", lambda x, w, b: ops.Linear.apply(x, w, b),
               [[(4, 5), (3, 5), (3,)], [(2, 4, 5), (3, 5), (3,)]]),
        OpCase("linear", "linear (no bias)", lambda x, w: ops.Linear.apply(x, w),
               [[(4, 5), (3, 5)]]),
        OpCase("dropout", "dropout (fixed mask)",
               lambda x: ops.DropoutMask.apply(x, keep=np.array([[2.0, 0, 2], [0, 2, 2]])),
               [[(2, 3)]]),
        OpCase("cross_entropy", "cross_entropy", lambda z: nn.cross_entropy(z, targets),
               [[(4, 3)]]),
        OpCase("mse_loss", "mse_loss", lambda a: nn.mse_loss(a, np.ones((2, 3))), [[(2, 3)]]),
        OpCase("binary_cross_entropy", "binary_cross_entropy",
               lambda p: nn.binary_cross_entropy(p, np.array([0.0, 1, 1])), [[(3,)]],
               ((0.1, 0.9),)),
    ] + [
        OpCase("cross_entropy", f"cross_entropy (reduction={r}, label_smoothing={s})",
               lambda z, r=r, s=s: nn.cross_entropy(z, targets, reduction=r,
                                                    label_smoothing=s), [[(4, 3)]])
        for r, s in (("sum", 0.0), ("none", 0.0), ("mean", 0.1), ("none", 0.3), ("sum", 1.0))
    ] + [
        # padding: targets equal to ignore_index count for nothing (a sequence's positions)
        OpCase("cross_entropy", f"cross_entropy (ignore_index, reduction={r}, "
                                f"label_smoothing={s})",
               lambda z, r=r, s=s: nn.cross_entropy(z, np.array([[2, -100], [0, 1], [-100, 1]]),
                                                    reduction=r, label_smoothing=s),
               [[(3, 3, 2)]])
        for r, s in (("mean", 0.0), ("sum", 0.1), ("none", 0.0))
    ] + [
        OpCase("binary_cross_entropy", f"binary_cross_entropy (reduction={r})",
               lambda p, r=r: nn.binary_cross_entropy(p, np.array([[0.0, 1, 0.3]] * 2),
                                                      reduction=r), [[(2, 3)]], ((0.1, 0.9),))
        for r in ("sum", "none")
    ] + [
        OpCase("mul", f"mse_loss (reduction={r})",
               lambda a, r=r: nn.mse_loss(a, np.ones((2, 3)), reduction=r), [[(2, 3)]])
        for r in ("sum", "none")
    ]


def _numpy_rows():
    """NumPy's own functions on tensors, and the ops that only they (and backward) reach."""
    mask = np.array([[True, False, True], [False, False, True]])
    return [
        OpCase("where", "np.where", lambda a, b: np.where(mask, a, b), [[(2, 3), (2, 3)],
                                                                        [(2, 3), (3,)]]),
        OpCase("where", "np.where (integer condition)",
               lambda a, b: np.where(np.array([1, 0, 2]), a, b), [[(2, 3), (3,)]]),
        OpCase("where", "np.where (float condition, a constant)",
               lambda a: np.where(np.array([0.5, 0.0, -1.0]), a, 2.0), [[(3,)]]),
        OpCase("where", "np.where (condition from a comparison)",
               lambda a, b: np.where(a > b, a, b), [[(2, 3), (2, 3)]]),
        OpCase("broadcast_to", "np.broadcast_to", lambda a: np.broadcast_to(a, (4, 2, 3)),
               [[(2, 1)], [(3,)]]),
        OpCase("index_add", "index_add (repeated indices)",
               lambda a: ops.IndexAdd.apply(a, index=np.array([1, 0, 1]), shape=(3, 2),
                                            advanced=True), [[(3, 2)]]),
        OpCase("index_add", "index_add (slice)",
               lambda a: ops.IndexAdd.apply(a, index=(slice(1, 3),), shape=(4, 2),
                                            advanced=False), [[(2, 2)]]),
        OpCase("exp", "np.exp, np.sum, np.mean", lambda a: np.exp(np.sum(a, axis=0)) +
               np.mean(a), [[(3, 2)]], random_shapes=_resized),
        OpCase("mul", "ndarray * tensor", lambda a: np.arange(6.0).reshape(2, 3) * a,
               [[(2, 3)]]),
    ]


def _no_gradient_rows():
    """Ops whose results have no gradient (comparisons, argmax, random draws), used inside
    expressions that do: the gradient flows around them, and they must not break it."""
    return [
        OpCase("compare", "comparison as a mask", lambda a: (a > 0.3) * a, [[(2, 3)]],
               kinks=(0.3,), random_shapes=_any_shape),
        OpCase("argmax", "argmax as an index", lambda a: a[a.argmax()] * a, [[(5,)]]),
        OpCase("randn", "times Tensor.randn", lambda a: a * Tensor.randn(*a.shape), [[(2, 3)]],
               random_shapes=_any_shape),
        OpCase("rand", "times Tensor.rand", lambda a: a * Tensor.rand(*a.shape), [[(2, 3)]]),
        OpCase("randint", "indexed by Tensor.randint",
               lambda a: a[Tensor.randint(0, a.shape[0], (4,))], [[(3, 2)]]),
    ]


def _conv_rows():
    """Convolution, pooling and batch normalization: every option, odd sizes, and the ops
    that only their gradients reach (so that gradients of gradients are checked too)."""
    g = conv.Geometry
    convs = [  # x, weight, keyword arguments
        ((2, 3, 5, 6), (4, 3, 3, 3), {}),
        ((1, 2, 7, 6), (3, 2, 3, 2), {"stride": 2, "padding": 1}),
        ((2, 2, 7, 7), (2, 2, 2, 3), {"stride": (2, 1), "padding": (0, 2), "dilation": 2}),
        ((1, 4, 5, 5), (6, 2, 3, 3), {"groups": 2, "padding": 1}),
        ((1, 3, 4, 5), (3, 1, 2, 2), {"groups": 3, "stride": 2}),
        ((2, 1, 6, 6), (2, 1, 3, 3), {"padding": "same", "dilation": 2}),
    ]
    rows = [OpCase("conv2d", f"conv2d {w} {k}" if k else f"conv2d {w}",
                   lambda x, w, b, k=k: x.conv2d(w, b, **k), [[x, w, (w[0],)]])
            for x, w, k in convs]
    rows += [
        OpCase("conv2d", "conv2d (no bias, unbatched)", lambda x, w: x.conv2d(w, padding=1),
               [[(2, 4, 3), (3, 2, 2, 2)]]),
        OpCase("conv2d_input_grad", "conv2d's input gradient (stride 2, groups 2)",
               lambda gz, w: ops.ConvInputGrad.apply(
                   gz, w, geometry=g((3, 3), (2, 2), (1, 1), (1, 1), 2),
                   input_shape=(2, 4, 5, 6)), [[(2, 6, 3, 3), (6, 2, 3, 3)]]),
        OpCase("conv2d_weight_grad", "conv2d's weight gradient (dilation 2)",
               lambda x, gz: ops.ConvWeightGrad.apply(
                   x, gz, geometry=g((2, 2), (1, 1), (0, 1), (2, 2), 1),
                   weight_shape=(3, 2, 2, 2)), [[(1, 2, 5, 5), (1, 3, 3, 5)]]),
    ]
    pools = [((2, 3, 6, 6), {}), ((1, 2, 7, 5), {"kernel_size": 3, "stride": 2, "padding": 1}),
             ((1, 2, 5, 6), {"kernel_size": (2, 3), "stride": (1, 2)}),
             ((2, 5, 5), {"kernel_size": 2, "stride": 1})]
    for kind in ("max", "avg"):
        rows += [OpCase(f"{kind}_pool2d", f"{kind}_pool2d {x} {k}",
                        lambda a, k=k, kind=kind: getattr(a, f"{kind}_pool2d")(**k), [[x]])
                 for x, k in pools]
    choice = np.array([[[[0, 3], [1, 2]]]])
    rows += [
        OpCase("window_scatter", "window_scatter (max-pool's gradient, overlapping windows)",
               lambda a: ops.WindowScatter.apply(a, choice=choice,
                                                 geometry=g((2, 2), (1, 1), (0, 0)),
                                                 input_shape=(1, 1, 3, 3)), [[(1, 1, 2, 2)]]),
        OpCase("window_gather", "window_gather (padded)",
               lambda a: ops.WindowGather.apply(a, choice=choice,
                                                geometry=g((2, 2), (2, 2), (1, 1))),
               [[(1, 1, 3, 3)]]),
        OpCase("avg_pool_scatter", "avg_pool_scatter (avg-pool's gradient)",
               lambda a: ops.AvgPoolScatter.apply(a, geometry=g((3, 2), (2, 1), (1, 0)),
                                                  input_shape=(1, 2, 5, 4)), [[(1, 2, 3, 3)]]),
    ]
    for shape, axes in (((4, 3), (0,)), ((3, 2, 5), (0, 2)), ((3, 2, 3, 4), (0, 2, 3))):
        for training in (True, False):
            rows.append(OpCase(
                "batch_norm", f"batch_norm {shape} ({'training' if training else 'eval'})",
                lambda x, w, b, axes=axes, training=training: ops.BatchNorm.apply(
                    x, w, b, Tensor(np.linspace(-0.5, 0.5, x.shape[1])),
                    Tensor(np.linspace(0.5, 2.0, x.shape[1])), axes=axes,
                    training=training), [[shape, shape[1:2], shape[1:2]]]))
    rows += [
        OpCase("layer_norm", f"layer_norm {shape} over {dims}",
               lambda x, w, b, dims=dims: ops.LayerNorm.apply(x, w, b, dims=dims),
               [[shape, shape[len(shape) - dims:], shape[len(shape) - dims:]]])
        for shape, dims in (((4, 5), 1), ((2, 3, 4), 1), ((2, 3, 4), 2), ((6,), 1))]
    rows += [
        OpCase("lstm_cell", f"lstm_cell {pre} with c {c}",
               lambda pre, c: ops.LSTMCell.apply(pre, c), [[pre, c]])
        for pre, c in (((3, 8), (3, 2)), ((2, 3, 12), (3, 3)), ((4,), (1,)))]
    table = np.array([[1, 0, 3], [2, 2, 4]])            # repeated indices add up
    rows.append(OpCase("embedding", "embedding (repeated indices)",
                       lambda w: ops.Embedding.apply(w, Tensor(table)), [[(5, 3)]]))
    return rows


OP_CASES = (_binary_rows() + _constant_rows() + _unary_rows() + _softmax_rows()
            + _reduction_rows() + _shape_rows() + _fused_rows() + _conv_rows()
            + _numpy_rows() + _no_gradient_rows())

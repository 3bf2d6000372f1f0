"""An ONNX file as a Module of the engine's own ops: each node run by its rule in RULES, the
float initializers as parameters (what a gradient can flow to; batch norm's running
statistics, and Constant nodes, as constants), so a loaded model can be differentiated, gradient-checked, drawn and
explored like one written here. It reads the ops export writes (and the same ops from other
exporters, with the attributes these rules accept); any other op is named and refused.

Shapes computed inside the graph (Shape, Slice, Concat of integers) run on NumPy arrays.
"""
import numpy as np

from .. import nn
from ..engine import Tensor, ops
from ..engine import conv as conv_ops
from ..engine import norm as norm_ops
from ..engine.kernels.windows import Geometry
from .export import _onnx


def _is_tensor(x):
    return isinstance(x, Tensor)


def _binary(method):
    def rule(node, a, b):
        if not _is_tensor(a) and not _is_tensor(b):               # shape arithmetic
            return getattr(np.asarray(a), method)(b)
        return getattr(a if _is_tensor(a) else Tensor(a), method)(b)
    return rule


def _unary(method):
    return lambda node, x: getattr(x, method)()


def _gemm(node, a, b, c=None):
    alpha, beta = node.get("alpha", 1.0), node.get("beta", 1.0)
    if node.get("transA", 0):
        a = a.transpose(1, 0)
    if node.get("transB", 0) and alpha == 1.0 and beta == 1.0:
        return ops.Linear.apply(a, b) if c is None else ops.Linear.apply(a, b, c)
    out = a @ (b.transpose(1, 0) if node.get("transB", 0) else b)
    if alpha != 1.0:
        out = out * alpha
    return out if c is None else out + (c if beta == 1.0 else c * beta)


def _geometry(node, kernel=None):
    kernel = tuple(node.get("kernel_shape", kernel))
    if len(kernel) != 2 or node.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise ValueError(f"onnx.load: {node.op_type} {node.name!r}: only 2-d windows with "
                         f"explicit pads are read (kernel {kernel}, auto_pad "
                         f"{node.get('auto_pad')})")
    top, left, bottom, right = node.get("pads", (0, 0, 0, 0))
    if (top, left) != (bottom, right):
        raise ValueError(f"onnx.load: {node.op_type} {node.name!r}: uneven pads "
                         f"{[top, left, bottom, right]} are not read")
    return Geometry(kernel, tuple(node.get("strides", (1, 1))), (top, left),
                    tuple(node.get("dilations", (1, 1))), node.get("group", 1))


def _conv(node, x, w, b=None):
    geometry = _geometry(node, kernel=w.shape[2:])
    inputs = (x, w) if b is None else (x, w, b)
    return conv_ops.Conv2d.apply(*inputs, geometry=geometry)


def _max_pool(node, x):
    if node.get("ceil_mode", 0) or node.get("storage_order", 0):
        raise ValueError(f"onnx.load: MaxPool {node.name!r}: ceil_mode and storage_order "
                         f"are not read")
    return conv_ops.MaxPool2d.apply(x, geometry=_geometry(node))


def _average_pool(node, x):
    geometry = _geometry(node)
    if geometry.padding != (0, 0) and not node.get("count_include_pad", 0):
        raise ValueError(f"onnx.load: AveragePool {node.name!r}: padding that is not counted "
                         f"is not read")
    return conv_ops.AvgPool2d.apply(x, geometry=geometry)


def _batch_norm(node, x, scale, bias, mean, var):
    return norm_ops.BatchNorm.apply(x, scale, bias, mean, var,
                                    axes=(0,) + tuple(range(2, x.ndim)),
                                    eps=node.get("epsilon", 1e-5), momentum=0.0,
                                    training=False)


def _layer_norm(node, x, scale, bias=None):
    axis = node.get("axis", -1)
    dims = -axis if axis < 0 else x.ndim - axis
    if bias is None:
        bias = Tensor(np.zeros(scale.shape, scale.dtype))
    return norm_ops.LayerNorm.apply(x, scale, bias, dims=dims,
                                    eps=node.get("epsilon", 1e-5))


def _softmax(method):
    return lambda node, x: getattr(x, method)(axis=node.get("axis", -1))


def _reduce(method):
    def rule(node, x, axes=None):
        if axes is None and node.get("noop_with_empty_axes", 0):
            return x
        axis = None if axes is None else tuple(int(a) for a in np.asarray(axes).ravel())
        return getattr(x, method)(axis=axis, keepdims=bool(node.get("keepdims", 1)))
    return rule


def _reshape(node, x, shape):
    shape = [x.shape[k] if s == 0 and not node.get("allowzero", 0) else int(s)
             for k, s in enumerate(np.asarray(shape).ravel())]
    return x.reshape(*shape) if _is_tensor(x) else np.asarray(x).reshape(shape)


def _transpose(node, x):
    perm = node.get("perm", tuple(reversed(range(x.ndim))))
    return x.transpose(*perm)


def _expand(node, x, shape):
    target = np.broadcast_shapes(x.shape, tuple(int(s) for s in np.asarray(shape).ravel()))
    return x.broadcast_to(*target) if _is_tensor(x) else np.broadcast_to(x, target)


def _slice(node, x, starts, ends, axes=None, steps=None):
    starts, ends = np.asarray(starts).ravel(), np.asarray(ends).ravel()
    axes = range(len(starts)) if axes is None else np.asarray(axes).ravel()
    steps = np.ones(len(starts), np.int64) if steps is None else np.asarray(steps).ravel()
    index = [slice(None)] * np.ndim(x)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        index[int(axis)] = slice(int(start), int(end), int(step))
    return x[tuple(index)]


def _new_shape(node, x, axes, kind):
    axes = [int(a) for a in np.asarray(axes).ravel()]
    shape = list(np.shape(x))
    if kind == "squeeze":
        axes = [a % len(shape) for a in axes]
        shape = [s for k, s in enumerate(shape) if k not in axes]
    else:
        rank = len(shape) + len(axes)
        for a in sorted(a % rank for a in axes):
            shape.insert(a, 1)
    return x.reshape(*shape) if _is_tensor(x) else np.asarray(x).reshape(shape)


def _gather(node, x, indices):
    axis = node.get("axis", 0)
    if _is_tensor(indices):
        indices = indices.numpy()
    index = (slice(None),) * (axis % np.ndim(x)) + (np.asarray(indices, np.int64),)
    return x[index]


def _concat(node, *xs):
    axis = node.get("axis")
    if not any(_is_tensor(x) for x in xs):
        return np.concatenate([np.asarray(x).reshape(np.shape(x) or (1,)) for x in xs], axis)
    return Tensor.cat([x if _is_tensor(x) else Tensor(x) for x in xs], axis=axis)


def _where(node, condition, x, y):
    condition = condition if _is_tensor(condition) else Tensor(np.asarray(condition, bool))
    x, y = (t if _is_tensor(t) else Tensor(t) for t in (x, y))
    return ops.Where.apply(x, y, condition)


def _pow(node, x, exponent):
    if np.ndim(exponent) == 0 and not getattr(exponent, "requires_grad", False):
        return x ** float(np.asarray(exponent))          # a constant power: pow's own rule
    return x ** exponent


def _cast(node, x):
    dtype = _onnx().helper.tensor_dtype_to_np_dtype(node.get("to"))
    return x.astype(dtype)


def _clip(node, x, lo=None, hi=None):
    def bound(v):
        return None if v is None or np.isinf(float(np.asarray(v))) else float(np.asarray(v))
    return x.clip(bound(lo), bound(hi))


RULES = {
    "Add": _binary("__add__"), "Sub": _binary("__sub__"), "Mul": _binary("__mul__"),
    "Div": _binary("__truediv__"), "Max": lambda n, a, b: a.maximum(b),
    "Min": lambda n, a, b: a.minimum(b), "Pow": _pow, "MatMul": lambda n, a, b: a @ b,
    "Neg": lambda n, x: -x, "Exp": _unary("exp"), "Log": _unary("log"),
    "Sqrt": _unary("sqrt"), "Sin": _unary("sin"), "Cos": _unary("cos"),
    "Abs": _unary("abs"), "Relu": _unary("relu"), "Sigmoid": _unary("sigmoid"),
    "Tanh": _unary("tanh"), "Gelu": _unary("gelu"), "Identity": lambda n, x: x,
    "Gemm": _gemm, "Conv": _conv, "MaxPool": _max_pool, "AveragePool": _average_pool,
    "BatchNormalization": _batch_norm, "LayerNormalization": _layer_norm,
    "Softmax": _softmax("softmax"), "LogSoftmax": _softmax("log_softmax"),
    "ReduceSum": _reduce("sum"), "ReduceMean": _reduce("mean"), "ReduceMax": _reduce("max"),
    "ReduceMin": _reduce("min"), "Reshape": _reshape, "Transpose": _transpose,
    "Expand": _expand, "Slice": _slice,
    "Squeeze": lambda n, x, axes: _new_shape(n, x, axes, "squeeze"),
    "Unsqueeze": lambda n, x, axes: _new_shape(n, x, axes, "unsqueeze"),
    "Gather": _gather, "Concat": _concat, "Where": _where, "Cast": _cast, "Clip": _clip,
    "Shape": lambda n, x: np.asarray(np.shape(x), np.int64),
    "Constant": lambda n: _constant(n.get("value")),
}


def _constant(array):
    """A Constant node's value: floats as a tensor no gradient reaches, integers as NumPy."""
    return Tensor.from_numpy(array) if array.dtype.kind == "f" else array

# float initializers that are constants, not parameters: (op type, input position)
_BUFFERS = {("BatchNormalization", 3), ("BatchNormalization", 4), ("Pow", 1), ("Clip", 1),
            ("Clip", 2)}


class _Node:
    """A node's type, name and attributes (as Python values)."""

    def __init__(self, onnx, proto):
        self.op_type, self.name = proto.op_type, proto.name or proto.op_type
        self.inputs, self.outputs = list(proto.input), list(proto.output)
        self.attributes = {a.name: onnx.helper.get_attribute_value(a)
                           for a in proto.attribute}
        for key, value in self.attributes.items():
            if isinstance(value, bytes):
                self.attributes[key] = value.decode()
            elif isinstance(value, float):
                # ONNX keeps float attributes in float32: the shortest decimal that rounds to
                # it is what the writer meant (1e-5, not 9.99999974738e-06)
                self.attributes[key] = float(str(np.float32(value)))
            elif isinstance(value, onnx.TensorProto):
                self.attributes[key] = onnx.numpy_helper.to_array(value).copy()

    def get(self, key, default=None):
        return self.attributes.get(key, default)


class OnnxModel(nn.Module):
    """The model of an ONNX file: forward(x) runs its nodes on the engine's ops. `weights`
    holds the float initializers a gradient can reach (parameters), `constants` the rest."""

    def __init__(self, proto, name="onnx"):
        onnx = _onnx()
        graph = proto.graph
        self.name = graph.name or name
        self.nodes = [_Node(onnx, n) for n in graph.node]
        for node in self.nodes:
            if node.op_type not in RULES:
                raise ValueError(f"onnx.load: {self.name}: node {node.name!r} is "
                                 f"{node.op_type}, which is not read (read: "
                                 f"{', '.join(sorted(RULES))})")
        constant_inputs = {node.inputs[k] for node in self.nodes
                           for k in range(len(node.inputs)) if (node.op_type, k) in _BUFFERS}
        weights, constants = {}, {}
        for init in graph.initializer:
            array = onnx.numpy_helper.to_array(init).copy()
            if array.dtype.kind == "f" and init.name not in constant_inputs:
                weights[init.name] = Tensor.from_numpy(array, requires_grad=True)
            else:
                constants[init.name] = _constant(array)
        self.weights = weights
        self.constants = constants
        initialized = set(weights) | set(constants)
        inputs = [i.name for i in graph.input if i.name not in initialized]
        if len(inputs) != 1 or len(graph.output) != 1:
            raise ValueError(f"onnx.load: {self.name}: a model of one input and one output "
                             f"is read, got inputs {inputs} and outputs "
                             f"{[o.name for o in graph.output]}")
        self.input_name, self.output_name = inputs[0], graph.output[0].name

    def forward(self, x):
        values = dict(self.constants)
        values.update(self.weights)
        values[self.input_name] = x if isinstance(x, Tensor) else \
            Tensor.from_numpy(np.asarray(x))
        for node in self.nodes:
            args = [values[name] if name else None for name in node.inputs]
            while args and args[-1] is None:
                args.pop()
            try:
                out = RULES[node.op_type](node, *args)
            except (TypeError, ValueError) as error:
                raise ValueError(f"onnx.load: {self.name}: node {node.name!r} "
                                 f"({node.op_type}): {error}") from None
            values[node.outputs[0]] = out
        return values[self.output_name]

    def __repr__(self):
        return f"OnnxModel({self.name!r}, {len(self.nodes)} nodes)"


def load(path):
    """The ONNX model at path as an OnnxModel (a Module of the engine's ops)."""
    onnx = _onnx()
    try:
        proto = onnx.load(str(path))
    except Exception as error:      # noqa: BLE001  (onnx raises DecodeError and others)
        raise ValueError(f"onnx.load: cannot read {path} as an ONNX model ({error})") from None
    return OnnxModel(proto)

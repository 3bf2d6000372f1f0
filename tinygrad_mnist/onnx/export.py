"""A model as an ONNX file: its forward pass traced through the engine's observer seam (every
op it runs, on an example batch, in eval mode) and each op written as ONNX nodes by its rule
in RULES. The batch axis is left free ("batch"): a shape an op took from the example batch
(a reshape, a broadcast) is written relative to the input's, so any batch size runs.

Ops without an ONNX counterpart are written as their composition (the LSTM step as slices,
gates and products). An op with no rule stops the export with its name.
"""
import numpy as np

from ..engine import Tensor
from ..files import atomic_write
from ..tracing import forward_ops

OPSET, IR_VERSION = 20, 10       # what onnxruntime 1.17 and later run (Gelu is opset 20's)
INT64_MAX = np.iinfo(np.int64).max


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError("onnx: export and load need the onnx package: "
                          "pip install \"tinygrad_mnist[onnx]\" (or onnx)") from None
    return onnx


class Graph:
    """The nodes, constants and value names of the model being written."""

    def __init__(self, onnx, batch, input_name):
        self.onnx, self.batch, self.input_name = onnx, batch, input_name
        self.nodes, self.initializers, self.names = [], [], {}
        self._count, self._batch_dim = 0, None

    def fresh(self, hint):
        self._count += 1
        return f"{hint}_{self._count}"

    def name_of(self, tensor):
        """A value's name; a tensor no op made (a constant of the model) becomes one."""
        key = id(tensor)
        if key not in self.names:
            data = tensor.data
            at = [k for k, n in enumerate(data.shape) if n == self.batch]
            if len(at) == 1 and data.size and (data == data.flat[0]).all():
                # one value made for the example's batch (an RNN's zero state): written as
                # that value expanded to the input's batch size as the model runs
                fill = self.constant(np.asarray(data.flat[0], data.dtype), "fill")
                self.names[key] = self.node("Expand", [fill, self.shape_value(
                    list(data.shape), batch_at=at[0])])
            else:
                self.constant(data, "constant", key=key)
        return self.names[key]

    def constant(self, array, hint, key=None, name=None):
        """A named array (a parameter or buffer) as an initializer; any other constant as a
        Constant node (so a reader can tell the weights from the rest)."""
        tensor = self.onnx.numpy_helper.from_array(np.asarray(array), name or "")
        if name is not None:
            self.initializers.append(tensor)
        else:
            name = self.fresh(hint)
            tensor.name = name
            self.nodes.append(self.onnx.helper.make_node("Constant", [], [name], value=tensor))
        if key is not None:
            self.names[key] = name
        return name

    def ints(self, values, hint="ints"):
        return self.constant(np.asarray(values, dtype=np.int64), hint)

    def node(self, op_type, inputs, outputs=1, **attributes):
        names = [self.fresh(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), names,
                                                     **attributes))
        return names[0] if outputs == 1 else names

    def batch_dim(self):
        """A (1,) int64 value: the input's batch size, as the model runs."""
        if self._batch_dim is None:
            shape = self.node("Shape", [self.input_name])
            self._batch_dim = self.node("Slice", [shape, self.ints([0]), self.ints([1])])
        return self._batch_dim

    def shape_value(self, shape, batch_at=None):
        """A shape as a value; the entry at batch_at is the input's batch size."""
        if batch_at is None:
            return self.ints(shape, "shape")
        parts = [self.ints(shape[:batch_at])] if batch_at else []
        parts.append(self.batch_dim())
        if batch_at + 1 < len(shape):
            parts.append(self.ints(shape[batch_at + 1:]))
        return self.node("Concat", parts, axis=0)


# ---------------------------------------------------------------- each op's rule
# rule(graph, op, inputs, names, output) -> the output's name; inputs are the op's Tensors,
# names their ONNX values.

def _elementwise(onnx_type):
    return lambda g, op, inputs, names, out: g.node(onnx_type, names)


def _linear(g, op, inputs, names, out):
    if inputs[0].ndim == 2:
        return g.node("Gemm", names, transB=1)
    product = g.node("MatMul", [names[0], g.node("Transpose", [names[1]], perm=[1, 0])])
    return g.node("Add", [product, names[2]]) if len(names) == 3 else product


def _pairs(geometry):
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (geometry.kernel, geometry.stride,
                                              geometry.padding, geometry.dilation)
    return dict(kernel_shape=[kh, kw], strides=[sh, sw], pads=[ph, pw, ph, pw],
                dilations=[dh, dw])


def _conv(g, op, inputs, names, out):
    geometry = op.options["geometry"]
    return g.node("Conv", names, group=geometry.groups, **_pairs(geometry))


def _pool(onnx_type):
    def rule(g, op, inputs, names, out):
        attributes = _pairs(op.options["geometry"])
        if onnx_type == "AveragePool":
            attributes.pop("dilations")
            attributes["count_include_pad"] = 1     # the engine divides by the window's size
        return g.node(onnx_type, names, **attributes)
    return rule


def _batch_norm(g, op, inputs, names, out):
    if op.options.get("training", True):
        raise ValueError("onnx.export: batch norm in training mode normalizes by the batch's "
                         "statistics; export the model in eval mode")
    return g.node("BatchNormalization", names, epsilon=float(op.options.get("eps", 1e-5)))


def _layer_norm(g, op, inputs, names, out):
    return g.node("LayerNormalization", names, axis=-int(op.options.get("dims", 1)),
                  epsilon=float(op.options.get("eps", 1e-5)))


def _softmax(onnx_type):
    return lambda g, op, inputs, names, out: g.node(onnx_type, names,
                                                    axis=int(op.options["axis"]))


def _reduce(onnx_type):
    def rule(g, op, inputs, names, out):
        axis, keep = op.options["axis"], int(bool(op.options["keepdims"]))
        if axis is None:
            return g.node(onnx_type, names, keepdims=keep)
        axes = [axis] if np.ndim(axis) == 0 else list(axis)
        return g.node(onnx_type, [names[0], g.ints(axes, "axes")], keepdims=keep)
    return rule


def _pow_const(g, op, inputs, names, out):
    exponent = np.asarray(op.options["exponent"], dtype=inputs[0].dtype)
    return g.node("Pow", [names[0], g.constant(exponent, "exponent")])


def _silu(g, op, inputs, names, out):
    return g.node("Mul", [names[0], g.node("Sigmoid", names)])


def _clip(g, op, inputs, names, out):
    dtype = inputs[0].dtype
    bounds = [g.constant(np.asarray(-np.inf if v is None else v, dtype), "bound")
              for v in (op.options["lo"], op.options["hi"])]
    return g.node("Clip", [names[0], *bounds])


def _cast(g, op, inputs, names, out):
    to = g.onnx.helper.np_dtype_to_tensor_dtype(np.dtype(op.options["dtype"]))
    return g.node("Cast", names, to=to)


def _batch_leads(g, tensor):
    return tensor.ndim > 0 and tensor.shape[0] == g.batch


def _reshape(g, op, inputs, names, out):
    """The target shape with the batch left free: 0 (keep the input's first axis) where the
    batch stays in front, -1 where it is merged into the first axis."""
    target = [int(s) for s in out.shape]
    if _batch_leads(g, inputs[0]):
        if target and target[0] == g.batch:
            target[0] = 0
        elif target and target[0] % g.batch == 0:
            target[0] = -1
        else:
            raise ValueError(f"onnx.export: a reshape from {inputs[0].shape} to {out.shape} "
                             f"moves the batch axis (batch {g.batch}); it cannot be "
                             f"written for any batch size")
    return g.node("Reshape", [names[0], g.ints(target, "shape")])


def _transpose(g, op, inputs, names, out):
    return g.node("Transpose", names, perm=[int(a) for a in op.options["axes"]])


def _broadcast_to(g, op, inputs, names, out):
    """Expand: 1 where the input keeps its size (ONNX broadcasts both ways), the size where it
    is stretched, and the input's batch where a batch-sized axis is made in front."""
    shape, source = list(out.shape), (1,) * (out.ndim - inputs[0].ndim) + inputs[0].shape
    shape = [1 if s == d else s for s, d in zip(shape, source)]
    batch_at = 0 if shape and shape[0] == g.batch and source[0] != g.batch else None
    return g.node("Expand", [names[0], g.shape_value(shape, batch_at)])


def _index_parts(index, ndim):
    index = index if isinstance(index, tuple) else (index,)
    used = sum(1 for i in index if i is not None and i is not Ellipsis)
    expanded = []
    for i in index:
        if i is Ellipsis:
            expanded += [slice(None)] * (ndim - used)
        else:
            expanded.append(i)
    return expanded + [slice(None)] * (ndim - sum(1 for i in expanded if i is not None))


def _getitem(g, op, inputs, names, out):
    """Basic indexing as Slice, Squeeze (integers) and Unsqueeze (None); one integer array
    on one axis (the rest whole) as Gather."""
    index, value = op.options["index"], names[0]
    parts = _index_parts(index, inputs[0].ndim)
    if op.options["advanced"]:
        arrays = [k for k, i in enumerate(parts) if isinstance(i, np.ndarray)]
        whole = all(i == slice(None) for k, i in enumerate(parts) if k not in arrays)
        if len(arrays) != 1 or not whole:
            raise ValueError(f"onnx.export: indexing with {index!r} is not written (one "
                             f"integer array on one axis is)")
        k = arrays[0]
        return g.node("Gather", [value, g.ints(parts[k], "indices")], axis=k)
    starts, ends, axes, steps, squeeze, unsqueeze = [], [], [], [], [], []
    axis = out_axis = 0
    for i in parts:
        if i is None:
            unsqueeze.append(out_axis)
            out_axis += 1
            continue
        if isinstance(i, slice):
            if i != slice(None):
                step = 1 if i.step is None else i.step
                starts.append(i.start if i.start is not None else
                              (0 if step > 0 else INT64_MAX))
                ends.append(i.stop if i.stop is not None else
                            (INT64_MAX if step > 0 else -INT64_MAX))
                axes.append(axis)
                steps.append(step)
            out_axis += 1
        else:                                         # an integer: a slice of one, squeezed
            i = int(i)
            starts.append(i)
            ends.append(i + 1 if i != -1 else INT64_MAX)
            axes.append(axis)
            steps.append(1)
            squeeze.append(axis)
        axis += 1
    if axes:
        value = g.node("Slice", [value, g.ints(starts), g.ints(ends), g.ints(axes),
                                 g.ints(steps)])
    if squeeze:
        value = g.node("Squeeze", [value, g.ints(squeeze, "axes")])
    if unsqueeze:
        value = g.node("Unsqueeze", [value, g.ints(unsqueeze, "axes")])
    if value == names[0]:
        value = g.node("Identity", [value])
    return value


def _concat(g, op, inputs, names, out):
    return g.node("Concat", names, axis=int(op.options["axis"]))


def _stack(g, op, inputs, names, out):
    axis = g.ints([op.options["axis"]], "axes")
    return g.node("Concat", [g.node("Unsqueeze", [n, axis]) for n in names],
                  axis=int(op.options["axis"]))


def _where(g, op, inputs, names, out):
    x, y, condition = names
    return g.node("Where", [condition, x, y])


def _embedding(g, op, inputs, names, out):
    weight, indices = names
    as_int = g.node("Cast", [indices], to=g.onnx.TensorProto.INT64)
    return g.node("Gather", [weight, as_int], axis=0)


def _lstm_cell(g, op, inputs, names, out):
    """[h' | c'] from the gates' pre-activations (i, f, g, o) and the cell state."""
    pre, c = names
    H = inputs[1].shape[-1]
    last = g.ints([-1], "axes")

    def gate(k):
        return g.node("Slice", [pre, g.ints([k * H]), g.ints([(k + 1) * H]), last])
    i, f, o = (g.node("Sigmoid", [gate(k)]) for k in (0, 1, 3))
    cell = g.node("Tanh", [gate(2)])
    c_next = g.node("Add", [g.node("Mul", [f, c]), g.node("Mul", [i, cell])])
    h_next = g.node("Mul", [o, g.node("Tanh", [c_next])])
    return g.node("Concat", [h_next, c_next], axis=-1)


RULES = {
    "add": _elementwise("Add"), "sub": _elementwise("Sub"), "mul": _elementwise("Mul"),
    "div": _elementwise("Div"), "maximum": _elementwise("Max"),
    "minimum": _elementwise("Min"), "neg": _elementwise("Neg"), "exp": _elementwise("Exp"),
    "log": _elementwise("Log"), "sqrt": _elementwise("Sqrt"), "sin": _elementwise("Sin"),
    "cos": _elementwise("Cos"), "abs": _elementwise("Abs"), "relu": _elementwise("Relu"),
    "sigmoid": _elementwise("Sigmoid"), "tanh": _elementwise("Tanh"),
    "gelu": _elementwise("Gelu"), "silu": _silu, "clip": _clip, "cast": _cast,
    "matmul": _elementwise("MatMul"), "linear": _linear,
    "conv2d": _conv, "max_pool2d": _pool("MaxPool"), "avg_pool2d": _pool("AveragePool"),
    "batch_norm": _batch_norm, "layer_norm": _layer_norm,
    "softmax": _softmax("Softmax"), "log_softmax": _softmax("LogSoftmax"),
    "sum": _reduce("ReduceSum"), "mean": _reduce("ReduceMean"), "max": _reduce("ReduceMax"),
    "min": _reduce("ReduceMin"), "reshape": _reshape, "transpose": _transpose,
    "broadcast_to": _broadcast_to, "getitem": _getitem, "concat": _concat,
    "stack": _stack, "where": _where, "embedding": _embedding, "lstm_cell": _lstm_cell,
}


def _value_names(model):
    """id(tensor) -> its name: the parameters' and buffers' dotted names."""
    named = dict(model.named_buffers())
    named.update(model.named_parameters())
    return {id(t): name for name, t in named.items()}


def build(model, example_input, input_name="input", output_name="logits"):
    """The ONNX ModelProto of model's forward pass (in eval mode) on example_input."""
    onnx = _onnx()
    x = example_input if isinstance(example_input, Tensor) else \
        Tensor.from_numpy(np.asarray(example_input))             # its dtype kept
    if x.ndim == 0 or x.shape[0] < 2:
        raise ValueError(f"onnx.export: the example input {x.shape} needs a batch of at least "
                         f"2 on its first axis (the axis left free in the file)")
    steps, y = forward_ops(model, x)
    if not isinstance(y, Tensor):
        raise ValueError(f"onnx.export: the model must return one Tensor, got "
                         f"{type(y).__name__}")
    g = Graph(onnx, x.shape[0], input_name)
    g.names[id(x)] = input_name
    known = _value_names(model)        # (the trace holds every tensor, so ids stay unique)
    for op, inputs, output in steps:
        for t in inputs:
            if id(t) in known and id(t) not in g.names:
                g.constant(t.data, "", key=id(t), name=known[id(t)])
        rule = RULES.get(op.name)
        if rule is None:
            raise ValueError(f"onnx.export: the model runs {op.name}, which has no ONNX rule "
                             f"(written: {', '.join(sorted(RULES))})")
        names = [g.name_of(t) for t in inputs]
        g.names[id(output)] = rule(g, op, inputs, names, output)
    result = g.names.get(id(y))
    if result is None:
        raise ValueError("onnx.export: the model's output was not made by an op")
    g.nodes.append(onnx.helper.make_node("Identity", [result], [output_name]))
    element = onnx.helper.np_dtype_to_tensor_dtype
    graph = onnx.helper.make_graph(
        g.nodes, type(model).__name__,
        [onnx.helper.make_tensor_value_info(input_name, element(x.dtype),
                                            ["batch", *x.shape[1:]])],
        [onnx.helper.make_tensor_value_info(output_name, element(y.dtype),
                                            ["batch", *y.shape[1:]])],
        g.initializers)
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)],
                                   producer_name="tinygrad_mnist", ir_version=IR_VERSION)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export(model, example_input, path, input_name="input", output_name="logits"):
    """Write model's forward pass as an ONNX file at path (the batch axis free); returns the
    ModelProto. Checked with onnx.checker (full check, shapes inferred) before it is written."""
    proto = build(model, example_input, input_name, output_name)
    with atomic_write(path) as f:
        f.write(proto.SerializeToString())
    return proto

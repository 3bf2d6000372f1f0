"""What `tinygrad-mnist gradcheck` and `tinygrad-mnist graph` produce: every op against finite
differences, the built-in models against the hand-derived backprop, the reference notebooks'
formulas against autograd, and the SVG gallery."""
import os

import numpy as np

from .. import nn, ops
from . import reference
from ..gradcheck import numerical_grad
from ..tensor import Tensor

# name -> (function of the inputs, input specs): a spec is a shape, or (shape, low, high)
OP_CASES = {
    "add (broadcast)": (lambda a, b: a + b, [(2, 3), (3,)]),
    "sub (broadcast)": (lambda a, b: a - b, [(4, 1), (1, 5)]),
    "mul (0-d)": (lambda a, b: a * b, [(), (2, 3)]),
    "div": (lambda a, b: a / b, [(2, 3), ((2, 3), 0.5, 2.0)]),
    "pow (tensor exponent)": (lambda a, b: a ** b, [((2, 3), 0.5, 2.0), (3,)]),
    "pow (constant)": (lambda a: a ** 3, [(2, 3)]),
    "neg": (lambda a: -a, [(3,)]),
    "matmul 2-d": (lambda a, b: a @ b, [(3, 4), (4, 5)]),
    "matmul 1-d": (lambda a, b: a @ b, [(4,), (4, 5)]),
    "matmul batched": (lambda a, b: a @ b, [(2, 3, 4), (2, 4, 5)]),
    "sum (axis, keepdims)": (lambda a: a.sum(axis=(0, 2), keepdims=True), [(2, 3, 4)]),
    "mean (negative axis)": (lambda a: a.mean(axis=-1), [(2, 3, 4)]),
    "max (axis)": (lambda a: a.max(axis=1), [(3, 5)]),
    "exp": (lambda a: a.exp(), [(2, 3)]),
    "log": (lambda a: a.log(), [((2, 3), 0.5, 2.0)]),
    "sqrt": (lambda a: a.sqrt(), [((2, 3), 0.5, 2.0)]),
    "abs": (lambda a: a.abs(), [((2, 3), 0.1, 2.0)]),
    "relu": (lambda a: a.relu(), [((2, 3), 0.1, 2.0)]),
    "sigmoid": (lambda a: a.sigmoid(), [(2, 3)]),
    "tanh": (lambda a: a.tanh(), [(2, 3)]),
    "softmax": (lambda a: a.softmax(), [(2, 5)]),
    "log_softmax": (lambda a: a.log_softmax(axis=0), [(4, 3)]),
    "clip": (lambda a: a.clip(-10, 10), [(2, 3)]),
    "maximum": (lambda a, b: a.maximum(b), [((3,), 0, 1), ((3,), 2, 3)]),
    "minimum": (lambda a, b: a.minimum(b), [((3,), 0, 1), ((3,), 2, 3)]),
    "reshape": (lambda a: a.reshape(3, -1), [(2, 6)]),
    "transpose": (lambda a: a.transpose(2, 0, 1), [(2, 3, 4)]),
    "getitem (slices)": (lambda a: a[1:, ::2], [(4, 5)]),
    "getitem (repeated indices)": (lambda a: a[np.array([0, 2, 0, 0])], [(3, 4)]),
    "concat": (lambda a, b: Tensor.concat([a, b], axis=1), [(2, 3), (2, 2)]),
    "stack": (lambda a, b: Tensor.stack([a, b], axis=-1), [(2, 3), (2, 3)]),
    "linear (fused)": (lambda x, w, b: Tensor._apply(ops.Linear, x, w, b),
                       [(4, 5), (3, 5), (3,)]),
    "cross_entropy": (lambda z: nn.cross_entropy(z, np.array([0, 2, 1, 2])), [(4, 3)]),
    "mse_loss": (lambda a: nn.mse_loss(a, np.ones((2, 3))), [(2, 3)]),
    "binary_cross_entropy": (lambda p: nn.binary_cross_entropy(p, np.array([0., 1, 1])),
                             [((3,), 0.1, 0.9)]),
}


def _make_inputs(specs, rng):
    inputs = []
    for spec in specs:
        if len(spec) == 3 and isinstance(spec[0], tuple):
            shape, low, high = spec
            data = rng.uniform(low, high, size=shape)
        else:
            data = rng.normal(size=spec)
        inputs.append(Tensor(data, requires_grad=True, dtype=np.float64))
    return inputs


def op_errors(seed=0):
    """[(op, max |autograd - finite differences| relative to the largest gradient)]."""
    rng = np.random.default_rng(seed)
    rows = []
    for name, (fn, specs) in OP_CASES.items():
        inputs = _make_inputs(specs, rng)
        weights = rng.normal(size=fn(*inputs).shape)      # a non-uniform upstream gradient

        def scalar(*xs):
            return (fn(*xs) * weights).sum()
        scalar(*inputs).backward()
        numeric = numerical_grad(scalar, inputs)
        error = max(float(np.abs(t.grad - n).max() / max(np.abs(n).max(), 1e-12))
                    for t, n in zip(inputs, numeric))
        rows.append((name, error))
    return rows


def format_table(header, rows):
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths))
                     for r in [header, ["-" * w for w in widths], *rows])


def gradcheck_report(tolerance=1e-6):
    """The full report printed by `tinygrad-mnist gradcheck`, and whether all expected
    results held (ops and models pass; notebooks match their known findings)."""
    out, all_ok = [], True
    rows = []
    for name, error in op_errors():
        ok = error <= tolerance
        all_ok &= ok
        rows.append([name, f"{error:.1e}", "pass" if ok else "FAIL"])
    out += ["Every op: autograd against central finite differences (float64)",
            format_table(["op", "max rel error", "result"], rows), ""]

    rows = []
    for sizes in ((784, 128, 10), (784, 64, 32, 10)):
        for activation in ("relu", "sigmoid", "tanh"):
            report = reference.check_mlp_backprop(sizes, activation)
            worst = max(r.rel_error for r in report.rows)
            numeric = max(r.autograd_numeric_rel_error for r in report.rows)
            all_ok &= report.ok
            rows.append([f"MLP {'-'.join(map(str, sizes))} {activation}", f"{worst:.1e}",
                         f"{numeric:.1e}", "pass" if report.ok else "FAIL"])
    out += ["Built-in models: the hand-derived backprop (reference.mlp_backprop) against autograd",
            format_table(["model", "max rel error vs autograd", "autograd vs finite diff",
                          "result"], rows), ""]

    for name, nb in reference.NOTEBOOKS.items():
        report = reference.check_notebook(name)
        out += [f"Reference notebook {name}: {nb.network}; loss: {nb.loss_name}",
                str(report)]
        if nb.note:
            out.append(f"note: {nb.note}")
        out.append("")
    return "\n".join(out), all_ok


# ---------------------------------------------------------------- the SVG gallery

def _scalar_expression():
    a, b = Tensor(2.0, requires_grad=True), Tensor(-3.0, requires_grad=True)
    c, f = Tensor(10.0, requires_grad=True), Tensor(-2.0, requires_grad=True)
    loss = (a * b + c) * f
    loss.backward(retain_graph=True)
    return loss, {"a": a, "b": b, "c": c, "f": f}


def _neuron():
    """micrograd's neuron: o = tanh(x1 w1 + x2 w2 + b)."""
    x1, x2 = Tensor(2.0, requires_grad=True), Tensor(0.0, requires_grad=True)
    w1, w2 = Tensor(-3.0, requires_grad=True), Tensor(1.0, requires_grad=True)
    b = Tensor(6.8813735870195432, requires_grad=True)
    o = (x1 * w1 + x2 * w2 + b).tanh()
    o.backward(retain_graph=True)
    return o, {"x1": x1, "x2": x2, "w1": w1, "w2": w2, "b": b}


def write_gallery(directory):
    """Write the gallery's SVGs into directory; returns the file names."""
    from .train import Config, make_model
    from ..tensor import manual_seed
    from ..viz import draw_graph
    os.makedirs(directory, exist_ok=True)
    written = []

    def save(name, tensor, **kwargs):
        draw_graph(tensor, os.path.join(directory, name), **kwargs)
        written.append(name)

    loss, names = _scalar_expression()
    save("scalar_expression.svg", loss, names=names)
    o, names = _neuron()
    save("neuron.svg", o, names=names)

    manual_seed(0)
    config = Config()
    model = make_model(config)
    rng = np.random.default_rng(0)
    x = Tensor(rng.normal(size=(config.batch_size, 784)).astype(np.float32))
    loss = nn.cross_entropy(model(x), rng.integers(0, 10, size=config.batch_size))
    save("mlp_forward.svg", loss, names={"images": x})
    loss.backward(retain_graph=True)
    save("mlp_gradients.svg", loss, names={"images": x})
    save("mlp_collapsed.svg", loss, names={"images": x}, collapse_modules=True)

    for name, nb in reference.NOTEBOOKS.items():
        params = {k: Tensor(v, requires_grad=True) for k, v in nb.params(rng).items()}
        x = rng.random((4, 784))
        labels = np.array([3, 1, 4, 1])
        loss = nb.loss(params, x, labels)
        loss.backward(retain_graph=True)
        save(f"reference_{name}.svg", loss, names=params)
    return written

"""What `tinygrad-mnist gradcheck` and `tinygrad-mnist graph` produce: every op against finite
differences, the built-in models against the hand-derived backprop, the reference notebooks'
formulas against autograd, and the SVG gallery."""
import os

import numpy as np

from .. import nn
from . import reference
from ..gradcheck import numerical_grad
from ..op_cases import OP_CASES
from ..tables import text_table
from ..engine import Tensor, get_rng


def op_errors(seed=0):
    """[(op, number of checks, max |autograd - finite differences| relative to the largest
    gradient)], over every row of the op table and each of its input shapes."""
    rng = np.random.default_rng(seed)
    worst = {}
    for case in OP_CASES:
        for shapes in case.shapes:
            inputs = case.inputs(shapes, rng)
            scalar = case.weighted(rng, inputs)
            draws = get_rng().bit_generator.state     # random rows see the same draws twice
            scalar(*inputs).backward()
            get_rng().bit_generator.state = draws
            numeric = numerical_grad(scalar, inputs)
            error = max((float(np.abs(t.grad - n).max() / max(np.abs(n).max(), 1e-12))
                         for t, n in zip(inputs, numeric) if n.size), default=0.0)
            count, previous = worst.get(case.op, (0, 0.0))
            worst[case.op] = (count + 1, max(previous, error))
    return [(op, count, error) for op, (count, error) in worst.items()]


def format_table(header, rows):
    return text_table(header, rows, rule=True)


def gradcheck_report(tolerance=1e-6):
    """The full report printed by `tinygrad-mnist gradcheck`, and whether all expected
    results held (ops and models pass; notebooks match their known findings)."""
    out, all_ok = [], True
    rows = []
    for name, count, error in op_errors():
        ok = error <= tolerance
        all_ok &= ok
        rows.append([name, count, f"{error:.1e}", "pass" if ok else "FAIL"])
    out += ["Every op: autograd against central finite differences (float64), on the rows of "
            "tinygrad_mnist/op_cases.py",
            format_table(["op", "checks", "max rel error", "result"], rows), ""]

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
    return (a * b + c) * f, {"a": a, "b": b, "c": c, "f": f}


def _neuron():
    """micrograd's neuron: o = tanh(x1 w1 + x2 w2 + b)."""
    x1, x2 = Tensor(2.0, requires_grad=True), Tensor(0.0, requires_grad=True)
    w1, w2 = Tensor(-3.0, requires_grad=True), Tensor(1.0, requires_grad=True)
    b = Tensor(6.8813735870195432, requires_grad=True)
    o = (x1 * w1 + x2 * w2 + b).tanh()
    return o, {"x1": x1, "x2": x2, "w1": w1, "w2": w2, "b": b}


def _derivatives():
    """f(x) = x tanh(x) at x = 0.8, its derivative and its second derivative, each a graph:
    grad(..., create_graph=True) records the backward pass like any other computation."""
    from ..engine import grad
    x = Tensor(0.8, requires_grad=True)
    t = x.tanh()
    f = x * t
    (df,) = grad(f, x, create_graph=True)           # tanh(x) + x (1 - tanh(x)^2)
    (d2f,) = grad(df, x, create_graph=True)         # 2 (1 - tanh^2) (1 - x tanh(x))
    names = {"x": x, "tanh(x)": t, "f": f, "df/dx": df, "d2f/dx2": d2f}
    return [("derivative_0_f.svg", f, names), ("derivative_1_df.svg", df, names),
            ("derivative_2_d2f.svg", d2f, names)]


def _dual_numbers():
    """f = x*y + sin(x) at x = 2, y = 3 in forward mode, with tangents 1 for x and 0 for y:
    every tensor carries its derivative by x along, as a dual number a + b*eps does."""
    from ..func.forward import Tangents
    from ..engine import observe
    x = Tensor(2.0, requires_grad=True, dtype=np.float64)
    y = Tensor(3.0, requires_grad=True, dtype=np.float64)
    mode = Tangents()
    mode.set(x, np.float64(1.0))
    mode.set(y, np.float64(0.0))
    with observe(mode):               # the graph recorded too, so that it can be drawn
        f = x * y + x.sin()
    return f, {"x": x, "y": y, "f": f}, mode.get


def write_gallery(directory, html=False):
    """Write the gallery's SVGs into directory, and with html the graph explorer's pages of
    the scalar expression, the neuron, the MNIST MLP, LeNet-5, a one-block vision transformer
    and the reference notebooks
    (each made before backward, so its stepper reveals the gradients); returns the file
    names."""
    from .factories import make_model
    from .models import VisionTransformer
    from .options import Config
    from ..engine import manual_seed, topo_order
    from ..viz import draw_graph, explore, record_modules
    os.makedirs(directory, exist_ok=True)
    written = []

    def save(name, tensor, **kwargs):
        draw_graph(tensor, os.path.join(directory, name), **kwargs)
        written.append(name)

    def page(name, tensor, names, title):
        if html:
            explore(tensor, os.path.join(directory, name), names=names, title=title)
            written.append(name)

    for name, (out, names), title in (
            ("scalar_expression", _scalar_expression(), "(a*b + c) * f"),
            ("neuron", _neuron(), "micrograd's neuron: tanh(x1*w1 + x2*w2 + b)")):
        page(f"{name}.html", out, names, title)
        out.backward(retain_graph=True)
        save(f"{name}.svg", out, names=names)
    for name, tensor, names in _derivatives():
        save(name, tensor, names=names)
    out, names, tangents = _dual_numbers()
    save("forward_mode_tangents.svg", out, names=names, tangents=tangents)

    manual_seed(0)
    config = Config()
    model = make_model(config)
    rng = np.random.default_rng(0)
    x = Tensor(rng.normal(size=(config.batch_size, 784)).astype(np.float32))
    with record_modules():
        loss = nn.cross_entropy(model(x), rng.integers(0, 10, size=config.batch_size))
    save("mlp_forward.svg", loss, names={"images": x})
    page("mlp.html", loss, {"images": x}, "The default MNIST MLP and its cross-entropy loss")
    loss.backward(retain_graph=True)
    save("mlp_gradients.svg", loss, names={"images": x})
    save("mlp_collapsed.svg", loss, names={"images": x}, collapse_modules=True)

    manual_seed(0)                          # the conv net: a small batch keeps numbers legible
    model = make_model(Config(arch="lenet5", dropout=0.0))
    x = Tensor(rng.normal(size=(8, 784)).astype(np.float32))
    with record_modules():
        loss = nn.cross_entropy(model(x), rng.integers(0, 10, size=8))
    page("lenet5.html", loss, {"images": x}, "LeNet-5 and its cross-entropy loss")
    loss.backward(retain_graph=True)
    save("lenet5.svg", loss, names={"images": x})
    save("lenet5_collapsed.svg", loss, names={"images": x}, collapse_modules=True)

    labels = np.arange(10)                          # every class: 002's one_hot needs them all
    onehot = np.eye(10)[labels].T                   # the notebooks' (10, m) one-hot targets
    for name, nb in reference.NOTEBOOKS.items():
        params = {k: Tensor(v, requires_grad=True) for k, v in nb.params(rng).items()}
        x = Tensor(rng.random((10, 784)))
        loss = nb.loss(params, x, labels)
        names = {**params, "X (10 images)": x}
        for node in topo_order(loss, constants=True):
            if node.op is None and np.array_equal(node.data, onehot):
                names["one-hot Y"] = node          # made inside the loss from the labels
        page(f"reference_{name}.html", loss, names,
             f"Reference notebook {name}: {nb.network}, its own forward code")
        loss.backward(retain_graph=True)
        save(f"reference_{name}.svg", loss, names=names)
        if name == "002":                 # its Python sum makes it tall: a compact view too
            save(f"reference_{name}_compact.svg", loss, names=names, compact=True)

    manual_seed(0)                    # a vision transformer of one block: its attention drawn
    rng = np.random.default_rng(0)
    model = VisionTransformer(depth=1)
    x = Tensor(rng.normal(size=(2, 784)).astype(np.float32))
    with record_modules():
        loss = nn.cross_entropy(model(x), rng.integers(0, 10, size=2))
    page("vit.html", loss, {"images": x},
         "A vision transformer of one block: step backward through its attention")
    loss.backward(retain_graph=True)
    save("vit_block.svg", loss, names={"images": x}, collapse_modules=True, compact=True)

    manual_seed(0)                    # the row LSTM: its 28 steps inside the LSTM's one node
    model = make_model(Config(arch="lstm", dropout=0.0))
    x = Tensor(rng.normal(size=(2, 784)).astype(np.float32))
    with record_modules():
        loss = nn.cross_entropy(model(x), rng.integers(0, 10, size=2))
    loss.backward(retain_graph=True)
    save("lstm_collapsed.svg", loss, names={"images": x}, collapse_modules=True)
    return written

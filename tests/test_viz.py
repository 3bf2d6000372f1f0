"""Graph drawings: nodes and counts, module boxes, determinism, rendering without `dot`."""
import re

import numpy as np
import pytest

from tinygrad_mnist import Tensor, manual_seed, nn
from tinygrad_mnist.viz import drawing as viz
from tinygrad_mnist.mnist.checks import write_gallery
from tinygrad_mnist.viz import draw_graph, record_modules


def op_labels(graph):
    return re.findall(r'op \[label=(\w+)', graph.source)


def test_scalar_expression_nodes_values_and_grads():
    a, b = Tensor(2.0, requires_grad=True), Tensor(-3.0, requires_grad=True)
    c = Tensor(10.0, requires_grad=True)
    out = a * b + c
    out.backward(retain_graph=True)
    g = draw_graph(out, names={"a": a, "b": b, "c": c})
    assert sorted(op_labels(g)) == ["add", "mul"]
    assert g.source.count("shape=record") == 5                # a, b, c, a*b, out
    assert "{a | data 2.0000 | grad -3.0000}" in g.source
    assert "data 4.0000 | grad 1.0000" in g.source            # the output
    assert g.source.count("#ffe08a") == 1                     # one output colour


def test_before_backward_there_are_no_grads():
    x = Tensor(np.ones((2, 3)), requires_grad=True)
    g = draw_graph((x * 2).sum())
    assert "grad" not in g.source and "(2, 3) float32" in g.source


def test_mlp_ops_are_grouped_by_module_and_collapse():
    manual_seed(0)
    model = nn.MLP([784, 32, 10], dropout=0.1)
    x = Tensor(np.random.default_rng(0).random((4, 784)))
    assert draw_graph(nn.cross_entropy(model(x), [1, 2, 3, 4])).source.count(
        "subgraph cluster_") == 0                            # not recorded: no boxes
    with record_modules():
        loss = nn.cross_entropy(model(x), [1, 2, 3, 4])
    g = draw_graph(loss, names={"x": x})
    assert sorted(op_labels(g)) == ["cross_entropy", "dropout", "linear", "linear", "relu"]
    assert g.source.count("subgraph cluster_") == 3           # MLP, and a Linear box each
    assert "label=\"Linear(784→32)\"" in g.source and "label=\"Linear(32→10)\"" in g.source
    assert "{layers.0.weight | (32, 784) float32" in g.source and "{x | (4, 784)" in g.source
    collapsed = draw_graph(loss, collapse_modules=True)
    assert collapsed.source.count("box3d") == 2
    assert "layers.0.weight" not in collapsed.source
    assert sorted(op_labels(collapsed)) == ["cross_entropy", "dropout", "relu"]


def test_same_expression_same_svg(tmp_path):
    def build():
        a = Tensor(1.5, requires_grad=True)
        out = (a * a).tanh() + a.exp()
        out.backward(retain_graph=True)
        return out
    draw_graph(build(), tmp_path / "one.svg")
    draw_graph(build(), tmp_path / "two.svg")
    assert (tmp_path / "one.svg").read_bytes() == (tmp_path / "two.svg").read_bytes()


def test_svg_is_rendered_without_dot_on_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))                 # no `dot` anywhere
    monkeypatch.setattr(viz.shutil, "which", lambda name: None)
    a = Tensor(3.0, requires_grad=True)
    path = tmp_path / "graph.svg"
    g = draw_graph(a * a, path)
    svg = path.read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and ">mul<" in svg
    bundle = g._repr_mimebundle_()                            # a notebook shows it inline
    assert "<svg" in bundle["image/svg+xml"]


def test_gallery_has_every_drawing(tmp_path):
    names = write_gallery(tmp_path)
    assert names == ["scalar_expression.svg", "neuron.svg", "derivative_0_f.svg",
                     "derivative_1_df.svg", "derivative_2_d2f.svg",
                     "forward_mode_tangents.svg", "mlp_forward.svg",
                     "mlp_gradients.svg", "mlp_collapsed.svg", "lenet5.svg",
                     "lenet5_collapsed.svg"] + [
        f"reference_{n}.svg" for n in ("000", "001", "002")] + [
        "reference_002_compact.svg", "reference_003.svg", "reference_004.svg",
        "vit_block.svg", "lstm_collapsed.svg"]
    for name in names:
        assert "<svg" in (tmp_path / name).read_text()
    assert "grad" in (tmp_path / "mlp_gradients.svg").read_text()
    assert "grad" not in (tmp_path / "mlp_forward.svg").read_text()
    dual = (tmp_path / "forward_mode_tangents.svg").read_text()
    # f = x*y + sin(x) at (2, 3) along x: the tangent of f is y + cos(x) = 2.5839
    assert "tangent 2.5839" in dual and "tangent 1.0000" in dual and "tangent &#45;0.4161" in dual
    lenet = (tmp_path / "lenet5.svg").read_text()
    # the conv net drawn with its module boxes, each conv op inside its layer's box
    assert "LeNet&#45;5" in lenet and lenet.count(">Conv2d(") == 2 and lenet.count(">conv2d<") == 2
    assert lenet.count(">max_pool2d<") == 2
    # attention drawn inside its box, its parameter-holding layers folded to one node each;
    # the ViT's own parameters (class token, positions) do not fold the whole model away
    vit = (tmp_path / "vit_block.svg").read_text()
    assert "MultiheadAttention(64," in vit and ">softmax<" in vit and vit.count(">matmul<") == 2
    assert ">Linear(64&#45;&gt;128)" in vit or ">Linear(64→128)" in vit
    assert ">class_token<" in vit and ">layer_norm<" not in vit
    lstm = (tmp_path / "lstm_collapsed.svg").read_text()
    assert ">LSTM(28," in lstm and "lstm_cell" not in lstm and ">Linear(128→10)" in lstm


def test_path_gets_the_format_extension(tmp_path):
    a = Tensor(2.0, requires_grad=True)
    draw_graph(a * 3, tmp_path / "expr")
    draw_graph(a * 3, tmp_path / "kept.svg")
    draw_graph(a * 3, tmp_path / "layout", format="json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["expr.svg", "kept.svg", "layout.json"]


def test_formats_without_dot_say_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(viz.shutil, "which", lambda name: None)
    a = Tensor(2.0, requires_grad=True)
    for format in ("png", "pdf"):
        with pytest.raises(RuntimeError, match=rf"format '{format}' needs Graphviz's `dot`.*svg"):
            draw_graph(a * 3, tmp_path / "g", format=format)
    assert not list(tmp_path.iterdir())
    draw_graph(a * 3, tmp_path / "g", format="ps")            # the renderer still works after
    draw_graph(a * 3, tmp_path / "g")
    assert (tmp_path / "g.ps").read_bytes().startswith(b"%!PS")
    assert "<svg" in (tmp_path / "g.svg").read_text()


def test_render_and_view_leave_no_dot_source_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(viz.shutil, "which", lambda name: None)
    opened = []
    monkeypatch.setattr(viz.webbrowser, "open", opened.append)
    g = draw_graph(Tensor(2.0, requires_grad=True) * 3)
    assert g.render("f", directory=tmp_path) == str(tmp_path / "f.svg")
    g.view("v", directory=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.svg", "v.svg"]
    assert opened and opened[0].endswith("v.svg")


def test_drawing_a_graph_that_backward_freed_is_an_error():
    a = Tensor(2.0, requires_grad=True)
    out = a * a + 1
    out.backward()
    with pytest.raises(RuntimeError, match=r"freed.*retain_graph=True"):
        draw_graph(out)


def test_a_square_has_one_edge_per_operand():
    a = Tensor(3.0, requires_grad=True)
    g = draw_graph(a * a)
    tail = re.search(r'(t\d+) \[label="\{data 3', g.source).group(1)
    assert len(re.findall(rf"\b{tail} -> t\d+op", g.source)) == 2


def test_gallery_reads_at_page_width_and_labels_inputs(tmp_path):
    write_gallery(tmp_path)
    for svg in tmp_path.glob("*.svg"):
        width = float(re.search(r'<svg width="([\d.]+)pt"', svg.read_text()).group(1))
        # within a README column; notebook 002's `sum(np.exp(Z))` is Python's sum over the
        # ten rows of Z, drawn as ten getitems side by side, and attention's q, k and v are
        # three columns
        wide = svg.name.startswith("reference_002") or svg.name == "vit_block.svg"
        assert width <= (1000 if wide else 640), (svg.name, width)
    notebook = (tmp_path / "reference_000.svg").read_text()
    assert "X (10 images).T" in notebook and "one&#45;hot Y" in notebook        # &#45; is "-"
    assert ">div(·, 20)<" in notebook                # the 2m of the 1/2m, written into its op


def test_a_derivative_is_drawn_as_a_graph_of_the_backward_pass(tmp_path):
    write_gallery(tmp_path)
    first = (tmp_path / "derivative_1_df.svg").read_text()
    second = (tmp_path / "derivative_2_d2f.svg").read_text()
    assert "df/dx" in first and "data 1.1113" in first          # tanh(.8) + .8 (1 - tanh^2)
    assert "d2f/dx2" in second and "data 0.5241" in second
    assert second.count("class=\"node\"") > first.count("class=\"node\"")

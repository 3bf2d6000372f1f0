"""Graph drawings: nodes and counts, module boxes, determinism, rendering without `dot`."""
import re

import numpy as np
import pytest

from tinygrad_mnist import Tensor, manual_seed, nn, viz
from tinygrad_mnist.mnist.checks import write_gallery
from tinygrad_mnist.viz import draw_graph


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
    assert names == ["scalar_expression.svg", "neuron.svg", "mlp_forward.svg",
                     "mlp_gradients.svg", "mlp_collapsed.svg"] + [
        f"reference_{n}.svg" for n in ("000", "001", "002", "003", "004")]
    for name in names:
        assert "<svg" in (tmp_path / name).read_text()
    assert "grad" in (tmp_path / "mlp_gradients.svg").read_text()
    assert "grad" not in (tmp_path / "mlp_forward.svg").read_text()

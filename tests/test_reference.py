"""Hand-derived backprop: the shipped general version equals autograd; the reference notebooks'
formulas are right where they are right, and each wrong one is caught with its cause."""
import inspect

import numpy as np
import pytest

from tinygrad_mnist import Tensor
from tinygrad_mnist.mnist import cli
from tinygrad_mnist.handcheck import compare_manual
from tinygrad_mnist.op_cases import OP_CASES
from tinygrad_mnist.mnist.reference import check_mlp_backprop, check_notebook

from conftest import shared_reference_dir


@pytest.mark.parametrize("sizes", [(20, 3), (784, 16, 10), (30, 12, 8, 6, 4)])
@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_general_mlp_backprop_equals_autograd(sizes, activation):
    report = check_mlp_backprop(sizes, activation, batch=7)
    assert report.ok
    for row in report.rows:
        assert row.rel_error <= 1e-10
        assert row.autograd_numeric_rel_error <= 1e-6     # and autograd equals finite diff.


def test_notebook_001_is_correct():
    report = check_notebook("001")
    assert report.ok and all(r.rel_error <= 1e-10 for r in report.rows)


def test_notebook_004_is_correct_once_x_is_oriented():
    report = check_notebook("004")
    assert report.ok and all(r.rel_error <= 1e-10 for r in report.rows)


def test_notebook_002_biases_summed_over_every_axis():
    report = check_notebook("002")
    for name in ("W1", "W2", "W3"):
        assert report[name].ok and report[name].rel_error <= 1e-10
    for name in ("b1", "b2", "b3"):
        row = report[name]
        assert not row.ok and row.manual_shape == () and row.shape == (10, 1)
        assert "sum over every axis" in row.cause and row.rel_error > 0.1


def test_notebook_003_wrong_factor_and_wrong_intermediate():
    report = check_notebook("003")
    for name in ("w1", "w2", "b2"):
        row = report[name]
        assert not row.ok and "scaled by 1/1000" in row.cause    # 60 / 60000
    b1 = report["b1"]
    assert not b1.ok and "sum over axis 0" in b1.cause and "w1" in b1.cause
    assert "wrong intermediate" in b1.cause


def test_notebook_000_output_gradient_assumes_a_loss_never_computed():
    report = check_notebook("000")
    assert not any(r.ok for r in report.rows)
    for row in report.rows:
        assert "binary cross-entropy" in row.cause and row.rel_error > 1


def test_compare_manual_reports_numbers_and_worst_element():
    w = np.array([[1.0, -2.0], [0.5, 3.0]])
    x = np.array([1.0, 2.0])

    def loss(p):
        return ((p["w"] @ Tensor(x, dtype=np.float64)) ** 2).sum()
    true = 2 * np.outer(w @ x, x)
    wrong = true.copy()
    wrong[1, 0] += 0.5
    report = compare_manual(loss, {"w": w}, {"w": wrong})
    row = report["w"]
    assert not row.ok and row.worst_index == (1, 0)
    assert row.abs_error == pytest.approx(0.5) and row.rel_error == pytest.approx(0.5 / 26)
    assert row.numeric_rel_error == pytest.approx(0.5 / 26, rel=1e-5)
    assert "w" in str(report) and "WRONG" in str(report)
    assert compare_manual(loss, {"w": w}, {"w": true}).ok
    transposed = compare_manual(lambda p: (p["a"] * Tensor(np.arange(6.).reshape(2, 3),
                                                           dtype=np.float64)).sum(),
                                {"a": np.ones((2, 3))}, {"a": np.arange(6.).reshape(3, 2)})
    assert "transposed" in transposed["a"].cause


@pytest.mark.slow
def test_gradcheck_command_prints_tables(capsys):
    assert cli.main(["gradcheck"]) == 0
    out = capsys.readouterr().out
    assert all(case.op in out for case in OP_CASES) and "FAIL" not in out
    assert out.count("Reference notebook") == 5
    assert out.strip().endswith("all checks behave as expected")


@pytest.mark.parametrize("name", ["000", "001", "002", "003", "004"])
def test_each_notebooks_own_forward_runs_on_tensors(name):
    """The loss is computed by the notebook's own code (notebook_code/), called with Tensors:
    its NumPy calls record the graph, so autograd's gradient is the notebook's own."""
    from tinygrad_mnist.mnist.reference import NOTEBOOKS
    nb = NOTEBOOKS[name]
    rng = np.random.default_rng(0)
    params = {k: Tensor(v, requires_grad=True, dtype=np.float64)
              for k, v in nb.params(rng).items()}
    # every class present: 002's one_hot makes Y.max() + 1 rows
    loss = nb.loss(params, rng.random((10, 784)), np.arange(10))
    assert isinstance(loss, Tensor) and loss.size == 1 and loss.requires_grad
    loss.backward()
    assert all(p.grad is not None and np.abs(p.grad).max() > 0 for p in params.values())


def test_notebook_code_is_the_notebooks_own():
    from tinygrad_mnist.mnist.notebook_code import nb000, nb002, nb003
    text = (shared_reference_dir() / "002_6029dbfb20e98c4a.txt").read_text()
    for line in ("    soft = np.exp(Z) / sum(np.exp(Z))", "    db3 = 1 / m * np.sum(dZ3)",
                 "    Z1 = W1.dot(X) + b1"):
        assert line in text and line in inspect.getsource(nb002)
    assert "    dZ1 = np.dot(W2.T, dZ2) * (A1 * (1 - A1))" in inspect.getsource(nb000)
    # 003's list-building softmax cannot record a graph, as its module says: a plain array
    out = nb003.softmax(Tensor([[1.0, 2.0]], requires_grad=True))
    assert not isinstance(out, Tensor)
    np.testing.assert_allclose(out, nb003.softmax_vectorized(np.array([[1.0, 2.0]])))

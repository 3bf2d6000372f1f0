"""Every op of the API against central finite differences in float64, first and second
derivatives, from the one op table (tinygrad_mnist/op_cases.py) that `tinygrad-mnist gradcheck`
prints too, plus the protocol every op follows and the behaviour at ties, repeated indices and
extreme inputs."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinygrad_mnist import Tensor
from tinygrad_mnist.gradcheck import gradcheck, gradgradcheck
from tinygrad_mnist.op_cases import OP_CASES
from tinygrad_mnist.engine import sum_to_shape, topo_order

rng = np.random.default_rng(0)

CHECKS = [pytest.param(case, shapes, id=f"{case.name} {shapes}")
          for case in OP_CASES for shapes in case.shapes]


@pytest.mark.parametrize("case, shapes", CHECKS)
def test_op_grad_matches_finite_differences(case, shapes):
    inputs = case.inputs(shapes, rng)
    assert gradcheck(case.weighted(rng, inputs), inputs)


@pytest.mark.parametrize("case, shapes", CHECKS)
def test_op_second_derivatives_match_finite_differences(case, shapes):
    """grad(create_graph=True) through every op, differentiated again (gradgradcheck)."""
    inputs = case.inputs(shapes, rng)
    assert gradgradcheck(case.weighted(rng, inputs), inputs)


def test_table_covers_every_op_class():
    from tinygrad_mnist import ops
    classes = {c.name for c in vars(ops).values()
               if isinstance(c, type) and issubclass(c, ops.Op) and c is not ops.Op}
    checked = {case.op for case in OP_CASES}
    assert classes - checked == set()


@settings(max_examples=60, deadline=None)
@given(row=st.integers(0, len(OP_CASES) - 1), seed=st.integers(0, 2**32 - 1))
def test_every_op_follows_the_protocol_on_random_shapes(row, seed):
    """backward returns a tuple with one entry per input, each None or a gradient whose shape
    is the input's once broadcasting is undone."""
    case, draw = OP_CASES[row], np.random.default_rng(seed)
    shapes = case.random_shapes(draw, case.shapes[0]) if case.random_shapes else case.shapes[0]
    out = case.fn(*case.inputs(shapes, draw))
    for node in topo_order(out):
        if node.op is None:
            continue
        gz = draw.normal(size=node.shape)
        grads = node.op.backward(gz)
        assert type(grads) is tuple and len(grads) == len(node.op.inputs), node.op.name
        for parent, g in zip(node.op.inputs, grads):
            if g is not None:
                assert sum_to_shape(np.asarray(g), parent.shape).shape == parent.shape


def test_max_ties_share_the_gradient_evenly():
    x = Tensor([1.0, 3.0, 3.0, 2.0], requires_grad=True)
    x.max().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 0.5, 0.5, 0.0])
    y = Tensor([[5.0, 5.0, 5.0], [1.0, 2.0, 0.0]], requires_grad=True)
    y.max(axis=1).sum().backward()
    np.testing.assert_allclose(y.grad, [[1 / 3, 1 / 3, 1 / 3], [0, 1, 0]])


def test_maximum_tie_splits_between_inputs():
    a, b = Tensor(2.0, requires_grad=True), Tensor(2.0, requires_grad=True)
    a.maximum(b).backward()
    assert a.grad == 0.5 and b.grad == 0.5


def test_repeated_indices_add_up():
    x = Tensor(np.zeros(4), requires_grad=True)
    x[np.array([1, 1, 1, 3])].sum().backward()
    np.testing.assert_array_equal(x.grad, [0, 3, 0, 1])


def test_forward_values_match_numpy():
    x = rng.normal(size=(3, 4))
    t = Tensor(x, dtype=np.float64)
    np.testing.assert_allclose(t.softmax().data, np.exp(x) / np.exp(x).sum(-1, keepdims=True))
    np.testing.assert_allclose(t.log_softmax(axis=0).data,
                               x - np.log(np.exp(x).sum(0, keepdims=True)))
    np.testing.assert_allclose(t.sigmoid().data, 1 / (1 + np.exp(-x)))
    np.testing.assert_allclose(t.max(axis=(0, 1)).data, x.max())
    np.testing.assert_allclose(t.clip(-0.1, 0.2).data, np.clip(x, -0.1, 0.2))


def test_softmax_and_sigmoid_are_finite_for_huge_inputs():
    x = Tensor([[1e4, -1e4, 0.0]], requires_grad=True)
    np.testing.assert_allclose(x.softmax().data, [[1.0, 0.0, 0.0]])
    assert np.isfinite(x.log_softmax().data).all()
    assert np.array_equal(x.sigmoid().data, [[1.0, 0.0, 0.5]])

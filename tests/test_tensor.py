"""The engine: scalars, accumulation, no_grad, detach, dtypes, releasing the graph, errors."""
import gc
import threading
import weakref

import numpy as np
import pytest

from tinygrad_mnist import Tensor, no_grad, is_grad_enabled


def test_micrograd_style_scalar_example():
    a = Tensor(2.0, requires_grad=True)
    (a * a + 3 * a).backward()
    assert a.grad == 7 and a.shape == () and a.grad.shape == ()


def test_scalar_expression_matches_hand_derivation():
    # micrograd's classic: d = a*b + c; e = relu(d) * f   -> de/da = b*f, de/db = a*f
    a, b = Tensor(2.0, requires_grad=True), Tensor(-3.0, requires_grad=True)
    c, f = Tensor(10.0, requires_grad=True), Tensor(-2.0, requires_grad=True)
    e = (a * b + c).relu() * f
    e.backward()
    assert e.item() == -8.0
    assert (a.grad, b.grad, c.grad, f.grad) == (6.0, -4.0, -2.0, 4.0)


def test_scalar_repr_shows_value_and_grad():
    a = Tensor(2.0, requires_grad=True)
    (a * 3).backward()
    assert repr(a) == "Tensor(2., requires_grad=True, grad=3)"
    assert "dtype=float64" in repr(Tensor([1.0], dtype=np.float64))


def test_shared_node_gets_both_contributions():
    x = Tensor(3.0, requires_grad=True)
    y = x * x            # x used twice by one op
    z = y + y            # y used twice by another
    z.backward()
    assert x.grad == 12.0


def test_grads_accumulate_until_zeroed():
    x = Tensor([1.0, 2.0], requires_grad=True)
    (x * 2).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_array_equal(x.grad, [5.0, 5.0])
    x.zero_grad()
    (x * 4).sum().backward()
    np.testing.assert_array_equal(x.grad, [4.0, 4.0])


def test_leaf_grad_is_not_an_alias_of_another_grad():
    a, b = Tensor([1.0, 2.0], requires_grad=True), Tensor([1.0, 2.0], requires_grad=True)
    (a + b).sum().backward()           # Add passes the same array to both inputs
    a.grad += 10
    np.testing.assert_array_equal(b.grad, [1.0, 1.0])


def test_no_grad_records_nothing():
    x = Tensor([1.0], requires_grad=True)
    with no_grad():
        y = x * 2
        assert not is_grad_enabled()
    assert is_grad_enabled()
    assert not y.requires_grad and y._parents == () and y._ctx is None
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()


def test_no_grad_as_decorator_and_nested():
    @no_grad()
    def f(x):
        with no_grad():
            pass
        return x * 2          # still inside the outer no_grad
    assert not f(Tensor(1.0, requires_grad=True)).requires_grad


def test_no_grad_is_per_thread():
    seen = {}
    inside, release = threading.Event(), threading.Event()

    def worker():
        with no_grad():
            inside.set()
            release.wait(5)
            seen["worker"] = is_grad_enabled()

    t = threading.Thread(target=worker)
    t.start()
    inside.wait(5)
    seen["main"] = is_grad_enabled()     # the worker is inside no_grad right now
    y = Tensor(1.0, requires_grad=True) * 2
    release.set()
    t.join()
    assert seen == {"worker": False, "main": True} and y.requires_grad


def test_detach_stops_gradients():
    x = Tensor(2.0, requires_grad=True)
    y = x * x.detach()       # d/dx of x * c is c = 2, not 2x = 4
    y.backward()
    assert x.grad == 2.0
    assert not x.detach().requires_grad
    assert x.detach().data is x.data


def test_deep_chain_needs_no_recursion():
    x = Tensor(0.0, requires_grad=True)
    y = x
    for _ in range(1_000_000):
        y = y + 1.0
    y.backward()
    assert y.item() == 1_000_000.0 and x.grad == 1.0


def test_backward_frees_intermediates():
    x = Tensor(np.ones(3), requires_grad=True)
    hidden = x * 2
    ref = weakref.ref(hidden)
    out = (hidden.exp() * 3).sum()
    del hidden
    out.backward()
    gc.collect()
    assert ref() is None, "an intermediate survived backward while the output is alive"
    with pytest.raises(RuntimeError, match="already freed"):
        out.backward()


def test_retain_graph_keeps_every_grad_and_allows_a_second_backward():
    a = Tensor(2.0, requires_grad=True)
    b = a * 3
    c = b * b        # c = 9 a^2, dc/db = 2b = 12, dc/da = 36
    c.backward(retain_graph=True)
    assert (c.grad, b.grad, a.grad) == (1.0, 12.0, 36.0)
    c.backward(retain_graph=True)
    assert a.grad == 72.0


def test_backward_with_explicit_grad():
    x = Tensor([1.0, 2.0, 3.0], requires_grad=True)
    (x * x).backward(np.array([1.0, 0.0, 2.0]))
    np.testing.assert_array_equal(x.grad, [2.0, 0.0, 12.0])


def test_non_scalar_backward_without_grad_names_the_shape():
    x = Tensor(np.ones((3, 4)), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"\(3, 4\)"):
        (x * 2).backward()
    with pytest.raises(ValueError, match=r"\(2,\).*\(3, 4\)"):
        (x * 2).backward(np.ones(2))


def test_dtypes_default_float32_and_grads_match():
    assert Tensor([1.0, 2.0]).dtype == np.float32
    assert Tensor(np.zeros(2)).dtype == np.float32             # float64 arrays become float32
    assert Tensor(1.5, dtype="float64").dtype == np.float64
    assert Tensor([1, 2]).dtype.kind == "i"
    x = Tensor([1.0, 2.0], requires_grad=True)
    y = (x * 0.1 + np.float64(2.0) - 1 / x) ** 2 / 3.0       # Python and NumPy numbers
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float32
    d = Tensor([1.0], requires_grad=True, dtype=np.float64)
    (d * 2).sum().backward()
    assert d.grad.dtype == np.float64


def test_mixed_dtypes_promote_and_grads_keep_their_own_dtype():
    a = Tensor([1.0, 2.0], requires_grad=True)
    b = Tensor([3.0, 4.0], requires_grad=True, dtype=np.float64)
    out = (a * b).sum()
    assert out.dtype == np.float64
    out.backward()
    assert a.grad.dtype == np.float32 and b.grad.dtype == np.float64


def test_integer_tensors_cannot_require_grad():
    with pytest.raises(ValueError, match="int"):
        Tensor([1, 2], requires_grad=True)
    with pytest.raises(TypeError, match="unsupported"):
        Tensor(["a", "b"])


def test_attributes_and_constructors():
    t = Tensor.zeros(2, 3)
    assert (t.shape, t.ndim, t.size, len(t)) == ((2, 3), 2, 6, 2)
    assert Tensor.ones((2,)).numpy().tolist() == [1.0, 1.0]
    np.testing.assert_array_equal(Tensor.randn(3, seed=1).data, Tensor.randn(3, seed=1).data)
    assert Tensor.randn(2, 2).dtype == np.float32
    assert Tensor(3.5).item() == 3.5
    with pytest.raises(TypeError):
        len(Tensor(1.0))
    assert np.asarray(Tensor([1.0, 2.0])).tolist() == [1.0, 2.0]


def test_data_is_assignable_for_hand_written_updates():
    p = Tensor([1.0, 2.0], requires_grad=True)
    (p * p).sum().backward()
    p.data -= 0.5 * p.grad
    np.testing.assert_array_equal(p.data, [0.0, 0.0])


def test_matmul_error_names_both_shapes():
    with pytest.raises(ValueError, match=r"matmul.*\(3, 4\).*\(5, 6\).*4 and 5"):
        Tensor(np.ones((3, 4))) @ Tensor(np.ones((5, 6)))
    with pytest.raises(ValueError, match=r"matmul.*\(\)"):
        Tensor(1.0) @ Tensor(np.ones(3))


def test_broadcast_error_names_op_and_shapes():
    with pytest.raises(ValueError, match=r"add.*\(2, 3\).*\(4,\)"):
        Tensor(np.ones((2, 3))) + Tensor(np.ones(4))
    with pytest.raises(ValueError, match=r"mul.*\(2, 3\).*\(2,\)"):
        Tensor(np.ones((2, 3))) * np.ones(2)


@pytest.mark.parametrize("call", [
    lambda t: t.sum(axis=2), lambda t: t.mean(axis=-3), lambda t: t.max(axis=(0, 5)),
    lambda t: t.softmax(axis=2), lambda t: t.log_softmax(axis=-3),
])
def test_out_of_range_axis_names_op_and_shape(call):
    with pytest.raises(ValueError, match=r"axis .* out of range .*\(2, 3\)"):
        call(Tensor(np.ones((2, 3))))


def test_shape_errors_name_op_and_shape():
    t = Tensor(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"reshape.*\(2, 3\).*\(4, 2\)"):
        t.reshape(4, 2)
    with pytest.raises(IndexError, match=r"getitem.*\(2, 3\)"):
        t[5]
    with pytest.raises(ValueError, match=r"concat.*\(2, 3\).*\(2, 4\)"):
        Tensor.concat([t, Tensor(np.ones((2, 4)))])
    with pytest.raises(ValueError, match=r"stack.*\(2, 3\).*\(3, 2\)"):
        Tensor.stack([t, Tensor(np.ones((3, 2)))])
    with pytest.raises(ValueError, match=r"transpose.*\(2, 3\)"):
        t.transpose(0, 0)

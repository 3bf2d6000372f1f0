"""The engine: scalars, accumulation, no_grad, detach, dtypes, releasing the graph, errors."""
import gc
import threading
import weakref

import numpy as np
import pytest

from tinygrad_mnist import Tensor, no_grad, is_grad_enabled
from tinygrad_mnist.gradcheck import gradcheck
from tinygrad_mnist.ops import Op


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
    assert not y.requires_grad and y.op is None
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


# ---------------------------------------------------------------- one convention for everything

def test_concat_and_stack_of_a_single_tensor_backpropagate():
    x = Tensor(np.arange(3.0), requires_grad=True)
    (Tensor.concat([x]) * 2).sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, 2.0, 2.0])
    x.zero_grad()
    Tensor.stack([x]).sum().backward()
    np.testing.assert_array_equal(x.grad, [1.0, 1.0, 1.0])


def test_style_guide_ops_work_as_written():
    class Div(Op):
        """z = a / b    dz/da = 1/b    dz/db = -a/b**2"""
        def forward(self, a, b):
            self.a, self.b = a, b
            return a / b

        def backward(self, gz):
            return gz / self.b, -gz * self.a / self.b**2

    class Exp(Op):
        """z = exp(x)    dz/dx = z"""
        def forward(self, x):
            self.z = np.exp(x)
            return self.z

        def backward(self, gz):
            return (gz * self.z,)                     # a 1-tuple: one input, one gradient

    a = Tensor([1.0, 2.0], requires_grad=True, dtype=np.float64)
    b = Tensor([[0.5], [4.0]], requires_grad=True, dtype=np.float64)
    y = Exp.apply(Div.apply(a, b))
    assert y.op.name == "exp" and y.shape == (2, 2)
    assert gradcheck(lambda a, b: Exp.apply(Div.apply(a, b)).sum(), [a, b])


class _BareArray(Op):
    """Returns a bare array where the protocol asks for a tuple."""
    name = "bare_array"

    def forward(self, x):
        return x * 2

    def backward(self, gz):
        return gz * 2


class _TwoForOne(_BareArray):
    name = "two_for_one"

    def backward(self, gz):
        return gz, gz


class _WrongShape(_BareArray):
    name = "wrong_shape"

    def backward(self, gz):
        return (np.ones(7),)


@pytest.mark.parametrize("op, message", [
    (_BareArray, r"bare_array: backward must return a tuple .* \(1\), got a ndarray"),
    (_TwoForOne, r"two_for_one: backward must return a tuple .* \(1\), got a tuple of 2"),
    (_WrongShape, r"wrong_shape: backward returned a gradient of shape \(7,\) for an input of "
                  r"shape \(3,\)"),
])
def test_backward_that_breaks_the_protocol_is_an_error_naming_the_op(op, message):
    x = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises((TypeError, ValueError), match=message):
        op.apply(x).sum().backward()


def test_op_names_are_class_attributes_used_in_errors():
    from tinygrad_mnist import ops
    assert (ops.CrossEntropy.name, ops.PowConst.name, ops.GetItem.name) == \
        ("cross_entropy", "pow", "getitem")
    assert not hasattr(Tensor, "_apply")
    with pytest.raises(ValueError, match=r"^maximum: shapes \(2,\) and \(3,\)"):
        Tensor(np.ones(2)).maximum(Tensor(np.ones(3)))
    with pytest.raises(TypeError, match=r"linear: input 0 is a ndarray, not a Tensor"):
        ops.Linear.apply(np.ones((2, 3)), Tensor(np.ones((4, 3))))


def test_transpose_is_numpys_permutation_on_every_rank():
    x = np.arange(24.0).reshape(2, 3, 4)
    t = Tensor(x)
    np.testing.assert_array_equal(t.transpose(1, 2, 0).data, x.transpose(1, 2, 0))
    np.testing.assert_array_equal(t.transpose().data, x.transpose())
    np.testing.assert_array_equal(Tensor(x[0]).transpose(0, 1).data, x[0])   # identity
    np.testing.assert_array_equal(t.swapaxes(0, 2).data, np.swapaxes(x, 0, 2))
    np.testing.assert_array_equal(t.swapaxes(-1, 1).data, np.swapaxes(x, -1, 1))
    with pytest.raises(ValueError, match="swapaxes"):
        t.transpose(0, 2)                     # two axes of three: not a permutation


@pytest.mark.parametrize("call", [lambda t: t.softmax(axis=(0, 1)),
                                  lambda t: t.log_softmax(axis=(0, 1)),
                                  lambda t: t.argmax(axis=(0, 1))])
def test_single_axis_ops_refuse_a_tuple(call):
    with pytest.raises(TypeError, match=r"(softmax|log_softmax|argmax): takes a single int axis"):
        call(Tensor(np.ones((2, 3))))


def test_detach_shares_the_data_and_keeps_the_dtype():
    x = Tensor(0.1, dtype=np.float64, requires_grad=True)
    d = x.detach()
    assert d.dtype == np.float64 and d.item() == 0.1 and not d.requires_grad
    assert np.shares_memory(d.data, x.data)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_constructor_copies_and_from_numpy_shares(dtype):
    array = np.ones(3, dtype=dtype)
    copied = Tensor(array, dtype=dtype)
    shared = Tensor.from_numpy(array)
    assert not np.shares_memory(copied.data, array)
    assert np.shares_memory(shared.data, array) and shared.dtype == dtype
    p = Tensor(array, requires_grad=True)
    with no_grad():
        p -= 0.5                                  # an optimizer's in-place step
    np.testing.assert_array_equal(array, [1.0, 1.0, 1.0])   # the caller's array is untouched
    assert Tensor(Tensor(array, dtype=np.float64)).dtype == np.float64   # a Tensor keeps its dtype
    with pytest.raises(TypeError, match="from_numpy"):
        Tensor.from_numpy([1.0, 2.0])


@pytest.mark.parametrize("int_dtype", [np.int32, np.int64, np.uint8])
def test_integer_tensors_give_float32_with_floats_and_division(int_dtype):
    t = Tensor(np.array([1, 2, 3], dtype=int_dtype))
    assert (t * 0.5).dtype == np.float32
    assert (t / 2).dtype == np.float32 and (2 / t).dtype == np.float32
    assert (t / t).dtype == np.float32
    assert (t ** 0.5).dtype == np.float32 and t.exp().dtype == np.float32
    assert t.mean().dtype == np.float32
    assert (t * np.float64(0.5)).dtype == np.float32          # a NumPy scalar never widens
    assert (t + 1).dtype == int_dtype and (t * np.int64(2)).dtype == int_dtype
    assert (t + Tensor([0.5, 0.5, 0.5], dtype=np.float64)).dtype == np.float64
    np.testing.assert_allclose((t / 2).data, [0.5, 1.0, 1.5])
    assert (Tensor([1.0], dtype=np.float64) + Tensor([1.0])).dtype == np.float64


def test_negative_zero_is_not_confused_with_zero():
    a = Tensor([1.0, 2.0])
    a * 0.0
    with np.errstate(divide="ignore"):
        np.testing.assert_array_equal((1 / (a * -0.0)).data, [-np.inf, -np.inf])
        np.testing.assert_array_equal((1 / (a * 0.0)).data, [np.inf, np.inf])


def test_python_protocols():
    assert bool(Tensor(0.0)) is False and bool(Tensor([[2.0]])) is True
    with pytest.raises(ValueError, match=r"bool: .*\(2,\) is ambiguous"):
        bool(Tensor([0.0, 0.0]))
    with pytest.raises(TypeError, match="0-d"):
        list(Tensor(3.0))
    rows = list(Tensor(np.arange(6.0).reshape(3, 2)))
    assert len(rows) == 3 and rows[2].data.tolist() == [4.0, 5.0]
    assert float(Tensor(2.5)) == 2.5 and int(Tensor(7)) == 7 and [1, 2, 3][Tensor(1)] == 2
    assert f"{Tensor(3.14159):.2f}" == "3.14" and f"{Tensor([1.0])}" == str(Tensor([1.0]))
    assert abs(Tensor(-2.0)).item() == 2.0


def test_comparisons_give_unrecorded_boolean_tensors():
    a = Tensor([1.0, 2.0, 3.0], requires_grad=True)
    b = Tensor([1.0, 0.0, 3.0])
    for result, expected in [(a == b, [True, False, True]), (a != b, [False, True, False]),
                             (a < 2, [True, False, False]), (a <= 2, [True, True, False]),
                             (a > 2, [False, False, True]), (a >= 2, [False, True, True]),
                             (2 < a, [False, False, True])]:
        assert result.dtype == np.bool_ and not result.requires_grad
        assert result.data.tolist() == expected
    assert {a: 1}[a] == 1                       # still hashable, by identity


def test_boolean_mask_indexing_carries_gradients():
    x = Tensor([[1.0, -2.0], [3.0, -4.0]], requires_grad=True)
    picked = x[x > 0]
    assert picked.data.tolist() == [1.0, 3.0]
    (picked * Tensor([10.0, 20.0])).sum().backward()
    np.testing.assert_array_equal(x.grad, [[10.0, 0.0], [20.0, 0.0]])
    with pytest.raises(IndexError, match=r"getitem.*\(2, 2\)"):
        x[np.array([True, False, True])]        # a mask of the wrong length is no silent pick


def test_slices_add_their_gradients_in_place_without_touching_a_shared_gradient():
    """Slices' gradients go into their input's gradient in place: mixed with ordinary
    contributions, repeated fancy indices, leaves and inner nodes, a gradient array that an Add
    handed to two parents (which must not change), and the same with observers on (where
    every backward runs as written) all give the hand-computed values."""
    rng = np.random.default_rng(0)
    w, v, u = rng.normal(size=(4, 3)), rng.normal(size=(2, 3)), rng.normal(size=3)
    rows = rng.normal(size=(3, 3))
    for observed in (False, True):
        p = Tensor(rng.normal(size=(4, 3)), requires_grad=True, dtype=np.float64)
        q = Tensor(rng.normal(size=(4, 3)), requires_grad=True, dtype=np.float64)
        h, h2 = p * 1.0, q * 1.0
        s = h + h2                              # s's gradient reaches h and h2 as one array
        W, V, U, R = (Tensor(a, dtype=np.float64) for a in (w, v, u, rows))
        loss = ((s * W).sum() + (h[1:3] * V).sum() + (h[2] * U).sum()
                + (h[np.array([0, 0, 3])] * R).sum() + (p[3] * U).sum() + (p[3] * U).sum())
        if observed:
            from tinygrad_mnist.profiler import profile
            with profile():
                loss.backward()
        else:
            loss.backward()
        expected = w.copy()
        expected[1:3] += v
        expected[2] += u
        np.add.at(expected, [0, 0, 3], rows)
        expected_p = expected.copy()
        expected_p[3] += 2 * u
        np.testing.assert_allclose(p.grad, expected_p, rtol=1e-12)
        np.testing.assert_allclose(q.grad, w, rtol=1e-12)


def test_min_with_ties_sharing_the_gradient():
    x = Tensor([[3.0, 1.0, 1.0], [0.0, 2.0, 5.0]], requires_grad=True)
    m = x.min(axis=1)
    assert m.data.tolist() == [1.0, 0.0]
    m.sum().backward()
    np.testing.assert_array_equal(x.grad, [[0, 0.5, 0.5], [1, 0, 0]])
    with pytest.raises(ValueError, match=r"min: .*empty.*\(0, 3\)"):
        Tensor.zeros(0, 3).min(axis=0)


def test_power_zero_has_zero_gradient_at_zero():
    x = Tensor([0.0, 2.0], requires_grad=True)
    (x ** 0).sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 0.0])
    y = Tensor([0.0, 2.0], requires_grad=True)
    (y ** Tensor([0.0, 0.0])).sum().backward()
    np.testing.assert_array_equal(y.grad, [0.0, 0.0])


def test_mean_over_no_elements_is_nan_as_in_numpy():
    got = Tensor.zeros(0, 3).mean(axis=0)       # np.zeros((0, 3)).mean(axis=0): three NaNs
    assert got.shape == (3,) and np.isnan(got.data).all()
    assert np.isnan(Tensor.zeros(0).mean().item())


def test_in_place_change_of_a_tensor_that_requires_grad_is_refused_with_a_hint():
    w = Tensor([1.0, 2.0], requires_grad=True)
    (w * w).sum().backward()
    with pytest.raises(RuntimeError, match=r"-=.*requires grad.*\.data.*no_grad"):
        w -= 0.1 * w.grad
    assert w.requires_grad and w.is_leaf        # w is still the leaf it was
    with no_grad():
        w -= 0.5 * w.grad                        # the PyTorch idiom: an in-place update
    np.testing.assert_array_equal(w.data, [0.0, 0.0])
    assert w.requires_grad and w.is_leaf


def test_in_place_operators_on_plain_tensors_act_in_place():
    t = Tensor([1.0, 2.0])
    data = t.data
    t += 1
    t *= Tensor([2.0, 3.0])
    t /= 2
    t -= np.array([1.0, 1.0])
    assert t.data is data
    np.testing.assert_array_equal(t.data, [1.0, 3.5])
    with pytest.raises(ValueError, match=r"\+=.*shape \(2,\).*\(3,\)"):
        t += np.ones(3)


# ---------------------------------------------------------------- in-place ops, as PyTorch

def _x():
    return Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True, dtype=np.float64)


def test_an_in_place_op_with_an_operand_that_requires_grad_is_recorded():
    x = _x()
    acc = Tensor.zeros(3, dtype=np.float64)
    acc += x * x                                     # acc joins the graph
    assert acc.requires_grad and acc.op is not None
    ((acc * 2).sum() + x.sum()).backward()
    np.testing.assert_allclose(x.grad, 4 * x.data + 1)       # PyTorch: 4x + 1
    x = _x()
    acc = Tensor.zeros(3, dtype=np.float64)
    acc += x * x
    acc.sum().backward()                             # alone, too
    np.testing.assert_allclose(x.grad, 2 * x.data)


@pytest.mark.parametrize("update, expected", [
    (lambda y, x: y.__iadd__(x), lambda x: 4 * np.ones(3)),         # y = 3x; y += x
    (lambda y, x: y.__isub__(x), lambda x: 2 * np.ones(3)),
    (lambda y, x: y.__imul__(x), lambda x: 6 * x),                   # 3x * x
    (lambda y, x: y.__itruediv__(x + 1), lambda x: 3 / (x + 1) ** 2),  # 3x / (x + 1)
])
def test_an_in_place_update_of_a_graph_node_differentiates_like_its_out_of_place_op(
        update, expected):
    x = _x()
    y = 3 * x
    update(y, x)
    y.sum().backward()
    np.testing.assert_allclose(x.grad, expected(x.data))


def test_an_op_that_used_a_tensor_before_it_changed_in_place_gets_the_earlier_node():
    x = _x()
    a = x + 0.0
    b = a + 2.0                       # add saves nothing: b's gradient goes to a's old node
    a += x
    (b.sum() * 10 + a.sum()).backward()
    np.testing.assert_allclose(x.grad, 10 + 2 * np.ones(3))


def test_a_tensor_saved_for_backward_and_changed_in_place_after_is_an_error_naming_the_op():
    x = _x()
    a = x * 1.0
    b = a.exp() * a                   # mul saved a's array
    a += 1.0
    with pytest.raises(RuntimeError, match=r"backward: mul saved a tensor of shape \(3,\) for "
                                           r"its backward .* changed in place after"):
        b.sum().backward()


def test_an_in_place_op_on_a_leaf_that_requires_grad_is_still_refused():
    x = _x()
    with pytest.raises(RuntimeError, match=r"\+=: cannot change a tensor that requires grad"):
        x += 1.0

"""Each optimizer against its update rule written out here, step by step, in float64."""
import numpy as np
import pytest

from tinygrad_mnist import Tensor, optim

STEPS = 5


def gradient_at(p):
    """The gradient of the test loss sum(p**3)/3 + sum(p): p**2 + 1 (changes every step)."""
    return p ** 2 + 1


SMALL = np.array([[0.5, -1.5, 2.0], [0.0, 1.0, -0.3]])


def run(opt_class, start=SMALL, dtype=np.float64, **kwargs):
    p = Tensor(start.copy(), requires_grad=True, dtype=dtype)
    opt = opt_class([p], **kwargs)
    history = []
    for _ in range(STEPS):
        opt.zero_grad()
        ((p ** 3).sum() / 3 + p.sum()).backward()
        opt.step()
        history.append(p.data.copy())
    return start, history


def expected_sgd(p, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    out, v = [], None
    for _ in range(STEPS):
        g = gradient_at(p) + weight_decay * p
        if momentum:
            v = g.copy() if v is None else momentum * v + g
            g = g + momentum * v if nesterov else v
        p = p - lr * g
        out.append(p)
    return out


@pytest.mark.parametrize("kwargs", [
    dict(lr=0.1), dict(lr=0.1, momentum=0.9), dict(lr=0.05, momentum=0.8, nesterov=True),
    dict(lr=0.1, weight_decay=0.01), dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1),
])
def test_sgd_matches_rule(kwargs):
    start, got = run(optim.SGD, **kwargs)
    for g, e in zip(got, expected_sgd(start, **kwargs)):
        np.testing.assert_allclose(g, e, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kwargs", [dict(lr=0.1, momentum=0.9),
                                    dict(lr=0.05, momentum=0.8, nesterov=True)])
def test_sgd_on_a_parameter_large_enough_for_blas_axpy_matches_rule(kwargs, dtype):
    """From AXPY_SIZE elements the update p -= lr * v is BLAS's axpy: the same rule."""
    from tinygrad_mnist.engine.kernels import blas
    start = np.tile(SMALL, (300, 170))
    assert start.size >= blas.AXPY_SIZE
    start, got = run(optim.SGD, start, dtype, **kwargs)
    rtol = 1e-12 if dtype == np.float64 else 2e-6
    for g, e in zip(got, expected_sgd(start, **kwargs)):
        assert g.dtype == dtype
        np.testing.assert_allclose(g, e, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("kwargs", [dict(lr=0.01), dict(lr=0.01, alpha=0.9, eps=1e-6,
                                                        weight_decay=0.1)])
def test_rmsprop_matches_rule(kwargs):
    start, got = run(optim.RMSProp, **kwargs)
    lr, alpha = kwargs["lr"], kwargs.get("alpha", 0.99)
    eps, wd = kwargs.get("eps", 1e-8), kwargs.get("weight_decay", 0.0)
    p, s = start, np.zeros_like(start)
    for step in range(STEPS):
        g = gradient_at(p) + wd * p
        s = alpha * s + (1 - alpha) * g * g
        p = p - lr * g / (np.sqrt(s) + eps)
        np.testing.assert_allclose(got[step], p, rtol=1e-12)


def expected_adam(p, lr, betas, eps, weight_decay, decoupled):
    b1, b2 = betas
    m, v, out = np.zeros_like(p), np.zeros_like(p), []
    for t in range(1, STEPS + 1):
        g = gradient_at(p)
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
        out.append(p)
    return out


@pytest.mark.parametrize("opt_class, decoupled", [(optim.Adam, False), (optim.AdamW, True)])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adam_and_adamw_match_rule(opt_class, decoupled, weight_decay):
    kwargs = dict(lr=0.05, betas=(0.8, 0.95), eps=1e-8, weight_decay=weight_decay)
    start, got = run(opt_class, **kwargs)
    for g, e in zip(got, expected_adam(start, decoupled=decoupled, **kwargs)):
        np.testing.assert_allclose(g, e, rtol=1e-10)


def test_adamw_default_decay_is_pytorchs():
    p = Tensor([1.0], requires_grad=True)
    assert optim.AdamW([p]).weight_decay == 0.01 and optim.Adam([p]).weight_decay == 0.0


def test_float32_parameters_stay_float32():
    for opt_class in (optim.SGD, optim.RMSProp, optim.Adam, optim.AdamW):
        p = Tensor(np.ones(3), requires_grad=True)
        opt = opt_class([p], lr=0.1, **({"momentum": 0.9} if opt_class is optim.SGD else {}))
        for _ in range(2):
            (p * p).sum().backward()
            opt.step()
            opt.zero_grad()
        assert p.dtype == np.float32
        assert all(v.dtype == np.float32 for k, v in opt.state_dict().items()
                   if v.ndim and not k.startswith("group."))     # buffers, not hyperparameters


def test_parameters_without_grad_are_skipped_and_zero_grad_clears():
    a, b = Tensor([1.0], requires_grad=True), Tensor([2.0], requires_grad=True)
    opt = optim.SGD([a, b], lr=1.0)
    (a * 3).sum().backward()
    opt.step()
    assert a.data[0] == -2.0 and b.data[0] == 2.0
    opt.zero_grad()
    assert a.grad is None


def test_state_dict_round_trip_continues_identically():
    def make():
        p = Tensor(np.linspace(-1, 1, 4), requires_grad=True, dtype=np.float64)
        return p, optim.Adam([p], lr=0.1)

    def step(p, opt):
        opt.zero_grad()
        (p ** 4).sum().backward()
        opt.step()

    p1, o1 = make()
    for _ in range(3):
        step(p1, o1)
    p2, o2 = make()
    p2.data[...] = p1.data
    o2.load_state_dict(o1.state_dict())
    step(p1, o1)
    step(p2, o2)
    np.testing.assert_array_equal(p1.data, p2.data)
    with pytest.raises(ValueError, match=r"\(2,\).*\(4,\)"):
        o2.load_state_dict({"0.exp_avg": np.zeros(2)})


OPTIMIZERS = {
    "sgd": lambda ps: optim.SGD(ps, lr=0.1),
    "momentum": lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
    "nesterov": lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
    "rmsprop": lambda ps: optim.RMSProp(ps, lr=0.01),
    "adam": lambda ps: optim.Adam(ps, lr=0.1),
    "adamw": lambda ps: optim.AdamW(ps, lr=0.1),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("saved_at", [3, 64, 65])
def test_saved_and_reloaded_at_any_step_equals_the_straight_run(name, saved_at, tmp_path):
    """Bit for bit, float32 parameters of every rank (a 0-d one too), across the denormal
    flush at step 64; the state goes through an .npz file as a checkpoint does."""
    from tinygrad_mnist import nn

    def make():
        ps = [Tensor(1.0, requires_grad=True), Tensor(np.linspace(-1, 1, 6).reshape(2, 3),
                                                        requires_grad=True)]
        return ps, OPTIMIZERS[name](ps)

    def step(ps, opt, i):
        opt.zero_grad()
        (ps[0] ** 2 * (1 + i % 3) + (ps[1] ** 4).sum()).backward()
        opt.step()

    straight, opt = make()
    for i in range(70):
        step(straight, opt, i)
    first, opt = make()
    for i in range(saved_at):
        step(first, opt, i)
    nn.save_arrays(opt.state_dict(), tmp_path / "optim.npz")
    resumed, opt2 = make()
    for p, q in zip(resumed, first):
        p.data[...] = q.data
    opt2.load_state_dict(nn.load_arrays(tmp_path / "optim.npz"))
    assert int(opt2.steps) == saved_at
    assert all(isinstance(v, np.ndarray) for state in opt2.state for v in state.values())
    for i in range(saved_at, 70):
        step(resumed, opt2, i)
    for p, q in zip(resumed, straight):
        assert p.dtype == np.float32
        np.testing.assert_array_equal(p.data, q.data)


def test_bad_arguments_are_errors():
    p = Tensor([1.0], requires_grad=True)
    with pytest.raises(ValueError, match="empty"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="nesterov"):
        optim.SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="lr"):
        optim.Adam([p], lr=-1)
    with pytest.raises(ValueError, match="requires grad"):
        optim.SGD([Tensor([1.0])], lr=0.1)


@pytest.mark.parametrize("make, key", [
    (lambda p: optim.SGD([p], lr=0.0, momentum=0.5), "momentum_buffer"),
    (lambda p: optim.SGD([p], lr=0.0, momentum=0.9, nesterov=True), "momentum_buffer"),
    (lambda p: optim.Adam([p], lr=0.0, betas=(0.8, 0.999)), "exp_avg"),
    (lambda p: optim.RMSProp([p], lr=0.0, alpha=0.6), "square_avg"),
])
def test_decayed_state_is_flushed_before_it_turns_denormal(make, key):
    from tinygrad_mnist.optim import FLUSH_EVERY
    p = Tensor(np.ones(4), requires_grad=True)
    opt = make(p)
    p.grad = np.array([1.0, 0.0, 1e-10, 0.5], dtype=np.float32)
    opt.step()
    tiny = np.finfo(np.float32).tiny
    for step in range(1, 12 * FLUSH_EVERY):
        p.grad = np.zeros(4, dtype=np.float32)  # the pixel stops lighting up
        opt.step()
        v = opt.state[0][key]
        # never a denormal: either a normal number or exactly zero
        assert np.all((v == 0) | (np.abs(v) >= tiny)), (step, v)
    assert np.all(v == 0)


def test_param_groups_have_their_own_rate_and_decay():
    a, b = Tensor([1.0, 2.0], requires_grad=True), Tensor([3.0], requires_grad=True)
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5, "weight_decay": 0.1}],
                    lr=0.1, momentum=0.0)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
    assert opt.param_groups[0]["weight_decay"] == 0.0
    a.grad, b.grad = np.array([1.0, 1.0], np.float32), np.array([1.0], np.float32)
    opt.step()
    np.testing.assert_allclose(a.data, [0.9, 1.9], rtol=1e-6)
    np.testing.assert_allclose(b.data, [3.0 - 0.5 * (1.0 + 0.1 * 3.0)], rtol=1e-6)
    opt.lr = 0.2                                  # sets every group, as a schedule does
    assert [g["lr"] for g in opt.param_groups] == [0.2, 0.2]


def test_param_groups_are_saved_and_restored_with_the_state():
    p = Tensor([1.0], requires_grad=True)
    opt = optim.Adam([{"params": [p], "lr": 0.3, "betas": (0.8, 0.9)}])
    saved = opt.state_dict()
    other = optim.Adam([Tensor([1.0], requires_grad=True)])
    other.load_state_dict(saved)
    assert other.param_groups[0]["lr"] == 0.3 and other.param_groups[0]["betas"] == (0.8, 0.9)


def test_bad_param_groups_are_errors():
    p = Tensor([1.0], requires_grad=True)
    with pytest.raises(ValueError, match="more than one group"):
        optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1)
    with pytest.raises(ValueError, match="unknown options"):
        optim.SGD([{"params": [p], "betas": (0.9, 0.99)}], lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        optim.SGD([{"params": [p], "lr": -1.0}], lr=0.1)

"""jit's guarantee: a replay equals eager execution, or the step does not replay.

Every test runs two identical worlds (a model, an optimizer, a step) side by side, one eagerly
and one through jit, with the same actions between calls, and compares every tensor of the
world (values and gradients) and every output after each call. Where a replay cannot follow,
the step must still give eager's numbers and say so with a JitWarning."""
import types
import warnings

import numpy as np
import pytest

from tinygrad_mnist import JitWarning, Tensor, jit, manual_seed, nn, no_grad, optim
from tinygrad_mnist.optim import lr_scheduler

TOL = dict(rtol=1e-6, atol=1e-7)


def world(features=6, hidden=5, classes=3, optimizer="momentum", seed=0):
    """A small classifier, its optimizer, and a batch; `step` is set by each test."""
    manual_seed(seed)
    w = types.SimpleNamespace()
    w.model = nn.MLP([features, hidden, classes])
    w.initial = dict(w.model.named_parameters())       # frozen ones included, later
    params = w.model.parameters()
    w.opt = (optim.SGD(params, lr=0.1, momentum=0.9) if optimizer == "momentum" else
             optim.Adam(params, lr=0.01))
    rng = np.random.default_rng(seed)
    w.x = rng.standard_normal((4, features)).astype(np.float32)
    w.y = rng.integers(0, classes, 4)
    return w


def tensors_of(w):
    """Every tensor a world holds, by name: the model's parameters (frozen or replaced ones
    too), and any the test added."""
    found = {f"initial {name}": t for name, t in w.initial.items()}
    found.update(w.model.named_parameters())
    found.update({k: v for k, v in vars(w).items() if isinstance(v, Tensor)})
    return found


def _same(a, b, what):
    if a is None or b is None:
        assert a is None and b is None, f"{what}: {a!r} against {b!r}"
        return
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), **TOL, err_msg=what)


def _compare_outputs(out_e, out_j, what):
    if isinstance(out_e, (tuple, list)):
        assert len(out_e) == len(out_j)
        for k, (a, b) in enumerate(zip(out_e, out_j)):
            _compare_outputs(a, b, f"{what}[{k}]")
    elif isinstance(out_e, Tensor):
        assert isinstance(out_j, Tensor), what
        _same(out_e.numpy(), out_j.numpy(), what)
    else:
        _same(out_e, out_j, what)


def twins(make_step, calls=5, between=None, args=None, **world_options):
    """Run `calls` calls eagerly and jitted in twin worlds; compare after each. Returns the
    jitted step and the JitWarnings raised."""
    eager, jitted = world(**world_options), world(**world_options)
    step_e, step_j = make_step(eager), jit(make_step(jitted))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(calls):
            for w in (eager, jitted):
                if between is not None:
                    between(w, i)
            call_args = (lambda w, i: (w.x, w.y)) if args is None else args
            manual_seed([9, i])
            out_e = step_e(*call_args(eager, i))
            manual_seed([9, i])
            out_j = step_j(*call_args(jitted, i))
            _compare_outputs(out_e, out_j, f"output of call {i}")
            te, tj = tensors_of(eager), tensors_of(jitted)
            assert te.keys() == tj.keys()
            for name in te:
                _same(te[name].numpy(), tj[name].numpy(), f"{name} after call {i}")
                _same(te[name].grad, tj[name].grad, f"{name}.grad after call {i}")
    return step_j, [w for w in caught if issubclass(w.category, JitWarning)]


def train_step(w):
    def step(x, y):
        w.opt.zero_grad()
        loss = nn.cross_entropy(w.model(Tensor.from_numpy(x)), y)
        loss.backward()
        w.opt.step()
        return loss
    return step


def replayed(step, calls):
    """The step was recorded fewer times than it was called: some calls were replays."""
    return step.recordings < calls


# ---------------------------------------------------------------- the reported cases

@pytest.mark.parametrize("as_tensor", [False, True])
def test_1_a_backward_seed_passed_as_an_argument_is_read_at_every_replay(as_tensor):
    def make(w):
        def step(x, g):
            out = w.model(Tensor.from_numpy(x))
            out.backward(Tensor.from_numpy(g) if as_tensor else g)
        return step

    def args(w, i):
        return w.x, np.full((4, 3), i + 1.0, np.float32)
    step, warned = twins(make, args=args)
    assert not warned and replayed(step, 5)


@pytest.mark.parametrize("how", ["loop", "zero_grad_set_to_none", "model_zero_grad"])
def test_2_setting_grad_to_none_inside_the_step_is_replayed(how):
    def make(w):
        def step(x, y):
            if how == "loop":
                for p in w.model.parameters():
                    p.grad = None
            elif how == "zero_grad_set_to_none":
                w.opt.zero_grad()
            else:
                w.model.zero_grad()
            nn.cross_entropy(w.model(Tensor.from_numpy(x)), y).backward()
        return step
    step, warned = twins(make)
    assert not warned and replayed(step, 5)


@pytest.mark.parametrize("first", [False, True])
def test_3_freezing_and_unfreezing_between_calls(first):
    def between(w, i):
        if i in (2, 4):
            w.initial["layers.0.weight"].requires_grad = i == 4
            w.initial["layers.0.bias"].requires_grad = i == 4

    def frozen_from_start(w, i):
        if i in (0, 3):
            w.initial["layers.0.weight"].requires_grad = i == 3
            w.initial["layers.0.bias"].requires_grad = i == 3
    step, warned = twins(train_step, calls=6, between=frozen_from_start if first else between)
    assert not warned and replayed(step, 6)


def test_4_a_parameter_replaced_on_a_module_is_followed():
    def between(w, i):
        if i == 2:
            layer = w.model.layers[0]
            layer.weight = Tensor(np.full(layer.weight.shape, 0.1, np.float32),
                                  requires_grad=True)
            w.opt = optim.SGD(w.model.parameters(), lr=0.1, momentum=0.9)
    step, warned = twins(lambda w: (lambda x, y: train_step(w)(x, y)), between=between)
    assert not warned and replayed(step, 5)


def test_4_a_submodule_replaced_is_followed():
    def between(w, i):
        if i == 2:
            manual_seed(5)
            w.model.layers[1] = nn.Linear(5, 3)
            w.opt = optim.SGD(w.model.parameters(), lr=0.1)
    step, warned = twins(lambda w: (lambda x, y: train_step(w)(x, y)), between=between)
    assert not warned and replayed(step, 5)


@pytest.mark.parametrize("draw", ["randn", "rand", "randint", "dropout"])
def test_5_every_random_function_draws_anew_at_every_replay(draw):
    def make(w):
        drop = nn.Dropout(0.5)

        def step(x, y):
            h = w.model(Tensor.from_numpy(x))
            if draw == "randn":
                h = h + Tensor.randn(*h.shape)
            elif draw == "rand":
                h = h * Tensor.rand(*h.shape)
            elif draw == "randint":
                h = h * Tensor.randint(0, 3, h.shape)
            else:
                h = drop(h)
            loss = (h * h).mean()
            loss.backward()
            return h
        return step
    step, warned = twins(make)
    assert not warned and replayed(step, 5)


def test_6_a_learning_rate_written_inside_the_step_runs_eagerly_with_a_warning():
    def make(w):
        def step(x, y):
            w.opt.lr *= 0.5
            return train_step(w)(x, y)
        return step
    step, warned = twins(make)
    assert warned and "lr" in str(warned[0].message)
    assert "test_jit_guarantee.py" in str(warned[0].message)


def test_7_a_branch_on_data_values_runs_eagerly_with_a_warning():
    def make(w):
        def step(x, y):
            out = w.model(Tensor.from_numpy(x))
            if out.data.sum() > 0:
                out = out * 2
            loss = (out * out).mean()
            loss.backward()
            return loss
        return step

    def args(w, i):
        return (w.x * (-1) ** i, w.y)
    step, warned = twins(make, args=args)
    assert warned and ".data" in str(warned[0].message)

"""jit: a replayed step gives what eager execution gives, step after step, and refuses to
replay what it cannot follow."""
import math
import warnings

import numpy as np
import pytest

from tinygrad_mnist import JitWarning, Tensor, jit, manual_seed, nn, no_grad, ops, optim
from tinygrad_mnist.mnist import cli
from tinygrad_mnist.mnist.factories import learning_rate
from tinygrad_mnist.mnist.options import Config

# replay and eager run the same float operations in the same order; a tolerance keeps the
# comparison independent of how a BLAS build treats an output buffer
TOL = dict(rtol=1e-6, atol=1e-7)

OPTIMIZERS = {
    "sgd": lambda ps: optim.SGD(ps, lr=0.1),
    "momentum": lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-3),
    "nesterov": lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
    "rmsprop": lambda ps: optim.RMSProp(ps, lr=0.01, weight_decay=1e-3),
    "adam": lambda ps: optim.Adam(ps, lr=0.01, weight_decay=1e-3),
    "adamw": lambda ps: optim.AdamW(ps, lr=0.01),
}


def _batches(sizes, features=12, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((n, features)).astype(np.float32),
             rng.integers(0, classes, n)) for n in sizes]


def _setup(activation="relu", dropout=0.0, optimizer="momentum", sizes=(12, 16, 8, 5)):
    manual_seed(7)
    model = nn.MLP(list(sizes), activation=activation, dropout=dropout)
    opt = OPTIMIZERS[optimizer](model.parameters())

    def step(x, y):
        opt.zero_grad()
        logits = model(Tensor.from_numpy(x))
        loss = nn.cross_entropy(logits, y)
        loss.backward()
        opt.step()
        return loss, logits
    return model, opt, step


def _compare_runs(batches, schedule=None, **setup):
    """Eager and jitted training side by side, compared after every step."""
    model_e, opt_e, step_e = _setup(**setup)
    model_j, opt_j, step_j = _setup(**setup)
    step_j = jit(step_j)
    for i, (x, y) in enumerate(batches):
        if schedule is not None:
            opt_e.lr = opt_j.lr = schedule(i)
        manual_seed([1, i])                  # the same dropout draws for both
        loss_e, logits_e = step_e(x, y)
        manual_seed([1, i])
        loss_j, logits_j = step_j(x, y)
        np.testing.assert_allclose(loss_j.item(), loss_e.item(), **TOL, err_msg=f"step {i}")
        np.testing.assert_allclose(logits_j.data, logits_e.data, **TOL)
        for (name, a), b in zip(model_e.named_parameters(), model_j.parameters()):
            np.testing.assert_allclose(b.data, a.data, **TOL, err_msg=f"{name}, step {i}")
    for key, value in opt_e.state_dict().items():
        np.testing.assert_allclose(opt_j.state_dict()[key], value, **TOL, err_msg=key)
    return step_j


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_every_activation_replays_like_eager(activation):
    step = _compare_runs(_batches([8] * 6), activation=activation)
    assert step.recordings == 1                  # one recording, five replays


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_every_optimizer_replays_like_eager(optimizer):
    _compare_runs(_batches([8] * 6), optimizer=optimizer)


def test_dropout_draws_the_same_masks_as_eager():
    _compare_runs(_batches([8] * 6), dropout=0.3)


@pytest.mark.parametrize("schedule", ["cosine", "step"])
def test_learning_rate_schedules_reach_the_replay(schedule):
    config = Config(lr=0.2, lr_schedule=schedule)
    _compare_runs(_batches([8] * 8), schedule=lambda i: learning_rate(config, i, 8),
                  optimizer="nesterov")


def test_changing_batch_sizes_and_a_final_partial_batch():
    step = _compare_runs(_batches([8, 8, 5, 8, 8, 3, 5]), dropout=0.2, optimizer="adam")
    assert step.recordings == 3                  # shapes 8, 5 and 3, each recorded once


def test_new_shapes_record_again_within_a_small_cache():
    calls = []

    @jit(cache_size=2)
    def f(x):
        calls.append(1)
        return (x * 2).sum()
    for n in (2, 3, 2, 3, 4, 2):
        assert f(Tensor(np.ones(n))).item() == 2 * n
    # 2 and 3 recorded; 4 evicts 2, which must be recorded again at the end
    assert f.recordings == 4 and len(calls) == 4


def test_numbers_are_part_of_the_key():
    f = jit(lambda x, k: x * k)
    assert f(Tensor([1.0]), 2).item() == 2 and f(Tensor([1.0]), 2).item() == 2
    assert f(Tensor([1.0]), 3).item() == 3
    assert f.recordings == 2


def test_a_list_argument_is_refused_with_its_position():
    f = jit(lambda x, y: x)
    with pytest.raises(TypeError, match="argument 1 is a list"):
        f(Tensor([1.0]), [1, 2])


def test_replay_outputs_are_copies_without_a_graph():
    f = jit(lambda x: x * 3)
    f(Tensor([1.0]))
    first = f(Tensor([1.0]))
    second = f(Tensor([2.0]))
    assert first.item() == 3 and second.item() == 6 and not second.requires_grad


def test_a_branch_on_a_value_runs_eagerly_with_a_warning_naming_the_line():
    def branchy(x):
        total = (x * 2).sum()
        if total.item() > 0:                      # the line the warning names
            return total * 10
        return total

    f = jit(branchy)
    line = branchy.__code__.co_firstlineno + 2
    with pytest.warns(JitWarning, match=rf"test_jit.py:{line}.*item\(\)"):
        assert f(Tensor([1.0])).item() == 20
    with warnings.catch_warnings():
        warnings.simplefilter("error")            # warned once; later calls stay eager
        assert f(Tensor([-1.0])).item() == -2      # the other branch, never stale
        assert f(Tensor([3.0])).item() == 60


@pytest.mark.parametrize("read", [lambda t: bool(t.sum() > 0), lambda t: float(t.sum()) > 0,
                                  lambda t: t.numpy().sum() > 0, lambda t: np.asarray(t)[0] > 0])
def test_every_way_of_reading_a_value_is_caught(read):
    f = jit(lambda x: x * 2 if read(x) else x * 3)
    with pytest.warns(JitWarning, match="reads a tensor's value"):
        f(Tensor([1.0]))
    assert f(Tensor([-1.0])).item() == -3.0


def test_a_hand_written_update_reading_grad_stays_correct():
    w_e, w_j = Tensor([1.0, 2.0], requires_grad=True), Tensor([1.0, 2.0], requires_grad=True)

    def make(w):
        def step(x):
            w.zero_grad()
            ((w * x) ** 2).sum().backward()
            with no_grad():
                w.data -= 0.1 * w.grad
        return step
    eager, jitted = make(w_e), jit(make(w_j))
    with pytest.warns(JitWarning, match=r"\.grad"):
        jitted(Tensor([1.0, 1.0]))
    eager(Tensor([1.0, 1.0]))
    for _ in range(3):
        eager(Tensor([1.0, 1.0]))
        jitted(Tensor([1.0, 1.0]))
    np.testing.assert_allclose(w_j.data, w_e.data, **TOL)


def test_a_boolean_mask_computed_in_the_step_is_not_replayed():
    f = jit(lambda x: x[x > 0].sum())
    with pytest.warns(JitWarning, match="boolean mask"):
        f(Tensor([1.0, -1.0, 2.0]))
    assert f(Tensor([-1.0, -1.0, 2.0])).item() == 2.0


def test_gradients_accumulate_across_replays_when_not_zeroed():
    w_e, w_j = (Tensor(np.ones(3), requires_grad=True) for _ in range(2))

    def make(w):
        return lambda x: (w * x).sum().backward()
    eager, jitted = make(w_e), jit(make(w_j))
    for k in range(4):
        x = Tensor(np.arange(3.0) + k)
        eager(x)
        jitted(x)
        np.testing.assert_allclose(w_j.grad, w_e.grad, **TOL)
    assert w_j.grad.tolist() == [6.0, 10.0, 14.0]


def test_a_gradient_reaches_a_tensor_argument():
    f = jit(lambda x: (x * x).sum().backward())
    for values in ([1.0, 2.0], [3.0, -1.0], [0.5, 0.0]):
        x = Tensor(values, requires_grad=True)
        f(x)
        np.testing.assert_allclose(x.grad, 2 * np.array(values), **TOL)


def test_in_place_updates_under_no_grad_are_replayed():
    w = Tensor([1.0, 2.0])

    @jit
    def decay(x):
        with no_grad():
            w.__imul__(0.5)
        return w * x
    for k in range(3):
        decay(Tensor([1.0, 1.0]))
    np.testing.assert_allclose(w.data, [0.125, 0.25])


@pytest.mark.parametrize("make", ["Tensor.zeros(2, dtype=np.float64)",
                                  "Tensor([0.0, 0.0], dtype=np.float64)",
                                  "Tensor.arange(2).astype(np.float64) * 0"])
@pytest.mark.parametrize("recorded", [False, True])
def test_a_tensor_made_in_the_step_and_changed_in_place_is_made_again_by_each_replay(
        make, recorded):
    """acc = Tensor.zeros(n); acc += ... inside a step: each replay starts acc from zeros as
    the eager call does (a replay used to keep adding into the one tensor of the recording,
    and with a recorded update the step ran eagerly, blaming 'a tensor from outside')."""
    w = Tensor([1.0, 2.0], dtype=np.float64, requires_grad=True)

    def step(x):
        acc = eval(make)
        acc += x * w if recorded else x
        acc *= w if recorded else 2.0
        loss = (acc * acc).sum()
        if recorded:
            loss.backward()
        return loss.detach()
    replayed = jit(step)
    with warnings.catch_warnings():
        warnings.simplefilter("error", JitWarning)
        for k in range(4):
            x = Tensor([1.0 + k, -2.0 * k], dtype=np.float64)
            w.grad = None
            got, grad = replayed(x).item(), w.grad
            w.grad = None
            assert got == pytest.approx(step(x).item(), rel=1e-12)
            if recorded:          # loss = sum(x^2 w^4): d/dw = 4 x^2 w^3
                np.testing.assert_allclose(grad, 4 * x.data ** 2 * w.data ** 3, rtol=1e-12)
    assert replayed.recordings == 1


@pytest.mark.parametrize("transform", ["grad", "vjp", "jvp", "jacrev", "jacfwd", "hessian",
                                       "vmap of grad", "grad through functional_call"])
def test_the_func_transforms_are_replayed_by_the_jit(transform):
    """Under a recording the transforms compute with recorded ops (their backward too), so
    the jit replays them instead of running eagerly; the numbers are the eager call's."""
    from tinygrad_mnist import func
    v = Tensor([0.5, -1.0, 2.0], dtype=np.float64)
    layer = nn.Linear(3, 3)

    def f(x):
        return (x.sin() * x).sum() * x.exp().sum()
    body = {
        "grad": lambda x: func.grad(f)(x),
        "vjp": lambda x: func.vjp(lambda y: y.tanh() * y.sum(), x)[1](v)[0],
        "jvp": lambda x: func.jvp(lambda y: y.tanh() * y.sum(), (x,), (v,))[1],
        "jacrev": lambda x: func.jacrev(lambda y: y.tanh() * y.sum())(x),
        "jacfwd": lambda x: func.jacfwd(lambda y: y.tanh() * y.sum())(x),
        "hessian": lambda x: func.hessian(f)(x),
        "vmap of grad": lambda x: func.vmap(func.grad(f))(Tensor.stack([x, x * 2.0])),
        "grad through functional_call": lambda x: func.grad(
            lambda w: (func.functional_call(layer, {"weight": w}, (x,)) ** 2).sum())(
            layer.weight.astype(np.float64) * 1.0),
    }[transform]
    replayed = jit(lambda x: body(x).detach())
    with warnings.catch_warnings():
        warnings.simplefilter("error", JitWarning)
        for k in range(3):
            x = Tensor([0.3 + k, -0.7, 1.1 * k], dtype=np.float64)
            np.testing.assert_allclose(replayed(x).data, body(x).data, rtol=1e-10, atol=1e-12)
    assert (replayed.recordings, replayed.replays) == (1, 2)
    assert layer.weight.dtype == np.float32           # functional_call left the layer as it was


def test_integer_inputs_are_converted_on_every_replay():
    manual_seed(0)
    layer = nn.Linear(3, 2)
    f = jit(lambda x: layer(x))
    for values in ([[1, 2, 3]], [[4, 5, 6]], [[7, 8, 9]]):
        x = Tensor(np.array(values, dtype=np.uint8))
        expected = np.array(values, dtype=np.float32) @ layer.weight.data.T + layer.bias.data
        with no_grad():                       # inference: the output has no graph
            np.testing.assert_allclose(f(x).data, expected, rtol=1e-5)
    assert f.recordings == 1


def test_comparisons_and_argmax_are_replayed_on_new_values():
    f = jit(lambda x: ((x > 0) * x, x.argmax()))
    for values in ([1.0, -2.0, 3.0], [-1.0, 5.0, 0.5]):
        masked, best = f(Tensor(values))
        np.testing.assert_array_equal(masked.data, np.maximum(values, 0))
        assert best.item() == int(np.argmax(values))


class Cube(ops.Op):
    """A user's op: it replays through its own forward and backward."""
    name = "cube"

    def forward(self, x):
        self.x = x
        return x ** 3

    def backward(self, gz):
        return (3 * gz * self.x ** 2,)


def test_a_users_op_replays_forward_and_backward():
    f = jit(lambda x: Cube.apply(x).sum().backward())
    for values in ([1.0, 2.0], [-1.0, 0.5]):
        x = Tensor(values, requires_grad=True)
        f(x)
        np.testing.assert_allclose(x.grad, 3 * np.square(values), **TOL)


def test_inference_under_no_grad_and_the_train_eval_mode():
    manual_seed(0)
    model = nn.MLP([6, 8, 3], dropout=0.5)

    @jit
    def predict(x):
        with no_grad():
            return model(x)
    x = Tensor(np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32))
    model.eval()
    with no_grad():
        expected = model(x).data
    first, again = predict(x).data, predict(x).data
    np.testing.assert_allclose(first, expected, **TOL)
    np.testing.assert_allclose(again, expected, **TOL)
    model.train()                                  # dropout on: a new recording, new draws
    trained = predict(x).data
    assert predict.recordings == 2 and not np.allclose(trained, expected)
    model.eval()
    np.testing.assert_allclose(predict(x).data, expected, **TOL)
    assert predict.recordings == 2


@pytest.mark.slow
def test_the_trainer_gives_the_same_run_with_and_without_jit(tmp_path, mnist_dir):
    runs = {}
    for name, extra in (("jit", []), ("eager", ["--no-jit"])):
        out = tmp_path / name
        assert cli.main(["train", "--data-dir", str(mnist_dir), "--subset", "1000",
                         "--hidden", "32", "--epochs", "2", "--batch-size", "96",
                         "--dropout", "0.2", "--quiet", "--out", str(out), *extra]) == 0
        runs[name] = nn.load_arrays(out / "model.npz")
    for key, value in runs["eager"].items():
        if value.dtype.kind == "f":
            np.testing.assert_allclose(runs["jit"][key], value, rtol=1e-5, atol=1e-6,
                                       err_msg=key)


def test_replays_learn():
    _, _, step = _setup()
    step = jit(step)
    (x, y), = _batches([16])
    losses = [step(x, y)[0].item() for _ in range(30)]
    assert all(map(math.isfinite, losses))
    assert losses[-1] < 0.2 * losses[0]          # one batch, learned by heart


def test_a_jitted_method_replays_per_instance():
    class Scaler:
        def __init__(self, k):
            self.k = Tensor([float(k)])

        @jit
        def apply(self, x):
            return x * self.k
    two, three = Scaler(2), Scaler(3)
    for _ in range(2):
        assert two.apply(Tensor([1.0])).item() == 2 and three.apply(Tensor([1.0])).item() == 3
    assert Scaler.apply.recordings == 2


def test_a_replay_still_refuses_targets_out_of_range():
    _, _, step = _setup()
    step = jit(step)
    (x, y), = _batches([8])
    step(x, y)
    for bad in (-1, 5):
        wrong = y.copy()
        wrong[3] = bad
        with pytest.raises(ValueError, match=r"cross_entropy: targets must lie in \[0, 5\)"):
            step(x, wrong)

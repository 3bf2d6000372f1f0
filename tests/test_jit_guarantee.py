"""jit's guarantee: a replay equals eager execution, or the step does not replay.

Every test runs two identical worlds (a model, an optimizer, a step) side by side, one eagerly
and one through jit, with the same actions between calls, and compares every tensor of the
world (values and gradients) and every output after each call. Where a replay cannot follow,
the step must still give eager's numbers and say so with a JitWarning."""
import types
import warnings

import numpy as np
import pytest

from tinygrad_mnist import (JitMismatchError, JitWarning, Tensor, jit, manual_seed, nn, no_grad,
                            ops, optim)
from tinygrad_mnist.mnist import cli
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


# ---------------------------------------------------------------- arguments used in new ways

def _pair_step(a, b):
    loss = (a * b + a * 3).sum()
    loss.backward()
    return loss


@pytest.mark.parametrize("order", ["same first", "distinct first"])
def test_the_same_tensor_twice_and_two_tensors_are_different_programs(order):
    f = jit(_pair_step)
    for k in range(4):
        same = (k % 2 == 0) == (order == "same first")
        tensors = {}
        for kind in ("eager", "jit"):
            a = Tensor([1.0, 2.0 + k], requires_grad=True)
            b = a if same else Tensor([3.0, -1.0], requires_grad=True)
            loss = (_pair_step if kind == "eager" else f)(a, b)
            tensors[kind] = (loss.item(), a.grad.copy(), b.grad.copy())
        np.testing.assert_allclose(tensors["jit"][0], tensors["eager"][0], **TOL)
        np.testing.assert_allclose(tensors["jit"][1], tensors["eager"][1], **TOL)
        np.testing.assert_allclose(tensors["jit"][2], tensors["eager"][2], **TOL)
    assert f.recordings == 2 and f.replays == 2


def test_the_same_array_twice_is_another_program():
    f = jit(lambda a, b: Tensor.from_numpy(a) * 2 + Tensor.from_numpy(b))
    x, y = np.array([1.0, 2.0]), np.array([10.0, 20.0])
    assert f(x, y).tolist() == [12.0, 24.0]
    assert f(x, x).tolist() == [3.0, 6.0]
    assert f(y, x).tolist() == [21.0, 42.0] and f(y, y).tolist() == [30.0, 60.0]
    assert f.recordings == 2


def test_new_dtypes_record_again():
    def make(w):
        def step(x, y):
            return train_step(w)(x.astype(np.float64) if w.wide else x, y)
        return step
    step, warned = twins(make, between=lambda w, i: setattr(w, "wide", i >= 2))
    assert not warned


def test_a_number_argument_that_changes_every_call_ends_in_eager_execution():
    def make(w):
        def step(x, y, lr):
            w.opt.zero_grad()
            loss = nn.cross_entropy(w.model(Tensor.from_numpy(x)), y) * lr
            loss.backward()
            w.opt.step()
            return loss
        return step
    calls = 24
    step, warned = twins(make, calls=calls, args=lambda w, i: (w.x, w.y, 1.0 + i / 10))
    assert len(warned) == 1 and "recorded again on each" in str(warned[0].message)
    assert step.recordings <= 17 and len(step.programs) <= 8


# ---------------------------------------------------------------- a tensor changed between calls

@pytest.mark.parametrize("change", ["new array", "in place", "load_state_dict", "new dtype",
                                    "grad set", "grad cleared", "dropout p", "eval"])
def test_a_tensor_or_module_changed_between_calls_is_followed(change):
    def between(w, i):
        if not hasattr(w, "drop"):
            w.drop = nn.Dropout(0.3)
        weight = w.model.layers[0].weight
        if i == 0:
            return
        if change == "new array":
            weight.data = weight.data * 0.5
        elif change == "in place":
            weight.data[0] += 1.0
        elif change == "load_state_dict":
            state = {k: v * 0.9 for k, v in w.model.state_dict().items()}
            w.model.load_state_dict(state)
        elif change == "new dtype" and i == 2:
            for p in w.model.parameters():
                p.data = p.data.astype(np.float64)
            w.opt = optim.SGD(w.model.parameters(), lr=0.1, momentum=0.9)
        elif change == "grad set":
            weight.grad = np.full(weight.shape, 0.5, np.float32)
        elif change == "grad cleared":
            weight.grad = None
        elif change == "dropout p" and i == 2:
            w.drop.p = 0.6
        elif change == "eval":
            w.model.train(i % 2 == 0)

    def make(w):
        def step(x, y):
            out = w.drop(w.model(Tensor.from_numpy(x)))
            loss = nn.cross_entropy(out, y)
            loss.backward()
            w.opt.step()
            return loss
        return step
    step, warned = twins(lambda w: (lambda x, y: make(w)(x, y)), between=between)
    assert not warned and replayed(step, 5)


def test_a_captured_tensor_of_a_new_shape_records_again():
    def between(w, i):
        if i == 0 or i == 3:
            w.scale = Tensor(np.linspace(0.5, 1.5, 3 if i == 0 else 1).astype(np.float32),
                             requires_grad=True)
        elif i == 2:
            w.scale.data = np.ones(1, np.float32)

    def make(w):
        def step(x, y):
            loss = (w.model(Tensor.from_numpy(x)) * w.scale).sum()
            loss.backward()
            return loss
        return step
    step, warned = twins(lambda w: (lambda x, y: make(w)(x, y)), between=between)
    assert not warned and replayed(step, 5)


# ---------------------------------------------------------------- effects inside the step

def test_a_grad_assigned_an_array_inside_the_step_is_a_fresh_copy_every_replay():
    def make(w):
        def step(x, y):
            for p in w.model.parameters():
                p.grad = np.full(p.shape, 0.25, np.float32)
            nn.cross_entropy(w.model(Tensor.from_numpy(x)), y).backward()
            w.opt.step()
        return step
    step, warned = twins(make)
    assert not warned and replayed(step, 5)


def test_a_scheduler_step_inside_the_step_is_replayed():
    def make(w):
        w.schedule = lr_scheduler.StepLR(w.opt, step_size=2, gamma=0.5)

        def step(x, y):
            loss = train_step(w)(x, y)
            w.schedule.step()
            return loss
        return step
    step, warned = twins(make, calls=7)
    assert not warned and replayed(step, 7)


def test_a_seed_inside_the_step_is_replayed():
    def make(w):
        def step(x, y):
            manual_seed(123)
            h = w.model(Tensor.from_numpy(x)) + Tensor.randn(4, 3)
            loss = (h * h).mean()
            loss.backward()
            w.opt.step()
            return loss
        return step
    step, warned = twins(make)
    assert not warned and replayed(step, 5)


def test_an_in_place_update_under_no_grad_is_replayed():
    def make(w):
        def step(x, y):
            loss = train_step(w)(x, y)
            with no_grad():
                for p in w.model.parameters():
                    p *= 0.99                                  # weight decay by hand
            return loss
        return step
    step, warned = twins(make)
    assert not warned and replayed(step, 5)


REFUSED = {
    "data assigned": lambda w: setattr(w.model.layers[0].weight, "data",
                                       np.zeros((5, 6), np.float32)),
    "requires_grad_": lambda w: w.model.layers[0].weight.requires_grad_(False),
    "eval inside": lambda w: w.model.eval(),
    "module attribute": lambda w: setattr(w.model, "note", 1),
    "optimizer attribute": lambda w: setattr(w.opt, "note", 1),
    "parameter group": lambda w: w.opt.param_groups[0].__setitem__("lr", 0.05),
    "a new layer": lambda w: nn.Linear(2, 2),
    "numpy's generator": lambda w: np.random.rand(),
    "python's random": lambda w: __import__("random").random(),
    "print": lambda w: print("step"),
}


@pytest.mark.parametrize("effect", sorted(REFUSED))
def test_an_effect_a_replay_cannot_repeat_runs_eagerly_with_a_warning(effect, capsys):
    def make(w):
        def step(x, y):
            loss = train_step(w)(x, y)
            REFUSED[effect](w)
            return loss
        return step
    step, warned = twins(make, calls=4)
    assert len(warned) == 1
    # a write that sets what the first call already set (a frozen layer stays frozen, eval
    # stays eval, an attribute keeps its value) changes nothing: the second recording sees
    # no effect, and its replays equal eager execution (twins compares every call)
    idempotent = {"requires_grad_", "eval inside", "module attribute", "optimizer attribute",
                  "parameter group"}
    assert step.replays == (2 if effect in idempotent else 0)


@pytest.mark.parametrize("target", ["optimizer", "parameter group", "module"])
def test_a_write_that_changes_every_call_is_never_replayed(target):
    writes = {"optimizer": lambda w: setattr(w.opt, "note", getattr(w.opt, "note", 0) + 1),
              "parameter group": lambda w: w.opt.param_groups[0].__setitem__(
                  "lr", w.opt.param_groups[0]["lr"] * 0.5),
              "module": lambda w: setattr(w.model, "calls", getattr(w.model, "calls", 0) + 1)}

    def make(w):
        def step(x, y):
            loss = train_step(w)(x, y)
            writes[target](w)
            return loss
        return step
    step, warned = twins(make, calls=4)
    assert len(warned) == 1 and "writes" in str(warned[0].message)
    assert step.replays == 0


READS = {
    ".data": lambda t: t.data.sum() > 0, ".grad": lambda t: t.grad is None,
    "item": lambda t: t.sum().item() > 0, "tolist": lambda t: t.tolist()[0][0] > 0,
    "numpy": lambda t: t.numpy().sum() > 0, "float": lambda t: float(t.sum()) > 0,
    "int": lambda t: int(t.sum()) > 0, "bool": lambda t: bool(t.sum() > 0),
    "np.asarray": lambda t: np.asarray(t).sum() > 0, "repr": lambda t: "-" in repr(t),
    "format": lambda t: f"{t.sum():.3f}".startswith("-"), "index": lambda t: [1, 2][
        (t.sum() > 0).astype(np.int64)] > 1,
}


@pytest.mark.parametrize("read", sorted(READS))
def test_every_kind_of_value_read_runs_eagerly_with_a_warning(read):
    def make(w):
        def step(x, y):
            out = w.model(Tensor.from_numpy(x))
            scale = 2.0 if READS[read](out) else -1.0
            loss = (out * scale).mean()
            loss.backward()
            return loss
        return step
    step, warned = twins(make, args=lambda w, i: (w.x * (-1) ** i, w.y))
    assert len(warned) == 1 and step.replays == 0


# ---------------------------------------------------------------- outputs

def test_a_returned_loss_behaves_as_eager_leaves_it():
    w = world()
    step = jit(train_step(w))
    for _ in range(3):
        loss = step(w.x, w.y)
    assert step.replays == 2
    assert loss.requires_grad and loss.op is None and loss.graph_freed
    with pytest.raises(RuntimeError, match="already freed"):
        loss.backward()


def test_returning_a_tensor_with_its_graph_runs_eagerly_with_a_warning():
    w = world()
    step = jit(lambda x: w.model(Tensor.from_numpy(x)))
    with pytest.warns(JitWarning, match="still has its graph"):
        out = step(w.x)
    out.sum().backward()                               # as eager: the graph is there
    assert w.model.layers[0].weight.grad is not None
    with no_grad():
        step(w.x), step(w.x)
    assert step.replays == 1


# ---------------------------------------------------------------- check=True

def test_check_passes_a_faithful_replay_and_keeps_its_effects_once():
    eager, checked = world(optimizer="adam"), world(optimizer="adam")
    step_e, step_c = train_step(eager), jit(train_step(checked), check=True)
    for _ in range(4):
        step_e(eager.x, eager.y)
        step_c(checked.x, checked.y)
    assert step_c.replays == 3
    for name, t in tensors_of(eager).items():
        _same(t.numpy(), tensors_of(checked)[name].numpy(), name)
    assert int(checked.opt.state[0]["step"]) == 4             # each step taken once


def test_check_catches_a_broken_replay_and_names_what_differs():
    w = world()
    step = jit(train_step(w), check=True)
    step(w.x, w.y)
    program, = next(iter(step.programs.values())).programs
    program.steps.pop(0)                      # sabotage: the replay forgets zero_grad
    with pytest.raises(JitMismatchError, match=r"layers\.0\.weight(\.grad)? differs from "
                                               r"eager execution by [0-9.e-]+"):
        step(w.x, w.y)


def test_check_catches_an_op_whose_forward_is_not_a_function_of_its_inputs():
    calls = [0]

    class Drifting(ops.Op):
        """A user's op that reads a counter: the recording cannot capture it."""
        def forward(self, x):
            calls[0] += 1
            return x * calls[0]

        def backward(self, gz):
            return (gz * calls[0],)

    w = world()
    f = jit(lambda x: Drifting.apply(Tensor.from_numpy(x)).sum(), check=True)
    with no_grad():
        f(w.x)
        with pytest.raises(JitMismatchError, match="output 0 differs"):
            f(w.x)


@pytest.mark.slow
def test_the_trainer_checks_its_replays_with_jit_check(tmp_path, mnist_dir, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--data-dir", str(mnist_dir), "--subset", "500", "--hidden",
                     "16", "--epochs", "1", "--batch-size", "100", "--dropout", "0.2",
                     "--quiet", "--jit-check", "--out", str(out)]) == 0
    assert (out / "model.npz").exists()


SCALE = 2.0
SETTINGS = {"scale": 2.0, "nested": {"scale": 2.0}}


class _Config:
    def __init__(self):
        self.values = {"scale": 2.0}


CONFIG = _Config()


@pytest.mark.parametrize("where", ["a global number", "an item of a global dict",
                                   "an item of a nested dict", "a dict on a plain object"])
def test_values_read_from_globals_and_containers_are_followed_alike(where):
    read = {"a global number": lambda: SCALE,
            "an item of a global dict": lambda: SETTINGS["scale"],
            "an item of a nested dict": lambda: SETTINGS["nested"]["scale"],
            "a dict on a plain object": lambda: CONFIG.values["scale"]}[where]

    def write(value):
        global SCALE
        if where == "a global number":
            SCALE = value
        elif where == "an item of a global dict":
            SETTINGS["scale"] = value
        elif where == "an item of a nested dict":
            SETTINGS["nested"]["scale"] = value
        else:
            CONFIG.values["scale"] = value

    @jit
    def step(x):
        return x * read()
    x = Tensor([1.0, 2.0])
    try:
        for value in (2.0, 2.0, 2.0, 3.0, 3.0, 5.0):
            write(value)
            np.testing.assert_array_equal(step(x).numpy(), [value, 2 * value])
        assert step.replays == 3 and step.recordings == 3     # each new value: recorded anew
    finally:
        write(2.0)


def test_recording_leaves_other_threads_stdout_alone():
    import sys
    seen = []

    @jit
    def step(x):
        seen.append(sys.stdout)
        return x * 2
    original = sys.stdout
    step(Tensor([1.0]))
    assert seen[0] is original

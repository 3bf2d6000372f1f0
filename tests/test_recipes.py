"""The records' trainer options, each against a hand-computed case or a closed form: the
max-norm constraint, the momentum's rise, the weight average (and its checkpoint), test-time
augmentation, distillation's loss and gradient, and the proxy's choice of the hardest data."""
import json

import numpy as np
import pytest

from tinygrad_mnist import Tensor, nn
from tinygrad_mnist.mnist.cli import main as cli
from tinygrad_mnist.mnist.distill import distillation_loss, soft_targets
from tinygrad_mnist.mnist.evaluation import predict_logits_tta, shifted
from tinygrad_mnist.mnist.options import Config
from tinygrad_mnist.mnist.selection import hardest_fraction
from tinygrad_mnist.mnist.train import train
from tinygrad_mnist.mnist.weights import WeightAverage, max_norm_, momentum_at


def test_max_norm_rescales_each_hidden_units_incoming_weights_and_leaves_the_output_free():
    model = nn.Sequential(nn.Conv2d(1, 2, 2), nn.Flatten(), nn.Linear(3, 2), nn.ReLU(),
                          nn.Linear(2, 2))
    model[0].weight.data[...] = np.array([[[[3, 0], [0, 4]]], [[[0.3, 0], [0, 0.4]]]])
    model[2].weight.data[...] = [[6, 8, 0], [1, 0, 0]]
    model[4].weight.data[...] = [[30, 40], [0, 0]]
    biases = [m.bias.data.copy() for m in (model[0], model[2], model[4])]
    max_norm_(model, 2.0)
    np.testing.assert_allclose(model[0].weight.data.reshape(2, 4),
                               [[1.2, 0, 0, 1.6], [0.3, 0, 0, 0.4]], rtol=1e-6)   # 5 -> 2
    np.testing.assert_allclose(model[2].weight.data, [[1.2, 1.6, 0], [1, 0, 0]], rtol=1e-6)
    np.testing.assert_array_equal(model[4].weight.data, [[30, 40], [0, 0]])  # the output's
    for m, b in zip((model[0], model[2], model[4]), biases):
        np.testing.assert_array_equal(m.bias.data, b)


def test_the_momentum_rises_linearly_then_stays():
    assert momentum_at(0, 100, 0.5, 0.99) == 0.5
    assert momentum_at(50, 100, 0.5, 0.99) == pytest.approx(0.745)
    assert momentum_at(100, 100, 0.5, 0.99) == momentum_at(500, 100, 0.5, 0.99) == 0.99


def test_the_step_hooks_set_the_momentum_before_each_update_and_constrain_after_it():
    from tinygrad_mnist import optim
    from tinygrad_mnist.mnist.train import StepHooks
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    opt = optim.SGD(model.parameters(), 0.1, momentum=0.9)
    config = Config(momentum_start=0.5, momentum_epochs=2, epochs=4, max_norm=1.0)
    hooks = StepHooks(model, opt, config)
    hooks.before(5, steps_per_epoch=10)                 # 5 of the ramp's 20 steps
    assert opt.param_groups[0]["momentum"] == pytest.approx(0.6)
    model[0].weight.data[...] = [[3, 4], [0.1, 0]]
    hooks.after()
    np.testing.assert_allclose(model[0].weight.data, [[0.6, 0.8], [0.1, 0]], rtol=1e-6)


def test_the_weight_average_follows_its_recursion_and_swaps_in_place():
    layer = nn.Linear(2, 1)
    start = layer.weight.data.copy()
    average = WeightAverage(layer, 0.9)
    steps = [np.array([[1.0, 2.0]]), np.array([[3.0, -1.0]]), np.array([[0.5, 0.5]])]
    for w in steps:
        layer.weight.data[...] = w
        average.update()
    expected = 0.9 ** 3 * start + 0.1 * (0.9 ** 2 * steps[0] + 0.9 * steps[1] + steps[2])
    np.testing.assert_allclose(average.average["weight"], expected, rtol=1e-6)
    array = layer.weight.data
    average.swapped_in()
    assert layer.weight.data is array                   # in place: a jit replay sees it
    np.testing.assert_allclose(layer.weight.data, expected, rtol=1e-6)
    average.swapped_out()
    np.testing.assert_array_equal(layer.weight.data, steps[-1])


def test_shifts_move_the_image_and_fill_the_edge():
    x = np.arange(784, dtype=np.float32).reshape(1, 784)
    down = shifted(x, 1, 0, -1.0).reshape(28, 28)
    assert (down[0] == -1).all() and (down[1:] == x.reshape(28, 28)[:-1]).all()
    left = shifted(x, 0, -1, -1.0).reshape(28, 28)
    assert (left[:, -1] == -1).all() and (left[:, :-1] == x.reshape(28, 28)[:, 1:]).all()


def test_test_time_augmentation_averages_the_probabilities_of_the_five_views():
    class TopRow(nn.Module):            # logits: [sum of row 0, sum of the rest]
        def forward(self, x):
            images = x.reshape(-1, 28, 28)
            return Tensor.stack([images[:, 0].sum(axis=1), images[:, 1:].sum(axis=(1, 2))],
                                axis=1)
    x = np.zeros((1, 784), np.float32)
    x[0, :28] = 0.1                                      # row 0 holds 2.8 in all
    out = predict_logits_tta(TopRow(), x, 0.0)
    # as is; moved up (row 0 leaves); down (row 0 becomes row 1); left and right (a pixel of
    # row 0 leaves)
    views = [(2.8, 0), (0, 0), (0, 2.8), (2.7, 0), (2.7, 0)]
    probs = np.mean([np.exp(v) / np.exp(v).sum() for v in np.array(views)], axis=0)
    np.testing.assert_allclose(np.exp(out[0]), probs, rtol=1e-5)


def test_with_mirror_the_mirrored_images_views_are_averaged_too():
    class LeftColumn(nn.Module):        # logits: [sum of column 0, 0]
        def forward(self, x):
            column = x.reshape(-1, 28, 28)[:, :, 0].sum(axis=1)
            return Tensor.stack([column, column * 0], axis=1)
    x = np.zeros((1, 784), np.float32)
    x.reshape(28, 28)[:, 27] = 0.1                       # the right column holds 2.8
    out = predict_logits_tta(LeftColumn(), x, 0.0, mirror=True)
    # the image's five views never bring the right column to column 0; mirrored, it is
    # column 0 as is, moved up or down (a pixel leaves), and moved right (it leaves) or left
    # (column 1 comes in: empty)
    views = [0.0] * 5 + [2.8, 2.7, 2.7, 0.0, 0.0]
    probs = np.mean([np.exp([v, 0]) / np.exp([v, 0]).sum() for v in views], axis=0)
    np.testing.assert_allclose(np.exp(out[0]), probs, rtol=1e-5)


def test_the_distillation_loss_and_its_gradient_are_the_closed_forms():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((4, 3))
    labels = np.array([0, 2, 1, 2])
    soft = _softmax(rng.standard_normal((4, 3)))
    T, A = 4.0, 0.7
    logits = Tensor.from_numpy(z.copy(), requires_grad=True)
    loss = distillation_loss(logits, labels, Tensor.from_numpy(soft), T, A)
    p = _softmax(z)
    hard = -np.log(p[np.arange(4), labels]).mean()
    q = _softmax(z / T)
    soft_term = -(soft * np.log(q)).sum(axis=1).mean()
    assert loss.item() == pytest.approx((1 - A) * hard + A * T * T * soft_term, rel=1e-10)
    loss.backward()
    onehot = np.eye(3)[labels]
    expected = ((1 - A) * (p - onehot) + A * T * (q - soft)) / 4
    np.testing.assert_allclose(logits.grad, expected, rtol=1e-8, atol=1e-12)


def test_soft_targets_average_the_teachers_probabilities_at_the_temperature():
    class Fixed(nn.Module):
        def __init__(self, z):
            self.z = z

        def forward(self, x):
            return Tensor.from_numpy(np.repeat(self.z[None], x.shape[0], axis=0))
    a, b = np.array([2.0, 0.0, -1.0]), np.array([0.0, 1.0, 0.0])
    soft = soft_targets([Fixed(a), Fixed(b)], np.zeros((2, 784), np.float32), 2.0)
    np.testing.assert_allclose(soft[0], (_softmax(a / 2) + _softmax(b / 2)) / 2, rtol=1e-6)


def test_the_proxy_keeps_the_largest_losses():
    losses = np.array([0.1, 2.0, 0.5, 2.0, 3.0, 0.0])
    np.testing.assert_array_equal(hardest_fraction(losses, 0.5), [1, 3, 4])
    np.testing.assert_array_equal(hardest_fraction(losses, 0.34), [1, 4])   # a tie: the earlier
    assert len(hardest_fraction(losses, 1e-9)) == 1


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _config(mnist_dir, out, **options):
    base = dict(data_dir=str(mnist_dir), out=str(out), epochs=2, subset=1000, hidden=[32],
                threads=1, force=True)
    base.update(options)
    return Config(**base)


def test_a_run_with_every_weight_option_resumes_exactly(mnist_dir, tmp_path, monkeypatch):
    """Stopped after its first epoch's checkpoint and resumed, a run with the weight average,
    the constraint, the momentum's rise and TTA ends as the straight run does."""
    from tinygrad_mnist.mnist import train as training
    from tinygrad_mnist.mnist.train import Interrupted
    options = dict(max_norm=1.5, momentum_start=0.5, momentum_epochs=2, ema=0.9, tta=True)
    straight = train(_config(mnist_dir, tmp_path / "a", **options), log=lambda s: None,
                     progress=False)
    save = training.save_checkpoint

    def save_then_stop(*args, **kwargs):
        save(*args, **kwargs)
        raise KeyboardInterrupt
    monkeypatch.setattr(training, "save_checkpoint", save_then_stop)
    with pytest.raises(Interrupted):
        train(_config(mnist_dir, tmp_path / "b", **options), log=lambda s: None,
              progress=False)
    monkeypatch.setattr(training, "save_checkpoint", save)
    resumed = train(_config(mnist_dir, tmp_path / "b", resume=True, force=False, **options),
                    log=lambda s: None, progress=False)

    def without_time(history):
        return [{k: v for k, v in h.items() if k != "seconds"} for h in history]
    assert without_time(resumed["history"]) == without_time(straight["history"])
    a, b = (nn.load_arrays(tmp_path / name / "model.npz") for name in ("a", "b"))
    for key in a:
        if key != nn.META_KEY:
            np.testing.assert_array_equal(a[key], b[key])


def test_tta_is_the_final_accuracy_and_each_epoch_the_plain_models(mnist_dir, tmp_path):
    from tinygrad_mnist.mnist import data
    from tinygrad_mnist.mnist.evaluation import predict_logits
    from tinygrad_mnist.mnist.saved import load_model
    lines = []
    metrics = train(_config(mnist_dir, tmp_path, tta=True, flip=True, epochs=1),
                    log=lines.append, progress=False)
    model, _ = load_model(tmp_path / "model.npz")
    ds = data.load("mnist", str(mnist_dir), progress=False)
    x, y = ds.normalized(ds.test_images[:1000]), ds.test_labels[:1000]
    fill = float(ds.normalized(np.zeros((1, 1), np.uint8))[0, 0])
    plain = (predict_logits(model, x).argmax(axis=1) == y).mean()
    averaged = (predict_logits_tta(model, x, fill, mirror=True).argmax(axis=1) == y).mean()
    assert metrics["history"][-1]["test_accuracy"] == pytest.approx(plain)
    assert metrics["test_accuracy"] == pytest.approx(averaged) and averaged != plain
    assert f"{averaged * 100:.2f}% with test-time augmentation ({plain * 100:.2f}% " \
        "without)" in lines[-1]


def test_replayed_steps_see_the_momentum_rise_and_the_constraint(mnist_dir, tmp_path):
    options = dict(max_norm=1.0, momentum_start=0.2, momentum_epochs=1)
    runs = [train(_config(mnist_dir, tmp_path / name, jit=flag, **options),
                  log=lambda s: None, progress=False) for name, flag in (("j", True),
                                                                         ("e", False))]
    assert runs[0]["history"][-1]["train_loss"] == pytest.approx(
        runs[1]["history"][-1]["train_loss"], rel=1e-6)
    weights = nn.load_arrays(tmp_path / "j" / "model.npz")
    first = [v for k, v in weights.items() if k.endswith("weight")][0]
    assert np.sqrt((first.astype(np.float64) ** 2).sum(axis=1)).max() <= 1.0 + 1e-6


def test_distilling_and_selecting_in_the_trainer(mnist_dir, tmp_path):
    assert cli(["train", "--data-dir", str(mnist_dir), "--out", str(tmp_path / "t"),
                "--epochs", "1", "--subset", "1000", "--hidden", "32", "--quiet"]) == 0
    lines = []
    metrics = train(_config(mnist_dir, tmp_path / "s", teacher=str(tmp_path / "t" /
                                                                   "model.npz"),
                            temperature=3.0, select_fraction=0.6), log=lines.append,
                    progress=False)
    assert any("training on the 600 hardest of 1000 images" in line for line in lines)
    assert any("distilling from 1 teacher at temperature 3" in line for line in lines)
    plain = train(_config(mnist_dir, tmp_path / "p", select_fraction=0.6), log=lambda s: None,
                  progress=False)
    assert plain["history"][0]["train_accuracy"] == pytest.approx(
        metrics["history"][0]["train_accuracy"], abs=0.2)      # the same images ...
    assert plain["history"][0]["train_loss"] != metrics["history"][0]["train_loss"]  # ... loss
    with pytest.raises(ValueError, match="--teacher: the soft targets are computed once"):
        train(_config(mnist_dir, tmp_path / "x", teacher="m.npz", augment=True))
    with pytest.raises(ValueError, match="--momentum-start is an option of --optimizer"):
        train(_config(mnist_dir, tmp_path / "x", momentum_start=0.5, optimizer="adam"))
    saved = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert saved["config"]["select_fraction"] == 0.6
    eager = train(_config(mnist_dir, tmp_path / "e", teacher=str(tmp_path / "t" / "model.npz"),
                          temperature=3.0, select_fraction=0.6, jit=False),
                  log=lambda s: None, progress=False)           # the replayed step is eager's
    assert [h["train_loss"] for h in eager["history"]] == pytest.approx(
        [h["train_loss"] for h in metrics["history"]], rel=1e-6)

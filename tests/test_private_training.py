"""`train --dp`: the options it needs and refuses, the epsilon it reports against the
accountant, and a resumed private run against a straight one."""
import json

import numpy as np
import pytest

from tinygrad_mnist import privacy
from tinygrad_mnist.mnist import cli
from tinygrad_mnist.mnist.options import Config
from tinygrad_mnist.mnist.private import check
from tinygrad_mnist.mnist.train import train


@pytest.mark.parametrize("options, message", [
    (dict(dp=True), "needs one of --epsilon"),
    (dict(dp=True, epsilon=2.0, noise_multiplier=1.0), "needs one of --epsilon"),
    (dict(epsilon=2.0), "--epsilon is an option of --dp"),
    (dict(noise_multiplier=1.0), "--noise-multiplier is an option of --dp"),
    (dict(dp=True, epsilon=2.0, arch="cnn"), "batch norm in training mode"),
])
def test_what_breaks_the_guarantee_is_refused_by_name(options, message):
    with pytest.raises(ValueError, match=message):
        check(Config(**options))


def test_the_command_line_refuses_it_in_one_line(capsys):
    assert cli.main(["train", "--dp", "--arch", "cnn", "--epsilon", "3"]) == 2
    error = capsys.readouterr().err
    assert "batch norm" in error and len(error.strip().splitlines()) == 1


def _config(mnist_dir, out, **options):
    base = dict(data_dir=str(mnist_dir), subset=3000, hidden=[64], dropout=0.0, epochs=2,
                batch_size=100, optimizer="momentum", lr=0.5, lr_schedule="constant",
                dp=True, max_grad_norm=1.0, out=str(out))
    base.update(options)
    return Config(**base)


@pytest.mark.slow
def test_a_private_run_reports_what_the_accountant_says(mnist_dir, tmp_path):
    config = _config(mnist_dir, tmp_path / "sigma", noise_multiplier=1.0)
    lines = []
    metrics = train(config, log=lines.append, progress=False)
    q, steps = 100 / 3000, 30                       # 30 Poisson batches an epoch
    epsilons = [privacy.epsilon(1.0, q, steps * k, 1e-5) for k in (1, 2)]
    assert [h["epsilon"] for h in metrics["history"]] == pytest.approx(epsilons)
    saved = json.loads((tmp_path / "sigma" / "metrics.json").read_text())
    assert saved["epsilon"] == pytest.approx(epsilons[-1]) and saved["delta"] == 1e-5
    assert saved["noise_multiplier"] == 1.0
    assert any("noise multiplier 1.0000" in line for line in lines)
    assert any(f"epsilon {epsilons[0]:.3f}" in line for line in lines)
    assert lines[-1].endswith(f"private: epsilon {epsilons[-1]:.3f} at delta 1e-05")
    assert metrics["test_accuracy"] > 0.4           # 3,000 images, 60 noisy steps: it learns

    budget = _config(mnist_dir, tmp_path / "budget", epsilon=3.0)
    metrics = train(budget, log=lambda line: None, progress=False)
    sigma = metrics["history"][-1]["noise_multiplier"]
    assert sigma == pytest.approx(privacy.noise_multiplier_for(3.0, q, 2 * steps, 1e-5))
    assert metrics["epsilon"] <= 3.0


@pytest.mark.slow
def test_a_resumed_private_run_equals_a_straight_one(mnist_dir, tmp_path):
    """Each epoch's batches, dropout masks and noise come from the epoch's own seed: a run
    resumed after its first epoch draws what a straight run draws (at a fixed thread count,
    as bit-identical reruns need: README, "A busy machine")."""
    quiet = dict(log=lambda line: None, progress=False)
    fixed = dict(noise_multiplier=1.0, threads=1)
    straight = train(_config(mnist_dir, tmp_path / "a", **fixed), **quiet)
    train(_config(mnist_dir, tmp_path / "b", epochs=1, **fixed), **quiet)
    resumed = train(_config(mnist_dir, tmp_path / "b", resume=True, **fixed), **quiet)

    def results(history):
        return [{k: v for k, v in h.items() if k not in ("seconds", "steps_on_fewer_threads")}
                for h in history]
    assert results(resumed["history"]) == results(straight["history"])
    a, b = np.load(tmp_path / "a" / "model.npz"), np.load(tmp_path / "b" / "model.npz")
    for name in a.files:
        np.testing.assert_array_equal(a[name], b[name])


@pytest.mark.slow
def test_hardest_draws_the_largest_norms_and_prints_them(mnist_dir, tmp_path, capsys):
    from PIL import Image
    from tinygrad_mnist import Tensor, nn
    from tinygrad_mnist.mnist import data
    from tinygrad_mnist.mnist.hardest import hardest
    model = nn.MLP([784, 16, 10])
    path = tmp_path / "model.npz"
    nn.save(model, path, meta={"hidden": [16], "dataset": "mnist"})
    picture = tmp_path / "hardest.png"
    assert cli.main(["hardest", "--model", str(path), "--data-dir", str(mnist_dir), "--count",
                     "8", "--out", str(picture), "--quiet"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:9]
    indices, norms = [int(r.split()[0]) for r in rows], [float(r.split()[-1]) for r in rows]
    assert norms == sorted(norms, reverse=True)
    ds = data.load("mnist", str(mnist_dir), progress=False)
    x, y = ds.normalized(ds.train_images), ds.train_labels.astype(np.int64)
    for i, shown in zip(indices[:3], norms[:3]):       # each one's own gradient, alone
        model.zero_grad()
        nn.cross_entropy(model(Tensor.from_numpy(x[i:i + 1])), y[i:i + 1]).backward()
        own = np.sqrt(sum((p.grad.astype(np.float64) ** 2).sum() for p in model.parameters()))
        assert own == pytest.approx(shown, abs=2e-3)
    with Image.open(picture) as image:
        assert image.size[0] > 600
    assert list(hardest(np.array([0.5, 3.0, 1.0, 3.0]), 3)) == [1, 3, 2]


@pytest.mark.slow
def test_the_private_training_example_spends_its_budget_and_learns(mnist_dir, capsys):
    import runpy
    from conftest import ROOT
    example = runpy.run_path(str(ROOT / "examples" / "private_training.py"))
    spent, accuracy = example["main"](["--data-dir", str(mnist_dir), "--epochs", "2",
                                       "--subset", "2560", "--epsilon", "3"])
    printed = capsys.readouterr().out
    assert spent[0] < spent[1] <= 3.0 and spent[1] == pytest.approx(3.0, abs=0.01)
    assert accuracy > 0.6
    assert "ghost" in printed and "total" in printed

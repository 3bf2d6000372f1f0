"""The speedrun command on a tiny recipe: every number in its record comes from its runs."""
import json
import statistics

import pytest

from tinygrad_mnist.mnist import cli, speedrun


@pytest.fixture
def tiny_recipe(monkeypatch):
    monkeypatch.setitem(speedrun.RECIPES, ("mlp", 0.5), {
        "arch": "mlp", "hidden": [32], "optimizer": "momentum", "lr": 0.05, "epochs": 1,
        "lr_schedule": "onecycle", "subset": 2000, "dropout": 0.0})


def test_a_record_is_the_mean_of_its_seeds(tiny_recipe, tmp_path, mnist_dir):
    out = tmp_path / "record"
    assert cli.main(["speedrun", "--arch", "mlp", "--target", "0.5", "--seeds", "3",
                     "--data-dir", str(mnist_dir), "--out", str(out), "--quiet"]) == 0
    saved = json.loads((out / "speedrun.json").read_text())
    accuracies = [r["test_accuracy"] for r in saved["runs"]]
    seconds = [r["train_seconds"] for r in saved["runs"]]
    assert [r["seed"] for r in saved["runs"]] == [0, 1, 2]
    assert len(set(accuracies)) > 1                          # the seeds differ
    assert saved["accuracy_mean"] == pytest.approx(statistics.mean(accuracies))
    assert saved["accuracy_std"] == pytest.approx(statistics.stdev(accuracies))
    assert saved["seconds_mean"] == pytest.approx(statistics.mean(seconds))
    for r in saved["runs"]:          # training time: the epochs' own seconds, nothing else
        assert r["train_seconds"] == pytest.approx(sum(r["epoch_seconds"]))
    assert saved["reached"] and 0 < saved["gflops_achieved"] < saved["gflops_matmul_peak"] * 2
    text = (out / "speedrun.md").read_text()
    assert f"{saved['accuracy_mean'] * 100:.2f}% ± {saved['accuracy_std'] * 100:.2f}" in text
    assert "tinygrad-mnist train --arch mlp --hidden 32" in text and "counts" in text


def test_a_mean_below_the_target_does_not_count(monkeypatch, tmp_path, mnist_dir):
    monkeypatch.setitem(speedrun.RECIPES, ("mlp", 0.999), {
        "hidden": [8], "epochs": 1, "subset": 500, "dropout": 0.0})
    assert cli.main(["speedrun", "--target", "0.999", "--seeds", "1", "--data-dir",
                     str(mnist_dir), "--out", str(tmp_path), "--quiet"]) == 1
    assert "does not count" in (tmp_path / "speedrun.md").read_text()


def test_flops_of_an_mlp_are_its_products():
    from tinygrad_mnist.mnist.train import Config
    per_image = speedrun.training_flops_per_image(Config(hidden=[512, 256]))
    assert per_image == 6 * (784 * 512 + 512 * 256 + 256 * 10)


def test_an_unknown_recipe_lists_the_known_ones():
    with pytest.raises(ValueError, match="no recipe for --arch cnn --target 0.5; there are: "):
        speedrun.recipe("cnn", 0.5)


def test_the_time_excludes_loading_and_evaluation(tiny_recipe, monkeypatch, tmp_path,
                                                   mnist_dir):
    """A data loader and an evaluation made slow on purpose: the wall time grows by seconds,
    the recorded training time does not."""
    import time
    from tinygrad_mnist.mnist import data, train
    load, evaluate = data.load, train.evaluate

    def slow_load(*args, **kwargs):
        time.sleep(1.0)
        return load(*args, **kwargs)

    def slow_evaluate(*args, **kwargs):
        time.sleep(1.0)
        return evaluate(*args, **kwargs)
    monkeypatch.setattr(data, "load", slow_load)
    monkeypatch.setattr(train, "evaluate", slow_evaluate)
    started = time.perf_counter()
    summary = speedrun.run("mlp", 0.5, seeds=1, data_dir=str(mnist_dir), out=str(tmp_path),
                           log=lambda *a: None)
    assert time.perf_counter() - started > 2.0
    assert summary["seconds_mean"] < 1.0 and summary["runs"][0]["train_seconds"] < 1.0

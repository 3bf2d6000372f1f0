"""The speedrun command on a tiny recipe: every number in its record comes from its runs."""
import json
import statistics

import pytest

from tinygrad_mnist.mnist import cli, speedrun
from tinygrad_mnist.mnist.options import check_recipe

pytestmark = pytest.mark.slow        # trains, or runs the command line (pytest -m "not slow" skips it)


@pytest.fixture
def tiny_recipe(monkeypatch):
    monkeypatch.setitem(speedrun.RECIPES, ("mnist", "mlp", 0.5), {
        "arch": "mlp", "hidden": [32], "optimizer": "momentum", "lr": 0.05, "epochs": 1,
        "lr_schedule": "onecycle", "subset": 2000, "dropout": 0.0})


def test_a_record_is_the_mean_of_its_seeds(tiny_recipe, tmp_path, mnist_dir):
    out = tmp_path / "record"
    assert cli.main(["speedrun", "--arch", "mlp", "--target", "0.5", "--seeds", "2",
                     "--data-dir", str(mnist_dir), "--out", str(out), "--quiet"]) == 0
    saved = json.loads((out / "speedrun.json").read_text())
    accuracies = [r["test_accuracy"] for r in saved["runs"]]
    seconds = [r["train_seconds"] for r in saved["runs"]]
    assert [r["seed"] for r in saved["runs"]] == [0, 1]
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
    monkeypatch.setitem(speedrun.RECIPES, ("mnist", "mlp", 0.999), {
        "hidden": [8], "epochs": 1, "subset": 500, "dropout": 0.0})
    assert cli.main(["speedrun", "--target", "0.999", "--seeds", "1", "--data-dir",
                     str(mnist_dir), "--out", str(tmp_path), "--quiet"]) == 1
    assert "does not count" in (tmp_path / "speedrun.md").read_text()


def test_flops_of_an_mlp_are_its_products():
    from tinygrad_mnist.mnist.options import Config
    per_image = speedrun.training_flops_per_image(Config(hidden=[512, 256]))
    assert per_image == 6 * (784 * 512 + 512 * 256 + 256 * 10)


def test_an_unknown_recipe_lists_the_known_ones():
    with pytest.raises(ValueError, match="no recipe for --dataset mnist --arch lenet5 --target "
                                         "0.5; there are: --dataset "):
        speedrun.recipe("lenet5", 0.5)


@pytest.mark.parametrize("argv, expected", [
    (["--target", "0.5"], "no recipe for --dataset mnist --arch mlp --target 0.5; there are: "
                          "--dataset "),
    (["--target", "1.5"], "argument --target: "),
    (["--target", "fast"], "argument --target: expected a number, got 'fast'"),
    (["--arch", "resnet"], "argument --arch: invalid choice: 'resnet'"),
    (["--dataset", "cifar10"], "argument --dataset: invalid choice: 'cifar10'"),
])
def test_a_bad_target_or_arch_is_refused_in_one_line_and_writes_nothing(argv, expected,
                                                                         tmp_path, capsys):
    out = tmp_path / "record"
    try:
        code = cli.main(["speedrun", *argv, "--out", str(out)])
    except SystemExit as exit:                    # argparse's refusals
        code = exit.code
    assert code == 2 or code == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tinygrad-mnist speedrun: error:"), err
    assert expected in lines[0]
    if "no recipe" in expected:                                   # every known one is named
        for dataset, arch, target in speedrun.RECIPES:
            assert f"--dataset {dataset} --arch {arch} --target {target}" in lines[0]
    assert not out.exists()


def test_a_fashion_recipe_names_its_dataset_in_the_command_and_the_folder():
    options = {"hidden": [64], "epochs": 2}
    assert speedrun.command_options("fashion-mnist", options) == (
        "--dataset fashion-mnist --hidden 64 --epochs 2")
    assert speedrun.command_options("mnist", options) == "--hidden 64 --epochs 2"
    assert speedrun.record_name("fashion-mnist", "cnn", 0.935) == "fashion-mnist-cnn-0.935"


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


@pytest.mark.parametrize("key", sorted(speedrun.RECIPES))
def test_every_recipe_is_a_plain_train_command(key):
    """The printed command, parsed by `tinygrad-mnist train`, is the recipe's own Config."""
    from dataclasses import asdict
    from tinygrad_mnist.mnist.options import Config
    dataset, arch, target = key
    options = speedrun.recipe(arch, target, dataset)
    args = cli.build_parser().parse_args(
        ["train", *speedrun.command_options(dataset, options).split()])
    parsed = Config(**{k: v for k, v in vars(args).items() if k in Config.__dataclass_fields__})
    assert asdict(parsed) == asdict(Config(dataset=dataset, **options))
    check_recipe(options)                          # each option and value the table's


def test_a_recipe_with_an_option_train_does_not_have_is_refused():
    with pytest.raises(ValueError, match="'learning_rate' is not a train option"):
        check_recipe({"learning_rate": 0.1})
    with pytest.raises(ValueError, match="recipe option 'lr': must be > 0"):
        check_recipe({"lr": -0.1})


def test_collect_writes_the_record_of_runs_made_elsewhere_and_refuses_other_runs(
        tiny_recipe, tmp_path, mnist_dir, capsys):
    """Seeds trained as plain `train` commands (say, two at a time) become one record; a run
    with another option, or a repeated seed, is refused in one line."""
    options = speedrun.command_options("mnist", speedrun.recipe("mlp", 0.5)).split()
    runs = []
    for seed in (0, 3):
        runs.append(tmp_path / f"seed-{seed}")
        assert cli.main(["train", *options, "--seed", str(seed), "--threads", "1",
                         "--data-dir", str(mnist_dir), "--out", str(runs[-1]), "--quiet"]) == 0
    out = tmp_path / "record"
    assert cli.main(["speedrun", "--target", "0.5", "--collect", *map(str, runs),
                     "--out", str(out)]) == 0
    saved = json.loads((out / "speedrun.json").read_text())
    trained = [json.loads((r / "metrics.json").read_text()) for r in runs]
    assert [r["seed"] for r in saved["runs"]] == [0, 3] and saved["collected"]
    assert saved["accuracy_mean"] == pytest.approx(
        statistics.mean(m["test_accuracy"] for m in trained))
    assert saved["seconds_mean"] == pytest.approx(
        statistics.mean(m["train_seconds"] for m in trained))
    text = (out / "speedrun.md").read_text()
    assert "for S = 0, 3." in text and "BLAS threads per run: 1" in text
    other = tmp_path / "other"
    assert cli.main(["train", *options, "--lr", "0.07", "--data-dir", str(mnist_dir),
                     "--out", str(other), "--quiet"]) == 0
    capsys.readouterr()
    assert cli.main(["speedrun", "--target", "0.5", "--collect", str(runs[0]), str(other),
                     "--out", str(tmp_path / "no")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "is not a run of the recipe: lr 0.07 (the recipe's: 0.05)" in err
    assert cli.main(["speedrun", "--target", "0.5", "--collect", str(runs[0]), str(runs[0]),
                     "--out", str(tmp_path / "no")]) == 2
    assert "seeds repeat: [0, 0]" in capsys.readouterr().err

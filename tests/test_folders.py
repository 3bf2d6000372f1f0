"""No finished result is overwritten: a folder that a command writes has one writer at a time
(files.folder_lock), and a folder that holds results is refused without --resume or --force,
for train, sweep, ablate, speedrun and graph."""
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict

import pytest

from tinygrad_mnist.files import FolderBusy, folder_lock
from tinygrad_mnist.mnist import ablation, cli, speedrun
from tinygrad_mnist.mnist.options import Config

from conftest import ROOT


@pytest.fixture
def holder(tmp_path):
    """Another process holding a folder's lock until the test ends."""
    procs = []

    def hold(folder):
        proc = subprocess.Popen(
            [sys.executable, "-c", "import sys, time\n"
             "from tinygrad_mnist.files import folder_lock\n"
             "with folder_lock(sys.argv[1], 'tinygrad-mnist train'):\n"
             "    print('held', flush=True)\n"
             "    time.sleep(60)\n", str(folder)],
            env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "held"
        procs.append(proc)
        return proc
    yield hold
    for proc in procs:
        proc.kill()
        proc.wait()


def test_a_second_writer_is_refused_naming_the_first(tmp_path, holder):
    folder = tmp_path / "run"
    first = holder(folder)
    with pytest.raises(FolderBusy, match=rf"{folder} is being written by another run "
                                         rf"\(tinygrad-mnist train, pid {first.pid}, since "):
        with folder_lock(folder, "tinygrad-mnist sweep"):
            pass


@pytest.mark.parametrize("command", [
    ["train", "--subset", "100", "--epochs", "1", "--quiet"],
    ["sweep", "--lr", "0.1,0.2", "--subset", "100", "--epochs", "1", "--quiet"],
    ["ablate", "--quick", "--datasets", "mnist", "--quiet"],
    ["speedrun", "--seeds", "1", "--quiet"],
    ["graph"],
])
def test_every_command_that_writes_a_folder_refuses_one_being_written(tmp_path, holder, capsys,
                                                                      command):
    """Two trainings into the same --out both ran, and the later one silently replaced the
    first (the check saw files only, none before the first checkpoint)."""
    folder = tmp_path / "busy"
    holder(folder)
    assert cli.main([*command, "--out", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "is being written by another run (tinygrad-mnist train" in err
    assert os.listdir(folder) == [".lock"]                       # nothing of the second


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    folder = tmp_path / "run"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder.mkdir()
    (folder / ".lock").write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename,
                                              "command": "tinygrad-mnist train",
                                              "started": "yesterday"}))
    with folder_lock(folder, "tinygrad-mnist train"):
        assert json.loads((folder / ".lock").read_text())["pid"] == os.getpid()
        with folder_lock(folder, "tinygrad-mnist train"):     # the same process: again
            pass
        assert (folder / ".lock").exists()
    assert not (folder / ".lock").exists()


def test_a_folder_the_lock_made_is_removed_when_the_command_refuses(tmp_path):
    folder = tmp_path / "new"
    with pytest.raises(ValueError):
        with folder_lock(folder, "tinygrad-mnist train"):
            raise ValueError("refused")
    assert not folder.exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="file is a file, not a folder"):
        with folder_lock(tmp_path / "file", "tinygrad-mnist train"):
            pass


def test_resume_into_a_missing_folder_refuses_without_making_it(tmp_path, capsys):
    folder = tmp_path / "missing"
    assert cli.main(["train", "--resume", "--out", str(folder), "--quiet"]) == 2
    assert "holds no checkpoint.npz to continue" in capsys.readouterr().err
    assert not folder.exists()


# ---------------------------------------------------------------- ablate

def _an_ablation(folder):
    (folder / "trials").mkdir(parents=True)
    (folder / "trials" / "mnist-sgd-0.json").write_text("{}")
    for name in ("results.md", "results.json", "curves_mnist.png", "curves_fashion-mnist.png"):
        (folder / name).write_text("old")


def test_ablate_into_a_folder_that_holds_an_ablation_needs_resume_or_force(tmp_path, capsys,
                                                                          monkeypatch):
    """ablate --quick --datasets mnist into a two-dataset run's folder deleted its trials and
    rewrote its report; sweep and train refuse in the same situation."""
    folder = tmp_path / "ablation"
    _an_ablation(folder)
    assert cli.main(["ablate", "--quick", "--datasets", "mnist", "--out", str(folder),
                     "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "already holds an ablation (curves_fashion-mnist.png, curves_mnist.png, " \
           "results.json, results.md, ...); pass --resume" in err
    assert sorted(os.listdir(folder / "trials")) == ["mnist-sgd-0.json"]
    ran = []
    monkeypatch.setattr(ablation, "_ablate_locked",
                        lambda *args: ran.append(sorted(os.listdir(folder))) or {})
    assert cli.main(["ablate", "--quick", "--datasets", "mnist", "--out", str(folder),
                     "--resume", "--quiet"]) == 0
    assert "trials" in ran[-1] and "results.md" in ran[-1]          # kept, to continue
    assert cli.main(["ablate", "--quick", "--datasets", "mnist", "--out", str(folder),
                     "--force", "--quiet"]) == 0
    assert ran[-1] == [".lock"]                                     # replaced: all gone first


def test_ablate_takes_its_datasets_comma_separated_as_its_help_says(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(ablation, "ablate", lambda names, *a, **k: seen.append(names))
    monkeypatch.setattr(cli, "ablation", ablation, raising=False)
    for given in (["mnist,fashion-mnist"], ["mnist", "fashion-mnist"], ["fashion-mnist"]):
        assert cli.main(["ablate", "--datasets", *given, "--out", str(tmp_path)]) == 0
    assert seen == [["mnist", "fashion-mnist"], ["mnist", "fashion-mnist"], ["fashion-mnist"]]


# ---------------------------------------------------------------- speedrun

@pytest.fixture
def tiny_recipe(monkeypatch):
    monkeypatch.setitem(speedrun.RECIPES, ("mnist", "mlp", 0.5), {
        "arch": "mlp", "hidden": [32], "optimizer": "momentum", "lr": 0.05, "epochs": 1,
        "lr_schedule": "onecycle", "subset": 2000, "dropout": 0.0})
    return speedrun.RECIPES[("mnist", "mlp", 0.5)]


def _finished_run(folder, seed, recipe, **changes):
    config = asdict(Config(dataset="mnist", **recipe, seed=seed))
    metrics = {"config": config, "test_accuracy": 0.9, "train_seconds": 1.5,
               "history": [{"seconds": 1.5}]}
    metrics.update(changes)
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_speedrun_into_a_record_folder_needs_resume_or_force(tmp_path, capsys, tiny_recipe,
                                                            monkeypatch):
    """Rerunning with --seeds 1 turned a 3-seed record into a 1-seed one and left seed-1/ and
    seed-2/ behind."""
    out = tmp_path / "record"
    for seed in range(3):
        _finished_run(out / f"seed-{seed}", seed, tiny_recipe)
    (out / "speedrun.json").write_text("{}")
    assert cli.main(["speedrun", "--target", "0.5", "--seeds", "1", "--out", str(out)]) == 2
    assert "already holds a record (seed-0, seed-1, seed-2, speedrun.json); pass --resume" \
           in capsys.readouterr().err
    trained = []
    monkeypatch.setattr(speedrun, "train", lambda config, **k: trained.append(config.seed) or {
        "test_accuracy": 0.8, "train_seconds": 2.0, "history": [{"seconds": 2.0}]})
    monkeypatch.setattr(speedrun, "matmul_peak", lambda: 100.0)
    assert cli.main(["speedrun", "--target", "0.5", "--seeds", "4", "--out", str(out),
                     "--resume"]) == 0
    saved = json.loads((out / "speedrun.json").read_text())
    assert trained == [3] and [r["seed"] for r in saved["runs"]] == [0, 1, 2, 3]
    assert cli.main(["speedrun", "--target", "0.5", "--seeds", "1", "--out", str(out),
                     "--force"]) == 0
    assert sorted(os.listdir(out)) == ["speedrun.json", "speedrun.md"]    # old seeds gone
    assert json.loads((out / "speedrun.json").read_text())["seeds"] == 1


@pytest.mark.parametrize("changes, message", [
    ({"test_accuracy": 98.1}, "has test_accuracy 98.1, not a fraction between 0 and 1"),
    ({"test_accuracy": float("nan")}, "has test_accuracy nan, not a fraction"),
    ({"train_seconds": -3.0}, "has train_seconds -3.0, not a positive time"),
    ({"config": None}, "is not a train run's metrics.json"),
    ({"history": None}, "is not a train run's metrics.json"),
])
def test_collect_refuses_impossible_numbers_naming_the_file(tmp_path, capsys, tiny_recipe,
                                                           changes, message):
    good = _finished_run(tmp_path / "seed-0", 0, tiny_recipe)
    bad = _finished_run(tmp_path / "seed-1", 1, tiny_recipe, **changes)
    if changes.get("config", 1) is None:
        data = json.loads((bad / "metrics.json").read_text())
        del data["config"]
        (bad / "metrics.json").write_text(json.dumps(data))
    assert cli.main(["speedrun", "--target", "0.5", "--collect", str(good), str(bad),
                     "--out", str(tmp_path / "record")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{bad / 'metrics.json'}" in err and message in err, err
    assert not (tmp_path / "record").exists()


def test_collect_into_a_record_needs_force(tmp_path, capsys, tiny_recipe, monkeypatch):
    monkeypatch.setattr(speedrun, "matmul_peak", lambda: 100.0)
    runs = [str(_finished_run(tmp_path / f"seed-{s}", s, tiny_recipe)) for s in (0, 1)]
    out = tmp_path / "record"
    assert cli.main(["speedrun", "--target", "0.5", "--collect", *runs, "--out", str(out)]) == 0
    assert cli.main(["speedrun", "--target", "0.5", "--collect", runs[0], "--out",
                     str(out)]) == 2
    assert "already holds a record (speedrun.json, speedrun.md); pass --force" in \
           capsys.readouterr().err
    assert json.loads((out / "speedrun.json").read_text())["seeds"] == 2
    assert cli.main(["speedrun", "--target", "0.5", "--collect", runs[0], "--out", str(out),
                     "--force"]) == 0
    assert json.loads((out / "speedrun.json").read_text())["seeds"] == 1

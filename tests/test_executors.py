"""Trials under every executor: the same numbers, retries after a killed worker, resume, and
the sweep command's options."""
import json
import os
import re
from dataclasses import replace

import numpy as np
import pytest

from tinygrad_mnist.mnist import cli, executors
from tinygrad_mnist.mnist.ablation import QUICK, ablate
from tinygrad_mnist.mnist.sweep import plan_trials, sweep_trial

import executor_faults

pytestmark = pytest.mark.slow        # trains, or runs the command line (pytest -m "not slow" skips it)

# the --quick grid, shrunk: every optimizer's sweep, regularizer and architecture, two seeds
TINY = replace(QUICK, epochs=1, seeds=(0, 1), train_size=300, val_size=200, test_size=300,
               sweep={"sgd": [0.1], "momentum": [0.03, 0.1], "nesterov": [0.1],
                      "rmsprop": [1e-3], "adam": [1e-3], "adamw": [1e-3]})


def _without_timings(results):
    """Every number of the grid but the seconds, which differ from run to run."""
    text = json.dumps(results, sort_keys=True)
    return re.sub(r'"seconds_per_epoch": [0-9.e-]+', '"seconds_per_epoch": 0', text)


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(
                     p for p in __import__("sys").path if p and os.path.isdir(p))}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def grids(tmp_path_factory, mnist_dir, ray_local):
    results = {}
    for executor in ("serial", "processes", "ray"):
        out = tmp_path_factory.mktemp(executor)
        results[executor] = ablate(["mnist"], {"mnist": str(mnist_dir)}, out_dir=str(out),
                                   plan=TINY, log=lambda *a: None, executor=executor,
                                   workers=2)
    return results


def test_the_grid_gives_the_same_results_under_every_executor(grids):
    serial = _without_timings(grids["serial"])
    assert len(grids["serial"]["mnist"]["regularization"]["none"]) == 2
    assert _without_timings(grids["processes"]) == serial
    assert _without_timings(grids["ray"]) == serial


def _sweep_trials(tmp_path, mnist_dir):
    trials = plan_trials({"lr": [0.05, 0.1], "hidden": [[16]], "epochs": [2], "seed": [3]},
                         data_dir=str(mnist_dir), subset=300)
    for t in trials:
        t["out"] = str(tmp_path / "trials" / t["key"])
    return trials


@pytest.mark.parametrize("executor", ["processes", "ray"])
def test_a_trial_whose_worker_is_killed_is_retried_from_its_checkpoint(
        executor, tmp_path, mnist_dir, request):
    if executor == "ray":
        request.getfixturevalue("ray_local")
    reference = executors.run_trials(sweep_trial, _sweep_trials(tmp_path / "reference",
                                                                 mnist_dir),
                                     executor, workers=2, progress=False)
    trials = _sweep_trials(tmp_path / "killed", mnist_dir)
    results = executors.run_trials(executor_faults.killed_after_first_checkpoint, trials,
                                   executor, workers=2, progress=False)
    assert (tmp_path / "killed" / "trials" / "killed-once").exists()   # it did die once
    history = json.loads((tmp_path / "killed" / "trials" / "trial-001" /
                          "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]       # epoch 1 from the checkpoint
    for ours, theirs in zip(results, reference):
        assert ours["test_accuracy"] == theirs["test_accuracy"]
        assert ours["options"] == theirs["options"] and ours["epochs"] == 2


def test_ctrl_c_keeps_finished_trials_and_resume_skips_them(tmp_path):
    log, store = tmp_path / "log", tmp_path / "store"
    log.mkdir()
    trials = [{"key": f"t{i}", "value": i, "log": str(log)} for i in range(3)]
    with pytest.raises(KeyboardInterrupt):
        executors.run_trials(executor_faults.interrupted_at_second, trials, progress=False,
                             store=str(store))
    assert sorted(os.listdir(store)) == ["t0.json"]
    for name in os.listdir(log):
        os.unlink(log / name)
    (log / "again").touch()
    results = executors.run_trials(executor_faults.interrupted_at_second, trials,
                                   progress=False, store=str(store))
    assert [r["value"] for r in results] == [0, 2, 4]
    assert sorted(os.listdir(log)) == ["again", "t1", "t2"]          # t0 was not run again


def test_the_sweep_command_writes_table_json_and_plot(tmp_path, mnist_dir, capsys):
    out = tmp_path / "sweep"
    args = ["sweep", "--data-dir", str(mnist_dir), "--subset", "300", "--epochs", "1",
            "--hidden", "16", "8,8", "--lr", "0.05,0.1", "--seeds", "0,1", "--quiet",
            "--executor", "processes", "--workers", "2", "--out", str(out)]
    assert cli.main(args) == 0
    saved = json.loads((out / "results.json").read_text())["trials"]
    assert len(saved) == 8                                   # 2 architectures x 2 rates x 2
    assert {tuple(t["options"]["hidden"]) for t in saved} == {(16,), (8, 8)}
    table = (out / "results.md").read_text()
    for trial in saved:
        row = next(line for line in table.splitlines() if line.startswith(f"| {trial['key']} "))
        assert f"{trial['test_accuracy'] * 100:.2f}" in row
    assert "Mean over seeds" in table
    from PIL import Image
    with Image.open(out / "sweep.png") as image:
        assert image.size[0] > 600 and len(np.unique(np.asarray(image.convert("L")))) > 20
    # the same command again: the folder is not empty; with --resume nothing is trained again
    assert cli.main(args) == 2
    assert "--resume" in capsys.readouterr().err
    stamp = os.path.getmtime(out / "trials" / "trial-000" / "metrics.json")
    assert cli.main(args + ["--resume"]) == 0
    assert os.path.getmtime(out / "trials" / "trial-000" / "metrics.json") == stamp
    assert json.loads((out / "results.json").read_text())["trials"] == saved


@pytest.mark.parametrize("option, value, words", [
    ("--lr", "0.1,abc", ["--lr", "item 2", "abc"]),
    ("--lr", "0.1,,0.3", ["--lr", "comma-separated"]),
    ("--seeds", "0,-1", ["--seeds", "item 2", ">= 0"]),
    ("--optimizer", "sgd,lion", ["--optimizer", "lion", "adam"]),
    ("--dropout", "0.2,1.5", ["--dropout", "< 1"]),
    ("--batch-size", "64,0", ["--batch-size", ">= 1"]),
])
def test_bad_lists_are_clear_errors(option, value, words, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["sweep", option, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err


def test_the_ray_executor_without_ray_says_how_to_install(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "ray", None)            # import ray fails
    with pytest.raises(executors.ExecutorError, match=r"pip install.*\[ray\]"):
        executors.run_trials(abs, [1], "ray", progress=False)


def test_sweep_without_ray_fails_before_writing_anything(monkeypatch, tmp_path, capsys):
    import sys
    monkeypatch.setitem(sys.modules, "ray", None)
    out = tmp_path / "sweep"
    assert cli.main(["sweep", "--executor", "ray", "--out", str(out), "--quiet"]) == 2
    assert "pip install" in capsys.readouterr().err and not out.exists()


def test_an_unknown_executor_is_named():
    with pytest.raises(ValueError, match="threads"):
        executors.run_trials(abs, [1], "threads")


def test_results_come_back_in_trial_order_from_a_pool():
    assert executors.run_trials(np.negative, [1, 2, 3, 4, 5], "processes", workers=2,
                                progress=False) == [-1, -2, -3, -4, -5]

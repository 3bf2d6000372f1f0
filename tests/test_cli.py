"""Every user path as a user meets it: the command line in a subprocess (exit code and the
key words of its one-line message), run folders, diverging runs, Ctrl-C, and what --help says.
Each test is named after what a careless user does."""
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tinygrad_mnist import nn
from tinygrad_mnist.mnist import cli, data, report

from conftest import ROOT

pytestmark = pytest.mark.slow        # trains, or runs the command line (pytest -m "not slow" skips it)

SMALL = ["--subset", "600", "--hidden", "16", "--epochs", "1", "--quiet"]


def run(*args, cwd, env=None, timeout=120):
    """`tinygrad-mnist ARGS` in a subprocess, in the directory `cwd`."""
    environment = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run([sys.executable, "-m", "tinygrad_mnist", *map(str, args)], cwd=cwd,
                          env=environment, capture_output=True, text=True, timeout=timeout)


def one_error_line(result, *words):
    """The run failed with one `tinygrad-mnist CMD: error: ...` line holding every word."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and "Traceback" not in result.stderr, result.stderr
    assert ": error: " in lines[-1], result.stderr
    for word in words:
        assert word in lines[-1], (word, lines[-1])
    return lines[-1]


@pytest.fixture(scope="module")
def small_model(tmp_path_factory, mnist_dir):
    cwd = tmp_path_factory.mktemp("cwd")
    result = run("train", "--data-dir", mnist_dir, *SMALL, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return cwd / "runs" / "mnist" / "model.npz"


# ---------------------------------------------------------------- 1-3: work is never lost

def test_runs_go_to_a_folder_per_dataset_and_are_never_overwritten(tmp_path, mnist_dir,
                                                                   fashion_dir):
    assert run("train", "--dataset", "fashion-mnist", "--data-dir", fashion_dir, *SMALL,
               cwd=tmp_path).returncode == 0
    model = tmp_path / "runs" / "fashion-mnist" / "model.npz"
    assert model.exists() and not (tmp_path / "runs" / "mnist").exists()
    before = model.read_bytes()
    again = run("train", "--dataset", "fashion-mnist", "--data-dir", fashion_dir, *SMALL,
                "--seed", "5", cwd=tmp_path)
    assert again.returncode == 2
    one_error_line(again, "runs/fashion-mnist", "already holds a run", "--resume", "--force")
    assert model.read_bytes() == before                   # untouched
    forced = run("train", "--dataset", "fashion-mnist", "--data-dir", fashion_dir, *SMALL,
                 "--seed", "5", "--force", cwd=tmp_path)
    assert forced.returncode == 0 and model.read_bytes() != before


def test_force_removes_the_old_run_before_the_new_one_starts(tmp_path, mnist_dir):
    out = tmp_path / "run"
    assert run("train", "--data-dir", mnist_dir, *SMALL, "--out", out, cwd=tmp_path).returncode == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "tinygrad_mnist", "train", "--data-dir", str(mnist_dir),
         "--subset", "20000", "--hidden", "64", "--epochs", "50", "--quiet", "--force",
         "--out", str(out)], cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    deadline = time.time() + 60
    while (out / "model.npz").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.kill()                                           # the new run dies mid-way
    proc.wait()
    assert not (out / "model.npz").exists()               # no old model beside a new checkpoint


def test_no_command_writes_into_the_repository_by_default(tmp_path, small_model, mnist_dir):
    def tracked_state():
        listing = subprocess.run(["git", "ls-files", "-s"], cwd=ROOT, capture_output=True,
                                 text=True)
        if listing.returncode != 0:
            pytest.skip("not a git checkout")
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=ROOT, capture_output=True, text=True).stdout
        return listing.stdout, status

    before = tracked_state()
    # every command from the repository's root, as a user of a clone runs them
    home = tmp_path / "home"
    assert run("graph", cwd=ROOT, env={"HOME": str(home)}).returncode == 0
    assert run("eval", "--model", small_model, "--data-dir", mnist_dir, "--quiet",
               cwd=ROOT).returncode == 0
    parser = cli.build_parser()
    assert parser.parse_args(["ablate"]).out == "runs/ablation"
    assert parser.parse_args(["graph"]).out == "runs/graphs"
    assert parser.parse_args(["train"]).out is None             # runs/<dataset>
    profiles = subprocess.run([sys.executable, "-m", "benchmarks.profiles", "--help"], cwd=ROOT,
                              capture_output=True, text=True)
    assert profiles.returncode == 0 and "--out" in profiles.stdout
    benchmarks = subprocess.run([sys.executable, "-m", "benchmarks", "--help"], cwd=ROOT,
                                capture_output=True, text=True)
    assert benchmarks.returncode == 0 and "runs/benchmarks" in benchmarks.stdout
    assert tracked_state() == before
    shutil.rmtree(ROOT / "runs" / "graphs", ignore_errors=True)


@pytest.mark.parametrize("option, value, words", [
    ("--lr", "nan", ["--lr", "finite"]), ("--lr", "inf", ["--lr", "finite"]),
    ("--lr", "-0.1", ["--lr", "> 0"]), ("--momentum", "2", ["--momentum", "< 1"]),
    ("--weight-decay", "-1", ["--weight-decay", ">= 0"]),
])
def test_learning_settings_that_cannot_train_are_refused(tmp_path, option, value, words):
    result = run("train", option, value, cwd=tmp_path)
    assert result.returncode == 2
    for word in words:
        assert word in result.stderr


def test_a_diverging_run_stops_with_a_hint(tmp_path, mnist_dir):
    result = run("train", "--data-dir", mnist_dir, *SMALL, "--lr", "1e6", cwd=tmp_path)
    assert result.returncode == 1
    one_error_line(result, "loss became", "epoch 1", "--lr", "--detect-anomaly")
    assert not (tmp_path / "runs" / "mnist" / "model.npz").exists()   # no model of NaNs


def test_a_nan_keeps_the_last_good_checkpoint_loadable(tmp_path, mnist_dir, monkeypatch):
    from tinygrad_mnist.mnist import train as training
    real = training.train_epoch

    def poisoned(model, optimizer, config, epoch, *args, **kwargs):
        if epoch == 2:                                    # epoch 2 blows up
            model.layers[0].weight.data[0, 0] = np.nan
        return real(model, optimizer, config, epoch, *args, **kwargs)

    monkeypatch.setattr(training, "train_epoch", poisoned)
    out = tmp_path / "run"
    code = cli.main(["train", "--data-dir", str(mnist_dir), "--subset", "600", "--hidden", "16",
                     "--epochs", "3", "--quiet", "--out", str(out)])
    assert code == 1
    meta = nn.load_arrays(out / "checkpoint.npz")         # still epoch 1's, and loadable
    assert '"epoch": 1' in str(meta[nn.META_KEY])
    assert np.isfinite(meta["model.layers.0.weight"]).all()
    assert not (out / "model.npz").exists()


# ---------------------------------------------------------------- 4-7: errors that help

def test_offline_download_says_to_use_data_dir_and_leaves_no_folder(tmp_path, monkeypatch,
                                                                    capsys):
    from dataclasses import replace
    dead = "http://127.0.0.1:9/"                          # the discard port: nothing answers
    monkeypatch.setitem(data.DATASETS, "mnist", replace(data.DATASETS["mnist"], mirrors=(dead,)))
    monkeypatch.setenv("TINYGRAD_MNIST_CACHE", str(tmp_path / "cache"))
    assert cli.main(["train", "--quiet", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "could not download" in err and "--data-dir" in err
    assert not (tmp_path / "cache" / "mnist").exists()


def test_eval_reads_only_the_test_files(tmp_path, small_model, mnist_dir):
    test_only = tmp_path / "test-only"
    test_only.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(mnist_dir / name, test_only / name)
    result = run("eval", "--model", small_model, "--data-dir", test_only, "--quiet",
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "test accuracy" in result.stdout


@pytest.mark.parametrize("name", ["README.md", "picture.png"])
def test_a_file_that_is_not_a_model_is_named_without_pickle_advice(tmp_path, name):
    path = tmp_path / name
    shutil.copy(ROOT / "README.md", path) if name.endswith(".md") else \
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    result = run("eval", "--model", path, cwd=tmp_path)
    assert result.returncode == 2
    line = one_error_line(result, name, "not a NumPy .npz")
    assert "pickle" not in line


@pytest.mark.parametrize("args, words", [
    (["--epochs", "0"], ["--epochs", ">= 1"]), (["--batch-size", "0"], ["--batch-size", ">= 1"]),
    (["--seed", "-1"], ["--seed", ">= 0"]), (["--dropout", "-0.1"], ["--dropout", ">= 0"]),
    (["--dropout", "1"], ["--dropout", "< 1"]), (["--subset", "0"], ["--subset", ">= 1"]),
    (["--subset", "-5"], ["--subset", ">= 1"]), (["--hidden", ""], ["--hidden"]),
    (["--hidden", "64,,32"], ["--hidden", "64,,32"]),
])
def test_bad_option_values_name_the_option_and_exit_2(tmp_path, args, words):
    result = run("train", *args, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr


def test_a_checkpoint_given_as_a_model_is_one_error_line(tmp_path, small_model):
    result = run("eval", "--model", small_model.parent / "checkpoint.npz", cwd=tmp_path)
    assert result.returncode == 2
    one_error_line(result, "checkpoint", "model.npz")


def test_the_wrong_dataset_in_a_data_dir_is_refused(tmp_path, mnist_dir, fashion_dir,
                                                    small_model):
    result = run("train", "--dataset", "fashion-mnist", "--data-dir", mnist_dir, *SMALL,
                 cwd=tmp_path)
    assert result.returncode == 2
    one_error_line(result, "is not fashion-mnist", "it holds mnist")
    fashion_model = tmp_path / "fashion.npz"
    model = nn.MLP([784, 16, 10])
    nn.save(model, fashion_model, meta={"dataset": "fashion-mnist", "hidden": [16]})
    result = run("eval", "--model", fashion_model, "--data-dir", mnist_dir, cwd=tmp_path)
    assert result.returncode == 2
    one_error_line(result, "is not fashion-mnist")


# ---------------------------------------------------------------- 8-9: predict, Ctrl-C, resume

def test_predict_goes_on_past_unreadable_files(tmp_path, small_model, mnist_dir):
    from PIL import Image
    ds = data.load("mnist", data_dir=mnist_dir, splits=("test",))
    good = tmp_path / "seven.png"
    Image.fromarray(ds.test_images[0]).save(good)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    result = run("predict", "--model", small_model, empty, tmp_path / "missing.png", good,
                 cwd=tmp_path)
    assert result.returncode == 2
    assert "seven.png: " in result.stdout                 # the good file is still classified
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 2 and "empty.png" in errors[0] and "missing.png" in errors[1]


def test_ctrl_c_says_how_to_resume(tmp_path, mnist_dir):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tinygrad_mnist", "train", "--data-dir", str(mnist_dir),
         "--subset", "20000", "--hidden", "256", "--epochs", "40", "--quiet", "--out",
         str(out)], cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # as from a terminal: a shell that runs the suite in the background passes its
        # children SIGINT ignored, and Python then never turns it into KeyboardInterrupt
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 60
    while not (out / "checkpoint.npz").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    line = err.strip().splitlines()[-1]
    assert "interrupted during epoch" in line and "--resume" in line and "is saved" in line


def test_resume_needs_a_checkpoint_and_extends_a_finished_run(tmp_path, mnist_dir):
    out = tmp_path / "run"
    nothing = run("train", "--data-dir", mnist_dir, *SMALL, "--out", out, "--resume",
                  cwd=tmp_path)
    assert nothing.returncode == 2
    one_error_line(nothing, "--resume", "no checkpoint")
    assert run("train", "--data-dir", mnist_dir, *SMALL, "--out", out,
               cwd=tmp_path).returncode == 0
    more = run("train", "--data-dir", mnist_dir, *SMALL[:-3], "--epochs", "2", "--quiet",
               "--out", out, "--resume", cwd=tmp_path)
    assert more.returncode == 0, more.stderr
    import json
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    fewer = run("train", "--data-dir", mnist_dir, *SMALL, "--out", out, "--resume",
                cwd=tmp_path)                             # --epochs 1 < the 2 it has
    assert fewer.returncode == 2
    one_error_line(fewer, "2 epochs already", "--epochs 2")


# ---------------------------------------------------------------- 10: help agrees with README

def test_help_shows_every_default_and_agrees_with_the_readme(tmp_path):
    train_help = run("train", "--help", cwd=tmp_path).stdout
    options = train_help.split("options:", 1)[1]
    for option, default in [("--lr", "0.05 for the MLP, 0.002 for LeNet-5 and the LSTM, 0.001 "
                                     "for the CNN and the ViT"),
                            ("--epochs", "15"), ("--batch-size", "128"), ("--dropout", "0.2"),
                            ("--optimizer", "momentum for the MLP, adam for the other networks"),
                            ("--momentum", "0.9"), ("--seed", "0")]:
        block = options.split("\n  " + option + " ", 1)[1].split("\n  --", 1)[0]
        assert f"(default: {default})" in " ".join(block.split()), option
    ablate_help = " ".join(run("ablate", "--help", cwd=tmp_path).stdout.split())
    assert "--data-dir" in ablate_help and "--data-root" not in ablate_help
    assert "under a minute" in ablate_help
    readme = (ROOT / "README.md").read_text()
    assert "--subset" in readme and "--quiet" in readme and "--force" in readme
    assert "--data-root" not in readme
    for option in ("--subset", "--quiet", "--force", "--resume", "--detect-anomaly"):
        assert option in train_help


# ---------------------------------------------------------------- 13: plots

def test_curves_have_whole_epochs_percentages_and_test_loss():
    history = [{"epoch": e, "train_loss": 1 / e, "test_loss": 1.1 / e,
                "train_accuracy": 0.9 + e / 100, "test_accuracy": 0.88 + e / 100}
               for e in (1, 2, 3)]
    fig = report.curves_figure(history)
    ax_loss, ax_acc = fig.axes
    assert [line.get_label() for line in ax_loss.lines] == ["train", "test"]
    assert "%" in ax_acc.get_ylabel()
    assert max(ax_acc.lines[1].get_ydata()) == pytest.approx(91.0)
    fig.canvas.draw()
    ticks = [t for t in ax_loss.get_xticks() if 1 <= t <= 3]
    assert ticks == [1, 2, 3]                             # no 1.5, no 2.5


def test_confusion_colours_show_the_mistakes():
    matrix = np.diag([980, 1130, 1000]) + np.array([[0, 3, 1], [2, 0, 7], [0, 5, 0]])
    fig = report.confusion_figure(matrix, ["a", "b", "c"])
    colour_scaled = fig.axes[0].images[-1]
    assert colour_scaled.get_clim() == (0, 7)             # the scale ends at the worst mistake
    assert colour_scaled.get_array().mask.diagonal().all()


def test_train_profile_prints_the_table_of_the_training_steps(tmp_path, mnist_dir):
    result = run("train", "--data-dir", mnist_dir, *SMALL, "--profile", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    table = result.stdout.split("profile of the training steps", 1)[1]
    for row in ("linear", "relu", "dropout", "cross_entropy", "(engine bookkeeping)"):
        assert row in table
    assert "5 steps:" in table and "µs engine bookkeeping" in table       # 600 images / 128

"""The trainer end to end on a subset: accuracy, outputs, the CLI, and resume after kill -9."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tinygrad_mnist import Tensor, nn
from tinygrad_mnist.mnist import cli, data
from tinygrad_mnist.mnist.factories import learning_rate
from tinygrad_mnist.mnist.options import Config
from tinygrad_mnist.mnist.train import train

from conftest import ROOT

pytestmark = pytest.mark.slow        # trains, or runs the command line (pytest -m "not slow" skips it)


@pytest.fixture(scope="module")
def short_run(tmp_path_factory, mnist_dir):
    out = tmp_path_factory.mktemp("run")
    lines = []
    config = Config(data_dir=str(mnist_dir), subset=10000, hidden=[128], epochs=3,
                    optimizer="momentum", lr=0.05, out=str(out))
    metrics = train(config, log=lines.append, progress=False)
    return out, metrics, lines


def test_short_run_beats_stated_accuracy(short_run):
    _, metrics, _ = short_run
    # 10,000 training images, 3 epochs of 784-128-10: at least 93% on the first 10,000 test images
    assert metrics["test_accuracy"] >= 0.93
    assert metrics["history"][-1]["train_accuracy"] > metrics["history"][0]["train_accuracy"]


def test_run_writes_every_output(short_run):
    from PIL import Image
    out, metrics, lines = short_run
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test_accuracy"] == metrics["test_accuracy"]
    assert [h["epoch"] for h in saved["history"]] == [1, 2, 3]
    for entry in saved["history"]:
        assert set(entry) == {"epoch", "train_loss", "train_accuracy", "test_loss",
                              "test_accuracy", "seconds", "steps_on_fewer_threads"}
        assert 0 < entry["train_loss"] < 3 and 0 < entry["test_loss"] < 3 and entry["seconds"] > 0
    assert saved["train_seconds"] == pytest.approx(sum(h["seconds"] for h in saved["history"]))
    matrix = np.array(saved["confusion_matrix"])
    assert matrix.sum() == 10000 and np.trace(matrix) / 10000 == pytest.approx(
        saved["test_accuracy"])
    for name in ("curves.png", "confusion.png", "samples.png"):
        with Image.open(out / name) as image:
            assert image.size[0] > 300 and image.size[1] > 200
    assert lines[-1].startswith("test accuracy: ") and f"{saved['test_accuracy'] * 100:.2f}%" \
        in lines[-1]
    assert any("true \\ predicted" in line for line in lines)


def test_saved_model_reproduces_the_reported_accuracy(short_run, mnist_dir):
    out, metrics, _ = short_run
    model = nn.MLP([784, 128, 10])
    nn.load(model, out / "model.npz")
    assert nn.load_meta(out / "model.npz")["hidden"] == [128]
    ds = data.load("mnist", data_dir=mnist_dir)
    predictions = model.eval()(Tensor(ds.normalized(ds.test_images[:10000]))).data.argmax(1)
    assert (predictions == ds.test_labels[:10000]).mean() == pytest.approx(
        metrics["test_accuracy"])


def test_eval_and_predict_commands(short_run, mnist_dir, tmp_path, capsys):
    from PIL import Image
    out, _, _ = short_run
    assert cli.main(["eval", "--model", str(out / "model.npz"), "--data-dir", str(mnist_dir),
                     "--quiet"]) == 0
    printed = capsys.readouterr().out
    accuracy = float(printed.strip().splitlines()[-1].split()[2].rstrip("%"))
    assert 90 < accuracy <= 100 and "true \\ predicted" in printed

    # test digits as a user would have them: dark ink on white, RGB, larger, off-centre
    ds = data.load("mnist", data_dir=mnist_dir)
    paths, labels = [], []
    for i in range(12):
        ink = 255 - ds.test_images[i]
        canvas = np.full((90, 120), 255, np.uint8)
        big = np.asarray(Image.fromarray(ink).resize((56, 56)))
        canvas[10:66, 40:96] = big
        path = tmp_path / f"digit{i}.png"
        Image.fromarray(canvas).convert("RGB").save(path)
        paths.append(str(path))
        labels.append(int(ds.test_labels[i]))
    assert cli.main(["predict", "--model", str(out / "model.npz"), *paths]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert len(rows) == 12
    top1 = [int(row.split(": ")[1].split()[0]) for row in rows]
    probabilities = [float(row.split(": ")[1].split()[1].rstrip("%,")) for row in rows]
    assert np.mean(np.array(top1) == labels) >= 0.75
    assert all(0 < p <= 100 for p in probabilities) and all(row.count("%") == 3 for row in rows)


def test_bad_input_is_one_clear_line(tmp_path, capsys):
    blank = tmp_path / "blank.png"
    from PIL import Image
    Image.new("L", (20, 20), 255).save(blank)
    model_path = tmp_path / "m.npz"
    nn.save(nn.MLP([784, 8, 10]), model_path, meta={"hidden": [8], "dataset": "mnist"})
    assert cli.main(["predict", "--model", str(model_path), str(blank)]) == 2
    assert "blank.png looks blank" in capsys.readouterr().err
    assert cli.main(["eval", "--model", str(model_path), "--data-dir",
                     str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_learning_rate_schedules():
    c = Config(lr=0.1, lr_schedule="cosine")
    assert learning_rate(c, 0, 100) == pytest.approx(0.1)
    assert learning_rate(c, 50, 100) == pytest.approx(0.05)
    assert learning_rate(c, 100, 100) == pytest.approx(0.0)
    s = Config(lr=0.1, lr_schedule="step")
    assert [learning_rate(s, t, 100) for t in (0, 49, 50, 74, 75, 99)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    assert learning_rate(Config(lr=0.1, lr_schedule="constant"), 70, 100) == 0.1
    # one cycle: lr/25 at the start, lr at a quarter, a half cosine down to lr/25/1e4
    onecycle = Config(lr=0.1, lr_schedule="onecycle")
    assert learning_rate(onecycle, 0, 100) == pytest.approx(0.004)
    assert learning_rate(onecycle, 24, 100) == pytest.approx(0.1)
    middle = 0.1 / 25e4 + (0.1 - 0.1 / 25e4) / 2 * (1 + np.cos(np.pi * 38 / 75))
    assert learning_rate(onecycle, 62, 100) == pytest.approx(middle)
    assert learning_rate(onecycle, 99, 100) == pytest.approx(0.1 / 25e4)


# the MLP on 12,000 images; the CNN (batch norm's running statistics, elastic distortions)
# on fewer, so that its epochs take about as long. One BLAS thread: with the default, a busy
# machine changes the thread count and so the last bits of the products (README: --threads),
# which Adam can magnify; the claim here is about the checkpoints.
NETWORKS = {"mlp": ["--subset", "12000", "--hidden", "256"],
            "cnn": ["--subset", "1500", "--arch", "cnn", "--elastic", "34"]}


def _train_command(mnist_dir, out, *extra, network="mlp"):
    return [sys.executable, "-m", "tinygrad_mnist", "train", "--data-dir", str(mnist_dir),
            *NETWORKS[network], "--epochs", "4", "--batch-size", "64",
            "--optimizer", "adam", "--dropout", "0.1", "--augment", "--seed", "3", "--quiet",
            "--threads", "1", "--out", str(out), *extra]


@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_resume_after_kill_reaches_the_same_weights(mnist_dir, tmp_path, network):
    # the rules choose the conv algorithms: the straight run and the killed one are separate
    # processes, whose measurements could pick different (equally right) algorithms
    env = dict(os.environ, PYTHONPATH=str(ROOT), TINYGRAD_MNIST_MEASURE="0")
    reference = tmp_path / "reference"
    subprocess.run(_train_command(mnist_dir, reference, network=network), env=env, check=True,
                   capture_output=True)

    out = tmp_path / "killed"
    checkpoint = out / "checkpoint.npz"
    rng = random.Random(0)
    kills = 0
    for attempt in range(8):
        resume = ["--resume"] if attempt else []    # the first start is a new run
        proc = subprocess.Popen(_train_command(mnist_dir, out, *resume, network=network),
                                env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        before = os.path.getmtime(checkpoint) if checkpoint.exists() else None
        deadline = time.time() + 60
        # wait for a new checkpoint, then kill at a random moment of the next epoch
        while proc.poll() is None and time.time() < deadline:
            if checkpoint.exists() and os.path.getmtime(checkpoint) != before:
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.6))
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        nn.load_arrays(checkpoint)           # whatever is on disk is a complete checkpoint
    else:
        pytest.fail("the interrupted run never finished")
    if proc.returncode is None:
        proc.wait()
    output = proc.stdout.read().decode()
    assert proc.returncode == 0, output
    assert kills >= 2 and "resumed from epoch" in output
    ours, theirs = nn.load_arrays(out / "model.npz"), nn.load_arrays(reference / "model.npz")
    assert ours.keys() == theirs.keys()
    for key in ours:
        np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]


def test_python_m_is_the_console_script():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-m", "tinygrad_mnist", "--help"], env=env,
                            capture_output=True, text=True, check=True)
    for command in ("train", "eval", "predict"):
        assert command in result.stdout
    assert cli.build_parser().format_help().split("\n", 1)[1] == \
        result.stdout.split("\n", 1)[1]


def test_label_smoothing_is_the_loss_the_step_trains_on():
    from tinygrad_mnist import manual_seed, optim
    from tinygrad_mnist.mnist.train import training_step
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((16, 784)).astype(np.float32), rng.integers(0, 10, 16)
    manual_seed(0)
    model = nn.MLP([784, 8, 10])
    logits = model(Tensor(x)).data.astype(np.float64)
    # closed form: (1 - s) * (-log p_label) + s * mean over classes of (-log p_k)
    log_p = logits - logits.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    expected = np.mean(0.9 * -log_p[np.arange(16), y] + 0.1 * -log_p.mean(1))
    step = training_step(model, optim.SGD(model.parameters(), 0.1), use_jit=False,
                         label_smoothing=0.1)
    loss, _ = step(x, y)
    assert loss.item() == pytest.approx(expected, rel=1e-5)

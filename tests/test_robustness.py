"""Failing loudly and precisely: anomaly detection, hostile checkpoints, thread-local state."""
import json
import threading

import numpy as np
import pytest

from tinygrad_mnist import AnomalyError, Tensor, detect_anomaly, nn, optim
from tinygrad_mnist.mnist import cli
from tinygrad_mnist.mnist.checkpoints import load_checkpoint, save_checkpoint
from tinygrad_mnist.mnist.factories import make_model, make_optimizer
from tinygrad_mnist.mnist.options import Config


pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")   # NaN and inf on purpose


def test_anomaly_in_forward_names_op_shapes_and_line():
    x = Tensor([1.0, -1.0, 2.0], requires_grad=True)
    with detect_anomaly():
        with pytest.raises(AnomalyError) as info:
            y = x.log()  # the line the error must name
    message = str(info.value)
    assert message.startswith("log: forward produced NaN") and "(3,)" in message
    assert "test_robustness.py" in message and "y = x.log()" in message


def test_anomaly_in_backward_names_the_op_that_made_it():
    x = Tensor([0.0, 4.0], requires_grad=True)
    with detect_anomaly():
        root = x.sqrt()  # finite forward, infinite gradient at 0
        loss = root.sum()
        with pytest.raises(AnomalyError) as info:
            loss.backward()
    message = str(info.value)
    assert message.startswith("sqrt: backward produced inf") and "(2,)" in message
    assert "root = x.sqrt()" in message


def test_without_detect_anomaly_nan_passes_silently_as_in_numpy():
    with np.errstate(all="ignore"):
        y = Tensor([-1.0]).log()
    assert np.isnan(y.data).all()


def test_anomaly_mode_is_per_thread():
    seen = {}
    inside, release = threading.Event(), threading.Event()

    def worker():
        with detect_anomaly():
            inside.set()
            release.wait(5)
            try:
                Tensor([-1.0]).log()
                seen["worker"] = "no error"
            except AnomalyError:
                seen["worker"] = "raised"

    t = threading.Thread(target=worker)
    t.start()
    inside.wait(5)
    with np.errstate(all="ignore"):
        Tensor([-1.0]).log()                  # this thread is not in detect_anomaly
    seen["main"] = "no error"
    release.set()
    t.join()
    assert seen == {"worker": "raised", "main": "no error"}


def test_train_command_with_detect_anomaly_reports_one_line(tmp_path, mnist_dir, capsys):
    # a learning rate this large drives the logits to inf within a few steps
    code = cli.main(["train", "--data-dir", str(mnist_dir), "--subset", "2000", "--epochs", "1",
                     "--optimizer", "sgd", "--lr", "1e30", "--dropout", "0", "--quiet",
                     "--detect-anomaly", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "produced" in err and ("NaN" in err or "inf" in err)
    assert "created at" in err


# ---------------------------------------------------------------- hostile checkpoints

@pytest.fixture
def checkpoint(tmp_path):
    config = Config(hidden=[8], out=str(tmp_path), optimizer="adam", lr=1e-3)
    model = make_model(config)
    opt = make_optimizer(config, model.parameters())
    x = Tensor(np.random.default_rng(0).random((4, 784)))
    nn.cross_entropy(model(x), [0, 1, 2, 3]).backward()
    opt.step()
    save_checkpoint(str(tmp_path), model, opt, config, 1, [{"epoch": 1}], 1.0)
    return tmp_path, config


def _rewrite(path, change):
    arrays = nn.load_arrays(path)
    change(arrays)
    np.savez(path, **arrays)


@pytest.mark.parametrize("change, message", [
    (lambda a: a.pop("model.layers.0.bias"), "missing"),
    (lambda a: a.update({"model.layers.1.weight": np.zeros((3, 3), np.float32)}), "shape"),
    (lambda a: a.update({"model.layers.0.weight": np.zeros((8, 784), np.int32)}), "int32"),
    (lambda a: a.update({"optim.0.exp_avg": np.zeros(5, np.float32)}), "shape"),
    (lambda a: a.update({"optim.9.exp_avg": np.zeros(5, np.float32)}), "unexpected"),
    (lambda a: a.pop(nn.META_KEY), "meta"),
    (lambda a: a.update({nn.META_KEY: np.array("{not json")}), "meta"),
    (lambda a: a.update({"model.layers.0.bias": np.array([{"a": 1}], dtype=object)}), "pickle"),
])
def test_bad_checkpoint_is_an_error_and_changes_nothing(checkpoint, change, message):
    out, config = checkpoint
    path = out / "checkpoint.npz"
    if message == "pickle":
        arrays = nn.load_arrays(path)
        change(arrays)
        np.savez(path, **arrays)              # np.savez pickles the object array
    else:
        _rewrite(path, change)
    model = make_model(config)
    opt = make_optimizer(config, model.parameters())
    before = {k: v.copy() for k, v in model.state_dict().items()}
    with pytest.raises((ValueError, KeyError, TypeError)) as info:
        load_checkpoint(str(out), model, opt, config)
    assert message in str(info.value) or message in str(info.value).lower()
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])       # nothing half-loaded
    assert opt.state == [{} for _ in opt.params]


def test_checkpoint_from_other_settings_is_refused(checkpoint):
    out, config = checkpoint
    other = Config(hidden=[16], out=str(out), optimizer="adam", lr=1e-3)
    model = make_model(other)
    with pytest.raises(ValueError, match="hidden"):
        load_checkpoint(str(out), model, make_optimizer(other, model.parameters()), other)


def test_npz_that_needs_pickle_executes_nothing(tmp_path):
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.npz"
    np.savez(path, **{"layers.0.weight": np.array([Payload()], dtype=object)})
    with pytest.raises(ValueError, match="evil.npz"):
        nn.load(nn.MLP([2, 2]), path)
    assert not marker.exists()

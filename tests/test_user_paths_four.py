"""Every user path, round four: what a new user still met on a fresh clone (the folder locks
and --force for ablate and speedrun are in test_folders.py), each named after what the user
did."""
import json
import os
import shutil

import numpy as np
import pytest

from tinygrad_mnist import Tensor, nn, optim
from tinygrad_mnist.mnist import ablation, cli, data, speedrun
from tinygrad_mnist.mnist.options import Config

from test_cli import SMALL

OFFLINE = {"https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9",
           "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}


@pytest.fixture(scope="module")
def fashion_run(tmp_path_factory, fashion_dir):
    """A one-epoch Fashion-MNIST run, trained from a copy of the data that the test can move."""
    root = tmp_path_factory.mktemp("fashion")
    copy = root / "data"
    shutil.copytree(fashion_dir, copy)
    out = root / "run"
    assert cli.main(["train", "--dataset", "fashion-mnist", "--data-dir", str(copy), *SMALL,
                     "--out", str(out)]) == 0
    return out, copy


# ---------------------------------------------------------------- 6: misleading messages

@pytest.mark.slow
def test_resume_takes_the_runs_own_dataset_and_options(fashion_run, capsys):
    """--resume of a Fashion-MNIST run without --dataset said the data folder 'is not mnist'."""
    out, _ = fashion_run
    capsys.readouterr()
    assert cli.main(["train", "--resume", "--epochs", "2", "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["dataset"] == "fashion-mnist" and metrics["epochs"] == 2
    assert metrics["config"]["hidden"] == [16]                     # SMALL's, not the default
    assert "resumed from epoch 1" in capsys.readouterr().out


@pytest.mark.slow
def test_eval_names_a_data_folder_that_moved_and_notes_another_dataset(fashion_run, capsys,
                                                                       tmp_path, mnist_dir,
                                                                       monkeypatch):
    out, copy = fashion_run
    moved = tmp_path / "moved"
    shutil.move(str(copy), moved)
    try:
        capsys.readouterr()
        assert cli.main(["eval", "--model", str(out / "model.npz"), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and f"trained on the files in {copy}, which is gone; pass " \
               f"--data-dir DIR with the data, or --download" in err
        assert cli.main(["eval", "--model", str(out / "model.npz"), "--data-dir", str(moved),
                         "--quiet"]) == 0
        capsys.readouterr()
        assert cli.main(["eval", "--model", str(out / "model.npz"), "--dataset", "mnist",
                         "--data-dir", str(mnist_dir), "--quiet"]) == 0
        said = capsys.readouterr().out
        assert "note: this model was trained on fashion-mnist, and mnist has other classes" \
               in said
    finally:
        shutil.move(str(moved), copy)


def test_a_download_that_fails_names_only_the_files_it_needs(tmp_path, monkeypatch):
    for name, value in OFFLINE.items():
        monkeypatch.setenv(name, value)
    needed = {f: data.DATASETS["mnist"].md5[f] for f in ("t10k-images-idx3-ubyte.gz",
                                                          "t10k-labels-idx1-ubyte.gz")}
    with pytest.raises(data.DataError) as error:
        data.download(needed, ["http://127.0.0.1:9/"], tmp_path, progress=False)
    message = str(error.value)
    assert "pass --data-dir DIR with the IDX files t10k-images-idx3-ubyte.gz, " \
           "t10k-labels-idx1-ubyte.gz (gzipped or not)" in message
    assert "train-images" not in message


def test_a_pale_digit_is_ink_and_a_speckled_blank_page_is_not():
    """predict called a clearly visible grey digit (180 on 230) blank."""
    from tinygrad_mnist.mnist.images import to_mnist_layout
    pale = np.full((60, 60), 230 / 255, np.float32)
    pale[15:45, 27:33] = 180 / 255
    digit = to_mnist_layout(pale)
    assert digit.max() == pytest.approx(1.0) and (digit > 0.5).sum() > 40
    speckled = np.clip(0.9 + 0.02 * np.random.default_rng(0).normal(size=(200, 200)), 0, 1)
    with pytest.raises(ValueError, match="looks blank"):
        to_mnist_layout(speckled.astype(np.float32))


def test_a_diverging_run_blames_the_option_that_diverged():
    """The NaN hint always blamed --lr, also when --weight-decay 100 was the cause."""
    from tinygrad_mnist.mnist.train import _likely_cause
    assert "--weight-decay 100 is far too strong" in _likely_cause(Config(weight_decay=100))
    assert _likely_cause(Config(lr=5.0)).startswith("Lower --lr (now 5 with --optimizer "
                                                    "momentum)")


@pytest.mark.slow
def test_ctrl_c_while_the_final_files_are_written_says_resume_finishes_them(tmp_path,
                                                                          mnist_dir, capsys,
                                                                          monkeypatch):
    from tinygrad_mnist.mnist import train as training
    real = training.finish

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(training, "finish", interrupted)
    out = tmp_path / "run"
    argv = ["train", "--data-dir", str(mnist_dir), *SMALL, "--out", str(out)]
    assert cli.main(argv) == 130
    err = capsys.readouterr().err
    assert "interrupted while the final files were written: its one epoch is saved in" in err
    assert "run the same command with --resume to write the model, metrics and plots without " \
           "training again" in err
    monkeypatch.setattr(training, "finish", real)
    assert cli.main(argv + ["--resume"]) == 0
    assert {"model.npz", "confusion.png", "samples.png"} <= set(os.listdir(out))
    assert "epoch   1" not in capsys.readouterr().out                # not trained again


# ---------------------------------------------------------------- 7: results that are not

def test_a_run_at_chance_level_says_so():
    from tinygrad_mnist.mnist.train import _chance_hint
    assert _chance_hint(Config(), 0.98, 10) is None
    hint = _chance_hint(Config(arch="lenet5", optimizer="momentum", lr=0.05), 0.1135, 10)
    assert hint.startswith("warning: 11.35% is chance level for 10 classes: the network did "
                           "not learn")


def test_an_ablation_mean_over_a_seed_stuck_at_chance_is_flagged_where_it_is_shown():
    """'57.68 ± 41.29' for LeNet-5 with one seed at 10%, and no word about it."""
    runs = [{"test_accuracy": a, "val_curve": [a], "seconds_per_epoch": 1.0, "best_epoch": 1,
             "seed": s} for s, a in enumerate((0.98, 0.97, 0.1009))]
    row = ablation.results_table({"LeNet-5": runs}, 0.98)[-1]
    assert "⚠ 1 of 3 seeds stayed at chance (10.09%): not a result" in row


# ---------------------------------------------------------------- 8: defaults per network

def test_each_network_has_defaults_that_train_and_help_says_which(capsys):
    assert (Config().optimizer, Config().lr) == ("momentum", 0.05)
    assert (Config(arch="lenet5").optimizer, Config(arch="lenet5").lr) == ("adam", 0.002)
    assert (Config(arch="cnn").optimizer, Config(arch="cnn").lr) == ("adam", 0.001)
    parser = cli.build_parser()
    for argv, expected in ((["train", "--arch", "cnn"], ("adam", 0.001)),
                           (["train", "--arch", "cnn", "--lr", "0.01"], ("adam", 0.01)),
                           (["train", "--arch", "cnn", "--optimizer", "momentum"],
                            ("momentum", 0.001)),
                           (["train"], ("momentum", 0.05))):
        args, _ = parser.parse_known_args(argv)
        config = cli.config_from(args, cli._given(parser, argv))
        assert (config.optimizer, config.lr) == expected, argv
    from tinygrad_mnist.mnist.sweep import plan_trials
    trials = plan_trials({"arch": ["mlp", "cnn"], "optimizer": [None], "lr": [None]})
    assert [(t["options"]["optimizer"], t["options"]["lr"]) for t in trials] == [
        ("momentum", 0.05), ("adam", 0.001)]
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "default: momentum for the MLP, adam for the other networks" in shown
    assert "default: 0.05 for the MLP, 0.002 for LeNet-5 and the LSTM, 0.001 for the CNN and " \
           "the ViT" in shown


@pytest.mark.slow
def test_the_cnn_trains_with_its_own_defaults(tmp_path, mnist_dir):
    """With the MLP's defaults the CNN diverged (35.7% after an epoch of 5,000 images)."""
    out = tmp_path / "cnn"
    assert cli.main(["train", "--arch", "cnn", "--subset", "3000", "--epochs", "1",
                     "--data-dir", str(mnist_dir), "--out", str(out), "--quiet",
                     "--threads", "1"]) == 0
    assert json.loads((out / "metrics.json").read_text())["test_accuracy"] > 0.7


# ---------------------------------------------------------------- 9: small ones

def test_a_mistyped_command_or_choice_gets_the_closest(capsys):
    with pytest.raises(SystemExit):
        cli.main(["trian"])
    assert "invalid choice: 'trian'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["trian"])
    assert "did you mean train?" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "--optimizer", "adma"])
    assert "did you mean adam?" in capsys.readouterr().err


def test_counts_have_their_noun_in_the_right_number():
    from tinygrad_mnist.mnist.console import counted
    assert (counted(1, "epoch"), counted(3, "epoch"), counted(0, "seed")) == (
        "1 epoch", "3 epochs", "0 seeds")
    one = {"arch": "mlp", "target": 0.98, "dataset": "mnist", "seeds": 1, "command": "c",
           "accuracy_mean": 0.981, "accuracy_std": 0.0, "seconds_mean": 9.5, "seconds_std": 0.0,
           "reached": True, "gflops_achieved": 1.0, "gflops_matmul_peak": 2.0, "cpu": "x",
           "cores": 2, "blas": "b", "runs": [{"seed": 0, "test_accuracy": 0.981,
                                              "train_seconds": 9.5}]}
    text = speedrun.report(one)
    assert "**98.10% test accuracy in 9.50 s of training** (one seed, so no spread)" in text
    assert "±" not in text.split("|")[0]


def test_resume_of_a_sweep_says_how_many_trials_it_skipped(tmp_path):
    from tinygrad_mnist.mnist.executors import run_trials
    store = tmp_path / "results"
    store.mkdir()
    (store / "a.json").write_text(json.dumps({"value": 1}))
    said = []
    results = run_trials(_double, [{"key": "a", "x": 1}, {"key": "b", "x": 2}], "serial",
                         progress=False, description="sweep", store=str(store),
                         log=said.append)
    assert results == [{"value": 1}, {"value": 4}]
    assert said == [f"1 of 2 sweep trials already finished in {store}: skipped"]


def _double(trial):
    return {"value": trial["x"] * 2}


def test_library_mistakes_get_a_hint():
    layer = nn.Linear(2, 2)
    with pytest.raises(TypeError, match=r"Adam: got the module Linear itself; pass its "
                                        r"parameters: Adam\(linear.parameters\(\), ...\)"):
        optim.Adam(layer)
    with pytest.raises(TypeError, match="SGD: got one Tensor; pass a list of them"):
        optim.SGD(layer.weight, lr=0.1)
    from tinygrad_mnist.viz import draw_graph
    with pytest.raises(TypeError, match=r"draw_graph: expected a Tensor, got float \(3.0\)"):
        draw_graph(3.0)


def test_a_drawing_shows_an_integer_tensors_values_not_a_norm():
    labels = Tensor(np.array([7, 2, 1, 0, 4, 1, 4, 9]))
    logits = Tensor(np.zeros((8, 10), np.float32), requires_grad=True)
    loss = nn.cross_entropy(logits, labels)
    from tinygrad_mnist.viz import draw_graph
    source = draw_graph(loss).source
    assert "[7, 2, 1, 0, 4, 1, ...]" in source and "norm 7.348" not in source


# ---------------------------------------------------------------- 10: NumPy's conventions

@pytest.mark.parametrize("call, keyword, hint", [
    (lambda t: np.sum(t, dtype=np.float64), "dtype", r"cast first: t\.astype\(np\.float64\)"),
    (lambda t: np.sum(t, initial=1.0), "initial", "add the initial value to the result"),
    (lambda t: np.mean(t, out=np.zeros(())), "out", "a Tensor op returns a new tensor"),
    (lambda t: np.max(t, where=np.array([True, False])), "where", "mask first"),
])
def test_a_numpy_keyword_a_tensor_does_not_take_is_named(call, keyword, hint):
    t = Tensor([1.0, 2.0])
    with pytest.raises(TypeError, match=rf"np\.\w+: the keyword {keyword} is not supported on "
                                        rf"Tensors \(it takes axis, keepdims\); {hint}"):
        call(t)
    assert np.sum(t, axis=0, out=None).item() == 3.0       # a keyword at "not given" is fine


def test_a_numpy_scalar_bound_never_widens_a_tensor():
    t = Tensor([0.5, 2.0, 4.0])
    for result in (t.clip(np.float64(1.0), 3.0), np.clip(t, np.float64(1.0), np.float64(3.0)),
                   t.clip(np.float64(1.0), None), t * np.float64(2.0), t.maximum(np.float64(1.0))):
        assert result.dtype == np.float32
    np.testing.assert_allclose(t.clip(np.float64(1.0), 3.0).data, [1.0, 2.0, 3.0])


def test_the_explorer_shows_an_integer_tensors_values_not_a_norm():
    from tinygrad_mnist.viz.explorer import _summary
    labels = _summary(np.array([7, 2, 1, 0, 4, 1, 4, 9, 5]))
    assert labels == {"shape": [9], "values": [7, 2, 1, 0, 4, 1, 4, 9], "more": True}
    assert "norm" in _summary(np.array([1.0, 2.0]))

"""The character model of names: the data as makemore encodes it, each architecture's
next-token causality, training that lowers the test loss, resume equal to an uninterrupted
run, the run folder's rules, and one-line errors for a bad names file."""
import json

import numpy as np
import pytest

from tinygrad_mnist import Tensor, manual_seed
from tinygrad_mnist.mnist import cli
from tinygrad_mnist.names import data, models
from tinygrad_mnist.names.train import NamesConfig, learning_rate, train_names

from conftest import ROOT

NAMES_DIR = ROOT.parent / "shared" / "data" / "names"


def test_names_are_encoded_as_makemore_does():
    vocab = data.Vocabulary(["emma", "ava", "bo"])
    assert vocab.size == 7 and vocab.block == 5        # a b e m o v and the start/end token
    x, y = vocab.encode(["ava"])
    letters = {c: vocab.index[c] for c in "av"}
    np.testing.assert_array_equal(x[0], [0, letters["a"], letters["v"], letters["a"], 0])
    np.testing.assert_array_equal(y[0], [letters["a"], letters["v"], letters["a"], 0, -1])
    assert vocab.decode(x[0][1:]) == "ava"


def test_the_split_holds_out_a_fixed_thousand():
    names = data.read_names(NAMES_DIR)
    train, test = data.split(names)
    assert len(test) == 1000 and len(train) + len(test) == len(names) == 32_033
    assert data.split(names) == (train, test)                 # the same every time


@pytest.mark.parametrize("arch", models.ARCHS)
def test_every_model_sees_only_the_past(arch):
    """Changing the token at position 5 changes no logit before position 5."""
    manual_seed(0)
    model = models.build(arch, 27, 16)
    model.eval()
    if arch == "bigram":                        # it starts at zero: give it something to say
        model.table.weight._data = np.random.default_rng(1).normal(size=(27, 27)).astype(
            np.float32)
    x = np.random.default_rng(0).integers(0, 27, size=(2, 16))
    changed = x.copy()
    changed[:, 5] = (changed[:, 5] + 1) % 27
    a, b = model(Tensor(x)).data, model(Tensor(changed)).data
    np.testing.assert_allclose(a[:, :5], b[:, :5], rtol=1e-5, atol=1e-6)
    assert np.abs(a[:, 5:] - b[:, 5:]).max() > 1e-4


@pytest.mark.parametrize("content, message", [
    (None, "names.txt: not found; pass --data-dir"),
    ("emma\nzoë\n", "'zoë' is not a name of letters a-z"),
    ("\n\n", "holds no names"),
])
def test_a_bad_names_file_is_one_line(tmp_path, capsys, content, message):
    if content is not None:
        (tmp_path / "names.txt").write_text(content, encoding="utf-8")
    assert cli.main(["names", "--data-dir", str(tmp_path), "--out", str(tmp_path / "run"),
                     "--max-steps", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err


@pytest.mark.slow
def test_training_lowers_the_test_loss_and_resume_is_exact(tmp_path):
    common = dict(arch="gru", data_dir=str(NAMES_DIR), max_steps=60, eval_every=20,
                  samples=5, threads=1)
    whole = train_names(NamesConfig(out=str(tmp_path / "whole"), **common),
                        log=lambda *a: None, progress=False)
    losses = [h["test_loss"] for h in whole["history"]]
    assert losses[-1] < losses[0] < np.log(27) + 0.1          # from about uniform, down
    assert len(whole["samples"]) == 5 and all(s.isalpha() for s in whole["samples"] if s)
    part = NamesConfig(out=str(tmp_path / "part"), **{**common, "max_steps": 40})
    train_names(part, log=lambda *a: None, progress=False)
    resumed = train_names(NamesConfig(out=str(tmp_path / "part"), resume=True, **common),
                          log=lambda *a: None, progress=False)
    assert [h["test_loss"] for h in resumed["history"]] == losses    # the same process: exact
    for name in ("model.npz", "metrics.json", "curves.png", "samples.txt", "checkpoint.npz"):
        assert (tmp_path / "whole" / name).exists()
    with pytest.raises(ValueError, match="already holds a run"):
        train_names(NamesConfig(out=str(tmp_path / "whole"), **common), progress=False)


def test_hidden_sizes_the_recurrent_state_as_pytorch_counts_it():
    H, E, V = 128, 64, 27
    gru = models.build("gru", V, 16, hidden=H)
    assert sum(p.size for p in gru.parameters()) == (
        V * E + 3 * H * (E + H) + 2 * 3 * H + H * V + V)       # embedding, torch.nn.GRU, head
    assert models.build("gru", V, 16).cell.hidden_size == 64     # makemore's default


def test_the_learning_rate_warms_up_then_follows_a_cosine_to_a_tenth():
    c = NamesConfig(lr=1e-3, max_steps=110, warmup=10, lr_schedule="cosine")
    assert learning_rate(c, 0) == pytest.approx(1e-4)          # (step + 1) / warmup of lr
    assert learning_rate(c, 4) == pytest.approx(5e-4)
    assert learning_rate(c, 10) == pytest.approx(1e-3)         # the peak, then the cosine
    assert learning_rate(c, 60) == pytest.approx(1e-3 * (0.1 + 0.45))       # halfway
    assert learning_rate(c, 110) == pytest.approx(1e-4)        # a tenth at max_steps
    assert learning_rate(NamesConfig(lr=2e-3), 999) == 2e-3    # makemore's: constant


@pytest.mark.slow
def test_the_command_prints_the_test_loss_and_samples(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["names", "--arch", "transformer", "--data-dir", str(NAMES_DIR),
                     "--max-steps", "20", "--eval-every", "10", "--out", str(out),
                     "--quiet", "--samples", "3"]) == 0
    said = capsys.readouterr().out
    assert "test loss" in said and "samples: " in said
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["parameters"] == 204_544 and len(metrics["history"]) == 2
    assert (out / "samples.txt").read_text().count("\n") == 3


def test_the_transformer_hands_out_its_attention_maps():
    manual_seed(1)
    model = models.build("transformer", 27, 16)
    maps = []
    logits = model(Tensor(np.array([[0, 9, 19, 1, 2]])), attention=maps)
    assert logits.shape == (1, 5, 27) and len(maps) == 4
    for weights in maps:
        w = weights.data
        assert w.shape == (1, 4, 5, 5)
        np.testing.assert_allclose(w.sum(axis=-1), 1, rtol=1e-5)
        assert np.all(np.triu(w[0], k=1) == 0)                   # causal: no future letter
    np.testing.assert_allclose(model(Tensor(np.array([[0, 9, 19, 1, 2]]))).data, logits.data)

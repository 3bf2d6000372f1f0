"""The ablation grid on a small subset: the report's structure, and every number in it traced
back to a run recorded in results.json."""
import json
import re
import statistics

import pytest

from dataclasses import replace

from tinygrad_mnist.mnist.ablation import ARCHITECTURES, QUICK, REGULARIZERS, ablate

pytestmark = pytest.mark.slow        # trains, or runs the command line (pytest -m "not slow" skips it)


@pytest.fixture(scope="module")
def quick_grid(tmp_path_factory, mnist_dir):
    """The --quick grid (every optimizer with its learning-rate sweep, every regularizer and
    architecture) on a small subset, two seeds."""
    out = tmp_path_factory.mktemp("docs")
    plan = replace(QUICK, epochs=2, seeds=(0, 1), train_size=800, val_size=300, test_size=400,
                   archs=("mlp", "lenet5", "cnn"))
    results = ablate(["mnist"], {"mnist": str(mnist_dir)}, out_dir=str(out), plan=plan,
                     log=lambda *a: None)
    return out, results


def test_report_structure(quick_grid):
    out, _ = quick_grid
    text = (out / "results.md").read_text()
    for heading in ("## mnist", "### Optimizers", "### Regularization", "### Architectures",
                    "Learning-rate sweep", "Reading:"):
        assert heading in text
    compared = [label for label, (arch, _, _) in ARCHITECTURES.items()
                if arch in ("mlp", "lenet5", "cnn")]             # the fixture's plan.archs
    for label in list(REGULARIZERS) + compared + ["sgd", "adamw", "nesterov"]:
        assert f"| {label} |" in text
    assert "LSTM 128 over the rows" not in text
    assert (out / "curves_mnist.png").stat().st_size > 10_000
    assert {arch for arch, _, _ in ARCHITECTURES.values()} == {"mlp", "lenet5", "cnn", "lstm",
                                                                "vit"}
    assert QUICK.archs == ("mlp", "lenet5")            # --quick leaves the slow CNN out
    assert "placeholder" not in text.lower() and "TODO" not in text


def test_every_number_comes_from_a_run(quick_grid):
    out, results = quick_grid
    text = (out / "results.md").read_text()
    saved = json.loads((out / "results.json").read_text())["results"]["mnist"]
    for group in ("optimizers", "regularization", "architectures"):
        for label, runs in saved[group].items():
            row = next(line for line in text.splitlines()
                       if line.startswith(f"| {label} |") and "±" in line)
            found = re.search(r"\| ([\d.]+) ± ([\d.]+)( ⚠ (\d) of 2 seeds stayed at chance "
                              r"\([\d., ]+%\): not a result)? \|", row)
            mean, std = map(float, found.group(1, 2))
            stuck = [t for t in (r["test_accuracy"] for r in runs) if t < 0.15]
            assert int(found.group(4) or 0) == len(stuck)         # flagged where it is shown
            tests = [r["test_accuracy"] for r in runs]
            assert len(runs) == 2 and all(0.1 < t <= 1 for t in tests)
            assert mean == pytest.approx(statistics.mean(tests) * 100, abs=0.006)
            assert std == pytest.approx(statistics.stdev(tests) * 100, abs=0.006)
            seconds = float(row.split("|")[3])
            assert seconds == pytest.approx(
                statistics.median(r["seconds_per_epoch"] for r in runs), abs=0.006)
            assert all(len(r["val_curve"]) == 2 for r in runs)
    # the learning rate chosen is the one with the best validation accuracy in the sweep
    sweep = saved["sweep"]["momentum"]
    assert str(sweep["chosen"]) == max(sweep["tried"], key=sweep["tried"].get)
    assert all(r["lr"] == sweep["chosen"] for r in saved["regularization"]["none"])

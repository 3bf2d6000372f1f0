"""Every user path, round three: what still went wrong on a fresh clone, each as a user meets
it (the command line in a subprocess or a pseudo-terminal, Ctrl-C as a real SIGINT to a real
process pool), named after what the user did."""
import errno
import fcntl
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import time

import numpy as np
import pytest

from tinygrad_mnist import get_num_threads, nn, set_num_threads
from tinygrad_mnist.mnist import threads as load_aware
from tinygrad_mnist.files import atomic_write
from tinygrad_mnist.mnist import cli

from conftest import ROOT
from test_cli import SMALL, one_error_line, run

pytestmark = pytest.mark.slow        # trains, or runs the command line (pytest -m "not slow" skips it)

OFFLINE = {"https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9",
           "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}


def _tracked(tmp_path):
    return {"TINYGRAD_MNIST_CACHE": str(tmp_path / "empty-cache"), **OFFLINE}


# ---------------------------------------------------------------- 1: Ctrl-C in a process pool

def test_ctrl_c_in_a_process_pool_sweep_is_one_line_and_leaves_no_worker(tmp_path, mnist_dir):
    out = tmp_path / "sweep"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tinygrad_mnist", "sweep", "--data-dir", str(mnist_dir),
         "--subset", "6000", "--hidden", "64", "--epochs", "3", "--seeds", "0,1,2,3,4,5",
         "--executor", "processes", "--workers", "2", "--quiet", "--out", str(out)],
        cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 120
    results = out / "results"

    def finished():               # a trial's file, not the temporary one it is written through
        return results.exists() and [f for f in os.listdir(results) if not f.startswith(".")]
    while time.time() < deadline and not finished():
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)                 # the terminal's Ctrl-C: every process
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0] and "--resume" in lines[0], err
    deadline = time.time() + 10          # multiprocessing's resource tracker leaves last
    while _live_processes_in_group(proc.pid) and time.time() < deadline:
        time.sleep(0.1)
    assert _live_processes_in_group(proc.pid) == []      # the workers are gone too
    assert finished()                                   # finished trials are kept


def _live_processes_in_group(group):
    """The processes of a process group still running (a zombie awaiting its reaper is not)."""
    live = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":      # state, ppid, pgrp
            live.append(int(entry))
    return live


# ---------------------------------------------------------------- 4: threads

def test_set_num_threads_sets_and_gives_back_the_blas_thread_count():
    before = get_num_threads()
    try:
        set_num_threads(1)
        assert get_num_threads() == 1
        with pytest.raises(ValueError, match="positive int"):
            set_num_threads(0)
    finally:
        set_num_threads(None)
    assert get_num_threads() == before


class _FakeMachine:
    """/proc/stat as LoadAwareThreads samples it: `others` cores busy besides us."""

    def __init__(self):
        self.wall = self.cpu = self.ours = 0.0
        self.others = 0.0

    def advance(self, seconds, ours=1.0):
        self.wall += seconds
        self.ours += ours * seconds
        self.cpu += (ours + self.others) * seconds

    def sample(self):
        return self.wall, self.cpu, self.ours


def test_load_aware_threads_use_the_cores_other_programs_leave(monkeypatch):
    machine = _FakeMachine()
    set_calls = []
    monkeypatch.setattr(load_aware.LoadAwareThreads, "_sample", staticmethod(machine.sample))
    monkeypatch.setattr(load_aware, "set_num_threads", set_calls.append)
    monkeypatch.setattr(load_aware, "get_num_threads", lambda: 2)
    monkeypatch.setattr(load_aware.os.path, "exists", lambda path: True)
    threads = load_aware.LoadAwareThreads(interval=0.2)
    assert threads.enabled and threads.threads == 2

    def steps(n, others):
        machine.others = others
        for _ in range(n):
            machine.advance(0.05)
            threads.step()
    steps(20, 0.0)
    assert threads.threads == 2 and set_calls == []           # quiet: every core
    steps(20, 1.0)                                            # a busy program appears
    assert threads.threads == 1 and set_calls == [1]
    steps(20, 0.45)                                           # in between: no flapping
    assert threads.threads == 1
    steps(20, 0.0)                                            # and leaves
    assert threads.threads == 2 and set_calls == [1, 2]
    assert 0 < threads.reduced_steps < threads.steps


def test_threads_is_a_train_option_left_out_of_the_resume_fingerprint():
    from tinygrad_mnist.mnist.options import Config
    args = cli.build_parser().parse_args(["train", "--threads", "1"])
    assert args.threads == 1
    assert "threads" not in Config(threads=1).fingerprint()
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--threads", "0"])
    assert info.value.code == 2


# ---------------------------------------------------------------- 5-6: memory and disk

def test_an_impossible_network_is_refused_before_anything_is_allocated(tmp_path):
    started = time.perf_counter()
    result = run("train", "--hidden", "1000000,1000000", "--quiet", cwd=tmp_path,
                 env=_tracked(tmp_path))
    assert result.returncode == 2
    one_error_line(result, "--hidden 1000000,1000000", "GB", "available")
    assert time.perf_counter() - started < 30
    assert not (tmp_path / "runs").exists()


def test_a_full_disk_names_the_file_and_the_epoch_still_saved(tmp_path, mnist_dir, monkeypatch,
                                                              capsys):
    from tinygrad_mnist.mnist import train as training
    real, calls = training.save_checkpoint, []

    def full_disk(*args):
        calls.append(1)
        if len(calls) == 2:                                  # epoch 2's checkpoint
            with atomic_write(os.path.join(args[0], "checkpoint.npz")) as f:
                f.write(b"partial")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args)

    monkeypatch.setattr(training, "save_checkpoint", full_disk)
    out = tmp_path / "run"
    code = cli.main(["train", "--data-dir", str(mnist_dir), "--subset", "600", "--hidden", "16",
                     "--epochs", "3", "--quiet", "--out", str(out)])
    assert code == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    for words in (str(out / "checkpoint.npz"), "No space left", "epoch 1 is still saved",
                  "--resume"):
        assert words in line, line
    meta = nn.load_arrays(out / "checkpoint.npz")           # whole, and epoch 1's
    assert '"epoch": 1' in str(meta[nn.META_KEY])
    assert not [n for n in os.listdir(out) if n.startswith(".tmp-")]


def test_atomic_write_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    path.write_bytes(b"old")

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError) as info:
        with atomic_write(path) as f:
            f.write(b"new")
    assert info.value.filename == str(path) and info.value.errno == errno.ENOSPC
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["model.npz"]


# ---------------------------------------------------------------- 7, 10: the parser

def test_a_mistyped_option_is_one_line_with_the_closest_option(tmp_path):
    result = run("train", "--lrr", "3", cwd=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    one_error_line(result, "--lrr", "did you mean --lr?")
    bad_value = run("train", "--batch-size", "x", cwd=tmp_path)
    assert bad_value.returncode == 2 and len(bad_value.stderr.strip().splitlines()) == 1
    assert "usage:" not in bad_value.stderr


@pytest.mark.parametrize("command", ["train", "sweep", "ablate", "eval"])
def test_help_says_each_default_once_as_it_is_typed(tmp_path, command):
    text = " ".join(run(command, "--help", cwd=tmp_path).stdout.split())
    assert "(default: True)" not in text and "(default: False)" not in text
    assert "(default: None)" not in text and "(default: [" not in text
    options = text.split("options:", 1)[1]
    for block in options.split(" --")[1:]:
        assert block.count("(default:") <= 1, block
    if command == "sweep":
        for block in options.split(" --")[1:]:
            name = block.split()[0]
            words = block.split(maxsplit=2)
            assert len(words) > 2 or name in ("augment", "resume", "quiet"), block
    if command == "train":
        assert "(default: 512,256)" in text


# ---------------------------------------------------------------- 8: the run's data directory

def test_eval_and_resume_read_the_data_directory_the_run_was_trained_from(tmp_path, mnist_dir):
    env = _tracked(tmp_path)
    trained = run("train", "--data-dir", mnist_dir, *SMALL, cwd=tmp_path, env=env)
    assert trained.returncode == 0, trained.stderr
    model = tmp_path / "runs" / "mnist" / "model.npz"
    evaluated = run("eval", "--model", model, "--quiet", cwd=tmp_path, env=env)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "test accuracy" in evaluated.stdout
    more = run("train", *SMALL[:-3], "--epochs", "2", "--quiet", "--resume", cwd=tmp_path,
               env=env)
    assert more.returncode == 0, more.stderr
    assert not (tmp_path / "empty-cache").exists()         # nothing was downloaded


def test_the_folder_above_the_datasets_is_named_with_the_one_to_pass(tmp_path, mnist_dir):
    result = run("train", "--data-dir", mnist_dir.parent, "--quiet", cwd=tmp_path)
    assert result.returncode == 2
    one_error_line(result, "mnist/", "fashion-mnist/", f"--data-dir {mnist_dir}")


# ---------------------------------------------------------------- 9: a bad Ray address

def test_a_ray_address_where_nothing_listens_is_one_line_at_once(tmp_path):
    pytest.importorskip("ray")
    started = time.perf_counter()
    result = run("sweep", "--executor", "ray", "--ray-address", "127.0.0.1:1", "--epochs", "1",
                 "--out", tmp_path / "sweep", cwd=tmp_path)
    assert time.perf_counter() - started < 30
    assert result.returncode == 2
    one_error_line(result, "127.0.0.1:1", "--ray-address")
    assert not (tmp_path / "sweep").exists()


# ---------------------------------------------------------------- 11: clean errors

def test_the_library_prints_no_numpy_warnings_of_its_own(tmp_path):
    code = ("import numpy as np; from tinygrad_mnist import Tensor\n"
            "x = Tensor([0.0, -1.0], requires_grad=True)\n"
            "y = (x.log() + x.sqrt() + 1 / x).sum(); y.backward()\n"
            "print(np.isnan(x.grad).any() or np.isinf(x.grad).any())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=tmp_path)
    assert result.stdout.strip() == "True" and result.stderr == ""


def test_a_diverging_run_prints_only_its_error_line_and_anomaly_names_the_op(tmp_path,
                                                                            mnist_dir):
    diverged = run("train", "--data-dir", mnist_dir, *SMALL, "--lr", "1e6", cwd=tmp_path)
    assert diverged.returncode == 1
    assert len(diverged.stderr.strip().splitlines()) == 1, diverged.stderr
    anomaly = run("train", "--data-dir", mnist_dir, *SMALL, "--lr", "1e6", "--detect-anomaly",
                  "--force", cwd=tmp_path)
    assert len(anomaly.stderr.strip().splitlines()) == 1, anomaly.stderr
    line = one_error_line(anomaly, "produced", "created at")
    assert line.split(": error: ")[1].split(":")[0] in ("linear", "relu", "cross_entropy",
                                                        "dropout")
    assert "mnist/train.py" in line and "bin/" not in line


# ---------------------------------------------------------------- 12: the terminal

def _in_terminal(args, columns, interrupt_after=None, timeout=120):
    """Run `tinygrad-mnist ARGS` on a pseudo-terminal of `columns` columns; with
    interrupt_after, type Ctrl-C (the terminal echoes ^C and sends SIGINT) after that many
    seconds of output. Returns (exit code, everything the terminal showed)."""
    pid, fd = pty.fork()
    if pid == 0:
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        os.environ["PYTHONPATH"] = str(ROOT)
        os.execvp(sys.executable, [sys.executable, "-m", "tinygrad_mnist", *map(str, args)])
    shown, started, typed = b"", time.time(), False
    while time.time() - started < timeout:
        if interrupt_after is not None and not typed and time.time() - started > interrupt_after:
            os.write(fd, b"\x03")
            typed = True
        try:
            import select
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                shown += chunk
        except OSError:
            break
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), shown.decode(errors="replace")


def test_progress_is_drawn_whole_on_a_terminal_that_reports_no_width(tmp_path, mnist_dir):
    code, shown = _in_terminal(["train", "--data-dir", mnist_dir, "--subset", "3000",
                                "--hidden", "32", "--epochs", "1", "--out", tmp_path / "run"],
                               columns=0)
    assert code == 0, shown
    frames = [f for f in shown.split("\r") if f.startswith("epoch 1/1")]
    assert frames and any(f.rstrip().endswith("%]") for f in frames), frames[-3:]
    assert any("img/s" in f and "loss " in f and "accuracy " in f for f in frames)
    assert "samples_s" not in shown


def test_ctrl_c_starts_its_message_on_a_new_line(tmp_path, mnist_dir):
    code, shown = _in_terminal(["train", "--data-dir", mnist_dir, "--subset", "20000",
                                "--hidden", "256", "--epochs", "30", "--out", tmp_path / "run"],
                               columns=100, interrupt_after=6)
    assert code == 130, shown
    assert "^C" in shown and "^Ctinygrad" not in shown
    tail = shown.split("^C", 1)[1]
    assert "\n" in tail.split("tinygrad-mnist train: error:")[0]


# ---------------------------------------------------------------- 13-14: files

def test_a_uniform_grey_image_is_refused_as_blank(tmp_path, small_model):
    from PIL import Image
    for shade in (128, 255, 0, 200):
        Image.new("L", (40, 40), shade).save(tmp_path / f"grey{shade}.png")
    result = run("predict", "--model", small_model,
                 *[tmp_path / f"grey{s}.png" for s in (128, 255, 0, 200)], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("looks blank") == 4 and result.stdout == ""


def test_models_and_checkpoints_are_as_readable_as_the_plots_beside_them(small_model):
    folder = small_model.parent
    plot_mode = os.stat(folder / "curves.png").st_mode & 0o777
    assert plot_mode & 0o044                           # others may read what a run writes
    for name in ("model.npz", "checkpoint.npz", "metrics.json"):
        assert os.stat(folder / name).st_mode & 0o777 == plot_mode, name


@pytest.fixture(scope="module")
def small_model(tmp_path_factory, mnist_dir):
    cwd = tmp_path_factory.mktemp("cwd")
    result = run("train", "--data-dir", mnist_dir, *SMALL, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return cwd / "runs" / "mnist" / "model.npz"


# ---------------------------------------------------------------- pictures and wording

def test_a_one_epoch_curve_has_one_whole_epoch_tick_and_a_title_that_says_the_run():
    from tinygrad_mnist.mnist import report
    history = [{"epoch": 1, "train_loss": 0.9, "test_loss": 0.5, "train_accuracy": 0.7,
                "test_accuracy": 0.83}]
    fig = report.curves_figure(history, "MNIST, MLP 784-512-256-10: test accuracy 82.87%")
    for ax in fig.axes:
        assert list(ax.get_xticks()) == [1]
        low, high = ax.get_xlim()
        assert low <= 0.5 and high >= 1.5
    assert fig._suptitle.get_text().startswith("MNIST, MLP 784-512-256-10")


def test_ablation_curves_have_whole_epochs_and_the_chosen_rates(tmp_path, monkeypatch):
    from tinygrad_mnist.mnist import report
    shown = {}
    monkeypatch.setattr(report, "_save", lambda fig, path, dpi=100: shown.setdefault("fig", fig))
    report.optimizer_curves({"sgd": [0.9, 0.95], "adam": [0.92, 0.96]}, "mnist", "x.png",
                            rates={"sgd": 0.3, "adam": 0.003})
    ax = shown["fig"].axes[0]
    assert all(float(t).is_integer() for t in ax.get_xticks() if 1 <= t <= 2)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["sgd (lr 0.3)",
                                                                   "adam (lr 0.003)"]
    assert ax.get_title().startswith("MNIST:")


def test_the_sweep_plot_groups_seeds_into_one_bar_per_setting(monkeypatch):
    from tinygrad_mnist.mnist import report, sweep
    shown = {}
    monkeypatch.setattr(report, "_save", lambda fig, path, dpi=100: shown.setdefault("fig", fig))
    results = [{"options": {"lr": lr, "seed": seed}, "test_accuracy": acc}
               for lr, seed, acc in [(0.1, 0, 0.90), (0.1, 1, 0.92), (0.2, 0, 0.95),
                                     (0.2, 1, 0.97)]]
    sweep._plot(results, ["lr", "seed"], "sweep.png")
    ax = shown["fig"].axes[0]
    assert [round(p.get_height(), 6) for p in ax.patches] == [91.0, 96.0]   # means per setting
    assert [t.get_text() for t in ax.get_xticklabels()] == ["lr 0.1", "lr 0.2"]
    assert "2 seeds each" in ax.get_title()


def test_drawings_write_numbers_into_their_ops_and_show_the_targets():
    from tinygrad_mnist import Tensor, grad
    from tinygrad_mnist.viz import draw_graph
    x = Tensor(0.8, requires_grad=True, dtype=np.float64)
    (df,) = grad(x * x.tanh(), x, create_graph=True)
    source = draw_graph(df).source
    assert "constant" not in source and "mul(1, ·)" in source
    logits = Tensor(np.zeros((4, 3)), requires_grad=True)
    loss = nn.cross_entropy(logits, np.array([0, 1, 2, 1]))
    source = draw_graph(loss).source
    assert "{targets | (4,) int64 |" in source                 # an input, named by its role
    compact = draw_graph(loss, compact=True).source
    assert "cross_entropy | 1.099" in compact and "ellipse" not in compact
    assert "parameter | (4, 3)" in compact


def test_an_edge_into_a_collapsed_module_ends_at_its_box_not_across_its_label():
    from tinygrad_mnist import Tensor, manual_seed
    from tinygrad_mnist.viz import draw_graph, record_modules
    manual_seed(0)
    model = nn.MLP([6, 4, 3])
    x = Tensor(np.ones((2, 6)))
    with record_modules():
        loss = nn.cross_entropy(model(x), np.array([0, 1]))
    graph = draw_graph(loss, names={"images": x}, collapse_modules=True)
    entering = [line for line in graph.source.splitlines() if "-> m" in line and "t" in
                line.split("->")[0] and "lhead=cluster_" in line]
    assert entering, graph.source


def test_report_wording_says_what_each_number_is():
    from tinygrad_mnist.handcheck import compare_manual
    from tinygrad_mnist.mnist.ablation import results_table
    params = {"w": np.array([1.0, -2.0, 0.5])}
    for scale, words in ((0.001000001, "scaled by 1/1000"), (2.0, "scaled by 2:"),
                         (0.37, "scaled by 0.37")):
        report = compare_manual(lambda p: (p["w"] ** 2).sum(), params,
                                {"w": scale * 2 * params["w"]})
        assert words in report["w"].cause, report["w"].cause
    assert "hand -2 vs autograd -4" in str(compare_manual(
        lambda p: (p["w"] ** 2).sum(), params, {"w": 0.5 * 2 * params["w"]}))
    runs = [{"test_accuracy": 0.97, "val_curve": [0.97, 0.985], "seconds_per_epoch": 1.0,
             "best_epoch": 2, "seed": s} for s in range(2)]
    runs.append({"test_accuracy": 0.96, "val_curve": [0.96, 0.97], "seconds_per_epoch": 1.0,
                 "best_epoch": 2, "seed": 2})
    row = results_table({"sgd": runs}, 0.98)[-1]
    assert "2 of 3 runs reached it" in row and "not reached" not in row

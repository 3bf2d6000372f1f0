"""The `tinygrad-mnist` command line: train, eval, predict, export, playground, hardest, graph,
gradcheck, ablate, sweep, speedrun, names.

Every mistake is one line, `tinygrad-mnist COMMAND: error: ...`, naming the option, file or
value and what to do; usage errors exit with 2, a run that cannot finish with 1, Ctrl-C with 130.
"""
import argparse
import sys

import numpy as np

from .. import __version__
from .console import stderr_line
from .saved import load_model
from .options import (NON_NEGATIVE_INT, POSITIVE_INT, add_sweep_options, add_train_options,
                      config_from, listed, number, one_of, shown, swept_lists)

class _Parser(argparse.ArgumentParser):
    """Every mistake is one line, `tinygrad-mnist CMD: error: ...`, never the usage block."""

    def error(self, message):
        import difflib
        import re
        wrong = re.match(r"argument (COMMAND|[-\w/ ]+): invalid choice: '([^']*)' \(choose from "
                         r"(.*)\)$", message)
        if wrong:                         # a mistyped command or choice: the closest one
            choices = [c.strip().strip("'") for c in wrong.group(3).split(",")]
            close = difflib.get_close_matches(wrong.group(2), choices, n=1)
            if close:
                message += f"; did you mean {close[0]}?"
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Help(argparse.HelpFormatter):
    """Help with the default of every option that has one, written as it is typed, and said
    once (not for flags, and not when the help text already says it)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (not action.option_strings or action.nargs == 0 or "default" in text
                or any(action.default is v for v in (None, False, True, argparse.SUPPRESS))
                or action.default == [None]):
            return text
        return f"{text} (default: {shown(action.default)})"


def _parser(sub, name, help_text):
    return sub.add_parser(name, help=help_text, description=help_text, formatter_class=_Help)


# ---------------------------------------------------------------- train

def _add_train(sub):
    p = _parser(sub, "train", "train a network and write metrics, plots and the model")
    add_train_options(p)                       # the options table (options.py)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--detect-anomaly", action="store_true",
                   help="stop at the first op producing NaN or inf, naming it and its line")
    p.add_argument("--profile", action="store_true",
                   help="time every op's forward and backward in the training steps and print "
                        "the table (calls, ms, share of the step) at the end")


def _cmd_train(args):
    from contextlib import nullcontext
    from ..anomaly import detect_anomaly
    from .checkpoints import checkpoint_path, stored_options
    from .options import BY_NAME
    from .train import train
    given = getattr(args, "given", set(vars(args)))
    if args.resume:             # the run's own options for those the command leaves out
        config = config_from(args, given)
        for name, value in stored_options(checkpoint_path(config.out)).items():
            if name in BY_NAME and name not in given:
                setattr(args, name, value)
                given = given | {name}
    config = config_from(args, given)
    if args.detect_anomaly or args.profile:
        config.jit = False            # every op checked or timed as it runs
    from ..profiler import Profile
    profiler = Profile() if args.profile else None
    with detect_anomaly() if args.detect_anomaly else nullcontext():
        train(config, progress=not args.quiet, profiler=profiler)
    if profiler is not None:
        print("profile of the training steps (tinygrad-mnist train --profile):")
        print(profiler)
        from ..engine.kernels.convolution import describe_choices
        for line in describe_choices():
            print(line)
    return 0


# ---------------------------------------------------------------- eval and predict

def _cmd_eval(args):
    from . import data
    from .evaluation import confusion_matrix, format_confusion, predict_logits
    from .checkpoints import stored_data_dir
    model, meta = load_model(args.model)
    trained_on = meta.get("dataset", "mnist")
    dataset = args.dataset or trained_on
    data_dir = args.data_dir
    if data_dir is None and not args.download and dataset == trained_on:
        data_dir = stored_data_dir(args.model, missing_ok=False)     # the run's own files
    ds = data.load(dataset, data_dir, progress=not args.quiet, splits=("test",))
    labels = ds.test_labels.astype(np.int64)
    predictions = predict_logits(model, ds.normalized(ds.test_images)).argmax(axis=1)
    print(format_confusion(confusion_matrix(labels, predictions), ds.info.classes))
    print(f"test accuracy: {(predictions == labels).mean() * 100:.2f}% "
          f"on {len(labels)} {ds.info.name} test images")
    if dataset != trained_on:
        print(f"note: this model was trained on {trained_on}, and {dataset} has other "
              f"classes under the same labels ({', '.join(ds.info.classes[:3])}, ...): the "
              f"accuracy measures nothing it learned")
    return 0


def _cmd_hardest(args):
    import os
    from . import data, report
    from .checkpoints import stored_data_dir
    from .hardest import gradient_norms, hardest
    model, meta = load_model(args.model)
    dataset = meta.get("dataset", "mnist")
    data_dir = args.data_dir
    if data_dir is None:
        data_dir = stored_data_dir(args.model, missing_ok=True)      # the run's own files
    ds = data.load(dataset, data_dir, progress=not args.quiet)
    labels = ds.train_labels.astype(np.int64)
    from .console import progress_bar
    bar = progress_bar(len(labels), "gradient norms", "img", not args.quiet, unit_scale=True)
    norms, answers = gradient_norms(model, ds.normalized(ds.train_images), labels,
                                    progress=bar.update)
    bar.close()
    top = hardest(norms, args.count)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.model)), "hardest.png")
    report.hardest(ds.train_images, labels, answers, norms, top, ds.info.classes,
                   len(labels), out)
    print(f"{'index':>6}  {'label':<12} {'answer':<12} norm")
    for i in top:
        print(f"{i:>6}  {ds.info.classes[labels[i]]:<12} {ds.info.classes[answers[i]]:<12} "
              f"{norms[i]:.3f}")
    print(f"median norm {np.median(norms):.3f} over {len(labels)} training images; "
          f"wrote {out}")
    return 0


def _cmd_export(args):
    from .exchange import export
    if args.format != "onnx":
        raise ValueError(f"--format {args.format}: the format written is onnx")
    model, meta = load_model(args.model)
    out = export(model, meta, args.model, args.out)
    print(f"wrote {out}: input 'pixels' (batch, 784) in [0, 1], output 'logits' (batch, 10)")
    return 0


def _cmd_playground(args):
    import os
    from . import data
    from .checkpoints import stored_data_dir
    from .exchange import page_digits
    from ..viz.playground import playground
    model, meta = load_model(args.model)
    ds_name = meta.get("dataset", "mnist")
    data_dir = args.data_dir or stored_data_dir(args.model, missing_ok=True)
    ds = data.load(ds_name, data_dir, progress=not args.quiet, splits=("test",))
    digits = page_digits(model, ds.test_images, ds.test_labels.astype(np.int64), ds.normalized)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.model)),
                                   "playground.html")
    from .models import describe
    name = describe(meta.get("arch", "mlp"), meta["hidden"], meta.get("activation", "relu"),
                    meta.get("cnn_kernel", 5))
    playground(model, ds.info, out, title=f"Draw a digit: {name} trained on {ds.info.name}",
               digits=digits)
    print(f"wrote {out}: open it in a browser (it needs no network and no server)")
    return 0


def _cmd_predict(args):
    from .data import DATASETS, standardize
    from .images import load_digit
    from ..engine import Tensor, no_grad
    model, meta = load_model(args.model)
    info = DATASETS[meta.get("dataset", "mnist")]
    failed = 0
    for path in args.images:                 # one unreadable file does not stop the others
        try:
            pixels = load_digit(path)
        except (ValueError, OSError) as error:
            print(f"tinygrad-mnist predict: error: {error}", file=sys.stderr)
            failed += 1
            continue
        with no_grad():
            probs = model(Tensor(standardize(pixels[None], info))).softmax().data[0]
        top = np.argsort(probs)[::-1][:3]
        ranked = ", ".join(f"{info.classes[k]} {probs[k]:.1%}" for k in top)
        print(f"{path}: {ranked}")
    return 2 if failed else 0


# ---------------------------------------------------------------- the rest

def _cmd_graph(args):
    from ..files import folder_lock
    from .checks import write_gallery
    with folder_lock(args.out, "tinygrad-mnist graph"):    # the same drawings, redrawn
        written = write_gallery(args.out, html=args.html)
    for name in written:
        print(f"{args.out}/{name}")
    return 0


def _cmd_gradcheck(args):
    from .checks import gradcheck_report
    text, ok = gradcheck_report()
    print(text)
    print("all checks behave as expected" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


def _cmd_ablate(args):
    import os
    from .ablation import ablate
    names = list(dict.fromkeys(n for group in args.datasets for n in group))
    dirs = None
    if args.data_dir:              # DIR/mnist and DIR/fashion-mnist, or one dataset's own DIR
        own = len(names) == 1 and not os.path.isdir(os.path.join(args.data_dir, names[0]))
        dirs = {n: args.data_dir if own else os.path.join(args.data_dir, n) for n in names}
    try:
        ablate(names, dirs, quick=args.quick, out_dir=args.out,
               executor=args.executor, workers=args.workers, ray_address=args.ray_address,
               resume=args.resume, progress=not args.quiet, archs=args.arch,
               force=args.force)
    except KeyboardInterrupt:
        stderr_line(f"tinygrad-mnist ablate: interrupted; finished trials are kept in "
                    f"{args.out}/trials: run the same command with --resume to skip them")
        return 130
    print(f"wrote {args.out}/results.md")
    return 0


def _cmd_speedrun(args):
    from .speedrun import collect, run
    if args.collect:
        if args.resume:
            raise ValueError("speedrun --collect writes a record from the runs it is given: "
                             "--resume has no meaning there (--force replaces a record)")
        summary = collect(args.arch, args.target, args.collect, args.dataset, args.out,
                          force=args.force)
    else:
        summary = run(args.arch, args.target, args.seeds, args.data_dir, args.out,
                      progress=not args.quiet, dataset=args.dataset, resume=args.resume,
                      force=args.force)
    return 0 if summary["reached"] else 1


def _cmd_names(args):
    from dataclasses import fields
    from ..names.train import NamesConfig, train_names
    config = NamesConfig(**{f.name: getattr(args, f.name) for f in fields(NamesConfig)
                            if hasattr(args, f.name)})
    train_names(config, progress=not args.quiet)
    return 0


def _cmd_sweep(args):
    import time
    from .sweep import run_sweep
    lists = swept_lists(args)
    out = args.out or f"runs/sweeps/{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        results = run_sweep(lists, out, args.data_dir, args.subset, args.augment,
                            args.executor, args.workers, args.ray_address, args.resume,
                            progress=not args.quiet, flip=args.flip)
    except KeyboardInterrupt:
        stderr_line(f"tinygrad-mnist sweep: interrupted; finished trials are kept in {out}: "
                    f"run the same command with --out {out} --resume to skip them")
        return 130
    best = max(results, key=lambda r: r["test_accuracy"])
    print(f"best: {best['key']} ({best['test_accuracy'] * 100:.2f}%); wrote {out}/results.md, "
          f"results.json and sweep.png")
    return 0


def _add_executor_options(p):
    from .executors import EXECUTORS
    p.add_argument("--executor", choices=EXECUTORS, default="serial",
                   help="run trials one after another, on a local process pool (one BLAS "
                        "thread each), or as Ray tasks (pip install -e \".[ray]\")")
    p.add_argument("--workers", type=POSITIVE_INT, default=None,
                   help="processes, or CPUs of a local Ray cluster (default: the cores)")
    p.add_argument("--ray-address", default=None,
                   help="connect to this Ray cluster (ray://HOST:10001 or HOST:6379) instead "
                        "of starting a local one")
    p.add_argument("--resume", action="store_true",
                   help="continue in --out, skipping the trials that finished")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_sweep(sub):
    p = _parser(sub, "sweep", "train every combination of the listed options (comma-separated "
                              "lists) and write a results table and a plot")
    add_sweep_options(p)                       # a list for each swept option (options.py)
    p.add_argument("--data-dir", default=None,
                   help="read the IDX files from DIR (the dataset's own folder)")
    p.add_argument("--augment", action="store_true", help="augment in every trial")
    p.add_argument("--flip", action="store_true",
                   help="also mirror half the images in every trial (Fashion-MNIST)")
    p.add_argument("--subset", type=POSITIVE_INT, default=None,
                   help="use only the first N training and test images")
    p.add_argument("--out", default=None,
                   help="the sweep's folder (default: runs/sweeps/DATE-TIME)")
    _add_executor_options(p)


def build_parser():
    from .models import ARCHS
    parser = _Parser(prog="tinygrad-mnist", description="Autograd over NumPy, and MNIST with it.")
    parser.add_argument("--version", action="version", version=f"tinygrad_mnist {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train(sub)
    p = _parser(sub, "eval", "accuracy and confusion matrix of a saved model on the test set")
    p.add_argument("--model", required=True, help="a model.npz written by train")
    p.add_argument("--dataset", default=None,
                   help="dataset (default: the one the model was trained on)")
    p.add_argument("--data-dir", default=None,
                   help="read the test IDX files from DIR (default: the folder the model was "
                        "trained from, or the download cache)")
    p.add_argument("--download", action="store_true",
                   help="use the download cache (fetching the official files) even if the "
                        "model was trained from a folder of its own")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p = _parser(sub, "hardest", "draw the training images with the largest gradient norms "
                "under a saved model (often mislabelled or strange digits)")
    p.add_argument("--model", required=True, help="a model.npz written by train")
    p.add_argument("--count", type=POSITIVE_INT, default=32, help="how many (default 32)")
    p.add_argument("--data-dir", default=None,
                   help="read the training IDX files from DIR (default: the folder the model "
                        "was trained from, or the download cache)")
    p.add_argument("--out", default=None, help="the picture (default: hardest.png beside the "
                                               "model)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p = _parser(sub, "export", "write a saved model as ONNX (pixels in [0, 1] in, the ten "
                "logits out; any batch size)")
    p.add_argument("--model", required=True, help="a model.npz written by train")
    p.add_argument("--format", default="onnx", help="the format (onnx)")
    p.add_argument("--out", default=None, help="the file (default: model.onnx beside the model)")
    p = _parser(sub, "playground", "write a page where you draw a digit and watch a saved "
                "model answer, layer by layer, and why (one offline HTML file)")
    p.add_argument("--model", required=True, help="a model.npz written by train (an MLP or "
                                                  "a conv net)")
    p.add_argument("--out", default=None, help="the page (default: playground.html beside "
                                               "the model)")
    p.add_argument("--data-dir", default=None,
                   help="read the test IDX files (the page's test digits) from DIR (default: "
                        "the folder the model was trained from, or the download cache)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p = _parser(sub, "predict", "classify image files with a saved model (top 3)")
    p.add_argument("--model", required=True, help="a model.npz written by train")
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    p = _parser(sub, "graph", "draw computation graphs as SVG (a scalar expression, a neuron, "
                              "the MNIST MLP, the reference notebooks' nets)")
    p.add_argument("--out", default="runs/graphs", help="directory for the SVG files")
    p.add_argument("--html", action="store_true",
                   help="also write the graph explorer's HTML pages (module boxes that "
                        "collapse, node statistics, a backward stepper)")
    _parser(sub, "gradcheck", "check every op, the built-in models and the reference "
                              "notebooks' hand-derived gradients")
    p = _parser(sub, "ablate", "compare optimizers, regularizers, architectures and datasets; "
                               "writes results.md, results.json and plots")
    p.add_argument("--quick", action="store_true",
                   help="a smaller grid on 8,000 training images (under a minute)")
    p.add_argument("--datasets", nargs="+", default=[["mnist", "fashion-mnist"]],
                   type=listed(one_of(("mnist", "fashion-mnist")), "datasets"),
                   metavar="{mnist,fashion-mnist}",
                   help="datasets to compare, comma or space separated (default: both)")
    p.add_argument("--data-dir", default=None,
                   help="directory holding mnist/ and fashion-mnist/ (with one dataset, its "
                        "own directory); default: the download cache")
    p.add_argument("--arch", type=listed(one_of(ARCHS), "architectures"), default=None,
                   metavar="{" + ",".join(ARCHS) + "}",
                   help="kinds of network in the architecture group, comma separated "
                        "(default: all; with --quick: mlp,lenet5)")
    p.add_argument("--out", default="runs/ablation", help="directory for the report")
    p.add_argument("--force", action="store_true",
                   help="replace an ablation already in --out (its report and trials)")
    _add_executor_options(p)
    _add_sweep(sub)
    p = _parser(sub, "speedrun", "time a fixed recipe to a test accuracy over several seeds "
                                 "and write the record (speedrun.md, speedrun.json)")
    p.add_argument("--target", type=number(float, low=0, high=1), default=0.98,
                   help="the test accuracy the mean over seeds must reach")
    p.add_argument("--arch", choices=ARCHS, default="mlp",
                   help="the network of the recipe, as train --arch names it")
    p.add_argument("--dataset", choices=["mnist", "fashion-mnist"], default="mnist",
                   help="the dataset of the record")
    p.add_argument("--seeds", type=POSITIVE_INT, default=10, help="seeds 0..N-1")
    p.add_argument("--data-dir", default=None,
                   help="read the IDX files from DIR instead of downloading them")
    p.add_argument("--out", default=None,
                   help="the record's folder (default: runs/speedrun/ARCH-TARGET, with the "
                        "dataset first if it is not MNIST)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--collect", nargs="+", metavar="RUN_DIR", default=None,
                   help="instead of training, write the record from finished `train` runs "
                        "of the recipe, one per seed (checked against the recipe)")
    p.add_argument("--resume", action="store_true",
                   help="keep the seeds that finished in --out and train the rest")
    p.add_argument("--force", action="store_true",
                   help="replace a record already in --out (its seeds' runs too)")
    _add_names(sub)
    return parser


def _add_names(sub):
    from ..names.models import ARCHS as NAME_ARCHS
    p = _parser(sub, "names", "train a character-level model of names (as makemore) and sample "
                              "new ones; prints the test loss in nats per character")
    p.add_argument("--arch", choices=NAME_ARCHS, default="transformer",
                   help="the model: a bigram table, an MLP over the last 16 characters, an "
                        "RNN, GRU or LSTM, or a 4-layer transformer")
    p.add_argument("--data-dir", required=True,
                   help="the folder holding names.txt (one name a line); nothing is downloaded")
    p.add_argument("--max-steps", type=POSITIVE_INT, default=5000, help="optimizer steps")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=32, help="names per step")
    p.add_argument("--lr", type=number(float, low=0, low_open=True), default=5e-4,
                   help="AdamW's learning rate")
    p.add_argument("--weight-decay", type=number(float, low=0), default=0.01,
                   help="AdamW's decoupled weight decay")
    p.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant",
                   help="the learning rate over the steps: constant, or a cosine down to a "
                        "tenth of --lr at --max-steps")
    p.add_argument("--warmup", type=NON_NEGATIVE_INT, default=0,
                   help="steps of a linear rise to --lr first")
    p.add_argument("--dropout", type=number(float, low=0, high=0.99), default=0.0,
                   help="dropout in the transformer's blocks, and on the recurrent layer's "
                        "inputs and outputs")
    p.add_argument("--hidden", type=POSITIVE_INT, default=64,
                   help="the RNN's, GRU's or LSTM's state size, the MLP's hidden layer")
    p.add_argument("--eval-every", type=POSITIVE_INT, default=500,
                   help="steps between test-loss evaluations (and checkpoints)")
    p.add_argument("--samples", type=NON_NEGATIVE_INT, default=10, help="names to sample at the end")
    p.add_argument("--seed", type=NON_NEGATIVE_INT, default=3407,
                   help="seed of the initialization and the batches")
    p.add_argument("--out", default=None, help="the run's folder (default: runs/names-ARCH)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--force", action="store_true", help="replace a run already in --out")
    p.add_argument("--threads", type=POSITIVE_INT, default=None, help="BLAS threads")
    p.add_argument("--no-jit", dest="jit", action="store_false",
                   help="run every step eagerly instead of replaying the recorded step")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _given(parser, argv):
    """The options typed on the command line, as opposed to left at their defaults (parsed
    again with every default of the command's parser suppressed)."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    actions = [a for p in sub.choices.values() for a in p._actions]
    saved = [(a, a.default) for a in actions]
    try:
        for a in actions:
            a.default = argparse.SUPPRESS
        typed, _ = parser.parse_known_args(argv)
    finally:
        for a, default in saved:
            a.default = default
    return set(vars(typed))


def _unrecognized(parser, command, unknown):
    """A mistyped option: one line naming it, with the closest real option."""
    import difflib
    sub = parser
    if command is not None:
        sub = next(a for a in parser._actions
                   if isinstance(a, argparse._SubParsersAction)).choices[command]
    options = [o for action in sub._actions for o in action.option_strings]
    close = difflib.get_close_matches(unknown[0].split("=")[0], options, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    sub.error(f"unrecognized argument{'s' if len(unknown) > 1 else ''}: "
              f"{' '.join(unknown)}{hint}")


COMMANDS = {"train": _cmd_train, "eval": _cmd_eval, "predict": _cmd_predict,
            "hardest": _cmd_hardest, "export": _cmd_export,
            "playground": _cmd_playground,
            "graph": _cmd_graph, "gradcheck": _cmd_gradcheck, "ablate": _cmd_ablate,
            "sweep": _cmd_sweep, "speedrun": _cmd_speedrun, "names": _cmd_names}


def main(argv=None):
    from ..jit import JitMismatchError
    from .executors import ExecutorError
    from .train import TrainingError
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        _unrecognized(parser, args.command, unknown)
    if args.command == "train":
        args.given = _given(parser, argv)
    if args.command is None:
        parser.print_help()
        return 0
    prefix = f"tinygrad-mnist {args.command}: error:"
    try:
        return COMMANDS[args.command](args)
    except TrainingError as error:
        stderr_line(f"{prefix} {error}")
        return error.exit_code
    except JitMismatchError as error:
        stderr_line(f"{prefix} {error}; the last complete epoch is kept, and --no-jit runs "
                    f"every step eagerly")
        return 1
    except KeyboardInterrupt:
        stderr_line(f"{prefix} interrupted")
        return 130
    except (ValueError, OSError, KeyError, TypeError, FloatingPointError,
            ExecutorError) as error:
        # bad input, or an anomaly found: one clear line instead of a traceback
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        if isinstance(error, OSError) and error.filename:
            message = f"{error.filename}: {error.strerror}"
        print(f"{prefix} {message}", file=sys.stderr)
        return 2

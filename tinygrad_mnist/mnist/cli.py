"""The `tinygrad-mnist` command line: train, eval, predict, graph, gradcheck, ablate, sweep,
speedrun.

Every mistake is one line, `tinygrad-mnist COMMAND: error: ...`, naming the option, file or
value and what to do; usage errors exit with 2, a run that cannot finish with 1, Ctrl-C with 130.
"""
import argparse
import math
import sys

import numpy as np

from .. import __version__
from .console import stderr_line

# ---------------------------------------------------------------- option values, checked


def _number(kind, low=None, high=None, low_open=False, high_open=True):
    """An argparse type: a finite `kind` within [low, high) (ends as given), or a message that
    names the value and the range."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}"
                                             f", got {text!r}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        below = low is not None and (value <= low if low_open else value < low)
        above = high is not None and (value >= high if high_open else value > high)
        if below or above:
            lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
            hi = "" if high is None else f"{'<' if high_open else '<='} {high}"
            raise argparse.ArgumentTypeError(f"must be {' and '.join(x for x in (lo, hi) if x)}"
                                             f", got {text!r}")
        return value
    parse.__name__ = kind.__name__        # argparse names the type in its messages
    return parse


POSITIVE_INT = _number(int, low=1)
NON_NEGATIVE_INT = _number(int, low=0)


def _hidden(text):
    parts = text.split(",")
    if not text.strip() or any(not p.strip() for p in parts):
        raise argparse.ArgumentTypeError(f"takes layer sizes like 512,256, got {text!r}")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes layer sizes like 512,256, got {text!r}") \
            from None
    if any(s <= 0 for s in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return sizes


def _listed(parse_one, what):
    """An argparse type for a sweep: a comma-separated list, each item checked by parse_one;
    a bad item is named with its position."""
    def parse(text):
        items = text.split(",")
        if not text.strip() or any(not item.strip() for item in items):
            raise argparse.ArgumentTypeError(f"takes a comma-separated list of {what}, got "
                                             f"{text!r}")
        values = []
        for i, item in enumerate(items, 1):
            try:
                values.append(parse_one(item.strip()))
            except argparse.ArgumentTypeError as error:
                raise argparse.ArgumentTypeError(f"item {i} of {text!r}: {error}") from None
        return values
    parse.__name__ = f"list of {what}"
    return parse


def _one_of(choices):
    def parse(text):
        if text not in choices:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(choices)}")
        return text
    return parse


class _Parser(argparse.ArgumentParser):
    """Every mistake is one line, `tinygrad-mnist CMD: error: ...`, never the usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _shown(value):
    """A default as the user would type it: 512,256 for a list of sizes."""
    if isinstance(value, (list, tuple)):
        return " ".join(_shown(v) for v in value) if value and isinstance(
            value[0], (list, tuple)) else ",".join(map(str, value))
    return str(value)


class _Help(argparse.HelpFormatter):
    """Help with the default of every option that has one, written as it is typed, and said
    once (not for flags, and not when the help text already says it)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (not action.option_strings or action.nargs == 0 or "default" in text
                or any(action.default is v for v in (None, False, True, argparse.SUPPRESS))):
            return text
        return f"{text} (default: {_shown(action.default)})"


def _parser(sub, name, help_text):
    return sub.add_parser(name, help=help_text, description=help_text, formatter_class=_Help)


# ---------------------------------------------------------------- train

def _add_train(sub):
    from .train import Config, OPTIMIZERS, SCHEDULES
    from .data import DATASETS
    from .models import ARCHS
    d = Config()
    p = _parser(sub, "train", "train a network and write metrics, plots and the model")
    p.add_argument("--dataset", choices=sorted(DATASETS), default=d.dataset, help="dataset")
    p.add_argument("--arch", choices=ARCHS, default=d.arch,
                   help="network: the MLP of --hidden, LeNet-5, or the CNN (two 5x5 "
                        "convolutions with batch norm and pooling, 256 hidden)")
    p.add_argument("--data-dir", default=None,
                   help="read the four IDX files from DIR instead of downloading them into "
                        "~/.cache/tinygrad_mnist")
    p.add_argument("--cnn-kernel", type=int, choices=[3, 5], default=d.cnn_kernel,
                   help="--arch cnn: 5x5 or 3x3 convolutions (3x3: a step 1.8x faster)")
    p.add_argument("--hidden", type=_hidden, default=d.hidden,
                   help="hidden layer sizes of the MLP, comma separated")
    p.add_argument("--activation", choices=["relu", "sigmoid", "tanh"], default=d.activation,
                   help="hidden activation")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer, help="optimizer")
    p.add_argument("--lr", type=_number(float, low=0, low_open=True), default=d.lr,
                   help="learning rate (the peak of --lr-schedule)")
    p.add_argument("--momentum", type=_number(float, low=0, high=1), default=d.momentum,
                   help="for --optimizer momentum and nesterov")
    p.add_argument("--weight-decay", type=_number(float, low=0), default=d.weight_decay,
                   help="L2 penalty (decoupled for adamw)")
    p.add_argument("--dropout", type=_number(float, low=0, high=1), default=d.dropout,
                   help="dropout probability after each hidden (fully connected) layer")
    p.add_argument("--input-dropout", type=_number(float, low=0, high=1),
                   default=d.input_dropout, metavar="P",
                   help="MLP only: also drop input pixels with probability P (0.2 in "
                        "Srivastava et al. 2014)")
    p.add_argument("--label-smoothing", type=_number(float, low=0, high=1),
                   default=d.label_smoothing, metavar="S",
                   help="train against targets of 1 - S on the label and S spread over all "
                        "classes (the training loss it reports too)")
    p.add_argument("--augment", action="store_true",
                   help="random shifts (up to 2 px) and rotations (up to 10 degrees)")
    p.add_argument("--elastic", type=_number(float, low=0), default=d.elastic, metavar="ALPHA",
                   help="also elastic distortions (Simard et al. 2003: a random field smoothed "
                        "by a Gaussian of 4 px, scaled by ALPHA, 34 in the paper); implies "
                        "--augment")
    p.add_argument("--flip", action="store_true",
                   help="mirror a random half of the images left to right (for "
                        "Fashion-MNIST's clothes; a mirrored digit is another symbol); with "
                        "--augment as well as the shifts and rotations")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=d.batch_size, help="batch size")
    p.add_argument("--epochs", type=POSITIVE_INT, default=d.epochs,
                   help="epochs in all; with --resume, more than the run has extends it")
    p.add_argument("--lr-schedule", choices=SCHEDULES, default=d.lr_schedule,
                   help="learning-rate schedule over all epochs")
    p.add_argument("--seed", type=NON_NEGATIVE_INT, default=d.seed,
                   help="seed of the initialization, batch order, dropout and augmentation")
    p.add_argument("--out", default=None,
                   help="directory for checkpoints and results (default: runs/DATASET)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last complete epoch")
    p.add_argument("--force", action="store_true",
                   help="replace a run already in --out")
    p.add_argument("--subset", type=POSITIVE_INT, default=None,
                   help="use only the first N training and test images (quick runs)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--detect-anomaly", action="store_true",
                   help="stop at the first op producing NaN or inf, naming it and its line")
    p.add_argument("--profile", action="store_true",
                   help="time every op's forward and backward in the training steps and print "
                        "the table (calls, ms, share of the step) at the end")
    p.add_argument("--threads", type=POSITIVE_INT, default=None,
                   help="BLAS threads for the matrix products (default: every core, and fewer "
                        "while other programs keep cores busy; a fixed count gives the same "
                        "last bits whatever the load)")
    p.add_argument("--no-jit", dest="jit", action="store_false",
                   help="run every step eagerly instead of replaying the recorded step (same "
                        "results; --detect-anomaly and --profile always run eagerly)")
    p.add_argument("--jit-check", action="store_true",
                   help="also run every replayed step eagerly and stop with JitMismatchError "
                        "if any parameter, gradient or optimizer state differs (about twice "
                        "as slow)")


def _cmd_train(args):
    from contextlib import nullcontext
    from ..anomaly import detect_anomaly
    from .train import Config, train
    fields = Config.__dataclass_fields__
    config = Config(**{k: v for k, v in vars(args).items() if k in fields})
    if args.detect_anomaly or args.profile:
        config.jit = False            # every op checked or timed as it runs
    from ..profiler import Profile
    profiler = Profile() if args.profile else None
    with detect_anomaly() if args.detect_anomaly else nullcontext():
        train(config, progress=not args.quiet, profiler=profiler)
    if profiler is not None:
        print("profile of the training steps (tinygrad-mnist train --profile):")
        print(profiler)
    return 0


# ---------------------------------------------------------------- eval and predict

def load_model(path):
    """(model in eval mode, its stored metadata) of a model.npz written by `train`, built as
    it was trained."""
    from .. import nn
    from .models import build
    arrays = nn.load_arrays(path)
    if any(k.startswith("model.") for k in arrays):
        raise ValueError(f"{path} is a training checkpoint, not a model: pass the model.npz "
                         f"that `tinygrad-mnist train` writes beside it when it finishes")
    meta = nn.load_meta(path)
    if not meta or "hidden" not in meta:
        raise ValueError(f"{path}: no architecture stored beside the weights; use a model.npz "
                         f"written by `tinygrad-mnist train`")
    def built(dropout):     # a conv net's layer names depend on whether it has dropout
        return build(meta.get("arch", "mlp"), meta["hidden"], meta.get("activation", "relu"),
                     dropout=dropout, cnn_kernel=meta.get("cnn_kernel", 5))
    model = built(meta.get("dropout", 0.0))
    if "dropout" not in meta and not set(model.state_dict()) <= set(arrays):
        model = built(0.5)          # saved before the dropout was stored: it had some
    nn.load(model, path)
    bad = [name for name, p in model.named_parameters() if not np.isfinite(p.data).all()]
    if bad:
        raise ValueError(f"{path}: the weights {', '.join(bad)} hold NaN or inf: the run that "
                         f"wrote it diverged")
    return model.eval(), meta


def _cmd_eval(args):
    from . import data
    from .train import confusion_matrix, format_confusion, predict_logits
    from .train import stored_data_dir
    model, meta = load_model(args.model)
    data_dir = args.data_dir or stored_data_dir(args.model)     # the run's own, if it exists
    ds = data.load(args.dataset or meta.get("dataset", "mnist"), data_dir,
                   progress=not args.quiet, splits=("test",))
    labels = ds.test_labels.astype(np.int64)
    predictions = predict_logits(model, ds.normalized(ds.test_images)).argmax(axis=1)
    print(format_confusion(confusion_matrix(labels, predictions), ds.info.classes))
    print(f"test accuracy: {(predictions == labels).mean() * 100:.2f}% "
          f"on {len(labels)} {ds.info.name} test images")
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
    from .checks import write_gallery
    for name in write_gallery(args.out, html=args.html):
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
    dirs, names = None, args.datasets
    if args.data_dir:              # DIR/mnist and DIR/fashion-mnist, or one dataset's own DIR
        own = len(names) == 1 and not os.path.isdir(os.path.join(args.data_dir, names[0]))
        dirs = {n: args.data_dir if own else os.path.join(args.data_dir, n) for n in names}
    try:
        ablate(args.datasets, dirs, quick=args.quick, out_dir=args.out,
               executor=args.executor, workers=args.workers, ray_address=args.ray_address,
               resume=args.resume, progress=not args.quiet, archs=args.arch)
    except KeyboardInterrupt:
        stderr_line(f"tinygrad-mnist ablate: interrupted; finished trials are kept in "
                    f"{args.out}/trials: run the same command with --resume to skip them")
        return 130
    print(f"wrote {args.out}/results.md")
    return 0


def _cmd_speedrun(args):
    from .speedrun import collect, run
    if args.collect:
        summary = collect(args.arch, args.target, args.collect, args.dataset, args.out)
    else:
        summary = run(args.arch, args.target, args.seeds, args.data_dir, args.out,
                      progress=not args.quiet, dataset=args.dataset)
    return 0 if summary["reached"] else 1


def _cmd_sweep(args):
    import time
    from .sweep import run_sweep
    lists = {"dataset": args.dataset, "arch": args.arch, "hidden": args.hidden,
             "activation": args.activation, "optimizer": args.optimizer, "lr": args.lr, "momentum": args.momentum,
             "weight_decay": args.weight_decay, "dropout": args.dropout,
             "input_dropout": args.input_dropout,
             "label_smoothing": args.label_smoothing, "elastic": args.elastic,
             "batch_size": args.batch_size, "epochs": args.epochs,
             "lr_schedule": args.lr_schedule, "seed": args.seeds}
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
    from .data import DATASETS
    from .models import ARCHS
    from .train import Config, OPTIMIZERS, SCHEDULES
    d = Config()
    p = _parser(sub, "sweep", "train every combination of the listed options (comma-separated "
                              "lists) and write a results table and a plot")
    def listed(option, parse, what, default, help_text, metavar="LIST"):
        p.add_argument(option, type=_listed(parse, what), default=[default], metavar=metavar,
                       help=f"{help_text}: a comma-separated list, one trial per item")

    listed("--dataset", _one_of(sorted(DATASETS)), "datasets", d.dataset, "datasets",
           "{" + ",".join(sorted(DATASETS)) + "}")
    p.add_argument("--data-dir", default=None,
                   help="read the IDX files from DIR (the dataset's own folder)")
    listed("--arch", _one_of(ARCHS), "architectures", d.arch, "networks",
           "{" + ",".join(ARCHS) + "}")
    p.add_argument("--hidden", type=_hidden, nargs="+", default=[d.hidden], metavar="SIZES",
                   help="one or more MLPs, each a comma list of layer sizes: "
                        "--hidden 128 512,256")
    listed("--activation", _one_of(["relu", "sigmoid", "tanh"]), "activations", d.activation,
           "hidden activations", "{relu,sigmoid,tanh}")
    listed("--optimizer", _one_of(OPTIMIZERS), "optimizers", d.optimizer, "optimizers",
           "{" + ",".join(OPTIMIZERS) + "}")
    listed("--lr", _number(float, low=0, low_open=True), "numbers", d.lr, "learning rates")
    listed("--momentum", _number(float, low=0, high=1), "numbers", d.momentum, "momenta")
    listed("--weight-decay", _number(float, low=0), "numbers", d.weight_decay,
           "L2 penalties")
    listed("--dropout", _number(float, low=0, high=1), "numbers", d.dropout,
           "dropout probabilities")
    listed("--input-dropout", _number(float, low=0, high=1), "numbers", d.input_dropout,
           "input dropout probabilities (MLP)")
    listed("--label-smoothing", _number(float, low=0, high=1), "numbers", d.label_smoothing,
           "label smoothings")
    listed("--elastic", _number(float, low=0), "numbers", d.elastic,
           "elastic distortion strengths (0: none)")
    listed("--batch-size", POSITIVE_INT, "integers", d.batch_size, "batch sizes")
    listed("--epochs", POSITIVE_INT, "integers", d.epochs, "epoch counts")
    listed("--lr-schedule", _one_of(SCHEDULES), "schedules", d.lr_schedule,
           "learning-rate schedules", "{" + ",".join(SCHEDULES) + "}")
    p.add_argument("--seeds", type=_listed(NON_NEGATIVE_INT, "integers"), default=[d.seed],
                   help="one trial per seed (and per combination of the other lists)")
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
                   help="read the test IDX files from DIR instead of the download cache")
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
    p.add_argument("--datasets", nargs="+", default=["mnist", "fashion-mnist"],
                   choices=["mnist", "fashion-mnist"], help="datasets to compare")
    p.add_argument("--data-dir", default=None,
                   help="directory holding mnist/ and fashion-mnist/ (with one dataset, its "
                        "own directory); default: the download cache")
    p.add_argument("--arch", type=_listed(_one_of(ARCHS), "architectures"), default=None,
                   metavar="{" + ",".join(ARCHS) + "}",
                   help="kinds of network in the architecture group, comma separated "
                        "(default: all; with --quick: mlp,lenet5)")
    p.add_argument("--out", default="runs/ablation", help="directory for the report")
    _add_executor_options(p)
    _add_sweep(sub)
    p = _parser(sub, "speedrun", "time a fixed recipe to a test accuracy over several seeds "
                                 "and write the record (speedrun.md, speedrun.json)")
    p.add_argument("--target", type=_number(float, low=0, high=1), default=0.98,
                   help="the test accuracy the mean over seeds must reach")
    p.add_argument("--arch", choices=["mlp", "cnn"], default="mlp",
                   help="the MLP's recipe or the convolutional one")
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
    return parser


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
            "graph": _cmd_graph, "gradcheck": _cmd_gradcheck, "ablate": _cmd_ablate,
            "sweep": _cmd_sweep, "speedrun": _cmd_speedrun}


def main(argv=None):
    from ..jit import JitMismatchError
    from .executors import ExecutorError
    from .train import TrainingError
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        _unrecognized(parser, args.command, unknown)
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

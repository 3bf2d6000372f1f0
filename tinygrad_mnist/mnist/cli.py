"""The `tinygrad-mnist` command line: train, eval, predict, graph, gradcheck."""
import argparse
import sys

import numpy as np

from .. import __version__


def _hidden(text):
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hidden takes sizes like 512,256, got {text!r}")
    if any(s <= 0 for s in sizes):
        raise argparse.ArgumentTypeError(f"--hidden sizes must be positive, got {text!r}")
    return sizes


def _add_train(sub):
    from .train import Config, OPTIMIZERS, SCHEDULES
    from .data import DATASETS
    d = Config()
    p = sub.add_parser("train", help="train an MLP and write metrics, plots and the model",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", choices=sorted(DATASETS), default=d.dataset)
    p.add_argument("--data-dir", default=None,
                   help="read the four IDX files from DIR instead of the download cache")
    p.add_argument("--hidden", type=_hidden, default=d.hidden,
                   help="hidden layer sizes, comma separated")
    p.add_argument("--activation", choices=["relu", "sigmoid", "tanh"], default=d.activation)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--momentum", type=float, default=d.momentum,
                   help="for --optimizer momentum and nesterov")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--dropout", type=float, default=d.dropout)
    p.add_argument("--augment", action="store_true",
                   help="random shifts (up to 2 px) and rotations (up to 10 degrees)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--lr-schedule", choices=SCHEDULES, default=d.lr_schedule)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", default=d.out, help="directory for checkpoints and results")
    p.add_argument("--resume", action="store_true",
                   help="continue from the last complete epoch checkpointed in --out")
    p.add_argument("--subset", type=int, default=None,
                   help="use only the first N training and test images (quick runs)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--detect-anomaly", action="store_true",
                   help="stop at the first op producing NaN or inf, naming it and its line")


def _cmd_train(args):
    from .train import Config, train
    fields = Config.__dataclass_fields__
    config = Config(**{k: v for k, v in vars(args).items() if k in fields})
    config.resume = args.resume
    if config.batch_size <= 0 or config.epochs <= 0:
        raise SystemExit("train: --batch-size and --epochs must be positive")
    from contextlib import nullcontext
    from ..tensor import detect_anomaly
    with detect_anomaly() if args.detect_anomaly else nullcontext():
        train(config, progress=not args.quiet)
    return 0


def _load_model(path):
    from .. import nn
    meta = nn.load_meta(path)
    if not meta or "hidden" not in meta:
        raise SystemExit(f"{path}: no architecture stored beside the weights; "
                         f"use a model.npz written by `tinygrad-mnist train`")
    model = nn.MLP([784, *meta["hidden"], 10], activation=meta.get("activation", "relu"))
    nn.load(model, path)
    return model.eval(), meta


def _cmd_eval(args):
    from . import data
    from .train import confusion_matrix, format_confusion, predict_logits
    model, meta = _load_model(args.model)
    ds = data.load(args.dataset or meta.get("dataset", "mnist"), args.data_dir,
                   progress=not args.quiet)
    labels = ds.test_labels.astype(np.int64)
    predictions = predict_logits(model, ds.normalized(ds.test_images)).argmax(axis=1)
    print(format_confusion(confusion_matrix(labels, predictions), ds.info.classes))
    print(f"test accuracy: {(predictions == labels).mean() * 100:.2f}% "
          f"on {len(labels)} {ds.info.name} test images")
    return 0


def _cmd_predict(args):
    from .data import DATASETS, standardize
    from .images import load_digit
    from ..tensor import Tensor, no_grad
    model, meta = _load_model(args.model)
    info = DATASETS[meta.get("dataset", "mnist")]
    for path in args.images:
        pixels = load_digit(path)
        with no_grad():
            probs = model(Tensor(standardize(pixels[None], info))).softmax().data[0]
        top = np.argsort(probs)[::-1][:3]
        ranked = ", ".join(f"{info.classes[k]} {probs[k]:.1%}" for k in top)
        print(f"{path}: {ranked}")
    return 0


def _cmd_graph(args):
    from .checks import write_gallery
    for name in write_gallery(args.out):
        print(f"{args.out}/{name}")
    return 0


def _cmd_gradcheck(args):
    from .checks import gradcheck_report
    text, ok = gradcheck_report()
    print(text)
    print("all checks behave as expected" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


def _cmd_ablate(args):
    from .ablation import ablate
    dirs = None
    if args.data_root:
        dirs = {name: f"{args.data_root}/{name}" for name in args.datasets}
    ablate(args.datasets, dirs, quick=args.quick, out_dir=args.out)
    print(f"wrote {args.out}/results.md")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="tinygrad-mnist",
                                     description="Autograd over NumPy, and MNIST with it.")
    parser.add_argument("--version", action="version", version=f"tinygrad_mnist {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train(sub)
    p = sub.add_parser("eval", help="accuracy and confusion matrix of a saved model")
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", default=None, help="default: the one the model was trained on")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--quiet", action="store_true")
    p = sub.add_parser("predict", help="classify image files with a saved model (top 3)")
    p.add_argument("--model", required=True)
    p.add_argument("images", nargs="+")
    p = sub.add_parser("graph", help="draw computation graphs as SVG (a scalar expression, a "
                                     "neuron, the MNIST MLP, the reference notebooks' nets)")
    p.add_argument("--out", default="viz", help="directory for the SVG files")
    sub.add_parser("gradcheck", help="check every op, the built-in models and the reference "
                                     "notebooks' hand-derived gradients")
    p = sub.add_parser("ablate", help="compare optimizers, regularizers, architectures and "
                                      "datasets; writes results.md and plots")
    p.add_argument("--quick", action="store_true", help="a smaller grid (a few minutes)")
    p.add_argument("--datasets", nargs="+", default=["mnist", "fashion-mnist"])
    p.add_argument("--data-root", default=None,
                   help="directory holding mnist/ and fashion-mnist/ (default: the cache)")
    p.add_argument("--out", default="docs")
    return parser


COMMANDS = {"train": _cmd_train, "eval": _cmd_eval, "predict": _cmd_predict,
            "graph": _cmd_graph, "gradcheck": _cmd_gradcheck, "ablate": _cmd_ablate}


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return COMMANDS[args.command](args)
    except (ValueError, OSError, KeyError, TypeError, FloatingPointError) as error:
        # bad input, or an anomaly found: one clear line instead of a traceback
        print(f"tinygrad-mnist {args.command}: error: {error}", file=sys.stderr)
        return 2

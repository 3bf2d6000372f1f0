"""The training options, declared once: each row gives an option's name, default, parser and
help. The table makes the run's Config, `train`'s command-line options, `sweep`'s lists and
the columns of its results, and checks the speedrun's recipes (plain `train` options).

    Option("lr", 0.05, positive_float, "learning rate (the peak of --lr-schedule)",
           sweep="learning rates")

`sweep` names the plural of a swept option (None: not swept); `result=False` marks an option
that changes how a run goes but not what it computes (left out of the resume fingerprint).
"""
import argparse
import math
import os
from dataclasses import asdict, dataclass, field, make_dataclass

from .data import DATASETS
from .models import ARCHS

OPTIMIZERS = ("sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "step", "onecycle")
ACTIVATIONS = ("relu", "sigmoid", "tanh")


# ---------------------------------------------------------------- option values, checked

def number(kind, low=None, high=None, low_open=False, high_open=True):
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


POSITIVE_INT = number(int, low=1)
NON_NEGATIVE_INT = number(int, low=0)
PROBABILITY = number(float, low=0, high=1)


def hidden_sizes(text):
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


def one_of(choices):
    def parse(text):
        if text not in choices:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(choices)}")
        return text
    parse.__name__ = "choice"
    parse.choices = tuple(choices)
    return parse


def kernel_size(text):
    return int(one_of(("3", "5"))(text))


kernel_size.choices = (3, 5)


# ---------------------------------------------------------------- the table

@dataclass(frozen=True)
class Option:
    name: str                 # the Config field; the option is --name-with-dashes
    default: object
    parse: object             # argparse type of one value (None: a flag, or free text)
    help: str
    sweep: str = None         # swept: the plural that names a list of values
    result: bool = True       # False: left out of the resume fingerprint
    metavar: str = None
    train: bool = True        # an option of `train` (False: a Config field set otherwise)

    @property
    def flag(self):
        return "--" + self.name.replace("_", "-")

    @property
    def switch(self):
        return isinstance(self.default, bool)


OPTIONS = [
    Option("dataset", "mnist", one_of(sorted(DATASETS)), "dataset", sweep="datasets"),
    Option("data_dir", None, None, "read the four IDX files from DIR instead of downloading "
           "them into ~/.cache/tinygrad_mnist", result=False, metavar="DATA_DIR"),
    Option("arch", "mlp", one_of(ARCHS), "network: the MLP of --hidden, LeNet-5, the CNN "
           "(two 5x5 convolutions with batch norm and pooling, 256 hidden), an LSTM of 128 "
           "reading the image's 28 rows, a vision transformer (ViT: 7x7 patches, 4 blocks "
           "of 64 with 4 heads), or the small CNN of private training (dpcnn: Papernot et al. "
           "2021, 26,010 parameters; use --activation tanh)",
           sweep="architectures"),
    Option("hidden", [512, 256], hidden_sizes, "hidden layer sizes of the MLP, comma "
           "separated", sweep="MLPs"),
    Option("activation", "relu", one_of(ACTIVATIONS), "hidden activation",
           sweep="activations"),
    Option("cnn_kernel", 5, kernel_size, "--arch cnn: 5x5 or 3x3 convolutions (3x3: a step "
           "1.8x faster)"),
    Option("optimizer", None, one_of(OPTIMIZERS), "optimizer (default: momentum for the MLP, "
           "adam for the other networks)", sweep="optimizers"),
    Option("lr", None, number(float, low=0, low_open=True),
           "learning rate, the peak of --lr-schedule (default: 0.05 for the MLP, 0.002 for "
           "LeNet-5 and the LSTM, 0.001 for the CNN and the ViT)", sweep="learning rates"),
    Option("momentum", 0.9, PROBABILITY, "for --optimizer momentum and nesterov",
           sweep="momenta"),
    Option("weight_decay", 0.0, number(float, low=0), "L2 penalty (decoupled for adamw)",
           sweep="L2 penalties"),
    Option("dropout", 0.2, PROBABILITY, "dropout probability after each hidden (fully "
           "connected) layer", sweep="dropout probabilities"),
    Option("input_dropout", 0.0, PROBABILITY, "MLP only: also drop input pixels with "
           "probability P (0.2 in Srivastava et al. 2014)", sweep="input dropout "
           "probabilities (MLP)", metavar="P"),
    Option("label_smoothing", 0.0, PROBABILITY, "train against targets of 1 - S on the label "
           "and S spread over all classes (the training loss it reports too)",
           sweep="label smoothings", metavar="S"),
    Option("augment", False, None, "random shifts (up to 2 px) and rotations (up to 10 "
           "degrees)"),
    Option("elastic", 0.0, number(float, low=0), "also elastic distortions (Simard et al. "
           "2003: a random field smoothed by a Gaussian of 4 px, scaled by ALPHA, 34 in the "
           "paper); implies --augment", sweep="elastic distortion strengths (0: none)",
           metavar="ALPHA"),
    Option("flip", False, None, "mirror a random half of the images left to right (for "
           "Fashion-MNIST's clothes; a mirrored digit is another symbol); with --augment as "
           "well as the shifts and rotations"),
    Option("batch_size", 128, POSITIVE_INT, "batch size", sweep="batch sizes"),
    Option("epochs", 15, POSITIVE_INT, "epochs in all; with --resume, more than the run has "
           "extends it", sweep="epoch counts", result=False),
    Option("lr_schedule", "cosine", one_of(SCHEDULES), "learning-rate schedule over all "
           "epochs", sweep="learning-rate schedules"),
    Option("seed", 0, NON_NEGATIVE_INT, "seed of the initialization, batch order, dropout and "
           "augmentation", sweep="seeds"),
    Option("out", None, None, "directory for checkpoints and results (default: "
           "runs/DATASET)", result=False),
    Option("resume", False, None, "continue the run in --out from its last complete epoch",
           result=False),
    Option("force", False, None, "replace a run already in --out", result=False),
    Option("subset", None, POSITIVE_INT, "use only the first N training and test images "
           "(quick runs)"),
    Option("threads", None, POSITIVE_INT, "BLAS threads for the matrix products (default: "
           "every core, and fewer while other programs keep cores busy; a fixed count gives "
           "the same last bits whatever the load)", result=False),
    Option("dp", False, None, "differentially private training (DP-SGD): Poisson-sampled "
           "batches of --batch-size on average, each example's gradient clipped to "
           "--max-grad-norm, Gaussian noise added; needs --epsilon or --noise-multiplier"),
    Option("epsilon", None, number(float, low=0, low_open=True), "--dp: the privacy budget "
           "over all --epochs; the least noise that spends at most it is used"),
    Option("delta", 1e-5, number(float, low=0, high=1, low_open=True), "--dp: the delta of "
           "(epsilon, delta)-differential privacy (below 1 / the training images)"),
    Option("noise_multiplier", None, number(float, low=0), "--dp: the noise's standard "
           "deviation over --max-grad-norm, instead of --epsilon (the epsilon spent is "
           "reported)", metavar="SIGMA"),
    Option("max_grad_norm", 1.0, number(float, low=0, low_open=True), "--dp: each example's "
           "gradient is clipped to this norm", metavar="C"),
    Option("max_norm", None, number(float, low=0, low_open=True), "after every update, "
           "rescale each hidden unit's incoming weights (a row of a linear layer, a conv "
           "filter) to norm at most C (Srivastava et al. 2014: 2 with dropout); the output "
           "layer stays free", sweep="max-norm constraints", metavar="C"),
    Option("momentum_start", None, PROBABILITY, "--optimizer momentum or nesterov: the "
           "momentum rises linearly from M to --momentum over --momentum-epochs (the dropout "
           "paper's 0.5 -> 0.99)", metavar="M"),
    Option("momentum_epochs", None, POSITIVE_INT, "the epochs of --momentum-start's rise "
           "(default: the first half of the run)"),
    Option("ema", None, number(float, low=0, high=1, low_open=True, high_open=True),
           "keep an exponential moving average of the weights (each step: average = D "
           "average + (1 - D) weights) and evaluate and save it instead of the raw weights",
           sweep="weight-average decays", metavar="D"),
    Option("tta", False, None, "test-time augmentation: evaluate on the average of the "
           "probabilities of each test image and its four 1-pixel shifts (with --flip, "
           "and of the mirrored image's five as well): the final accuracy; each epoch's is "
           "the plain model's"),
    Option("teacher", None, None, "knowledge distillation (Hinton et al. 2015): train on the "
           "soft targets of these saved models (model.npz paths, comma separated: their "
           "probabilities at --temperature averaged), computed once on the training images",
           metavar="MODELS"),
    Option("temperature", 20.0, number(float, low=0, low_open=True), "--teacher: the "
           "softmax temperature of the soft targets and of the student's matching term",
           metavar="T"),
    Option("distill_weight", 0.9, number(float, low=0, high=1, high_open=False),
           "--teacher: the weight A of the soft targets' term (times T^2) against 1 - A of "
           "the labels' cross-entropy (1: the soft targets alone)",
           metavar="A"),
    Option("select_fraction", None, number(float, low=0, high=1, low_open=True),
           "train on this fraction of the training images only: those a small proxy model "
           "(784-100-10, trained for --proxy-epochs first, its time counted) finds hardest "
           "(largest loss)", sweep="data fractions", metavar="F"),
    Option("proxy_epochs", 1, POSITIVE_INT, "--select-fraction: the proxy model's epochs"),
    Option("jit", True, None, "replay each recorded step (same numbers, faster)",
           result=False, train=False),              # --no-jit
    Option("jit_check", False, None, "also run every replayed step eagerly and stop with "
           "JitMismatchError if any parameter, gradient or optimizer state differs (about "
           "twice as slow)", result=False),
]
BY_NAME = {o.name: o for o in OPTIONS}
# options whose default depends on the network: the MLP trains well with momentum at 0.05; the
# CNN diverges there (its loss 3.3 -> 4.7 in an epoch of 5,000 images) and takes Adam (85.1%
# after that epoch at 0.001, 80.1% at 0.002); LeNet-5 takes Adam at 0.002 (82.8%; 75.4% at
# 0.001)
ARCH_DEFAULTS = {"mlp": {"optimizer": "momentum", "lr": 0.05},
                 "lenet5": {"optimizer": "adam", "lr": 0.002},
                 "cnn": {"optimizer": "adam", "lr": 0.001},
                 "lstm": {"optimizer": "adam", "lr": 0.002},
                 "vit": {"optimizer": "adam", "lr": 0.001},
                 "dpcnn": {"optimizer": "adam", "lr": 0.002}}
SWEPT = tuple(o.name for o in OPTIONS if o.sweep)      # sweep's lists, in the table's order


def _default(value):
    return field(default_factory=lambda: list(value)) if isinstance(value, list) else value


def _post_init(self):
    for name, value in ARCH_DEFAULTS.get(self.arch, {}).items():
        if getattr(self, name) is None:
            setattr(self, name, value)
    if self.out is None:
        self.out = os.path.join("runs", self.dataset)


def _fingerprint(self):
    """What must match for --resume to continue a run instead of starting another."""
    return {k: v for k, v in asdict(self).items() if BY_NAME[k].result}


Config = make_dataclass(
    "Config", [(o.name, object, _default(o.default)) for o in OPTIONS],
    namespace={"__post_init__": _post_init, "fingerprint": _fingerprint,
               "__doc__": "One training run's options (the table in options.py): "
                          "Config(lr=0.1, epochs=3)."})
Config.__module__ = __name__


def config_from(args, given=None):
    """The Config of parsed command-line arguments (those the table declares). With `given`
    (the options typed), an option left out that depends on the architecture takes the
    architecture's default (ARCH_DEFAULTS)."""
    values = {k: v for k, v in vars(args).items() if k in BY_NAME}
    if given is not None:
        for name in ARCH_DEFAULTS.get(values.get("arch", "mlp"), {}):
            if name not in given:
                values.pop(name, None)
    return Config(**values)


# ---------------------------------------------------------------- the parsers

def shown(value):
    """A default as the user would type it: 512,256 for a list of sizes."""
    if isinstance(value, (list, tuple)):
        return " ".join(shown(v) for v in value) if value and isinstance(
            value[0], (list, tuple)) else ",".join(map(str, value))
    return str(value)


def add_train_options(parser):
    """`train`'s option for every row of the table."""
    for o in OPTIONS:
        if o.name == "jit":
            parser.add_argument("--no-jit", dest="jit", action="store_false",
                                help="run every step eagerly instead of replaying the "
                                     "recorded step (same results; --detect-anomaly and "
                                     "--profile always run eagerly)")
        elif o.switch:
            parser.add_argument(o.flag, action="store_true", help=o.help)
        else:
            kwargs = {"metavar": o.metavar} if o.metavar else {}
            choices = getattr(o.parse, "choices", None)
            if choices is not None:
                kwargs["choices"] = choices
                kwargs["type"] = type(choices[0])
            elif o.parse is not None:
                kwargs["type"] = o.parse
            default = list(o.default) if isinstance(o.default, list) else o.default
            parser.add_argument(o.flag, default=default, help=o.help, **kwargs)


def listed(parse_one, what):
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


def add_sweep_options(parser):
    """`sweep`'s list for every swept row: one trial per item (and per combination)."""
    for o in OPTIONS:
        if not o.sweep:
            continue
        if o.name == "hidden":          # each item is itself a list: space separated
            parser.add_argument("--hidden", type=hidden_sizes, nargs="+", default=[o.default],
                                metavar="SIZES", help="one or more MLPs, each a comma list "
                                "of layer sizes: --hidden 128 512,256")
            continue
        if o.name == "seed":
            parser.add_argument("--seeds", dest="seed", type=listed(o.parse, "integers"),
                                default=[o.default], help="one trial per seed (and per "
                                "combination of the other lists)")
            continue
        choices = getattr(o.parse, "choices", None)
        metavar = "{" + ",".join(map(str, choices)) + "}" if choices else "LIST"
        own = " (default: each network's own, as train's)" if o.default is None and any(
            o.name in d for d in ARCH_DEFAULTS.values()) else ""
        parser.add_argument(o.flag, type=listed(o.parse, o.sweep), default=[o.default],
                            metavar=metavar, help=f"{o.sweep}: a comma-separated list, one "
                                                  f"trial per item{own}")


def swept_lists(args):
    """{option: list of values} of parsed sweep arguments, in the table's order."""
    return {name: getattr(args, name) for name in SWEPT}


def check_recipe(options):
    """A speedrun recipe's options: every one a train option whose value its parser takes
    (given as text, as on the command line)."""
    for name, value in options.items():
        o = BY_NAME.get(name)
        if o is None or not o.train:
            raise ValueError(f"recipe option {name!r} is not a train option")
        if o.switch:
            if not isinstance(value, bool):
                raise ValueError(f"recipe option {name!r} is a switch, got {value!r}")
            continue
        text = shown(value)
        try:
            parsed = o.parse(text) if o.parse is not None else text
        except argparse.ArgumentTypeError as error:
            raise ValueError(f"recipe option {name!r}: {error}") from None
        if parsed != value:
            raise ValueError(f"recipe option {name!r}: {value!r} reads back as {parsed!r}")

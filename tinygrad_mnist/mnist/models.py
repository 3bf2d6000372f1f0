"""The networks `tinygrad-mnist train --arch` builds: the MLP, LeNet-5 and a small CNN.

Every model takes a batch of flattened, standardized 28x28 images, (N, 784), so the data
pipeline, jit, checkpoints, eval and predict are the same for all; the conv nets reshape it
to (N, 1, 28, 28) first.
"""
from .. import nn

ARCHS = ("mlp", "lenet5", "cnn")


def layer_sizes(hidden):
    """The MLP's sizes: 784 pixels in, the hidden layers, 10 classes out (the one place)."""
    return [784, *hidden, 10]


_ACTIVATION_LAYERS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


class ConvNet(nn.Module):
    """A feature extractor (convolutions and pooling on NCHW) and a classifier on its
    flattened output; the input is (N, 784) images."""

    def __init__(self, name, features, classifier):
        self.name, self.features, self.classifier = name, features, classifier

    def forward(self, x):
        return self.classifier(self.features(x.reshape(-1, 1, 28, 28)))

    def __repr__(self):
        return self.name


def lenet5(activation="relu", dropout=0.0):
    """LeCun et al. 1998's LeNet-5 as it is built today: 5x5 convolutions with 6 and 16
    channels (the first padded, so 28x28 keeps its size as the original's 32x32 input), each
    followed by the activation and 2x2 max-pooling, then 120-84-10 fully connected layers.
    61,706 parameters."""
    act = _ACTIVATION_LAYERS[activation]
    features = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), act(), nn.MaxPool2d(2),
                             nn.Conv2d(6, 16, 5), act(), nn.MaxPool2d(2))
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(400, 120), act(),
                               *_dropout(dropout), nn.Linear(120, 84), act(),
                               *_dropout(dropout), nn.Linear(84, 10))
    return ConvNet("LeNet-5", features, classifier)


def cnn(activation="relu", dropout=0.0, channels=(32, 64), hidden=256, kernel=5):
    """The default CNN: two blocks of a 5x5 convolution (padded to keep the size), batch
    norm, the activation and 2x2 max-pooling (28 -> 14 -> 7), then a hidden layer of 256 with
    dropout and 10 outputs. 857,930 parameters with the default sizes; kernel=3 makes the
    convolutions 3x3 (2.8x fewer multiply-adds in the second)."""
    if kernel not in CNN_KERNELS:
        raise ValueError(f"cnn: kernel must be one of {CNN_KERNELS}, got {kernel!r}")
    act = _ACTIVATION_LAYERS[activation]
    c1, c2 = channels
    pad = kernel // 2
    features = nn.Sequential(
        nn.Conv2d(1, c1, kernel, padding=pad), nn.BatchNorm2d(c1), act(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, kernel, padding=pad), nn.BatchNorm2d(c2), act(), nn.MaxPool2d(2))
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(c2 * 49, hidden), act(),
                               *_dropout(dropout), nn.Linear(hidden, 10))
    return ConvNet("CNN" if kernel == 5 else f"CNN {kernel}x{kernel}", features, classifier)


CNN_KERNELS = (3, 5)


def _dropout(p):
    return [nn.Dropout(p)] if p > 0 else []


def build(arch, hidden=(512, 256), activation="relu", dropout=0.0, input_dropout=0.0,
          cnn_kernel=5):
    """The model named by `arch` (one of ARCHS); `hidden` and `input_dropout` shape only the
    MLP, `cnn_kernel` only the CNN."""
    if arch == "mlp":
        return nn.MLP(layer_sizes(hidden), activation=activation, dropout=dropout,
                      input_dropout=input_dropout)
    if input_dropout:
        raise ValueError(f"--input-dropout is an option of the MLP, not of --arch {arch}")
    if cnn_kernel != 5 and arch != "cnn":
        raise ValueError(f"--cnn-kernel is an option of --arch cnn, not of --arch {arch}")
    if arch == "lenet5":
        return lenet5(activation, dropout)
    if arch == "cnn":
        return cnn(activation, dropout, kernel=cnn_kernel)
    raise ValueError(f"unknown architecture {arch!r}; use one of {', '.join(ARCHS)}")


def describe(arch, hidden, activation, cnn_kernel=5):
    """A short name for titles and tables: 'MLP 784-512-256-10 (relu)', 'LeNet-5 (relu)',
    'CNN 3x3 (relu)'."""
    if arch == "mlp":
        return f"MLP {'-'.join(map(str, layer_sizes(hidden)))} ({activation})"
    if arch == "cnn" and cnn_kernel != 5:
        return f"CNN {cnn_kernel}x{cnn_kernel} ({activation})"
    return f"{ {'lenet5': 'LeNet-5', 'cnn': 'CNN'}[arch]} ({activation})"


def activation_sizes(arch, hidden):
    """Numbers of values one image produces across the network's layers (for memory
    estimates): the outputs of every layer, counted once."""
    if arch == "mlp":
        return sum(layer_sizes(hidden)[1:])
    if arch == "lenet5":
        return 3 * 6 * 28 * 28 + 6 * 14 * 14 + 3 * 16 * 10 * 10 + 16 * 25 + 2 * 120 + 2 * 84 + 10
    c1, c2 = 32, 64
    return 4 * c1 * 28 * 28 + c1 * 14 * 14 + 4 * c2 * 14 * 14 + c2 * 49 + 3 * 256 + 10


def im2col_sizes(arch, cnn_kernel=5):
    """The largest im2col matrix one image needs (values), also kept for the backward."""
    if arch == "lenet5":
        return max(28 * 28 * 25, 6 * 25 * 100)
    if arch == "cnn":
        k2 = cnn_kernel * cnn_kernel
        return max(28 * 28 * k2, 32 * k2 * 14 * 14)
    return 0

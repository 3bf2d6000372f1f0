"""The networks `tinygrad-mnist train --arch` builds: the MLP, LeNet-5, a small CNN, an LSTM
that reads each image row by row, a vision transformer over 7x7 patches, and the small tanh
CNN that private training (DP-SGD) uses.

Every model takes a batch of flattened, standardized 28x28 images, (N, 784), so the data
pipeline, jit, checkpoints, eval and predict are the same for all; the conv nets reshape it
to (N, 1, 28, 28) first, the sequence models to 28 rows or 16 patches.
"""
import numpy as np

from .. import nn
from ..engine import Tensor, get_rng

ARCHS = ("mlp", "lenet5", "cnn", "lstm", "vit", "dpcnn")


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


def dpcnn(activation="tanh", dropout=0.0):
    """The CNN of Papernot et al. 2021 for DP-SGD on MNIST (Tramer and Boneh 2021's
    "end-to-end CNN"): 16 8x8 filters with stride 2 (padded by 2: 28 -> 13), 2x2 max-pooling
    with stride 1 (12), 32 4x4 filters with stride 2 (5), pooling again (4), 32 hidden units,
    10 outputs; tanh throughout (its bounded output keeps the clipped gradients informative).
    26,010 parameters: the fewer the parameters, the less noise DP-SGD adds in all."""
    act = _ACTIVATION_LAYERS[activation]
    features = nn.Sequential(nn.Conv2d(1, 16, 8, stride=2, padding=2), act(),
                             nn.MaxPool2d(2, stride=1),
                             nn.Conv2d(16, 32, 4, stride=2), act(), nn.MaxPool2d(2, stride=1))
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 32), act(),
                               *_dropout(dropout), nn.Linear(32, 10))
    return ConvNet("DP CNN", features, classifier)


class RowLSTM(nn.Module):
    """An image read as a sequence: its 28 rows of 28 pixels, top to bottom, through an LSTM
    (128 units); the last step's output, after dropout, is classified by a linear layer."""

    def __init__(self, hidden=128, dropout=0.0):
        self.lstm = nn.LSTM(28, hidden, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, 10)

    def forward(self, x):
        _, (h_n, _) = self.lstm(x.reshape(-1, 28, 28))     # the last step's output, as out[:, -1]
        return self.head(self.dropout(h_n[-1]))      # (no gradient through the other 27 steps' outputs)

    def __repr__(self):
        return f"LSTM {self.lstm.hidden_size} over rows"


class Block(nn.Module):
    """A pre-norm transformer block: x + attention(LayerNorm(x)), then x + MLP(LayerNorm(x))
    with a GELU hidden layer of 2x the width."""

    def __init__(self, width, heads, dropout=0.0):
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(2 * width, width))

    def forward(self, x):
        y = self.norm1(x)
        x = x + self.attention(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """A vision transformer (Dosovitskiy et al. 2021) for 28x28 digits: 16 patches of 7x7
    pixels, each embedded linearly, a class token in front, learned position embeddings,
    `depth` pre-norm blocks of `heads` heads, and the class token's final, normalized state
    classified by a linear layer (pool="mean": the patches' mean instead)."""

    def __init__(self, width=64, depth=4, heads=4, patch=7, dropout=0.0, pool="cls"):
        self.patch, self.pool = patch, pool
        patches = (28 // patch) ** 2
        self.embed = nn.Linear(patch * patch, width)
        rng = get_rng()
        self.class_token = Tensor.from_numpy(
            (rng.normal(size=(1, 1, width)) * 0.02).astype(np.float32), requires_grad=True)
        self.positions = Tensor.from_numpy(
            (rng.normal(size=(1, patches + 1, width)) * 0.02).astype(np.float32),
            requires_grad=True)
        self.blocks = nn.Sequential(*[Block(width, heads, dropout) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        p, side = self.patch, 28 // self.patch
        n = x.shape[0]
        patches = x.reshape(n, side, p, side, p).transpose((0, 1, 3, 2, 4)).reshape(
            n, side * side, p * p)
        tokens = self.embed(patches)
        tokens = Tensor.cat([self.class_token.broadcast_to((n, 1, tokens.shape[2])), tokens],
                            axis=1) + self.positions
        out = self.norm(self.blocks(tokens))
        return self.head(out[:, 0] if self.pool == "cls" else out[:, 1:].mean(axis=1))

    def __repr__(self):
        blocks = len(self.blocks)
        return f"ViT {self.patch}x{self.patch} patches, {blocks} block{'s' if blocks > 1 else ''}"


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
    if arch == "lstm":
        return RowLSTM(dropout=dropout)
    if arch == "vit":
        return VisionTransformer(dropout=dropout)
    if arch == "dpcnn":
        return dpcnn(activation, dropout)
    raise ValueError(f"unknown architecture {arch!r}; use one of {', '.join(ARCHS)}")


def describe(arch, hidden, activation, cnn_kernel=5):
    """A short name for titles and tables: 'MLP 784-512-256-10 (relu)', 'LeNet-5 (relu)',
    'CNN 3x3 (relu)'."""
    if arch == "mlp":
        return f"MLP {'-'.join(map(str, layer_sizes(hidden)))} ({activation})"
    if arch == "cnn" and cnn_kernel != 5:
        return f"CNN {cnn_kernel}x{cnn_kernel} ({activation})"
    if arch in ("lstm", "vit"):
        return {"lstm": "LSTM 128 over rows", "vit": "ViT 7x7 patches, 4 blocks of 64"}[arch]
    return f"{ {'lenet5': 'LeNet-5', 'cnn': 'CNN', 'dpcnn': 'DP CNN'}[arch]} ({activation})"


def activation_sizes(arch, hidden):
    """Numbers of values one image produces across the network's layers (for memory
    estimates): the outputs of every layer, counted once."""
    if arch == "mlp":
        return sum(layer_sizes(hidden)[1:])
    if arch == "lenet5":
        return 3 * 6 * 28 * 28 + 6 * 14 * 14 + 3 * 16 * 10 * 10 + 16 * 25 + 2 * 120 + 2 * 84 + 10
    if arch == "lstm":               # each of 28 steps: the gates and states it keeps
        return 28 * (4 * 128 * 3 + 128 * 6) + 28 * 4 * 128 + 10
    if arch == "vit":                # 17 tokens of 64 through 4 blocks, and the attention maps
        return 4 * (17 * 64 * 14 + 17 * 128 * 3 + 4 * 17 * 17 * 3) + 17 * 64 * 4 + 10
    if arch == "dpcnn":
        return 2 * 16 * 13 * 13 + 16 * 12 * 12 + 2 * 32 * 5 * 5 + 32 * 16 + 2 * 32 + 10
    c1, c2 = 32, 64
    return 4 * c1 * 28 * 28 + c1 * 14 * 14 + 4 * c2 * 14 * 14 + c2 * 49 + 3 * 256 + 10


def im2col_sizes(arch, cnn_kernel=5):
    """The largest im2col matrix one image needs (values), also kept for the backward."""
    if arch == "lenet5":
        return max(28 * 28 * 25, 6 * 25 * 100)
    if arch == "dpcnn":
        return max(13 * 13 * 64, 5 * 5 * 16 * 16)
    if arch == "cnn":
        k2 = cnn_kernel * cnn_kernel
        return max(28 * 28 * k2, 32 * k2 * 14 * 14)
    return 0

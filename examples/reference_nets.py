"""The five hand-written NumPy MLPs of ../shared/reference, rebuilt as models defined only by
their forward pass, trained with their original hyperparameters and with ours.

    python examples/reference_nets.py --data-dir ../shared/data/mnist            # all, both
    python examples/reference_nets.py --data-dir DIR --only 002 --settings original

Results (train and test accuracy, seconds) are printed and written to
examples/results/reference_nets.json, which the README's table quotes.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from tinygrad_mnist import Tensor, manual_seed, nn, no_grad, optim  # noqa: E402
from tinygrad_mnist.mnist import data  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results", "reference_nets.json")


def _param(array):
    return Tensor(np.asarray(array, dtype=np.float32), requires_grad=True)


# ---------------------------------------------------------------- the five networks

class Net000(nn.Module):
    """784-64-10, sigmoid hidden, sigmoid output; W ~ N(0, 0.01^2), zero biases."""
    def __init__(self, rng):
        self.w1, self.b1 = _param(rng.standard_normal((784, 64)) * 0.01), _param(np.zeros(64))
        self.w2, self.b2 = _param(rng.standard_normal((64, 10)) * 0.01), _param(np.zeros(10))

    def forward(self, x):
        return ((x @ self.w1 + self.b1).sigmoid() @ self.w2 + self.b2).sigmoid()

    @staticmethod
    def loss(out, y):
        # dZ2 = A2 - Y with sigmoid outputs is the gradient of binary cross-entropy summed
        # over the 10 outputs and averaged over the batch
        return nn.binary_cross_entropy(out, np.eye(10, dtype=np.float32)[y]) * 10


class Net001(nn.Module):
    """784-128-10, ReLU, softmax with sparse cross-entropy; W ~ N(0, 0.01^2)."""
    def __init__(self, rng):
        self.w1, self.b1 = _param(rng.standard_normal((784, 128)) * 0.01), _param(np.zeros(128))
        self.w2, self.b2 = _param(rng.standard_normal((128, 10)) * 0.01), _param(np.zeros(10))

    def forward(self, x):
        return (x @ self.w1 + self.b1).relu() @ self.w2 + self.b2       # logits

    loss = staticmethod(nn.cross_entropy)


class Net002(nn.Module):
    """784-10-10-10, ReLU, ReLU, softmax; the notebook's scaled normal initialization."""
    def __init__(self, rng):
        n = rng.normal
        self.w1, self.b1 = _param(n(size=(10, 784)) * np.sqrt(1 / 784)), _param(
            n(size=10) * np.sqrt(1 / 10))
        self.w2, self.b2 = _param(n(size=(10, 10)) * np.sqrt(1 / 20)), _param(
            n(size=10) * np.sqrt(1 / 10))
        self.w3, self.b3 = _param(n(size=(10, 10)) * np.sqrt(1 / 20)), _param(
            n(size=10) * np.sqrt(1 / 784))

    def forward(self, x):
        a1 = (x @ self.w1.T + self.b1).relu()
        a2 = (a1 @ self.w2.T + self.b2).relu()
        return a2 @ self.w3.T + self.b3

    loss = staticmethod(nn.cross_entropy)


class Net003(nn.Module):
    """784-64-10, sigmoid, softmax with cross-entropy; W ~ N(0, 0.001^2)."""
    def __init__(self, rng):
        self.w1, self.b1 = _param(rng.standard_normal((784, 64)) * 0.001), _param(np.zeros(64))
        self.w2, self.b2 = _param(rng.standard_normal((64, 10)) * 0.001), _param(np.zeros(10))

    def forward(self, x):
        return (x @ self.w1 + self.b1).sigmoid() @ self.w2 + self.b2

    @staticmethod
    def loss(logits, y):
        # the notebook divides each batch's summed gradient by m = 60,000, not by the batch size
        return nn.cross_entropy(logits, y) * (len(y) / 60000)


class Net004(nn.Module):
    """784-128-10, ReLU, softmax; W ~ N(0, 0.01^2); standardized inputs."""
    def __init__(self, rng):
        self.w1, self.b1 = _param(rng.standard_normal((128, 784)) * 0.01), _param(np.zeros(128))
        self.w2, self.b2 = _param(rng.standard_normal((10, 128)) * 0.01), _param(np.zeros(10))

    def forward(self, x):
        return (x @ self.w1.T + self.b1).relu() @ self.w2.T + self.b2

    loss = staticmethod(nn.cross_entropy)


def scaled(images):
    return data.to_unit(images).reshape(len(images), -1)


def standardized_by_column(images):
    """The notebook's statistics: mean and std over axes (0, 1) of (N, 28, 28), per column,
    each split with its own statistics."""
    x = images.astype(np.float32)
    mean, std = x.mean(axis=(0, 1), keepdims=True), x.std(axis=(0, 1), keepdims=True)
    return ((x - mean) / (std + 1e-7)).reshape(len(images), -1)


# name: (model, inputs, training subset, batch size or None for full batch, lr, epochs,
#        reported result)
ORIGINAL = {
    "000": (Net000, scaled, 60000, None, 0.1, 2000, "90.67% test"),
    "001": (Net001, scaled, 60000, None, 0.1, 250, "about 88% train"),
    "002": (Net002, scaled, 41000, None, 0.1, 1000, "91.4% train"),
    "003": (Net003, scaled, 60000, 60, 5.0, 300, "about 95% train"),
    "004": (Net004, standardized_by_column, 60000, None, 0.01, 1000,
            "did not run (shape error)"),
}
SIZES = {"000": [784, 64, 10], "001": [784, 128, 10], "002": [784, 10, 10, 10],
         "003": [784, 64, 10], "004": [784, 128, 10]}
ACTIVATION = {"000": "sigmoid", "001": "relu", "002": "relu", "003": "sigmoid", "004": "relu"}


def accuracy(model, x, y):
    with no_grad():
        return float((model(Tensor(x)).data.argmax(axis=1) == y).mean())


def run_original(name, ds, seed=0, epochs=None):
    model_class, inputs, n_train, batch, lr, default_epochs, reported = ORIGINAL[name]
    rng = np.random.default_rng(seed)
    model = model_class(rng)
    x, y = inputs(ds.train_images[:n_train]), ds.train_labels[:n_train].astype(np.int64)
    x_test, y_test = inputs(ds.test_images), ds.test_labels.astype(np.int64)
    opt = optim.SGD(model.parameters(), lr=lr)
    start = time.perf_counter()
    for epoch in range(epochs or default_epochs):
        for idx in (data.batches(len(x), batch, rng) if batch else [slice(None)]):
            opt.zero_grad()
            model.loss(model(Tensor(x[idx])), y[idx]).backward()
            opt.step()
    seconds = time.perf_counter() - start
    return {"reported": reported, "train_accuracy": accuracy(model, x, y),
            "test_accuracy": accuracy(model, x_test, y_test), "seconds": seconds,
            "epochs": epochs or default_epochs,
            "settings": f"{'full batch' if batch is None else f'batch {batch}'}, SGD lr {lr}"}


def run_recommended(name, ds, seed=0, epochs=15):
    """Same layer sizes and hidden activation; standardized inputs, Kaiming/Xavier init,
    softmax cross-entropy, batch 128, SGD with momentum 0.9, lr 0.05 with a cosine decay."""
    manual_seed(seed)
    model = nn.MLP(SIZES[name], activation=ACTIVATION[name])
    x, y = ds.normalized(ds.train_images), ds.train_labels.astype(np.int64)
    x_test, y_test = ds.normalized(ds.test_images), ds.test_labels.astype(np.int64)
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    rng = np.random.default_rng(seed)
    steps = epochs * int(np.ceil(len(x) / 128))
    start, step = time.perf_counter(), 0
    for epoch in range(epochs):
        for idx in data.batches(len(x), 128, rng):
            opt.lr = 0.05 * 0.5 * (1 + np.cos(np.pi * step / steps))
            opt.zero_grad()
            nn.cross_entropy(model(Tensor(x[idx])), y[idx]).backward()
            opt.step()
            step += 1
    seconds = time.perf_counter() - start
    return {"train_accuracy": accuracy(model, x, y), "test_accuracy": accuracy(model, x_test,
                                                                                y_test),
            "seconds": seconds, "epochs": epochs,
            "settings": "batch 128, SGD momentum 0.9, lr 0.05 cosine, standardized inputs"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--only", nargs="*", default=sorted(ORIGINAL))
    parser.add_argument("--settings", choices=["original", "recommended", "both"],
                        default="both")
    parser.add_argument("--epochs", type=int, default=None,
                        help="override the epoch counts (for a quick look)")
    args = parser.parse_args(argv)
    ds = data.load("mnist", args.data_dir)
    results = {}
    if os.path.exists(RESULTS):
        with open(RESULTS) as f:
            results = json.load(f)
    for name in args.only:
        entry = results.setdefault(name, {})
        if args.settings in ("original", "both"):
            entry["original"] = run_original(name, ds, epochs=args.epochs)
            print(name, "original", entry["original"], flush=True)
        if args.settings in ("recommended", "both"):
            entry["recommended"] = run_recommended(name, ds, epochs=args.epochs or 15)
            print(name, "recommended", entry["recommended"], flush=True)
        if args.epochs is None:          # only full runs are recorded
            os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
            with open(RESULTS, "w") as f:
                json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()

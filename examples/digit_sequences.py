"""The gallery's pictures of digits read as sequences, taken through the engine's observer seam
(no model code changed to expose them):

- lstm_gates.png: a trained row LSTM reading a test digit row by row: its input, forget and
  output gates and its cell state, each (28 rows x 128 units), beside the digit.
- vit_attention.png: a trained vision transformer's attention from its class token to the 16
  patches of 7x7 pixels, per layer and head, laid over the digit.

    tinygrad-mnist train --arch lstm --data-dir ../shared/data/mnist --epochs 8 --out runs/lstm
    tinygrad-mnist train --arch vit --data-dir ../shared/data/mnist --out runs/vit
    python examples/digit_sequences.py --lstm runs/lstm/model.npz --vit runs/vit/model.npz viz
"""
import argparse
import os

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tinygrad_mnist import Observer, Tensor, no_grad, observe  # noqa: E402
from tinygrad_mnist.mnist import data  # noqa: E402
from tinygrad_mnist.mnist.cli import load_model  # noqa: E402


class Heard(Observer):
    """The outputs and inputs of every op named `name` the model runs."""

    def __init__(self, name):
        self.name, self.seen = name, []

    def on_op(self, op, inputs, output):
        if op.name == self.name:
            self.seen.append(([t.data for t in inputs], output.data))


def _sigmoid(a):
    return 1 / (1 + np.exp(-a))


def lstm_gates(model_path, image, label, out):
    model, _ = load_model(model_path)
    with no_grad(), observe(Heard("lstm_cell")) as heard:
        logits = model(Tensor(image[None]))
    H = heard.seen[0][1].shape[-1] // 2
    pre = np.stack([inputs[0][0] for inputs, _ in heard.seen])          # (28, 4H)
    cell = np.stack([output[0, H:] for _, output in heard.seen])        # (28, H)
    panels = [("input gate i", _sigmoid(pre[:, :H]), "viridis", (0, 1)),
              ("forget gate f", _sigmoid(pre[:, H:2 * H]), "viridis", (0, 1)),
              ("output gate o", _sigmoid(pre[:, 3 * H:]), "viridis", (0, 1)),
              ("cell state c", cell, "RdBu_r", (-np.abs(cell).max(), np.abs(cell).max()))]
    fig, axes = plt.subplots(1, 5, figsize=(15, 3.6),
                             gridspec_kw={"width_ratios": [1.2, 4, 4, 4, 4]})
    axes[0].imshow(image.reshape(28, 28), cmap="gray_r", aspect="auto")   # rows meet steps
    axes[0].set_title(f"the digit ({label}),\na row a step", fontsize=9)
    axes[0].set_ylabel("row (step)")
    axes[0].set_xticks([])
    axes[0].set_yticks([0, 7, 14, 21, 27])
    for ax, (title, values, cmap, (low, high)) in zip(axes[1:], panels):
        shown = ax.imshow(values, cmap=cmap, vmin=low, vmax=high, aspect="auto")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(f"unit (of {H})")
        ax.set_yticks([0, 7, 14, 21, 27])
        fig.colorbar(shown, ax=ax, fraction=0.04)
    probability = np.exp(logits.data[0] - logits.data[0].max())
    probability /= probability.sum()
    fig.suptitle(f"A row LSTM reading a {label}: its gates at each of the 28 steps (it answers "
                 f"{probability.argmax()}, p = {probability.max():.3f})", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    print(f"wrote {out}")


def vit_attention(model_path, images, labels, out):
    model, _ = load_model(model_path)
    with no_grad(), observe(Heard("softmax")) as heard:
        logits = model(Tensor(images))
    maps = [output for _, output in heard.seen if output.ndim == 4]      # (N, heads, 17, 17)
    layers, heads = len(maps), maps[0].shape[1]
    side = int(round((maps[0].shape[-1] - 1) ** 0.5))                   # 4x4 patches
    fig, axes = plt.subplots(len(images), 1 + layers * heads,
                             figsize=(1.25 * (1 + layers * heads), 1.45 * len(images)))
    for row, (image, label) in enumerate(zip(images, labels)):
        digit = image.reshape(28, 28)
        axes[row, 0].imshow(digit, cmap="gray_r")
        answer = logits.data[row].argmax()
        axes[row, 0].set_title(f"{label} (says {answer})", fontsize=8)
        for layer in range(layers):
            for h in range(heads):
                ax = axes[row, 1 + layer * heads + h]
                weights = maps[layer][row, h, 0, 1:].reshape(side, side)    # the class token's
                ax.imshow(digit, cmap="gray_r", alpha=0.45)
                ax.imshow(np.kron(weights, np.ones((28 // side, 28 // side))), cmap="magma",
                          alpha=0.6, vmin=0, vmax=weights.max())
                if row == 0:
                    ax.set_title(f"layer {layer + 1}\nhead {h + 1}", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Where a vision transformer's class token looks: its attention over the 16 "
                 "patches of 7x7 pixels, per layer and head (bright: more weight)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    print(f"wrote {out}")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lstm", help="a row LSTM's model.npz")
    parser.add_argument("--vit", help="a vision transformer's model.npz")
    parser.add_argument("--data-dir", default="../shared/data/mnist")
    parser.add_argument("out", help="the folder for lstm_gates.png and vit_attention.png")
    args = parser.parse_args()
    test = data.load("mnist", args.data_dir, progress=False, splits=("test",))
    images = test.normalized(test.test_images)
    labels = test.test_labels
    firsts = [int(np.flatnonzero(labels == d)[0]) for d in (3, 7, 4, 0)]
    if args.lstm:
        lstm_gates(args.lstm, images[firsts[0]], labels[firsts[0]],
                   os.path.join(args.out, "lstm_gates.png"))
    if args.vit:
        vit_attention(args.vit, images[firsts], labels[firsts],
                      os.path.join(args.out, "vit_attention.png"))


if __name__ == "__main__":
    main()

"""The gallery's attention maps: what each head of a trained names transformer attends to
while it reads a name, one panel per layer and head (rows: the position predicting the next
letter; columns: the positions it looks at; the start token is '.').

    tinygrad-mnist names --arch transformer --data-dir ../shared/data/names --out runs/names-transformer
    python examples/attention_maps.py runs/names-transformer/model.npz viz/names_attention.png
"""
import argparse

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tinygrad_mnist import Tensor, nn, no_grad  # noqa: E402
from tinygrad_mnist.names import data, models  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a names transformer's model.npz")
    parser.add_argument("out", help="the PNG to write")
    parser.add_argument("--data-dir", default="../shared/data/names")
    parser.add_argument("--name", default="isabella", help="the name to read")
    args = parser.parse_args()
    vocab = data.Vocabulary(data.read_names(args.data_dir))
    model = models.build("transformer", vocab.size, vocab.block)
    nn.load(model, args.model)
    model.eval()
    x, _ = vocab.encode([args.name])
    length = len(args.name) + 1
    maps = []
    with no_grad():
        model(Tensor(x[:, :length]), attention=maps)
    labels = ["."] + list(args.name)
    layers, heads = len(maps), maps[0].shape[1]
    fig, axes = plt.subplots(layers, heads, figsize=(2.6 * heads, 2.6 * layers))
    for i, weights in enumerate(maps):
        for h in range(heads):
            ax = axes[i, h]
            ax.imshow(weights.data[0, h], cmap="viridis", vmin=0, vmax=1)
            ax.set_xticks(range(length), labels, fontsize=7)
            ax.set_yticks(range(length), labels, fontsize=7)
            ax.set_title(f"layer {i + 1}, head {h + 1}", fontsize=8)
    fig.suptitle(f"Where each head looks while reading '{args.name}' (row: the position "
                 f"predicting the next letter)", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Pictures of a training run: learning curves, the confusion matrix, sample predictions."""
import matplotlib

matplotlib.use("Agg")                 # files only: works on machines without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..files import atomic_write  # noqa: E402


DATASET_TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}


def curves(history, path, title=None):
    """Loss and accuracy (in %) per epoch, train and test, with whole-epoch ticks, under
    `title` (the run: dataset, network, final accuracy)."""
    _save(curves_figure(history, title), path)


def loss_curves(history, path, title):
    """Train and test loss (nats per character) against the step: a character model's run."""
    fig, ax = plt.subplots(figsize=(7, 4.4))
    steps = [h["step"] for h in history]
    ax.plot(steps, [h["train_loss"] for h in history], marker="o", label="train (running)")
    ax.plot(steps, [h["test_loss"] for h in history], marker="o", label="test")
    ax.set(xlabel="step", ylabel="loss (nats per character)", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save(fig, path, dpi=110)


def _whole_epochs(ax, epochs):
    """Ticks on whole epochs only, and room around a single one (not 0.95 ... 1.05)."""
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if len(epochs) and min(epochs) == max(epochs):
        ax.set_xlim(min(epochs) - 1, max(epochs) + 1)
        ax.set_xticks([min(epochs)])


def curves_figure(history, title=None):
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4.4 if title else 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    if all("test_loss" in h for h in history):
        ax_loss.plot(epochs, [h["test_loss"] for h in history], marker="o", label="test")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    ax_acc.plot(epochs, [100 * h["train_accuracy"] for h in history], marker="o", label="train")
    ax_acc.plot(epochs, [100 * h["test_accuracy"] for h in history], marker="o", label="test")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    for ax in (ax_loss, ax_acc):
        _whole_epochs(ax, epochs)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _save(fig, path, dpi=100):
    try:
        with atomic_write(path) as f:
            fig.savefig(f, format="png", dpi=dpi)
    finally:
        plt.close(fig)


def confusion(matrix, classes, path):
    """The confusion matrix with the colour scale spent on the mistakes: the diagonal (correct
    predictions, which would dominate any scale) is drawn in grey with its counts in bold."""
    _save(confusion_figure(matrix, classes), path)


def confusion_figure(matrix, classes):
    mistakes = np.ma.masked_array(matrix, mask=np.eye(len(classes), dtype=bool))
    fig, ax = plt.subplots(figsize=(7.5, 6))
    ax.imshow(np.eye(len(classes)), cmap="Greys", vmin=0, vmax=6)      # the diagonal, in grey
    image = ax.imshow(mistakes, cmap="Reds", vmin=0, vmax=max(int(mistakes.max() or 0), 1))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="test images (mistakes)")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="predicted", ylabel="true",
           title=f"Confusion matrix (test set, {int(matrix.trace())} of {int(matrix.sum())} "
                 f"right)")
    threshold = (mistakes.max() or 0) / 2
    for i in range(len(classes)):
        for j in range(len(classes)):
            count = int(matrix[i, j])
            ax.text(j, i, str(count), ha="center", va="center", fontsize=8,
                    fontweight="bold" if i == j else "normal",
                    color="white" if i != j and count > threshold else "black")
    fig.tight_layout()
    return fig


def samples(images, labels, predictions, classes, path, columns=8):
    rows = int(np.ceil(len(images) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.4, rows * 1.6))
    for ax, image, label, pred in zip(np.ravel(axes), images, labels, predictions):
        ax.imshow(image, cmap="gray_r")
        wrong = label != pred
        ax.set_title(f"{classes[pred]}" + (f" (true {classes[label]})" if wrong else ""),
                     fontsize=8, color="red" if wrong else "black")
    for ax in np.ravel(axes):
        ax.axis("off")
    fig.suptitle("Test images: prediction, and the true class in red where it differs")
    fig.tight_layout()
    _save(fig, path)


def hardest(images, labels, answers, norms, indices, classes, total, path, columns=8):
    """Training images with the largest gradient norms, largest first: each with its index,
    its label, the model's answer (red where it differs) and its norm."""
    rows = int(np.ceil(len(indices) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.5, rows * 1.85))
    for ax, i in zip(np.ravel(axes), indices):
        ax.imshow(images[i], cmap="gray_r")
        wrong = labels[i] != answers[i]
        ax.set_title(f"#{i}  label {classes[labels[i]]}\nsays {classes[answers[i]]}, "
                     f"norm {norms[i]:.1f}", fontsize=7, color="red" if wrong else "black")
    for ax in np.ravel(axes):
        ax.axis("off")
    fig.suptitle(f"The {len(indices)} training images (of {total:,}) with the largest "
                 f"gradient norms: index, label, the model's answer (red: not the label)",
                 fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def optimizer_curves(curves, dataset, path, rates=None):
    """Validation accuracy per epoch, one line per optimizer (mean over seeds), each labelled
    with the learning rate its sweep chose."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, curve in curves.items():
        label = name if not rates or name not in rates else f"{name} (lr {rates[name]:g})"
        ax.plot(range(1, len(curve) + 1), np.asarray(curve) * 100, marker="o", label=label)
    ax.set(xlabel="epoch", ylabel="validation accuracy (%)",
           title=f"{DATASET_TITLES.get(dataset, dataset)}: learning curves per optimizer (mean "
                 f"over seeds)")
    _whole_epochs(ax, list(range(1, max(len(c) for c in curves.values()) + 1)))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save(fig, path)


def sweep_figure(groups, path):
    """Test accuracy per setting of a sweep: a bar for the mean over its seeds, each seed a
    dot on it, the best setting in orange. `groups` is [(label, [accuracy %, ...])]."""
    width = max(6.0, 1.1 * len(groups) + 2.0)
    fig, ax = plt.subplots(figsize=(min(width, 30), 4.8))
    means = [float(np.mean(accs)) for _, accs in groups]
    best = int(np.argmax(means))
    seeded = any(len(accs) > 1 for _, accs in groups)
    bars = ax.bar(range(len(groups)), means, color=["#dd8452" if i == best else "#4c72b0"
                                                    for i in range(len(groups))], alpha=0.85)
    bars[best].set_label("best setting")
    for i, (_, accs) in enumerate(groups):
        spread = np.linspace(-0.15, 0.15, len(accs)) if len(accs) > 1 else [0.0]
        ax.scatter(i + np.asarray(spread), accs, color="black", s=14, zorder=3,
                   label="one seed" if seeded and i == 0 else None)
        ax.annotate(f"{means[i]:.2f}", (i, max(accs)), xytext=(0, 7),
                    textcoords="offset points", ha="center", fontsize=8)
    everything = [a for _, accs in groups for a in accs]
    low, high = min(everything), max(everything)
    ax.set_ylim(max(0.0, low - max(1.0, (high - low) * 0.5)), min(100.0, high + max(0.5, (
        high - low) * 0.3)))
    ax.set_xticks(range(len(groups)), [label for label, _ in groups], fontsize=8)
    ax.set_ylabel("test accuracy %")
    counts = sorted({len(accs) for _, accs in groups})
    seeds = (f", {counts[0]} seeds each (bar and number: their mean)" if seeded and
             len(counts) == 1 else ", bars: the mean over seeds" if seeded else "")
    ax.set_title(f"Sweep: {len(groups)} settings{seeds}", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    _save(fig, path, dpi=110)

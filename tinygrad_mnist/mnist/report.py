"""Pictures of a training run: learning curves, the confusion matrix, sample predictions."""
import matplotlib

matplotlib.use("Agg")                 # files only: works on machines without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..files import atomic_write  # noqa: E402


def curves(history, path):
    """Loss and accuracy (in %) per epoch, train and test, with whole-epoch ticks."""
    _save(curves_figure(history), path)


def curves_figure(history):
    from matplotlib.ticker import MaxNLocator
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    if all("test_loss" in h for h in history):
        ax_loss.plot(epochs, [h["test_loss"] for h in history], marker="o", label="test")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    ax_acc.plot(epochs, [100 * h["train_accuracy"] for h in history], marker="o", label="train")
    ax_acc.plot(epochs, [100 * h["test_accuracy"] for h in history], marker="o", label="test")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
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


def optimizer_curves(curves, dataset, path):
    """Validation accuracy per epoch, one line per optimizer (mean over seeds)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, curve in curves.items():
        ax.plot(range(1, len(curve) + 1), np.asarray(curve) * 100, marker="o", label=name)
    ax.set(xlabel="epoch", ylabel="validation accuracy (%)",
           title=f"{dataset}: learning curves per optimizer (mean over seeds)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save(fig, path)

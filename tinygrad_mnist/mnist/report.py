"""Pictures of a training run: learning curves, the confusion matrix, sample predictions."""
import matplotlib

matplotlib.use("Agg")                 # files only: works on machines without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def curves(history, path):
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o")
    ax_loss.set(xlabel="epoch", ylabel="train loss", title="Loss")
    ax_acc.plot(epochs, [h["train_accuracy"] for h in history], marker="o", label="train")
    ax_acc.plot(epochs, [h["test_accuracy"] for h in history], marker="o", label="test")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    ax_acc.legend()
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def confusion(matrix, classes, path):
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.imshow(np.log1p(matrix), cmap="Blues")       # log scale: the off-diagonal stays visible
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix (test set)")
    threshold = matrix.max() / 2
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if matrix[i, j] > threshold else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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
    fig.savefig(path, dpi=100)
    plt.close(fig)


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
    fig.savefig(path, dpi=100)
    plt.close(fig)

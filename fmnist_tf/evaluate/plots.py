"""PNG plots for a run: confusion matrix, training curves, misclassified images."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay  # noqa: E402

from fmnist_tf.fileio import atomic_save_figure  # noqa: E402


def save_confusion_matrix(y_true, y_pred, class_names, path):
    fig, ax = plt.subplots(figsize=(9, 8))
    ConfusionMatrixDisplay.from_predictions(
        y_true, y_pred, labels=np.arange(len(class_names)), display_labels=class_names,
        xticks_rotation=45, cmap="Blues", colorbar=False, ax=ax)
    ax.set_title("Test confusion matrix (rows: true class)")
    atomic_save_figure(fig, path)
    plt.close(fig)


CURVES = ("loss", "accuracy", "knn_accuracy", "precision", "recall", "f1")


def save_training_curves(history_rows, class_names, path):
    """Train vs validation curves, validation class-wise accuracy, LR and seconds per epoch."""
    epochs = [int(row["epoch"]) + 1 for row in history_rows]

    def column(name):
        return [float(row[name]) if row.get(name) not in (None, "") else np.nan for row in history_rows]

    logged = [name for name in CURVES if any(row.get(key) for row in history_rows
                                            for key in (name, f"val_{name}"))]
    fig, axes = plt.subplots(2, 4, figsize=(18, 8))
    for ax, name in zip(axes.flat, logged[:5]):
        for key, label in ((name, "train"), (f"val_{name}", "validation")):
            if any(row.get(key) for row in history_rows):
                ax.plot(epochs, column(key), marker="o", label=label)
        ax.set_title(f"{name} (weighted)" if name in ("precision", "recall", "f1") else name)
        ax.set_xlabel("epoch")
        ax.legend()
    ax = axes.flat[5]
    for index, name in enumerate(class_names):
        ax.plot(epochs, column(f"val_acc_class{index}"), label=name)
    ax.set_title("validation accuracy per class")
    ax.set_xlabel("epoch")
    if len(class_names) <= 20:  # a longer legend would hide the plot
        ax.legend(fontsize=7)
    rates = np.asarray(column("learning_rate"))
    axes.flat[6].plot(epochs, rates, marker="o")
    positive = rates[rates > 0]
    if len(positive) == len(rates):
        axes.flat[6].set_yscale("log")
    elif len(positive):  # a cosine schedule ends at 0, which a log axis would drop
        axes.flat[6].set_yscale("symlog", linthresh=positive.min())
    axes.flat[6].set_title("learning rate")
    axes.flat[7].bar(epochs, column("epoch_seconds"))
    axes.flat[7].set_title("seconds per epoch (training)")
    for ax in axes.flat[6:]:
        ax.set_xlabel("epoch")
    fig.tight_layout()
    atomic_save_figure(fig, path)
    plt.close(fig)


def save_misclassified(images, y_true, probabilities, class_names, path, limit=36):
    """A grid of the most confidently wrong test images, titled `true -> predicted (p)`."""
    y_pred = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(y_pred != y_true)
    wrong = wrong[np.argsort(-probabilities[wrong, y_pred[wrong]])][:limit]
    cols = 6
    rows = max(1, int(np.ceil(len(wrong) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.2, rows * 2.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, index in zip(axes.flat, wrong):
        ax.imshow(images[index], cmap="gray")
        ax.set_title(f"{class_names[y_true[index]]}\n-> {class_names[y_pred[index]]} "
                     f"({probabilities[index, y_pred[index]]:.2f})", fontsize=8)
    fig.suptitle(f"Most confident mistakes ({len(np.flatnonzero(y_pred != y_true))} wrong in total)")
    atomic_save_figure(fig, path)
    plt.close(fig)

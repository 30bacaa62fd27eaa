"""`fmnist-tf evaluate`: test-set scores, a per-class table, metrics.json and plots."""

import csv
import io
from pathlib import Path

import numpy as np
from sklearn.metrics import precision_recall_fscore_support

from fmnist_tf.data.pipeline import to_model_input
from fmnist_tf.data.prepare import split_indices
from fmnist_tf.data.sources import load_labelled_split
from fmnist_tf.evaluate.plots import save_confusion_matrix, save_misclassified, save_training_curves
from fmnist_tf.evaluate.scores import classification_scores
from fmnist_tf.errors import FmnistError
from fmnist_tf.fileio import atomic_write_json, atomic_write_text
from fmnist_tf.modelio import (class_names_for, is_embedding_model, load_model, resolve_model_path,
                               run_config_value, run_dir_of)
from fmnist_tf.train.callbacks import read_history
from fmnist_tf.train.fit import recorded_source


def per_class_table(y_true, y_pred, class_names):
    labels = np.arange(len(class_names))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    return [{"class": name, "accuracy": float(r), "precision": float(p), "recall": float(r),
             "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support)]


def format_report(scores, table):
    lines = [f"{'class':<14}{'accuracy':>10}{'precision':>11}{'recall':>9}{'f1':>8}{'support':>9}"]
    lines += [f"{row['class']:<14}{row['accuracy']:>10.4f}{row['precision']:>11.4f}{row['recall']:>9.4f}"
              f"{row['f1']:>8.4f}{row['support']:>9d}" for row in table]
    lines.append(f"{'weighted':<14}{scores['accuracy']:>10.4f}{scores['precision']:>11.4f}"
                 f"{scores['recall']:>9.4f}{scores['f1']:>8.4f}{sum(r['support'] for r in table):>9d}")
    return "\n".join(lines)


def save_test_predictions(labels, predicted, class_names, path):
    """One line per test image (its index in the test split, true and predicted class), so that two
    models can be compared image by image (bench/paired_test.py)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["index", "label", "predicted", "label_name", "predicted_name"])
    writer.writerows([i, t, p, class_names[t], class_names[p]] for i, (t, p) in enumerate(zip(labels, predicted)))
    atomic_write_text(path, text.getvalue())


def read_test_predictions(path):
    """(labels, predicted) int arrays from a `save_test_predictions` file."""
    try:
        table = np.loadtxt(path, delimiter=",", skiprows=1, usecols=(1, 2), dtype=np.int64, ndmin=2)
    except (OSError, ValueError) as exc:
        raise FmnistError(f"{path}: not a test_predictions.csv written by fmnist-tf evaluate ({exc})") from exc
    return table[:, 0], table[:, 1]


def save_evaluation_cam_grid(model, images, labels, class_names, path):
    """plots/cam_grid.png: CAMs of the first test images. A model with no feature map to explain
    gets a printed note instead; the rest of the report does not depend on it."""
    from fmnist_tf.cam import cam_grid

    try:
        return cam_grid(model, images, labels, path, class_names=class_names)
    except FmnistError as exc:
        print(f"no CAM grid: {exc}")
        return None


def model_outputs(model, images, batch_size, flip_tta=False):
    """`model`'s outputs for uint8 `images`; with `flip_tta`, the mean of the outputs for each image
    and its mirror image (test-time augmentation; only for data whose classes survive a horizontal
    flip, as Fashion-MNIST's do). An embedding mean is put back on the unit sphere."""
    inputs = to_model_input(images)
    outputs = model.predict(inputs, batch_size=batch_size, verbose=0)
    if not flip_tta:
        return outputs
    outputs = (outputs + model.predict(inputs[:, :, ::-1], batch_size=batch_size, verbose=0)) / 2
    if is_embedding_model(model):
        outputs /= np.maximum(np.linalg.norm(outputs, axis=1, keepdims=True), 1e-12)
    return outputs


def evaluate(run_or_model, *, data=None, out=None, batch_size=256, flip_tta=False):
    """Score a model on the test split (of the run's own data source unless `data` is given). Writes
    metrics.json and plots/ into the run directory (or `out`, or `<model>-eval/` beside a bare model
    file). An embedding model is scored by kNN against the training split's embeddings. `flip_tta`
    averages each prediction with that of the mirror image (gallery embeddings too). Returns the
    metrics dict."""
    model_path = resolve_model_path(run_or_model)
    run_dir = run_dir_of(model_path)
    out_dir = Path(out) if out else run_dir or model_path.with_name(f"{model_path.stem}-eval")
    class_names = class_names_for(model_path)
    model = load_model(model_path)
    data = data or (recorded_source(run_dir) if run_dir else None)
    test = load_labelled_split("test", data)
    if len(test.class_names) != len(class_names):
        raise FmnistError(f"the test data has {len(test.class_names)} classes, the model was trained on "
                          f"{len(class_names)}; pass --data with the model's own dataset")
    images, labels = test.images, test.labels
    plots = out_dir / "plots"
    if is_embedding_model(model):
        k = int(run_config_value(model_path, "knn_k", 13))
        gallery = load_labelled_split("train", data)
        hold_out = (run_config_value(model_path, "val_fraction", None), run_config_value(model_path, "seed", None))
        predicted, extra = knn_test_predictions(model, gallery, images, labels, k, batch_size,
                                                class_names, plots / "tsne.png", flip_tta, hold_out)
        probabilities = None
    else:
        probabilities = model_outputs(model, images, batch_size, flip_tta)
        predicted, extra = probabilities.argmax(axis=1), {}
    scores = classification_scores(labels, predicted, len(class_names))
    table = per_class_table(labels, predicted, class_names)
    metrics = {"model": str(model_path), "test_size": int(len(labels)), "flip_tta": flip_tta, **extra,
               **{key: scores[key] for key in ("accuracy", "precision", "recall", "f1")}, "per_class": table}
    how = (f"kNN (k={extra['knn_k']}) " if extra else "") + ("flip-TTA " if flip_tta else "")
    print(f"{model_path}: test {how}accuracy {scores['accuracy']:.4f}, weighted precision "
          f"{scores['precision']:.4f}, recall {scores['recall']:.4f}, F1 {scores['f1']:.4f}")
    if "fit_split_gallery_accuracy" in extra:
        print(f"kNN accuracy against only the {extra['fit_split_gallery_size']:,} images the run trained on "
              f"(validation hold-out left out of the gallery, as a head trained --from it sees): "
              f"{extra['fit_split_gallery_accuracy']:.4f}")
    print(format_report(scores, table))

    save_confusion_matrix(labels, predicted, class_names, plots / "confusion_matrix.png")
    if probabilities is not None:
        save_misclassified(images, labels, probabilities, class_names, plots / "misclassified.png")
    history = read_history(run_dir / "history.csv") if run_dir else []
    if history:
        save_training_curves(history, class_names, plots / "training_curves.png")
    atomic_write_json(out_dir / "metrics.json", metrics)
    save_test_predictions(labels, predicted, class_names, out_dir / "test_predictions.csv")
    if probabilities is not None:
        save_evaluation_cam_grid(model, images, labels, class_names, plots / "cam_grid.png")  # last: optional
    print(f"saved {out_dir / 'metrics.json'}, {out_dir / 'test_predictions.csv'} and plots in {plots}")
    return metrics


def knn_test_predictions(model, gallery, images, labels, k, batch_size, class_names, tsne_path, flip_tta,
                         hold_out=(None, None)):
    """kNN class predictions for the test images against the training split's embeddings, plus the
    t-SNE plot of the test embeddings. Returns (predictions, extra metrics).

    `hold_out` = the run's (val_fraction, seed), or Nones for a bare model file. With it, the extra
    metrics also hold the kNN accuracy against only the images the run trained on (its validation
    hold-out left out of the gallery): the same data a head trained `--from` the run learns from."""
    from fmnist_tf.evaluate.embedding import knn_predict, save_tsne_plot

    gallery_embeddings = model_outputs(model, gallery.images, batch_size, flip_tta)
    test_embeddings = model_outputs(model, images, batch_size, flip_tta)
    predicted = knn_predict(gallery_embeddings, gallery.labels, test_embeddings, k=k)
    save_tsne_plot(test_embeddings, labels, class_names, tsne_path)
    extra = {"knn_k": k, "gallery_size": int(len(gallery.labels))}
    val_fraction, seed = hold_out
    if val_fraction is not None and seed is not None:
        fit_indices, _ = split_indices(gallery.labels, val_fraction, seed)
        fit_predicted = knn_predict(gallery_embeddings[fit_indices], gallery.labels[fit_indices], test_embeddings, k=k)
        extra.update(fit_split_gallery_size=int(len(fit_indices)),
                     fit_split_gallery_accuracy=float(np.mean(fit_predicted == labels)))
    return predicted, extra

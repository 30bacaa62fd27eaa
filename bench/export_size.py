"""Export one model to every format; report size on disk, batch-1 latency and full test accuracy.

    FMNIST_DATA_DIR=../shared/data/fashion-mnist python bench/export_size.py [RUN_DIR_OR_KERAS]

The default model is the newest runs/bench-deep-*. Exports go to a temporary folder, never into the
run directory. The Keras row is the reference: the int8 row's accuracy change is quantisation's cost.
Writes bench/results/export_size.json.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine  # noqa: E402

from fmnist_tf.data.fashion_mnist import load_split  # noqa: E402
from fmnist_tf.data.pipeline import to_model_input  # noqa: E402
from fmnist_tf.errors import FmnistError  # noqa: E402
from fmnist_tf.export import (check_request, default_export_path, export_model, format_size,  # noqa: E402
                              median_latency_ms)
from fmnist_tf.fileio import atomic_write_json  # noqa: E402
from fmnist_tf.inference import open_classifier  # noqa: E402
from fmnist_tf.modelio import resolve_model_path  # noqa: E402

VARIANTS = (("savedmodel", None), ("tflite", None), ("tflite", "int8"), ("onnx", None))


def newest_deep_run():
    runs = sorted(Path("runs").glob("bench-deep-*"))  # names end in a sortable timestamp
    if not runs:
        sys.exit("no runs/bench-deep-* found: pass a run directory or .keras file")
    return runs[-1]


def available(fmt, quantize):
    try:
        check_request(fmt, quantize)
        return True
    except FmnistError:  # onnx without tf2onnx/onnxruntime: skip that row, keep the others
        return False


def predicted_classes(classifier, images, batch=500):
    # a fixed batch size: a LiteRT interpreter reallocates whenever it changes
    return np.concatenate([classifier(images[i:i + batch]).argmax(axis=1)
                           for i in range(0, len(images), batch)])


def test_scorer(images, labels, keras_predicted):
    """classifier -> test accuracy, and agreement with the Keras model's predicted classes
    (an unchanged accuracy can hide predictions that flipped both ways)."""
    def score(classifier):
        predicted = predicted_classes(classifier, images)
        return {"test_accuracy": float(np.mean(predicted == labels)),
                "test_agreement_with_keras": float(np.mean(predicted == keras_predicted))}
    return score


def export_row(model_path, fmt, quantize, folder, data, score):
    name = default_export_path(model_path, fmt, quantize).name
    result = export_model(model_path, fmt, quantize=quantize, data=data, out=folder / name)
    return {**result, **score(open_classifier(result["path"]))}


def format_table(rows, keras_accuracy):
    lines = [f"{'artifact':<14}{'size':>9}{'ms/image':>10}{'test acc':>10}{'Δ acc':>9}{'agree':>8}"
             f"{'max |Δprob|':>13}"]
    for row in rows:
        name = row["format"] + (f" {row['quantize']}" if row["quantize"] else "")
        diff = f"{row['max_abs_diff']:.1e}" if "max_abs_diff" in row else "-"
        lines.append(f"{name:<14}{format_size(row['bytes']):>9}{row['latency_ms_per_image']:>10.3f}"
                     f"{row['test_accuracy']:>10.4f}{row['test_accuracy'] - keras_accuracy:>+9.4f}"
                     f"{row['test_agreement_with_keras']:>8.2%}{diff:>13}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?",
                        help="run directory or .keras file (default: newest runs/bench-deep-*)")
    parser.add_argument("--data", help="Fashion-MNIST folder (default: $FMNIST_DATA_DIR)")
    parser.add_argument("--results", default="bench/results", help="folder for the JSON results")
    args = parser.parse_args()
    model_path = resolve_model_path(args.model or newest_deep_run())
    test_images, test_labels = load_split("test", args.data)
    images = to_model_input(test_images).numpy()

    keras = open_classifier(model_path, backend="keras")  # the Keras model itself, traced
    score = test_scorer(images, test_labels, predicted_classes(keras, images))
    # the .keras file also holds the optimizer state, hence about twice the float exports
    rows = [{"format": "keras", "quantize": None, "bytes": model_path.stat().st_size,
             "latency_ms_per_image": median_latency_ms(keras, images[:1]), **score(keras)}]
    with tempfile.TemporaryDirectory(prefix="export-bench-") as folder:
        rows += [export_row(model_path, fmt, quantize, Path(folder), args.data, score)
                 for fmt, quantize in VARIANTS if available(fmt, quantize)]
    for row in rows:
        row.pop("path", None)  # a deleted temporary path
    result = {"model": str(model_path), "test_size": int(len(test_labels)), "artifacts": rows,
              "machine": describe_machine()}
    atomic_write_json(Path(args.results) / "export_size.json", result)
    print(format_table(rows, rows[0]["test_accuracy"]))
    print(json.dumps(result["machine"]))


if __name__ == "__main__":
    main()

"""Memory of a training process: how many copies of the dataset it holds, ours vs the plain way.

    FMNIST_DATA_DIR=../shared/data/fashion-mnist python bench/train_memory.py baseline --epochs 1

Each path trains the same config for `--epochs` in a fresh child process, twice: on the first
`--small` training images, and on the 60,000 training images repeated `--repeat` times (a larger
dataset lifts its copies above this measurement's noise of ~20-30 MB). The child notes its resident
memory after importing TensorFlow (the floor), when training starts (data loaded, pipeline and model
built) and at its peak. The growth of each from the small to the large training set, divided by the
growth of the uint8 images (784 bytes each), is the number of copies of the dataset the process
holds then; what does not grow with the data (TensorFlow's runtime, the model, thread pools) cancels
out.

  plain   the common Keras way: float32 numpy arrays in [0, 1] and one-hot labels into
          model.fit(validation_data=...)                                   <- baseline for "ours"
  ours    fmnist_tf.train.fit.train: the whole `fmnist-tf train` (pipeline, validation, run dir)

Writes bench/results/train_memory-<model>.json.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine  # noqa: E402

PATHS = ("plain", "ours")
MIB = 1024 * 1024


def resident_bytes():
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class ResidentAtStart:
    """Resident memory when training starts: the data is loaded, the pipeline and model are built."""

    def __init__(self):
        import keras

        class Callback(keras.callbacks.Callback):
            def on_train_begin(inner, logs=None):  # noqa: N805
                self.value = self.value or resident_bytes()  # the first stage's start

        self.value, self.callback = None, Callback()


def train_plain(config, data, at_start):
    import keras
    import numpy as np

    from fmnist_tf.data.prepare import split_train_val, standardization_stats
    from fmnist_tf.data.sources import load_labelled_split
    from fmnist_tf.models.registry import create_model

    dataset = load_labelled_split("train", data)
    (x_train, y_train), (x_val, y_val) = split_train_val(dataset.images, dataset.labels, config.val_fraction,
                                                         config.seed)
    mean, variance = standardization_stats(x_train)
    to_float = lambda images: images.astype(np.float32)[..., None] / 255.0  # noqa: E731
    model = create_model(config.model, num_classes=10, mean=mean, variance=variance, width=config.width,
                         dropout=config.dropout)
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    model.fit(to_float(x_train), keras.utils.to_categorical(y_train, 10), batch_size=config.batch_size,
              epochs=config.epochs, validation_data=(to_float(x_val), keras.utils.to_categorical(y_val, 10)),
              verbose=2, callbacks=[at_start.callback])


def train_ours(config, data, at_start):
    from fmnist_tf.train.fit import train

    with tempfile.TemporaryDirectory() as run_dir:
        train(config, data=data, out=Path(run_dir) / "run", verbose=2, callbacks=[at_start.callback])


def child(path, name, epochs, data):
    import tensorflow as tf  # noqa: F401  (the floor includes TensorFlow and Keras)

    from fmnist_tf.config import load_config

    config = load_config(name, {"epochs": epochs})
    floor, at_start = resident_bytes(), ResidentAtStart()
    {"plain": train_plain, "ours": train_ours}[path](config, data, at_start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print("MEMORY " + json.dumps({"floor": floor, "start": at_start.value, "peak": peak}), flush=True)


def measure(path, name, epochs, data):
    command = [sys.executable, __file__, name, "--epochs", str(epochs), "--child", path, "--data", str(data)]
    completed = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("MEMORY ")]
    if completed.returncode or not lines:
        raise SystemExit(f"{path} failed (exit {completed.returncode}):\n{completed.stderr[-3000:]}")
    return json.loads(lines[-1][len("MEMORY "):])


def write_datasets(source, folder, small, repeat):
    """IDX folders `folder`/small (the first `small` training images) and `folder`/large (the training
    set `repeat` times), each with 100 test images; returns the large set's image count."""
    import numpy as np

    from fmnist_tf.data.fashion_mnist import load_split, write_idx_dataset

    train_images, train_labels = load_split("train", source)
    test = tuple(array[:100] for array in load_split("test", source))
    write_idx_dataset(folder / "small", (train_images[:small], train_labels[:small]), test)
    large = (np.concatenate([train_images] * repeat), np.concatenate([train_labels] * repeat))
    write_idx_dataset(folder / "large", large, test)
    return len(large[1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="config name, e.g. baseline")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--small", type=int, default=12000, help="training images of the small run")
    parser.add_argument("--repeat", type=int, default=3, help="copies of the training set in the large run")
    parser.add_argument("--data", default=os.environ.get("FMNIST_DATA_DIR"),
                        help="Fashion-MNIST folder (default: $FMNIST_DATA_DIR)")
    parser.add_argument("--results", default="bench/results", help="folder for the JSON results")
    parser.add_argument("--child", choices=PATHS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.model, args.epochs, args.data)
    if not args.data:
        raise SystemExit("name the Fashion-MNIST folder with --data or FMNIST_DATA_DIR")

    from fmnist_tf.fileio import atomic_write_json

    result = {"model": args.model, "epochs": args.epochs, "small_images": args.small, "paths": {},
              "machine": describe_machine()}
    with tempfile.TemporaryDirectory() as scratch:
        large_images = write_datasets(args.data, Path(scratch), args.small, args.repeat)
        result["large_images"] = large_images
        added_bytes = (large_images - args.small) * 28 * 28
        for path in PATHS:
            small = measure(path, args.model, args.epochs, Path(scratch) / "small")
            large = measure(path, args.model, args.epochs, Path(scratch) / "large")
            result["paths"][path] = {
                **{f"{when}_above_floor_mib": {size: round((run[when] - run["floor"]) / MIB, 1)
                                               for size, run in (("small", small), ("large", large))}
                   for when in ("start", "peak")},
                **{f"dataset_copies_at_{when}": round((large[when] - small[when]) / added_bytes, 2)
                   for when in ("start", "peak")},
            }
            print(f"{path}: {json.dumps(result['paths'][path])}", flush=True)
    for when in ("start", "peak"):
        plain, ours = (result["paths"][p][f"dataset_copies_at_{when}"] for p in PATHS)
        result[f"ratio_copies_at_{when}_ours_vs_plain"] = round(ours / plain, 3)
    atomic_write_json(Path(args.results) / f"train_memory-{args.model}.json", result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Training throughput (images/s and achieved GFLOP/s) of our tf.data pipeline vs the plain ways.

    FMNIST_DATA_DIR=../shared/data/fashion-mnist python bench/train_throughput.py baseline deep
    FMNIST_DATA_DIR=../shared/data/fashion-mnist python bench/train_throughput.py vgg_rescam \
        --set width=0.25 --paths plain ours --results bench/results/train_throughput-vgg_rescam-w0.25.json

For each model, five input paths feed the same compiled model, measured in rounds (A B C D E, A B C D E,
...) so machine noise hits every path alike; the median per path is reported with its ratio:
  plain        numpy arrays straight into model.fit (no augmentation)      <- baseline for "ours"
  ours         fmnist_tf.data.pipeline.make_dataset (no augmentation)
  pydataset    keras.utils.PyDataset calling the same augmentation layers per batch in Python
  generator    a Python generator augmenting image by image with numpy (flip, shift, erasing),
               the per-sample way of the reference projects' loaders
  ours+aug     make_dataset with augmentation inside tf.data               <- vs pydataset, generator
A path's rate is timed from `on_train_begin` to `on_train_end`, because after that a `model.fit`
call can stall while TensorFlow deletes an autotuned tf.data iterator (about 2 s at the end of some
calls here, none with autotuning off), which landed at random on one round or another and halved it.
A training run pays that once per epoch at most (the plain, PyDataset and generator paths go through
Keras' own autotuned tf.data), and ours not at all (see fmnist_tf/data/pipeline.py).

Loader rates: on this CPU the model step, not the input, sets every path's training speed (see the
README), so the augmenting loaders are also timed alone, without a model (`--loaders`): the images
per second that each can deliver, i.e. the training speed it would cap on a device that trains
faster (a GPU). Each is iterated eagerly, batch by batch, for LOADER_EPOCHS epochs of `--steps`
batches after one untimed batch (ours reshuffles between its epochs, as in training).
Every round's rate is kept in the results file ("rounds_images_per_second"), with the medians.
Writes bench/results/train_throughput.json.
"""

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import keras
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import alternating_rounds, describe_machine, parse_settings  # noqa: E402

from fmnist_tf.config import load_config, make_config  # noqa: E402
from fmnist_tf.data.fashion_mnist import load_split  # noqa: E402
from fmnist_tf.data.pipeline import make_dataset  # noqa: E402
from fmnist_tf.data.prepare import augmentation_layers, standardization_stats  # noqa: E402
from fmnist_tf.fileio import atomic_write_json  # noqa: E402
from fmnist_tf.models import create_model  # noqa: E402
from fmnist_tf.models.flops import training_flops  # noqa: E402
from fmnist_tf.train.recipe import compile_classifier, model_settings  # noqa: E402

PATHS = ("plain", "ours", "pydataset", "generator", "ours+aug")
LOADER_EPOCHS = 10  # ~1 s or more per loader and round: 20 batches alone took ours only 60-130 ms


class AugmentingPyDataset(keras.utils.PyDataset):
    """The common plain-Keras way to augment: a Python loader calling the layers batch by batch."""

    def __init__(self, images, labels, batch_size, augment):
        super().__init__()
        self.images, self.labels, self.batch_size, self.augment = images, labels, batch_size, augment

    def __len__(self):
        return len(self.labels) // self.batch_size

    def __getitem__(self, index):
        part = slice(index * self.batch_size, (index + 1) * self.batch_size)
        x = self.images[part][..., None].astype("float32") / 255.0
        return np.asarray(self.augment(x, training=True)), np.eye(10, dtype="float32")[self.labels[part]]


def per_image_augmenting_generator(images, labels, batch_size, config, seed=0):
    """Endless batches, each image flipped, shifted and erased on its own in numpy."""
    rng = np.random.default_rng(seed)
    size = images.shape[1]
    max_shift = int(round(config.translate * size))
    while True:
        order = rng.permutation(len(labels))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            batch = np.empty((batch_size, size, size, 1), np.float32)
            for row, index in enumerate(order[start:start + batch_size]):
                image = images[index].astype(np.float32) / 255.0
                if config.flip and rng.random() < 0.5:
                    image = image[:, ::-1]
                dy, dx = rng.integers(-max_shift, max_shift + 1, size=2)
                image = np.pad(image, max_shift)[max_shift + dy:max_shift + dy + size,
                                                 max_shift + dx:max_shift + dx + size]
                if rng.random() < config.erasing:
                    area, aspect = rng.uniform(0.02, 0.33) * size * size, rng.uniform(0.3, 3.3)
                    height = min(size, int(np.sqrt(area * aspect)))
                    width = min(size, int(np.sqrt(area / aspect)))
                    top, left = rng.integers(0, size - height + 1), rng.integers(0, size - width + 1)
                    image = image.copy()
                    image[top:top + height, left:left + width] = rng.random((height, width))
                batch[row, ..., 0] = image
            yield batch, np.eye(10, dtype=np.float32)[labels[order[start:start + batch_size]]]


class TrainingClock(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_train_end(self, logs=None):
        self.seconds = time.perf_counter() - self.start


def images_per_second(model, fit_source, count, fit_kwargs):
    clock = TrainingClock()
    model.fit(fit_source, epochs=1, verbose=0, callbacks=[clock], **fit_kwargs)
    return count / clock.seconds


def loader_images_per_second(batches, steps, batch_size):
    """Images/s that an iterator of batches delivers alone (the first batch, setup, is not timed)."""
    iterator = iter(batches)
    next(iterator)
    start = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    return steps * batch_size / (time.perf_counter() - start)


def measure(name, images, labels, steps, rounds, settings=None, chosen_paths=PATHS, loaders=False):
    config = load_config(name, settings)
    batch = config.batch_size
    count = steps * batch
    x, y = images[:count], labels[:count]
    mean, variance = standardization_stats(x)
    model = create_model(config.model, mean=mean, variance=variance, width=config.width, dropout=config.dropout,
                         **model_settings(config))
    compile_classifier(model, config, steps, 10)
    augment_config = make_config({"augment": True}, base=config)
    augment = augmentation_layers(augment_config, seed=0)
    x_float, y_onehot = x[..., None].astype("float32") / 255.0, np.eye(10, dtype="float32")[y]
    paths = {
        "plain": (x_float, {"batch_size": batch, "shuffle": True, "y": y_onehot}),
        "ours": (make_dataset(x, y, 10, batch, training=True), {"shuffle": False}),
        "pydataset": (AugmentingPyDataset(x, y, batch, augment), {"shuffle": True}),
        "generator": (per_image_augmenting_generator(x, y, batch, augment_config), {"steps_per_epoch": steps}),
        "ours+aug": (make_dataset(x, y, 10, batch, training=True, augment=augment), {"shuffle": False}),
    }
    measures = {path: (lambda source=source, kwargs=kwargs: images_per_second(model, source, count, kwargs))
                for path, (source, kwargs) in paths.items() if path in chosen_paths}
    if loaders:
        # the very sources that feed model.fit above; the generator is endless, tf.data restarts
        pydataset = paths["pydataset"][0]
        loader_sources = {
            "pydataset": lambda: (pydataset[i % len(pydataset)] for i in itertools.count()),
            "generator": lambda: paths["generator"][0],
            "ours+aug": lambda: paths["ours+aug"][0].repeat(),
        }
        measures.update({f"loader {path}": (lambda make=make: loader_images_per_second(make(), LOADER_EPOCHS * steps,
                                                                                       batch))
                         for path, make in loader_sources.items()})
    every_round, median = alternating_rounds(measures, rounds, label=f"{name} ")
    flops = training_flops(model)
    ratios = {"ratio_ours_vs_plain": ("ours", "plain"), "ratio_ours_aug_vs_pydataset_aug": ("ours+aug", "pydataset"),
              "ratio_ours_aug_vs_generator_aug": ("ours+aug", "generator"), "augmentation_cost": ("ours+aug", "ours"),
              "loader_ratio_ours_aug_vs_pydataset_aug": ("loader ours+aug", "loader pydataset"),
              "loader_ratio_ours_aug_vs_generator_aug": ("loader ours+aug", "loader generator")}
    return {
        "config": name, "settings": settings or {}, "parameters": model.count_params(), "batch_size": batch,
        "images_per_round": count, "rounds": rounds, "training_mflops_per_image": round(flops / 1e6, 2),
        "images_per_second": {p: round(v, 1) for p, v in median.items()},
        "rounds_images_per_second": {p: [round(v, 1) for v in values] for p, values in every_round.items()},
        "gflops_per_second": {p: round(v * flops / 1e9, 1) for p, v in median.items() if p in PATHS},
        **{key: round(median[a] / median[b], 3) for key, (a, b) in ratios.items() if a in median and b in median},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--data", help="Fashion-MNIST folder (default: $FMNIST_DATA_DIR)")
    parser.add_argument("--steps", type=int, default=40, help="training steps per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides for every model, e.g. width=0.25 batch_size=64")
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS), help="input paths to time")
    parser.add_argument("--loaders", action="store_true",
                        help="also time the augmenting loaders alone, without a model (see above)")
    parser.add_argument("--results", default="bench/results/train_throughput.json")
    args = parser.parse_args()
    images, labels = load_split("train", args.data)
    results = {"machine": describe_machine(),
               "models": [measure(name, images, labels, args.steps, args.rounds, parse_settings(args.set), args.paths,
                                  args.loaders)
                          for name in args.models]}
    atomic_write_json(args.results, results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

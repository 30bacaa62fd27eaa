"""Training throughput with our fused BatchNormalization against Keras' own, side by side.

    FMNIST_DATA_DIR=../shared/data/fashion-mnist python bench/batchnorm_throughput.py baseline deep
    FMNIST_DATA_DIR=../shared/data/fashion-mnist python bench/batchnorm_throughput.py vgg_rescam \
        --set width=0.125 batch_size=128 --results bench/results/batchnorm_throughput-vgg_rescam.json

Each model is built as the registry builds it (fmnist_tf.models.batchnorm.FusedBatchNormalization),
then copied with every one of those layers replaced by keras.layers.BatchNormalization: the plain-Keras
way, same weights, same config. Both train on the same tf.data batches (our pipeline, no augmentation)
in alternating rounds, timed from `on_train_begin` to `on_train_end` (see bench/train_throughput.py);
the median per variant is reported with the ratio and the achieved GFLOP/s.
Writes bench/results/batchnorm_throughput.json.
"""

import argparse
import json
import sys
from pathlib import Path

import keras

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import alternating_rounds, describe_machine, parse_settings  # noqa: E402
from train_throughput import images_per_second  # noqa: E402

from fmnist_tf.config import load_config  # noqa: E402
from fmnist_tf.data.fashion_mnist import load_split  # noqa: E402
from fmnist_tf.data.pipeline import make_dataset  # noqa: E402
from fmnist_tf.data.prepare import standardization_stats  # noqa: E402
from fmnist_tf.fileio import atomic_write_json  # noqa: E402
from fmnist_tf.models import create_model  # noqa: E402
from fmnist_tf.models.batchnorm import FusedBatchNormalization  # noqa: E402
from fmnist_tf.models.flops import training_flops  # noqa: E402
from fmnist_tf.train.recipe import compile_classifier, model_settings  # noqa: E402


def with_keras_batchnorm(model):
    """A copy of `model` (same weights) whose fused BatchNormalization layers are Keras' own."""
    def swap(layer):
        kind = keras.layers.BatchNormalization if isinstance(layer, FusedBatchNormalization) else type(layer)
        return kind.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=swap)
    copy.set_weights(model.get_weights())
    return copy


def measure(name, images, labels, steps, rounds, settings=None):
    config = load_config(name, settings)
    count = steps * config.batch_size
    x, y = images[:count], labels[:count]
    mean, variance = standardization_stats(x)
    fused = create_model(config.model, mean=mean, variance=variance, width=config.width, dropout=config.dropout,
                         **model_settings(config))
    models = {"fused": fused, "keras": with_keras_batchnorm(fused)}
    swapped = sum(isinstance(layer, FusedBatchNormalization) for layer in fused.layers)
    batches = make_dataset(x, y, 10, config.batch_size, training=True)
    for model in models.values():
        compile_classifier(model, config, steps, 10)
    measures = {variant: (lambda model=model: images_per_second(model, batches, count, {"shuffle": False}))
                for variant, model in models.items()}
    every_round, median = alternating_rounds(measures, rounds, label=f"{name} ")
    flops = training_flops(fused)
    return {
        "config": name, "settings": settings or {}, "batchnorm_layers": swapped, "batch_size": config.batch_size,
        "images_per_round": count, "rounds": rounds, "training_mflops_per_image": round(flops / 1e6, 2),
        "images_per_second": {v: round(rate, 1) for v, rate in median.items()},
        "rounds_images_per_second": {v: [round(rate, 1) for rate in rates] for v, rates in every_round.items()},
        "gflops_per_second": {v: round(rate * flops / 1e9, 1) for v, rate in median.items()},
        "ratio_fused_vs_keras": round(median["fused"] / median["keras"], 3),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="classifier configs, e.g. baseline deep vgg_rescam")
    parser.add_argument("--data", help="Fashion-MNIST folder (default: $FMNIST_DATA_DIR)")
    parser.add_argument("--steps", type=int, default=30, help="training steps per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides for every model, e.g. width=0.125 batch_size=128")
    parser.add_argument("--results", default="bench/results/batchnorm_throughput.json")
    args = parser.parse_args()
    images, labels = load_split("train", args.data)
    results = {"machine": describe_machine(),
               "models": [measure(name, images, labels, args.steps, args.rounds, parse_settings(args.set))
                          for name in args.models]}
    atomic_write_json(args.results, results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

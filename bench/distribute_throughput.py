"""Training throughput of the ways `fmnist-tf train` can run on this machine, in one process:

    FMNIST_DATA_DIR=../shared/data/fashion-mnist python bench/distribute_throughput.py baseline deep

  default    the default strategy, float32, no XLA                       <- every ratio is against this
  mirrored   MirroredStrategy over the CPU split into 2 logical devices (--strategy mirrored --devices 2)
  xla        the default strategy with --jit-compile
  bf16       the default strategy with --mixed-precision (mixed_bfloat16 on a CPU)

Each variant gets its own model, built and compiled as `train` does (inside its strategy's scope,
under its precision policy), fed by the same tf.data pipeline; rounds alternate the variants so
this noisy machine's slow spells hit them alike. Writes bench/results/distribute_throughput.json.
"""

import argparse
import json
import sys
from pathlib import Path

import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import alternating_rounds, describe_machine  # noqa: E402
from train_throughput import images_per_second  # noqa: E402

from fmnist_tf.config import load_config  # noqa: E402
from fmnist_tf.data.fashion_mnist import load_split  # noqa: E402
from fmnist_tf.data.pipeline import make_dataset  # noqa: E402
from fmnist_tf.data.prepare import standardization_stats  # noqa: E402
from fmnist_tf.fileio import atomic_write_json  # noqa: E402
from fmnist_tf.models import create_model  # noqa: E402
from fmnist_tf.models.flops import training_flops  # noqa: E402
from fmnist_tf.train.distribute import split_cpu, training_context  # noqa: E402
from fmnist_tf.train.recipe import compile_classifier, model_settings  # noqa: E402

VARIANTS = {"default": {"strategy": "default"}, "mirrored": {"strategy": "mirrored", "devices": 2},
            "xla": {"strategy": "default", "jit_compile": True}, "bf16": {"strategy": "default", "mixed_precision": True}}


def compiled_model(config, x, steps):
    mean, variance = standardization_stats(x)
    with training_context(config) as strategy, strategy.scope():
        model = create_model(config.model, mean=mean, variance=variance, width=config.width,
                             dropout=config.dropout, **model_settings(config))
        compile_classifier(model, config, steps, 10)
    return model


def measure(name, images, labels, steps, rounds):
    base = load_config(name)
    count = steps * base.batch_size
    x, y = images[:count], labels[:count]
    dataset = make_dataset(x, y, 10, base.batch_size, training=True)
    models = {variant: compiled_model(load_config(name, settings), x, steps) for variant, settings in VARIANTS.items()}
    measures = {variant: (lambda model=model: images_per_second(model, dataset, count, {"shuffle": False}))
                for variant, model in models.items()}
    rates, median = alternating_rounds(measures, rounds, label=f"{name} ", unit=" img/s")
    flops = training_flops(models["default"])
    return {"config": name, "batch_size": base.batch_size, "images_per_round": count, "rounds": rounds,
            "training_mflops_per_image": round(flops / 1e6, 2),
            "images_per_second": {v: [round(r, 1) for r in values] for v, values in rates.items()},
            "median_images_per_second": {v: round(r, 1) for v, r in median.items()},
            "gflops_per_second": {v: round(r * flops / 1e9, 1) for v, r in median.items()},
            "ratio_vs_default": {v: round(r / median["default"], 3) for v, r in median.items()}}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--data", help="Fashion-MNIST folder (default: $FMNIST_DATA_DIR)")
    parser.add_argument("--steps", type=int, default=20, help="training steps per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--results", default="bench/results/distribute_throughput.json")
    args = parser.parse_args()
    split_cpu(2)  # before TensorFlow starts: the mirrored variant's two logical devices
    images, labels = load_split("train", args.data)
    results = {"machine": describe_machine(), "logical_cpus": len(tf.config.list_logical_devices("CPU")),
               "models": [measure(name, images, labels, args.steps, args.rounds) for name in args.models]}
    atomic_write_json(args.results, results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

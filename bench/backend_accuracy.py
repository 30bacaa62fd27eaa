"""Train registry classifiers with their configs on any Keras 3 backend, from in-memory arrays.

For accelerator machines without TensorFlow (the GPU lent to this project has JAX and PyTorch, and
TensorFlow is too large to carry there). Everything that decides accuracy is `fmnist-tf train`'s own:
the builder and its standardisation, the stratified validation split, the optimizer, schedule, loss
and augmentation layers of the config, and the best epoch chosen by validation weighted F1 (scored
with scikit-learn, as `best.keras` is). What differs: augmentation runs inside the model, as a
training-only front, instead of in tf.data; the best weights are kept in memory; no run directory.

    KERAS_BACKEND=jax FMNIST_DATA_DIR=../shared/data/fashion-mnist \\
        python bench/backend_accuracy.py efficientnet_b0 vgg_rescam
    KERAS_BACKEND=jax python bench/backend_accuracy.py deep --set epochs=25 --label e25

Writes bench/results/backend_accuracy-<model>[-<label>].json: the test accuracy and weighted F1 of
the best-validation epoch, every epoch's validation scores and seconds, images/s and TFLOP/s.
"""

import json
import sys
import time
from pathlib import Path

import keras
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import TimeBudget, describe_machine, parse_training_run, training_run_parser  # noqa: E402

from fmnist_tf.config import load_config  # noqa: E402
from fmnist_tf.data.fashion_mnist import load_split  # noqa: E402
from fmnist_tf.data.prepare import augmentation_layers, split_indices, standardization_stats  # noqa: E402
from fmnist_tf.evaluate.scores import classification_scores  # noqa: E402
from fmnist_tf.fileio import atomic_write_json  # noqa: E402
from fmnist_tf.models import create_model  # noqa: E402
from fmnist_tf.models.flops import training_flops  # noqa: E402
from fmnist_tf.models.registry import model_task  # noqa: E402
from fmnist_tf.train.callbacks import EpochTimer, ValidationReport  # noqa: E402
from fmnist_tf.train.recipe import compile_classifier, model_settings, schedule_callbacks  # noqa: E402

NUM_CLASSES = 10


def scaled(images):
    """uint8 [N, 28, 28] -> float32 [N, 28, 28, 1] in [0, 1], what the tf.data pipeline feeds."""
    return (images.astype("float32") / 255.0)[..., None]


def augmented_trainer(core, config):
    """`core` behind the config's augmentation layers, which act only when training."""
    augment = augmentation_layers(config, config.seed)
    if augment is None:
        return core
    inputs = keras.Input(core.input_shape[1:], name="image")
    return keras.Model(inputs, core(augment(inputs)), name=f"{core.name}_augmented")


def train_and_test(config, data, budget_minutes, steps_per_execution):
    if model_task(config.model) != "classify":
        raise SystemExit(f"{config.model}: only classifiers train here")
    keras.utils.set_random_seed(config.seed)
    images, labels = load_split("train", data)
    test_images, test_labels = load_split("test", data)
    train_idx, val_idx = split_indices(labels, config.val_fraction, config.seed)
    mean, variance = standardization_stats(images, train_idx)
    core = create_model(config.model, num_classes=NUM_CLASSES, mean=mean, variance=variance,
                        width=config.width, dropout=config.dropout, **model_settings(config))
    model = augmented_trainer(core, config)
    steps_per_epoch = -(-len(train_idx) // config.batch_size)
    compile_classifier(model, config, steps_per_epoch, NUM_CLASSES)
    model.steps_per_execution = steps_per_execution
    validation = ValidationReport(scaled(images[val_idx]), labels[val_idx], model.loss, NUM_CLASSES)
    keep_best = keras.callbacks.EarlyStopping("val_f1", mode="max", patience=config.epochs + 1,
                                              restore_best_weights=True)
    budget = [TimeBudget(budget_minutes * 60)] if budget_minutes else []
    start = time.perf_counter()
    history = model.fit(scaled(images[train_idx]), np.eye(NUM_CLASSES, dtype="float32")[labels[train_idx]],
                        batch_size=config.batch_size, epochs=config.epochs, shuffle=True, verbose=2,
                        callbacks=[EpochTimer(), validation, *schedule_callbacks(config), keep_best, *budget])
    wall = time.perf_counter() - start
    predicted = core.predict(scaled(test_images), batch_size=512, verbose=0).argmax(axis=1)
    test = classification_scores(test_labels, predicted, NUM_CLASSES)
    per_epoch = [{key: float(values[i]) for key, values in history.history.items()
               if key in ("val_accuracy", "val_f1", "epoch_seconds", "learning_rate", "loss")}
              for i in range(len(history.epoch))]
    # the first epoch carries the compile; the steady rate comes from the others
    steady = [e["epoch_seconds"] for e in per_epoch[1:]] or [per_epoch[0]["epoch_seconds"]]
    images_per_second = len(train_idx) / float(np.median(steady))
    return {
        "params": core.count_params(), "epochs_trained": len(per_epoch), "train_wall_minutes": round(wall / 60, 2),
        "test_accuracy": test["accuracy"], "test_f1": test["f1"],
        "best_val_f1": max(e["val_f1"] for e in per_epoch),
        "best_val_accuracy": max(e["val_accuracy"] for e in per_epoch),
        "train_images_per_second": round(images_per_second, 1),
        "train_tflops_per_second": round(images_per_second * training_flops(core) / 1e12, 2),
        "history": per_epoch,
    }


def main():
    parser = training_run_parser(__doc__, "config names, e.g. efficientnet_b0 vgg_rescam")
    parser.add_argument("--steps-per-execution", type=int, default=1,
                        help="batches per compiled call: cuts per-step overhead for small batches")
    args, settings, suffix = parse_training_run(parser)
    for name in args.models:
        config = load_config(name, settings)
        result = {"config": name, "settings": settings, "label": args.label, "epochs": config.epochs,
                  "budget_minutes": args.budget_minutes, "steps_per_execution": args.steps_per_execution,
                  **train_and_test(config, args.data, args.budget_minutes, args.steps_per_execution),
                  "machine": describe_machine()}
        path = Path(args.results) / f"backend_accuracy-{name}{suffix}.json"
        atomic_write_json(path, result)
        print(json.dumps({k: v for k, v in result.items() if k != "history"}, indent=2))


if __name__ == "__main__":
    main()

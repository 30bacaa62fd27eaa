"""One `train()` for every task: data -> pipeline -> registry model -> `model.fit` -> run dir.

Run directory: config.yaml, dataset.json, history.csv, best.keras (best validation weighted F1 for
classifiers, kNN accuracy for embeddings, mAP@0.5 for detectors), last.keras, tensorboard/, and
backup/ (removed when the run completes) for `--resume`.
"""

import dataclasses
import functools
import json
import math
import shutil
import sys
import time
from pathlib import Path

import keras
import numpy as np

from fmnist_tf.config import TrainConfig, config_to_yaml, make_config, read_yaml_mapping
from fmnist_tf.data.pipeline import as_tensor, make_dataset
from fmnist_tf.data.prepare import augmentation_layers, split_indices, standardization_stats
from fmnist_tf.data.sources import describe_source, load_labelled_split
from fmnist_tf.errors import ConfigError, FmnistError
from fmnist_tf.fileio import atomic_write_json, atomic_write_text, remove_stale_temporaries
from fmnist_tf.models import create_model
from fmnist_tf.train.callbacks import (Backup, BestCheckpoint, EpochTimer, HistoryCSV, LastCheckpoint,
                                       ValidationReport, latest_backup, read_backup_state, read_history)
from fmnist_tf.train.recipe import compile_for_task, model_settings, schedule_callbacks


def total_epochs(config: TrainConfig):
    return config.epochs + config.fine_tune_epochs


def training_stages(config: TrainConfig):
    """[(stage config, first epoch, end epoch, unfreeze the backbone)]: `epochs` as configured, then
    `fine_tune_epochs` with every layer trainable at a constant fine_tune_learning_rate."""
    stages = [(config, 0, config.epochs, False)]
    if config.fine_tune_epochs:
        tuned = dataclasses.replace(config, learning_rate=config.fine_tune_learning_rate, schedule="constant",
                                    warmup_epochs=0, epochs=total_epochs(config))
        stages.append((tuned, config.epochs, total_epochs(config), True))
    return stages


def parameter_counts(model):
    """(trainable, frozen) parameter counts; frozen includes BatchNorm's moving statistics."""
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    return trainable, model.count_params() - trainable


def choose_run_dir(config: TrainConfig, out=None, root="runs") -> Path:
    """`out`, or runs/<model>-<timestamp>; an existing non-empty folder is never reused."""
    out = Path(out) if out else Path(root) / f"{config.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    if out.exists() and any(out.iterdir()):
        raise FmnistError(f"{out} already holds files; continue that run with --resume {out} "
                          f"or choose another --out")
    return out


RESUME_OVERRIDABLE = {"epochs"}


def resume_config(run_dir, overrides=None) -> TrainConfig:
    """The run's own config; only `epochs` may change (anything else would change the run midway)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FmnistError(f"{run_dir} is not a run directory (no config.yaml); nothing to resume")
    refused = sorted(set(overrides or {}) - RESUME_OVERRIDABLE)
    if refused:
        raise FmnistError(f"--resume keeps the run's config; only --epochs may be changed, not: "
                          f"{', '.join('--' + key.replace('_', '-') for key in refused)}")
    config = make_config(read_yaml_mapping(path), source=str(path))
    return make_config(overrides or {}, source="command line", base=config)


def recorded_source(run_dir):
    """The data source a run was trained on (None: the default search order)."""
    path = Path(run_dir) / "dataset.json"
    source = json.loads(path.read_text()).get("source") if path.is_file() else None
    return None if source in (None, "keras download") else source


def resume_point(run_dir, config):
    """(initial epoch, backup weights or None) for `--resume`."""
    epochs_done, backup = latest_backup(Path(run_dir) / "backup")
    if backup is None:
        if len(read_history(Path(run_dir) / "history.csv")) >= total_epochs(config):
            raise FmnistError(f"{run_dir} already finished its {total_epochs(config)} epochs; "
                              f"start a new run to train longer")
        return 0, None  # died before its first backup: start over
    if epochs_done >= total_epochs(config):
        raise FmnistError(f"{run_dir} has done {epochs_done} epochs; pass --epochs above that to continue")
    return epochs_done, backup


def _progress_verbosity():
    return 1 if sys.stdout.isatty() else 2


def open_run(config: TrainConfig, out=None, resume=None):
    """(run directory, epochs already done, backup weights or None) for a new or resumed run."""
    if not resume:
        return choose_run_dir(config, out), 0, None
    run_dir = Path(resume)
    initial_epoch, backup_path = resume_point(run_dir, config)
    remove_stale_temporaries(run_dir)
    return run_dir, initial_epoch, backup_path


def restore_backup(model, backup_path, run_dir, initial_epoch):
    if backup_path is not None:
        model.optimizer.build(model.trainable_variables)
        model.load_weights(backup_path)
        print(f"resuming {run_dir} after epoch {initial_epoch}")


def run_callbacks(run_dir, config: TrainConfig, validation, monitor, initial_epoch=0, backup_path=None):
    """The run-directory contract for every task: `validation` adds the val_* logs, `monitor` picks
    best.keras; history.csv, last.keras, TensorBoard and the --resume backup come with it."""
    history = HistoryCSV(run_dir / "history.csv", initial_epoch)
    best = max((float(row[monitor]) for row in history.rows), default=-np.inf)
    schedule = schedule_callbacks(config)
    return [
        EpochTimer(),
        validation,
        BestCheckpoint(run_dir / "best.keras", monitor, best),
        LastCheckpoint(run_dir / "last.keras"),
        history,
        *schedule,
        keras.callbacks.TensorBoard(run_dir / "tensorboard", write_graph=False, profile_batch=0),
        # last: it snapshots the state after the schedule has acted on this epoch
        Backup(run_dir / "backup", schedule, read_backup_state(backup_path) if backup_path else None),
    ]


def fit_run(model, train_ds, config: TrainConfig, run_dir, callbacks, initial_epoch=0, verbose=None):
    fit_stage(model, lambda: train_ds, config.epochs, initial_epoch, callbacks, verbose)
    shutil.rmtree(run_dir / "backup", ignore_errors=True)


def fit_stage(model, make_train_ds, end_epoch, initial_epoch, callbacks, verbose=None, strategy=None,
              use_fit=True):
    """`model.fit(make_train_ds(), ...)`, or under MultiWorkerMirroredStrategy (unless `use_fit`) our
    distributed loop, which gives each worker its own input pipeline (`make_train_ds(shard=...)`)
    and drives the same callbacks."""
    verbose = _progress_verbosity() if verbose is None else verbose
    if not use_fit:
        from fmnist_tf.train.multiworker import distributed_fit

        distributed_fit(model, make_train_ds, strategy, end_epoch, initial_epoch, callbacks, verbose)
        return
    model.fit(make_train_ds(), epochs=end_epoch, initial_epoch=initial_epoch, callbacks=callbacks, shuffle=False,
              verbose=verbose)


def train(config: TrainConfig, *, data=None, out=None, resume=None, verbose=None, callbacks=()) -> Path:
    """Train `config.model` (any task) on its data; returns the run directory. `callbacks` are
    extra Keras callbacks, run before the ones that write the run directory."""
    from fmnist_tf.models.registry import model_task

    if config.strategy == "multiworker":
        from fmnist_tf.train.multiworker import require_shared_run_dir

        require_shared_run_dir(out, resume)  # before the cluster forms
    if resume:
        data = data or recorded_source(resume)
    if config.base and Path(config.base).exists():  # a run or model file: the saved config must find it from anywhere
        config = dataclasses.replace(config, base=str(Path(config.base).resolve()))
    detector = model_task(config.model) == "detect"
    if detector and config.strategy == "multiworker":
        raise ConfigError(f"{config.model} trains on one machine (--strategy auto, default or mirrored); "
                          f"multi-worker training is for classifiers and embeddings")
    from fmnist_tf.train.distribute import training_context

    if detector:
        from yolo.train import train_detector as train_task
    else:
        train_task = train_classifier
    with training_context(config) as strategy:
        return train_task(config, data=data, out=out, resume=resume, verbose=verbose, callbacks=callbacks,
                          strategy=strategy)


def validation_for_task(task, config: TrainConfig, images, labels, split, num_classes, loss_fn):
    """(validation callback, the log key that picks best.keras). `split` is (train, validation)
    indices into `images` and `labels`."""
    train_idx, val_idx = split
    val_ds = make_dataset(images, labels, num_classes, config.batch_size, indices=val_idx)
    if task == "embed":
        from fmnist_tf.train.knn import KnnValidation

        gallery_ds = make_dataset(images, labels, num_classes, max(config.batch_size, 512), indices=train_idx)
        return KnnValidation(gallery_ds, labels[train_idx], val_ds, labels[val_idx], k=config.knn_k,
                             margin=config.margin), "val_knn_accuracy"
    return ValidationReport(val_ds, labels[val_idx], loss_fn, num_classes), "val_f1"


def load_training_data(config: TrainConfig, data=None):
    """(images as one uint8 tf.Tensor, labels, (train, validation) indices, class names, mean, variance).
    Every pipeline of the run gathers from this one tensor, which shares the loaded array's memory
    (Fashion-MNIST IDX files) or replaces it (the array is released here)."""
    dataset = load_labelled_split("train", data)
    split = split_indices(dataset.labels, config.val_fraction, config.seed)
    mean, variance = standardization_stats(dataset.images, split[0])
    return as_tensor(dataset.images), dataset.labels, split, dataset.class_names, mean, variance


def train_classifier(config: TrainConfig, *, data=None, out=None, resume=None, verbose=None, callbacks=(),
                     strategy=None) -> Path:
    """Train a classifier or embedding (`config.model`) on Fashion-MNIST or an image folder; returns
    the run directory. Transfer runs with fine_tune_epochs train in two stages (see training_stages).
    The model is built, compiled and restored inside `strategy`'s scope (see train.distribute)."""
    import tensorflow as tf

    from fmnist_tf.models.registry import model_task
    from fmnist_tf.models.transfer import BACKBONE
    from fmnist_tf.train.distribute import describe, is_multiworker, synchronize_batchnorm

    strategy = strategy or tf.distribute.get_strategy()
    task = model_task(config.model)
    if is_multiworker(strategy):
        from fmnist_tf.train.multiworker import open_worker_run

        # only the chief writes the run directory; the others write to a scratch folder
        run_dir, initial_epoch, backup_path = open_worker_run(strategy, config, out, resume)
    else:
        run_dir, initial_epoch, backup_path = open_run(config, out, resume)
    keras.utils.set_random_seed(config.seed)
    images, labels, split, class_names, mean, variance = load_training_data(config, data)
    num_classes = len(class_names)
    train_size, val_size = len(split[0]), len(split[1])
    make_train_ds = functools.partial(make_dataset, images, labels, num_classes, config.batch_size,
                                      indices=split[0], training=True,
                                      augment=augmentation_layers(config, config.seed), seed=config.seed)
    steps_per_epoch = math.ceil(train_size / config.batch_size)

    with strategy.scope():
        model = create_model(config.model, num_classes=num_classes, mean=mean, variance=variance,
                             width=config.width, dropout=config.dropout,
                             **model_settings(config, resuming=backup_path is not None))
    synchronize_batchnorm(model, strategy)
    has_backbone = BACKBONE in {layer.name for layer in model.layers}
    if config.fine_tune_epochs and not has_backbone:
        raise ConfigError(f"fine_tune_epochs needs a backbone to unfreeze; model '{config.model}' has none "
                          f"(use the transfer config)")
    trainable, frozen = parameter_counts(model)
    print(f"model {config.model}: {trainable + frozen:,} parameters ({trainable:,} trainable, {frozen:,} frozen); "
          f"{train_size:,} training / {val_size:,} validation images in {num_classes} classes; "
          f"run directory {run_dir}")
    print(f"training on {describe(strategy, config)}")
    use_fit = not is_multiworker(strategy) or config.multiworker_fit

    # Everything that can fail on bad settings has run: only now does the run directory get files.
    atomic_write_text(run_dir / "config.yaml", config_to_yaml(config))
    atomic_write_json(run_dir / "dataset.json", {
        **describe_source(data), "class_names": list(class_names),
        "train_size": train_size, "val_size": val_size, "mean": mean, "variance": variance,
        "val_fraction": config.val_fraction, "seed": config.seed})

    for stage_config, first_epoch, end_epoch, unfreeze in training_stages(config):
        if end_epoch <= initial_epoch:
            continue
        if unfreeze:
            model.get_layer(BACKBONE).trainable = True
            trainable, frozen = parameter_counts(model)
            print(f"stage 2 (epochs {first_epoch + 1}-{end_epoch}): backbone unfrozen, {trainable:,} trainable "
                  f"parameters, learning rate {stage_config.learning_rate:g}")
        start = max(first_epoch, initial_epoch)  # the first stage to run starts at initial_epoch
        with strategy.scope():
            compile_for_task(model, stage_config, task, steps_per_epoch, num_classes)
            restore_backup(model, backup_path, run_dir, start)
            validation, monitor = validation_for_task(task, stage_config, images, labels, split, num_classes,
                                                      model.loss)
            stage_callbacks = [*callbacks, *run_callbacks(run_dir, stage_config, validation, monitor, start,
                                                          backup_path)]
        backup_path = None  # a later stage continues from this one's weights
        fit_stage(model, make_train_ds, end_epoch, start, stage_callbacks, verbose, strategy, use_fit)
    shutil.rmtree(run_dir / "backup", ignore_errors=True)
    return run_dir

"""The training recipe a config describes: optimizer, learning-rate schedule, loss, metrics and the
builder options. Keras only (no TensorFlow import unless a distribution strategy scales the rate),
so every Keras backend trains with the same recipe."""

from pathlib import Path

import keras

from fmnist_tf.config import TrainConfig
from fmnist_tf.models.registry import OPTIONAL_SETTINGS
from fmnist_tf.train.metrics import WeightedScore


def peak_learning_rate(config: TrainConfig):
    """The configured rate, times the replicas of the strategy in scope with `scale_learning_rate`."""
    if not config.scale_learning_rate:
        return config.learning_rate
    import tensorflow as tf

    return config.learning_rate * tf.distribute.get_strategy().num_replicas_in_sync


def learning_rate(config: TrainConfig, steps_per_epoch):
    """A float for schedules driven by callbacks; a per-step schedule for cosine."""
    peak = peak_learning_rate(config)
    if config.schedule != "cosine":
        return peak
    warmup = config.warmup_epochs * steps_per_epoch
    decay = max(1, (config.epochs - config.warmup_epochs) * steps_per_epoch)
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(peak, decay)
    return keras.optimizers.schedules.CosineDecay(peak / 100, decay, warmup_target=peak, warmup_steps=warmup)


def make_optimizer(config: TrainConfig, steps_per_epoch):
    lr = learning_rate(config, steps_per_epoch)
    decay = config.weight_decay or None
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=config.momentum, nesterov=config.nesterov, weight_decay=decay)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=config.weight_decay)
    return keras.optimizers.Adam(lr, weight_decay=decay)


def schedule_callbacks(config: TrainConfig):
    if config.schedule == "plateau":
        return [keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=config.plateau_factor, patience=config.plateau_patience,
            cooldown=config.plateau_cooldown, min_lr=config.min_learning_rate, verbose=1)]
    if config.schedule == "step":
        peak = peak_learning_rate(config)  # now: the strategy is in scope here, not when epochs end
        return [keras.callbacks.LearningRateScheduler(
            lambda epoch: peak * config.step_factor ** (epoch // config.step_every))]
    return []


def model_settings(config: TrainConfig, resuming=False):
    """The config's builder options (see `fmnist_tf.models.registry.OPTIONAL_SETTINGS`). A resumed run
    gets its weights from the backup, so the starting weights file need not exist any more."""
    settings = {key: getattr(config, key) for key in OPTIONAL_SETTINGS}
    if resuming and not Path(config.weights).is_file():
        settings["weights"] = OPTIONAL_SETTINGS["weights"]
    return settings


def jit_setting(config: TrainConfig):
    return True if config.jit_compile else "auto"


def compile_classifier(model, config: TrainConfig, steps_per_epoch, num_classes):
    model.compile(
        optimizer=make_optimizer(config, steps_per_epoch),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"] + [WeightedScore(score, num_classes) for score in WeightedScore.SCORES],
        jit_compile=jit_setting(config),
    )


def compile_for_task(model, config: TrainConfig, task, steps_per_epoch, num_classes):
    if task == "embed":
        from fmnist_tf.train.triplet import TripletSemiHardLoss

        model.compile(optimizer=make_optimizer(config, steps_per_epoch), loss=TripletSemiHardLoss(config.margin),
                      jit_compile=jit_setting(config))
    else:
        compile_classifier(model, config, steps_per_epoch, num_classes)

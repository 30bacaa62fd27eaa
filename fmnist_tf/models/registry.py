"""One registry from config name to builder.

A builder is `builder(x, num_classes, *, width, dropout, ...) -> probabilities`: it grows a network
on the standardised input tensor `x` (B, 28, 28, 1). `create_model` adds the input and the
standardisation layer, so every model takes [0, 1] 28x28 images and carries its training statistics.
Builders that upscale inside the model (EfficientNet, VGG) also take `input_size`; builders that can
start from a weights file take `weights` (and `backend` where two libraries can build them). A
setting a builder does not take must stay at its default: `create_model` refuses it by name.
"""

import dataclasses
import importlib
import inspect

import keras

from fmnist_tf.config import TrainConfig
from fmnist_tf.errors import ConfigError

_BUILDERS = {}
_TASKS = {}
_FAMILIES = ("fmnist_tf.models.cnn", "fmnist_tf.models.vgg", "fmnist_tf.models.efficientnet",
             "fmnist_tf.models.embedding", "fmnist_tf.models.transfer", "yolo.model")
# builder options beyond width and dropout, with the value that means "not set": the config's default
OPTIONAL_SETTINGS = {item.name: item.default for item in dataclasses.fields(TrainConfig)
                     if item.name in ("input_size", "weights", "backend", "base", "freeze", "head_units",
                                      "embedding_size", "cam_side")}
TASKS = ("classify", "detect", "embed")


def register(name, task="classify"):
    """Decorator: make a builder available as `model: NAME` in configs. `task` picks the training
    path: "classify" builders grow a network on an image tensor (see above) and end in class
    probabilities, "embed" builders the same but end in an L2-normalised embedding (trained with the
    triplet loss), "detect" builders return a whole detector model."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")

    def add(builder):
        if name in _BUILDERS:
            raise ValueError(f"model name '{name}' registered twice")
        _BUILDERS[name], _TASKS[name] = builder, task
        return builder
    return add


def _load_families():
    for module in _FAMILIES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != "tensorflow":  # the detector needs TensorFlow; classifiers take any backend
                raise


def model_names():
    _load_families()
    return sorted(_BUILDERS)


def get_builder(name):
    _load_families()
    if name not in _BUILDERS:
        raise ConfigError(f"unknown model '{name}'; registered models: {', '.join(sorted(_BUILDERS))}")
    return _BUILDERS[name]


def model_task(name):
    get_builder(name)
    return _TASKS[name]


def builder_options(name, settings, input_side=None):
    """The subset of `settings` (input_size, weights, backend) that builder `name` takes; a setting it
    does not take must be at its "not set" value (or, for input_size, the input's own side), else
    ConfigError."""
    accepted = inspect.signature(get_builder(name)).parameters
    options = {}
    for key, value in settings.items():
        if key in accepted:
            options[key] = value
        elif value != OPTIONAL_SETTINGS[key] and not (key == "input_size" and value == input_side):
            raise ConfigError(f"model '{name}' does not use {key} (got {value!r}); leave it at "
                              f"{OPTIONAL_SETTINGS[key]!r} or choose a model that takes it")
    return options


def create_model(name, *, num_classes=10, input_shape=(28, 28, 1), mean=0.0, variance=1.0,
                 width=1.0, dropout=0.5, **settings):
    """A classifier from the registry; `settings`: input_size, weights, backend (see module doc)."""
    unknown = sorted(set(settings) - set(OPTIONAL_SETTINGS))
    if unknown:
        raise TypeError(f"create_model got unknown settings {unknown}")
    options = builder_options(name, settings, input_side=input_shape[0])
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Normalization(mean=mean, variance=variance, name="standardize")(inputs)
    outputs = get_builder(name)(x, num_classes, width=width, dropout=dropout, **options)
    return keras.Model(inputs, outputs, name=name)

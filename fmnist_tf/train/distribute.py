"""Where training runs: a tf.distribute strategy, the precision policy and XLA, from the config.

`batch_size` is always the global batch: with N replicas each gets batch_size / N per step, so a run
sees the same data per step on 1 or N devices. The learning rate stays as configured unless
`scale_learning_rate` multiplies it by the number of replicas (the linear scaling rule).
On a CPU, `--devices N` splits the CPU into N logical devices (as TensorFlow's own tests do), which
exercises exactly the multi-device code path a multi-GPU box runs.
"""

import contextlib

import keras
import tensorflow as tf

from fmnist_tf.errors import ConfigError

STRATEGIES = ("auto", "default", "mirrored", "multiworker")


def split_cpu(count):
    """Make `count` logical CPU devices; only possible before TensorFlow has started its devices."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        if have != count:
            raise ConfigError(f"--devices {count} on a CPU needs {count} logical devices, and TensorFlow already "
                              f"started with {have}; run training in a fresh process") from None
    return [device.name for device in tf.config.list_logical_devices("CPU")]


def make_strategy(name, devices=0):
    """`auto`: mirrored over every GPU when there are several, else the default strategy.
    `mirrored`: over `devices` GPUs (0: all), or on a GPU-less machine over `devices` logical CPUs."""
    if name not in STRATEGIES:
        raise ConfigError(f"strategy must be one of {', '.join(STRATEGIES)}, got {name!r}")
    if name == "multiworker":
        from fmnist_tf.train.multiworker import make_multiworker_strategy

        return make_multiworker_strategy()
    gpus = tf.config.list_physical_devices("GPU")
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 and devices != 1 else "default"
    if name == "default":
        if devices > 1:
            raise ConfigError(f"--devices {devices} needs --strategy mirrored")
        return tf.distribute.get_strategy()
    if gpus:
        count = devices or len(gpus)
        if count > len(gpus):
            raise ConfigError(f"--devices {count}: this machine has {len(gpus)} GPUs")
        return tf.distribute.MirroredStrategy([f"/gpu:{index}" for index in range(count)])
    return tf.distribute.MirroredStrategy(split_cpu(devices or 1)[:devices or 1])


def precision_policy(mixed):
    """mixed_float16 on a GPU (tensor cores), mixed_bfloat16 on a CPU (no loss scaling needed)."""
    if not mixed:
        return "float32"
    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"


@contextlib.contextmanager
def training_context(config):
    """Yields the strategy; sets the precision policy for the models built inside, and restores the
    previous policy after (it is global Keras state)."""
    strategy = make_strategy(config.strategy, config.devices)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision_policy(config.mixed_precision))
    try:
        yield strategy
    finally:
        keras.config.set_dtype_policy(previous)


def all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)


def synchronize_batchnorm(model, strategy):
    """With several replicas, BatchNorm normalises with the statistics of the whole global batch (read
    at call time, so switching it after building works): N devices then compute what one would.
    Not under multi-worker: our distributed step skips the model on a replica left without examples,
    where a synchronised BatchNorm's all-reduce would then be missing; there each replica uses its own
    batch statistics and the moving statistics are averaged after every epoch."""
    if strategy.num_replicas_in_sync > 1 and not is_multiworker(strategy):
        for layer in all_layers(model):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.synchronized = True


def is_multiworker(strategy):
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def describe(strategy, config):
    replicas = strategy.num_replicas_in_sync
    per_replica = config.batch_size // replicas
    name = "MultiWorkerMirroredStrategy" if is_multiworker(strategy) else type(strategy).__name__
    return (f"{name} over {replicas} device(s), global batch {config.batch_size} "
            f"({per_replica} per replica), {precision_policy(config.mixed_precision)}"
            + (", XLA" if config.jit_compile else ""))

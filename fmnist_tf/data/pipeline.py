"""tf.data pipelines: stratified split, per-batch scaling and augmentation, prefetch.

Images leave the pipeline as float32 in [0, 1], shape [B, H, W, 1]; standardisation with the
training statistics happens in the model's first layer, so a saved model carries it everywhere
(predict, realtime, export) and no consumer can forget it.
"""

import numpy as np
import tensorflow as tf
from sklearn.model_selection import train_test_split

AUTOTUNE = tf.data.AUTOTUNE


def split_train_val(images, labels, val_fraction, seed):
    """Stratified, seeded hold-out. Returns ((x_train, y_train), (x_val, y_val))."""
    train_idx, val_idx = train_test_split(np.arange(len(labels)), test_size=val_fraction,
                                          stratify=labels, random_state=seed)
    train_idx.sort()
    val_idx.sort()
    return (images[train_idx], labels[train_idx]), (images[val_idx], labels[val_idx])


def standardization_stats(images):
    """Mean and variance of the [0, 1]-scaled pixels, for the model's Normalization layer."""
    scaled = images.astype(np.float64) / 255.0
    return float(scaled.mean()), float(scaled.var())


def augmentation_layers(config, seed):
    """Keras preprocessing layers from the config's augment keys, or None when augmentation is off."""
    import keras

    if not config.augment:
        return None
    layers = []
    directions = [name for name, on in (("horizontal", config.flip), ("vertical", config.vertical_flip)) if on]
    if directions:
        layers.append(keras.layers.RandomFlip("_and_".join(directions), seed=seed))
    if config.zoom_out > 0:
        layers.append(keras.layers.RandomZoom((0.0, config.zoom_out), fill_mode="constant", seed=seed + 3))
    if config.translate > 0:
        layers.append(keras.layers.RandomTranslation(config.translate, config.translate,
                                                     fill_mode="constant", seed=seed + 1))
    if config.erasing > 0:
        layers.append(keras.layers.RandomErasing(factor=config.erasing, value_range=(0.0, 1.0),
                                                 seed=seed + 2))
    return keras.Sequential(layers, name="augmentation") if layers else None


def to_model_input(images):
    """uint8 [..., H, W] -> float32 [..., H, W, 1] in [0, 1]."""
    return tf.cast(images, tf.float32)[..., tf.newaxis] / 255.0


def make_dataset(images, labels, num_classes, batch_size, *, training=False, augment=None, seed=0):
    """Batches of (float images, one-hot labels). Training sets are shuffled and may be augmented.

    The deterministic conversion is cached after the first epoch; shuffling and augmentation are
    redone every epoch, augmentation on whole batches (far cheaper than per image).
    """
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    dataset = dataset.map(lambda x, y: (to_model_input(x), tf.one_hot(y, num_classes)),
                          num_parallel_calls=AUTOTUNE).cache()
    if training:
        dataset = dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if augment is not None:
        # one batch at a time: the layers' seed generator is a shared variable, and parallel calls
        # would race on it and break `--seed` repeatability; prefetch still overlaps it with training
        dataset = dataset.map(lambda x, y: (augment(x, training=True), y))
    return dataset.prefetch(AUTOTUNE)

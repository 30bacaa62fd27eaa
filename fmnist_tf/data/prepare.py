"""Backend-independent preparation shared by every trainer: the stratified hold-out, the
standardisation statistics and the augmentation layers. No TensorFlow here, so that a machine with
only another Keras backend (a GPU box with JAX, say) can train with the same recipe."""

import numpy as np
from sklearn.model_selection import train_test_split


def split_indices(labels, val_fraction, seed):
    """Stratified, seeded hold-out: sorted (train indices, validation indices) into `labels`."""
    train_idx, val_idx = train_test_split(np.arange(len(labels)), test_size=val_fraction,
                                          stratify=labels, random_state=seed)
    return np.sort(train_idx), np.sort(val_idx)


def split_train_val(images, labels, val_fraction, seed):
    """The `split_indices` hold-out as copies: ((x_train, y_train), (x_val, y_val))."""
    train_idx, val_idx = split_indices(labels, val_fraction, seed)
    return (images[train_idx], labels[train_idx]), (images[val_idx], labels[val_idx])


def standardization_stats(images, indices=None):
    """Mean and variance of the [0, 1]-scaled pixels of uint8 `images[indices]` (all by default), from
    a pixel histogram counted in chunks: exact, and with no float copy of the dataset."""
    if np.asarray(images).dtype != np.uint8:
        raise ValueError(f"standardization_stats takes uint8 images, got {np.asarray(images).dtype}")
    indices = np.arange(len(images)) if indices is None else np.asarray(indices)
    counts = np.zeros(256, np.int64)
    for start in range(0, len(indices), 4096):
        counts += np.bincount(np.asarray(images[indices[start:start + 4096]]).ravel(), minlength=256)
    levels = np.arange(256) / 255.0
    mean = float(counts @ levels / counts.sum())
    return mean, float(counts @ (levels - mean) ** 2 / counts.sum())


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
        # RandomZoom shrinks to half size at most; further, two in a row, each up to the square root.
        zooms = 1 if config.zoom_out <= 1 else 2
        factor = (1 + config.zoom_out) ** (1 / zooms) - 1
        layers.extend(keras.layers.RandomZoom((0.0, factor), fill_mode="constant", seed=seed + 3 + index * 10)
                      for index in range(zooms))
    if config.translate > 0:
        layers.append(keras.layers.RandomTranslation(config.translate, config.translate,
                                                     fill_mode="constant", seed=seed + 1))
    if config.erasing > 0:
        layers.append(keras.layers.RandomErasing(factor=config.erasing, value_range=(0.0, 1.0),
                                                 seed=seed + 2))
    return keras.Sequential(layers, name="augmentation") if layers else None

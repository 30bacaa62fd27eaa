"""tf.data pipelines: per-batch scaling and augmentation (layers from `prepare`), prefetch.

Images leave the pipeline as float32 in [0, 1], shape [B, H, W, 1]; standardisation with the
training statistics happens in the model's first layer, so a saved model carries it everywhere
(predict, realtime, export) and no consumer can forget it.
"""

import numpy as np
import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE
# No tf.data autotuning: `model.fit` makes a new iterator every epoch, and deleting the last one
# waited for its autotuning thread, up to 30 s at an epoch's start (measured on `deep`; 52 s of
# steps per epoch). Without it, AUTOTUNE maps run one call per core and prefetch sizes its own buffer.
PIPELINE_OPTIONS = tf.data.Options()
PIPELINE_OPTIONS.autotune.enabled = False


def to_model_input(images):
    """uint8 [..., H, W] -> float32 [..., H, W, 1] in [0, 1]."""
    return tf.cast(images, tf.float32)[..., tf.newaxis] / 255.0


def as_tensor(array):
    """Images owned by the caller as a tf.Tensor, in place (through DLPack, so the two share memory:
    the caller must not change the array) when they are contiguous, writable and 64-byte aligned, as
    `read_idx` gives them; otherwise a copy."""
    array = np.asarray(array)
    if array.size and array.flags.c_contiguous and array.flags.writeable and array.ctypes.data % 64 == 0:
        return tf.experimental.dlpack.from_dlpack(array.__dlpack__())
    return tf.convert_to_tensor(array)


def make_dataset(images, labels, num_classes, batch_size, *, indices=None, training=False, augment=None, seed=0,
                 shard=None):
    """Batches of (float images, one-hot labels) from `images[indices]` (all images by default).
    Training sets are reshuffled every epoch and may be augmented.

    The pipeline keeps no copy of the images: it shuffles and batches their indices, then gathers,
    converts and augments whole batches (far cheaper than per image), so it has neither a cache nor a
    shuffle buffer of images. Pass one tf.Tensor of images to several pipelines (train, validation)
    and the process holds the dataset once; a numpy array is converted, which copies it (see
    `as_tensor` for a conversion without a copy).

    `shard=(replicas, first, count)` is for a worker's input pipeline under tf.distribute: it yields,
    for each global batch, the parts of replicas first..first+count-1 of `replicas` (strided, so every
    replica's part differs by at most one example; a part may be empty at the end of an epoch).
    """
    images, labels = tf.convert_to_tensor(images), tf.convert_to_tensor(labels)
    if indices is None:
        order = tf.data.Dataset.range(int(labels.shape[0]))
    else:
        order = tf.data.Dataset.from_tensor_slices(np.asarray(indices, np.int64))
    if training:
        order = order.shuffle(int(order.cardinality()), seed=seed, reshuffle_each_iteration=True)
    order = order.batch(batch_size)
    if shard is not None:
        replicas, first, count = shard
        order = order.flat_map(lambda batch: tf.data.Dataset.range(first, first + count).map(
            lambda replica: batch[replica::replicas]))

    def gather(batch):
        return to_model_input(tf.gather(images, batch)), tf.one_hot(tf.gather(labels, batch), num_classes)

    dataset = order.map(gather, num_parallel_calls=AUTOTUNE)
    if augment is not None:
        # one batch at a time: the layers' seed generator is a shared variable, and parallel calls
        # would race on it and break `--seed` repeatability; prefetch still overlaps it with training
        dataset = dataset.map(lambda x, y: (augment(x, training=True), y))
    return dataset.prefetch(AUTOTUNE).with_options(PIPELINE_OPTIONS)

"""Validation of an embedding model during training: kNN accuracy and the triplet loss."""

import keras
import numpy as np

from fmnist_tf.evaluate.embedding import knn_accuracy
from fmnist_tf.train.triplet import semi_hard_triplet_loss


def batched_triplet_loss(embeddings, labels, margin=0.2, batch_size=512):
    """The semi-hard triplet loss over consecutive batches of `batch_size`, averaged with each batch
    weighted by its size. Mining is per batch, as in training, so the value depends on the batch size
    and order (fixed here, so epochs compare); the whole set at once would mine far harder negatives."""
    losses, sizes = [], []
    for start in range(0, len(labels), batch_size):
        batch = slice(start, start + batch_size)
        loss = semi_hard_triplet_loss(np.asarray(labels[batch]), embeddings[batch], margin)
        losses.append(float(keras.ops.convert_to_numpy(loss)))
        sizes.append(len(labels[batch]))
    return float(np.average(losses, weights=sizes)) if losses else 0.0


class KnnValidation(keras.callbacks.Callback):
    """At each epoch's end: `val_knn_accuracy`, the validation embeddings classified by their k
    nearest training embeddings (the gallery), and `val_loss`, the semi-hard triplet loss of the
    validation embeddings in batches of `loss_batch_size` (see `batched_triplet_loss`).

    The datasets yield (images, one-hot labels) batches, unshuffled; `gallery_labels` and `val_labels`
    are the matching int class ids. Embedding the gallery costs time: for the `embedding` model on
    2 CPU cores, inference runs at ~1,400 images/s against ~300 in training, so 54,000 gallery images
    add about a quarter to an epoch.
    """

    def __init__(self, gallery_dataset, gallery_labels, val_dataset, val_labels, k=13, margin=0.2,
                 loss_batch_size=512):
        super().__init__()
        self.gallery_dataset, self.val_dataset = gallery_dataset, val_dataset
        self.gallery_labels = np.asarray(gallery_labels).reshape(-1)
        self.val_labels = np.asarray(val_labels).reshape(-1)
        self.k, self.margin, self.loss_batch_size = k, margin, loss_batch_size

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        gallery = self.model.predict(self.gallery_dataset, verbose=0)
        val = self.model.predict(self.val_dataset, verbose=0)
        logs["val_knn_accuracy"] = knn_accuracy(gallery, self.gallery_labels, val, self.val_labels, self.k)
        logs["val_loss"] = batched_triplet_loss(val, self.val_labels, self.margin, self.loss_batch_size)

"""The batch semi-hard triplet loss (FaceNet), as TensorFlow Addons defined it, in `keras.ops`.

TensorFlow Addons' `tfa.losses.triplet_semihard_loss` does not import under TF 2.21 (shared/REFERENCE.md
section 5). This is the same loss: plain (not squared) L2 distances; for every anchor-positive pair
(a != p, same label) the negative is the closest one farther than the positive (d_an > d_ap), or, where
none is, the farthest negative (0 where the batch holds no negative at all, as TFA's masked maximum
gave); loss = mean over all positive pairs of max(d_ap - d_an + margin, 0). A batch without a
positive pair gives 0.

TFA tiled the distance matrix to (B*B, B) to find the semi-hard negatives: B^3 memory and time
(0.5 GB per such tensor at B = 512). Here each anchor's negatives are sorted once and every positive
distance is looked up by binary search: O(B^2 log B), about 8 ms at B = 256 and 30 ms at B = 512 on
2 CPU cores. The negatives are chosen without gradient, then their distances gathered with
gradient, which is exactly the gradient of TFA's masked minimum (up to how it split ties).
"""

import keras
from keras import ops

# float32 bit patterns of non-negative numbers sort as the numbers do; rows are kept apart by
# adding row * 2^31 to the patterns (all below 2^31), so one 1-D search serves every anchor.
_ROW_STRIDE = 2 ** 31


def class_ids(labels):
    """(B,) class ids from ids of shape (B,) or (B, 1), or from one-hot / probability rows (B, C > 1)."""
    labels = ops.convert_to_tensor(labels)
    if len(labels.shape) == 2 and labels.shape[-1] != 1:
        labels = ops.argmax(labels, axis=-1)
    return ops.reshape(labels, (-1,))


def pairwise_distances(embeddings):
    """(B, B) Euclidean distances via the Gram matrix, as TFA computed them. Zero distances (the
    diagonal, duplicates, rounding below zero) are exactly 0 with a zero gradient: sqrt is never
    evaluated at 0, whose derivative is infinite."""
    squared_norms = ops.sum(ops.square(embeddings), axis=1)
    squared = squared_norms[:, None] + squared_norms[None, :] - 2.0 * ops.matmul(embeddings,
                                                                               ops.transpose(embeddings))
    size = ops.shape(embeddings)[0]
    diagonal = ops.arange(size)[:, None] == ops.arange(size)[None, :]
    zero = ops.logical_or(squared <= 0.0, diagonal)
    return ops.where(zero, 0.0, ops.sqrt(ops.where(zero, 1.0, squared)))


def _sortable_keys(distances, row_offsets):
    """Flat int64 keys that order like the (B, B) `distances` (>= 0, never -0.0) within a row and keep
    rows apart. (`ops.view` wants a static last dimension, hence the (B*B, 1) detour.)"""
    bits = ops.view(ops.reshape(distances, (-1, 1)), "int32")
    return ops.cast(ops.reshape(bits, (-1,)), "int64") + ops.reshape(row_offsets, (-1,))


def semi_hard_triplet_loss(labels, embeddings, margin=0.2):
    """The scalar semi-hard triplet loss of a batch (see the module doc).

    labels: class ids (B,) or (B, 1), or one-hot (B, C). embeddings: (B, D), any float dtype
    (computed in float32); they are usually L2-normalised, but need not be.
    """
    embeddings = ops.cast(embeddings, "float32")
    labels = class_ids(labels)
    size = ops.shape(embeddings)[0]
    distances = pairwise_distances(embeddings)
    diagonal = ops.arange(size)[:, None] == ops.arange(size)[None, :]
    fixed = ops.stop_gradient(distances)  # for choosing negatives; the loss uses `distances`

    same = labels[:, None] == labels[None, :]
    positive = ops.logical_and(same, ops.logical_not(diagonal))
    negative = ops.logical_not(same)
    negative_count = ops.sum(ops.cast(negative, "int32"), axis=1, keepdims=True)  # (B, 1)

    # each anchor's negatives, nearest first; other columns (inf) sort after them
    negatives_only = ops.where(negative, fixed, float("inf"))
    order = ops.argsort(negatives_only, axis=1)
    sorted_negatives = ops.take_along_axis(negatives_only, order, axis=1)

    # count[a, p] = number of negatives n of a with d_an <= d_ap: the first one farther than p sits
    # there in a's sorted row. One binary search over all rows, each row's keys offset by row * 2^31.
    rows = ops.cast(ops.arange(size), "int64")[:, None]
    row_offsets = ops.broadcast_to(rows * _ROW_STRIDE, (size, size))
    found = ops.searchsorted(_sortable_keys(sorted_negatives, row_offsets), _sortable_keys(fixed, row_offsets),
                             side="right")
    count = ops.cast(ops.reshape(ops.cast(found, "int64"), (size, size)) - rows * ops.cast(size, "int64"),
                     "int32")
    semi_hard_exists = count < negative_count
    semi_hard = ops.take_along_axis(order, ops.minimum(count, size - 1), axis=1)
    farthest = ops.take_along_axis(order, ops.maximum(negative_count - 1, 0), axis=1)  # (B, 1)
    farthest_distance = ops.where(negative_count > 0, ops.take_along_axis(distances, farthest, axis=1), 0.0)
    negative_distance = ops.where(semi_hard_exists, ops.take_along_axis(distances, semi_hard, axis=1),
                                  farthest_distance)

    weights = ops.cast(positive, "float32")
    hinge = ops.maximum(distances - negative_distance + margin, 0.0)
    return ops.sum(hinge * weights) / ops.maximum(ops.sum(weights), 1.0)


@keras.saving.register_keras_serializable(package="fmnist_tf")
class TripletSemiHardLoss(keras.losses.Loss):
    """`semi_hard_triplet_loss` for `model.compile`: y_true are class ids or one-hot rows, y_pred the
    embeddings. The loss is one number per batch (mining needs the whole batch); `call` returns it
    once per example, so Keras' mean leaves it unchanged and its distribution scaling applies.
    Sample weights are not meaningful here: they would scale the batch loss by their mean."""

    def __init__(self, margin=0.2, name="triplet_semi_hard_loss", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.margin = float(margin)

    def call(self, y_true, y_pred):
        # the batch's loss once per example: Keras averages that back to the loss, and under
        # tf.distribute also divides it by the replica count, which it skips for a bare scalar
        loss = semi_hard_triplet_loss(y_true, y_pred, self.margin)
        return ops.broadcast_to(loss, ops.shape(y_pred)[:1])

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}

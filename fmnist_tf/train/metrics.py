"""Streaming weighted precision / recall / F1 for the training progress bar and history."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="fmnist_tf")
class WeightedScore(keras.metrics.Metric):
    """Accumulates a confusion matrix over the epoch and reads one support-weighted score off it.

    Matches scikit-learn's `average="weighted"` (with zero_division=0) on the same predictions.
    """

    SCORES = ("precision", "recall", "f1")

    def __init__(self, score, num_classes, name=None, **kwargs):
        if score not in self.SCORES:
            raise ValueError(f"score must be one of {self.SCORES}, got {score!r}")
        super().__init__(name=name or score, **kwargs)
        self.score, self.num_classes = score, num_classes
        self.matrix = self.add_variable(shape=(num_classes, num_classes), initializer="zeros",
                                        name="confusion_matrix", dtype="float32")

    def update_state(self, y_true, y_pred, sample_weight=None):
        true = ops.one_hot(ops.argmax(y_true, axis=-1), self.num_classes)
        pred = ops.one_hot(ops.argmax(y_pred, axis=-1), self.num_classes)
        if sample_weight is not None:
            true = true * ops.reshape(ops.cast(sample_weight, true.dtype), (-1, 1))
        self.matrix.assign_add(ops.matmul(ops.transpose(true), pred))

    def result(self):
        tp = ops.diagonal(self.matrix)
        support = ops.sum(self.matrix, axis=1)
        predicted = ops.sum(self.matrix, axis=0)
        precision = ops.divide_no_nan(tp, predicted)
        recall = ops.divide_no_nan(tp, support)
        per_class = {"precision": precision, "recall": recall,
                     "f1": ops.divide_no_nan(2 * precision * recall, precision + recall)}[self.score]
        return ops.divide_no_nan(ops.sum(per_class * support), ops.sum(support))

    def reset_state(self):
        self.matrix.assign(ops.zeros(self.matrix.shape, self.matrix.dtype))  # zeros_like fails on JAX variables

    def get_config(self):
        return {**super().get_config(), "score": self.score, "num_classes": self.num_classes}

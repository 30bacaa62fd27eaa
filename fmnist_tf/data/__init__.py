"""Datasets (`fashion_mnist`) and tf.data input pipelines (`pipeline`)."""

from fmnist_tf.data.fashion_mnist import CLASS_NAMES, load_split

__all__ = ["CLASS_NAMES", "load_split"]

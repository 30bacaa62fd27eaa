"""Model builders and the registry that names them."""

from fmnist_tf.models.registry import create_model, model_names, register

__all__ = ["create_model", "model_names", "register"]

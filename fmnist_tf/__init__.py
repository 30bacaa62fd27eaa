"""fmnist-tf: a Keras 3 / TensorFlow research toolkit for Fashion-MNIST."""

__version__ = "0.1.0"

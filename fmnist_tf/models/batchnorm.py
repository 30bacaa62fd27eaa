"""BatchNormalization through TensorFlow's fused kernel.

Keras 3 normalises with separate moment, subtract, scale and shift ops, and differentiates each one.
TensorFlow's FusedBatchNormV3 does the forward pass in one kernel and the backward pass in another:
`deep` trains 1.38x as fast with it on a 2-core CPU, EfficientNet-B0 1.21x (bench/batchnorm_throughput.py).
The arithmetic, the weights and the moving statistics are Keras' own, so the layer is a drop-in
replacement, and it falls back to Keras for what the fused kernel can't do.
"""

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="fmnist_tf")
class FusedBatchNormalization(layers.BatchNormalization):
    """keras.layers.BatchNormalization over the last axis, computed by FusedBatchNormV3.

    Keras' own path serves other backends, other axes, masks, renorm and `synchronized` (the
    cross-replica statistics that several devices need).
    """

    def _fusable(self, inputs, mask):
        return (keras.backend.backend() == "tensorflow" and len(inputs.shape) in (2, 4)
                and self.axis in (-1, len(inputs.shape) - 1) and mask is None
                and not self.renorm and not self.synchronized)

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        # FusedBatchNormV3 takes NHWC; a (batch, features) input is a 1x1 image per example.
        images = inputs if len(inputs.shape) == 4 else tf.reshape(inputs, (-1, 1, 1, inputs.shape[-1]))
        images = tf.cast(images, "float32")  # as Keras: half precision would overflow the statistics
        depth = images.shape[-1]
        scale = self.gamma if self.scale else tf.ones((depth,))
        offset = self.beta if self.center else tf.zeros((depth,))
        if training and self.trainable:
            outputs, mean, unbiased_variance, *_ = tf.raw_ops.FusedBatchNormV3(
                x=images, scale=scale, offset=offset, mean=tf.zeros((0,)), variance=tf.zeros((0,)),
                epsilon=self.epsilon, exponential_avg_factor=1.0, data_format="NHWC", is_training=True)
            # The kernel returns the sample variance; Keras' moving variance averages the population one.
            count = tf.cast(tf.size(images) // depth, "float32")
            variance = unbiased_variance * (count - 1.0) / tf.maximum(count, 1.0)
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(
                self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        else:
            outputs, *_ = tf.raw_ops.FusedBatchNormV3(
                x=images, scale=scale, offset=offset, mean=self.moving_mean, variance=self.moving_variance,
                epsilon=self.epsilon, data_format="NHWC", is_training=False)
        if len(inputs.shape) == 2:
            outputs = tf.reshape(outputs, tf.shape(inputs))
        return ops.cast(outputs, self.compute_dtype)

"""Keras -> LiteRT (.tflite) conversion, float32 or int8-quantised, used by export and realtime."""

import numpy as np


def serving_function(model):
    """The model's inference graph with a fixed [None, H, W, 1] float32 signature."""
    import tensorflow as tf

    size = int(model.input_shape[1])
    spec = tf.TensorSpec([None, size, size, 1], tf.float32, name="image")
    return tf.function(lambda image: model(image, training=False), input_signature=[spec])


def convert_to_tflite(model, representative_images=None) -> bytes:
    """Float32 flatbuffer, or int8 weights and activations when representative images are given
    (inputs and outputs stay float32, so callers need not know about scales)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    # frozen weights: int8 calibration cannot read resource variables
    frozen = convert_variables_to_constants_v2(serving_function(model).get_concrete_function())
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen], model)
    if representative_images is not None:
        samples = np.asarray(representative_images, dtype=np.float32)

        def representative_dataset():
            for image in samples:
                yield [image[np.newaxis]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()

"""FusedBatchNormalization computes what keras.layers.BatchNormalization computes."""

import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from fmnist_tf.models.batchnorm import FusedBatchNormalization


def twin_layers(shape, **options):
    """Keras' layer and ours, built for `shape`, with the same non-trivial weights."""
    rng = np.random.default_rng(1)
    pair = keras.layers.BatchNormalization(**options), FusedBatchNormalization(**options)
    depth = shape[options.get("axis", -1)]
    values = {"gamma": rng.uniform(0.5, 2.0, depth), "beta": rng.normal(0, 1, depth),
              "moving_mean": rng.normal(0, 1, depth), "moving_variance": rng.uniform(0.5, 2.0, depth)}
    for layer in pair:
        layer.build(shape)
        for name, value in values.items():
            if getattr(layer, name, None) is not None:
                getattr(layer, name).assign(value.astype("float32"))
    return pair


@pytest.mark.parametrize("shape", [(6, 5, 4, 3), (16, 7)])
@pytest.mark.parametrize("options", [{}, {"momentum": 0.5, "epsilon": 1e-2}, {"center": False, "scale": False}])
def test_training_step_matches_keras(shape, options):
    keras_bn, fused_bn = twin_layers(shape, **options)
    inputs = tf.constant(np.random.default_rng(2).normal(3.0, 2.0, shape).astype("float32"))
    weights = tf.constant(np.random.default_rng(3).normal(0, 1, shape).astype("float32"))
    results = []
    for layer in (keras_bn, fused_bn):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            outputs = layer(inputs, training=True)
            loss = tf.reduce_sum(outputs * weights)  # a loss whose gradient depends on every output
        grads = tape.gradient(loss, [inputs] + layer.trainable_weights)
        results.append([outputs, *grads, layer.moving_mean, layer.moving_variance])
    for keras_value, fused_value in zip(*results):
        np.testing.assert_allclose(np.asarray(fused_value), np.asarray(keras_value), rtol=1e-4, atol=1e-4)


def test_inference_uses_moving_statistics_as_keras():
    keras_bn, fused_bn = twin_layers((4, 3, 3, 5))
    inputs = np.random.default_rng(4).normal(1.0, 3.0, (4, 3, 3, 5)).astype("float32")
    np.testing.assert_allclose(fused_bn(inputs, training=False), keras_bn(inputs, training=False), rtol=1e-5, atol=1e-5)
    before = np.asarray(fused_bn.moving_mean)
    fused_bn(inputs, training=False)
    np.testing.assert_array_equal(fused_bn.moving_mean, before)


def test_frozen_layer_normalises_with_moving_statistics_in_training():
    keras_bn, fused_bn = twin_layers((4, 3, 3, 5))
    keras_bn.trainable = fused_bn.trainable = False
    inputs = np.random.default_rng(5).normal(1.0, 3.0, (4, 3, 3, 5)).astype("float32")
    before = np.asarray(fused_bn.moving_variance)
    np.testing.assert_allclose(fused_bn(inputs, training=True), keras_bn(inputs, training=True), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(fused_bn.moving_variance, before)


def test_other_axes_fall_back_to_keras():
    keras_bn, fused_bn = twin_layers((4, 3, 3, 5), axis=1)
    inputs = np.random.default_rng(6).normal(0, 1, (4, 3, 3, 5)).astype("float32")
    np.testing.assert_allclose(fused_bn(inputs, training=True), keras_bn(inputs, training=True), rtol=1e-5, atol=1e-5)


def test_half_precision_inputs_give_compute_dtype_outputs():
    layer = FusedBatchNormalization(dtype="mixed_bfloat16")
    outputs = layer(tf.ones((2, 3, 3, 4), "bfloat16") * tf.range(4, dtype="bfloat16"), training=True)
    assert outputs.dtype == tf.bfloat16 and np.isfinite(np.asarray(tf.cast(outputs, "float32"))).all()


def test_saved_model_loads_in_safe_mode_in_a_fresh_process(tmp_path):
    from fmnist_tf.models import create_model

    model = create_model("deep", width=0.25)
    images = np.random.default_rng(7).random((2, 28, 28, 1)).astype("float32")
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "expected.npy", np.asarray(model(images, training=False)))
    model.save(tmp_path / "deep.keras")
    # only modelio imported, as in `fmnist-tf predict`: loading must not depend on the builders' imports
    script = ("import sys, numpy as np; from fmnist_tf.modelio import load_model; "
              "m = load_model(sys.argv[1] + '/deep.keras'); "
              "assert any(type(l).__name__ == 'FusedBatchNormalization' for l in m.layers); "
              "out = np.asarray(m(np.load(sys.argv[1] + '/images.npy', allow_pickle=False), training=False)); "
              "np.testing.assert_allclose(out, np.load(sys.argv[1] + '/expected.npy', allow_pickle=False), "
              "rtol=1e-5, atol=1e-6)")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]

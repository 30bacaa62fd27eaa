import keras
import numpy as np
import pytest

from fmnist_tf.errors import ConfigError
from fmnist_tf.models import create_model, model_names
from fmnist_tf.models.registry import register


def test_registry_lists_both_cnns():
    assert {"baseline", "deep"} <= set(model_names())


@pytest.mark.parametrize("name", ["baseline", "deep", "alexnet"])
def test_builders_output_probabilities(name):
    model = create_model(name, width=0.25)
    out = np.asarray(model(np.random.rand(3, 28, 28, 1).astype("float32"), training=False))
    assert out.shape == (3, 10)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
    assert all(layer.name for layer in model.layers)


def test_baseline_matches_reference_architecture():
    model = create_model("baseline")
    # Conv32 3x3 (320) + BN(128) + Dense 25088->256 + BN(1024) + Dense 256->10 (Normalization holds constants)
    expected = 320 + 128 + 28 * 28 * 32 * 256 + 256 + 1024 + 2570
    assert model.count_params() == expected
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["InputLayer", "Normalization", "Conv2D", "FusedBatchNormalization", "Flatten", "Dense",
                     "FusedBatchNormalization", "Dropout", "Dense"]


def reference_deep_cnn():
    """The reference deep CNN (REFERENCE.md section 1), built only to measure what ours must undercut."""
    from keras import layers

    def conv(x, filters, kernel):
        return layers.BatchNormalization()(layers.Conv2D(filters, kernel, padding="same", activation="relu")(x))

    inputs = keras.Input((28, 28, 1))
    x = conv(conv(inputs, 32, 3), 32, 3)
    x = conv(conv(x, 64, 3), 64, 3)
    x = layers.MaxPooling2D()(conv(x, 128, 5))
    x = layers.Flatten()(layers.MaxPooling2D()(conv(x, 256, 5)))
    x = layers.BatchNormalization()(layers.Dense(512, activation="relu")(x))
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(x))


def test_deep_costs_a_fraction_of_the_reference_deep_cnn():
    from fmnist_tf.models.flops import forward_flops

    reference = reference_deep_cnn()
    assert abs(reference.count_params() - 7.52e6) < 0.01e6  # the reference's published size
    ours = create_model("deep")
    assert forward_flops(ours) < forward_flops(reference) / 10
    assert ours.count_params() < reference.count_params() / 3
    convs = [layer for layer in ours.layers if isinstance(layer, keras.layers.Conv2D)]
    assert all(layer.kernel_size == (3, 3) for layer in convs) and len(convs) == 5


def test_width_multiplier_scales_channels():
    narrow = create_model("deep", width=0.5).get_layer("stage3_b_conv").filters
    wide = create_model("deep", width=2.0).get_layer("stage3_b_conv").filters
    assert (narrow, wide) == (64, 256)


def test_unknown_model_and_duplicate_registration():
    with pytest.raises(ConfigError, match="unknown model 'nope'; registered models: .*deep"):
        create_model("nope")
    with pytest.raises(ValueError, match="registered twice"):
        register("deep")(lambda x, n, **kw: x)


def test_flop_count_of_a_known_network():
    from fmnist_tf.models.flops import forward_flops

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    outputs = keras.layers.Dense(5)(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    assert forward_flops(model) == 2 * 8 * 8 * 9 * 3 * 4 + 2 * 256 * 5

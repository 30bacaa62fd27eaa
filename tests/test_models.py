import keras
import numpy as np
import pytest

from fmnist_tf.errors import ConfigError
from fmnist_tf.models import create_model, model_names
from fmnist_tf.models.registry import register


def test_registry_lists_both_cnns():
    assert {"baseline", "deep"} <= set(model_names())


@pytest.mark.parametrize("name", ["baseline", "deep"])
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
    assert kinds == ["InputLayer", "Normalization", "Conv2D", "BatchNormalization", "Flatten", "Dense",
                     "BatchNormalization", "Dropout", "Dense"]


def test_deep_is_a_fraction_of_the_reference_deep_cnn():
    reference_params = 7_520_000
    assert create_model("deep").count_params() < reference_params / 10
    convs = [layer for layer in create_model("deep").layers if isinstance(layer, keras.layers.Conv2D)]
    assert all(layer.kernel_size == (3, 3) for layer in convs) and len(convs) == 6


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

import sys

import h5py
import keras
import numpy as np
import pytest

from fmnist_tf.config import load_config
from fmnist_tf.errors import ConfigError
from fmnist_tf.models import create_model
from fmnist_tf.models.batchnorm import FusedBatchNormalization
from fmnist_tf.models.efficientnet import GREY_TO_RGB

TINY = dict(width=0.25, input_size=32, dropout=0.2)


def items(count, seed=0):
    return np.random.default_rng(seed).random((count, 28, 28, 1), dtype=np.float32)


@pytest.fixture(scope="module")
def tiny():
    return create_model("efficientnet_b0", **TINY)


def test_outputs_probabilities_from_28px_items(tiny):
    out = np.asarray(tiny(items(3), training=False))
    assert out.shape == (3, 10) and out.dtype == np.float32
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
    assert tiny.get_layer("predictions").dtype_policy.compute_dtype == "float32"


def test_grey_input_is_repeated_to_rgb_for_a_three_channel_stem(tiny):
    names = [layer.name for layer in tiny.layers]
    assert names[:5] == ["image", "standardize", "upscale", GREY_TO_RGB, "stem_conv_pad"]
    assert isinstance(tiny.get_layer(GREY_TO_RGB), keras.layers.Concatenate)
    assert tiny.get_layer(GREY_TO_RGB).output.shape[1:] == (32, 32, 3)
    assert tiny.get_layer("stem_conv").kernel.shape[2] == 3
    # keras.applications' own Rescaling(1/255) and Normalization are left out: the input is standardised
    assert not any(isinstance(layer, (keras.layers.Rescaling, keras.layers.Normalization))
                   for layer in tiny.layers[2:])


def test_backbone_layers_are_layers_of_the_model(tiny):
    """A flat graph: the Grad-CAM code finds conv feature maps of side >= 7 in model.layers."""
    assert not any(isinstance(layer, keras.Model) for layer in tiny.layers)
    names = [layer.name for layer in tiny.layers]
    assert len(names) == len(set(names))
    maps = [layer for layer in tiny.layers if len(layer.output.shape) == 4 and layer.output.shape[1] >= 7]
    convs = [layer for layer in maps if isinstance(layer, keras.layers.Conv2D)]
    assert convs[0].name == "stem_conv" and convs[0].output.shape[1] == 16
    assert convs[-1].name == "block3a_expand_conv" and convs[-1].output.shape[1] == 8  # stride 2 follows
    # BatchNorm computed by the fused kernel (same arithmetic, faster training)
    batchnorms = [layer for layer in tiny.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert batchnorms and all(isinstance(layer, FusedBatchNormalization) for layer in batchnorms)
    # the layers are the model's own, not shared with the backbone they were built in
    features = keras.Model(tiny.input, tiny.get_layer("block2b_add").output)
    assert features(items(2)).shape == (2, 8, 8, 8)


def test_input_size_is_checked_and_upscales_inside_the_model():
    for size in (28, 31):
        with pytest.raises(ConfigError, match="efficientnet_b0 needs input_size >= 32"):
            create_model("efficientnet_b0", width=0.25, input_size=size)
    model = create_model("efficientnet_b0", width=0.25, input_size=48)
    upscale = model.get_layer("upscale")
    assert isinstance(upscale, keras.layers.Resizing) and (upscale.height, upscale.width) == (48, 48)
    assert model.get_layer("stem_conv").output.shape[1] == 24


def test_bad_settings_fail_before_building(tmp_path):
    missing = tmp_path / "nope_notop.h5"
    with pytest.raises(ConfigError, match=f"weights file {missing} does not exist") as error:
        create_model("efficientnet_b0", width=1.0, weights=str(missing))
    assert "\n" not in str(error.value)
    (tmp_path / "b0_notop.h5").write_bytes(b"")
    with pytest.raises(ConfigError, match="only fits width 1.0, got width 0.5"):
        create_model("efficientnet_b0", width=0.5, weights=str(tmp_path / "b0_notop.h5"))
    with pytest.raises(ConfigError, match="backend must be one of keras, efficientnet"):
        create_model("efficientnet_b0", width=0.25, backend="torch")


def test_weights_file_round_trip(tmp_path):
    """A notop file in the legacy layout of keras.applications' ImageNet files, loaded by our builder."""
    from keras.src.legacy.saving import legacy_h5_format

    reference = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(32, 32, 3),
                                                  pooling="avg")
    path = tmp_path / "efficientnetb0_notop.h5"
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, reference)
    model = create_model("efficientnet_b0", width=1.0, input_size=32, weights=str(path))
    for name in ("stem_conv", "block4a_expand_conv", "top_conv"):
        np.testing.assert_array_equal(model.get_layer(name).kernel.numpy(),
                                      reference.get_layer(name).kernel.numpy())

    not_hdf5 = tmp_path / "broken_notop.h5"
    not_hdf5.write_text("not an HDF5 file")
    with pytest.raises(ConfigError, match=f"cannot load weights file {not_hdf5} into the keras") as error:
        create_model("efficientnet_b0", width=1.0, weights=str(not_hdf5))
    assert "\n" not in str(error.value)


def test_efficientnet_package_backend_saves_and_reloads_in_safe_mode(tmp_path, monkeypatch):
    pytest.importorskip("efficientnet")
    model = create_model("efficientnet_b0", backend="efficientnet", **TINY)
    assert model.get_layer(GREY_TO_RGB).output.shape[1:] == (32, 32, 3)
    assert model.get_layer("stem_conv").kernel.shape[2] == 3
    # its FixedDropout and swish are replaced by core Keras, its BatchNorm by ours: nothing of the package
    # is left to load
    assert all(type(layer).__module__.startswith(("keras", "fmnist_tf")) for layer in model.layers)
    assert any(isinstance(layer, FusedBatchNormalization) for layer in model.layers)
    path = tmp_path / "b0.keras"
    model.save(path)
    for name in ("swish", "FixedDropout"):  # as in a process that never imported the package
        monkeypatch.delitem(keras.saving.get_custom_objects(), name, raising=False)
    reloaded = keras.models.load_model(path, compile=False, safe_mode=True)
    x = items(4, seed=1)
    np.testing.assert_array_equal(np.asarray(model(x, training=False)), np.asarray(reloaded(x, training=False)))


def test_efficientnet_backend_without_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet", None)
    monkeypatch.setitem(sys.modules, "efficientnet.tfkeras", None)
    with pytest.raises(ConfigError, match=r"backend efficientnet needs the efficientnet package: "
                                          r"pip install \.\[efficientnet\]"):
        create_model("efficientnet_b0", backend="efficientnet", **TINY)


def test_one_training_step(tiny):
    model = keras.models.clone_model(tiny)
    # eager: tracing the ~240-layer train step takes 30-60 s on a CPU; the layers are core Keras ones
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  run_eagerly=True)
    before = model.get_layer("stem_conv").kernel.numpy()
    history = model.fit(items(8, seed=2), np.arange(8) % 10, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert not np.array_equal(model.get_layer("stem_conv").kernel.numpy(), before)


def test_packaged_config():
    config = load_config("efficientnet_b0")
    assert (config.model, config.input_size, config.width, config.dropout) == ("efficientnet_b0", 32, 1.0, 0.2)
    assert (config.backend, config.weights, config.schedule) == ("keras", "", "cosine")

import keras
import numpy as np
import pytest

from fmnist_tf.config import load_config
from fmnist_tf.errors import ConfigError
from fmnist_tf.models import create_model
from fmnist_tf.models.vgg import CAM_GAP, CAM_LOGITS, FC_LOGITS


def cam_side(model):
    return model.get_layer(CAM_GAP).input.shape[1]


@pytest.mark.parametrize("input_size, side, pools", [(0, 7, 2), (32, 8, 2), (56, 7, 3), (224, 7, 5)])
def test_pools_stop_before_the_cam_map_drops_below_7(input_size, side, pools):
    model = create_model("vgg_rescam", width=0.0625, input_size=input_size)
    assert cam_side(model) == side
    assert sum(isinstance(layer, keras.layers.MaxPooling2D) for layer in model.layers) == pools


@pytest.mark.parametrize("input_size, side, pools", [(0, 14, 1), (56, 14, 2)])
def test_cam_side_keeps_a_finer_cam_map(input_size, side, pools):
    model = create_model("vgg_rescam", width=0.0625, input_size=input_size, cam_side=14)
    assert cam_side(model) == side
    assert sum(isinstance(layer, keras.layers.MaxPooling2D) for layer in model.layers) == pools


def test_cam_side_is_refused_by_models_without_a_cam_map():
    with pytest.raises(ConfigError, match="'deep' does not use cam_side"):
        create_model("deep", cam_side=14)


def test_thirteen_convs_and_the_two_branches_meet_in_a_product():
    model = create_model("vgg_rescam", width=0.0625)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 13 and all(layer.kernel_size == (3, 3) for layer in convs)
    product = model.get_layer("rescam_product")
    assert isinstance(product, keras.layers.Multiply)
    assert {node.operation.name for node in product._inbound_nodes[0].parent_nodes} == {FC_LOGITS, CAM_LOGITS}
    out = np.asarray(model(np.random.rand(2, 28, 28, 1).astype("float32"), training=False))
    assert out.shape == (2, 10)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_width_scales_convs_and_fully_connected_layers():
    model = create_model("vgg_rescam", width=0.125)
    assert model.get_layer("block5_conv3_conv").filters == 64
    assert model.get_layer("fc1").units == 512 and model.get_layer("fc2").units == 512


def test_models_without_an_input_size_refuse_one():
    with pytest.raises(ConfigError, match="'deep' does not use input_size"):
        create_model("deep", input_size=64)
    assert create_model("deep", width=0.125, input_size=28).input_shape == (None, 28, 28, 1)  # its own size
    assert cam_side(create_model("vgg_rescam", width=0.0625, input_size=28)) == 7


def test_vgg_config_is_the_reference_recipe():
    config = load_config("vgg_rescam")
    assert (config.optimizer, config.learning_rate, config.momentum, config.weight_decay) == ("sgd", 1e-3, 0.9, 5e-4)
    assert (config.schedule, config.step_every, config.step_factor) == ("step", 7, 0.1)
    assert (config.batch_size, config.epochs, config.flip, config.vertical_flip, config.erasing) == (8, 35, True, True, 0.5)


def test_both_branches_start_from_pytorchs_linear_init():
    # Keras' wider Glorot default made the product head diverge under the reference recipe.
    model = create_model("vgg_rescam", width=0.125)
    for name in ("fc1", "fc2", FC_LOGITS, CAM_LOGITS):
        kernel = np.asarray(model.get_layer(name).kernel)
        bound = 1 / np.sqrt(kernel.shape[0])
        assert np.abs(kernel).max() <= bound
        assert kernel.std() == pytest.approx(bound / np.sqrt(3), rel=0.1)

"""TinyYoloV3 (the layout of the reference Keras implementation) as a functional Keras model.

Input: float RGB images in [0, 1], (B, S, S, 3), S a multiple of 32. Outputs (float32 even under
mixed precision), named after their heads: "head32" (B, S/32, S/32, A, 5 + C) and "head16"
(B, S/16, S/16, A, 5 + C), raw (no activation), laid out as described in `yolo.boxes`.

Layer names: the backbone's layers start with "body_" (body_conv1 ... body_conv8, body_pool1 ...
body_pool6; conv blocks are NAME_conv, NAME_bn, NAME_leaky), head layers with "head32_" / "head16_".
"""

import math
import re

import keras
from keras import layers

from fmnist_tf.errors import ConfigError
from fmnist_tf.models.batchnorm import FusedBatchNormalization
from fmnist_tf.models.cnn import channels
from fmnist_tf.models.registry import register
from yolo.boxes import STRIDES, check_input_size

WEIGHT_DECAY = 5e-4
LEAKY_SLOPE = 0.1
# x1 (the stride-16 route) is body_conv5's output; x2 (the stride-32 route) is body_conv8's.
_ROUTE_LAST = {"x1": (5, 4), "x2": (8, 6)}  # last conv and pool index in the body up to that route


def _decay():
    return keras.regularizers.L2(WEIGHT_DECAY)


def conv_block(x, filters, kernel, name):
    """Darknet conv: Conv (no bias, L2 5e-4, same padding) -> BatchNorm -> LeakyReLU 0.1."""
    x = layers.Conv2D(filters, kernel, padding="same", use_bias=False, kernel_regularizer=_decay(),
                      name=f"{name}_conv")(x)
    x = FusedBatchNormalization(name=f"{name}_bn")(x)
    return layers.LeakyReLU(negative_slope=LEAKY_SLOPE, name=f"{name}_leaky")(x)


def tiny_body(x, width):
    """16, pool, 32, pool, 64, pool, 128, pool, 256 (x1), pool, 512, pool(stride 1), 1024, 256 1x1 (x2)."""
    for index, base in enumerate((16, 32, 64, 128), start=1):
        x = conv_block(x, channels(base, width), 3, f"body_conv{index}")
        x = layers.MaxPooling2D(2, strides=2, padding="same", name=f"body_pool{index}")(x)
    x1 = conv_block(x, channels(256, width), 3, "body_conv5")
    x = layers.MaxPooling2D(2, strides=2, padding="same", name="body_pool5")(x1)
    x = conv_block(x, channels(512, width), 3, "body_conv6")
    x = layers.MaxPooling2D(2, strides=1, padding="same", name="body_pool6")(x)
    x = conv_block(x, channels(1024, width), 3, "body_conv7")
    x2 = conv_block(x, channels(256, width), 1, "body_conv8")
    return x1, x2


def head_output(x, num_anchors, num_classes, name):
    """1x1 linear conv with bias to A * (5 + C), reshaped to (g, g, A, 5 + C), in float32."""
    grid = x.shape[1]
    x = layers.Conv2D(num_anchors * (5 + num_classes), 1, kernel_regularizer=_decay(), dtype="float32",
                      name=f"{name}_out")(x)
    return layers.Reshape((grid, grid, num_anchors, 5 + num_classes), dtype="float32", name=name)(x)


def _check_count(value, what):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a positive int, got {value!r}")


@register("tinyyolov3", task="detect")
def tiny_yolov3(input_size=416, num_classes=10, num_anchors_per_head=3, width=1.0, name="tiny_yolov3"):
    """TinyYoloV3 on (B, S, S, 3) [0, 1] images -> [head32, head16] raw tensors (see module doc).

    `width` scales every hidden channel count (0.25 gives a model small enough for unit tests).
    """
    input_size = check_input_size(input_size)
    _check_count(num_classes, "num_classes")
    _check_count(num_anchors_per_head, "num_anchors_per_head")
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not math.isfinite(width) or width <= 0:
        raise ConfigError(f"width must be a positive number, got {width!r}")
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x1, x2 = tiny_body(inputs, width)

    y32 = conv_block(x2, channels(512, width), 3, "head32_conv")
    y32 = head_output(y32, num_anchors_per_head, num_classes, f"head{STRIDES[0]}")

    y16 = conv_block(x2, channels(128, width), 1, "head16_reduce")
    y16 = layers.UpSampling2D(2, name="head16_upsample")(y16)
    y16 = layers.Concatenate(name="head16_concat")([y16, x1])
    y16 = conv_block(y16, channels(256, width), 3, "head16_conv")
    y16 = head_output(y16, num_anchors_per_head, num_classes, f"head{STRIDES[1]}")
    return keras.Model(inputs, [y32, y16], name=name)


def _in_body(layer_name, through):
    match = re.fullmatch(r"body_(conv|pool)(\d+)(_\w+)?", layer_name)
    if not match:
        return False
    last_conv, last_pool = _ROUTE_LAST[through]
    return int(match.group(2)) <= (last_conv if match.group(1) == "conv" else last_pool)


def body_layers(model, through="x2"):
    """The backbone's layers in model order: through="x2" (default) the whole body shared by both
    heads (body_conv1 .. body_conv8); through="x1" only up to the stride-16 route (body_conv5, the
    first 20 layers with the input, which is what the reference freezes with freeze_body=1)."""
    if through not in _ROUTE_LAST:
        raise ConfigError(f"through must be one of {sorted(_ROUTE_LAST)}, got {through!r}")
    return [layer for layer in model.layers if _in_body(layer.name, through)]


def freeze_body(model, frozen=True, through="x2"):
    """Set the body layers' trainable flag to `not frozen` (frozen BatchNorm runs in inference
    mode); returns how many layers it set. Compile the model again afterwards."""
    chosen = body_layers(model, through)
    for layer in chosen:
        layer.trainable = not frozen
    return len(chosen)

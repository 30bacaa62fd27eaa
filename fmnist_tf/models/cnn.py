"""The baseline CNN (faithful to the reference), our deep CNN, and the blocks other families share."""

from keras import layers

from fmnist_tf.models.batchnorm import FusedBatchNormalization
from fmnist_tf.models.registry import register


def channels(base, width):
    return max(1, round(base * width))


def conv_relu_bn(x, filters, name):
    """The reference's order: Conv -> ReLU -> BatchNorm."""
    x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"{name}_conv")(x)
    return FusedBatchNormalization(name=f"{name}_bn")(x)


def conv_bn_relu(x, filters, name):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = FusedBatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def resize_input(x, input_size, name="upscale"):
    """Bilinear resize of the (B, 28, 28, C) input to input_size; 0 or the current side keeps it."""
    if input_size in (0, x.shape[1]):
        return x
    return layers.Resizing(input_size, input_size, interpolation="bilinear", name=name)(x)


def classifier(x, num_classes):
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(x)


@register("baseline")
def baseline_cnn(x, num_classes, *, width=1.0, dropout=0.5):
    """Conv32 -> ReLU -> BN -> Flatten -> Dense256 -> ReLU -> BN -> Dropout -> Dense (6.43 M params)."""
    x = conv_relu_bn(x, channels(32, width), "block1")
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(channels(256, width), activation="relu", name="fc1")(x)
    x = FusedBatchNormalization(name="fc1_bn")(x)
    x = layers.Dropout(dropout, name="fc1_dropout")(x)
    return classifier(x, num_classes)


# (filters, convs) per stage at 28, 14 and 7 px. One conv at 28 px: a second one there cost a
# fifth of the step time (measured) for features that pooling then coarsens anyway.
DEEP_STAGES = ((32, 1), (64, 2), (128, 2))


@register("deep")
def deep_cnn(x, num_classes, *, width=1.0, dropout=0.4):
    """Three VGG-style stages of 3x3 Conv-BN-ReLU (28, 14, 7 px), then a dense head on the 7x7 map.

    The head keeps where features are (sleeve length, collar), which global pooling would discard;
    it holds most parameters but few FLOPs. All convs are 3x3: ~1/16 of the reference deep CNN's FLOPs.
    """
    for stage, (base, convs) in enumerate(DEEP_STAGES, start=1):
        filters = channels(base, width)
        for index in range(convs):
            x = conv_bn_relu(x, filters, f"stage{stage}_{'ab'[index]}")
        if stage < len(DEEP_STAGES):
            x = layers.MaxPooling2D(2, name=f"stage{stage}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(channels(256, width), use_bias=False, name="fc1")(x)
    x = FusedBatchNormalization(name="fc1_bn")(x)
    x = layers.ReLU(name="fc1_relu")(x)
    x = layers.Dropout(dropout, name="fc1_dropout")(x)
    return classifier(x, num_classes)


# AlexNet's five convs (11x11/4, 5x5, then three 3x3) and two wide FC layers, scaled to 28x28 items:
# (filters, kernel, max-pool after). The reference transfer system started from AlexNet.
ALEXNET_CONVS = ((64, 5, True), (128, 5, True), (192, 3, False), (128, 3, False), (128, 3, True))


@register("alexnet")
def alexnet_like(x, num_classes, *, width=1.0, dropout=0.5):
    """AlexNet-like, without BatchNorm as the original: Conv-ReLU layers with max-pools at 28, 14 and
    7 px, then two Dense 1024-ReLU-Dropout layers (3.04 M params, 145 MFLOP per image at width 1)."""
    for index, (base, kernel, pool) in enumerate(ALEXNET_CONVS, start=1):
        x = layers.Conv2D(channels(base, width), kernel, padding="same", activation="relu", name=f"conv{index}")(x)
        if pool:
            x = layers.MaxPooling2D(2, name=f"conv{index}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    for index in (1, 2):
        x = layers.Dense(channels(1024, width), activation="relu", name=f"fc{index}")(x)
        x = layers.Dropout(dropout, name=f"fc{index}_dropout")(x)
    return classifier(x, num_classes)

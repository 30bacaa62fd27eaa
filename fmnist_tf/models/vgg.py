"""VGG16 with BatchNorm and the residual CAM head (shared/REFERENCE.md section 2)."""

import keras
from keras import layers

from fmnist_tf.models.cnn import channels, conv_bn_relu, resize_input
from fmnist_tf.models.registry import register

# (filters, convs) of VGG16's five blocks
VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
DEFAULT_CAM_SIDE = 7  # a block ends in a max-pool only while the map stays at least this wide
CAM_DROPOUT = 0.3   # the reference's dropout before the CAM branch's dense layer
# Layer names the CAM code relies on (fmnist_tf.cam): the feature map is the input of CAM_GAP.
CAM_GAP, CAM_LOGITS, FC_LOGITS = "cam_gap", "cam_logits", "fc_logits"


def linear_init():
    """PyTorch's default Linear init, U(+-1/sqrt(fan_in)), as the reference had. Keras' Glorot default
    is ~2.3x wider on the 25088-wide FC input, and the product of the two logit vectors turns that
    into divergence under the reference recipe (measured at width 1: FC logits past 50 and the loss
    past 40 within 60 SGD steps; with this init, logits stay below 3 and the loss falls)."""
    return keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform")


def vgg16_bn_features(x, width, cam_side=DEFAULT_CAM_SIDE):
    """The 13 Conv-BN-ReLU layers. Every block ends in a 2x2 max-pool as in VGG16, except that a pool
    which would take the map below `cam_side` is left out: 224 px gives the reference's 7x7, 28 px keeps
    blocks 3-5 at 7x7 instead of shrinking to 1x1, where a CAM would be meaningless. A larger
    `cam_side` (14) gives a finer CAM for tighter boxes, at about 4x the FLOPs."""
    for block, (base, convs) in enumerate(VGG16_BLOCKS, start=1):
        for index in range(1, convs + 1):
            x = conv_bn_relu(x, channels(base, width), f"block{block}_conv{index}")
        if x.shape[1] // 2 >= cam_side:
            x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    return x


def fc_branch(features, num_classes, width, dropout):
    """Flatten -> FC 4096 -> ReLU -> Dropout -> FC 4096 -> ReLU -> Dropout -> FC classes (logits)."""
    x = layers.Flatten(name="fc_flatten")(features)
    for index in (1, 2):
        x = layers.Dense(channels(4096, width), activation="relu", kernel_initializer=linear_init(),
                         name=f"fc{index}")(x)
        x = layers.Dropout(dropout, name=f"fc{index}_dropout")(x)
    return layers.Dense(num_classes, kernel_initializer=linear_init(), name=FC_LOGITS)(x)


def cam_branch(features, num_classes):
    """GAP -> Dropout 0.3 -> dense to class logits; its kernel W gives CAM_c = sum_k W[k, c] F_k."""
    x = layers.GlobalAveragePooling2D(name=CAM_GAP)(features)
    x = layers.Dropout(CAM_DROPOUT, name="cam_dropout")(x)
    return layers.Dense(num_classes, kernel_initializer=linear_init(), name=CAM_LOGITS)(x)


@register("vgg_rescam")
def vgg_rescam(x, num_classes, *, width=1.0, dropout=0.5, input_size=0, cam_side=DEFAULT_CAM_SIDE):
    """VGG16-BN whose class logits are the element-wise product of an FC branch and a CAM branch,
    both on the last feature map; one softmax (and one cross-entropy) on the product."""
    features = vgg16_bn_features(resize_input(x, input_size), width, cam_side)
    product = layers.Multiply(name="rescam_product")([fc_branch(features, num_classes, width, dropout),
                                                      cam_branch(features, num_classes)])
    return layers.Activation("softmax", dtype="float32", name="predictions")(product)

"""A ZFNet-like embedding network for the triplet loss (shared/REFERENCE.md section 5)."""

from keras import layers

from fmnist_tf.models.batchnorm import FusedBatchNormalization
from fmnist_tf.models.cnn import channels
from fmnist_tf.models.registry import register

# PyTorch's default slope (the reference network was PyTorch); Keras' default of 0.3 is far leakier.
LEAKY_SLOPE = 0.01
# (filters, convs, kernel) per stage at 28, 14 and 7 px. ZFNet, scaled to 28x28 and to ~48 MFLOP per
# image (about the `deep` classifier's cost): its large first kernel (7x7 stride 2 on 224 px) becomes a
# 5x5 stride 1; its 5x5 second conv two 3x3 at 14 px (same receptive field, 0.72 of the cost); its
# three convs at the smallest scale two 3x3 at 7 px; its FC 4096 -> 4096 one dense layer of 256.
ZF_STAGES = ((32, 1, 5), (64, 2, 3), (128, 2, 3))
FC_UNITS = 256


def conv_bn_leaky(x, filters, kernel, name):
    """Conv -> BatchNorm -> LeakyReLU, as in the reference."""
    x = layers.Conv2D(filters, kernel, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = FusedBatchNormalization(name=f"{name}_bn")(x)
    return layers.LeakyReLU(LEAKY_SLOPE, name=f"{name}_leaky")(x)


def embedding_head(x, embedding_size):
    """Dense(embedding_size) then L2 normalisation, both in float32 so that mixed precision still
    gives float32 unit vectors. The last layer is the UnitNormalization named "embedding": that is
    how `fmnist_tf.modelio.is_embedding_model` recognises embedding models."""
    x = layers.Dense(embedding_size, dtype="float32", name="projection")(x)
    return layers.UnitNormalization(dtype="float32", name="embedding")(x)


@register("embedding", task="embed")
def zfnet_embedding(x, num_classes, *, width=1.0, dropout=0.0, embedding_size=128):
    """Three stages of Conv-BN-LeakyReLU (one 5x5 at 28 px, two 3x3 at 14 px, two 3x3 at 7 px, max
    pooling between), Flatten, Dense 256-BN-LeakyReLU, optional Dropout, then Dense(embedding_size)
    and L2 normalisation: (B, embedding_size) float32 unit vectors.

    `num_classes` is ignored (the registry passes it to every builder): an embedding has no class
    head, and the number of classes only matters to the kNN classifier that scores it. About 48 MFLOP
    and 1.9 M parameters per image at width 1, most parameters in the dense layer on the 7x7 map.
    """
    del num_classes
    for stage, (base, convs, kernel) in enumerate(ZF_STAGES, start=1):
        for index in range(convs):
            x = conv_bn_leaky(x, channels(base, width), kernel, f"stage{stage}_{'ab'[index]}")
        if stage < len(ZF_STAGES):
            x = layers.MaxPooling2D(2, name=f"stage{stage}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(channels(FC_UNITS, width), use_bias=False, name="fc1")(x)
    x = FusedBatchNormalization(name="fc1_bn")(x)
    x = layers.LeakyReLU(LEAKY_SLOPE, name="fc1_leaky")(x)
    if dropout > 0:
        x = layers.Dropout(dropout, name="fc1_dropout")(x)
    return embedding_head(x, embedding_size)

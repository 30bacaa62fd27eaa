"""EfficientNet-B0 on upscaled Fashion-MNIST items, from scratch or from a local ImageNet weights file.

Two libraries can build the backbone (config key `backend`): `keras` (keras.applications, the
default) or `efficientnet` (the `efficientnet` package, pip install .[efficientnet]). Either way the
backbone is built on its own and given its weights, then copies of its layers (weights included) are
called on our input tensor: the returned graph is flat (every conv is a layer of the outer model, where
the Grad-CAM code finds it) and holds core Keras layers only, so the model saves to .keras and reloads
in safe mode without either library's custom objects.
"""

import importlib
from pathlib import Path

import keras
from keras import layers

from fmnist_tf.errors import ConfigError, first_line
from fmnist_tf.models.batchnorm import FusedBatchNormalization
from fmnist_tf.models.cnn import classifier, resize_input
from fmnist_tf.models.registry import register

NAME = "efficientnet_b0"
DEFAULT_INPUT_SIZE = 32
MIN_INPUT_SIZE = 32  # five stride-2 stages: both libraries refuse less
BACKENDS = ("keras", "efficientnet")
# The layer keras.applications puts first after its own preprocessing (see backbone_features).
KERAS_STEM = "stem_conv_pad"
GREY_TO_RGB, HEAD_DROPOUT = "grey_to_rgb", "head_dropout"


def _weights_file(weights, width):
    """The weights path checked before anything is built; None for "from scratch"."""
    if not weights:
        return None
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ConfigError(f"{NAME}: weights file {path} does not exist (give a local EfficientNet-B0 notop "
                          f".h5, or leave weights empty to train from scratch)")
    if width != 1.0:
        raise ConfigError(f"{NAME}: weights file {path} only fits width 1.0, got width {width}")
    return path


def _load_weights(backbone, path, backend):
    try:
        backbone.load_weights(str(path))
    except (ValueError, OSError, KeyError, TypeError) as exc:
        raise ConfigError(f"{NAME}: cannot load weights file {path} into the {backend} backbone "
                          f"(it must be EfficientNet-B0 notop weights, include_top=False, from the same "
                          f"library): {first_line(exc)}") from exc


def _keras_backbone(side, width):
    """keras.applications EfficientNet-B0 without the classifier, ending in global average pooling.

    Its public constructor has no width argument: another width goes through the function it wraps."""
    options = dict(include_top=False, weights=None, input_shape=(side, side, 3), pooling="avg")
    if width == 1.0:
        return keras.applications.EfficientNetB0(**options, name=NAME)
    try:
        from keras.src.applications.efficientnet import EfficientNet
    except ImportError as exc:
        raise ConfigError(f"{NAME}: this Keras version offers EfficientNet-B0 at width 1.0 only, "
                          f"got width {width}") from exc
    return EfficientNet(width_coefficient=width, depth_coefficient=1.0, default_size=224, name=NAME, **options)


def _efficientnet_package_backbone(side, width):
    """The `efficientnet` package's B0 without the classifier, ending in global average pooling."""
    try:
        efficientnet = importlib.import_module("efficientnet")
        efn = importlib.import_module("efficientnet.tfkeras")
    except ImportError as exc:
        raise ConfigError("backend efficientnet needs the efficientnet package: "
                          "pip install .[efficientnet]") from exc
    options = dict(include_top=False, weights=None, input_shape=(side, side, 3), pooling="avg")
    if width == 1.0:
        return efn.EfficientNetB0(**options)
    generic = getattr(importlib.import_module("efficientnet.model"), "EfficientNet", None)
    inject = getattr(efficientnet, "inject_tfkeras_modules", None)
    if generic is None or inject is None:
        raise ConfigError(f"{NAME}: this efficientnet package builds B0 at width 1.0 only, got width {width}")
    return inject(generic)(width, 1.0, 224, model_name="efficientnet-b0", **options)


def _fused_batchnorm(layer):
    """`convert` for either backbone: its BatchNormalization layers become our fused one (same arithmetic,
    fmnist_tf/models/batchnorm.py), which trains faster on a CPU."""
    if isinstance(layer, layers.BatchNormalization):
        return FusedBatchNormalization
    return type(layer)


def _core_layer(layer):
    """`convert` for the `efficientnet` package's backbone: its own pieces become the core Keras ones they
    equal, so a saved model needs neither the package nor its global custom objects. Its swish
    (x * sigmoid(x), in Activation and Conv2D layers) becomes keras.activations.swish; FixedDropout, a
    Dropout working around a tf.keras 1 bug with None in noise_shape that Keras 3 does not have, a Dropout."""
    activation = getattr(layer, "activation", None)
    if getattr(activation, "__module__", "").startswith("efficientnet"):
        if activation.__name__ != "swish":
            raise ConfigError(f"{NAME}: unknown activation {activation.__name__} in the efficientnet package")
        layer.activation = keras.activations.swish  # the backbone is discarded: changing it in place is fine
    if isinstance(layer, layers.Dropout):
        return layers.Dropout
    return _fused_batchnorm(layer)


def copy_layers(graph, x, convert=type):
    """Call copies of the layers of functional model `graph` on tensor `x`, in graph order; return the output.

    Unlike `graph(x)`, which nests the model as one layer, the copies become layers of the caller's model,
    and unlike `graph`'s own layers they belong to that graph alone, so `layer.output` is a tensor of it
    (the usual `keras.Model(model.input, model.get_layer(name).output)` works). Same names and config,
    weights copied. `convert(layer)` gives the class of the copy: another class swaps the layer for one
    that computes the same, built from the same config."""
    pairs, outputs = [], []

    def copy(layer):
        pairs.append((layer, convert(layer).from_config(layer.get_config())))
        return pairs[-1][1]

    def call_and_keep(layer, *args, **kwargs):
        outputs.append(layer(*args, **kwargs))
        return outputs[-1]

    # clone_model walks the graph in order; the model it returns (on a copy of x) is not used
    keras.models.clone_model(graph, input_tensors=x, clone_function=copy, call_function=call_and_keep)
    for layer, new in pairs:
        new.set_weights(layer.get_weights())
    return outputs[-1]


def backbone_features(rgb, *, width, weights, backend):
    """Globally pooled EfficientNet-B0 features of the (B, S, S, 3) tensor `rgb`."""
    if backend not in BACKENDS:
        raise ConfigError(f"{NAME}: backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    path = _weights_file(weights, width)
    side = rgb.shape[1]
    if backend == "keras":
        backbone = _keras_backbone(side, width)
        if path:
            _load_weights(backbone, path, backend)
        # keras.applications' EfficientNet (unlike V2) always starts with Rescaling(1/255) and a
        # Normalization (ImageNet statistics once weights are loaded): our input is already standardised
        # with the training set's statistics, so those layers would normalise it twice. The copy
        # starts after them, at the stem.
        trunk = keras.Model(backbone.get_layer(KERAS_STEM).input, backbone.output)
        return copy_layers(trunk, rgb, convert=_fused_batchnorm)
    backbone = _efficientnet_package_backbone(side, width)
    if path:
        _load_weights(backbone, path, backend)
    return copy_layers(backbone, rgb, convert=_core_layer)  # this package has no preprocessing layers


@register(NAME)
def efficientnet_b0(x, num_classes, *, width=1.0, dropout=0.2, input_size=0, weights="", backend="keras"):
    """EfficientNet-B0 on the standardised grey input upscaled to `input_size` (0: 32) and repeated to
    three channels, so ImageNet stem weights apply; then global average pooling -> Dropout -> softmax.
    `weights`: a local EfficientNet-B0 notop .h5 (width 1.0 only), empty for random initialisation."""
    size = input_size or DEFAULT_INPUT_SIZE
    if size < MIN_INPUT_SIZE:
        raise ConfigError(f"{NAME} needs input_size >= {MIN_INPUT_SIZE}, got {size}")
    x = resize_input(x, size)
    rgb = layers.Concatenate(name=GREY_TO_RGB)([x, x, x])
    features = backbone_features(rgb, width=width, weights=weights, backend=backend)
    features = layers.Dropout(dropout, name=HEAD_DROPOUT)(features)
    return classifier(features, num_classes)

"""Transfer learning: a new class head on a backbone taken from a saved model or keras.applications.

The backbone is a nested functional model named "backbone": standardised (B, 28, 28, 1) images in,
a feature vector out. Cut from one of our runs, it is everything between the run's standardisation
layer and its class head (the head's input; for vgg_rescam's two-branch head, the CAM branch's
pooled features; for an embedding run, the whole embedding). The new run standardises with its
own data's statistics, so the backbone sees inputs distributed as in its own training.
"""

from pathlib import Path

import keras
from keras import layers

from fmnist_tf.errors import ConfigError, FmnistError, ModelFileError, first_line
from fmnist_tf.models.cnn import classifier, resize_input
from fmnist_tf.models.registry import register

BACKBONE = "backbone"
# keras.applications families by the input range their ImageNet weights expect, as (scale, offset)
# from a standardised input (mean 0, std 1) to ImageNet's pixel statistics (mean 114.5, std 57.6 on 0-255).
_IMAGENET_RANGES = {
    "caffe": (57.6, 0.0),      # 0-255 minus the channel mean: VGG16/19, ResNet50/101/152
    "raw": (57.6, 114.5),      # 0-255, the model rescales itself: EfficientNet*, ConvNeXt*, MobileNetV3*, RegNet*
    "unit": (1.0, 0.0),        # about [-1, 1] or standardised: MobileNet, Inception, Xception, DenseNet, ...
}
_FAMILY_PREFIXES = {"VGG": "caffe", "ResNet50": "caffe", "ResNet101": "caffe", "ResNet152": "caffe",
                    "EfficientNet": "raw", "ConvNeXt": "raw", "MobileNetV3": "raw", "RegNet": "raw"}


def application_names():
    return sorted(name for name in dir(keras.applications) if name[:1].isupper()
                  and callable(getattr(keras.applications, name)))


def imagenet_range(name):
    family = next((family for prefix, family in _FAMILY_PREFIXES.items()
                   if name.startswith(prefix) and not name.startswith("ResNet50V2")
                   and not name.startswith("ResNet101V2") and not name.startswith("ResNet152V2")), "unit")
    return _IMAGENET_RANGES[family]


def _feature_tensor(model):
    """Where `model`'s class head starts (see the module doc)."""
    from fmnist_tf.modelio import is_embedding_model

    if is_embedding_model(model):
        return model.output  # an embedding: the whole model is the backbone
    names = {layer.name for layer in model.layers}
    if "predictions" in names and isinstance(model.get_layer("predictions"), layers.Dense):
        return model.get_layer("predictions").input
    pooled = [layer for layer in model.layers if isinstance(layer, layers.GlobalAveragePooling2D)]
    if pooled:
        return pooled[-1].output
    raise ModelFileError(f"{model.name}: cannot tell where its class head starts (no Dense 'predictions' "
                         "layer and no global pooling)")


def cut_backbone(model, source):
    """`model` between its standardisation layer and its class head, as a nested model."""
    if "standardize" not in {layer.name for layer in model.layers}:
        raise ModelFileError(f"{source}: not a fmnist-tf classifier or embedding (no 'standardize' layer)")
    return keras.Model(model.get_layer("standardize").output, _feature_tensor(model), name=BACKBONE)


def backbone_from_saved_model(path):
    """The backbone of one of our saved models (a run directory or .keras file)."""
    from fmnist_tf.modelio import load_model

    return cut_backbone(load_model(path), path)


def backbone_from_builder(name, width, weights):
    """The backbone of one of our registered classifiers (e.g. alexnet), built afresh at `width`;
    `weights`: a .weights.h5 saved from the same 10-class model, else random weights."""
    from fmnist_tf.models.registry import create_model

    model = create_model(name, width=width)
    if weights:
        try:
            model.load_weights(weights)
        except Exception as exc:  # Keras raises several types for a file of another model
            raise ConfigError(f"base {name}: cannot load {weights} into it ({first_line(exc)}); it must be "
                              f"a .weights.h5 of a 10-class {name} at width {width}") from exc
    return cut_backbone(model, name)


def backbone_from_application(name, input_size, weights):
    """keras.applications `name` without its top, global-average pooled, on grey 28x28 images
    upscaled to `input_size` and repeated to RGB. `weights`: a local file, else ImageNet's (a download)."""
    inputs = keras.Input((28, 28, 1), name="standardized")
    x = resize_input(inputs, input_size or 32)
    x = layers.Concatenate(name="grey_to_rgb")([x, x, x])
    scale, offset = imagenet_range(name)
    x = layers.Rescaling(scale, offset, name="to_imagenet_range")(x)
    try:
        application = getattr(keras.applications, name)(
            include_top=False, weights=weights or "imagenet", input_shape=tuple(x.shape[1:]), pooling="avg")
    except ValueError as exc:  # bad input size for this family, or a weights file of another model
        raise ConfigError(f"base {name}: {str(exc).strip().splitlines()[0][:240]}") from exc
    except Exception as exc:  # the ImageNet download: no network, proxy, HTTP error
        raise FmnistError(f"base {name}: could not get its ImageNet weights ({type(exc).__name__}); "
                          f"pass --weights PATH to a local notop weights file") from exc
    return keras.Model(inputs, application(x), name=BACKBONE)


def open_backbone(base, input_size=0, weights="", width=1.0):
    """A saved model (path), one of our registered classifiers (name) or a keras.applications model."""
    from fmnist_tf.models.registry import model_names, model_task

    if not base:
        raise ConfigError("transfer needs a starting model: --from RUN_DIR_OR_MODEL (one of our runs or a "
                          ".keras file) or --base NAME (one of our classifiers such as alexnet, or a "
                          "keras.applications model such as MobileNetV2)")
    if weights and not Path(weights).is_file():
        raise ConfigError(f"weights file {weights} does not exist")
    if Path(base).exists() or base.endswith(".keras"):
        if weights or input_size:
            raise ConfigError("--weights and --input-size apply to a named base, not to a saved model")
        return backbone_from_saved_model(base)
    ours = [name for name in model_names() if model_task(name) == "classify" and name != "transfer"]
    if base in ours:
        return backbone_from_builder(base, width, weights)
    if base not in application_names():
        raise ConfigError(f"base '{base}' is neither a run directory, a .keras file, one of our classifiers "
                          f"({', '.join(ours)}) nor a keras.applications model "
                          f"(e.g. {', '.join(application_names()[:6])}, ...)")
    return backbone_from_application(base, input_size, weights)


def class_head(features, num_classes, dropout, head_units):
    """Dropout -> Dense N, or with `head_units` the reference embedding head:
    Dropout -> Dense units -> ReLU -> Dropout -> Dense N."""
    x = layers.Dropout(dropout, name="head_dropout")(features)
    if head_units:
        x = layers.Dense(head_units, activation="relu", name="head_fc")(x)
        x = layers.Dropout(dropout, name="head_fc_dropout")(x)
    return classifier(x, num_classes)


@register("transfer")
def transfer_classifier(x, num_classes, *, width=1.0, dropout=0.5, base="", freeze=True, head_units=0,
                        input_size=0, weights=""):
    """A new head for `num_classes` on the backbone of `base`; `freeze` keeps the backbone's weights
    fixed. The backbone always runs in inference mode (BatchNorm statistics stay those it learned),
    also when a second stage unfreezes it, as Keras' fine-tuning guide advises. `width` applies to a
    base built from our registry."""
    backbone = open_backbone(base, input_size, weights, width)
    backbone.trainable = not freeze
    return class_head(backbone(x, training=False), num_classes, dropout, head_units)

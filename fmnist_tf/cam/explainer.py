"""Class activation maps for every classifier: the true CAM for `vgg_rescam`, Grad-CAM for the rest.

`CamExplainer(model)` is a callable like `fmnist_tf.inference.Classifier`: float32 images
[N, H, W, 1] in [0, 1] in, `(probabilities [N, classes], maps [N, H, W])` out, each map float32 in
[0, 1] at the model's input size, explaining the predicted class (or `class_ids`). One traced
`tf.function` with a fixed signature does the forward pass, the class choice, the gradients and the
map, so per-frame calls never retrace.

- "cam" (models with the `cam_gap` -> `cam_logits` head of `fmnist_tf.models.vgg`):
  CAM_c = sum_k W[k, c] F_k, F the input of the GAP layer, W the dense kernel. In the residual head
  the class score is the product fc_c * cam_c, so a negative cam logit supports class c whenever fc_c
  is negative too: the map is taken with the sign of fc_c (its per-position share of the product),
  else it can come out inverted. Then ReLU, divided by its maximum (so the CAM paper's "20% of the
  maximum" box rule reads the map as the paper does), resized (bilinear) to the input.
- "grad-cam" (every other classifier, or any model given `layer=`): F the output of the last layer
  whose output is a 4-D map at least MIN_SIDE wide (7x7 for `deep`, 8x8 for EfficientNet at 32 px;
  overridable), gradients of the class LOGIT (the softmax's input; probabilities saturate), w_k their
  spatial mean, map = ReLU(sum_k w_k F_k) divided by its maximum (an all-zero map stays zero),
  resized to the input.

TensorFlow and Keras are imported when an explainer is built, not with this module.
"""

from pathlib import Path

import numpy as np

from fmnist_tf.data.fashion_mnist import CLASS_NAMES
from fmnist_tf.errors import ModelFileError

MIN_SIDE = 7            # Grad-CAM's feature map: the last 4-D output at least this wide
# = fmnist_tf.models.vgg's names (not imported: no Keras here)
CAM_GAP, CAM_LOGITS, FC_LOGITS = "cam_gap", "cam_logits", "fc_logits"


def graph_nodes(model):
    """{layer name: the node (call) of that layer in `model`'s own graph}, found by walking back from
    its outputs. A layer shared with another graph (EfficientNet's layers are also called in their
    backbone's graph) has several nodes; `layer.output` would give the first one, which is not
    connected to this model's input."""
    nodes, pending, seen = {}, list(model.outputs), set()
    while pending:
        tensor = pending.pop()
        operation, node_index, _ = tensor._keras_history
        node = operation._inbound_nodes[node_index]
        if id(node) in seen:
            continue
        seen.add(id(node))
        nodes.setdefault(operation.name, node)
        pending.extend(node.input_tensors)
    return nodes


def _output(nodes, layer):
    """The layer's single output tensor in the model's graph, or None (not in it, or several outputs)."""
    node = nodes.get(layer.name)
    return node.output_tensors[0] if node is not None and len(node.output_tensors) == 1 else None


def _is_softmax(activation):
    return getattr(activation, "__name__", "") == "softmax"


def feature_layer(model, name=None):
    """(layer, its output tensor in `model`'s graph) that Grad-CAM explains: layer `name`, else the
    last layer (in `model.layers` order; input, padding and cropping layers excluded) with a 4-D
    output at least MIN_SIDE pixels on its smaller side."""
    import keras

    nodes = graph_nodes(model)
    if name:
        try:
            layer = model.get_layer(name)
        except ValueError:
            raise ModelFileError(f"model {model.name!r} has no layer named {name!r}") from None
        output = _output(nodes, layer)
        if output is None or len(output.shape) != 4:
            rank = "no single" if output is None else f"a {len(output.shape)}-D"
            raise ModelFileError(f"layer {name!r} of model {model.name!r} has {rank} output; a CAM needs a "
                                 "4-D feature map (batch, height, width, channels)")
        return layer, output
    # only maps the network computed: from its first conv on (not the standardised or upscaled input);
    # padding and cropping only move a map's border (EfficientNet pads its 8x8 map to 11x11)
    convs = [index for index, layer in enumerate(model.layers) if isinstance(layer, keras.layers.Conv2D)]
    skipped = (keras.layers.ZeroPadding2D, keras.layers.Cropping2D)
    for layer in reversed(model.layers[convs[0]:] if convs else []):
        if isinstance(layer, skipped):
            continue
        output = _output(nodes, layer)
        if output is not None and len(output.shape) == 4 and min(output.shape[1:3]) >= MIN_SIDE:
            return layer, output
    raise ModelFileError(f"model {model.name!r} has no 4-D feature map at least {MIN_SIDE} px wide to "
                         "explain; pass a layer name")


def _check_classifier(model):
    shape = tuple(model.inputs[0].shape[1:]) if len(model.inputs) == 1 else ()
    if len(model.outputs) != 1 or len(shape) != 3 or len(model.outputs[0].shape) != 2 \
            or shape[0] is None or shape[0] != shape[1] or shape[2] != 1:
        raise ModelFileError(f"model {model.name!r} is not a grey image classifier (one [N, S, S, 1] input, "
                             "one [N, classes] output); CAMs explain this toolkit's classifiers")


class CamExplainer:
    """See the module doc. Attributes: `method` ("cam" or "grad-cam"), `layer_name` (the explained
    feature map's layer; for "cam" the GAP layer, whose input is the map), `input_size`,
    `class_names`, `source`, `backend` ("keras"), `image_format` (how images are prepared for the
    model; see fmnist_tf.data.sources). `layer=` forces Grad-CAM on that layer."""

    backend = "keras"

    def __init__(self, model, layer=None, class_names=None, source=None, image_format="fashion-mnist"):
        import keras

        _check_classifier(model)
        self.model, self.image_format = model, image_format
        self.input_size = int(model.input_shape[1])
        num_classes = int(model.output_shape[-1])
        self.class_names = tuple(class_names) if class_names is not None else (
            CLASS_NAMES if num_classes == len(CLASS_NAMES) else tuple(str(i) for i in range(num_classes)))
        self.source = str(source if source is not None else model.name)
        nodes = graph_nodes(model)
        if layer is None and all(name in nodes for name in (CAM_GAP, CAM_LOGITS, FC_LOGITS)):
            self.method, self.layer_name = "cam", CAM_GAP
            features = nodes[CAM_GAP].input_tensors[0]
            kernel = model.get_layer(CAM_LOGITS).kernel
            self._explain = self._cam_function(keras.Model(model.inputs[0], [features, nodes[FC_LOGITS].output_tensors[0],
                                                                  model.outputs[0]]), kernel)
        else:
            target, features = feature_layer(model, layer)
            self.method, self.layer_name = "grad-cam", target.name
            self._explain = self._grad_cam_function(model, features, nodes)

    # -- the traced functions -------------------------------------------------------------------

    def _signature(self):
        import tensorflow as tf

        size = self.input_size
        return [tf.TensorSpec([None, size, size, int(self.model.input_shape[-1])], tf.float32, name="images"),
                tf.TensorSpec([None], tf.int32, name="class_ids")]

    def _normalised_maps(self, features, weights):
        """ReLU(sum_k weights[n, k] features[n, ..., k]) / its maximum, resized to the input: [N, S, S]."""
        import tensorflow as tf

        maps = tf.nn.relu(tf.einsum("nhwk,nk->nhw", features, weights))
        maps = tf.math.divide_no_nan(maps, tf.reduce_max(maps, axis=[1, 2], keepdims=True))
        size = self.input_size
        return tf.clip_by_value(tf.image.resize(maps[..., tf.newaxis], (size, size), method="bilinear")[..., 0], 0.0, 1.0)

    @staticmethod
    def _choose(probabilities, class_ids):
        """class_ids < 0 mean "the predicted class"."""
        import tensorflow as tf

        predicted = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        return tf.where(class_ids < 0, predicted, class_ids)

    def _cam_function(self, feature_model, kernel):
        import tensorflow as tf

        def explain(images, class_ids):
            features, fc_logits, probabilities = feature_model(images, training=False)
            features = tf.cast(features, tf.float32)
            chosen = self._choose(probabilities, class_ids)
            weights = tf.transpose(tf.gather(tf.cast(kernel, tf.float32), chosen, axis=1))  # [N, K]
            fc_sign = tf.sign(tf.gather(tf.cast(fc_logits, tf.float32), chosen, axis=1, batch_dims=1))
            weights = weights * tf.where(fc_sign == 0, 1.0, fc_sign)[:, tf.newaxis]
            return tf.cast(probabilities, tf.float32), self._normalised_maps(features, weights)

        return tf.function(explain, input_signature=self._signature())

    def _grad_cam_function(self, model, features, nodes):
        import keras
        import tensorflow as tf

        output = model.outputs[0]
        head = output._keras_history[0]  # the layer that made the output
        dense_softmax = isinstance(head, keras.layers.Dense) and _is_softmax(head.activation)
        if isinstance(head, keras.layers.Activation) and _is_softmax(head.activation) or dense_softmax:
            before = nodes[head.name].input_tensors[0]  # the softmax's input, or the Dense's input
        else:
            before = output                # no softmax at the end: the output is already a score
        grad_model = keras.Model(model.inputs[0], [features, before, output])

        def explain(images, class_ids):
            with tf.GradientTape() as tape:
                tape.watch(images)
                maps, scores, probabilities = grad_model(images, training=False)
                tape.watch(maps)
                scores = tf.cast(scores, tf.float32)
                if dense_softmax:
                    scores = tf.matmul(scores, tf.cast(head.kernel, tf.float32))
                    if head.use_bias:
                        scores = scores + tf.cast(head.bias, tf.float32)
                chosen = self._choose(probabilities, class_ids)
                score = tf.reduce_sum(tf.gather(scores, chosen, axis=1, batch_dims=1))
            gradients = tf.cast(tape.gradient(score, maps), tf.float32)
            maps = tf.cast(maps, tf.float32)
            weights = tf.reduce_mean(gradients, axis=[1, 2])                       # [N, K]
            return tf.cast(probabilities, tf.float32), self._normalised_maps(maps, weights)

        return tf.function(explain, input_signature=self._signature())

    # -- calling ---------------------------------------------------------------------------------

    def __call__(self, images, class_ids=None):
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 3:
            images = images[..., np.newaxis]
        if images.ndim != 4 or images.shape[1:3] != (self.input_size, self.input_size):
            raise ValueError(f"expected images [N, {self.input_size}, {self.input_size}, 1], got {images.shape}")
        count = len(images)
        if count == 0:
            return (np.zeros((0, len(self.class_names)), np.float32),
                    np.zeros((0, self.input_size, self.input_size), np.float32))
        if class_ids is None:
            class_ids = np.full(count, -1, np.int32)
        class_ids = np.asarray(class_ids, dtype=np.int32).reshape(-1)
        if len(class_ids) != count:
            raise ValueError(f"{len(class_ids)} class ids for {count} images")
        if class_ids.max() >= len(self.class_names):
            raise ValueError(f"class id {int(class_ids.max())} out of range for {len(self.class_names)} classes")
        probabilities, maps = self._explain(np.ascontiguousarray(images), class_ids)
        return probabilities.numpy(), maps.numpy()

    def __repr__(self):
        return f"CamExplainer({self.source!r}, method={self.method!r}, layer={self.layer_name!r})"


def open_explainer(run_or_model, layer=None) -> CamExplainer:
    """A CamExplainer for a run directory or .keras file (loaded in Keras safe mode). Exported models
    (.tflite, .onnx, SavedModel) are refused: their graph has no feature maps or gradients to read."""
    from fmnist_tf.inference import EXPORTED_SUFFIXES, is_saved_model_dir
    from fmnist_tf.modelio import class_names_for, image_format_for, load_model, resolve_model_path

    path = Path(run_or_model)
    if path.suffix.lower() in EXPORTED_SUFFIXES or is_saved_model_dir(path):
        raise ModelFileError(f"{path}: CAMs need the Keras model (the run directory or its .keras file), "
                             "not an exported model")
    model_path = resolve_model_path(path)
    return CamExplainer(load_model(model_path), layer=layer, class_names=class_names_for(model_path),
                        source=model_path, image_format=image_format_for(model_path))

"""One fast inference interface over every model format: .keras, .tflite, SavedModel and .onnx.

`open_classifier(path)` returns a callable `Classifier`: float32 images [N, H, W, 1] in [0, 1] in,
class probabilities [N, classes] out. Realtime loops call it per frame, so it never goes through
`model.predict` (~100 ms of per-call setup on this CPU). A Keras model is converted in memory to
LiteRT (TFLite) by default, which runs a small CNN in well under a millisecond; a `tf.function`
with a fixed signature is the fallback when conversion fails.
"""

import os
from pathlib import Path

import numpy as np

from fmnist_tf.data.fashion_mnist import CLASS_NAMES
from fmnist_tf.errors import ModelFileError
from fmnist_tf.modelio import class_names_for, dataset_info, load_model, resolve_model_path

BACKENDS = ("auto", "litert", "keras")
EXPORTED_SUFFIXES = (".tflite", ".onnx")


class Classifier:
    """Base: subclasses set `input_size` and implement `predict_batch`."""

    backend = "?"
    input_size = 28
    image_format = "fashion-mnist"  # how images are prepared for it; open_classifier sets it per run

    def __init__(self, source, class_names):
        self.source = str(source)
        self.class_names = tuple(class_names)

    def __call__(self, images) -> np.ndarray:
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 3:
            images = images[..., np.newaxis]
        if len(images) == 0:
            return np.zeros((0, len(self.class_names)), np.float32)
        return np.asarray(self.predict_batch(np.ascontiguousarray(images)), dtype=np.float32)

    def predict_batch(self, images):
        raise NotImplementedError


class KerasFunctionClassifier(Classifier):
    """A traced `tf.function` with a fixed [None, H, W, 1] signature: no retracing, no predict setup."""

    backend = "keras"

    def __init__(self, model, source, class_names):
        import tensorflow as tf

        super().__init__(source, class_names)
        self.input_size = int(model.input_shape[1])
        spec = tf.TensorSpec([None, self.input_size, self.input_size, 1], tf.float32)
        self._forward = tf.function(lambda images: model(images, training=False), input_signature=[spec])

    def predict_batch(self, images):
        return self._forward(images).numpy()


def litert_interpreter(model_path=None, model_content=None, threads=None):
    """A LiteRT interpreter (the `ai-edge-litert` package, else TensorFlow's bundled one)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - depends on what is installed
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    threads = threads or min(2, os.cpu_count() or 1)
    try:
        return Interpreter(model_path=None if model_path is None else str(model_path),
                           model_content=model_content, num_threads=threads)
    except (ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{model_path or 'converted model'}: not a loadable .tflite model "
                             f"({str(exc).strip().splitlines()[0][:200]})") from exc


class LiteRTSession:
    """Runs a LiteRT interpreter on a batch; the input tensor is resized only when the batch size
    changes. Returns every output, in the interpreter's order."""

    def __init__(self, interpreter):
        self.interpreter = interpreter
        self.inputs = interpreter.get_input_details()
        self.outputs = interpreter.get_output_details()
        self._batch = None

    def __call__(self, images):
        index = self.inputs[0]["index"]
        if self._batch != len(images):
            self.interpreter.resize_tensor_input(index, list(images.shape))
            self.interpreter.allocate_tensors()
            self._batch = len(images)
        self.interpreter.set_tensor(index, images)
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(output["index"]) for output in self.outputs]


class LiteRTClassifier(Classifier):
    backend = "litert"

    def __init__(self, interpreter, source, class_names):
        super().__init__(source, class_names)
        self._session = LiteRTSession(interpreter)
        self.input_size = int(self._session.inputs[0]["shape"][1])

    def predict_batch(self, images):
        return self._session(images)[0]


class SavedModelClassifier(Classifier):
    backend = "savedmodel"

    def __init__(self, path, class_names):
        import tensorflow as tf

        super().__init__(path, class_names)
        try:
            self._serve = tf.saved_model.load(str(path)).signatures["serving_default"]
        except Exception as exc:  # TF raises several types for a bad folder
            raise ModelFileError(f"{path}: not a loadable SavedModel ({str(exc).splitlines()[0][:200]})") from exc
        spec = next(iter(self._serve.structured_input_signature[1].values()))
        self._input_name = next(iter(self._serve.structured_input_signature[1]))
        self.input_size = int(spec.shape[1])

    def predict_batch(self, images):
        return next(iter(self._serve(**{self._input_name: images}).values())).numpy()


class OnnxClassifier(Classifier):
    backend = "onnx"

    def __init__(self, path, class_names):
        try:
            import onnxruntime
        except ImportError as exc:
            raise ModelFileError(f"{path}: running .onnx models needs onnxruntime "
                                 "(pip install 'fmnist-tf[onnx]')") from exc
        super().__init__(path, class_names)
        try:
            self._session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelFileError(f"{path}: not a loadable ONNX model ({str(exc).splitlines()[0][:200]})") from exc
        self._input_name = self._session.get_inputs()[0].name
        self.input_size = int(self._session.get_inputs()[0].shape[1])

    def predict_batch(self, images):
        return self._session.run(None, {self._input_name: images})[0]


def is_saved_model_dir(path) -> bool:
    return Path(path).is_dir() and (Path(path) / "saved_model.pb").is_file()


def dataset_info_beside(path):
    """dataset.json of the run an exported file was exported into (<run>/ or <run>/export/), or {}."""
    path = Path(path)
    return next((info for folder in (path.parent, path.parent.parent)
                 if (info := dataset_info(folder / "best.keras"))), {})


def keras_classifier(model, source, class_names, backend="auto"):
    """Fastest callable for a Keras model: in-memory LiteRT conversion, else a tf.function."""
    if backend in ("auto", "litert"):
        from fmnist_tf.litert import convert_to_tflite

        try:
            content = convert_to_tflite(model)
            return LiteRTClassifier(litert_interpreter(model_content=content), source, class_names)
        except Exception:
            if backend == "litert":
                raise
    return KerasFunctionClassifier(model, source, class_names)


def open_classifier(run_or_model, backend="auto") -> Classifier:
    """A run directory or .keras file (converted per `backend`), or an exported .tflite, .onnx or
    SavedModel. The classifier's `image_format` says how to prepare images for it (fmnist_tf.data.sources)."""
    if backend not in BACKENDS:
        raise ModelFileError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    path = Path(run_or_model)
    info = dataset_info_beside(path)
    class_names = info.get("class_names", CLASS_NAMES)
    if path.suffix == ".tflite" and path.is_file():
        classifier = LiteRTClassifier(litert_interpreter(model_path=path), path, class_names)
    elif path.suffix == ".onnx" and path.is_file():
        classifier = OnnxClassifier(path, class_names)
    elif is_saved_model_dir(path):
        classifier = SavedModelClassifier(path, class_names)
    elif path.suffix in EXPORTED_SUFFIXES:
        raise ModelFileError(f"{path}: no such model file")
    else:
        model_path = resolve_model_path(path)
        info = dataset_info(model_path)
        classifier = keras_classifier(load_model(model_path), model_path, class_names_for(model_path), backend)
    classifier.image_format = info.get("image_format", "fashion-mnist")
    return classifier

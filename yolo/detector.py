"""Running a trained TinyYoloV3 on images: open, letterbox, infer, decode + NMS, map back.

`open_detector(run_or_model)` takes a run directory (its best.keras, else last.keras), a `.keras`
file or an exported `.tflite`, plus the `detector.json` written beside the model (for an export
in `<run>/export/`, the one in the run directory above it):

    {"input_size": 320, "num_classes": 10, "class_names": [...],
     "anchors": [[w, h], ...] (pixels at input_size), "masks": [[3, 4, 5], [0, 1, 2]]}

A Keras model is converted in memory to LiteRT (float32, [N, S, S, 3] in, the two raw heads
out), falling back to a `tf.function` with a fixed signature when conversion fails, as
`fmnist_tf.inference` does for classifiers. Decoding and per-class NMS (the rule of
`tf.image.combined_non_max_suppression`) run in numpy when an image has few candidates, the
usual case for a trained model (~0.3 ms for one image against ~1.5 ms for calling the compiled
`tf.function` over `yolo.postprocess.detect`), and through that tf.function when it has many
(`nms="auto"`, the default; "numpy" and "tf" force one; both give the same detections).

`Detector(images)` takes uint8 images (BGR as OpenCV reads them, or RGB with `bgr=False`) of any
sizes and returns one `ImageDetections(boxes, scores, classes)` per image: boxes xyxy float32 in
ORIGINAL image pixels (clipped to the image), best first. The letterbox is the one of
`yolo.postprocess.letterbox_params`: cv2 INTER_LINEAR resize onto a grey (128) S x S canvas,
RGB, / 255.

`detect_sources(detector, source, out_dir)` runs over an image file or a folder of images and
writes annotated copies, `detections.csv` and Ultralytics-style `labels/<stem>.txt`.

TensorFlow is imported only when a model is opened, so importing this module (and
`yolo.detect_mode`, which registers the realtime "detect" mode) stays cheap.
"""

import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from fmnist_tf.errors import FmnistError, ModelFileError, first_line
from fmnist_tf.fileio import PendingFile, atomic_output, atomic_write_image

DETECTOR_JSON = "detector.json"
BACKENDS = ("auto", "litert", "keras")
NMS_BACKENDS = ("auto", "numpy", "tf")
DEFAULT_NMS = "auto"
# nms="auto": numpy NMS when no image of the batch has more candidates (box, class pairs over the score
# threshold) than this, else the compiled TensorFlow NMS. numpy costs ~0.25 ms to decode plus ~10-20 us
# per kept box; TensorFlow ~1.3-2 ms whatever the count (measured at input 320, batch 1, 2 CPU cores).
NUMPY_NMS_MAX_CANDIDATES = 64
LETTERBOX_GREY = 128
MAX_LOG_SIZE = 15.0  # as yolo.boxes.decode_head_geometry: a diverging twh gives a huge box, not inf
STRIDES = (32, 16)   # yolo.boxes.STRIDES (not imported: that module imports TensorFlow)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
SOURCE_CSV_FIELDS = ("image", "class_id", "class", "score", "x0", "y0", "x1", "y1")
STAGES = ("letterbox", "model", "nms", "classify")  # classify: the optional second stage


# ----------------------------------------------------------------------------------- detector.json

@dataclass(frozen=True)
class DetectorConfig:
    input_size: int
    num_classes: int
    class_names: tuple
    anchors: np.ndarray  # float32 (K, 2), (w, h) pixels at input_size
    masks: tuple         # per head (stride 32, then 16), indices into anchors

    @property
    def num_anchors_per_head(self):
        return len(self.masks[0])

    def head_shapes(self):
        """Per-image raw head shapes, stride-32 head first: ((g, g, A, 5 + C), ...)."""
        return tuple((self.input_size // stride, self.input_size // stride, self.num_anchors_per_head,
                      5 + self.num_classes) for stride in STRIDES)

    def to_json(self):
        return {"input_size": self.input_size, "num_classes": self.num_classes,
                "class_names": list(self.class_names), "anchors": self.anchors.tolist(),
                "masks": [list(mask) for mask in self.masks]}


def detector_config(settings, source=DETECTOR_JSON) -> DetectorConfig:
    """A checked DetectorConfig from a detector.json dict; ModelFileError (one line, naming
    `source`) for anything missing or inconsistent."""
    from fmnist_tf.errors import ConfigError
    from yolo.boxes import check_anchors, check_input_size

    if not isinstance(settings, dict):
        raise ModelFileError(f"{source}: expected a JSON object with input_size, num_classes, class_names, "
                             "anchors and masks")
    missing = [key for key in ("input_size", "num_classes", "anchors", "masks") if key not in settings]
    if missing:
        raise ModelFileError(f"{source}: missing {', '.join(missing)}")
    try:
        input_size = check_input_size(settings["input_size"])
        num_classes = settings["num_classes"]
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"num_classes must be a positive int, got {num_classes!r}")
        anchors, masks = check_anchors(settings["anchors"], settings["masks"])
    except (ConfigError, ValueError, TypeError) as exc:
        raise ModelFileError(f"{source}: {str(exc).splitlines()[0]}") from None
    names = settings.get("class_names")
    if names is None:
        names = [str(index) for index in range(num_classes)]
    if not isinstance(names, (list, tuple)) or len(names) != num_classes \
            or not all(isinstance(name, str) for name in names):
        raise ModelFileError(f"{source}: class_names must be a list of {num_classes} strings (num_classes)")
    return DetectorConfig(input_size, num_classes, tuple(names), anchors, masks)


def read_detector_config(path) -> DetectorConfig:
    path = Path(path)
    try:
        settings = json.loads(path.read_text())
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path}: not valid JSON ({str(exc).splitlines()[0]})") from None
    return detector_config(settings, path)


def find_detector_config(model_path) -> DetectorConfig:
    """The detector.json beside a model file, else in the folder above (an export in <run>/export/)."""
    model_path = Path(model_path)
    folders = (model_path.parent, model_path.parent.parent)
    for folder in folders:
        if (folder / DETECTOR_JSON).is_file():
            return read_detector_config(folder / DETECTOR_JSON)
    raise ModelFileError(f"{model_path}: no {DETECTOR_JSON} beside it (looked in {folders[0]} and {folders[1]}); "
                         "is this a detector run (fmnist-tf train -c tinyyolov3)?")


# ----------------------------------------------------------------------------------- letterbox

class Letterboxed(NamedTuple):
    image: np.ndarray   # float32 (S, S, 3) RGB in [0, 1]
    original_hw: tuple  # (height, width) of the image it came from


class ImageDetections(NamedTuple):
    boxes: np.ndarray    # float32 (k, 4) xyxy in original-image pixels, clipped to the image
    scores: np.ndarray   # float32 (k,), descending
    classes: np.ndarray  # int32 (k,)

    @property
    def count(self):
        return len(self.scores)


def as_colour_uint8(image, what="image"):
    """A 3-channel uint8 view or copy of a grey, 3- or 4-channel uint8 image."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise FmnistError(f"{what}: expected uint8 pixels (as cv2.imread gives), got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise FmnistError(f"{what}: expected an H x W, H x W x 3 or H x W x 4 image, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise FmnistError(f"{what}: the image is empty ({image.shape[1]}x{image.shape[0]})")
    return np.ascontiguousarray(image[..., :3]) if image.shape[2] == 4 else image


def letterbox_geometry(original_hw, input_size):
    """`yolo.postprocess.letterbox_params` (same arithmetic, without importing TensorFlow)."""
    height, width = (float(v) for v in original_hw)
    scale = min(input_size / width, input_size / height)
    new_w, new_h = int(width * scale), int(height * scale)
    return scale, ((input_size - new_w) // 2, (input_size - new_h) // 2), (new_w, new_h)


def letterbox(image, input_size, bgr=True) -> Letterboxed:
    """uint8 image (any size; BGR unless bgr=False) -> float32 RGB [0, 1] S x S model input."""
    image = as_colour_uint8(image)
    height, width = image.shape[:2]
    _, (dx, dy), (new_w, new_h) = letterbox_geometry((height, width), input_size)
    canvas = np.full((input_size, input_size, 3), LETTERBOX_GREY, np.uint8)
    if new_w > 0 and new_h > 0:
        canvas[dy:dy + new_h, dx:dx + new_w] = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    if bgr:
        canvas = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)
    return Letterboxed(canvas.astype(np.float32) / np.float32(255.0), (height, width))


def to_original(boxes, original_hw, input_size):
    """`yolo.postprocess.letterbox_to_original` (clip=True) without importing TensorFlow."""
    scale, (dx, dy), _ = letterbox_geometry(original_hw, input_size)
    boxes = (np.asarray(boxes, np.float64) - np.array([dx, dy, dx, dy], np.float64)) / scale
    height, width = original_hw
    return np.clip(boxes, 0.0, np.array([width, height, width, height], np.float64)).astype(np.float32)


# ----------------------------------------------------------------------------------- decode + NMS

def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -80.0, 80.0)))


def numpy_nms(boxes, scores, score_threshold, iou_threshold, max_detections=100, max_per_class=None):
    """`numpy_nms_rows` returning the kept boxes themselves: (boxes (k, 4), scores (k,), classes (k,) int32)."""
    rows, kept_scores, kept_classes = numpy_nms_rows(boxes, scores, score_threshold, iou_threshold,
                                                     max_detections, max_per_class)
    return np.asarray(boxes, np.float32).reshape(-1, 4)[rows], kept_scores, kept_classes


def numpy_nms_rows(boxes, scores, score_threshold, iou_threshold, max_detections=100, max_per_class=None):
    """Per-class greedy NMS of one image, the rule of `tf.image.combined_non_max_suppression`:
    a box is a candidate for each class it scores > score_threshold in; boxes overlapping a kept,
    higher-scored box of the same class with IoU > iou_threshold are dropped; at most
    max_per_class per class and max_detections in all, best first.
    boxes (N, 4) xyxy, scores (N, C) -> (kept box rows (k,) int64, scores (k,), classes (k,) int32).

    The best remaining candidate over all classes is kept next and suppresses only its own
    class's queue, so the loop runs at most max_detections times whatever the candidate count."""
    rows, classes = np.nonzero(scores > score_threshold)
    if not len(rows):
        return np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int32)
    boxes = np.asarray(boxes, np.float32)
    candidate_scores = scores[rows, classes]
    # class -> its remaining candidates, best first, as rows of [score, x0, y0, x1, y1, area, box index]
    queues = {}
    for cls in np.unique(classes).tolist():
        chosen = classes == cls
        order = np.argsort(-candidate_scores[chosen], kind="stable")
        picked = rows[chosen][order]
        corners = boxes[picked].astype(np.float64)
        area = np.maximum(corners[:, 2] - corners[:, 0], 0) * np.maximum(corners[:, 3] - corners[:, 1], 0)
        queues[cls] = np.column_stack([candidate_scores[chosen][order], corners, area, picked])
    cap = min(max_per_class or max_detections, max_detections)
    counts = dict.fromkeys(queues, 0)
    kept, kept_classes = [], []
    while queues and len(kept) < max_detections:
        cls = max(queues, key=lambda key: queues[key][0, 0])
        queue = queues.pop(cls)
        best, rest = queue[0], queue[1:]
        kept.append(best)
        kept_classes.append(cls)
        counts[cls] += 1
        if not len(rest) or counts[cls] >= cap:
            continue
        inter = (np.maximum(np.minimum(rest[:, 3], best[3]) - np.maximum(rest[:, 1], best[1]), 0)
                 * np.maximum(np.minimum(rest[:, 4], best[4]) - np.maximum(rest[:, 2], best[2]), 0))
        keep = inter <= iou_threshold * (best[5] + rest[:, 5] - inter)  # IoU <= threshold, no division by 0
        if keep.any():
            queues[cls] = rest[keep]
    kept = np.array(kept)
    return kept[:, 6].astype(np.int64), kept[:, 0].astype(np.float32), np.array(kept_classes, np.int32)


class DetectionDecoder:
    """Raw heads [head32 (B, g, g, A, 5 + C), head16] -> per-image ImageDetections in original
    pixels. nms="numpy", "tf" (a compiled tf.function over `yolo.postprocess.detect`, built on first
    use) or "auto" (default: numpy for up to NUMPY_NMS_MAX_CANDIDATES candidates per image, else tf;
    both give the same detections)."""

    def __init__(self, config: DetectorConfig, max_detections=100, nms=DEFAULT_NMS):
        if nms not in NMS_BACKENDS:
            raise FmnistError(f"unknown NMS backend {nms!r}; choose one of {', '.join(NMS_BACKENDS)}")
        self.config = config
        self.max_detections = int(max_detections)
        self.nms = nms
        self._heads = []
        for mask, stride, (grid, _, _, _) in zip(config.masks, STRIDES, config.head_shapes()):
            columns, rows = np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32))
            cells = np.stack([columns, rows], axis=-1)[:, :, None, :]  # (g, g, 1, 2) = (x, y)
            self._heads.append((cells, config.anchors[list(mask)].reshape(1, 1, -1, 2), float(stride)))
        self._tf_detect = None

    def _compile_tf(self):
        import tensorflow as tf

        from yolo.postprocess import detect

        config = self.config
        specs = [tf.TensorSpec([None, *shape], tf.float32) for shape in config.head_shapes()]
        scalar = tf.TensorSpec([], tf.float32)

        def run(head32, head16, score_threshold, iou_threshold):
            return tuple(detect([head32, head16], config.anchors, config.masks, config.input_size,
                                config.num_classes, score_threshold, iou_threshold, self.max_detections))

        return tf.function(run, input_signature=[*specs, scalar, scalar])

    def decode(self, raw_heads):
        """numpy decode of all heads: boxes (B, N, 4) xyxy input pixels, scores (B, N, C), in the
        order of `yolo.boxes.decode_heads`."""
        all_boxes, all_scores = [], []
        for raw, (cells, anchors, stride), shape in zip(raw_heads, self._heads, self.config.head_shapes()):
            raw = np.asarray(raw, np.float32)
            if raw.shape[1:] != shape:
                raise FmnistError(f"raw head for stride {stride:.0f} should be (batch, {', '.join(map(str, shape))}), "
                                  f"got {raw.shape}")
            centre = (cells + _sigmoid(raw[..., 0:2])) * np.float32(stride)
            size = np.exp(np.minimum(raw[..., 2:4], MAX_LOG_SIZE)) * anchors
            boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=-1)
            scores = _sigmoid(raw[..., 4:5]) * _sigmoid(raw[..., 5:])
            all_boxes.append(boxes.reshape(len(raw), -1, 4))
            all_scores.append(scores.reshape(len(raw), -1, self.config.num_classes))
        return np.concatenate(all_boxes, axis=1), np.concatenate(all_scores, axis=1)

    def in_input_pixels(self, raw_heads, score_threshold=0.3, iou_threshold=0.45):
        """Per image (boxes (k, 4) xyxy in input pixels, scores, classes), after NMS."""
        if self.nms != "tf":
            boxes, scores = self.decode(raw_heads)
            crowded = self.nms == "auto" and \
                (scores > score_threshold).sum(axis=(1, 2)).max(initial=0) > NUMPY_NMS_MAX_CANDIDATES
            if not crowded:
                return [numpy_nms(b, s, score_threshold, iou_threshold, self.max_detections)
                        for b, s in zip(boxes, scores)]
        if self._tf_detect is None:
            self._tf_detect = self._compile_tf()
        boxes, scores, classes, valid = (t.numpy() for t in self._tf_detect(
            *(np.asarray(raw, np.float32) for raw in raw_heads), np.float32(score_threshold),
            np.float32(iou_threshold)))
        return [(boxes[i, :n], scores[i, :n], classes[i, :n]) for i, n in enumerate(valid)]

    def __call__(self, raw_heads, original_hws, score_threshold=0.3, iou_threshold=0.45):
        """-> one ImageDetections per image, boxes in original pixels (see `in_original_pixels`)."""
        return self.in_original_pixels(self.in_input_pixels(raw_heads, score_threshold, iou_threshold), original_hws)

    def in_original_pixels(self, detections, original_hws):
        """Per-image (boxes in input pixels, scores, classes) -> ImageDetections in original pixels.
        Boxes that lie wholly in the letterbox padding (empty once clipped to the image) are dropped."""
        results = []
        for (boxes, scores, classes), original_hw in zip(detections, original_hws):
            boxes = to_original(boxes, original_hw, self.config.input_size)
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            results.append(ImageDetections(boxes[keep], np.asarray(scores[keep], np.float32),
                                           np.asarray(classes[keep], np.int32)))
        return results


# ----------------------------------------------------------------------------------- model runners

def _output_order(shapes, config, source):
    """Indices that put the model's outputs in head order (stride 32 first), checking their shapes."""
    expected = config.head_shapes()
    if len(shapes) != len(expected):
        raise ModelFileError(f"{source}: expected {len(expected)} outputs (the raw heads), the model has {len(shapes)}")
    order = sorted(range(len(shapes)), key=lambda i: shapes[i][1] if shapes[i][1] is not None else 0)
    got = [tuple(shapes[i][1:]) for i in order]
    if got != [tuple(shape) for shape in expected]:
        raise ModelFileError(f"{source}: the model's heads {got} do not match {DETECTOR_JSON} (input "
                             f"{config.input_size}, {config.num_anchors_per_head} anchors per head, "
                             f"{config.num_classes} classes: {[tuple(shape) for shape in expected]})")
    return order


def _check_input(shape, config, source):
    if tuple(shape[1:]) != (config.input_size, config.input_size, 3):
        raise ModelFileError(f"{source}: the model takes {tuple(shape[1:])} images but {DETECTOR_JSON} says "
                             f"input_size {config.input_size} ({config.input_size}, {config.input_size}, 3)")


class LiteRTRunner:
    """A LiteRT interpreter over [N, S, S, 3] float32 -> [head32, head16]; resized per batch size."""

    backend = "litert"

    def __init__(self, interpreter, config, source):
        from fmnist_tf.inference import LiteRTSession

        self._session = LiteRTSession(interpreter)
        if len(self._session.inputs) != 1:
            raise ModelFileError(f"{source}: expected one image input, the model has {len(self._session.inputs)}")
        _check_input(self._session.inputs[0]["shape"], config, source)
        self._order = _output_order([tuple(d["shape"]) for d in self._session.outputs], config, source)

    def __call__(self, images):
        outputs = self._session(images)
        return [outputs[i] for i in self._order]


class KerasRunner:
    """A traced tf.function with a fixed [None, S, S, 3] signature (no retracing, no predict setup)."""

    backend = "keras"

    def __init__(self, model, config, source):
        import tensorflow as tf

        _check_input(model.input_shape, config, source)
        shapes = model.output_shape if isinstance(model.output_shape, list) else [model.output_shape]
        self._order = _output_order([tuple(shape) for shape in shapes], config, source)
        spec = tf.TensorSpec([None, config.input_size, config.input_size, 3], tf.float32, name="image")
        self._forward = tf.function(lambda image: model(image, training=False), input_signature=[spec])

    def __call__(self, images):
        outputs = self._forward(images)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return [outputs[i].numpy() for i in self._order]


def convert_detector_to_tflite(model, input_size) -> bytes:
    """Float32 LiteRT flatbuffer of a detector: [N, S, S, 3] image in, the raw heads out."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = tf.TensorSpec([None, input_size, input_size, 3], tf.float32, name="image")
    forward = tf.function(lambda image: model(image, training=False), input_signature=[spec])
    frozen = convert_variables_to_constants_v2(forward.get_concrete_function())
    return tf.lite.TFLiteConverter.from_concrete_functions([frozen], model).convert()


# ----------------------------------------------------------------------------------- Detector

class Detector:
    """Callable: a list of uint8 images (or one image) -> list of ImageDetections (see module doc).

    `.source`, `.backend` ("litert" or "keras"), `.class_names` and `.input_size` describe it;
    `.score_threshold` / `.iou_threshold` are the defaults of every call; `.stage_seconds`
    accumulates letterbox / model / nms / classify time over `.images` images. `.second_stage`
    (None, or a `yolo.second_stage.SecondStageClassifier`) re-classifies every box."""

    fallback_reason = None  # why an "auto" Keras model runs as a tf.function, not LiteRT

    def __init__(self, runner, config: DetectorConfig, source, score_threshold=0.3, iou_threshold=0.45,
                 max_detections=100, nms=DEFAULT_NMS):
        self.runner = runner
        self.config = config
        self.source = str(source)
        self.backend = runner.backend
        self.class_names = tuple(config.class_names)
        self.input_size = config.input_size
        self.score_threshold = float(score_threshold)
        self.iou_threshold = float(iou_threshold)
        self.decoder = DetectionDecoder(config, max_detections, nms)
        self.nms = nms
        self.stage_seconds = dict.fromkeys(STAGES, 0.0)
        self.images = 0
        self.second_stage = None

    def prepare(self, image, bgr=True) -> Letterboxed:
        """Letterbox one uint8 image (thread-safe: the realtime loop calls it in a worker)."""
        start = time.perf_counter()
        prepared = letterbox(image, self.input_size, bgr)
        self.stage_seconds["letterbox"] += time.perf_counter() - start
        return prepared

    def raw(self, images):
        """The model's raw heads [head32, head16] (numpy) for float32 [N, S, S, 3] RGB [0, 1] inputs."""
        return self.runner(np.ascontiguousarray(images, dtype=np.float32))

    def run(self, prepared, score_threshold=None, iou_threshold=None):
        """Letterboxed images -> one ImageDetections per image, in original pixels."""
        if not len(prepared):
            return []
        start = time.perf_counter()
        images = np.stack([item.image for item in prepared])
        raw = self.raw(images)
        middle = time.perf_counter()
        score_threshold = self.score_threshold if score_threshold is None else score_threshold
        iou_threshold = self.iou_threshold if iou_threshold is None else iou_threshold
        found = self.decoder.in_input_pixels(raw, score_threshold, iou_threshold)
        after_nms = time.perf_counter()
        if self.second_stage is not None:
            found = self.second_stage(images, found, score_threshold, iou_threshold)
        results = self.decoder.in_original_pixels(found, [item.original_hw for item in prepared])
        self.stage_seconds["model"] += middle - start
        self.stage_seconds["nms"] += after_nms - middle
        self.stage_seconds["classify"] += time.perf_counter() - after_nms
        self.images += len(prepared)
        return results

    def __call__(self, images, bgr=True, score_threshold=None, iou_threshold=None):
        """uint8 images: a list (any sizes), an (N, H, W, 3) array, or one (H, W[, 3]) image."""
        if isinstance(images, np.ndarray) and images.ndim in (2, 3):
            images = [images]
        return self.run([self.prepare(image, bgr) for image in images], score_threshold, iou_threshold)

    def stage_ms(self):
        return {stage: 1000 * seconds / max(1, self.images) for stage, seconds in self.stage_seconds.items()}

    def __repr__(self):
        return f"Detector({self.source!r}, backend={self.backend!r}, input_size={self.input_size})"


def detector_from_model(model, config: DetectorConfig, backend="auto", source="in-memory model", **options):
    """A Detector over a Keras model: in-memory LiteRT ("auto", "litert") else a tf.function
    ("keras", or "auto" when conversion fails; `.fallback_reason` then says why)."""
    if backend not in BACKENDS:
        raise ModelFileError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    runner, reason = None, None
    if backend in ("auto", "litert"):
        from fmnist_tf.inference import litert_interpreter

        try:
            content = convert_detector_to_tflite(model, config.input_size)
            runner = LiteRTRunner(litert_interpreter(model_content=content), config, source)
        except ModelFileError:
            raise
        except Exception as exc:  # the converter raises many types
            if backend == "litert":
                raise ModelFileError(f"{source}: LiteRT conversion failed ({first_line(exc)})") from exc
            reason = first_line(exc)
    if runner is None:
        runner = KerasRunner(model, config, source)
    detector = Detector(runner, config, source, **options)
    detector.fallback_reason = reason
    return detector


def open_detector(run_or_model, backend="auto", score_threshold=0.3, iou_threshold=0.45, max_detections=100,
                  nms=DEFAULT_NMS, config=None, classifier=None) -> Detector:
    """A run directory or .keras file (converted per `backend`) or an exported .tflite (always
    LiteRT), with the detector.json found beside it unless `config` (a DetectorConfig, a dict or
    a path to a JSON file) is given. `classifier` (a classifier run or model file, opened per
    `backend`) becomes its second stage (`yolo.second_stage`). Every problem is a one-line ModelFileError."""
    detector = _open_detector(run_or_model, backend, config, dict(
        score_threshold=score_threshold, iou_threshold=iou_threshold, max_detections=max_detections, nms=nms))
    if classifier is not None:
        from yolo.second_stage import open_second_stage

        detector.second_stage = open_second_stage(classifier, detector.class_names, backend, max_detections)
    return detector


def _open_detector(run_or_model, backend, config, options) -> Detector:
    if backend not in BACKENDS:
        raise ModelFileError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    path = Path(run_or_model)

    def settings(model_path):
        if config is None:
            return find_detector_config(model_path)
        if isinstance(config, DetectorConfig):
            return config
        if isinstance(config, dict):
            return detector_config(config)
        return read_detector_config(config)

    if path.suffix == ".tflite":
        if not path.is_file():
            raise ModelFileError(f"{path}: no such model file")
        from fmnist_tf.inference import litert_interpreter

        chosen = settings(path)
        interpreter = litert_interpreter(model_path=path)
        try:
            runner = LiteRTRunner(interpreter, chosen, path)
        except ModelFileError:
            raise
        except Exception as exc:  # a flatbuffer that opens but has no usable tensors
            raise ModelFileError(f"{path}: not a usable .tflite detector ({first_line(exc)})") from exc
        return Detector(runner, chosen, path, **options)
    if path.suffix == ".onnx" or (path / "saved_model.pb").is_file():
        raise ModelFileError(f"{path}: detectors open from a run directory, a .keras or a .tflite file")
    from fmnist_tf.modelio import load_model, resolve_model_path

    model_path = resolve_model_path(path)
    chosen = settings(model_path)  # before the (slow) load: a missing detector.json fails fast
    import yolo.loss  # noqa: F401 - registers the loss classes a compiled model's config may name

    return detector_from_model(load_model(model_path), chosen, backend, model_path, **options)


# ----------------------------------------------------------------------------------- drawing

def class_colour(class_id):
    """BGR colour of a class: the one `yolo.canvas.draw_boxes` uses."""
    hue = (int(class_id) * 37) % 180
    hsv = np.array([[[hue, 200, 255]]], dtype=np.uint8)
    return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def class_name(class_names, class_id):
    return class_names[class_id] if 0 <= class_id < len(class_names) else str(class_id)


def draw_detections(frame, detections: ImageDetections, class_names, no_item_label=True):
    """Draw boxes, class names and scores on a BGR frame in place (and return it)."""
    from fmnist_tf.realtime.modes import GREY, draw_label

    if not detections.count:
        if no_item_label:
            draw_label(frame, "no item", 8, frame.shape[0] - 8, GREY)
        return frame
    thickness = max(1, round(min(frame.shape[:2]) / 240))
    for box, score, cls in zip(detections.boxes, detections.scores, detections.classes):
        x0, y0, x1, y1 = (int(round(float(v))) for v in box)
        colour = class_colour(cls)
        cv2.rectangle(frame, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), colour, thickness)
        draw_label(frame, f"{class_name(class_names, int(cls))} {score:.2f}", x0, y0 - 2, colour)
    return frame


# ----------------------------------------------------------------------------------- image sources

@dataclass
class ImageResult:
    path: Path
    size: tuple  # (width, height)
    detections: ImageDetections
    output: Path | None = None   # the annotated copy
    labels: Path | None = None   # the Ultralytics txt


class SourceResults(list):
    """The ImageResults of `detect_sources`, plus what was skipped and where outputs went."""

    def __init__(self, out_dir):
        super().__init__()
        self.out_dir = Path(out_dir)
        self.skipped = []        # (path, reason) of image files that could not be read
        self.not_images = []     # other files of a folder, left alone
        self.csv = None
        self.labels_dir = None
        self.stage_ms = {}

    def summary(self):
        boxes = sum(result.detections.count for result in self)
        stages = ", ".join(f"{stage} {ms:.1f}" for stage, ms in self.stage_ms.items())
        lines = [f"{len(self)} images, {boxes} detections" + (f" (ms per image: {stages})" if stages else "")]
        if self.not_images:
            lines.append(f"skipped {len(self.not_images)} files that are not images "
                         f"({', '.join(path.name for path in self.not_images[:5])}"
                         f"{', ...' if len(self.not_images) > 5 else ''})")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} unreadable images: "
                         + "; ".join(f"{path.name} ({reason})" for path, reason in self.skipped[:5])
                         + ("; ..." if len(self.skipped) > 5 else ""))
        lines.append(f"annotated images in {self.out_dir}")
        lines += [f"saved {path}" for path in (self.csv, self.labels_dir) if path]
        return "\n".join(lines)


def read_image(path):
    """BGR uint8 image, or FmnistError naming the file."""
    path = Path(path)
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as exc:
        raise FmnistError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None or image.size == 0:
        raise FmnistError(f"{path}: not a readable image (empty, truncated or not an image file)")
    return image


def list_image_sources(source):
    """(image paths, other files) of an image file or a folder (sorted, not recursive)."""
    source = Path(source)
    if source.is_dir():
        files = sorted(path for path in source.iterdir() if path.is_file() and not path.name.startswith("."))
        images = [path for path in files if path.suffix.lower() in IMAGE_SUFFIXES]
        return images, [path for path in files if path.suffix.lower() not in IMAGE_SUFFIXES]
    if not source.exists():
        raise FmnistError(f"{source}: no such image file or folder")
    if source.suffix.lower() in VIDEO_SUFFIXES:
        raise FmnistError(f"{source}: a video; run the detector on it with `fmnist-tf realtime --mode detect -v`")
    if source.suffix.lower() not in IMAGE_SUFFIXES:
        raise FmnistError(f"{source}: not an image file (expected one of {', '.join(IMAGE_SUFFIXES)}) or a folder")
    return [source], []


def ultralytics_lines(detections: ImageDetections, size):
    """`class cx cy w h score` per detection, coordinates normalised by the image width / height."""
    width, height = size
    lines = []
    for (x0, y0, x1, y1), score, cls in zip(detections.boxes.tolist(), detections.scores.tolist(),
                                           detections.classes.tolist()):
        values = ((x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height, score)
        lines.append(f"{cls} " + " ".join(f"{value:.6g}" for value in values))
    return lines


def _show(image, title):
    cv2.imshow(title, image)
    return cv2.waitKey(0) & 0xFF not in (ord("q"), 27)


def detect_sources(detector, source, out_dir, save_txt=True, save_csv=True, show=False, score_threshold=None):
    """Run `detector` on an image file or on every image of a folder (sorted; other files are
    noted and left alone). Writes to out_dir: the annotated images (same names), with save_csv
    `detections.csv` (image, class_id, class, score, x0, y0, x1, y1 in original pixels; one
    "no item" row for an image without detections), with save_txt `labels/<stem>.txt`
    (Ultralytics: `class cx cy w h score`, normalised). A single unreadable image is a one-line
    FmnistError; in a folder unreadable images are skipped and listed in `.skipped`.
    Returns a SourceResults (a list of ImageResult). show=True displays each annotated image
    when a display is available (any key: next; q or Esc: stop showing)."""
    from fmnist_tf.realtime.video import display_available

    source, out_dir = Path(source), Path(out_dir)
    images, others = list_image_sources(source)
    if out_dir.resolve() == (source if source.is_dir() else source.parent).resolve():
        raise FmnistError(f"{out_dir}: the output folder is the input folder; the annotated images would "
                          "replace the originals, choose another output folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    results = SourceResults(out_dir)
    results.not_images = others
    show = show and display_available()
    title = "fmnist-tf detect (any key: next, q: stop showing)"
    log = writer = None
    if save_csv:
        log = PendingFile(out_dir / "detections.csv")
        handle = open(log.temporary, "w", newline="")
        writer = csv.writer(handle)
        writer.writerow(SOURCE_CSV_FIELDS)
    if save_txt:
        results.labels_dir = out_dir / "labels"
        results.labels_dir.mkdir(exist_ok=True)
    before, images_before = dict(detector.stage_seconds), detector.images
    finished = False
    try:
        for path in images:
            try:
                image = read_image(path)
            except FmnistError as exc:
                if not source.is_dir():
                    raise
                results.skipped.append((path, str(exc).split(": ", 1)[-1]))
                continue
            detections = detector([image], score_threshold=score_threshold)[0]
            size = (image.shape[1], image.shape[0])
            result = ImageResult(path, size, detections, output=out_dir / path.name)
            atomic_write_image(result.output, draw_detections(image, detections, detector.class_names),
                               what="annotated image")
            if writer:
                rows = [(path.name, int(cls), class_name(detector.class_names, int(cls)), f"{score:.4f}",
                         *(f"{v:.1f}" for v in box))
                        for box, score, cls in zip(detections.boxes, detections.scores, detections.classes)]
                writer.writerows(rows or [(path.name, "", "no item", "", "", "", "", "")])
            if save_txt:
                result.labels = results.labels_dir / f"{path.stem}.txt"
                lines = ultralytics_lines(detections, size)
                with atomic_output(result.labels) as tmp:
                    Path(tmp).write_text("".join(line + "\n" for line in lines))
            results.append(result)
            if show and not _show(image, title):
                show = False
        finished = True
    finally:
        if log:
            handle.close()
            if finished:
                log.commit()
                results.csv = log.path
            else:
                log.discard()
        if show:
            cv2.destroyAllWindows()
    count = detector.images - images_before
    results.stage_ms = {stage: 1000 * (detector.stage_seconds[stage] - before[stage]) / max(1, count)
                        for stage in STAGES if stage != "classify" or detector.second_stage is not None}
    return results


__all__ = ["BACKENDS", "DETECTOR_JSON", "Detector", "DetectorConfig", "DetectionDecoder", "ImageDetections",
           "ImageResult", "Letterboxed", "SourceResults", "detect_sources", "detector_config",
           "detector_from_model", "draw_detections", "find_detector_config", "letterbox", "numpy_nms",
           "open_detector", "read_detector_config"]

"""Realtime modes: what happens to a frame between the source and the sink.

A mode has four steps, each timed by the loop: `preprocess(frame)`, `infer(prepared)`,
`draw(frame, results)` and `csv_rows(results)`. New modes (CAM heat maps, the detector) register
here and reuse the same loop, sources, sinks, CSV and timing.
"""

from dataclasses import dataclass, replace

import cv2
import numpy as np

from fmnist_tf.data.sources import FASHION_MNIST, FOLDER
from fmnist_tf.errors import FmnistError
from fmnist_tf.vision.preprocess import fit_square_affine, stretch_affine
from fmnist_tf.vision.segment import SegmentSettings, segment_items, whole_frame

MODES = {}
GREEN, GREY, WHITE, RED = (60, 200, 60), (150, 150, 150), (255, 255, 255), (40, 40, 230)
CSV_FIELDS = ("frame", "item", "class_id", "class", "probability", "x0", "y0", "x1", "y1")


def register_mode(name):
    def add(cls):
        MODES[name] = cls
        return cls
    return add


def create_mode(name, classifier, **options):
    if name not in MODES:
        raise FmnistError(f"unknown mode {name!r}; available: {', '.join(sorted(MODES))}")
    return MODES[name](classifier, **options)


@dataclass(frozen=True)
class ItemPrediction:
    box: tuple
    class_id: int
    name: str
    probability: float


def draw_label(frame, text, x, y, colour):
    """Text on a filled background, kept inside the frame."""
    scale = max(0.5, frame.shape[0] / 960)
    (width, height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x = min(max(0, x), max(0, frame.shape[1] - width - 4))
    y = max(height + baseline + 2, y)
    cv2.rectangle(frame, (x, y - height - baseline - 4), (x + width + 4, y), colour, cv2.FILLED)
    cv2.putText(frame, text, (x + 2, y - baseline - 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)


@register_mode("classify")
class ClassifyMode:
    """Segment every item, classify all crops of a frame in one batch, box and label each. A model
    trained on an image folder sees the whole frame instead, prepared as its training images were."""

    def __init__(self, classifier, min_probability=0.5, segment=SegmentSettings()):
        self.classifier = classifier
        self.min_probability = min_probability
        self.segment = replace(segment, size=classifier.input_size)
        self.whole_frames = getattr(classifier, "image_format", FASHION_MNIST) == FOLDER

    def preprocess(self, frame):
        if self.whole_frames:
            return whole_frame(frame, self.segment.size)
        return segment_items(frame, self.segment)

    def crop_affine(self, box):
        """Model-input pixel -> frame pixel geometry of the crop of `box` (see fit_square_affine)."""
        x0, y0, x1, y1 = box
        if self.whole_frames:
            return stretch_affine(y1 - y0, x1 - x0, self.segment.size)
        return fit_square_affine(y1 - y0, x1 - x0, self.segment.size, self.segment.margin)

    def infer(self, segmentation):
        if not segmentation.boxes:
            return []
        probabilities = self.classifier(segmentation.crops.astype(np.float32) / 255.0)
        classes = probabilities.argmax(axis=1)
        names = self.classifier.class_names
        return [ItemPrediction(box, int(c), names[c], float(p[c]))
                for box, c, p in zip(segmentation.boxes, classes, probabilities)]

    def draw(self, frame, items):
        if not items:
            draw_label(frame, "no item", 8, frame.shape[0] - 8, GREY)
        for item in items:
            sure = item.probability >= self.min_probability
            colour = GREEN if sure else GREY
            x0, y0, x1, y1 = item.box
            cv2.rectangle(frame, (x0, y0), (x1, y1), colour, 2)
            text = f"{item.name} {item.probability:.2f}" if sure else f"? {item.probability:.2f}"
            draw_label(frame, text, x0, y0 - 2, colour)

    def csv_rows(self, items):
        if not items:
            return [("", "", "no item", "", "", "", "", "")]
        return [(number, item.class_id, item.name, f"{item.probability:.4f}", *item.box)
                for number, item in enumerate(items)]


import yolo.detect_mode  # noqa: E402,F401 - registers the detector's "detect" mode (no TensorFlow import)
import fmnist_tf.realtime.cam_mode  # noqa: E402,F401 - registers the "cam" mode (CAM heat maps; no TensorFlow import)

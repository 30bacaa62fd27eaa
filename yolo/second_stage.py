"""A second-stage classifier for the detector (the option YOLOv5's detect.py offered).

The detector says where the items are; a Fashion-MNIST classifier, trained on 60,000 items, says
what they are. Each detected box is cut out of the letterboxed model input, prepared the way
`predict` prepares a photo (`fmnist_tf.data.sources.prepare_with_geometry`: polarity, background,
tight crop, 28x28) and classified. Boxes first go through class-agnostic NMS (the detector's
per-class NMS can keep one item under several classes); then each box scores every class c as
(its detection score) x (the classifier's probability of c), and those at or above the score
threshold are kept, best first. A box too small to cut out, or with no item in its crop, keeps
the detector's own detection.

Numpy and OpenCV only; the classifier is any `fmnist_tf.inference.Classifier`.
"""

import cv2
import numpy as np

from fmnist_tf.errors import FmnistError, ModelFileError
from yolo.detector import numpy_nms_rows

CROP_MARGIN = 2  # pixels of background around the box, from which the crop's polarity is read
MIN_CROP_SIDE = 4


def check_same_classes(classifier_names, detector_names):
    if tuple(classifier_names) != tuple(detector_names):
        raise ModelFileError(f"the second-stage classifier's classes {list(classifier_names)} differ from the "
                             f"detector's {list(detector_names)}; it must be trained on the same classes")


def crop_box(image, box, margin=CROP_MARGIN):
    """The grey uint8 crop of an RGB float [0, 1] image around an xyxy box, or None when too small."""
    height, width = image.shape[:2]
    x0, y0 = (max(0, int(np.floor(v)) - margin) for v in box[:2])
    x1, y1 = min(width, int(np.ceil(box[2])) + margin), min(height, int(np.ceil(box[3])) + margin)
    if x1 - x0 < MIN_CROP_SIDE or y1 - y0 < MIN_CROP_SIDE:
        return None
    rgb = np.clip(np.round(image[y0:y1, x0:x1] * 255.0), 0, 255).astype(np.uint8)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


class SecondStageClassifier:
    """Callable: (letterboxed images float32 (N, S, S, 3) RGB [0, 1], per-image detections
    (boxes (k, 4) xyxy input pixels, scores (k,), classes (k,))) -> per-image detections, rescored."""

    def __init__(self, classifier, detector_class_names, max_detections=100):
        check_same_classes(classifier.class_names, detector_class_names)
        self.classifier = classifier
        self.max_detections = int(max_detections)
        self.num_classes = len(classifier.class_names)

    def _inputs(self, image, boxes):
        """The classifier's [n, 28, 28, 1] inputs for the boxes it can read, and which boxes those are."""
        from fmnist_tf.data.sources import prepare_with_geometry

        size = self.classifier.input_size
        inputs, readable = [], []
        for index, box in enumerate(boxes):
            crop = crop_box(image, box)
            if crop is None:
                continue
            try:
                inputs.append(prepare_with_geometry(crop, self.classifier.image_format, size)[0])
            except FmnistError:  # a blank crop: nothing for the classifier to read
                continue
            readable.append(index)
        batch = np.asarray(inputs, np.float32).reshape(-1, size, size, 1) / 255.0
        return batch, np.asarray(readable, np.int64)

    def rescore(self, image, boxes, scores, classes, score_threshold, iou_threshold):
        """One image's detections (input pixels) -> the same, classified by the second stage."""
        scores = np.asarray(scores, np.float32)
        if not len(scores):
            return boxes, scores, classes
        rows, scores, _ = numpy_nms_rows(boxes, scores[:, None], -1.0, iou_threshold, self.max_detections)
        boxes, classes = np.asarray(boxes, np.float32)[rows], np.asarray(classes, np.int32)[rows]
        batch, readable = self._inputs(image, boxes)
        table = np.full((len(boxes), self.num_classes), -1.0, np.float32)  # -1: never kept
        table[readable] = scores[readable, None] * self.classifier(batch)
        unread = np.setdiff1d(np.arange(len(boxes)), readable)
        table[unread, classes[unread]] = scores[unread]  # the detector's own detection
        found_rows, found_classes = np.nonzero(table >= score_threshold)
        found_scores = table[found_rows, found_classes]
        order = np.argsort(-found_scores, kind="stable")[:self.max_detections]
        return boxes[found_rows[order]], found_scores[order], found_classes[order].astype(np.int32)

    def __call__(self, images, detections, score_threshold, iou_threshold):
        return [self.rescore(image, *found, score_threshold, iou_threshold)
                for image, found in zip(images, detections)]


def open_second_stage(classifier, detector_class_names, backend="auto", max_detections=100):
    """A SecondStageClassifier over a classifier run, .keras, .tflite, .onnx or SavedModel."""
    from fmnist_tf.inference import open_classifier

    return SecondStageClassifier(open_classifier(classifier, backend=backend), detector_class_names, max_detections)

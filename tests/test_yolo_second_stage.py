"""The detector's second-stage classifier (yolo.second_stage) with a stand-in classifier."""

import numpy as np
import pytest

from fmnist_tf.data.fashion_mnist import CLASS_NAMES
from fmnist_tf.errors import ModelFileError
from yolo.second_stage import SecondStageClassifier

ITEM_BOX = (20.0, 10.0, 40.0, 50.0)  # xyxy, x1/y1 exclusive, in a 64x64 letterboxed image


class FixedClassifier:
    """Answers the same probabilities for every crop, and keeps what it was shown."""

    input_size = 28
    image_format = "fashion-mnist"
    class_names = CLASS_NAMES

    def __init__(self, probabilities):
        self.probabilities = np.asarray(probabilities, np.float32)
        self.seen = []

    def __call__(self, images):
        self.seen.append(np.asarray(images))
        return np.tile(self.probabilities, (len(images), 1))


def letterboxed_with_item():
    """A float RGB image: a dark item with a lighter stripe on a light background, as detect-data draws it."""
    image = np.full((64, 64, 3), 0.9, np.float32)
    x0, y0, x1, y1 = (int(v) for v in ITEM_BOX)
    image[y0:y1, x0:x1] = 0.1
    image[y0 + 5:y0 + 10, x0:x1] = 0.4
    return image


def probabilities(**by_class):
    row = np.zeros(len(CLASS_NAMES), np.float32)
    for index, value in by_class.items():
        row[int(index[1:])] = value
    return row


def found(boxes, scores, classes):
    return (np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32), np.asarray(classes, np.int32))


def test_one_item_found_under_two_classes_becomes_one_box_scored_by_the_classifier():
    classifier = FixedClassifier(probabilities(c1=0.7, c2=0.2, c0=0.1))
    stage = SecondStageClassifier(classifier, CLASS_NAMES)
    shifted = (21.0, 11.0, 41.0, 51.0)  # the same item, kept by the detector's per-class NMS as a Coat too
    [(boxes, scores, classes)] = stage([letterboxed_with_item()], [found([ITEM_BOX, shifted], [0.8, 0.6], [3, 4])],
                                       score_threshold=0.05, iou_threshold=0.45)
    assert classes.tolist() == [1, 2, 0]
    np.testing.assert_allclose(scores, [0.8 * 0.7, 0.8 * 0.2, 0.8 * 0.1], rtol=1e-6)
    np.testing.assert_array_equal(boxes, np.tile(ITEM_BOX, (3, 1)))
    [crops] = classifier.seen
    assert crops.shape == (1, 28, 28, 1)
    assert crops.max() == pytest.approx(1.0) and crops[0, :, 0].max() < 0.1  # the item, light on black, centred


def test_the_score_threshold_applies_to_the_rescored_classes():
    stage = SecondStageClassifier(FixedClassifier(probabilities(c1=0.7, c2=0.3)), CLASS_NAMES)
    [(_, scores, classes)] = stage([letterboxed_with_item()], [found([ITEM_BOX], [0.8], [3])],
                                   score_threshold=0.3, iou_threshold=0.45)
    assert classes.tolist() == [1] and scores.tolist() == [pytest.approx(0.56)]


def test_a_box_too_small_to_read_keeps_the_detectors_own_class():
    classifier = FixedClassifier(probabilities(c1=1.0))
    stage = SecondStageClassifier(classifier, CLASS_NAMES)
    tiny = (60.0, 60.0, 61.0, 61.0)  # 1 px: nothing to crop
    [(boxes, scores, classes)] = stage([letterboxed_with_item()], [found([ITEM_BOX, tiny], [0.9, 0.5], [3, 7])],
                                       score_threshold=0.1, iou_threshold=0.45)
    assert classes.tolist() == [1, 7] and scores.tolist() == [pytest.approx(0.9), pytest.approx(0.5)]
    np.testing.assert_array_equal(boxes[1], tiny)
    assert len(classifier.seen[0]) == 1  # only the readable box was classified


def test_no_detections_stay_none():
    classifier = FixedClassifier(probabilities(c1=1.0))
    [(boxes, scores, classes)] = SecondStageClassifier(classifier, CLASS_NAMES)(
        [letterboxed_with_item()], [found([], [], [])], score_threshold=0.1, iou_threshold=0.45)
    assert boxes.shape == (0, 4) and len(scores) == len(classes) == 0 and not classifier.seen


def test_a_classifier_of_other_classes_is_refused():
    class Other(FixedClassifier):
        class_names = ("cat", "dog")

    with pytest.raises(ModelFileError, match="differ from the detector's"):
        SecondStageClassifier(Other(np.ones(2)), CLASS_NAMES)

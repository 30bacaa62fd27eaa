"""COCO evaluation of the detector on hand-made boxes: mAP, per-class numbers, confusion matrix, report files."""

import json

import numpy as np
import pytest

from yolo.coco_eval import (box_iou_xywh, coco_map, detection_confusion_matrix, detections_from_arrays,
                            per_class_table, save_detection_report)

NAMES = ["shirt", "shoe", "bag"]


def ground_truth(boxes_per_image, image_count=None):
    """boxes_per_image: {image_id: [(category_id, [x, y, w, h]), ...]}; categories 1..3."""
    image_ids = range(1, (image_count or max(boxes_per_image)) + 1)
    annotations = [{"id": n + 1, "image_id": image_id, "category_id": category, "bbox": list(map(float, bbox)),
                    "area": float(bbox[2] * bbox[3]), "iscrowd": 0}
                   for n, (image_id, category, bbox) in enumerate(
                       (i, c, b) for i, boxes in boxes_per_image.items() for c, b in boxes)]
    return {"images": [{"id": i, "file_name": f"{i}.png", "width": 96, "height": 96} for i in image_ids],
            "annotations": annotations,
            "categories": [{"id": k + 1, "name": name} for k, name in enumerate(NAMES)]}


BOXES = {1: [(1, [10, 10, 20, 20]), (2, [50, 50, 20, 20])],
         2: [(1, [5, 40, 20, 20]), (3, [60, 10, 30, 20])]}


def detections(shift=0.0, score=0.9, boxes=BOXES, category=None):
    return [{"image_id": i, "category_id": category or c, "score": score,
             "bbox": [b[0] + shift, b[1], b[2], b[3]]} for i, items in boxes.items() for c, b in items]


def test_perfect_detections_score_one():
    result = coco_map(ground_truth(BOXES), detections())
    assert result["map50"] == pytest.approx(1.0, abs=1e-6)
    assert result["map50_95"] == pytest.approx(1.0, abs=1e-6)
    assert result["ap50_agnostic"] == pytest.approx(1.0, abs=1e-6)
    assert [row["instances"] for row in result["classes"]] == [2, 1, 1]
    assert [row["images"] for row in result["classes"]] == [2, 1, 1]
    assert all(row["precision"] == 1 and row["recall"] == 1 for row in result["classes"])
    assert np.array_equal(np.asarray(result["confusion_matrix"]), np.diag([2, 1, 1, 0]))


def test_iou_between_half_and_one_passes_ap50_only():
    # 20x20 boxes moved 4.5 px: IoU = 310 / 490 = 0.63, a match at thresholds 0.50, 0.55, 0.60 of ten
    assert box_iou_xywh([[0, 0, 20, 20]], [[4.5, 0, 20, 20]])[0, 0] == pytest.approx(310 / 490)
    boxes = {1: [(1, [10, 10, 20, 20])], 2: [(2, [40, 40, 20, 20])]}
    result = coco_map(ground_truth(boxes), detections(shift=4.5, boxes=boxes))
    assert result["map50"] == pytest.approx(1.0, abs=1e-6)
    assert result["map50_95"] == pytest.approx(0.3, abs=1e-6)


def test_iou_below_half_gives_zero_ap50():
    boxes = {1: [(1, [10, 10, 20, 20])], 2: [(2, [40, 40, 20, 20])]}
    result = coco_map(ground_truth(boxes), detections(shift=8, boxes=boxes))  # IoU 240 / 560 = 0.43
    assert result["map50"] == 0 and result["map50_95"] == 0
    assert all(row["ap50"] == 0 and row["recall"] == 0 and row["precision"] == 0 for row in result["classes"][:2])
    # both the missed ground truth and the stray detection land in the background row/column
    assert np.array_equal(np.asarray(result["confusion_matrix"]),
                          [[0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 0], [1, 1, 0, 0]])


def test_wrong_class_lowers_its_ap_but_not_the_agnostic_ap():
    wrong = detections()
    wrong[1]["category_id"] = 3  # the shoe in image 1 is called a bag
    result = coco_map(ground_truth(BOXES), wrong)
    shirt, shoe, bag = result["classes"]
    assert shirt["ap50"] == pytest.approx(1.0) and shoe["ap50"] == 0
    assert bag["ap50"] < 1 and bag["precision"] == pytest.approx(0.5) and shoe["recall"] == 0
    assert result["map50"] < 1
    assert result["ap50_agnostic"] == pytest.approx(1.0, abs=1e-6)
    matrix = np.asarray(result["confusion_matrix"])
    assert matrix[1, 2] == 1 and matrix[1, 1] == 0  # true shoe (row), predicted bag (column)
    assert np.trace(matrix) == 3 and matrix.sum() == 4


def test_one_box_listed_under_several_classes_counts_once_in_the_agnostic_ap():
    """Per-class NMS keeps a box for each class it scores in; the agnostic AP reads each box once."""
    gt = ground_truth({1: [(1, [10, 10, 20, 20])], 2: [(2, [50, 50, 20, 20])]})
    found = [{"image_id": 1, "category_id": 1, "score": 0.9, "bbox": [10, 10, 20, 20]},
             {"image_id": 1, "category_id": 3, "score": 0.8, "bbox": [10, 10, 20, 20]},  # same box, another class
             {"image_id": 2, "category_id": 2, "score": 0.7, "bbox": [50, 50, 20, 20]}]
    assert coco_map(gt, found)["ap50_agnostic"] == pytest.approx(1.0, abs=1e-6)
    found[1]["bbox"] = [12, 12, 20, 20]  # a second, different box on the same item is a false positive
    assert coco_map(gt, found)["ap50_agnostic"] < 0.9


def test_no_detections_gives_zeros():
    result = coco_map(ground_truth(BOXES), [])
    assert result["map50"] == 0 and result["map50_95"] == 0 and result["ap50_agnostic"] == 0
    assert result["precision"] == 0 and result["recall"] == 0 and result["detections"] == 0
    assert all(row["ap50"] == 0 and row["ap50_95"] == 0 for row in result["classes"])
    assert np.asarray(result["confusion_matrix"])[:3, 3].tolist() == [2, 1, 1]
    assert "no detections" in result["summary"]


def test_false_positive_on_an_empty_image_lowers_precision():
    gt = ground_truth(BOXES, image_count=3)  # image 3 has no boxes
    stray = {"image_id": 3, "category_id": 1, "bbox": [30, 30, 20, 20], "score": 0.95}
    result = coco_map(gt, detections() + [stray])
    shirt = result["classes"][0]
    assert shirt["precision"] == pytest.approx(2 / 3) and shirt["recall"] == 1
    assert shirt["ap50"] < 1  # the stray outranks both true shirts
    assert result["images"] == 3
    assert np.asarray(result["confusion_matrix"])[3, 0] == 1


def test_category_without_ground_truth_is_left_out_of_the_mean():
    boxes = {1: [(1, [10, 10, 20, 20])], 2: [(2, [40, 40, 20, 20])]}  # no bags anywhere
    result = coco_map(ground_truth(boxes), detections(boxes=boxes))
    bag = result["classes"][2]
    assert bag["instances"] == 0 and bag["ap50"] is None and bag["recall"] is None
    assert result["map50"] == pytest.approx(1.0, abs=1e-6)


def test_score_threshold_drops_low_scores_from_p_r_and_confusion_only():
    result = coco_map(ground_truth(BOXES), detections(score=0.1), score_threshold=0.3)
    assert result["map50"] == pytest.approx(1.0, abs=1e-6)
    assert result["recall"] == 0
    assert np.trace(np.asarray(result["confusion_matrix"])[:3, :3]) == 0


def test_detections_from_arrays_converts_xyxy():
    dets = detections_from_arrays(7, np.array([[10, 20, 40, 60]]), np.array([0.8]), np.array([0]),
                                  category_ids=[1, 2, 3])
    assert dets == [{"image_id": 7, "category_id": 1, "bbox": [10.0, 20.0, 30.0, 40.0], "score": pytest.approx(0.8)}]
    assert detections_from_arrays(1, np.zeros((0, 4)), [], []) == []


def test_confusion_matrix_function_matches_result():
    gt, dets = ground_truth(BOXES), detections()
    matrix = detection_confusion_matrix(gt, dets, score_threshold=0.5)
    assert matrix.shape == (4, 4) and matrix.tolist() == coco_map(gt, dets)["confusion_matrix"]


def test_table_and_report_files(tmp_path):
    result = coco_map(ground_truth(BOXES), detections(shift=5))
    table = per_class_table(result, NAMES)
    lines = table.splitlines()
    assert lines[0].split() == ["class", "images", "instances", "P", "R", "AP50", "AP50-95"]
    assert lines[1].split()[:3] == ["all", "2", "4"]
    assert [line.split()[0] for line in lines[2:5]] == NAMES

    paths = save_detection_report(result, tmp_path, NAMES)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["map50"] == pytest.approx(result["map50"]) and len(metrics["classes"]) == 3
    assert "AP50-95" in (tmp_path / "per_class.txt").read_text()
    for name in ("pr_curve.png", "confusion_matrix.png"):
        png = tmp_path / "plots" / name
        assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(paths) == {"metrics", "table", "pr_curve", "confusion_matrix"}
    assert not list(tmp_path.rglob(".*"))  # no temporaries left

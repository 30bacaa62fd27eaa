"""The mAP a detector would reach with perfect boxes and a classifier's class scores.

    FMNIST_DATA_DIR=../shared/data/fashion-mnist python bench/detect_ceiling.py runs/bench-deep-45ep-20261125-033447

Every test item becomes one image with one ground-truth box. The "detector" finds that box exactly
and gives it, for every class, the classifier's probability of that class as its score (what a
detector with per-class NMS could output at most). pycocotools then scores it like `fmnist-tf
evaluate` scores the detector. Localization is perfect, so every AP lost is lost to class
confusion (shirt against T-shirt, pullover and coat), and the result bounds what a detector whose
recognition is no better than that classifier can reach on canvases of the same items: the
issue's mAP@0.5 targets (0.95 on `reference`, 0.90 on `multi`) are compared with it.
A second variant keeps only the top class of each item. Writes bench/results/detect_ceiling.json.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine  # noqa: E402

from fmnist_tf.data.fashion_mnist import CLASS_NAMES, load_split  # noqa: E402
from fmnist_tf.evaluate.report import model_outputs  # noqa: E402
from fmnist_tf.fileio import atomic_write_json  # noqa: E402
from fmnist_tf.modelio import load_model, resolve_model_path  # noqa: E402
from yolo.coco_eval import coco_map, detections_from_arrays  # noqa: E402

ITEM_BOX = (0.0, 0.0, 28.0, 28.0)


def item_ground_truth(labels):
    """A COCO dict: image i+1 holds one 28x28 box of class labels[i]."""
    return {"images": [{"id": i + 1, "width": 28, "height": 28, "file_name": f"item_{i}"} for i in range(len(labels))],
            "annotations": [{"id": i + 1, "image_id": i + 1, "category_id": int(label),
                             "bbox": [0.0, 0.0, 28.0, 28.0], "area": 784.0, "iscrowd": 0}
                            for i, label in enumerate(labels)],
            "categories": [{"id": k, "name": name} for k, name in enumerate(CLASS_NAMES)]}


def perfect_box_detections(probabilities, top_only):
    """Per item, the true box once per class scored by that class's probability (or only the top class)."""
    detections = []
    for index, row in enumerate(probabilities):
        classes = [int(row.argmax())] if top_only else list(range(len(row)))
        detections.extend(detections_from_arrays(index + 1, [ITEM_BOX] * len(classes), row[classes], classes))
    return detections


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", metavar="RUN_OR_MODEL", help="a Fashion-MNIST classifier")
    parser.add_argument("--data", help="Fashion-MNIST folder (default: $FMNIST_DATA_DIR)")
    parser.add_argument("--results", default="bench/results/detect_ceiling.json")
    args = parser.parse_args()

    images, labels = load_split("test", args.data)
    model_path = resolve_model_path(args.model)
    probabilities = model_outputs(load_model(model_path), images, 256, False)
    gt = item_ground_truth(labels)
    results = {"model": str(model_path), "items": int(len(labels)),
               "classifier_accuracy": float((probabilities.argmax(axis=1) == labels).mean()),
               "variants": {}, "machine": describe_machine()}
    for name, top_only in (("every class scored", False), ("top class only", True)):
        scores = coco_map(gt, perfect_box_detections(probabilities, top_only), agnostic=False)
        results["variants"][name] = {"map50": scores["map50"],
                                     "ap50_per_class": {row["class"]: row["ap50"] for row in scores["classes"]}}
        print(f"{name}: mAP@0.5 {scores['map50']:.4f}; weakest AP50 "
              + ", ".join(f"{row['class']} {row['ap50']:.3f}" for row in sorted(scores["classes"], key=lambda r: r["ap50"])[:3]))
    atomic_write_json(args.results, results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""CorLoc of CAM boxes: held-out test items pasted at random positions and scales on larger canvases.

    FMNIST_DATA_DIR=../shared/data/fashion-mnist python bench/cam_localization.py RUN_OR_MODEL [...]

Each of N seeded-random test items is scaled to a side of 35-75% of a 56x56 black canvas (the
dataset's own light-on-black look) and pasted at a random position. The truth is the tight box of
the pasted item's non-zero pixels, not the pasted square. The canvas is resized to the model input,
the model's CAM (true CAM for vgg_rescam, Grad-CAM otherwise) for its predicted class is resized back
to the canvas and boxed (20% of the maximum, largest connected component). CorLoc is the fraction of
canvases whose CAM box has IoU >= 0.5 with the truth. Two boxes that ignore the image are scored the
same way, to show the benchmark is not trivial: the whole canvas, and a centred box of the mean true size.
Writes bench/results/cam_localization.json (cam_localization-val.json with `--items val`).

Settings are chosen on validation items, not on the test split: `--items val` pastes the training
split's held-out validation items (the configs' stratified 10%, seed 42) instead, and `--thresholds`
scores several box thresholds in one pass (the maps are computed once). `--layer` explains another
feature map than the default one. Each model's entry also breaks CorLoc down by true class, with the
median ratio of the CAM box's width and height to the true box's (above 1: too wide or too tall).
"""

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine  # noqa: E402

from fmnist_tf.cam import cam_box, open_explainer  # noqa: E402
from fmnist_tf.data.fashion_mnist import CLASS_NAMES, load_split  # noqa: E402
from fmnist_tf.data.prepare import split_indices  # noqa: E402
from fmnist_tf.fileio import atomic_write_json  # noqa: E402
from yolo.boxes import iou_xyxy  # noqa: E402

CANVAS = 56
SIDE_RANGE = (0.35, 0.75)


def pasted_canvases(items, seed):
    """(canvases uint8 (N, CANVAS, CANVAS), true boxes (N, 4) x0, y0, x1, y1 exclusive)."""
    rng = np.random.default_rng(seed)
    canvases = np.zeros((len(items), CANVAS, CANVAS), np.uint8)
    boxes = np.zeros((len(items), 4), np.int64)
    for index, item in enumerate(items):
        side = int(round(rng.uniform(*SIDE_RANGE) * CANVAS))
        scaled = cv2.resize(item, (side, side), interpolation=cv2.INTER_AREA if side < 28 else cv2.INTER_LINEAR)
        top, left = rng.integers(0, CANVAS - side + 1, size=2)
        canvases[index, top:top + side, left:left + side] = scaled
        ys, xs = np.nonzero(scaled)
        boxes[index] = (left + xs.min(), top + ys.min(), left + xs.max() + 1, top + ys.max() + 1)
    return canvases, boxes


def box_iou(boxes, truth):
    """IoU of each box with its own truth box (a single box is compared with every truth box)."""
    boxes = np.broadcast_to(np.asarray(boxes, float), np.shape(truth))
    return np.array([iou_xyxy(box, true)[0, 0] for box, true in zip(boxes, truth)])


def canvas_maps(explainer, canvases, batch=128):
    """(CAMs resized to the canvas (N, CANVAS, CANVAS), predicted classes (N,))."""
    size = explainer.input_size
    maps, classes = [], []
    for start in range(0, len(canvases), batch):
        part = canvases[start:start + batch]
        inputs = np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in part])
        probabilities, cams = explainer(inputs[..., None].astype(np.float32) / 255.0)
        classes.extend(probabilities.argmax(axis=1))
        maps.extend(cv2.resize(cam, (CANVAS, CANVAS), interpolation=cv2.INTER_LINEAR) for cam in cams)
    return np.asarray(maps), np.asarray(classes)


def per_class_errors(boxes, truth, iou, labels, class_names):
    """Per true class: CorLoc and the median ratio of the CAM box's width and height to the truth's."""
    ratios = (boxes[:, 2:] - boxes[:, :2]) / (truth[:, 2:] - truth[:, :2])
    errors = {}
    for index, name in enumerate(class_names):
        mine = labels == index
        if mine.any():
            width_ratio, height_ratio = np.median(ratios[mine], axis=0)
            errors[name] = {"corloc": float((iou[mine] >= 0.5).mean()),
                            "median_width_ratio": float(width_ratio), "median_height_ratio": float(height_ratio)}
    return errors


def cam_boxes(maps, threshold):
    """The CAM box of each map (an all-zero map gives an empty box)."""
    boxes = [cam_box(cam, threshold) for cam in maps]
    return np.asarray([box if box is not None else (0, 0, 0, 0) for box in boxes], float)


def pasted_items(items, data, count, seed):
    """(images, labels) of `count` seeded-random test items, or validation items (`items="val"`)."""
    if items == "val":
        images, labels = load_split("train", data)
        _, pool = split_indices(labels, 0.1, 42)
    else:
        images, labels = load_split("test", data)
        pool = np.arange(len(labels))
    chosen = np.random.default_rng(seed).choice(pool, size=count, replace=False)
    return images[chosen], labels[chosen]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", metavar="RUN_OR_MODEL")
    parser.add_argument("--data", help="Fashion-MNIST folder (default: $FMNIST_DATA_DIR)")
    parser.add_argument("-n", type=int, default=1000, help="canvases (default 1000)")
    parser.add_argument("--items", choices=("test", "val"), default="test",
                        help="paste test items (the reported number) or held-out validation items (for choosing settings)")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.2],
                        help="box thresholds, fractions of the map's maximum (default 0.2, the CAM paper's)")
    parser.add_argument("--layer", default=None,
                        help="Grad-CAM on this layer instead of each model's default (the last conv output "
                             "at least 7 px wide); forces Grad-CAM on vgg_rescam too")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", help="JSON path (default bench/results/cam_localization[-val].json)")
    args = parser.parse_args()

    items, labels = pasted_items(args.items, args.data, args.n, args.seed)
    canvases, truth = pasted_canvases(items, args.seed)
    mean_w, mean_h = (truth[:, 2] - truth[:, 0]).mean(), (truth[:, 3] - truth[:, 1]).mean()
    centred = np.array([(CANVAS - mean_w) / 2, (CANVAS - mean_h) / 2, (CANVAS + mean_w) / 2, (CANVAS + mean_h) / 2])
    baselines = {"whole canvas": [0, 0, CANVAS, CANVAS], "centred mean-size box": centred.tolist()}
    results = {"canvases": args.n, "items": args.items, "canvas_side": CANVAS, "item_side_fraction": SIDE_RANGE,
               "seed": args.seed,
               "baselines": {name: {"corloc": float((box_iou(box, truth) >= 0.5).mean()),
                                    "mean_iou": float(box_iou(box, truth).mean())} for name, box in baselines.items()},
               "models": [], "machine": describe_machine()}
    for model in args.models:
        explainer = open_explainer(model, layer=args.layer)
        maps, classes = canvas_maps(explainer, canvases)
        for threshold in args.thresholds:
            boxes = cam_boxes(maps, threshold)
            iou = box_iou(boxes, truth)
            results["models"].append({
                "model": str(model), "method": explainer.method, "layer": explainer.layer_name,
                "threshold": threshold, "corloc": float((iou >= 0.5).mean()), "mean_iou": float(iou.mean()),
                "accuracy_on_canvases": float((classes == labels).mean()),
                "per_class": per_class_errors(boxes, truth, iou, labels, CLASS_NAMES)})
            print(json.dumps({key: value for key, value in results["models"][-1].items() if key != "per_class"}))
    suffix = "-val" if args.items == "val" else ""
    atomic_write_json(args.results or f"bench/results/cam_localization{suffix}.json", results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

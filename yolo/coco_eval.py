"""Detector evaluation: COCO mAP (pycocotools), a per-class table, PR curves and a confusion matrix.

Ground truth is a COCO-style dict (images, annotations with bbox [x, y, w, h], categories);
detections are dicts `{image_id, category_id, bbox: [x, y, w, h], score}`.
`detections_from_arrays` turns one image's xyxy arrays into that form.
"""

import contextlib
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay  # noqa: E402

from fmnist_tf.errors import DataError  # noqa: E402
from fmnist_tf.fileio import atomic_save_figure, atomic_write_json, atomic_write_text  # noqa: E402

SCORE_THRESHOLD = 0.3  # for P, R and the confusion matrix; mAP uses every detection given
IOU_THRESHOLD = 0.5
RECALL_POINTS = np.linspace(0.0, 1.0, 101)  # COCOeval's recThrs


# ---------------------------------------------------------------- inputs

def detections_from_arrays(image_id, boxes_xyxy, scores, classes, category_ids=None):
    """One image's (N, 4) xyxy boxes, (N,) scores and (N,) class indices as COCO detection dicts.
    `category_ids[class]` maps a class index to its category id; by default they are equal."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    detections = []
    for (x1, y1, x2, y2), score, cls in zip(boxes, np.ravel(scores), np.ravel(classes)):
        category = int(cls) if category_ids is None else int(category_ids[int(cls)])
        detections.append({"image_id": int(image_id), "category_id": category,
                           "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                           "score": float(score)})
    return detections


def _complete_ground_truth(gt):
    """A copy with the fields COCOeval needs but hand-made ground truth may omit (id, area, iscrowd)."""
    annotations = []
    for index, ann in enumerate(gt.get("annotations", [])):
        w, h = ann["bbox"][2], ann["bbox"][3]
        annotations.append({**ann, "id": ann.get("id", index + 1),
                            "area": ann.get("area", float(w) * float(h)), "iscrowd": ann.get("iscrowd", 0)})
    return {"info": gt.get("info", {}), "images": list(gt["images"]),
            "categories": list(gt["categories"]), "annotations": annotations}


def _clean_detections(detections, gt):
    """Fresh dicts of plain floats (loadRes mutates its input), checked against the ground truth."""
    image_ids = {img["id"] for img in gt["images"]}
    category_ids = {cat["id"] for cat in gt["categories"]}
    clean = []
    for det in detections:
        if det["image_id"] not in image_ids:
            raise DataError(f"a detection refers to image id {det['image_id']}, which is not in the ground truth")
        if det["category_id"] not in category_ids:
            raise DataError(f"a detection has category id {det['category_id']}, "
                            f"not one of the ground truth's categories {sorted(category_ids)}")
        clean.append({"image_id": int(det["image_id"]), "category_id": int(det["category_id"]),
                      "bbox": [float(v) for v in det["bbox"]], "score": float(det["score"])})
    return clean


def one_per_box(detections):
    """Each distinct box of an image once, at its best score: per-class NMS (and the second stage)
    list one box under several classes, and a class-agnostic score must not count those as duplicates."""
    best = {}
    for det in detections:
        key = (det["image_id"], tuple(det["bbox"]))
        if key not in best or det["score"] > best[key]["score"]:
            best[key] = det
    return list(best.values())


def _quiet(call, *args):
    """Run a pycocotools call with its progress prints captured; returns (result, printed text)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        value = call(*args)
    return value, buffer.getvalue()


def _coco_pair(gt, detections):
    coco_gt = COCO()
    coco_gt.dataset = gt
    _quiet(coco_gt.createIndex)
    coco_dt, _ = _quiet(coco_gt.loadRes, detections)
    return coco_gt, coco_dt


def _run_cocoeval(coco_gt, coco_dt, use_cats=True):
    """evaluate + accumulate + summarize; returns the COCOeval object and its summary text."""
    evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
    evaluator.params.useCats = int(use_cats)
    _quiet(evaluator.evaluate)
    _quiet(evaluator.accumulate)
    _, summary = _quiet(evaluator.summarize)
    return evaluator, summary


# ---------------------------------------------------------------- per-class numbers from COCOeval

def _class_ap(precision, k):
    """AP50 and AP50-95 for category index k from COCOeval's precision[T, R, K, A, M]
    (area 'all', the largest maxDets); None where the category has no ground truth (-1 entries)."""
    p = precision[:, :, k, 0, -1]
    if not (p > -1).any():
        return None, None
    return float(np.mean(p[0][p[0] > -1])), float(np.mean(p[p > -1]))


def _eval_images_of(evaluator, k):
    """COCOeval's evalImgs for category index k over area 'all' (list order: category, area, image)."""
    images = len(evaluator.params.imgIds)
    start = k * len(evaluator.params.areaRng) * images
    return [e for e in evaluator.evalImgs[start:start + images] if e is not None]


def _class_tp_fp(evaluator, k, score_threshold):
    """True and false positives at IoU 0.5 among detections scoring >= the threshold, with COCO's matching."""
    tp = fp = 0
    for entry in _eval_images_of(evaluator, k):
        scores = np.asarray(entry["dtScores"])
        keep = (scores >= score_threshold) & ~np.asarray(entry["dtIgnore"], dtype=bool)[0]
        matched = np.asarray(entry["dtMatches"])[0] > 0
        tp += int((keep & matched).sum())
        fp += int((keep & ~matched).sum())
    return tp, fp


def _class_counts(gt, category_ids):
    """Instances (non-crowd ground-truth boxes) and images containing the class, per category."""
    instances = dict.fromkeys(category_ids, 0)
    images = {c: set() for c in category_ids}
    for ann in gt["annotations"]:
        if not ann["iscrowd"]:
            instances[ann["category_id"]] += 1
            images[ann["category_id"]].add(ann["image_id"])
    return instances, {c: len(s) for c, s in images.items()}


def _ratio(numerator, denominator):
    return float(numerator / denominator) if denominator else None


# ---------------------------------------------------------------- confusion matrix

def box_iou_xywh(a, b):
    """IoU between every box of a (N, 4) and b (M, 4), both [x, y, w, h] -> (N, M)."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 4), np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ax2, ay2, bx2, by2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    w = np.clip(np.minimum(ax2[:, None], bx2) - np.maximum(a[:, None, 0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(ay2[:, None], by2) - np.maximum(a[:, None, 1], b[:, 1]), 0, None)
    inter = w * h
    union = (a[:, 2] * a[:, 3])[:, None] + b[:, 2] * b[:, 3] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _greedy_pairs(iou, iou_threshold):
    """(gt, det) index pairs with IoU >= threshold, highest IoU first, each box used at most once."""
    gi, di = np.nonzero(iou >= iou_threshold)
    order = np.argsort(-iou[gi, di], kind="stable")
    used_g, used_d, pairs = set(), set(), []
    for g, d in zip(gi[order], di[order]):
        if g not in used_g and d not in used_d:
            used_g.add(g)
            used_d.add(d)
            pairs.append((int(g), int(d)))
    return pairs


def detection_confusion_matrix(gt, detections, score_threshold=SCORE_THRESHOLD, iou_threshold=IOU_THRESHOLD):
    """(C+1, C+1) counts, rows true class, columns predicted class, index C = background.
    Boxes are matched across classes by IoU; a missed ground-truth box counts as predicted background,
    a detection matching nothing as true background. Class order: categories sorted by id."""
    category_ids = sorted(cat["id"] for cat in gt["categories"])
    index = {c: i for i, c in enumerate(category_ids)}
    background = len(category_ids)
    matrix = np.zeros((background + 1, background + 1), dtype=np.int64)
    gt_by_image, dt_by_image = {}, {}
    for ann in gt.get("annotations", []):
        if not ann.get("iscrowd", 0):
            gt_by_image.setdefault(ann["image_id"], []).append(ann)
    for det in detections:
        if det["score"] >= score_threshold:
            dt_by_image.setdefault(det["image_id"], []).append(det)
    for image_id in set(gt_by_image) | set(dt_by_image):
        truths, preds = gt_by_image.get(image_id, []), dt_by_image.get(image_id, [])
        iou = box_iou_xywh([t["bbox"] for t in truths], [p["bbox"] for p in preds])
        pairs = _greedy_pairs(iou, iou_threshold)
        for g, d in pairs:
            matrix[index[truths[g]["category_id"]], index[preds[d]["category_id"]]] += 1
        matched_g, matched_d = {g for g, _ in pairs}, {d for _, d in pairs}
        for g, truth in enumerate(truths):
            if g not in matched_g:
                matrix[index[truth["category_id"]], background] += 1
        for d, pred in enumerate(preds):
            if d not in matched_d:
                matrix[background, index[pred["category_id"]]] += 1
    return matrix


# ---------------------------------------------------------------- the result

def _zero_precision(has_ground_truth):
    """COCOeval's precision[T, R, K, A, M] when nothing was detected: 0 with ground truth, -1 without."""
    precision = np.full((10, len(RECALL_POINTS), len(has_ground_truth), 1, 1), -1.0)
    precision[:, :, np.asarray(has_ground_truth, dtype=bool)] = 0.0
    return precision


def _class_row(category, k, precision, evaluator, instances, images, score_threshold):
    ap50, ap = _class_ap(precision, k)
    tp, fp = _class_tp_fp(evaluator, k, score_threshold) if evaluator else (0, 0)
    # no detections at all: precision 0 if there was something to find, undefined otherwise
    precision_at_threshold = _ratio(tp, tp + fp) if tp + fp else (0.0 if instances else None)
    return {"class": category.get("name", str(category["id"])), "category_id": category["id"],
            "images": images, "instances": instances, "precision": precision_at_threshold,
            "recall": _ratio(tp, instances), "ap50": ap50, "ap50_95": ap}


def _mean(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else 0.0


def coco_map(gt, detections, *, score_threshold=SCORE_THRESHOLD, agnostic=True):
    """COCO box metrics of `detections` against `gt` (see the module docstring for both formats).

    Returns a dict: map50, map50_95 (COCOeval stats), ap50_agnostic, ap50_95_agnostic (all classes
    merged, each distinct box once at its best score; None unless `agnostic`), precision, recall (means over classes with instances, at IoU 0.5
    and `score_threshold`), score_threshold, images, instances, detections, classes (one dict per
    category sorted by id: class, category_id, images, instances, precision, recall, ap50, ap50_95;
    None where undefined), confusion_matrix ((C+1)^2 nested list, see detection_confusion_matrix),
    pr_curve ({recall: 101 points, precision: per class at IoU 0.5, None without instances}),
    summary (COCOeval's printed summary).
    """
    gt = _complete_ground_truth(gt)
    detections = _clean_detections(detections, gt)
    categories = sorted(gt["categories"], key=lambda cat: cat["id"])
    category_ids = [cat["id"] for cat in categories]
    instances, images = _class_counts(gt, category_ids)

    if detections:
        coco_gt, coco_dt = _coco_pair(gt, detections)
        evaluator, summary = _run_cocoeval(coco_gt, coco_dt)
        precision = evaluator.eval["precision"]
        stats = [max(float(s), 0.0) for s in evaluator.stats[:2]]  # -1 means no ground truth at all
        agnostic_stats = _run_cocoeval(*_coco_pair(gt, one_per_box(detections)), use_cats=False)[0].stats[:2] \
            if agnostic else None
    else:  # loadRes fails on an empty list; nothing detected means AP 0 wherever there is ground truth
        evaluator, summary, stats = None, "no detections: every AP is 0\n", [0.0, 0.0]
        precision = _zero_precision([instances[c] > 0 for c in category_ids])
        agnostic_stats = [0.0, 0.0] if agnostic else None

    classes = [_class_row(cat, k, precision, evaluator, instances[cat["id"]], images[cat["id"]], score_threshold)
               for k, cat in enumerate(categories)]
    curves = [[float(v) for v in precision[0, :, k, 0, -1]] if row["ap50"] is not None else None
              for k, row in enumerate(classes)]
    with_instances = [row for row in classes if row["instances"]]
    return {
        "map50": stats[1], "map50_95": stats[0],
        "ap50_agnostic": None if agnostic_stats is None else max(float(agnostic_stats[1]), 0.0),
        "ap50_95_agnostic": None if agnostic_stats is None else max(float(agnostic_stats[0]), 0.0),
        "precision": _mean([row["precision"] for row in with_instances]),
        "recall": _mean([row["recall"] for row in with_instances]),
        "score_threshold": float(score_threshold),
        "images": len(gt["images"]), "instances": sum(instances.values()), "detections": len(detections),
        "classes": classes,
        "confusion_matrix": detection_confusion_matrix(gt, detections, score_threshold).tolist(),
        "pr_curve": {"recall": [float(r) for r in RECALL_POINTS], "precision": curves},
        "summary": summary,
    }


# ---------------------------------------------------------------- report

def _cell(value, width):
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.3f}"


def _names(result, class_names):
    return list(class_names) if class_names is not None else [row["class"] for row in result["classes"]]


def per_class_table(result, class_names=None):
    """Ultralytics-style validation table: an `all` row, then one row per class."""
    names = _names(result, class_names)
    width = max([14] + [len(n) + 2 for n in names])
    lines = [f"{'class':>{width}}{'images':>9}{'instances':>11}{'P':>9}{'R':>9}{'AP50':>9}{'AP50-95':>9}",
             f"{'all':>{width}}{result['images']:>9d}{result['instances']:>11d}{_cell(result['precision'], 9)}"
             f"{_cell(result['recall'], 9)}{_cell(result['map50'], 9)}{_cell(result['map50_95'], 9)}"]
    for name, row in zip(names, result["classes"]):
        lines.append(f"{name:>{width}}{row['images']:>9d}{row['instances']:>11d}{_cell(row['precision'], 9)}"
                     f"{_cell(row['recall'], 9)}{_cell(row['ap50'], 9)}{_cell(row['ap50_95'], 9)}")
    if result.get("ap50_agnostic") is not None:
        lines.append(f"class-agnostic AP50 {result['ap50_agnostic']:.3f}, AP50-95 {result['ap50_95_agnostic']:.3f}; "
                     f"P and R at score >= {result['score_threshold']:g}, IoU >= {IOU_THRESHOLD:g}")
    return "\n".join(lines)


def save_pr_curve(result, class_names, path):
    """Precision vs recall at IoU 0.5 per class, with each AP50 and the mean in the legend."""
    recall = np.asarray(result["pr_curve"]["recall"])
    curves = [(name, np.asarray(p), row["ap50"]) for name, p, row in
              zip(class_names, result["pr_curve"]["precision"], result["classes"]) if p is not None]
    fig, ax = plt.subplots(figsize=(9, 6))
    for name, precision, ap50 in curves:
        ax.plot(recall, precision, linewidth=1, label=f"{name} {ap50:.3f}")
    if curves:
        ax.plot(recall, np.mean([p for _, p, _ in curves], axis=0), color="blue", linewidth=3,
                label=f"all classes {result['map50']:.3f} mAP@0.5")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01), title="Precision-recall (IoU 0.5)")
    ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=8)
    atomic_save_figure(fig, path)
    plt.close(fig)


def save_detection_confusion_matrix(result, class_names, path):
    fig, ax = plt.subplots(figsize=(10, 9))
    ConfusionMatrixDisplay(np.asarray(result["confusion_matrix"]), display_labels=[*class_names, "background"]).plot(
        xticks_rotation=45, cmap="Blues", colorbar=False, ax=ax)
    ax.set_title(f"Detection confusion matrix (rows: true class; score >= {result['score_threshold']:g}, "
                 f"IoU >= {IOU_THRESHOLD:g})")
    atomic_save_figure(fig, path)
    plt.close(fig)


def save_detection_report(result, out_dir, class_names=None):
    """metrics.json and per_class.txt in `out_dir`, pr_curve.png and confusion_matrix.png in `out_dir`/plots.
    Returns the written paths by name."""
    out_dir = Path(out_dir)
    names = _names(result, class_names)
    table = per_class_table(result, names)
    paths = {
        "metrics": atomic_write_json(out_dir / "metrics.json",
                                     {k: v for k, v in result.items() if k not in ("pr_curve", "summary")}),
        "table": atomic_write_text(out_dir / "per_class.txt", f"{table}\n\nCOCOeval summary\n{result['summary']}"),
    }
    paths["pr_curve"] = out_dir / "plots" / "pr_curve.png"
    save_pr_curve(result, names, paths["pr_curve"])
    paths["confusion_matrix"] = out_dir / "plots" / "confusion_matrix.png"
    save_detection_confusion_matrix(result, names, paths["confusion_matrix"])
    return paths

"""`fmnist-tf evaluate RUN` on a detector: COCO mAP (pycocotools) on the held-out test canvases,
a per-class table, metrics.json, PR curves and a confusion matrix."""

from pathlib import Path

from fmnist_tf.errors import DataError
from fmnist_tf.modelio import load_model, resolve_model_path, run_dir_of
from fmnist_tf.train.fit import recorded_source
from yolo.coco_eval import coco_map, per_class_table, save_detection_report
from yolo.detector import find_detector_config
from yolo.second_stage import open_second_stage
from yolo.train import make_detection_function, predict_split, split_detections, validation_data


def is_detector_run(run_or_model) -> bool:
    path = Path(run_or_model)
    return (path if path.is_dir() else path.parent).joinpath("detector.json").is_file()


def evaluate_detector(run_or_model, *, data=None, split=None, out=None, batch_size=16, classifier=None):
    """mAP@0.5 and mAP@0.5:0.95 of a detector on `split` (test when the folder has one, else val)
    of its recorded detect-data folder (or `data`). Writes the report into the run (or `out`).
    `classifier` (a classifier run or model) re-classifies every box (`yolo.second_stage`); its
    report goes to RUN/second-stage/ unless `out` is given."""
    model_path = resolve_model_path(run_or_model)
    run_dir = run_dir_of(model_path) or model_path.parent
    settings = find_detector_config(model_path).to_json()
    folder = Path(data or recorded_source(run_dir) or "")
    split = split or ("test" if (folder / "test.txt").is_file() else "val")
    if not (folder / f"{split}.txt").is_file() or not (folder / f"{split}.json").is_file():
        raise DataError(f"{folder}: no {split}.txt / {split}.json to evaluate on; pass --data DETECT_DATA_DIR")
    second_stage = classifier and open_second_stage(classifier, settings["class_names"])
    dataset, gt, image_ids, image_sizes = validation_data(folder, split, settings, batch_size)
    step = make_detection_function(load_model(model_path), settings)
    results, _ = predict_split(step, dataset, image_sizes, settings, second_stage=second_stage)
    scores = coco_map(gt, split_detections(results, image_ids))
    if second_stage:
        scores["second_stage_classifier"] = second_stage.classifier.source
    out = Path(out) if out else run_dir / "second-stage" if second_stage else run_dir
    save_detection_report(scores, out, settings["class_names"])
    print(f"{split} split of {folder}: {len(image_ids)} images")
    print(per_class_table(scores, settings["class_names"]))
    print(f"mAP@0.5 {scores['map50']:.4f}, mAP@0.5:0.95 {scores['map50_95']:.4f}, "
          f"class-agnostic AP@0.5 {scores['ap50_agnostic']:.4f}; report in {out}")
    return scores

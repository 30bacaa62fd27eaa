"""`fmnist-tf train -c tinyyolov3 --data DIR`: the classifiers' run-directory contract for the detector.

DIR is a `fmnist-tf detect-data` folder (train.txt / val.txt in the keras-yolo3 format and val.json
in COCO form). Validation mAP@0.5 (pycocotools) is logged per epoch as `val_map50` and picks
best.keras. `detector.json` in the run holds what inference needs: input size, anchors, masks and
class names.
"""

import json
from pathlib import Path

import keras
import numpy as np

from fmnist_tf.config import TrainConfig, config_to_yaml
from fmnist_tf.errors import ConfigError, DataError
from fmnist_tf.fileio import atomic_write_json, atomic_write_text
from fmnist_tf.models.registry import builder_options
from fmnist_tf.train.fit import fit_run, open_run, restore_backup, run_callbacks
from fmnist_tf.train.recipe import jit_setting, make_optimizer
from yolo.annotations import read_annotations
from yolo.boxes import DEFAULT_ANCHORS, DEFAULT_MASKS, check_input_size, kmeans_anchors, scale_anchors
from yolo.coco_eval import coco_map, detections_from_arrays
from yolo.dataset import AugmentSettings, annotation_box_sizes, detection_dataset
from yolo.loss import YoloLoss
from yolo.model import tiny_yolov3
from yolo.postprocess import detect, letterbox_to_original

DEFAULT_INPUT_SIZE = 320
KMEANS_MASKS = ((3, 4, 5), (0, 1, 2))  # k-means anchors are all fitted to the data: use all six
EVAL_SCORE_THRESHOLD = 0.001  # mAP needs the whole precision-recall curve, as Ultralytics' val does
EVAL_IOU_THRESHOLD = 0.45


def detection_folder(data) -> Path:
    """The detect-data folder, checked for what training needs."""
    if data is None:
        raise DataError("the detector trains on detection canvases: make them with `fmnist-tf detect-data` "
                        "and pass --data datasets/fmnist-multi")
    folder = Path(data)
    missing = [name for name in ("train.txt", "val.txt", "val.json") if not (folder / name).is_file()]
    if missing:
        raise DataError(f"{folder}: not a detect-data folder (missing {', '.join(missing)}); "
                        "make one with `fmnist-tf detect-data --out DIR`")
    return folder


def read_class_names(folder: Path):
    summary = folder / "dataset.json"
    if summary.is_file():
        return list(json.loads(summary.read_text())["class_names"])
    categories = json.loads((folder / "val.json").read_text())["categories"]
    return [category["name"] for category in sorted(categories, key=lambda c: c["id"])]


def parse_anchors(text):
    try:
        anchors = np.array([[float(v) for v in pair.split(",")] for pair in text.split()], np.float32)
    except ValueError:
        anchors = np.zeros((0, 2), np.float32)
    if anchors.shape != (6, 2) or (anchors <= 0).any():
        raise ConfigError(f"anchors must be default, kmeans or six 'w,h' pairs of positive numbers, got {text!r}")
    return anchors


def choose_anchors(config: TrainConfig, folder: Path, input_size):
    """(anchors (6, 2) in input pixels, masks)."""
    if config.anchors == "default":
        return scale_anchors(DEFAULT_ANCHORS, input_size), DEFAULT_MASKS
    if config.anchors == "kmeans":
        anchors = kmeans_anchors(annotation_box_sizes(folder / "train.txt", input_size), k=6, seed=config.seed)
        return anchors, KMEANS_MASKS
    return parse_anchors(config.anchors), DEFAULT_MASKS


def detector_settings(config: TrainConfig, folder: Path):
    input_size = check_input_size(config.input_size or DEFAULT_INPUT_SIZE)
    anchors, masks = choose_anchors(config, folder, input_size)
    class_names = read_class_names(folder)
    return {"input_size": input_size, "class_names": class_names, "num_classes": len(class_names),
            "anchors": np.asarray(anchors, float).round(2).tolist(), "masks": [list(m) for m in masks]}


def make_detection_function(model, settings, score_threshold=EVAL_SCORE_THRESHOLD, iou_threshold=EVAL_IOU_THRESHOLD):
    """A compiled images -> (raw heads, detections) step: the model and NMS in one graph."""
    import tensorflow as tf

    anchors, masks = np.asarray(settings["anchors"], np.float32), settings["masks"]

    @tf.function(reduce_retracing=True)
    def step(images):
        heads = model(images, training=False)
        return heads, detect(heads, anchors, masks, settings["input_size"], settings["num_classes"],
                             score_threshold=score_threshold, iou_threshold=iou_threshold)
    return step


def predict_split(step, dataset, image_sizes, settings, loss=None, second_stage=None):
    """Detections per image in original pixels over an ordered (unshuffled) dataset, and the mean
    loss. `step` comes from `make_detection_function` (built once: each new one traces again).
    `second_stage` (a `yolo.second_stage.SecondStageClassifier`) re-classifies every box."""
    results, losses = [], []
    for images, targets in dataset:
        heads, found = step(images)
        if loss is not None:
            losses.append(float(loss(list(targets), heads)))
        boxes, scores, classes, valid = (t.numpy() for t in (found.boxes, found.scores, found.classes, found.valid))
        found = [(boxes[index, :count], scores[index, :count], classes[index, :count]) for index, count in enumerate(valid)]
        if second_stage is not None:
            found = second_stage(images.numpy(), found, EVAL_SCORE_THRESHOLD, EVAL_IOU_THRESHOLD)
        for image_boxes, image_scores, image_classes in found:
            hw = image_sizes[len(results)]
            results.append((letterbox_to_original(image_boxes, hw, settings["input_size"]), image_scores, image_classes))
    return results, (float(np.mean(losses)) if losses else None)


def coco_ground_truth(folder: Path, split, entries):
    """The split's COCO dict, its image ids in annotation-file order, and each image's (height, width)."""
    gt = json.loads((folder / f"{split}.json").read_text())
    by_path = {(folder / image["file_name"]).resolve(): image for image in gt["images"]}
    try:
        images = [by_path[Path(path).resolve()] for path, _ in entries]
    except KeyError as exc:
        raise DataError(f"{folder / split}.json has no entry for {exc.args[0]}, which {split}.txt lists") from None
    return gt, [image["id"] for image in images], [(image["height"], image["width"]) for image in images]


def split_detections(results, image_ids):
    return [detection for image_id, (boxes, scores, classes) in zip(image_ids, results)
            for detection in detections_from_arrays(image_id, boxes, scores, classes)]


class DetectionValidation(keras.callbacks.Callback):
    """Adds val_loss, val_map50 and val_map50_95 (pycocotools) to each epoch's logs."""

    def __init__(self, dataset, gt, image_ids, image_sizes, settings, loss):
        super().__init__()
        self.dataset, self.gt, self.image_ids, self.image_sizes = dataset, gt, image_ids, image_sizes
        self.settings, self.loss = settings, loss
        self.step = None

    def on_epoch_end(self, epoch, logs=None):
        self.step = self.step or make_detection_function(self.model, self.settings)
        results, mean_loss = predict_split(self.step, self.dataset, self.image_sizes, self.settings, self.loss)
        scores = coco_map(self.gt, split_detections(results, self.image_ids), agnostic=False)
        logs.update(val_loss=mean_loss, val_map50=scores["map50"], val_map50_95=scores["map50_95"])


def validation_data(folder, split, settings, batch_size):
    entries = read_annotations(folder / f"{split}.txt", check_images=True, num_classes=settings["num_classes"])
    gt, image_ids, image_sizes = coco_ground_truth(folder, split, entries)
    dataset = detection_dataset(folder / f"{split}.txt", settings["input_size"], np.asarray(settings["anchors"], np.float32),
                                settings["masks"], settings["num_classes"], batch_size)
    return dataset, gt, image_ids, image_sizes


def training_augmentation(config: TrainConfig):
    """The config's `augment` and `flip` switches as AugmentSettings, or None for no augmentation.
    AugmentSettings.flip is a probability: passing the switch itself (True, i.e. 1.0) mirrored every
    training canvas, and the detector then missed un-mirrored shoes at test time."""
    if not config.augment:
        return None
    return AugmentSettings() if config.flip else AugmentSettings(flip=0.0)


def train_detector(config: TrainConfig, *, data=None, out=None, resume=None, verbose=None, callbacks=(),
                   strategy=None) -> Path:
    """Train TinyYoloV3 on a detect-data folder; returns the run directory. The model is built,
    compiled and restored inside `strategy`'s scope (see fmnist_tf.train.distribute)."""
    import tensorflow as tf

    from fmnist_tf.train.distribute import describe, synchronize_batchnorm

    strategy = strategy or tf.distribute.get_strategy()
    builder_options(config.model, {"weights": config.weights, "backend": config.backend})  # refuses them
    folder = detection_folder(data)
    run_dir, initial_epoch, backup_path = open_run(config, out, resume)
    keras.utils.set_random_seed(config.seed)
    settings = detector_settings(config, folder)
    anchors = np.asarray(settings["anchors"], np.float32)
    size, classes, masks = settings["input_size"], settings["num_classes"], settings["masks"]
    augment = training_augmentation(config)
    train_ds = detection_dataset(folder / "train.txt", size, anchors, masks, classes, config.batch_size,
                                 training=True, augment=augment, seed=config.seed)
    val_ds, gt, image_ids, image_sizes = validation_data(folder, "val", settings, config.batch_size)
    steps_per_epoch = int(train_ds.cardinality())
    train_images = sum(1 for line in (folder / "train.txt").read_text().splitlines() if line.strip())

    loss = YoloLoss(size, classes, anchors, masks, ignore_threshold=config.ignore_threshold)
    with strategy.scope():
        model = tiny_yolov3(size, classes, len(masks[0]), width=config.width)
        model.compile(optimizer=make_optimizer(config, steps_per_epoch), loss=loss.head_losses(),
                      jit_compile=jit_setting(config))
        restore_backup(model, backup_path, run_dir, initial_epoch)
    synchronize_batchnorm(model, strategy)
    print(f"model {config.model}: {model.count_params():,} parameters, input {size}x{size}; "
          f"{train_images:,} training / {len(image_ids):,} validation canvases; run directory {run_dir}")
    print(f"training on {describe(strategy, config)}")

    atomic_write_text(run_dir / "config.yaml", config_to_yaml(config))
    atomic_write_json(run_dir / "dataset.json", {"source": str(folder.resolve()), "class_names": settings["class_names"],
                                                 "task": "detect", "train_size": train_images,
                                                 "val_size": len(image_ids), "seed": config.seed})
    atomic_write_json(run_dir / "detector.json", settings)

    validation = DetectionValidation(val_ds, gt, image_ids, image_sizes, settings, loss)
    callbacks = [*callbacks, *run_callbacks(run_dir, config, validation, "val_map50", initial_epoch, backup_path)]
    fit_run(model, train_ds, config, run_dir, callbacks, initial_epoch, verbose)
    return run_dir

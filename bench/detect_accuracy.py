"""Train TinyYoloV3 on synthesized canvases within a time budget; report test mAP (pycocotools).

    FMNIST_DATA_DIR=../shared/data/fashion-mnist python bench/detect_accuracy.py --preset multi \
        --input-size 256 --budget-minutes 90

Makes the canvases with `fmnist-tf detect-data` settings (train canvases from training items, val
from the held-out items, test from the test split) unless the folder exists, trains with
configs/tinyyolov3.yaml plus the overrides given here, stops after the last epoch that fits in the
budget, then evaluates best.keras (chosen by validation mAP@0.5) on the test canvases.
`--classifier RUN` also scores them with that Fashion-MNIST classifier as the second stage
(`fmnist-tf evaluate RUN --classifier ...`); `--run RUN` evaluates a finished bench run instead of
training one (its training time is then the sum of its epochs in history.csv).
Writes bench/results/detect_accuracy-<preset>[-<label>].json.
"""

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import TimeBudget, describe_machine  # noqa: E402

from fmnist_tf.config import load_config  # noqa: E402
from fmnist_tf.fileio import atomic_write_json  # noqa: E402
from fmnist_tf.train.fit import train  # noqa: E402
from fmnist_tf.train.callbacks import read_history  # noqa: E402
from yolo.canvas import synthesize_fashion_mnist_canvases  # noqa: E402
from yolo.evaluate import evaluate_detector  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=("multi", "reference"), default="multi")
    parser.add_argument("--canvases", help="detect-data folder (default datasets/bench-<preset>)")
    parser.add_argument("--n-train", type=int, default=6000)
    parser.add_argument("--n-val", type=int, default=300)
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--data", help="Fashion-MNIST folder (default: $FMNIST_DATA_DIR)")
    parser.add_argument("--input-size", type=int, default=256)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--budget-minutes", type=float, default=90.0)
    parser.add_argument("--results", default="bench/results")
    parser.add_argument("--label", help="names the variant in the result file, e.g. 16k")
    parser.add_argument("--classifier", metavar="RUN_OR_MODEL", help="also score with this second-stage classifier")
    parser.add_argument("--run", metavar="RUN_DIR", help="evaluate this finished run instead of training")
    args = parser.parse_args()

    folder = Path(args.canvases or f"datasets/bench-{args.preset}")
    if not (folder / "dataset.json").is_file():
        synthesize_fashion_mnist_canvases(folder, {"train": args.n_train, "val": args.n_val, "test": args.n_test},
                                          preset=args.preset, data=args.data)
    overrides = {"input_size": args.input_size, "width": args.width, "epochs": args.epochs,
                 "batch_size": args.batch_size}
    if args.run:
        run_dir = Path(args.run)
        overrides = {key: value for key, value in asdict(load_config(run_dir / "config.yaml")).items()
                     if key in overrides}
    else:
        run_dir = Path("runs") / f"bench-tinyyolov3-{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
        start = time.perf_counter()
        train(load_config("tinyyolov3", overrides), data=folder, out=run_dir, verbose=2,
              callbacks=[TimeBudget(args.budget_minutes * 60)])
        train_minutes = (time.perf_counter() - start) / 60
    scores = evaluate_detector(run_dir, data=folder, split="test")
    history = read_history(run_dir / "history.csv")
    if args.run:
        train_minutes = sum(float(row["epoch_seconds"]) for row in history) / 60
    result = {
        "preset": args.preset, "label": args.label,
        "canvases": json.loads((folder / "dataset.json").read_text())["counts"],
        "config_overrides": overrides, "epochs_trained": len(history), "run_dir": str(run_dir),
        "test_map50": scores["map50"], "test_map50_95": scores["map50_95"],
        "test_ap50_class_agnostic": scores["ap50_agnostic"],
        "best_val_map50": max(float(row["val_map50"]) for row in history),
        "train_wall_minutes" if not args.run else "train_epoch_minutes": round(train_minutes, 2),
        "mean_epoch_seconds": sum(float(r["epoch_seconds"]) for r in history) / len(history),
        "machine": describe_machine(),
    }
    if args.classifier:
        second = evaluate_detector(run_dir, data=folder, split="test", classifier=args.classifier)
        result["second_stage"] = {"classifier": second["second_stage_classifier"], "test_map50": second["map50"],
                                  "test_map50_95": second["map50_95"],
                                  "test_ap50_class_agnostic": second["ap50_agnostic"]}
    suffix = f"-{args.label}" if args.label else ""
    atomic_write_json(Path(args.results) / f"detect_accuracy-{args.preset}{suffix}.json", result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

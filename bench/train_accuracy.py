"""Train each model with its default config on the full dataset; report test accuracy and wall time.

    FMNIST_DATA_DIR=../shared/data/fashion-mnist python bench/train_accuracy.py deep baseline
    FMNIST_DATA_DIR=../shared/data/fashion-mnist python bench/train_accuracy.py vgg_rescam \
        --set width=0.25 batch_size=128 epochs=8 --label cpu-w0.25 --budget-minutes 60
    FMNIST_DATA_DIR=../shared/data/fashion-mnist python bench/train_accuracy.py embedding --budget-minutes 60
    FMNIST_DATA_DIR=../shared/data/fashion-mnist python bench/train_accuracy.py embedding_classifier \
        --set base=runs/bench-embedding-20261124-150000 --label on-bench-embedding

Writes bench/results/train_accuracy-<model>[-<label>].json (the README's accuracy rows come from
these). An embedding's test accuracy is its kNN accuracy (`fmnist-tf evaluate`). `--set` changes the default config (a labelled, CPU-sized variant); `--budget-minutes`
stops training before an epoch that would overrun the budget; `--flip-tta` also reports the test
accuracy with flip test-time augmentation (`fmnist-tf evaluate --flip-tta`).
"""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import TimeBudget, describe_machine, parse_training_run, training_run_parser  # noqa: E402

from fmnist_tf.config import load_config  # noqa: E402
from fmnist_tf.evaluate.report import evaluate  # noqa: E402
from fmnist_tf.fileio import atomic_write_json  # noqa: E402
from fmnist_tf.train.callbacks import read_history  # noqa: E402
from fmnist_tf.train.fit import train  # noqa: E402


def main():
    parser = training_run_parser(__doc__, "config names, e.g. baseline deep")
    parser.add_argument("--flip-tta", action="store_true",
                        help="also score best.keras with flip test-time augmentation (into RUN/flip-tta)")
    args, settings, suffix = parse_training_run(parser)
    for name in args.models:
        config = load_config(name, settings)
        run_dir = Path("runs") / f"bench-{name}{suffix}-{time.strftime('%Y%m%d-%H%M%S')}"
        start = time.perf_counter()
        budget = [TimeBudget(args.budget_minutes * 60)] if args.budget_minutes else []
        train(config, data=args.data, out=run_dir, verbose=2, callbacks=budget)
        train_minutes = (time.perf_counter() - start) / 60
        metrics = evaluate(run_dir, data=args.data)
        flip_tta = evaluate(run_dir, data=args.data, out=run_dir / "flip-tta", flip_tta=True) if args.flip_tta else None
        history = read_history(run_dir / "history.csv")
        monitor = "val_knn_accuracy" if "val_knn_accuracy" in history[0] else "val_f1"  # what picked best.keras
        result = {
            "config": name, "settings": settings, "label": args.label, "epochs": config.epochs,
            "epochs_trained": len(history), "budget_minutes": args.budget_minutes, "run_dir": str(run_dir),
            "test_accuracy": metrics["accuracy"], "test_accuracy_by": "kNN" if "knn_k" in metrics else "classifier", "test_f1": metrics["f1"],
            **({"test_accuracy_flip_tta": flip_tta["accuracy"], "test_f1_flip_tta": flip_tta["f1"]} if flip_tta else {}),
            f"best_{monitor}": max(float(row[monitor]) for row in history),
            "train_wall_minutes": round(train_minutes, 2),
            "mean_epoch_seconds": sum(float(r["epoch_seconds"]) for r in history) / len(history),
            "machine": describe_machine(),
        }
        atomic_write_json(Path(args.results) / f"train_accuracy-{name}{suffix}.json", result)
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

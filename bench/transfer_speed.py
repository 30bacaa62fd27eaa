"""Transfer learning: seconds per training epoch with the backbone frozen against unfrozen, same data.

    FMNIST_DATA_DIR=../shared/data/fashion-mnist python bench/transfer_speed.py --from runs/bench-deep-20261124-061423

Each round trains one epoch of `configs/transfer.yaml` from the same starting run, frozen then
unfrozen (round 0 is a warm-up, not kept), and reads the epoch's training seconds (validation
excluded) from history.csv. Writes bench/results/transfer_speed.json.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import alternating_rounds, describe_machine, parse_settings  # noqa: E402

from fmnist_tf.config import load_config  # noqa: E402
from fmnist_tf.fileio import atomic_write_json  # noqa: E402
from fmnist_tf.train.callbacks import read_history  # noqa: E402
from fmnist_tf.train.fit import train  # noqa: E402


def epoch_rate(config, data, scratch):
    """Training images per second of one epoch (a rate, so alternating_rounds can take it)."""
    run_dir = Path(tempfile.mkdtemp(dir=scratch))
    train(config, data=data, out=run_dir, verbose=0)
    info = json.loads((run_dir / "dataset.json").read_text())
    return info["train_size"] / float(read_history(run_dir / "history.csv")[0]["epoch_seconds"])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="base", required=True, help="the run (or .keras) whose backbone to use")
    parser.add_argument("--data", help="training data (default: $FMNIST_DATA_DIR)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="transfer config overrides")
    parser.add_argument("--results", default="bench/results")
    args = parser.parse_args()
    settings = {**parse_settings(args.set), "base": args.base, "epochs": 1}
    configs = {"frozen": load_config("transfer", {**settings, "freeze": True}),
               "unfrozen": load_config("transfer", {**settings, "freeze": False})}
    with tempfile.TemporaryDirectory() as scratch:
        rates, median = alternating_rounds(
            {name: (lambda c=config: epoch_rate(c, args.data, scratch)) for name, config in configs.items()},
            args.rounds, unit=" img/s")
    result = {
        "base": args.base, "settings": parse_settings(args.set), "rounds": args.rounds,
        "images_per_second": rates, "median_images_per_second": median,
        "seconds_per_epoch_ratio_unfrozen_over_frozen": median["frozen"] / median["unfrozen"],
        "machine": describe_machine(),
    }
    atomic_write_json(Path(args.results) / "transfer_speed.json", result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Compare two evaluated models image by image on the same test split: both accuracies, the images
only one of them gets right, and McNemar's exact test of whether their accuracies differ.

    fmnist-tf evaluate runs/bench-embedding-20261125-021010
    fmnist-tf evaluate runs/bench-embedding_classifier-on-bench-embedding-20261125-024100
    python bench/paired_test.py runs/bench-embedding-20261125-021010 \
        runs/bench-embedding_classifier-on-bench-embedding-20261125-024100 --label head-vs-knn

Each argument is a folder holding the test_predictions.csv that `fmnist-tf evaluate` writes (a run
directory, or evaluate's --out). Writes bench/results/paired_test[-<label>].json.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine  # noqa: E402

from fmnist_tf.evaluate.report import read_test_predictions  # noqa: E402
from fmnist_tf.evaluate.scores import paired_comparison  # noqa: E402
from fmnist_tf.fileio import atomic_write_json  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", help="folder with the first model's test_predictions.csv")
    parser.add_argument("b", help="folder with the second model's test_predictions.csv")
    parser.add_argument("--label", help="suffix of the results file")
    parser.add_argument("--results", default="bench/results")
    args = parser.parse_args()
    labels_a, predicted_a = read_test_predictions(Path(args.a) / "test_predictions.csv")
    labels_b, predicted_b = read_test_predictions(Path(args.b) / "test_predictions.csv")
    if not np.array_equal(labels_a, labels_b):
        sys.exit("the two folders were evaluated on different test sets")
    result = {"a": args.a, "b": args.b, "test_size": int(len(labels_a)),
              **paired_comparison(labels_a, predicted_a, predicted_b), "machine": describe_machine()}
    suffix = f"-{args.label}" if args.label else ""
    atomic_write_json(Path(args.results) / f"paired_test{suffix}.json", result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

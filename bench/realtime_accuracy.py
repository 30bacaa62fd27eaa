"""Per-frame accuracy of `realtime` classify mode on a video of photographed-style test items.

    FMNIST_DATA_DIR=../shared/data/fashion-mnist python bench/realtime_accuracy.py [RUN_OR_MODEL]

500 seeded-random Fashion-MNIST test items, one frame each, enlarged to 45-70% of a 640x480 frame,
as dark garments on alternately white and textured light backgrounds, then blurred (sigma 1),
noised (sigma 6) and JPEG-compressed (quality 60). A frame is right when its most salient item
(the first CSV row of that frame) has the true class. The same items' accuracy as plain 28x28 test
images is reported beside it: the gap is what the camera-style preprocessing costs.
Writes bench/results/realtime_accuracy.json.
"""

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine  # noqa: E402
from realtime_speed import newest_deep_run  # noqa: E402

from fmnist_tf.data.fashion_mnist import load_split  # noqa: E402
from fmnist_tf.fileio import atomic_write_json  # noqa: E402
from fmnist_tf.inference import open_classifier  # noqa: E402
from fmnist_tf.realtime import FrameSource, create_mode, run_realtime  # noqa: E402
from fmnist_tf.realtime.synthetic_video import PhotoStyle, write_item_video  # noqa: E402

STYLE = PhotoStyle(jpeg_quality=60, blur_sigma=1.0, noise_sigma=6.0)


def first_item_per_frame(csv_path):
    first = {}
    with open(csv_path, newline="") as file:
        for row in csv.DictReader(file):
            first.setdefault(int(row["frame"]), row)
    return first


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", help="run dir, .keras or exported model (default: newest runs/bench-deep-*)")
    parser.add_argument("--data", help="Fashion-MNIST folder (default: $FMNIST_DATA_DIR)")
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", default="bench/results/realtime_accuracy.json")
    args = parser.parse_args()
    model_path = Path(args.model) if args.model else newest_deep_run()
    images, labels = load_split("test", args.data)
    chosen = np.random.default_rng(args.seed).choice(len(labels), args.items, replace=False)
    classifier = open_classifier(model_path)
    with tempfile.TemporaryDirectory() as folder:
        video, log = Path(folder) / "photos.mp4", Path(folder) / "pred.csv"
        truth = write_item_video(video, images[chosen], labels[chosen], frames_per_item=1, style=STYLE, seed=args.seed)
        report = run_realtime(FrameSource(video), create_mode("classify", classifier), csv_path=log, show=False)
        first = first_item_per_frame(log)
    predicted = [first.get(i, {}).get("class_id", "") for i in range(len(truth))]
    hits = np.array([p == str(t) for p, t in zip(predicted, truth)])
    plain = (classifier(images[chosen][..., None] / 255.0).argmax(axis=1) == labels[chosen]).mean()
    result = {
        "model": str(model_path), "backend": classifier.backend, "frames": report.frames,
        "per_frame_accuracy": round(float(hits.mean()), 4),
        "white_background_accuracy": round(float(hits[0::2].mean()), 4),
        "textured_background_accuracy": round(float(hits[1::2].mean()), 4),
        "frames_without_item": int(sum(p == "" for p in predicted)),
        "same_items_as_plain_test_images": round(float(plain), 4),
        "style": STYLE.__dict__, "machine": describe_machine(),
    }
    atomic_write_json(args.results, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

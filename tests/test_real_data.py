"""Integration checks on the official files; CI points FMNIST_DATA_DIR at them."""

import json
import os

import numpy as np
import pytest

from fmnist_tf.data.fashion_mnist import load_split
from fmnist_tf.data.prepare import split_train_val

pytestmark = pytest.mark.realdata
REAL = os.environ.get("FMNIST_DATA_DIR")


@pytest.mark.skipif(not REAL, reason="set FMNIST_DATA_DIR to the official Fashion-MNIST files")
def test_official_files_pass_md5_and_have_the_published_shape():
    train_x, train_y = load_split("train", REAL)
    test_x, test_y = load_split("test", REAL)
    assert train_x.shape == (60000, 28, 28) and test_x.shape == (10000, 28, 28)
    assert np.bincount(train_y).tolist() == [6000] * 10 and np.bincount(test_y).tolist() == [1000] * 10
    (_, y_fit), (_, y_val) = split_train_val(train_x, train_y, 0.1, seed=42)
    assert np.bincount(y_val).tolist() == [600] * 10 and len(y_fit) == 54000


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """The issue's smoke check, train --epochs 1 on the real data, with a quick deep CNN (width 0.5)
    rather than baseline: trained with shifts and erasing, it copes with the camera-style crops of
    the realtime check below, so one training serves both."""
    from fmnist_tf.cli import main

    run = tmp_path_factory.mktemp("real") / "smoke"
    assert main(["train", "-c", "deep", "--epochs", "1", "--warmup-epochs", "0", "--width", "0.5",
                 "--out", str(run)]) == 0
    return run


@pytest.mark.skipif(not REAL, reason="set FMNIST_DATA_DIR to the official Fashion-MNIST files")
def test_one_epoch_smoke_run_then_evaluate(smoke_run, capsys):
    from fmnist_tf.cli import main

    assert main(["evaluate", str(smoke_run)]) == 0
    out = capsys.readouterr().out
    assert "Ankle boot" in out and "weighted" in out
    accuracy = json.loads((smoke_run / "metrics.json").read_text())["accuracy"]
    assert accuracy > 0.5  # one epoch; chance is 0.1
    assert (smoke_run / "plots" / "training_curves.png").is_file()


@pytest.mark.skipif(not REAL, reason="set FMNIST_DATA_DIR to the official Fashion-MNIST files")
def test_realtime_on_video_of_known_test_items(smoke_run, tmp_path, capsys):
    """Known test items, enlarged and moving, on white and textured backgrounds: every frame is
    processed, the annotated video keeps the frame count and size, and most labels are right."""
    import csv

    import cv2

    from fmnist_tf.cli import main
    from fmnist_tf.realtime.synthetic_video import write_item_video

    images, labels = load_split("test", REAL)
    video = tmp_path / "items.mp4"
    truth = write_item_video(video, images[:30], labels[:30], frames_per_item=3, seed=3)
    out, predictions = tmp_path / "out.mp4", tmp_path / "pred.csv"
    assert main(["realtime", "-v", str(video), "-o", str(out), "--save-csv", str(predictions),
                 "--model", str(smoke_run), "--no-show"]) == 0
    assert f"{len(truth)} frames" in capsys.readouterr().out
    written = cv2.VideoCapture(str(out))
    assert int(written.get(cv2.CAP_PROP_FRAME_COUNT)) == len(truth)
    assert (written.get(cv2.CAP_PROP_FRAME_WIDTH), written.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (640, 480)
    first_item = {}
    with open(predictions, newline="") as file:
        for row in csv.DictReader(file):
            first_item.setdefault(int(row["frame"]), row)  # items come most salient first
    assert sorted(first_item) == list(range(len(truth)))
    hits = [first_item[i]["class_id"] == str(label) for i, label in enumerate(truth)]
    assert np.mean(hits) >= 0.6, np.mean(hits)

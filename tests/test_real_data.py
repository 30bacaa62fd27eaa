"""Integration checks on the official files; CI points FMNIST_DATA_DIR at them."""

import json
import os

import numpy as np
import pytest

from fmnist_tf.data.fashion_mnist import load_split
from fmnist_tf.data.pipeline import split_train_val

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


@pytest.mark.skipif(not REAL, reason="set FMNIST_DATA_DIR to the official Fashion-MNIST files")
def test_one_epoch_baseline_smoke_run_then_evaluate(tmp_path, capsys):
    """The issue's smoke check: train -c baseline --epochs 1, then evaluate, on the real data."""
    from fmnist_tf.cli import main

    run = tmp_path / "smoke"
    assert main(["train", "-c", "baseline", "--epochs", "1", "--out", str(run)]) == 0
    assert main(["evaluate", str(run)]) == 0
    out = capsys.readouterr().out
    assert "Ankle boot" in out and "weighted" in out
    accuracy = json.loads((run / "metrics.json").read_text())["accuracy"]
    assert accuracy > 0.5  # one epoch of the reference baseline; chance is 0.1
    assert (run / "plots" / "training_curves.png").is_file()

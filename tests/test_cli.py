"""End-to-end through the CLI on tiny generated data: train, evaluate, predict, errors, resume."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from fmnist_tf.cli import main
from fmnist_tf.data.fashion_mnist import write_idx_dataset
from fmnist_tf.train.callbacks import latest_backup, read_history
from tests.conftest import run_cli, synthetic_items

TINY = ["--width", "0.125", "--batch-size", "32"]


@pytest.fixture(scope="module")
def trained_run(tiny_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "tiny"
    code = main(["train", "-c", "baseline", "--data", str(tiny_data), "--out", str(run), "--epochs", "4",
                 "--learning-rate", "0.003", *TINY])
    assert code == 0
    return run


def test_help_lists_subcommands():
    result = subprocess.run([sys.executable, "-m", "fmnist_tf", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("train", "evaluate", "predict", "cam", "realtime", "detect"):
        assert command in result.stdout
    assert "examples:" in result.stdout


def test_train_writes_a_complete_run_directory(trained_run):
    names = {p.name for p in trained_run.iterdir()}
    assert {"config.yaml", "dataset.json", "history.csv", "best.keras", "last.keras", "tensorboard"} <= names
    assert "backup" not in names  # removed once the run completes
    assert any((trained_run / "tensorboard").rglob("events.out.tfevents.*"))
    rows = read_history(trained_run / "history.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    for column in ("loss", "accuracy", "precision", "recall", "f1", "val_loss", "val_accuracy",
                   "val_precision", "val_recall", "val_f1", "learning_rate", "epoch_seconds", "val_acc_class9"):
        assert column in rows[0]
    # the synthetic classes are learnable: training must get well above chance (0.1)
    assert max(float(r["val_accuracy"]) for r in rows) > 0.5
    config = (trained_run / "config.yaml").read_text()
    assert "epochs: 4" in config and "width: 0.125" in config


def test_evaluate_prints_table_and_saves_metrics_and_plots(trained_run, tiny_data, capsys):
    code, out, _ = run_cli(["evaluate", trained_run, "--data", tiny_data], capsys)
    assert code == 0
    assert "Ankle boot" in out and "support" in out and "weighted" in out
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["test_size"] == 100 and 0 <= metrics["accuracy"] <= 1
    assert len(metrics["per_class"]) == 10
    for plot in ("confusion_matrix.png", "training_curves.png", "misclassified.png"):
        image = cv2.imread(str(trained_run / "plots" / plot))
        assert image is not None and image.shape[0] > 100


def test_predict_on_generated_png(trained_run, tmp_path, capsys):
    images, _ = synthetic_items(2, seed=9)
    big = cv2.resize(255 - images[0], (280, 280), interpolation=cv2.INTER_NEAREST)
    colour = cv2.cvtColor(cv2.copyMakeBorder(big, 40, 40, 90, 90, cv2.BORDER_CONSTANT, value=255),
                          cv2.COLOR_GRAY2BGR)
    path = tmp_path / "item.png"
    cv2.imwrite(str(path), colour)
    code, out, _ = run_cli(["predict", trained_run, path], capsys)
    assert code == 0 and out.startswith(f"{path}: ")
    code, out, _ = run_cli(["predict", trained_run / "best.keras", path, "--json"], capsys)
    result = json.loads(out)[0]
    assert result["path"] == str(path) and 0 <= result["class"] < 10
    assert len(result["top"]) == 3 and result["top"][0]["probability"] >= result["top"][1]["probability"]


def test_bad_inputs_are_one_line_errors(trained_run, tiny_data, tmp_path, capsys):
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((50, 50), 255, np.uint8))
    not_image = tmp_path / "notes.png"
    not_image.write_text("hello")
    not_model = tmp_path / "model.keras"
    not_model.write_text("not a zip")
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("model: deep\nlearnig_rate: 0.1\n")
    cases = [
        (["predict", trained_run, blank], "blank"),
        (["predict", trained_run, not_image], "cannot read"),
        (["predict", not_model, blank], "not a loadable Keras model"),
        (["evaluate", tmp_path / "missing"], "no such model file"),
        (["train", "-c", bad_config, "--data", tiny_data], "unknown key 'learnig_rate'"),
        (["train", "-c", "baseline", "--epochs", "zero", "--data", tiny_data], "'epochs' must be an integer"),
        (["train", "-c", "baseline", "--data", tiny_data, "--out", trained_run], "already holds files"),
        (["train", "--resume", trained_run], "already finished its 4 epochs"),
        (["train", "--resume", trained_run, "--width", "2"], "only --epochs may be changed, not: --width"),
        (["train", "-c", "baseline", "--data", tmp_path / "nowhere"], "no such file or folder"),
        (["predict", trained_run, blank, "--top", "0"], "expected a positive integer"),
        (["train", "-c", "deep", "--epochs"], "expected one argument"),
    ]
    for args, fragment in cases:
        try:
            code, _, err = run_cli(args, capsys)
        except SystemExit as exit_:  # argparse exits by itself
            code, err = exit_.code, capsys.readouterr().err
        assert code != 0, args
        assert fragment in err and err.count("\n") == 1, (args, err)


def test_corrupt_dataset_byte_names_the_file(tiny_data, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_data, copy)
    target = copy / "train-images-idx3-ubyte.gz"
    data = bytearray(target.read_bytes())
    data[100] ^= 0x01
    target.write_bytes(bytes(data))
    code, _, err = run_cli(["train", "-c", "baseline", "--data", copy, "--out", tmp_path / "r"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "train-images-idx3-ubyte.gz: md5 mismatch" in err


def test_kill_9_in_third_epoch_then_resume_records_each_epoch_once(tmp_path):
    data = write_idx_dataset(tmp_path / "data", synthetic_items(1500, seed=5), synthetic_items(50, seed=6))
    run = tmp_path / "run"
    command = [sys.executable, "-m", "fmnist_tf", "train"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "first.log", "w")
    process = subprocess.Popen(command + ["-c", "baseline", "--data", str(data), "--width", "0.25",
                                          "--batch-size", "8", "--epochs", "5", "--out", str(run)], env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while latest_backup(run / "backup")[0] < 2 and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)  # epoch 2 is backed up: the process is in its third epoch
    process.wait()
    done_before = latest_backup(run / "backup")[0]
    log.close()
    assert 2 <= done_before < 5, "the kill must land mid-run: " + (tmp_path / "first.log").read_text()[-1500:]

    # --data is not repeated: the run remembers its source
    resumed = subprocess.run(command + ["--resume", str(run)], env=env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"after epoch {done_before}" in resumed.stdout
    rows = read_history(run / "history.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3, 4]
    assert not (run / "backup").exists()
    # the weights and optimizer were restored: the first redone epoch trains on from where it was
    # (a fresh start would repeat epoch 0's high loss)
    assert float(rows[done_before]["loss"]) < 0.8 * float(rows[0]["loss"])


def test_installed_console_script_finds_packaged_configs(tmp_path):
    """`pip install .` must give a working `fmnist-tf`, configs included, from any folder."""
    script = shutil.which("fmnist-tf")
    assert script, "fmnist-tf is not on PATH: install the package first (pip install .)"
    result = subprocess.run([script, "models"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "baseline" in result.stdout and "deep" in result.stdout


def test_same_seed_gives_the_same_run(tiny_data, tmp_path):
    """--seed makes runs repeatable: split, shuffling, augmentation and initial weights."""
    histories = []
    for name in ("a", "b"):
        assert main(["train", "-c", "deep", "--data", str(tiny_data), "--out", str(tmp_path / name),
                     "--epochs", "2", "--seed", "3", *TINY]) == 0
        histories.append([(r["loss"], r["val_loss"]) for r in read_history(tmp_path / name / "history.csv")])
    assert histories[0] == histories[1]


def test_evaluate_with_flip_tta_records_it_and_leaves_the_plain_metrics(trained_run, tiny_data, tmp_path, capsys):
    out_dir = tmp_path / "flip-tta"
    plain_metrics = trained_run / "metrics.json"
    before = plain_metrics.read_bytes() if plain_metrics.exists() else None
    code, out, _ = run_cli(["evaluate", trained_run, "--data", tiny_data, "--flip-tta", "--out", out_dir], capsys)
    assert code == 0 and "flip-TTA accuracy" in out
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["flip_tta"] is True and metrics["test_size"] == 100
    rows = (out_dir / "test_predictions.csv").read_text().splitlines()
    assert len(rows) == 101 and rows[0].startswith("index,label,predicted")
    right = sum(row.split(",")[1] == row.split(",")[2] for row in rows[1:])
    assert right / 100 == pytest.approx(metrics["accuracy"])
    assert (plain_metrics.read_bytes() if plain_metrics.exists() else None) == before

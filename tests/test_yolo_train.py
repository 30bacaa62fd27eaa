"""The detector end to end through the CLI on tiny generated data: detect-data, detect-anchors,
train (with resume), evaluate, and the one-line errors."""

import json

import pytest

from fmnist_tf.cli import main
from fmnist_tf.train.callbacks import read_history
from tests.conftest import run_cli

TINY_DETECTOR = ["--input-size", "64", "--width", "0.125", "--batch-size", "4", "--anchors", "default"]


@pytest.fixture(scope="module")
def canvases(tiny_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("detect") / "canvases"
    code = main(["detect-data", "--data", str(tiny_data), "--out", str(folder), "--n-train", "12",
                 "--n-val", "4", "--n-test", "4", "--canvas-size", "160x120", "--seed", "3"])
    assert code == 0
    return folder


@pytest.fixture(scope="module")
def detector_run(canvases, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "yolo"
    code = main(["train", "-c", "tinyyolov3", "--data", str(canvases), "--out", str(run), "--epochs", "2",
                 *TINY_DETECTOR])
    assert code == 0
    return run


def test_detect_data_writes_annotations_coco_and_previews(canvases):
    summary = json.loads((canvases / "dataset.json").read_text())
    assert summary["counts"] == {"train": 12, "val": 4, "test": 4}
    for split in ("train", "val", "test"):
        lines = (canvases / f"{split}.txt").read_text().splitlines()
        coco = json.loads((canvases / f"{split}.json").read_text())
        assert len(lines) == len(coco["images"]) == summary["counts"][split]
        assert sum(len(line.split()) - 1 for line in lines) == len(coco["annotations"])
    assert any((canvases / "previews").glob("train_*.jpg"))


def test_detect_anchors_prints_six_pairs(canvases, capsys):
    code, out, _ = run_cli(["detect-anchors", canvases / "train.txt", "-k", "6", "--input-size", "64"], capsys)
    assert code == 0
    pairs = out.split("anchors: ")[1].split()
    assert len(pairs) == 6 and all(float(v) > 0 for pair in pairs for v in pair.split(","))


def test_train_writes_the_run_contract_with_validation_map(detector_run):
    names = {p.name for p in detector_run.iterdir()}
    assert {"config.yaml", "dataset.json", "detector.json", "history.csv", "best.keras", "last.keras"} <= names
    assert "backup" not in names
    rows = read_history(detector_run / "history.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    for row in rows:
        assert 0.0 <= float(row["val_map50"]) <= 1.0 and float(row["val_loss"]) > 0
    settings = json.loads((detector_run / "detector.json").read_text())
    assert settings["input_size"] == 64 and len(settings["anchors"]) == 6 and settings["num_classes"] == 10


def test_interrupted_run_resumes_with_each_epoch_once(canvases, tmp_path, capsys, monkeypatch):
    from yolo.train import DetectionValidation

    run = tmp_path / "run"
    validate = DetectionValidation.on_epoch_end

    def die_in_second_epoch(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt  # after epoch 0 was backed up, before epoch 1 was
        validate(self, epoch, logs)

    monkeypatch.setattr(DetectionValidation, "on_epoch_end", die_in_second_epoch)
    code, _, _ = run_cli(["train", "-c", "tinyyolov3", "--data", canvases, "--out", run, "--epochs", "3",
                          *TINY_DETECTOR], capsys)
    assert code == 130 and (run / "backup").is_dir()
    monkeypatch.setattr(DetectionValidation, "on_epoch_end", validate)
    code, out, err = run_cli(["train", "--resume", run], capsys)  # --data is remembered by the run
    assert code == 0, err
    assert "after epoch 1" in out
    assert [int(r["epoch"]) for r in read_history(run / "history.csv")] == [0, 1, 2]
    assert not (run / "backup").exists()


def test_evaluate_reports_coco_map_and_saves_plots(detector_run, capsys):
    code, out, _ = run_cli(["evaluate", detector_run], capsys)
    assert code == 0
    assert "mAP@0.5" in out and "all" in out
    metrics = json.loads((detector_run / "metrics.json").read_text())
    assert 0.0 <= metrics["map50"] <= 1.0 and 0.0 <= metrics["map50_95"] <= metrics["map50"] + 1e-9
    assert (detector_run / "plots" / "pr_curve.png").stat().st_size > 0
    assert (detector_run / "plots" / "confusion_matrix.png").stat().st_size > 0


@pytest.mark.parametrize("extra, message", [
    ([], "detect-data"),
    (["--input-size", "100"], "multiple of 32"),
    (["--anchors", "1,2 3"], "anchors"),
])
def test_bad_detector_settings_are_one_line_errors(canvases, tmp_path, capsys, extra, message):
    data = [] if not extra else ["--data", canvases]
    code, _, err = run_cli(["train", "-c", "tinyyolov3", *data, "--out", tmp_path / "run", *extra], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_detect_on_images_and_on_a_video_through_the_cli(detector_run, canvases, tmp_path, capsys):
    import csv

    import cv2

    out = tmp_path / "found"
    code, out_text, err = run_cli(["detect", detector_run, canvases / "images" / "test", "--out", out,
                                   "--conf", "0.01"], capsys)
    assert code == 0, err
    written = sorted(p.name for p in out.glob("*.jpg"))
    assert written == sorted(p.name for p in (canvases / "images" / "test").glob("*.jpg"))
    with open(out / "detections.csv", newline="") as file:
        assert {row["image"] for row in csv.DictReader(file)} == set(written)

    video = tmp_path / "canvases.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (160, 120))
    for path in sorted((canvases / "images" / "test").glob("*.jpg")):
        writer.write(cv2.imread(str(path)))
    writer.release()
    boxed, log = tmp_path / "boxed.mp4", tmp_path / "boxes.csv"
    code, out_text, err = run_cli(["detect", detector_run, video, "-o", boxed, "--save-csv", log, "--no-show"], capsys)
    assert code == 0, err
    assert int(cv2.VideoCapture(str(boxed)).get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    with open(log, newline="") as file:
        assert {int(row["frame"]) for row in csv.DictReader(file)} == {0, 1, 2, 3}
    # `realtime --mode detect` is the same loop
    code, out_text, err = run_cli(["realtime", "-v", video, "--mode", "detect", "--model", detector_run,
                                   "--no-show"], capsys)
    assert code == 0 and "4 frames" in out_text, err


def test_detector_trains_with_mixed_precision_in_bfloat16(canvases, tmp_path, capsys):
    import keras

    code, out, err = run_cli(["train", "-c", "tinyyolov3", "--data", canvases, "--out", tmp_path / "run",
                              "--epochs", "1", *TINY_DETECTOR, "--mixed-precision"], capsys)
    assert code == 0, err
    assert "mixed_bfloat16" in out
    model = keras.models.load_model(tmp_path / "run" / "last.keras", safe_mode=True, compile=False)
    assert model.get_layer("body_conv1_conv").compute_dtype == "bfloat16"
    assert all(output.dtype == "float32" for output in model.outputs)
    (row,) = read_history(tmp_path / "run" / "history.csv")
    assert float(row["loss"]) > 0 and 0.0 <= float(row["val_map50"]) <= 1.0


def test_detector_trains_mirrored_on_two_logical_cpus(canvases, tmp_path):
    from tests.test_distribute import train_in_fresh_process

    result = train_in_fresh_process(["-c", "tinyyolov3", "--data", canvases, "--out", tmp_path / "run",
                                     "--epochs", "1", *TINY_DETECTOR, "--strategy", "mirrored", "--devices", "2"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "MirroredStrategy over 2 device(s), global batch 4 (2 per replica)" in result.stdout
    (row,) = read_history(tmp_path / "run" / "history.csv")
    assert float(row["loss"]) > 0 and (tmp_path / "run" / "best.keras").is_file()


def test_detector_refuses_multiworker_in_one_line(canvases, tmp_path, capsys):
    code, _, err = run_cli(["train", "-c", "tinyyolov3", "--data", canvases, "--out", tmp_path / "run",
                            *TINY_DETECTOR, "--strategy", "multiworker"], capsys)
    assert code == 2 and "multi-worker" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_second_stage_classifier_through_evaluate_detect_and_realtime(detector_run, canvases, tiny_data, tmp_path,
                                                                      capsys):
    classifier = tmp_path / "classifier"
    assert main(["train", "-c", "baseline", "--data", str(tiny_data), "--out", str(classifier), "--epochs", "1",
                 "--width", "0.25"]) == 0
    code, out, err = run_cli(["evaluate", detector_run, "--classifier", classifier], capsys)
    assert code == 0, err
    metrics = json.loads((detector_run / "second-stage" / "metrics.json").read_text())
    assert metrics["second_stage_classifier"].endswith("best.keras") and 0.0 <= metrics["map50"] <= 1.0
    assert (detector_run / "second-stage" / "plots" / "pr_curve.png").is_file()

    code, out, err = run_cli(["detect", detector_run, canvases / "images" / "test", "--out", tmp_path / "found",
                              "--conf", "0.01", "--classifier", classifier], capsys)
    assert code == 0, err
    assert "classify" in out  # the second stage's own time per image

    code, _, err = run_cli(["evaluate", classifier, "--classifier", classifier], capsys)
    assert code == 2 and "not a detector run" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["realtime", "-v", "missing.mp4", "--classifier", classifier], capsys)
    assert code == 2 and "--mode detect" in err

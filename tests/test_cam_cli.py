"""Issue 6 end to end through the CLI: 1-epoch runs of vgg_rescam (true CAM) and deep (Grad-CAM)
that `evaluate`, `predict`, `cam` and `realtime --mode cam` accept. efficientnet_b0 takes the same
paths; its training step, safe-mode reload and Grad-CAM layer are tested in test_efficientnet and
test_cam (a 1-epoch CLI run of it costs ~75 s of tracing, an eighth of the suite)."""

import json

import cv2
import pytest

from tests.conftest import run_cli, synthetic_items
from tests.test_realtime import frame_with_items, write_video

RUNS = {
    "vgg_rescam": ["--width", "0.0625"],
    "deep": ["--width", "0.125"],
}
METHOD = {"vgg_rescam": "cam", "deep": "grad-cam"}


@pytest.fixture(scope="module", params=sorted(RUNS))
def one_epoch_run(request, tiny_data, tmp_path_factory):
    name = request.param
    run = tmp_path_factory.mktemp("runs") / name
    from fmnist_tf.cli import main

    code = main(["train", "-c", name, "--data", str(tiny_data), "--out", str(run), "--epochs", "1",
                 "--batch-size", "32", *RUNS[name]])
    assert code == 0
    return name, run


@pytest.fixture(scope="module")
def item_png(tmp_path_factory):
    """A dark item on a white 400x360 page, as a photo of one garment would be."""
    images, _ = synthetic_items(1, seed=5)
    item = cv2.resize(255 - images[0], (200, 200), interpolation=cv2.INTER_NEAREST)
    page = cv2.copyMakeBorder(item, 60, 100, 120, 80, cv2.BORDER_CONSTANT, value=255)
    path = tmp_path_factory.mktemp("images") / "garment.png"
    cv2.imwrite(str(path), cv2.cvtColor(page, cv2.COLOR_GRAY2BGR))
    return path


def test_run_is_complete_and_evaluate_saves_the_cam_grid(one_epoch_run, tiny_data, capsys):
    name, run = one_epoch_run
    assert {"config.yaml", "history.csv", "best.keras", "last.keras"} <= {p.name for p in run.iterdir()}
    assert f"model: {name}" in (run / "config.yaml").read_text()
    code, out, _ = run_cli(["evaluate", run, "--data", tiny_data], capsys)
    assert code == 0 and "weighted" in out
    grid = cv2.imread(str(run / "plots" / "cam_grid.png"))
    assert grid is not None and grid.shape[0] > 200


def test_predict_and_cam_on_an_image(one_epoch_run, item_png, tmp_path, capsys):
    name, run = one_epoch_run
    code, out, _ = run_cli(["predict", run, item_png, "--json"], capsys)
    assert code == 0 and 0 <= json.loads(out)[0]["class"] < 10
    code, out, err = run_cli(["cam", run, item_png, "--out", tmp_path], capsys)
    assert code == 0, err
    assert METHOD[name] in out
    result = json.loads((tmp_path / "garment_cam.json").read_text())
    assert result["method"] == METHOD[name] and result["image_size"] == [400, 360]  # width, height
    png = cv2.imread(str(tmp_path / "garment_cam.png"))
    assert png is not None and png.shape[1] > png.shape[0]  # three panels side by side
    if result["box"] is not None:  # boxes are in the photo's own pixels
        x0, y0, x1, y1 = result["box"]
        assert 0 <= x0 < x1 <= 400 and 0 <= y0 < y1 <= 360


@pytest.mark.parametrize("one_epoch_run", ["vgg_rescam"], indirect=True)  # the mode is tested in test_cam.py
def test_realtime_cam_mode_through_the_cli(one_epoch_run, tmp_path, capsys):
    _, run = one_epoch_run
    video = tmp_path / "items.mp4"
    write_video(video, [frame_with_items([(100 + 10 * i, 60, 260 + 10 * i, 420)], seed=i) for i in range(6)])
    csv_path = tmp_path / "cam.csv"
    code, out, err = run_cli(["realtime", "-v", video, "--mode", "cam", "--model", run, "--no-show",
                              "--save-csv", csv_path, "-o", tmp_path / "cam.mp4"], capsys)
    assert code == 0, err
    rows = csv_path.read_text().splitlines()
    assert len(rows) >= 7 and rows[0].startswith("frame")
    assert cv2.VideoCapture(str(tmp_path / "cam.mp4")).read()[0]


def test_cam_refuses_an_exported_model_in_one_line(item_png, tmp_path, capsys):
    fake = tmp_path / "model.tflite"
    fake.write_bytes(b"\0" * 16)
    code, _, err = run_cli(["cam", fake, item_png], capsys)
    assert code != 0 and "CAMs need the Keras model" in err and err.count("\n") == 1

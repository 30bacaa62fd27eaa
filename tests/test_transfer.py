"""Issue 7, transfer learning: a new head on a frozen backbone, trained on image folders."""

import json

import keras
import numpy as np
import pytest

from fmnist_tf.models.transfer import BACKBONE, backbone_from_saved_model, imagenet_range
from tests.conftest import TINY_WNIDS, run_cli, write_class_tree, write_tiny_imagenet


@pytest.fixture(scope="module")
def deep_run(tiny_data, tmp_path_factory):
    from fmnist_tf.cli import main

    run = tmp_path_factory.mktemp("runs") / "deep"
    assert main(["train", "-c", "deep", "--data", str(tiny_data), "--out", str(run), "--epochs", "1",
                 "--batch-size", "32", "--width", "0.125"]) == 0
    return run


@pytest.fixture(scope="module")
def class_tree(tmp_path_factory):
    return write_class_tree(tmp_path_factory.mktemp("photos"))


def train_transfer(capsys, source, data, out, *extra):
    return run_cli(["train", "-c", "transfer", "--from", source, "--data", data, "--out", out,
                    "--epochs", "2", "--batch-size", "16", *extra], capsys)


def backbone_weights(run_or_model):
    return [np.array(w) for w in backbone_from_saved_model(run_or_model).get_weights()]


def test_frozen_transfer_trains_only_the_head(deep_run, class_tree, tmp_path, capsys):
    code, out, err = train_transfer(capsys, deep_run, class_tree, tmp_path / "t")
    assert code == 0, err
    assert "trainable" in out and "frozen" in out and "in 3 classes" in out
    before = backbone_weights(deep_run / "best.keras")
    trained = keras.models.load_model(tmp_path / "t" / "last.keras", safe_mode=True, compile=False)
    after = [np.array(w) for w in trained.get_layer(BACKBONE).get_weights()]
    assert len(before) == len(after) > 0
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert trained.output_shape == (None, 3)
    info = json.loads((tmp_path / "t" / "dataset.json").read_text())
    assert info["class_names"] == ["boots", "coats", "shirts"] and info["image_format"] == "folder"


def test_unfrozen_backbone_does_change(deep_run, class_tree, tmp_path, capsys):
    """The contrast that shows the frozen test can fail."""
    code, _, err = train_transfer(capsys, deep_run, class_tree, tmp_path / "t", "--freeze", "false")
    assert code == 0, err
    trained = keras.models.load_model(tmp_path / "t" / "last.keras", safe_mode=True, compile=False)
    after = [np.array(w) for w in trained.get_layer(BACKBONE).get_weights()]
    assert not all(np.array_equal(a, b) for a, b in zip(backbone_weights(deep_run / "best.keras"), after))


def test_second_stage_unfreezes_and_every_epoch_is_recorded_once(deep_run, class_tree, tmp_path, capsys):
    code, out, err = train_transfer(capsys, deep_run, class_tree, tmp_path / "t", "--epochs", "1",
                                    "--fine-tune-epochs", "2", "--fine-tune-learning-rate", "0.01")
    assert code == 0, err
    assert "stage 2 (epochs 2-3): backbone unfrozen" in out
    rows = [json.dumps(r) for r in _history(tmp_path / "t")]
    assert [json.loads(r)["epoch"] for r in rows] == ["0", "1", "2"]
    assert float(json.loads(rows[-1])["learning_rate"]) == pytest.approx(0.01)
    trained = keras.models.load_model(tmp_path / "t" / "last.keras", safe_mode=True, compile=False)
    after = [np.array(w) for w in trained.get_layer(BACKBONE).get_weights()]
    assert not all(np.array_equal(a, b) for a, b in zip(backbone_weights(deep_run / "best.keras"), after))


def _history(run):
    import csv

    with open(run / "history.csv") as handle:
        return list(csv.DictReader(handle))


def test_predict_prints_the_folder_class_names(deep_run, class_tree, tmp_path, capsys):
    code, _, err = train_transfer(capsys, deep_run, class_tree, tmp_path / "t")
    assert code == 0, err
    image = next((class_tree / "coats").glob("*.png"))
    code, out, err = run_cli(["predict", tmp_path / "t", image, "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)[0]["name"] in ("boots", "coats", "shirts")


def test_tiny_imagenet_layout_trains_and_evaluates_with_class_names(deep_run, tmp_path, capsys):
    data = write_tiny_imagenet(tmp_path / "tiny-imagenet")
    listing = sorted(p.relative_to(data) for p in data.rglob("*"))
    code, _, err = train_transfer(capsys, deep_run, data, tmp_path / "t", "--epochs", "3",
                                  "--learning-rate", "0.01")
    assert code == 0, err
    code, out, err = run_cli(["evaluate", tmp_path / "t"], capsys)
    assert code == 0, err
    names = [name.split(",")[0] for name in TINY_WNIDS.values()]
    assert all(name in out for name in names)
    metrics = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert metrics["test_size"] == 12 and [row["class"] for row in metrics["per_class"]] == names
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == listing  # the user's files stay put


def test_a_fashion_mnist_classifier_config_trains_on_an_image_folder(class_tree, tmp_path, capsys):
    """...and realtime and cam prepare images as the folder's were: the whole frame, plainly resized."""
    import cv2

    from fmnist_tf.cam.explainer import open_explainer
    from tests.test_realtime import frame_with_items, write_video

    run = tmp_path / "b"
    code, out, err = run_cli(["train", "-c", "baseline", "--data", class_tree, "--out", run,
                              "--epochs", "1", "--batch-size", "16", "--width", "0.125"], capsys)
    assert code == 0, err
    code, out, err = run_cli(["evaluate", run], capsys)
    assert code == 0, err and "shirts" in out

    frames = [frame_with_items([(100 + 10 * i, 60, 260 + 10 * i, 420)], seed=i) for i in range(4)]
    write_video(tmp_path / "v.mp4", frames)
    for mode in ("classify", "cam"):
        csv_path = tmp_path / f"{mode}.csv"
        code, out, err = run_cli(["realtime", "-v", tmp_path / "v.mp4", "--mode", mode, "--model", run,
                                  "--no-show", "--save-csv", csv_path], capsys)
        assert code == 0, err
        rows = [line.split(",") for line in csv_path.read_text().splitlines()[1:]]
        assert len(rows) == 4 and all(row[3] in ("boots", "coats", "shirts") for row in rows)
        assert all(row[-4:] == ["0", "0", "640", "480"] for row in rows)  # the whole frame is the item

    cv2.imwrite(str(tmp_path / "wide.png"), frames[0])
    code, out, err = run_cli(["cam", run, tmp_path / "wide.png", "--out", tmp_path / "cams"], capsys)
    assert code == 0, err
    result = json.loads((tmp_path / "cams" / "wide_cam.json").read_text())
    explainer = open_explainer(run)
    assert explainer.image_format == "folder" and result["image_size"] == [640, 480]
    grey = cv2.cvtColor(frames[0], cv2.COLOR_BGR2GRAY)
    expected, _ = explainer(cv2.resize(grey, (28, 28), interpolation=cv2.INTER_AREA)[None, ..., None] / 255.0)
    assert result["probability"] == pytest.approx(float(expected[0].max()), abs=1e-5)


def test_keras_applications_base_with_local_weights(class_tree, tmp_path, capsys):
    application = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3),
                                                 pooling="avg")
    weights = tmp_path / "mobilenet_v2_notop.weights.h5"
    application.save_weights(weights)
    code, out, err = run_cli(["train", "-c", "transfer", "--base", "MobileNetV2", "--weights", weights,
                              "--data", class_tree, "--out", tmp_path / "m", "--epochs", "1",
                              "--batch-size", "16"], capsys)
    assert code == 0, err
    trained = keras.models.load_model(tmp_path / "m" / "last.keras", safe_mode=True, compile=False)
    inner = trained.get_layer(BACKBONE).get_layer(application.name)
    assert all(np.array_equal(a, b) for a, b in zip(application.get_weights(), inner.get_weights()))


def test_our_alexnet_builder_as_a_base_with_its_weights_file(class_tree, tmp_path, capsys):
    from fmnist_tf.models import create_model

    source = create_model("alexnet", width=0.125)
    weights = tmp_path / "alexnet.weights.h5"
    source.save_weights(weights)
    code, out, err = run_cli(["train", "-c", "transfer", "--base", "alexnet", "--width", "0.125", "--weights",
                              weights, "--data", class_tree, "--out", tmp_path / "a", "--epochs", "1",
                              "--batch-size", "16"], capsys)
    assert code == 0, err
    trained = keras.models.load_model(tmp_path / "a" / "last.keras", safe_mode=True, compile=False)
    head_input = source.get_layer("predictions").input  # the backbone ends where the head starts
    expected = keras.Model(source.get_layer("standardize").output, head_input).get_weights()
    after = trained.get_layer(BACKBONE).get_weights()
    assert len(after) == len(expected) == 14 and all(np.array_equal(a, b) for a, b in zip(expected, after))


@pytest.mark.parametrize("name, expected", [("VGG16", (57.6, 0.0)), ("ResNet50", (57.6, 0.0)),
                                            ("ResNet50V2", (1.0, 0.0)), ("EfficientNetB0", (57.6, 114.5)),
                                            ("MobileNetV2", (1.0, 0.0))])
def test_imagenet_input_range_per_family(name, expected):
    assert imagenet_range(name) == expected


def test_bad_transfer_settings_are_one_line_errors(deep_run, class_tree, tmp_path, capsys):
    cases = [
        (["train", "-c", "transfer", "--data", class_tree, "--out", tmp_path / "a"], "needs a starting model"),
        (["train", "-c", "transfer", "--base", "NoSuchNet", "--data", class_tree, "--out", tmp_path / "b"],
         "neither a run directory"),
        (["train", "-c", "transfer", "--base", "MobileNetV2", "--weights", tmp_path / "missing.h5",
          "--data", class_tree, "--out", tmp_path / "c"], "does not exist"),
        (["train", "-c", "deep", "--fine-tune-epochs", "2", "--data", class_tree, "--out", tmp_path / "d",
          "--width", "0.125"], "needs a backbone"),
        (["train", "-c", "deep", "--from", deep_run, "--data", class_tree, "--out", tmp_path / "e"],
         "does not use base"),
    ]
    for args, message in cases:
        code, _, err = run_cli(args, capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (args, err)
        assert not any(tmp_path.glob(f"{args[args.index('--out') + 1].name}/*"))

"""Export round trips on a tiny trained model: each artifact, reopened as users would, matches Keras."""

import json

import keras
import numpy as np
import pytest

from fmnist_tf import export
from fmnist_tf.data.fashion_mnist import CLASS_NAMES, load_split
from fmnist_tf.data.pipeline import to_model_input
from fmnist_tf.data.prepare import standardization_stats
from fmnist_tf.errors import DataError, FmnistError, ModelFileError
from fmnist_tf.export import export_model, format_export_report
from fmnist_tf.inference import open_classifier
from fmnist_tf.models import create_model


@pytest.fixture(scope="module")
def tiny_run(tiny_data, tmp_path_factory):
    """A run directory with a briefly trained width-0.25 baseline (trained, so that int8 has
    confident predictions to agree with) and a dataset.json recording `tiny_data` as its source."""
    run = tmp_path_factory.mktemp("runs") / "tiny"
    run.mkdir()
    images, labels = load_split("train", tiny_data)
    mean, variance = standardization_stats(images)
    model = create_model("baseline", mean=mean, variance=variance, width=0.25)
    model.compile(optimizer=keras.optimizers.Adam(0.003), loss="sparse_categorical_crossentropy")
    model.fit(to_model_input(images), labels, epochs=3, batch_size=32, verbose=0)
    model.save(run / "best.keras")
    (run / "config.yaml").write_text("model: baseline\n")
    dataset = {"source": str(tiny_data), "class_names": list(CLASS_NAMES)}
    (run / "dataset.json").write_text(json.dumps(dataset))
    return run


@pytest.fixture(scope="module")
def keras_model(tiny_run):
    return keras.models.load_model(tiny_run / "best.keras", compile=False)


@pytest.fixture(scope="module")
def test_images(tiny_data):
    """Held-out images, for checking an export independently of the images export_model checked."""
    images, _ = load_split("test", tiny_data)
    return to_model_input(images).numpy()


@pytest.mark.parametrize("fmt, name", [("savedmodel", "best_savedmodel"), ("tflite", "best.tflite"),
                                       ("onnx", "best.onnx")])
def test_float_round_trip_matches_keras(tiny_run, keras_model, test_images, fmt, name):
    result = export_model(tiny_run, fmt)
    target = tiny_run / "export" / name
    assert result["path"] == str(target) and target.exists()
    assert result["format"] == fmt and result["quantize"] is None
    assert result["max_abs_diff"] <= 1e-4 and result["top1_agreement"] == 1.0
    # samples come from the run's recorded source (tiny_data), never random
    assert result["sample"] == "train" and result["sample_size"] == 256
    assert result["bytes"] > 10_000 and result["latency_ms_per_image"] > 0
    reopened = open_classifier(target)(test_images)
    np.testing.assert_allclose(reopened, keras_model(test_images, training=False), atol=1e-4)
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_int8_tflite_is_smaller_and_agrees(tiny_run, tiny_data, tmp_path):
    float_result = export_model(tiny_run, "tflite", out=tmp_path / "float.tflite", data=tiny_data)
    result = export_model(tiny_run, "tflite", quantize="int8", data=tiny_data)
    assert result["path"] == str(tiny_run / "export" / "best_int8.tflite")
    assert result["quantize"] == "int8" and result["sample"] == "train"
    assert result["bytes"] < float_result["bytes"] / 2
    assert result["top1_agreement"] >= 0.95 and 0 < result["max_abs_diff"] < 0.5
    assert "best_int8.tflite" in format_export_report(result)


def test_report_is_one_readable_line(tiny_run, tmp_path):
    report = format_export_report(export_model(tiny_run, "tflite", out=tmp_path / "m.tflite"))
    assert report.startswith(f"exported {tmp_path / 'm.tflite'} (")
    assert "top-1 agreement 100.0% on 256 training images" in report and "ms/image" in report
    assert "\n" not in report


def test_export_over_existing_target_replaces_it(tiny_run, tmp_path):
    folder = tmp_path / "sm"
    export_model(tiny_run, "savedmodel", out=folder)
    (folder / "stale.txt").write_text("from the previous export")
    result = export_model(tiny_run, "savedmodel", out=folder)
    assert not (folder / "stale.txt").exists() and (folder / "saved_model.pb").is_file()
    assert result["bytes"] == sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sm"]

    model_file = tmp_path / "m.tflite"
    model_file.write_bytes(b"old contents")
    tflite = export_model(tiny_run, "tflite", out=model_file)
    assert open_classifier(model_file).backend == "litert"
    # each weight stored once (keras' model.export() writes every variable twice)
    assert result["bytes"] < 1.3 * tflite["bytes"]


def test_failed_check_leaves_target_untouched(tiny_run, tmp_path, monkeypatch):
    target = tmp_path / "m.tflite"
    target.write_bytes(b"previous export")
    monkeypatch.setattr(export, "FLOAT_TOLERANCE", -1.0)  # no export can pass
    with pytest.raises(FmnistError, match="differs from Keras"):
        export_model(tiny_run, "tflite", out=target)
    assert target.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tflite"]


def test_without_data_float_uses_random_images_and_int8_refuses(tiny_run, tmp_path, monkeypatch):
    def no_data(split, data=None):
        raise DataError("no Fashion-MNIST here")

    monkeypatch.setattr("fmnist_tf.data.sources.load_split", no_data)
    result = export_model(tiny_run / "best.keras", "tflite", out=tmp_path / "m.tflite", sample_size=16)
    assert result["sample"] == "random" and result["sample_size"] == 16 and result["max_abs_diff"] <= 1e-4
    assert "random images" in format_export_report(result)
    with pytest.raises(DataError, match="int8 calibration needs training images"):
        export_model(tiny_run, "tflite", quantize="int8", out=tmp_path / "q.tflite")


def test_bare_model_file_exports_beside_it(tiny_run, tmp_path):
    model_path = tmp_path / "mine.keras"
    model_path.write_bytes((tiny_run / "best.keras").read_bytes())
    result = export_model(model_path, "tflite", sample_size=8)
    assert result["path"] == str(tmp_path / "export" / "mine.tflite")


@pytest.mark.parametrize("kwargs, message", [
    ({"fmt": "coreml"}, "unknown export format 'coreml'; choose one of savedmodel, tflite, onnx"),
    ({"fmt": "savedmodel", "quantize": "int8"}, "works only with --format tflite"),
    ({"fmt": "tflite", "quantize": "fp16"}, "unknown quantization"),
    ({"fmt": "tflite", "out": "model.bin"}, r"must be named \*\.tflite"),
])
def test_bad_requests_are_one_line_errors(tiny_run, kwargs, message):
    with pytest.raises(FmnistError, match=message) as info:
        export_model(tiny_run, **kwargs)
    assert "\n" not in str(info.value)


def test_unwritable_target_is_a_one_line_error(tiny_run, tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(FmnistError, match="cannot write there"):
        export_model(tiny_run, "tflite", out=tmp_path / "a-file" / "m.tflite", sample_size=8)


def test_not_a_model_is_a_model_file_error(tmp_path):
    with pytest.raises(ModelFileError):
        export_model(tmp_path / "missing.keras", "tflite")
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"this is not a flatbuffer" * 10)
    with pytest.raises(ModelFileError, match="not a loadable .tflite model"):
        open_classifier(garbage)


def test_exported_tflite_predicts_through_the_cli_like_keras(tiny_run, keras_model, tmp_path, capsys):
    """export -> predict and realtime on the .tflite give the Keras model's answers."""
    import cv2

    from fmnist_tf.cli import main
    from fmnist_tf.vision.preprocess import load_as_fashion_mnist

    images, _ = load_split("test", json.loads((tiny_run / "dataset.json").read_text())["source"])
    photo = tmp_path / "item.png"
    cv2.imwrite(str(photo), cv2.resize(255 - images[0], (140, 140), interpolation=cv2.INTER_CUBIC))
    out = tmp_path / "cli.tflite"
    assert main(["export", str(tiny_run), "--format", "tflite", "--out", str(out)]) == 0
    assert "max" in capsys.readouterr().out
    assert main(["predict", str(out), str(photo), "--json"]) == 0
    predicted = json.loads(capsys.readouterr().out)[0]
    expected = np.asarray(keras_model(load_as_fashion_mnist(photo)[None, ..., None] / 255.0, training=False))[0]
    assert predicted["class"] == int(expected.argmax())
    assert abs(predicted["probability"] - float(expected.max())) < 1e-4

    video = tmp_path / "item.mp4"
    frame = cv2.cvtColor(np.full((240, 320), 250, np.uint8), cv2.COLOR_GRAY2BGR)
    frame[50:190, 90:230] = cv2.cvtColor(cv2.imread(str(photo), cv2.IMREAD_GRAYSCALE), cv2.COLOR_GRAY2BGR)
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    for _ in range(5):
        writer.write(frame)
    writer.release()
    log = tmp_path / "pred.csv"
    assert main(["realtime", "-v", str(video), "--model", str(out), "--save-csv", str(log), "--no-show"]) == 0
    assert "(litert)" in capsys.readouterr().out
    rows = log.read_text().splitlines()[1:]
    assert len(rows) >= 5 and all(row.split(",")[3] for row in rows)  # every frame classified

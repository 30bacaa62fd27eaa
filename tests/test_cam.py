"""Class activation maps: the vgg_rescam head and its CAM, Grad-CAM, CAM boxes, crop geometry,
`explain_images`, the realtime "cam" mode and the evaluate report's CAM grid. Tiny untrained models."""

import csv
import json

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from fmnist_tf.cam import CamExplainer, cam_box, cam_grid, explain_images, open_explainer, warp_cam
from fmnist_tf.cam.explainer import graph_nodes
from fmnist_tf.errors import FmnistError, ModelFileError
from fmnist_tf.models.registry import create_model
from fmnist_tf.models.vgg import CAM_GAP, CAM_LOGITS, FC_LOGITS
from fmnist_tf.realtime import FrameSource, create_mode, run_realtime
from fmnist_tf.realtime.modes import CSV_FIELDS
from fmnist_tf.vision.preprocess import fit_square_affine, to_fashion_mnist, to_fashion_mnist_with_geometry
from tests.conftest import synthetic_items
from tests.test_realtime import ByShape, close_to, frame_with_items, write_video


@pytest.fixture(scope="module")
def rescam():
    keras.utils.set_random_seed(0)
    return create_model("vgg_rescam", width=0.0625)


@pytest.fixture(scope="module")
def deep():
    keras.utils.set_random_seed(1)
    return create_model("deep", width=0.125)


@pytest.fixture(scope="module")
def deep_file(deep, tmp_path_factory):
    path = tmp_path_factory.mktemp("cam-model") / "deep.keras"
    deep.save(path)
    return path


@pytest.fixture(scope="module")
def images():
    return synthetic_items(6, seed=3)


# -- the vgg_rescam head and its CAM -----------------------------------------------------------------

def test_rescam_product_head_shape_and_gradient_reaches_both_branches(rescam, images):
    x = images[0][:4].astype(np.float32)[..., None] / 255.0
    assert rescam(x, training=False).shape == (4, 10)
    branches = [rescam.get_layer(FC_LOGITS).kernel, rescam.get_layer(CAM_LOGITS).kernel]
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(images[1][:4], rescam(x, training=False)))
    for name, gradient in zip((FC_LOGITS, CAM_LOGITS), tape.gradient(loss, branches)):
        assert gradient is not None and float(tf.reduce_max(tf.abs(gradient))) > 0, name


def test_cam_equals_the_gap_weighted_sum_of_feature_maps(rescam, images):
    x = images[0].astype(np.float32)[..., None] / 255.0
    explainer = CamExplainer(rescam)
    assert (explainer.method, explainer.layer_name, explainer.backend) == ("cam", CAM_GAP, "keras")
    probabilities, maps = explainer(x)
    features, fc_logits = (t.numpy() for t in keras.Model(
        rescam.input, [rescam.get_layer(CAM_GAP).input, rescam.get_layer(FC_LOGITS).output])(x, training=False))
    assert features.shape[1:3] == (7, 7)
    kernel = rescam.get_layer(CAM_LOGITS).kernel.numpy()
    expected_probabilities = rescam(x, training=False).numpy()
    np.testing.assert_allclose(probabilities, expected_probabilities, atol=1e-5)

    def numpy_cam(index, cls):
        """sign(fc_c) * sum_k W[k, c] F_k (the CAM branch's share of the product), ReLU, / max, resized."""
        cam = np.maximum(np.sign(fc_logits[index, cls]) * np.einsum("hwk,k->hw", features[index], kernel[:, cls]), 0)
        cam = cam / cam.max() if cam.max() > 0 else cam
        return cv2.resize(cam, (28, 28), interpolation=cv2.INTER_LINEAR)

    expected = np.stack([numpy_cam(i, c) for i, c in enumerate(expected_probabilities.argmax(1))])
    assert maps.shape == (len(x), 28, 28) and maps.dtype == np.float32
    np.testing.assert_allclose(maps, expected, atol=1e-4)
    # an explicit class explains that class's kernel column
    _, other = explainer(x[:1], class_ids=[3])
    np.testing.assert_allclose(other[0], numpy_cam(0, 3), atol=1e-4)


# -- Grad-CAM --------------------------------------------------------------------------------------

def test_grad_cam_on_deep_is_a_non_negative_map_of_the_input_shape_from_a_7x7_layer(deep, images):
    x = images[0].astype(np.float32)[..., None] / 255.0
    explainer = CamExplainer(deep, source="deep.keras")
    assert explainer.method == "grad-cam"
    assert deep.get_layer(explainer.layer_name).output.shape[1:3] == (7, 7)
    probabilities, maps = explainer(x)
    assert probabilities.shape == (6, 10) and maps.shape == (6, 28, 28) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    np.testing.assert_allclose(probabilities, deep(x, training=False).numpy(), atol=1e-5)
    for count in (1, 2, 5):  # a fixed input signature: other batch sizes and class choices do not retrace
        explainer(x[:count], class_ids=np.arange(count) % 10)
    assert explainer._explain.experimental_get_tracing_count() == 1
    # an all-black image may give an all-zero map: it must stay zero, never NaN
    assert np.isfinite(explainer(np.zeros((1, 28, 28, 1), np.float32))[1]).all()
    # the same map by hand: gradients of the LOGIT (the softmax Dense's input @ kernel + bias)
    head = deep.get_layer("predictions")
    parts = keras.Model(deep.input, [deep.get_layer(explainer.layer_name).output, head.input])
    with tf.GradientTape() as tape:
        features, hidden = parts(x, training=False)
        logits = tf.matmul(hidden, head.kernel) + head.bias
        score = tf.reduce_sum(tf.gather(logits, probabilities.argmax(1), axis=1, batch_dims=1))
    weights = tape.gradient(score, features).numpy().mean(axis=(1, 2))
    cams = np.maximum(np.einsum("nhwk,nk->nhw", features.numpy(), weights), 0)
    cams /= np.maximum(cams.max(axis=(1, 2), keepdims=True), 1e-30)
    expected = np.stack([cv2.resize(cam, (28, 28), interpolation=cv2.INTER_LINEAR) for cam in cams])
    np.testing.assert_allclose(maps, expected, atol=1e-4)


def test_grad_cam_layer_override_and_baseline(deep, images):
    x = images[0][:2].astype(np.float32)[..., None] / 255.0
    override = CamExplainer(deep, layer="stage2_b_relu")
    assert override.layer_name == "stage2_b_relu" and override(x)[1].shape == (2, 28, 28)
    with pytest.raises(ModelFileError, match="no layer named"):
        CamExplainer(deep, layer="nope")
    with pytest.raises(ModelFileError, match="4-D"):
        CamExplainer(deep, layer="flatten")
    baseline = create_model("baseline", width=0.125)
    explainer = CamExplainer(baseline)  # a Dense softmax head: its logits are recomputed from the kernel
    assert baseline.get_layer(explainer.layer_name).output.shape[1:3] == (28, 28)
    maps = explainer(x)[1]
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1


def test_grad_cam_on_efficientnet_finds_the_8x8_block_of_its_own_graph(images):
    # its layers are copies called on our input: the map must come from the outer model's graph
    explainer = CamExplainer(create_model("efficientnet_b0", width=0.125, input_size=32))
    assert explainer.method == "grad-cam" and explainer.input_size == 28
    features = graph_nodes(explainer.model)[explainer.layer_name].output_tensors[0]
    assert features.shape[1:3] == (8, 8)
    maps = explainer(images[0][:2].astype(np.float32)[..., None] / 255.0)[1]
    assert maps.shape == (2, 28, 28) and np.isfinite(maps).all() and 0 <= maps.min() <= maps.max() <= 1


def test_grad_cam_on_vgg_rescam_with_a_layer_uses_the_softmax_input(rescam, images):
    x = images[0][:2].astype(np.float32)[..., None] / 255.0
    explainer = CamExplainer(rescam, layer="block4_conv1_relu")  # a layer forces Grad-CAM
    assert explainer.method == "grad-cam"
    probabilities, maps = explainer(x)
    np.testing.assert_allclose(probabilities, rescam(x, training=False).numpy(), atol=1e-5)
    assert maps.shape == (2, 28, 28) and np.isfinite(maps).all() and 0 <= maps.min() <= maps.max() <= 1


# -- boxes and geometry ----------------------------------------------------------------------------

def test_box_of_a_rectangle_the_larger_blob_and_the_threshold():
    cam = np.zeros((28, 28), np.float32)
    cam[5:12, 3:20] = 1.0
    assert cam_box(cam) == (3, 5, 20, 12)  # x1, y1 exclusive
    cam[15:27, 10:26] = 0.5               # a larger, weaker blob wins: the largest component counts
    assert cam_box(cam) == (10, 15, 26, 27)
    assert cam_box(cam, threshold=0.6) == (3, 5, 20, 12)  # 0.5 < 0.6 * max: the weak blob is dropped
    for row, col in ((12, 20), (13, 21), (14, 22)):  # joined through corners only (8-connectivity)
        cam[row, col] = 0.3
    assert cam_box(cam, threshold=0.2) == (3, 5, 26, 27)
    assert cam_box(cam, threshold=0.4) == (10, 15, 26, 27)  # the bridge falls below 0.4 * max
    assert cam_box(np.zeros((28, 28), np.float32)) is None
    assert cam_box(np.full((28, 28), np.nan, np.float32)) is None
    with pytest.raises(FmnistError, match="threshold"):
        cam_box(cam, threshold=1.5)


def test_crop_geometry_maps_model_input_pixels_back_to_the_original():
    original = np.full((120, 200), 240, np.uint8)
    original[30:90, 50:80] = 20              # a dark 30x60 item on white
    image, affine = to_fashion_mnist_with_geometry(original)
    assert np.array_equal(image, to_fashion_mnist(original))  # same pixels as before
    laid = warp_cam(image.astype(np.float32) / 255, affine, original.shape)
    assert cam_box(laid, 0.5) == pytest.approx((50, 30, 80, 90), abs=2)  # the item, in its own pixels
    # the item (220 above the background once inverted) is stretched to full brightness, as the dataset's
    assert laid[60, 65] == pytest.approx(1.0, abs=0.02) and laid[60, 20] == 0 and laid[5, 65] == 0
    whole = warp_cam(np.ones((28, 28), np.float32), affine, original.shape)
    assert cam_box(whole, 0.5) == pytest.approx((35, 30, 95, 90), abs=1)  # the whole square: 60x60 around it
    # margins and an offset crop (the realtime segmenter's case)
    affine = fit_square_affine(40, 20, size=28, margin=1, origin=(100, 50))
    inner = np.zeros((28, 28), np.float32)
    inner[1:27, 1:27] = 1.0
    assert cam_box(warp_cam(inner, affine, (200, 200)), 0.5) == pytest.approx((90, 50, 130, 90), abs=1)


def test_a_cam_box_in_the_square_padding_outside_a_wide_image_is_not_reported():
    wide = np.full((40, 400), 250, np.uint8)
    wide[:, :] = 250
    wide[5:35, 0:400] = 30                   # a dark wide item touching both side edges
    _, affine = to_fashion_mnist_with_geometry(wide)
    padding_only = np.zeros((28, 28), np.float32)
    padding_only[0:5] = 1.0                  # heat only in the square's padding above the item
    assert cam_box(warp_cam(padding_only, affine, wide.shape)) is None


# -- explain_images ---------------------------------------------------------------------------------

def _overlaps(a, b):
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def test_explain_images_writes_png_and_json_in_original_pixels(deep_file, tmp_path):
    light = np.full((80, 100), 12, np.uint8)                      # light blob on a dark 100x80 image
    cv2.ellipse(light, (60, 38), (18, 20), 0, 0, 360, 200, cv2.FILLED)
    dark = np.full((90, 70, 3), 255, np.uint8)                    # a dark colour item on white
    dark[20:70, 15:55] = (40, 20, 90)
    dark[20:30, 25:45] = 255
    cv2.imwrite(str(tmp_path / "light.png"), light)
    cv2.imwrite(str(tmp_path / "dark.jpg"), dark)
    items = {"light.png": (42, 18, 79, 59), "dark.jpg": (15, 20, 55, 70)}
    out = tmp_path / "cams"
    results = explain_images(deep_file, [tmp_path / name for name in items], out)
    assert len(results) == 2
    for result, (name, item) in zip(results, items.items()):
        stem = name.split(".")[0]
        written = json.loads((out / f"{stem}_cam.json").read_text())
        assert written == result
        assert written["method"] == "grad-cam" and written["layer"] and written["threshold"] == 0.2
        assert 0 <= written["class_id"] < 10 and 0 < written["probability"] <= 1
        height, width = cv2.imread(str(tmp_path / name)).shape[:2]
        x0, y0, x1, y1 = written["box"]
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert _overlaps(written["box"], item), (name, written["box"])
        assert all(0 <= v <= 28 for v in written["input_box"])
        png = cv2.imread(str(out / f"{stem}_cam.png"))
        assert png is not None and png.shape[1] > 3 * width
    assert sorted(p.name for p in out.iterdir()) == ["dark_cam.json", "dark_cam.png", "light_cam.json",
                                                    "light_cam.png"]  # no temporaries left


def test_exported_models_and_bad_images_are_one_line_errors(deep_file, tmp_path):
    for exported in (tmp_path / "best.tflite", tmp_path / "best.onnx"):
        exported.write_bytes(b"whatever")
        for call in (lambda: open_explainer(exported), lambda: explain_images(exported, [], tmp_path)):
            with pytest.raises(ModelFileError, match="CAMs need the Keras model") as error:
                call()
            assert "\n" not in str(error.value)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    cv2.imwrite(str(tmp_path / "blank.png"), np.full((40, 40), 128, np.uint8))
    for name, message in (("broken.png", "cannot read"), ("blank.png", "blank")):
        with pytest.raises(FmnistError, match=message):
            explain_images(deep_file, [tmp_path / name], tmp_path / "out")
    assert not (tmp_path / "out").exists()


# -- the realtime mode and the evaluate grid ----------------------------------------------------------

def test_cam_mode_explains_and_draws_each_item(deep):
    mode = create_mode("cam", CamExplainer(deep, source="deep"), min_probability=0.0)
    boxes = [(60, 80, 200, 400), (360, 120, 600, 260)]
    frame = frame_with_items(boxes)
    before = frame.copy()
    items = mode.infer(mode.preprocess(frame))
    assert len(items) == 2
    for item in items:
        assert 0 <= item.class_id < 10 and 0 <= item.probability <= 1
        assert item.cam_box is not None
        x0, y0, x1, y1 = item.cam_box
        assert item.box[0] <= x0 < x1 <= item.box[2] and item.box[1] <= y0 < y1 <= item.box[3]
    mode.draw(frame, items)
    changed = np.abs(frame.astype(int) - before).max(axis=2) > 0
    for x0, y0, x1, y1 in boxes:
        assert changed[y0 + 5:y1 - 5, x0 + 5:x1 - 5].mean() > 0.9  # the heat map covers each item
    rows = mode.csv_rows(items)
    assert len(rows) == 2 and all(len(row) == len(CSV_FIELDS) - 1 for row in rows)
    assert [row[-4:] for row in rows] == [item.box for item in items]  # the item box, as in classify
    assert mode.csv_rows([]) == [("", "", "no item", "", "", "", "", "")]
    with pytest.raises(FmnistError, match="mode 'cam' needs a CAM explainer"):
        create_mode("cam", ByShape())


def test_cam_mode_in_the_realtime_loop_writes_video_and_csv(deep, tmp_path):
    frames = [frame_with_items([(40 + 10 * i, 30, 120 + 10 * i, 200)], size=(240, 320), seed=i) for i in range(3)]
    frames.append(frame_with_items([], size=(240, 320)))
    write_video(tmp_path / "in.mp4", frames)
    out, log = tmp_path / "out.mp4", tmp_path / "cam.csv"
    mode = create_mode("cam", CamExplainer(deep), min_probability=0.5)
    report = run_realtime(FrameSource(tmp_path / "in.mp4"), mode, output=out, csv_path=log, show=False)
    assert report.frames == 4 and int(cv2.VideoCapture(str(out)).get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    with open(log, newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["frame"] for row in rows] == ["0", "1", "2", "3"] and rows[3]["class"] == "no item"
    assert all(None not in row for row in rows)  # no columns beyond the header
    assert all(close_to([int(row[k]) for k in ("x0", "y0", "x1", "y1")], (40 + 10 * i, 30, 120 + 10 * i, 200))
               for i, row in enumerate(rows[:3]))


@pytest.mark.parametrize("model_name", ["baseline", "deep", "vgg_rescam"])
def test_cam_grid_png(model_name, rescam, deep, images, tmp_path):
    model = {"vgg_rescam": rescam, "deep": deep}.get(model_name) or create_model("baseline", width=0.125)
    path = tmp_path / "plots" / "cam_grid.png"
    method = cam_grid(model, *images, path, count=4)
    assert method == ("cam" if model_name == "vgg_rescam" else "grad-cam")
    grid = cv2.imread(str(path))
    assert grid is not None and grid.shape[0] > 100 and grid.shape[1] > 100


def test_evaluate_saves_the_cam_grid(deep_file, tiny_data, tmp_path):
    from fmnist_tf.evaluate.report import evaluate

    metrics = evaluate(deep_file, data=tiny_data, out=tmp_path)
    assert metrics["test_size"] == 100 and (tmp_path / "metrics.json").is_file()
    grid = cv2.imread(str(tmp_path / "plots" / "cam_grid.png"))
    assert grid is not None and grid.shape[0] > 300

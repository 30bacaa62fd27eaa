"""The YOLO tf.data pipeline (yolo.dataset): letterbox, targets, augmentation, errors."""

from dataclasses import replace

import cv2
import numpy as np
import pytest
import tensorflow as tf

from fmnist_tf.errors import ConfigError, DataError
from tests.conftest import blob_items
from yolo.annotations import AnnotationError, read_annotations, write_annotations
from yolo.boxes import DEFAULT_ANCHORS, DEFAULT_MASKS, STRIDES, scale_anchors
from yolo.canvas import get_preset, write_detection_dataset
from yolo.dataset import (GREY, PAD_ROW, AugmentSettings, annotation_box_sizes, augment_example,
                          decode_image, detection_dataset, letterbox_tf, pack_boxes)
from yolo.postprocess import letterbox_params, letterbox_to_original

SIZE = 96
ANCHORS = scale_anchors(DEFAULT_ANCHORS, SIZE)
CANVAS_HW = (120, 160)
NO_JITTER = dict(hue=0.0, saturation=1.0, value=1.0)


def make_split(folder, count, max_items):
    preset = get_preset("multi", width=CANVAS_HW[1], height=CANVAS_HW[0], max_items=max_items)
    write_detection_dataset(folder, {"train": blob_items(20, seed=4, min_value=60)}, {"train": count}, preset=preset,
                            seed=2, previews=0, progress=False)
    return folder / "train.txt"


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    """6 canvases of 1-3 items."""
    return make_split(tmp_path_factory.mktemp("multi"), 6, max_items=3)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """5 canvases of one item each: no two boxes can compete for a target cell."""
    return make_split(tmp_path_factory.mktemp("single"), 5, max_items=1)


def dataset(path, batch_size=4, **kwargs):
    return detection_dataset(path, SIZE, ANCHORS, DEFAULT_MASKS, 10, batch_size, **kwargs)


def target_boxes(heads):
    """[(xyxy in input pixels, class)] of every object cell of one image's (y32, y16) targets."""
    found = []
    for y_true, stride in zip(heads, STRIDES):
        for row, col, slot in zip(*np.nonzero(y_true[..., 4] > 0.5)):
            target = y_true[row, col, slot]
            centre = (np.array([col, row]) + target[0:2]) * stride
            size = target[2:4] * SIZE
            found.append((np.concatenate([centre - size / 2, centre + size / 2]), int(np.argmax(target[5:]))))
    return found


def batches(ds):
    return [(images.numpy(), tuple(y.numpy() for y in targets)) for images, targets in ds]


def assert_valid_targets(heads):
    for y_true in heads:
        objectness = y_true[..., 4]
        assert set(np.unique(objectness)) <= {0.0, 1.0}
        hit, classes = objectness == 1, y_true[..., 5:]
        assert np.all(classes[hit].sum(-1) == 1) and set(np.unique(classes)) <= {0.0, 1.0}
        assert np.all(y_true[~hit] == 0)
        assert np.all((y_true[hit][:, 0:2] >= 0) & (y_true[hit][:, 0:2] <= 1))
        assert np.all((y_true[hit][:, 2:4] > 0) & (y_true[hit][:, 2:4] <= 1))


def tight_bounds(mask):
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32)


# ---------------------------------------------------------------- batches and targets

def test_batch_shapes_dtypes_and_range(multi):
    ds = dataset(multi)
    images_spec, (spec32, spec16) = ds.element_spec
    assert images_spec.shape.as_list() == [None, SIZE, SIZE, 3] and images_spec.dtype == tf.float32
    assert spec32.shape.as_list() == [None, 3, 3, 3, 15] and spec16.shape.as_list() == [None, 6, 6, 3, 15]
    got = batches(ds)
    assert [len(images) for images, _ in got] == [4, 2]  # one epoch, last batch smaller
    for images, heads in got:
        assert images.dtype == np.float32 and images.min() >= 0 and images.max() <= 1
        assert heads[0].shape[1:] == (3, 3, 3, 15) and heads[1].shape[1:] == (6, 6, 3, 15)
        assert_valid_targets(heads)
    assert batches(ds)[0][0].tobytes() == got[0][0].tobytes()  # cached, not shuffled: same again
    assert ds.options().autotune.enabled is False  # as the classifiers' pipelines (see test_pipeline.py)


def test_targets_map_back_to_the_annotation_boxes(single):
    entries = read_annotations(single)
    (images, heads), = batches(dataset(single, batch_size=8))
    assert len(images) == len(entries) == 5
    for index, (_, boxes) in enumerate(entries):
        assert len(boxes) == 1
        found = target_boxes([head[index] for head in heads])
        assert 1 <= len(found) <= 2  # a box whose best anchor is in both masks is in both heads
        for box, cls in found:
            np.testing.assert_allclose(letterbox_to_original(box, CANVAS_HW, SIZE), boxes[0, :4], atol=1e-3)
            assert cls == boxes[0, 4]


def test_dataset_images_are_the_letterboxed_files(multi):
    entries = read_annotations(multi)
    (images, _), *_ = batches(dataset(multi))
    for image, (path, _) in zip(images, entries):
        expected = letterbox_tf(decode_image(tf.io.read_file(str(path))), SIZE).numpy()
        assert np.abs(image - expected).max() <= 0.5 / 255 + 1e-6  # the cache holds uint8


@pytest.mark.parametrize("hw", [(480, 640), (640, 480), (100, 100), (37, 250), (250, 37), (20, 30)])
@pytest.mark.parametrize("size", [64, 96])
def test_letterbox_tf_matches_letterbox_params(hw, size):
    _, (dx, dy), (new_w, new_h) = letterbox_params(hw, size)
    out = letterbox_tf(np.full(hw + (3,), 255, np.uint8), size).numpy()
    assert out.shape == (size, size, 3) and out.dtype == np.float32
    content = np.zeros((size, size), bool)
    content[dy:dy + new_h, dx:dx + new_w] = True
    np.testing.assert_allclose(out[content], 1.0, atol=1e-5)
    assert np.all(out[~content] == np.float32(GREY))
    ramp = np.linspace(0, 1, hw[1], dtype=np.float32)[None, :, None] * np.ones(hw + (3,), np.float32)
    shaded = letterbox_tf(ramp, size).numpy()  # float input as it is: dark left, bright right
    assert shaded[dy + new_h // 2, dx, 0] < 0.2 and shaded[dy + new_h // 2, dx + new_w - 1, 0] > 0.8


def test_a_canvas_without_boxes_gives_all_zero_targets(multi, tmp_path):
    empty = np.full((50, 70, 3), 200, np.uint8)
    cv2.imwrite(str(tmp_path / "empty.png"), empty)
    path, boxes = read_annotations(multi)[0]
    write_annotations(tmp_path / "mixed.txt", [("empty.png", []), (path, boxes)])
    (_, plain), = batches(dataset(tmp_path / "mixed.txt"))
    (_, augmented), = batches(dataset(tmp_path / "mixed.txt", augment=AugmentSettings()))
    assert all(np.all(head[0] == 0) for head in plain + augmented)
    assert any(np.any(head[1][..., 4] == 1) for head in plain)  # the other image still has its boxes
    write_annotations(tmp_path / "none.txt", [("empty.png", [])])
    _, packed = pack_boxes(read_annotations(tmp_path / "none.txt"))
    assert packed.shape == (1, 1, 5) and np.array_equal(packed[0, 0], PAD_ROW)
    (_, heads), = batches(dataset(tmp_path / "none.txt"))
    assert all(np.all(head == 0) for head in heads)


# ---------------------------------------------------------------- augmentation

def rectangle_image():
    """Black 120x160 image with a white rectangle: box (40, 30, 100, 80), class 3, plus a padding row."""
    image = np.zeros(CANVAS_HW + (3,), np.float32)
    image[30:80, 40:100] = 1.0
    return tf.constant(image), tf.constant([[40, 30, 100, 80, 3], PAD_ROW], tf.float32)


def test_augmented_boxes_stay_on_the_content_and_inside():
    image, boxes = rectangle_image()
    settings = AugmentSettings(**NO_JITTER)
    kept = 0
    for seed in range(16):
        out, moved = augment_example(image, boxes, tf.constant([seed, 1], tf.int64), SIZE, settings)
        out, moved = out.numpy(), moved.numpy()
        assert out.shape == (SIZE, SIZE, 3) and 0 <= out.min() and out.max() <= 1
        assert np.array_equal(moved[1], PAD_ROW)
        if moved[0, 4] < 0:
            continue
        kept += 1
        assert moved[0, 4] == 3 and np.all((moved[0, :4] >= 0) & (moved[0, :4] <= SIZE))
        np.testing.assert_allclose(moved[0, :4], tight_bounds(out[..., 0] > 0.75), atol=1.5)
    assert kept >= 12


def test_flip_mirrors_image_and_boxes():
    image, boxes = rectangle_image()
    keep, mirror = AugmentSettings(flip=0.0), AugmentSettings(flip=1.0)  # colour jitter on: it commutes
    for seed in range(4):
        rng_seed = tf.constant([seed, 9], tf.int64)
        plain, plain_boxes = (t.numpy() for t in augment_example(image, boxes, rng_seed, SIZE, keep))
        flipped, flipped_boxes = (t.numpy() for t in augment_example(image, boxes, rng_seed, SIZE, mirror))
        np.testing.assert_allclose(flipped, plain[:, ::-1], atol=1e-6)
        if plain_boxes[0, 4] >= 0:
            x0, y0, x1, y1, cls = plain_boxes[0]
            np.testing.assert_allclose(flipped_boxes[0], [SIZE - x1, y0, SIZE - x0, y1, cls], atol=1e-4)


@pytest.mark.parametrize("flip, mirrored_share", [(True, (0.3, 0.7)), (False, (0.0, 0.0))])
def test_the_configs_flip_switch_mirrors_about_half_the_canvases(flip, mirrored_share):
    """`flip: true` in a config means random flips, not mirroring every canvas."""
    from fmnist_tf.config import load_config
    from yolo.train import training_augmentation

    settings = training_augmentation(load_config("tinyyolov3", {"flip": flip}))
    image, boxes = rectangle_image()
    mirrored = 0
    for seed in range(60):  # the draws do not depend on flip, so each output is one of the two
        rng_seed = tf.constant([seed, 3], tf.int64)
        out, keep, mirror = (augment_example(image, boxes, rng_seed, SIZE, s)[0].numpy() for s in
                             (settings, replace(settings, flip=0.0), replace(settings, flip=1.0)))
        assert np.array_equal(out, keep) or np.array_equal(out, mirror)
        mirrored += not np.array_equal(out, keep)
    low, high = mirrored_share
    assert low * 60 <= mirrored <= high * 60, mirrored
    assert training_augmentation(load_config("tinyyolov3", {"augment": False})) is None


def test_boxes_that_leave_the_canvas_are_dropped():
    image, boxes = rectangle_image()
    corner = tf.constant([[0, 0, 4, 4, 1], [40, 30, 100, 80, 3]], tf.float32)  # a 4 px box at the corner
    settings = AugmentSettings(scale=(1.4, 1.4), aspect=(1.0, 1.0), **NO_JITTER)
    dropped = 0
    for seed in range(12):
        _, moved = augment_example(image, corner, tf.constant([seed, 2], tf.int64), SIZE, settings)
        dropped += int(moved.numpy()[0, 4] < 0)
    assert dropped >= 6  # cut off by most placements of the enlarged image


def test_augmented_dataset_is_seeded_valid_and_new_each_epoch(multi):
    ds = dataset(multi, batch_size=3, training=True, augment=AugmentSettings(), seed=5)
    first, second = batches(ds), batches(ds)
    again = batches(dataset(multi, batch_size=3, training=True, augment=AugmentSettings(), seed=5))
    other = batches(dataset(multi, batch_size=3, training=True, augment=AugmentSettings(), seed=6))
    for (images, heads), (images_again, heads_again) in zip(first, again):
        assert np.array_equal(images, images_again)
        assert all(np.array_equal(a, b) for a, b in zip(heads, heads_again))
    assert not np.array_equal(first[0][0], second[0][0])
    assert not np.array_equal(first[0][0], other[0][0])
    for images, heads in first + second:
        assert images.shape[1:] == (SIZE, SIZE, 3) and images.min() >= 0 and images.max() <= 1
        assert_valid_targets(heads)


def test_training_without_augmentation_shuffles_the_same_examples(multi):
    plain = batches(dataset(multi, batch_size=6))[0][0]
    shuffled = batches(dataset(multi, batch_size=6, training=True, seed=1))[0][0]
    assert not np.array_equal(plain, shuffled)
    as_set = lambda images: sorted(image.tobytes() for image in np.round(images * 255).astype(np.uint8))
    assert as_set(plain) == as_set(shuffled)


def test_augment_settings_are_checked():
    for bad in ({"scale": (1.2, 0.8)}, {"aspect": (0, 1)}, {"flip": 2}, {"flip": True}, {"hue": 0.7}, {"saturation": 0.5},
                {"min_visible": 1.5}, {"scale": (0.5,)}, {"hue": "lots"}, {"aspect": 1.0}):
        with pytest.raises(ConfigError):
            AugmentSettings(**bad)
    from_yaml = AugmentSettings(scale=[0.5, 1.5], flip=1)  # lists become tuples: still hashable
    assert from_yaml.scale == (0.5, 1.5) and from_yaml.flip == 1.0 and hash(from_yaml)


# ---------------------------------------------------------------- errors and anchors

def test_a_malformed_line_or_missing_image_names_file_and_line(multi, tmp_path):
    path, _ = read_annotations(multi)[0]
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{path} 1,2,30,40,0\n{path} 1,2,3\n")
    with pytest.raises(AnnotationError, match=r"bad\.txt:2: box 1 '1,2,3' has 3 fields"):
        dataset(bad)
    missing = tmp_path / "missing.txt"
    missing.write_text(f"# comment\n{path}\nnowhere.jpg 1,2,3,4,0\n")
    with pytest.raises(AnnotationError, match=r"missing\.txt:3: image .*nowhere\.jpg not found"):
        dataset(missing)
    wrong_class = tmp_path / "class.txt"
    wrong_class.write_text(f"{path} 1,2,3,4,12\n")
    with pytest.raises(AnnotationError, match=r"class\.txt:1: .*must be < 10"):
        dataset(wrong_class)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    with pytest.raises(DataError, match="lists no images"):
        dataset(empty)
    with pytest.raises(ConfigError, match="batch_size"):
        dataset(multi, batch_size=0)
    with pytest.raises(ConfigError, match="AugmentSettings"):
        dataset(multi, augment={"flip": 0.5})


def test_annotation_box_sizes_are_letterboxed_widths_and_heights(multi, tmp_path):
    scale, _, _ = letterbox_params(CANVAS_HW, SIZE)
    boxes = np.concatenate([b for _, b in read_annotations(multi)])
    sizes = annotation_box_sizes(multi, SIZE)
    assert sizes.dtype == np.float32 and sizes.shape == (len(boxes), 2)
    np.testing.assert_allclose(sizes, (boxes[:, 2:4] - boxes[:, 0:2]) * scale, rtol=1e-6)
    path, _ = read_annotations(multi)[0]
    (tmp_path / "nobox.txt").write_text(f"{path}\n")
    with pytest.raises(DataError, match="no boxes"):
        annotation_box_sizes(tmp_path / "nobox.txt", SIZE)

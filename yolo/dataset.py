"""tf.data input pipeline for the YOLO detector, from keras-yolo3 annotation files.

Elements are batches of (images float32 (B, S, S, 3) in [0, 1], (y_true_32, y_true_16)), the
target layouts of `yolo.boxes.encode_targets`. Every image is letterboxed onto a grey (128)
S x S canvas with exactly the arithmetic of `yolo.postprocess.letterbox_params`, so predictions
map back to the original image with `letterbox_to_original`.

Boxes travel through the map functions as a dense float32 (M, 5) tensor per image, M the largest
box count of the file, padded with rows (0, 0, 0, 0, -1): `encode_targets` skips class < 0 rows.

Caching (`cache=True`; a string caches to that file prefix instead of memory):
- evaluation (training=False, augment=None): the letterboxed images, rounded to uint8, and their
  targets are cached after the first pass. At S = 416 that is 0.5 MB an image (500 canvases:
  260 MB), a quarter of float32.
- training, or any augmentation: only the encoded file bytes (`tf.io.read_file`, ~50-100 KB per
  640x480 JPEG canvas) are cached. Decoded canvases would take 0.9 MB each (8000: 7 GB), so
  decoding, augmentation and target encoding are redone every epoch, in parallel.
"""

import math
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from fmnist_tf.data.pipeline import PIPELINE_OPTIONS
from fmnist_tf.errors import ConfigError, DataError
from yolo.annotations import read_annotations
from yolo.boxes import check_anchors, check_input_size, encode_targets_tf
from yolo.postprocess import letterbox_params

AUTOTUNE = tf.data.AUTOTUNE
GREY = 128.0 / 255.0  # the reference's letterbox padding
PAD_ROW = (0.0, 0.0, 0.0, 0.0, -1.0)


@dataclass(frozen=True)
class AugmentSettings:
    """Training augmentation ranges (the reference's get_random_data, adapted).

    Geometry: the image is resized by (letterbox scale) * U(scale) with its width / height ratio
    stretched by U(aspect), placed at a random position on the grey S x S canvas (cut where it
    overflows), then mirrored with probability `flip`. Colour: hue shifted by U(-hue, hue) (a
    fraction of the colour wheel), saturation and value multiplied by a log-uniform factor in
    [1 / saturation, saturation] and [1 / value, value]. Boxes narrower or lower than
    `min_box_side` pixels, or with less than `min_visible` of their area left inside the canvas,
    are dropped.
    """
    scale: tuple = (0.6, 1.4)
    aspect: tuple = (0.7, 1.3)
    flip: float = 0.5
    hue: float = 0.1
    saturation: float = 1.5
    value: float = 1.5
    min_box_side: float = 2.0
    min_visible: float = 0.5

    def __post_init__(self):
        _coerce_numbers(self)
        problem = _settings_problem(self)
        if problem:
            raise ConfigError(f"augmentation settings: {problem}")


SCALAR_SETTINGS = ("flip", "hue", "saturation", "value", "min_box_side", "min_visible")


def _coerce_numbers(settings):
    """Floats, and tuples for the ranges (a YAML config gives lists, which would break hashing)."""
    for name in SCALAR_SETTINGS:
        if isinstance(getattr(settings, name), bool):  # float(True) is 1.0: flip=True would mirror every image
            raise ConfigError(f"augmentation setting {name} is a number, not {getattr(settings, name)!r}")
    try:
        for name in ("scale", "aspect"):
            object.__setattr__(settings, name, tuple(float(v) for v in getattr(settings, name)))
        for name in SCALAR_SETTINGS:
            object.__setattr__(settings, name, float(getattr(settings, name)))
    except (TypeError, ValueError):
        raise ConfigError(f"augmentation settings must be numbers, with scale and aspect as (low, high) "
                          f"pairs; got {settings!r}") from None


def _settings_problem(settings):
    for name in ("scale", "aspect"):
        pair = getattr(settings, name)
        if len(pair) != 2 or not 0 < pair[0] <= pair[1] or not math.isfinite(pair[1]):
            return f"{name} must be a (low, high) range with 0 < low <= high, got {pair!r}"
    if not 0 <= settings.flip <= 1:
        return f"flip is a probability in [0, 1], got {settings.flip!r}"
    if not 0 <= settings.hue <= 0.5:
        return f"hue must be in [0, 0.5] (a fraction of the colour wheel), got {settings.hue!r}"
    for name in ("saturation", "value"):
        if not 1 <= getattr(settings, name) < math.inf:
            return f"{name} must be a factor >= 1 (1 means no change), got {getattr(settings, name)!r}"
    if not settings.min_box_side >= 0:
        return f"min_box_side must be >= 0 pixels, got {settings.min_box_side!r}"
    if not 0 <= settings.min_visible <= 1:
        return f"min_visible must be a fraction in [0, 1], got {settings.min_visible!r}"
    return None


# ----------------------------------------------------------------------------------- geometry

def letterbox_geometry_tf(height, width, input_size):
    """`letterbox_params` as tensors: (scale float64, (dx, dy) int32, (new_w, new_h) int32).

    float64 so that scale and the truncated sizes are bit-identical to the Python arithmetic.
    """
    side = tf.constant(float(input_size), tf.float64)
    height, width = tf.cast(height, tf.float64), tf.cast(width, tf.float64)
    scale = tf.minimum(side / width, side / height)
    # at least 1 pixel: only absurd aspect ratios (e.g. 1 x 1000) would truncate to 0
    new_w = tf.maximum(tf.cast(tf.floor(width * scale), tf.int32), 1)
    new_h = tf.maximum(tf.cast(tf.floor(height * scale), tf.int32), 1)
    return scale, ((input_size - new_w) // 2, (input_size - new_h) // 2), (new_w, new_h)


def place_on_canvas(image, new_hw, offset_xy, input_size):
    """Resize a float image to new_hw and paste it with its top-left corner at offset_xy on a grey
    S x S canvas. The offset may be negative and the image larger than S: what falls outside is
    cut. The caller keeps the image overlapping the whole canvas or inside it (never beside it)."""
    new_h, new_w = new_hw
    dx, dy = offset_xy
    resized = tf.image.resize(image, tf.stack([new_h, new_w]), method="bilinear", antialias=True)
    left, top = tf.maximum(-dx, 0), tf.maximum(-dy, 0)
    right, bottom = tf.minimum(new_w, input_size - dx), tf.minimum(new_h, input_size - dy)
    visible = resized[top:bottom, left:right]
    # pad_to_bounding_box pads with zeros: shift so that the zeros become grey
    canvas = tf.image.pad_to_bounding_box(visible - GREY, tf.maximum(dy, 0), tf.maximum(dx, 0),
                                          input_size, input_size) + GREY
    canvas.set_shape((input_size, input_size, image.shape[-1]))
    return canvas


def letterbox_tf(image, input_size):
    """An (H, W, C) image (uint8, or float in [0, 1]) letterboxed to float32 (S, S, C) in [0, 1]:
    resized by min(S / W, S / H) to (int(W * scale), int(H * scale)) and centred on grey 128,
    exactly as `yolo.postprocess.letterbox_params` describes. Usable in a tf.function."""
    input_size = check_input_size(input_size)
    image = tf.image.convert_image_dtype(image, tf.float32)  # uint8 / 255; float as it is
    shape = tf.shape(image)
    _, offset, (new_w, new_h) = letterbox_geometry_tf(shape[0], shape[1], input_size)
    return place_on_canvas(image, (new_h, new_w), offset, input_size)


def move_boxes(boxes, scale_xy, offset_xy):
    """(M, 5) box rows -> corners * scale + offset (float64 arithmetic), padding rows unchanged."""
    sx, sy = (tf.cast(v, tf.float64) for v in scale_xy)
    dx, dy = (tf.cast(v, tf.float64) for v in offset_xy)
    corners = tf.cast(boxes[:, :4], tf.float64) * tf.stack([sx, sy, sx, sy]) + tf.stack([dx, dy, dx, dy])
    moved = tf.concat([tf.cast(corners, tf.float32), boxes[:, 4:]], axis=1)
    return tf.where(boxes[:, 4:] >= 0, moved, boxes)


# ----------------------------------------------------------------------------------- examples

def decode_image(contents):
    """Encoded JPEG / PNG / BMP / GIF bytes -> float32 (H, W, 3) in [0, 1] (first GIF frame)."""
    image = tf.io.decode_image(contents, channels=3, expand_animations=False)
    return tf.image.convert_image_dtype(image, tf.float32)


def letterbox_example(image, boxes, input_size):
    """(decoded image, boxes in its pixels) -> (letterboxed image, boxes in input pixels)."""
    shape = tf.shape(image)
    scale, offset, (new_w, new_h) = letterbox_geometry_tf(shape[0], shape[1], input_size)
    return place_on_canvas(image, (new_h, new_w), offset, input_size), move_boxes(boxes, (scale, scale), offset)


def _random_offset(u, new_side, input_size):
    """An integer offset uniform over the positions that keep the canvas covered or the image in."""
    low, high = tf.minimum(0, input_size - new_side), tf.maximum(0, input_size - new_side)
    steps = tf.cast(high - low + 1, tf.float64)
    return low + tf.minimum(tf.cast(tf.floor(u * steps), tf.int32), high - low)


def _log_uniform(u, factor):
    """A factor in [1 / factor, factor], its log uniform: u = 0.5 gives 1."""
    return tf.exp((2.0 * u - 1.0) * math.log(factor))


def _keep_boxes(boxes, clipped, settings):
    """Rows whose clipped box is large enough and kept enough of its area."""
    def area(corners):
        return (corners[:, 2] - corners[:, 0]) * (corners[:, 3] - corners[:, 1])

    width, height = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    return ((boxes[:, 4] >= 0) & (width >= settings.min_box_side) & (height >= settings.min_box_side)
            & (area(clipped) >= settings.min_visible * area(boxes[:, :4])))


def _augment_boxes(boxes, scale_xy, offset_xy, flip, input_size, settings):
    moved = move_boxes(boxes, scale_xy, offset_xy)
    side = float(input_size)
    clipped = tf.clip_by_value(moved[:, :4], 0.0, side)
    mirrored = tf.stack([side - clipped[:, 2], clipped[:, 1], side - clipped[:, 0], clipped[:, 3]], axis=1)
    corners = tf.where(flip, mirrored, clipped)
    keep = _keep_boxes(moved, clipped, settings)
    return tf.where(keep[:, None], tf.concat([corners, moved[:, 4:]], axis=1), tf.constant(PAD_ROW))


def _jitter_colour(image, u_hue, u_saturation, u_value, settings):
    if settings.hue > 0:
        image = tf.image.adjust_hue(image, tf.cast((2.0 * u_hue - 1.0) * settings.hue, tf.float32))
    if settings.saturation > 1:
        image = tf.image.adjust_saturation(image, tf.cast(_log_uniform(u_saturation, settings.saturation), tf.float32))
    if settings.value > 1:
        image = image * tf.cast(_log_uniform(u_value, settings.value), tf.float32)
    return tf.clip_by_value(image, 0.0, 1.0)


def augment_example(image, boxes, rng_seed, input_size, settings):
    """(decoded float image, boxes in its pixels, stateless seed int64 (2,)) -> (augmented
    S x S image, boxes in input pixels, dropped boxes turned into padding rows).

    All draws come from one stateless uniform vector: the same seed gives the same result, and
    draws do not depend on which settings are on (flip=0 and flip=1 share the geometry)."""
    u = tf.random.stateless_uniform([8], seed=rng_seed, dtype=tf.float64)
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float64), tf.cast(shape[1], tf.float64)
    base, _, _ = letterbox_geometry_tf(shape[0], shape[1], input_size)
    size = base * (settings.scale[0] + u[0] * (settings.scale[1] - settings.scale[0]))
    stretch = tf.sqrt(settings.aspect[0] + u[1] * (settings.aspect[1] - settings.aspect[0]))
    new_w = tf.maximum(tf.cast(tf.round(width * size * stretch), tf.int32), 1)
    new_h = tf.maximum(tf.cast(tf.round(height * size / stretch), tf.int32), 1)
    offset = (_random_offset(u[2], new_w, input_size), _random_offset(u[3], new_h, input_size))
    flip = u[4] < settings.flip
    canvas = place_on_canvas(image, (new_h, new_w), offset, input_size)
    canvas = tf.cond(flip, lambda: tf.reverse(canvas, axis=[1]), lambda: canvas)
    canvas = _jitter_colour(canvas, u[5], u[6], u[7], settings)
    # the pixel-exact scale of the resize, so boxes stay on the content
    scale_xy = (tf.cast(new_w, tf.float64) / width, tf.cast(new_h, tf.float64) / height)
    return canvas, _augment_boxes(boxes, scale_xy, offset, flip, input_size, settings)


# ----------------------------------------------------------------------------------- dataset

def load_entries(annotation_path, num_classes=None):
    """read_annotations with every image checked; DataError for a file that lists no image."""
    entries = read_annotations(annotation_path, check_images=True, num_classes=num_classes)
    if not entries:
        raise DataError(f"{annotation_path}: the annotation file lists no images (empty or only comments)")
    return entries


def pack_boxes(entries):
    """(image path strings (n,), float32 boxes (n, M, 5) padded with PAD_ROW), M >= 1."""
    width = max(1, max(len(boxes) for _, boxes in entries))
    packed = np.tile(np.array(PAD_ROW, np.float32), (len(entries), width, 1))
    for row, (_, boxes) in enumerate(entries):
        packed[row, :len(boxes)] = boxes
    return np.array([str(path) for path, _ in entries]), packed


def _cached(dataset, cache):
    if cache is True:
        return dataset.cache()
    if cache:
        return dataset.cache(str(cache))
    return dataset


def _check_batch_size(batch_size):
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive int, got {batch_size!r}")
    return int(batch_size)


def _to_uint8(image):
    return tf.cast(tf.round(image * 255.0), tf.uint8)


def detection_dataset(annotation_path, input_size, anchors, masks, num_classes, batch_size, *,
                      training=False, augment=None, seed=0, cache=True):
    """Batches (images (B, S, S, 3) float32 in [0, 1], (y_true_32, y_true_16)) from an annotation file.

    The file is read and every image checked before anything is built, so a malformed line or a
    missing image raises AnnotationError naming file:line now, not mid-training. `training`
    shuffles (seeded, reshuffled every iteration); `augment` (an AugmentSettings, or None for
    none) applies random geometry and colour, seeded per element from `seed` and different every
    epoch. One iteration is one epoch (no repeat); the last batch may be smaller. Caching: see the
    module docstring.
    """
    input_size = check_input_size(input_size)
    anchors, masks = check_anchors(anchors, masks)
    batch_size = _check_batch_size(batch_size)
    if augment is not None and not isinstance(augment, AugmentSettings):
        raise ConfigError(f"augment must be an AugmentSettings or None, got {type(augment).__name__}")
    entries = load_entries(annotation_path, num_classes)
    paths, boxes = pack_boxes(entries)

    def read(path, image_boxes):
        return tf.io.read_file(path), image_boxes

    def letterbox(contents, image_boxes):
        return letterbox_example(decode_image(contents), image_boxes, input_size)

    def letterbox_uint8(contents, image_boxes):  # a quarter of the float32 cache
        image, moved = letterbox(contents, image_boxes)
        return _to_uint8(image), moved

    def augmented(example, rng_seed):
        return augment_example(decode_image(example[0]), example[1], rng_seed, input_size, augment)

    def encode(image, image_boxes):
        return image, encode_targets_tf(image_boxes, input_size, anchors, masks, num_classes)

    dataset = tf.data.Dataset.from_tensor_slices((paths, boxes)).map(read, num_parallel_calls=AUTOTUNE)
    if training or augment is not None:
        dataset = _cached(dataset, cache)
        if training:
            dataset = dataset.shuffle(len(entries), seed=seed, reshuffle_each_iteration=True)
        if augment is None:
            dataset = dataset.map(letterbox, num_parallel_calls=AUTOTUNE)
        else:
            # per-element stateless seeds: reproducible for a seed, new every epoch, and
            # independent of the order in which parallel map calls run
            seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2, drop_remainder=True)
            dataset = tf.data.Dataset.zip(dataset, seeds).map(augmented, num_parallel_calls=AUTOTUNE)
        dataset = dataset.map(encode, num_parallel_calls=AUTOTUNE)
    else:
        dataset = dataset.map(letterbox_uint8, num_parallel_calls=AUTOTUNE)
        dataset = _cached(dataset.map(encode, num_parallel_calls=AUTOTUNE), cache)
        dataset = dataset.map(lambda image, targets: (tf.cast(image, tf.float32) / 255.0, targets),
                              num_parallel_calls=AUTOTUNE)
    return dataset.batch(batch_size).prefetch(AUTOTUNE).with_options(PIPELINE_OPTIONS)


# ----------------------------------------------------------------------------------- anchors

def image_hw(path):
    """(height, width) of an image file from its header (PIL, which matplotlib already needs)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.height, image.width
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: cannot read the image size ({exc})") from exc


def annotation_box_sizes(annotation_path, input_size):
    """float32 (n, 2) widths and heights of every box of the file in input pixels, after the
    letterbox (what training without augmentation sees): the input of `kmeans_anchors`."""
    input_size = check_input_size(input_size)
    sizes, scales = [], {}
    for path, boxes in load_entries(annotation_path):
        if not len(boxes):
            continue
        if path not in scales:
            scales[path] = letterbox_params(image_hw(path), input_size)[0]
        sizes.append((boxes[:, 2:4] - boxes[:, 0:2]) * scales[path])
    if not sizes:
        raise DataError(f"{annotation_path}: the annotation file has no boxes to fit anchors to")
    return np.concatenate(sizes).astype(np.float32)


__all__ = ["AugmentSettings", "GREY", "PAD_ROW", "letterbox_tf", "letterbox_geometry_tf", "place_on_canvas",
           "move_boxes", "decode_image", "letterbox_example", "augment_example", "load_entries", "pack_boxes",
           "detection_dataset", "image_hw", "annotation_box_sizes"]

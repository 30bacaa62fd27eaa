"""Detection canvases synthesized from Fashion-MNIST items, and the dataset writer.

An item (uint8 28x28, light on black) is scaled to a square of side s (cv2 INTER_AREA when
shrinking, INTER_LINEAR when enlarging) and composited with its own intensity as alpha:
pixel = background * (1 - v/255) + item_colour * v/255. Its visible pixels are therefore exactly
its non-zero pixels, and its box is their tight bound.

Boxes are int (k, 5) rows x_min, y_min, x_max, y_max, class in canvas pixels, x_max/y_max
EXCLUSIVE (last item column/row + 1), the convention of `yolo.annotations`. COCO JSON uses the
same pixels as bbox [x_min, y_min, x_max - x_min, y_max - y_min] and category_id = class
(0-based, as in the annotation files); image and annotation ids start at 1 (pycocotools treats
annotation id 0 as "unmatched").

Canvas i of a split is drawn from its own generator, seeded by (seed, split, i), so it does not
depend on how many canvases were made before it.
"""

import re
import zlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from fmnist_tf.data.fashion_mnist import CLASS_NAMES
from fmnist_tf.errors import DataError
from fmnist_tf.fileio import atomic_write_image, atomic_write_json
from fmnist_tf.realtime.modes import draw_label  # the realtime overlay's label style
from yolo.annotations import write_annotations

BASE_SIZE = (640, 480)  # presets give item sides in pixels for this canvas; other sizes scale them
JPEG_QUALITY = (cv2.IMWRITE_JPEG_QUALITY, 95)
BACKGROUNDS = ("solid", "gradient", "noise")
POLARITIES = ("dark_on_light", "light_on_dark")
GREEN, WHITE, BLACK = (0, 255, 0), (255, 255, 255), (0, 0, 0)
# Channel ranges keep every item in contrast with its background whatever the random draw.
BACKGROUND_RANGE = {"dark_on_light": (150, 255), "light_on_dark": (0, 100)}
ITEM_RANGE = {"dark_on_light": (0, 60), "light_on_dark": (195, 255)}
FIXED_SOLIDS = {"dark_on_light": (GREEN, WHITE), "light_on_dark": (BLACK,)}


class CanvasError(DataError):
    """Bad items, labels, counts or preset settings for canvas synthesis."""


@dataclass(frozen=True)
class CanvasPreset:
    name: str
    width: int = 640
    height: int = 480
    items_per_canvas: tuple = (1, 4)      # inclusive range of items drawn per canvas
    item_side: tuple = (48, 224)          # inclusive range, pixels at 640x480
    centred: bool = False                 # centre the scaled item square (one item)
    max_iou: float = 0.2                  # between any two boxes
    max_cover: float = 0.5                # intersection / smaller box: no item hidden under another
    placement_tries: int = 50             # random positions tried before the item is dropped
    backgrounds: tuple = BACKGROUNDS
    polarities: tuple = POLARITIES
    background_colour: tuple | None = None  # fixed solid background (RGB), overrides `backgrounds`
    item_colour: tuple | None = None        # fixed item colour (RGB), overrides the polarity's range

    def __post_init__(self):
        problem = _preset_problem(self)
        if problem:
            raise CanvasError(f"canvas preset {self.name!r}: {problem}")

    def side_range(self):
        """Item sides in pixels for this canvas size."""
        factor = min(self.width / BASE_SIZE[0], self.height / BASE_SIZE[1])
        low, high = (max(1, round(side * factor)) for side in self.item_side)
        return low, max(low, min(high, self.width, self.height))


def _preset_problem(preset):
    if preset.width < 8 or preset.height < 8:
        return f"canvas must be at least 8x8, got {preset.width}x{preset.height}"
    low, high = preset.items_per_canvas
    if not 1 <= low <= high:
        return f"items_per_canvas must be 1 <= low <= high, got {preset.items_per_canvas}"
    if not 1 <= preset.item_side[0] <= preset.item_side[1]:
        return f"item_side must be 1 <= low <= high, got {preset.item_side}"
    if preset.centred and high != 1:
        return "a centred preset places exactly one item"
    if not set(preset.backgrounds) <= set(BACKGROUNDS) or not preset.backgrounds:
        return f"backgrounds must be some of {BACKGROUNDS}, got {preset.backgrounds}"
    if not set(preset.polarities) <= set(POLARITIES) or not preset.polarities:
        return f"polarities must be some of {POLARITIES}, got {preset.polarities}"
    return None


PRESETS = {
    # The classic exercise: one item, 280x280, centred on pure green; white item (alpha-blended).
    "reference": CanvasPreset("reference", items_per_canvas=(1, 1), item_side=(280, 280), centred=True,
                              background_colour=GREEN, item_colour=WHITE),
    "multi": CanvasPreset("multi"),
}
DEFAULT_PRESET = "multi"


def get_preset(preset=DEFAULT_PRESET, width=None, height=None, max_items=None) -> CanvasPreset:
    """A preset by name (or as given), optionally at another canvas size or item count."""
    if not isinstance(preset, CanvasPreset):
        if preset not in PRESETS:
            raise CanvasError(f"unknown canvas preset {preset!r}; available: {', '.join(sorted(PRESETS))}")
        preset = PRESETS[preset]
    changes = {key: value for key, value in (("width", width), ("height", height)) if value is not None}
    if max_items is not None:
        changes["items_per_canvas"] = (min(preset.items_per_canvas[0], max_items), max_items)
    return replace(preset, **changes) if changes else preset


def canvas_rng(seed, split, index):
    """The generator for canvas `index` of `split`: independent of every other canvas."""
    return np.random.default_rng([int(seed), zlib.crc32(split.encode("utf-8")), int(index)])


# --- backgrounds -------------------------------------------------------------------------------

def _random_colour(rng, value_range):
    low, high = value_range
    return rng.integers(low, high + 1, size=3).astype(np.float32)


def _solid(preset, polarity, rng):
    fixed = FIXED_SOLIDS[polarity]
    pick = rng.integers(len(fixed) + 1)  # each fixed colour, or a random one, equally often
    colour = np.array(fixed[pick], np.float32) if pick < len(fixed) else _random_colour(
        rng, BACKGROUND_RANGE[polarity])
    return np.broadcast_to(colour, (preset.height, preset.width, 3)).copy()


def _gradient(preset, polarity, rng):
    start, end = (_random_colour(rng, BACKGROUND_RANGE[polarity]) for _ in range(2))
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:preset.height, 0:preset.width].astype(np.float32)
    position = xs * np.cos(angle) + ys * np.sin(angle)
    t = (position - position.min()) / max(float(np.ptp(position)), 1e-6)
    return start + (end - start) * t[..., None]


def _noise(preset, polarity, rng):
    """Blotches (coarse noise, upscaled) plus grain, kept inside the polarity's range."""
    low, high = BACKGROUND_RANGE[polarity]
    base = _random_colour(rng, (low + 20, high - 20))
    coarse_shape = (max(2, preset.height // 32), max(2, preset.width // 32), 3)
    coarse = rng.normal(0, 25, size=coarse_shape).astype(np.float32)
    blotches = cv2.resize(coarse, (preset.width, preset.height), interpolation=cv2.INTER_LINEAR)
    grain = rng.normal(0, 8, size=(preset.height, preset.width, 3)).astype(np.float32)
    return np.clip(base + blotches + grain, low, high)


BACKGROUND_MAKERS = {"solid": _solid, "gradient": _gradient, "noise": _noise}


def make_background(preset, polarity, rng):
    """float32 H x W x 3 RGB in 0..255."""
    if preset.background_colour is not None:
        colour = np.array(preset.background_colour, np.float32)
        return np.broadcast_to(colour, (preset.height, preset.width, 3)).copy()
    kind = preset.backgrounds[rng.integers(len(preset.backgrounds))]
    return BACKGROUND_MAKERS[kind](preset, polarity, rng)


# --- items -------------------------------------------------------------------------------------

def scale_item(item, side):
    """uint8 item resized to side x side."""
    item = np.asarray(item, dtype=np.uint8)
    shrinking = side < max(item.shape)
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(item, (side, side), interpolation=interpolation)


def tight_bounds(mask):
    """(x_min, y_min, x_max, y_max), max exclusive, of a boolean mask's True pixels; None if empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def box_overlaps(box, others):
    """IoU and intersection / smaller area between `box` and each of `others` (x0, y0, x1, y1)."""
    if len(others) == 0:
        return np.zeros(0), np.zeros(0)
    others = np.asarray(others, dtype=np.float64)[:, :4]
    width = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
    height = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
    inter = width * height
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / (area + areas - inter), inter / np.minimum(area, areas)


def _fits(box, placed, preset):
    iou, cover = box_overlaps(box, placed)
    return bool(np.all(iou <= preset.max_iou) and np.all(cover <= preset.max_cover))


def place_box(width, height, preset, placed, rng):
    """Top-left corner for a width x height box that respects the overlap limits, or None."""
    if width > preset.width or height > preset.height:
        return None
    for _ in range(preset.placement_tries):
        x = int(rng.integers(0, preset.width - width + 1))
        y = int(rng.integers(0, preset.height - height + 1))
        if _fits((x, y, x + width, y + height), placed, preset):
            return x, y
    return None


def _position(preset, side, bounds, placed, rng):
    """Canvas position of the item's tight box, or None when it cannot be placed."""
    x0, y0, x1, y1 = bounds
    if preset.centred:  # centre the whole scaled square, as the item sits in its 28x28 frame
        left, top = (preset.width - side) // 2, (preset.height - side) // 2
        if left + x0 < 0 or top + y0 < 0 or left + x1 > preset.width or top + y1 > preset.height:
            return None
        return left + x0, top + y0
    return place_box(x1 - x0, y1 - y0, preset, placed, rng)


def _item_colour(preset, polarity, rng):
    if preset.item_colour is not None:
        return np.array(preset.item_colour, np.float32)
    return _random_colour(rng, ITEM_RANGE[polarity])


def _composite(canvas, crop, x, y, colour):
    alpha = crop.astype(np.float32)[..., None] / 255.0
    region = canvas[y:y + crop.shape[0], x:x + crop.shape[1]]
    region[...] = region * (1.0 - alpha) + colour * alpha


def render_canvas(items, labels, preset=DEFAULT_PRESET, rng=None, return_masks=False):
    """Composite `items` (in order) on a fresh background.

    Returns (uint8 H x W x 3 RGB canvas, int64 boxes (k, 5) x_min,y_min,x_max,y_max,class), plus
    with `return_masks` a bool (k, H, W) array of each placed item's non-zero pixels. Items whose
    scaled mask is empty, or that find no place within the overlap limits, are dropped.
    """
    preset = get_preset(preset)
    rng = np.random.default_rng() if rng is None else rng
    polarity = preset.polarities[rng.integers(len(preset.polarities))]
    canvas = make_background(preset, polarity, rng)
    low, high = preset.side_range()
    boxes, masks = [], []
    for item, label in zip(items, labels):
        side = int(rng.integers(low, high + 1))
        scaled = scale_item(item, side)
        bounds = tight_bounds(scaled > 0)
        if bounds is None:
            continue
        corner = _position(preset, side, bounds, boxes, rng)
        if corner is None:
            continue
        x, y = corner
        crop = scaled[bounds[1]:bounds[3], bounds[0]:bounds[2]]
        _composite(canvas, crop, x, y, _item_colour(preset, polarity, rng))
        boxes.append((x, y, x + crop.shape[1], y + crop.shape[0], int(label)))
        if return_masks:
            mask = np.zeros((preset.height, preset.width), dtype=bool)
            mask[y:y + crop.shape[0], x:x + crop.shape[1]] = crop > 0
            masks.append(mask)
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    boxes = np.array(boxes, dtype=np.int64).reshape(-1, 5)
    if return_masks:
        return image, boxes, np.array(masks, dtype=bool).reshape(-1, preset.height, preset.width)
    return image, boxes


def sample_canvas(images, labels, preset=DEFAULT_PRESET, rng=None, return_masks=False):
    """Draw 1..N random items (with replacement) from `images` and render them."""
    preset = get_preset(preset)
    rng = np.random.default_rng() if rng is None else rng
    images, labels = np.asarray(images), np.asarray(labels)
    low, high = preset.items_per_canvas
    chosen = rng.integers(0, len(images), size=int(rng.integers(low, high + 1)))
    return render_canvas(images[chosen], labels[chosen], preset, rng, return_masks)


# --- drawing -----------------------------------------------------------------------------------

def draw_boxes(canvas_rgb, boxes, class_names=CLASS_NAMES):
    """A BGR copy of the canvas with each box and its class name drawn (for previews)."""
    frame = np.ascontiguousarray(canvas_rgb[..., ::-1])
    for x0, y0, x1, y1, cls in np.asarray(boxes).tolist():
        colour = _class_colour(cls)
        cv2.rectangle(frame, (x0, y0), (x1 - 1, y1 - 1), colour, 2)  # x1/y1 are exclusive
        name = class_names[cls] if 0 <= cls < len(class_names) else str(cls)
        draw_label(frame, name, x0, y0 - 2, colour)
    return frame


def _class_colour(cls):
    hue = (cls * 37) % 180  # distinct, stable hues per class
    hsv = np.array([[[hue, 200, 255]]], dtype=np.uint8)
    return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


# --- dataset writer ----------------------------------------------------------------------------

def _check_split(split, pair, count, num_classes):
    if not re.fullmatch(r"[A-Za-z0-9_-]+", split):
        raise CanvasError(f"split name {split!r} must be letters, digits, '_' or '-' (it names files)")
    if count < 0:
        raise CanvasError(f"split {split!r}: canvas count must be >= 0, got {count}")
    if pair is None:
        raise CanvasError(f"split {split!r}: {count} canvases requested but no items were given")
    images, labels = np.asarray(pair[0]), np.asarray(pair[1])
    if images.ndim != 3 or images.dtype != np.uint8:
        raise CanvasError(f"split {split!r}: items must be uint8 N x H x W, got {images.dtype} "
                          f"{images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise CanvasError(f"split {split!r}: {len(labels)} labels for {len(images)} items")
    if count and len(images) == 0:
        raise CanvasError(f"split {split!r}: {count} canvases requested from no items")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise CanvasError(f"split {split!r}: labels must lie in 0..{num_classes - 1}")
    return images, labels.astype(np.int64)


def _remove_stale_images(folder, split, count):
    """Drop canvases a previous, larger run left, so the folder matches the annotations, and
    temporaries of our own file names a killed run left (never other files of the folder)."""
    name = re.escape(split) + r"_(\d+)\.jpg"
    canvas, temporary = re.compile(name), re.compile(rf"\.{name}\..+")
    for path in folder.iterdir() if folder.is_dir() else ():
        match = canvas.fullmatch(path.name)
        if (match and int(match.group(1)) >= count) or temporary.fullmatch(path.name):
            path.unlink()


def _remove_own_temporaries(out_dir, splits):
    names = "|".join([re.escape(f"{split}.{kind}") for split in splits for kind in ("txt", "json")]
                     + [re.escape("dataset.json")])
    temporary = re.compile(rf"\.(?:{names})\..+")
    for path in out_dir.iterdir():
        if temporary.fullmatch(path.name) and path.is_file():
            path.unlink()


def _coco_categories(class_names):
    return [{"id": index, "name": name} for index, name in enumerate(class_names)]


def _coco_annotations(boxes, image_id, first_id):
    return [{"id": first_id + number, "image_id": image_id, "category_id": int(cls),
             "bbox": [int(x0), int(y0), int(x1 - x0), int(y1 - y0)],
             "area": int((x1 - x0) * (y1 - y0)), "iscrowd": 0}
            for number, (x0, y0, x1, y1, cls) in enumerate(boxes.tolist())]


def write_split(out_dir, split, images, labels, count, preset, seed, class_names, previews, progress):
    """Canvases, `<split>.txt`, `<split>.json` and previews of one split. Returns its box count."""
    out_dir = Path(out_dir)
    image_dir, preview_dir = out_dir / "images" / split, out_dir / "previews"
    for folder in (image_dir, preview_dir):
        _remove_stale_images(folder, split, count)
    entries = []
    coco = {"info": {"description": f"Fashion-MNIST detection canvases, split {split}",
                     "preset": preset.name, "seed": seed, "category_id_base": 0,
                     "box_convention": "bbox [x_min, y_min, width, height] in pixels"},
            "images": [], "annotations": [], "categories": _coco_categories(class_names)}
    for index in tqdm(range(count), desc=f"{split} canvases", unit="canvas", disable=not progress):
        canvas, boxes = sample_canvas(images, labels, preset, canvas_rng(seed, split, index))
        name = f"{split}_{index:06d}.jpg"
        relative = f"images/{split}/{name}"
        atomic_write_image(image_dir / name, np.ascontiguousarray(canvas[..., ::-1]), JPEG_QUALITY, "JPEG")  # BGR
        if index < previews:
            atomic_write_image(preview_dir / name, draw_boxes(canvas, boxes, class_names), JPEG_QUALITY, "JPEG")
        entries.append((relative, boxes))
        coco["images"].append({"id": index + 1, "file_name": relative,
                               "width": preset.width, "height": preset.height})
        coco["annotations"] += _coco_annotations(boxes, index + 1, len(coco["annotations"]) + 1)
    write_annotations(out_dir / f"{split}.txt", entries, num_classes=len(class_names))
    atomic_write_json(out_dir / f"{split}.json", coco)
    return len(coco["annotations"])


def write_detection_dataset(out_dir, splits, counts, preset=DEFAULT_PRESET, seed=0,
                            class_names=CLASS_NAMES, previews=8, progress=True):
    """Write `counts[split]` canvases per split from `splits[split] = (items, labels)`.

    Layout under out_dir: images/<split>/<split>_000000.jpg (JPEG q95), <split>.txt (keras-yolo3),
    <split>.json (COCO), previews/<split>_000000.jpg (first `previews` per split, boxes drawn),
    dataset.json (summary). Returns the summary dict.
    """
    preset = get_preset(preset)
    if int(seed) < 0:
        raise CanvasError(f"seed must be >= 0, got {seed}")
    class_names = [str(name) for name in class_names]
    checked = {split: _check_split(split, splits.get(split), int(count), len(class_names))
               for split, count in counts.items()}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_own_temporaries(out_dir, counts)
    boxes = {split: write_split(out_dir, split, *checked[split], int(counts[split]), preset, int(seed),
                                class_names, previews, progress)
             for split in counts}
    preset_settings = {key: list(value) if isinstance(value, tuple) else value
                       for key, value in asdict(preset).items()}  # as JSON will read it back
    summary = {"preset": preset_settings, "seed": int(seed), "width": preset.width,
               "height": preset.height, "class_names": class_names,
               "counts": {split: int(count) for split, count in counts.items()}, "boxes": boxes,
               "annotations": {split: f"{split}.txt" for split in counts},
               "coco": {split: f"{split}.json" for split in counts},
               "box_convention": "x_min,y_min,x_max,y_max,class; pixels; x_max/y_max exclusive",
               "category_id_base": 0}
    atomic_write_json(out_dir / "dataset.json", summary)
    return summary


def synthesize_fashion_mnist_canvases(out_dir, counts, preset=DEFAULT_PRESET, seed=0, data=None,
                                     val_fraction=0.1, max_items=None, canvas_size=None, progress=True):
    """`fmnist-tf detect-data`: training canvases from the training items, val canvases from the
    held-out validation items (the classifiers' split, same seed) and test canvases from the test split."""
    from fmnist_tf.data.fashion_mnist import load_split
    from fmnist_tf.data.prepare import split_train_val

    images, labels = load_split("train", data)
    train_items, val_items = split_train_val(images, labels, val_fraction, seed)
    splits = {"train": train_items, "val": val_items}
    if counts.get("test"):
        splits["test"] = load_split("test", data)
    counts = {split: count for split, count in counts.items() if count}
    width, height = canvas_size or (None, None)
    return write_detection_dataset(out_dir, splits, counts,
                                   get_preset(preset, width=width, height=height, max_items=max_items),
                                   seed=seed, progress=progress)


__all__ = ["synthesize_fashion_mnist_canvases", "PRESETS", "DEFAULT_PRESET", "CanvasPreset", "CanvasError", "get_preset", "canvas_rng",
           "render_canvas", "sample_canvas", "scale_item", "tight_bounds", "box_overlaps", "draw_boxes",
           "write_split", "write_detection_dataset"]

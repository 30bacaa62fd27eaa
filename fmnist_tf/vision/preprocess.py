"""Turn a real photo or scan of one item into the Fashion-MNIST look: light item on black, 28x28."""

from pathlib import Path

import cv2
import numpy as np

from fmnist_tf.errors import FmnistError


def read_image(path) -> np.ndarray:
    """Read PNG/JPEG/... as grey uint8; transparent pixels count as background."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise FmnistError(f"{path}: cannot read this file as an image")
    if image.size == 0:
        raise FmnistError(f"{path}: the image is empty")
    if image.ndim == 3 and image.shape[2] == 4:
        return to_grey(image)
    # IMREAD_UNCHANGED ignores EXIF orientation; this read applies it (phone photos stand upright)
    return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)


def to_grey(image) -> np.ndarray:
    if image.dtype != np.uint8:
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if image.ndim == 2:
        return image
    if image.shape[2] == 4:
        image = composite_on_white(image)
    return cv2.cvtColor(image[..., :3], cv2.COLOR_BGR2GRAY)


def composite_on_white(bgra) -> np.ndarray:
    """A uint8 BGRA cut-out laid onto white, as BGR."""
    alpha = bgra[..., 3:4].astype(np.float32) / 255.0
    return (bgra[..., :3] * alpha + 255.0 * (1 - alpha)).astype(np.uint8)


def border_pixels(grey):
    return np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])


def item_box(grey):
    """(x0, y0, x1, y1) of the item on an already dark background, or None when there is no item."""
    blurred = cv2.GaussianBlur(grey, (5, 5), 0)
    _, mask = cv2.threshold(blurred, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def to_fashion_mnist(grey, size=28, margin=0, name="image") -> np.ndarray:
    """Polarity from the border (Fashion-MNIST is light-on-black): an image darker on average than its
    border holds a dark item, which is inverted. Then background subtracted, contrast stretched to
    full brightness, tight crop, square pad, resize."""
    return to_fashion_mnist_with_geometry(grey, size=size, margin=margin, name=name)[0]


def to_fashion_mnist_with_geometry(grey, size=28, margin=0, name="image"):
    """`to_fashion_mnist`, plus where its output came from: (image, affine), `affine` being the 2x3
    map from output (model-input) pixel coordinates to `grey`'s pixel coordinates (see
    `fit_square_affine`)."""
    grey = np.asarray(grey, dtype=np.uint8)
    if grey.ndim != 2 or grey.size == 0:
        raise FmnistError(f"{name}: expected a non-empty grey image")
    if int(grey.max()) - int(grey.min()) < 8:
        raise FmnistError(f"{name}: the image is blank (no item to classify)")
    background = int(np.median(border_pixels(grey)))
    if grey.mean() < background:  # a darker item: make it light, whatever the background's own level
        grey, background = 255 - grey, 255 - background
    grey = cv2.subtract(grey, np.full_like(grey, background))  # background -> 0, as in the dataset
    peak = int(grey.max())
    if peak > 0:  # the dataset's items reach full brightness; a grey or coloured background takes some away
        grey = cv2.convertScaleAbs(grey, alpha=255.0 / peak)
    box = item_box(grey)
    if box is None:
        raise FmnistError(f"{name}: no item found")
    x0, y0, x1, y1 = box
    return (fit_square(grey[y0:y1, x0:x1], size, margin),
            fit_square_affine(y1 - y0, x1 - x0, size, margin, origin=(x0, y0)))


def fit_square(crop, size=28, margin=0) -> np.ndarray:
    """A light-on-black crop centred on a black square, resized to `size` with `margin` px of black."""
    side = max(crop.shape)
    square = np.zeros((side, side), np.uint8)
    top, left = (side - crop.shape[0]) // 2, (side - crop.shape[1]) // 2
    square[top:top + crop.shape[0], left:left + crop.shape[1]] = crop
    inner = size - 2 * margin
    interpolation = cv2.INTER_AREA if side > inner else cv2.INTER_LINEAR
    resized = cv2.resize(square, (inner, inner), interpolation=interpolation)
    return cv2.copyMakeBorder(resized, margin, margin, margin, margin, cv2.BORDER_CONSTANT, value=0)


def fit_square_affine(crop_height, crop_width, size=28, margin=0, origin=(0, 0)) -> np.ndarray:
    """The geometry of `fit_square`: a 2x3 float64 affine A with (x, y) = A @ (u, v, 1), from pixel
    (u, v) of its `size` x `size` output back to the image the crop was cut from, the crop's top-left
    pixel being at `origin` (x, y) there. OpenCV's convention (integer coordinates are pixel centres),
    so `cv2.warpAffine(map, A, (width, height))` lays a model-input map onto that image (boxes are then
    found on the laid map, which drops any part of the square outside the image)."""
    side = max(crop_height, crop_width)
    top, left = (side - crop_height) // 2, (side - crop_width) // 2
    scale = side / (size - 2 * margin)
    shift = scale * (0.5 - margin) - 0.5  # cv2.resize aligns pixel centres: (u + 0.5) * scale - 0.5
    return np.array([[scale, 0.0, shift - left + origin[0]],
                     [0.0, scale, shift - top + origin[1]]], dtype=np.float64)


def plain_resize(grey, size=28) -> np.ndarray:
    """How image folders' images become model inputs: the whole grey image, INTER_AREA-resized to
    `size` x `size` (no crop, no inversion)."""
    return cv2.resize(grey, (int(size), int(size)), interpolation=cv2.INTER_AREA)


def stretch_affine(height, width, size=28) -> np.ndarray:
    """`fit_square_affine` for `plain_resize` of a `height` x `width` image: pixel (u, v) of the model
    input back to image pixels."""
    scale_x, scale_y = width / size, height / size
    return np.array([[scale_x, 0.0, 0.5 * scale_x - 0.5],
                     [0.0, scale_y, 0.5 * scale_y - 0.5]], dtype=np.float64)


def load_as_fashion_mnist(path, size=28, margin=0) -> np.ndarray:
    return to_fashion_mnist(read_image(path), size=size, margin=margin, name=str(Path(path)))

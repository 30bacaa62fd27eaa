"""Find the items in a video frame and turn each into a Fashion-MNIST-style 28x28 crop.

Blur, Otsu threshold (polarity from the frame's border, not hard-coded), morphology, external
contours and size filters, as in the reference realtime script, but for every item in the frame.
The search runs on a downscaled copy (boxes barely change and it is ~4x cheaper); crops come from
the full-resolution frame, masked by the item's filled contour so a textured background drops out.
"""

from dataclasses import dataclass

import cv2
import numpy as np

from fmnist_tf.vision.preprocess import border_pixels, fit_square, plain_resize, to_grey


@dataclass(frozen=True)
class SegmentSettings:
    work_width: int = 320         # the contour search runs at this width
    min_area: float = 0.004       # item box area as a fraction of the frame
    max_area: float = 0.9
    max_items: int = 8            # the largest ones are kept
    min_contrast: int = 8         # grey levels an item reaches beyond the border's extreme
    size: int = 28
    margin: int = 1


@dataclass
class Segmentation:
    boxes: list            # (x0, y0, x1, y1) in frame pixels
    crops: np.ndarray      # uint8 [N, size, size], as the model's training images look
    light_background: bool


def whole_frame(frame, size=28) -> Segmentation:
    """The whole frame as one item, prepared as image folders' models were trained (see
    `fmnist_tf.data.folders.folder_image`): grey, plainly resized to `size` x `size`."""
    height, width = frame.shape[:2]
    return Segmentation([(0, 0, width, height)], plain_resize(to_grey(frame), size)[np.newaxis],
                        light_background=False)


def _ellipse(side):
    side = max(3, side) | 1
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))


def item_threshold(blurred, min_contrast):
    """Grey level between background and items, and whether the background is light.

    Otsu alone splits a textured background into two halves when the items are small; so the
    threshold is also kept `min_contrast` grey levels beyond the background's extreme on the
    frame's border (its 1st or 99th percentile), which follows a tablecloth's darkest blotches
    without giving up faint garments the way a median-plus-spread margin does."""
    otsu, _ = cv2.threshold(blurred, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    border = border_pixels(blurred)
    light_background = float(np.median(border)) > otsu
    if light_background:
        return min(otsu, float(np.percentile(border, 1)) - min_contrast), True
    return max(otsu, float(np.percentile(border, 99)) + min_contrast), False


def item_mask(small_grey, min_contrast):
    """Binary mask (255 = item) of a downscaled grey frame, each pixel's contrast against the
    threshold (item side positive), and whether the background is light."""
    blurred = cv2.GaussianBlur(small_grey, (5, 5), 0)
    threshold, light_background = item_threshold(blurred, min_contrast)
    mode = cv2.THRESH_BINARY_INV if light_background else cv2.THRESH_BINARY
    _, mask = cv2.threshold(blurred, threshold, 255, mode)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3)))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, _ellipse(small_grey.shape[1] // 64))
    contrast = (threshold - blurred.astype(np.float32)) * (1 if light_background else -1)
    return mask, contrast, light_background


def item_regions(mask, contrast, settings: SegmentSettings):
    """One region per item: the mask dilated so an item's separate parts (a sandal's straps) join,
    kept when its area is within the size limits. Ordered by contrast mass (how far its pixels are
    from the background, summed), so a dark garment outranks a larger blotch of tablecloth."""
    grouped = cv2.dilate(mask, _ellipse(mask.shape[1] // 32))
    contours, _ = cv2.findContours(grouped, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    frame_area = mask.shape[0] * mask.shape[1]
    scored = []
    for contour in contours:
        if settings.min_area * frame_area <= cv2.contourArea(contour) <= settings.max_area * frame_area:
            x, y, w, h = cv2.boundingRect(contour)
            scored.append((float(contrast[y:y + h, x:x + w][mask[y:y + h, x:x + w] > 0].sum()), contour))
    scored.sort(key=lambda pair: pair[0], reverse=True)
    return [contour for _, contour in scored[:settings.max_items]]


def fashion_mnist_crop(grey, box, inside, light_background, settings: SegmentSettings):
    """Crop at full resolution, make it light-on-black, zero the background, stretch, fit 28x28.
    `inside` is the item's filled contour over the box (True = item)."""
    x0, y0, x1, y1 = box
    crop = grey[y0:y1, x0:x1]
    if light_background:
        crop = 255 - crop
    outside = crop[~inside]
    background = int(np.median(outside)) if outside.size else int(crop.min())
    crop = np.where(inside, cv2.subtract(crop, background), 0).astype(np.uint8)
    peak = int(crop.max())
    if peak > 0:  # the dataset's items reach full brightness; video lighting rarely does
        crop = cv2.convertScaleAbs(crop, alpha=255.0 / peak)
    return fit_square(crop, settings.size, settings.margin)


def segment_items(frame, settings: SegmentSettings = SegmentSettings()) -> Segmentation:
    """All items of a BGR or grey frame: boxes in frame pixels and their 28x28 crops."""
    grey = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    height, width = grey.shape
    scale = min(1.0, settings.work_width / width)
    small = cv2.resize(grey, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA) \
        if scale < 1.0 else grey
    mask, contrast, light_background = item_mask(small, settings.min_contrast)
    boxes, crops = [], []
    for region in item_regions(mask, contrast, settings):
        x, y, w, h = cv2.boundingRect(region)
        filled = np.zeros((h, w), np.uint8)
        cv2.drawContours(filled, [region], -1, 255, cv2.FILLED, offset=(-x, -y))
        # the box is tight around the item's own pixels, not the dilated region
        tx, ty, tw, th = cv2.boundingRect(cv2.bitwise_and(mask[y:y + h, x:x + w], filled))
        if tw == 0 or th == 0:
            continue
        box = (int((x + tx) / scale), int((y + ty) / scale),
               min(width, int(np.ceil((x + tx + tw) / scale))), min(height, int(np.ceil((y + ty + th) / scale))))
        inside = cv2.resize(filled[ty:ty + th, tx:tx + tw], (box[2] - box[0], box[3] - box[1]),
                            interpolation=cv2.INTER_NEAREST) > 0
        boxes.append(box)
        crops.append(fashion_mnist_crop(grey, box, inside, light_background, settings))
    crops = np.stack(crops) if crops else np.zeros((0, settings.size, settings.size), np.uint8)
    return Segmentation(boxes, crops, light_background)

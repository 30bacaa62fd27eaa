"""Boxes from class activation maps, and laying model-input maps onto image pixels.

Numpy and OpenCV only (the realtime CLI imports this without loading TensorFlow). A box is
(x0, y0, x1, y1) in pixels with x1 and y1 EXCLUSIVE, like a numpy slice `map[y0:y1, x0:x1]`.
"""

import cv2
import numpy as np

from fmnist_tf.errors import FmnistError

DEFAULT_THRESHOLD = 0.2  # the CAM paper's box recipe: pixels above 20 % of the map's maximum


def check_threshold(threshold):
    threshold = float(threshold)
    if not 0.0 <= threshold <= 1.0:
        raise FmnistError(f"the CAM box threshold must lie in [0, 1] (a fraction of the map's maximum), "
                          f"got {threshold}")
    return threshold


def cam_box(cam, threshold=DEFAULT_THRESHOLD):
    """The CAM paper's box: keep pixels >= threshold * max, take the largest 8-connected component,
    return its bounding box (x0, y0, x1, y1), x1/y1 exclusive; None for an all-zero (or non-finite) map."""
    threshold = check_threshold(threshold)
    cam = np.nan_to_num(np.asarray(cam, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if cam.ndim != 2:
        raise ValueError(f"cam_box expects a 2-D map, got shape {cam.shape}")
    peak = float(cam.max()) if cam.size else 0.0
    if not peak > 0.0:
        return None
    mask = (cam >= threshold * peak).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    largest = 1 + int(np.argmax(stats[1:count, cv2.CC_STAT_AREA]))  # label 0 is the background
    x, y, width, height = (int(v) for v in stats[largest, :4])
    return x, y, x + width, y + height


def warp_cam(cam, affine, shape):
    """A model-input map laid onto an image of `shape` (height, width) through `affine` (model-input
    -> image pixel coordinates): bilinear, zero outside the model input's footprint."""
    height, width = shape[:2]
    return cv2.warpAffine(np.asarray(cam, dtype=np.float32), np.asarray(affine, dtype=np.float64),
                          (int(width), int(height)), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)


def shift_box(box, dx, dy):
    return None if box is None else (box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy)

"""Drawing CAMs: a JET heat map blended over the image, the CAM box, the side-by-side PNG and the grid."""

import math

import cv2
import numpy as np


HEAT_WEIGHT, IMAGE_WEIGHT = 0.3, 0.5   # the reference's blend: 0.3 heat map + 0.5 frame
BOX_COLOUR = (0, 255, 255)              # BGR yellow: the CAM box
PANEL_MIN_HEIGHT, PANEL_MAX_HEIGHT, PANEL_MAX_WIDTH = 256, 800, 1200


def heat_colours(cam) -> np.ndarray:
    """A [0, 1] map as a BGR JET image (blue = 0, red = 1)."""
    levels = np.clip(np.nan_to_num(np.asarray(cam, np.float32)) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return cv2.applyColorMap(levels, cv2.COLORMAP_JET)


def as_bgr(image) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image[..., :3].copy()


def blend_heat(image, cam, heat_weight=HEAT_WEIGHT, image_weight=IMAGE_WEIGHT) -> np.ndarray:
    """heat_weight * JET(cam) + image_weight * image, as BGR uint8 of the image's size."""
    image = as_bgr(image)
    return cv2.addWeighted(heat_colours(cam), heat_weight, image, image_weight, 0.0)


def draw_box(image, box, colour=BOX_COLOUR, thickness=2):
    """Draw an exclusive-end box in place (the rectangle's last pixels are x1 - 1, y1 - 1)."""
    if box is not None:
        x0, y0, x1, y1 = box
        cv2.rectangle(image, (int(x0), int(y0)), (max(int(x0), int(x1) - 1), max(int(y0), int(y1) - 1)),
                      colour, thickness)
    return image


def _display_scale(height, width):
    """Small images are enlarged (whole factors keep pixels square), large ones shrunk; a panel never
    grows past PANEL_MAX_WIDTH, so a 3x2000 strip stays a sane PNG."""
    scale = float(math.ceil(PANEL_MIN_HEIGHT / height)) if height < PANEL_MIN_HEIGHT else min(1.0, PANEL_MAX_HEIGHT / height)
    return min(scale, PANEL_MAX_WIDTH / width)


def side_by_side(image, cam, box, title) -> np.ndarray:
    """image | heat-map overlay | image with the CAM box, under a title strip. `cam` and `box` are in
    the image's own pixels; small images are enlarged (nearest) and large ones shrunk for viewing."""
    image = as_bgr(image)
    overlay = blend_heat(image, cam)
    scale = _display_scale(*image.shape[:2])
    if scale != 1.0:
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        interpolation = cv2.INTER_NEAREST if scale > 1 else cv2.INTER_AREA
        image, overlay = (cv2.resize(panel, size, interpolation=interpolation) for panel in (image, overlay))
    boxed = image.copy()
    shown = None if box is None else tuple(round(v * scale) for v in box)
    thickness = max(2, image.shape[0] // 200)
    draw_box(boxed, shown, thickness=thickness)
    draw_box(overlay, shown, thickness=thickness)
    gap = np.full((image.shape[0], 8, 3), 255, np.uint8)
    panels = np.hstack([image, gap, overlay, gap, boxed])
    font_scale = max(0.5, panels.shape[0] / 500)
    (_, text_height), baseline = cv2.getTextSize(title, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
    strip = np.full((text_height + baseline + 16, panels.shape[1], 3), 255, np.uint8)
    cv2.putText(strip, title, (8, text_height + 8), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0),
                max(1, round(font_scale)), cv2.LINE_AA)
    return np.vstack([strip, panels])


def save_cam_grid(images, cams, boxes, titles, path, columns=4):
    """A grid of small images with their CAM overlays and boxes (model-input pixels), one title each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from fmnist_tf.fileio import atomic_save_figure

    count = len(images)
    columns = max(1, min(columns, count))
    rows = max(1, math.ceil(count / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 2.4, rows * 2.7), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, cam, box, title in zip(axes.flat, images, cams, boxes, titles):
        ax.imshow(cv2.cvtColor(blend_heat(image, cam), cv2.COLOR_BGR2RGB), interpolation="nearest")
        if box is not None:
            x0, y0, x1, y1 = box
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="yellow",
                                   linewidth=1.5))
        ax.set_title(title, fontsize=8)
    fig.suptitle("Class activation maps of the first test images (true / predicted)")
    fig.tight_layout()
    atomic_save_figure(fig, path)
    plt.close(fig)

"""Videos of known Fashion-MNIST items "photographed": enlarged, dark garments on white or textured
light backgrounds, moving between frames, optionally JPEG-compressed, blurred and noisy.
Tests and benchmarks use them because the true label of every frame is known."""

from dataclasses import dataclass

import cv2
import numpy as np

from fmnist_tf.fileio import atomic_output


@dataclass(frozen=True)
class PhotoStyle:
    item_height: tuple = (0.45, 0.7)   # of the frame height
    jpeg_quality: int | None = None    # e.g. 60: compress and decode every frame
    blur_sigma: float = 0.0
    noise_sigma: float = 0.0


def textured_background(height, width, rng):
    """Light, low-frequency blotches plus fine grain: a tablecloth, not a flat sheet."""
    coarse = rng.uniform(175, 240, size=(height // 16 + 1, width // 16 + 1)).astype(np.float32)
    smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    grain = rng.normal(0, 6, size=(height, width)).astype(np.float32)
    return np.clip(smooth + grain, 150, 255)


def background(kind, height, width, rng):
    grey = np.full((height, width), 250, np.float32) if kind == "white" else textured_background(height, width, rng)
    return np.repeat(grey[..., None], 3, axis=2)


def place_item(canvas, item, top, left, height, colour):
    """Composite an enlarged item (its brightness as opacity) in `colour` onto the canvas."""
    alpha = cv2.resize(item, (height, height), interpolation=cv2.INTER_CUBIC).astype(np.float32) / 255.0
    alpha = np.clip(alpha, 0, 1)[..., None]
    region = canvas[top:top + height, left:left + height]
    canvas[top:top + height, left:left + height] = region * (1 - alpha) + np.asarray(colour, np.float32) * alpha


def apply_style(frame, style: PhotoStyle, rng):
    if style.blur_sigma > 0:
        frame = cv2.GaussianBlur(frame, (0, 0), style.blur_sigma)
    if style.noise_sigma > 0:
        frame = np.clip(frame + rng.normal(0, style.noise_sigma, frame.shape), 0, 255)
    frame = frame.astype(np.uint8)
    if style.jpeg_quality:
        _, encoded = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, style.jpeg_quality])
        frame = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    return frame


def item_frames(images, labels, *, size=(640, 480), frames_per_item=3, style=PhotoStyle(), seed=0):
    """Yields (frame, label, box): each item on alternating white/textured backgrounds, drifting
    a few pixels per frame."""
    rng = np.random.default_rng(seed)
    width, height = size
    for index, (item, label) in enumerate(zip(images, labels)):
        side = int(height * rng.uniform(*style.item_height))
        top, left = int(rng.integers(0, height - side - 8)), int(rng.integers(0, width - side - 8 * frames_per_item))
        colour = rng.uniform(20, 110, size=3)
        kind = "white" if index % 2 == 0 else "textured"
        canvas = background(kind, height, width, rng)
        for step in range(frames_per_item):
            frame = canvas.copy()
            place_item(frame, item, top + step % 2 * 4, left + 8 * step, side, colour)
            yield apply_style(frame, style, rng), int(label), (left + 8 * step, top + step % 2 * 4, side)


def write_item_video(path, images, labels, *, size=(640, 480), fps=30.0, frames_per_item=3,
                     style=PhotoStyle(), seed=0):
    """Writes an mp4 (atomically) and returns the true label of every frame."""
    truth = []
    with atomic_output(path, suffix=".mp4") as temporary:
        writer = cv2.VideoWriter(str(temporary), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        try:
            for frame, label, _ in item_frames(images, labels, size=size, frames_per_item=frames_per_item,
                                               style=style, seed=seed):
                writer.write(frame)
                truth.append(label)
        finally:
            writer.release()
    return truth

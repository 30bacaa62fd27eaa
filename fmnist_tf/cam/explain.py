"""`fmnist-tf cam`: explain a model's prediction on image files; and the evaluate report's CAM grid.

Each image is prepared exactly as `predict` prepares it (`read_image` + `to_fashion_mnist`, or a plain
resize for a model trained on an image folder); the CAM
is computed on that model input and then warped back onto the ORIGINAL image through the crop's
geometry, so `<stem>_cam.png` shows the user's own pixels and `<stem>_cam.json` gives the CAM box
in them (and in model-input pixels).
"""

from pathlib import Path

import cv2
import numpy as np

from fmnist_tf.cam.boxes import DEFAULT_THRESHOLD, cam_box, check_threshold, warp_cam
from fmnist_tf.cam.explainer import CamExplainer, open_explainer
from fmnist_tf.cam.render import save_cam_grid, side_by_side
from fmnist_tf.fileio import atomic_write_image, atomic_write_json
from fmnist_tf.data.sources import prepare_with_geometry
from fmnist_tf.vision.preprocess import composite_on_white, read_image, to_grey

GRID_IMAGES = 16


def read_display_image(path, grey) -> np.ndarray:
    """The file as BGR for showing, in the same pixels as `read_image`'s grey version: colour when the
    file has it (transparent pixels onto white, as `read_image` does), else the grey image."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is not None and image.ndim == 3 and image.dtype == np.uint8:
        if image.shape[2] == 4:
            image = composite_on_white(image)
        else:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)  # applies EXIF orientation like read_image
        if image is not None and image.shape[:2] == grey.shape:
            return image
    return cv2.cvtColor(to_grey(grey), cv2.COLOR_GRAY2BGR)


def _unique_stem(path, used):
    stem, number = Path(path).stem or "image", 1
    candidate = stem
    while candidate in used:
        candidate, number = f"{stem}-{number}", number + 1
    used.add(candidate)
    return candidate


def explain_images(run_or_model, image_paths, out_dir, threshold=DEFAULT_THRESHOLD, layer=None):
    """Explain the predicted class of each image: writes `<stem>_cam.png` (image | heat map overlay |
    image with the CAM box) and `<stem>_cam.json` into `out_dir` and returns the JSON dicts: path,
    class_id, class, probability, method, layer, threshold, box [x0, y0, x1, y1] in the original
    image's pixels and input_box in model-input pixels (x1/y1 exclusive; null for an all-zero map),
    png and json (the written files). `run_or_model`: a run directory or .keras file only."""
    threshold = check_threshold(threshold)
    explainer = run_or_model if isinstance(run_or_model, CamExplainer) else open_explainer(run_or_model, layer)
    size = explainer.input_size
    prepared = []
    for path in image_paths:
        grey = read_image(path)
        image, affine = prepare_with_geometry(grey, explainer.image_format, size=size, name=str(Path(path)))
        prepared.append((Path(path), grey, image, affine))
    if not prepared:
        return []
    batch = np.stack([image for _, _, image, _ in prepared]).astype(np.float32)[..., np.newaxis] / 255.0
    probabilities, maps = explainer(batch)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results, used = [], set()
    for (path, grey, _, affine), probs, cam in zip(prepared, probabilities, maps):
        class_id = int(np.argmax(probs))
        input_box = cam_box(cam, threshold)
        # the box is found on the map as laid on the image: the square's padding may lie outside it
        heat = warp_cam(cam, affine, grey.shape)
        box = cam_box(heat, threshold)
        name = explainer.class_names[class_id]
        stem = _unique_stem(path, used)
        png, json_path = out_dir / f"{stem}_cam.png", out_dir / f"{stem}_cam.json"
        title = f"{name} {probs[class_id]:.2f}  ({explainer.method}, {explainer.layer_name})"
        atomic_write_image(png, side_by_side(read_display_image(path, grey), heat, box, title), what="PNG")
        result = {"path": str(path), "class_id": class_id, "class": name, "probability": float(probs[class_id]),
                  "method": explainer.method, "layer": explainer.layer_name, "threshold": threshold,
                  "box": None if box is None else list(box),
                  "input_box": None if input_box is None else list(input_box),
                  "image_size": [int(grey.shape[1]), int(grey.shape[0])], "input_size": size,
                  "png": str(png), "json": str(json_path)}
        atomic_write_json(json_path, result)
        results.append(result)
    return results


def cam_grid(model_or_explainer, images, labels, path, class_names=None, count=GRID_IMAGES,
             threshold=DEFAULT_THRESHOLD):
    """Save the evaluate report's grid: the first `count` of `images` (uint8 [N, 28, 28]) with their
    CAM overlays and CAM boxes, titled true / predicted (probability). Returns the explainer's method."""
    explainer = model_or_explainer if isinstance(model_or_explainer, CamExplainer) \
        else CamExplainer(model_or_explainer, class_names=class_names)
    images = np.asarray(images[:count])
    labels = np.asarray(labels[:count])
    probabilities, maps = explainer(images.astype(np.float32)[..., np.newaxis] / 255.0)
    names = explainer.class_names
    predicted = probabilities.argmax(axis=1)
    titles = [f"{names[int(t)]} / {names[int(p)]} ({probs[p]:.2f})"
              for t, p, probs in zip(labels, predicted, probabilities)]
    boxes = [cam_box(cam, threshold) for cam in maps]
    save_cam_grid(images, maps, boxes, titles, path)
    return explainer.method

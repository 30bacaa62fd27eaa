"""One entry point for labelled images, whatever `--data` points at: Fashion-MNIST (IDX, CSV, the
Keras cache or a download) or an image folder (class-per-folder tree or the Tiny ImageNet layout).

`image_format` says how new images must be prepared to look like the training data: "fashion-mnist"
(a photo is segmented, inverted to light-on-black and fitted into 28x28) or "folder" (a plain resize
of the whole image, as the folder's own images were).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmnist_tf.data.fashion_mnist import CLASS_NAMES, load_split, resolve_source
from fmnist_tf.data.folders import describe_folder, folder_image, folder_layout, load_folder_split

FASHION_MNIST, FOLDER = "fashion-mnist", "folder"


@dataclass(frozen=True)
class LabelledImages:
    images: np.ndarray  # uint8 [N, 28, 28]
    labels: np.ndarray  # int32 [N], indexing class_names
    class_names: tuple
    image_format: str


def image_folder(data) -> Path | None:
    """The image folder `data` (or $FMNIST_DATA_DIR) names, or None for Fashion-MNIST sources."""
    source = resolve_source(data)
    if source is not None and source.is_dir() and folder_layout(source) is not None:
        return source
    return None


def load_labelled_split(split, data=None) -> LabelledImages:
    folder = image_folder(data)
    if folder is not None:
        loaded = load_folder_split(folder, split)
        return LabelledImages(loaded.images, loaded.labels, tuple(loaded.class_names), FOLDER)
    images, labels = load_split(split, data)
    return LabelledImages(images, labels, CLASS_NAMES, FASHION_MNIST)


def describe_source(data=None) -> dict:
    """What dataset.json records about the data: where it came from and, for folders, its layout."""
    folder = image_folder(data)
    if folder is not None:
        return {"source": str(folder.resolve()), "image_format": FOLDER, "folder": describe_folder(folder)}
    source = resolve_source(data)
    return {"source": str(source.resolve()) if source else "keras download", "image_format": FASHION_MNIST}


def prepare_with_geometry(grey, image_format, size=28, name="image"):
    """(uint8 [size, size] model input, the 2x3 affine from its pixels back to `grey`'s) for a grey
    image, prepared as `image_loader(image_format)` prepares files (for laying CAMs on the image)."""
    from fmnist_tf.vision.preprocess import plain_resize, stretch_affine, to_fashion_mnist_with_geometry

    if image_format == FOLDER:
        return plain_resize(grey, size), stretch_affine(*grey.shape[:2], size)
    return to_fashion_mnist_with_geometry(grey, size=size, name=name)


def image_loader(image_format):
    """path -> uint8 [size, size] image prepared like the training data of that format."""
    if image_format == FOLDER:
        return folder_image
    from fmnist_tf.vision.preprocess import load_as_fashion_mnist

    return load_as_fashion_mnist

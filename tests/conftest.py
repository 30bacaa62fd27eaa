"""Tiny generated Fashion-MNIST stand-ins: unit tests never need the real files."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from fmnist_tf.data.fashion_mnist import write_idx_dataset  # noqa: E402


def synthetic_items(count, seed):
    """28x28 uint8 images whose class (0-9) sets a bright block's position and size, plus noise:
    learnable in a few epochs by a tiny CNN, so tests can check that training really trains."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 10
    rng.shuffle(labels)
    images = rng.integers(0, 40, size=(count, 28, 28)).astype(np.uint8)
    for image, label in zip(images, labels):
        row, col = divmod(int(label), 5)
        top, left = 3 + row * 12 + rng.integers(-1, 2), 1 + col * 5 + rng.integers(0, 2)
        image[top:top + 9, left:left + 4 + label % 3] = rng.integers(180, 256)
    return images, labels.astype(np.uint8)


def blob_items(count, seed, min_value=1):
    """28x28 uint8 detection items: an irregular block of random pixels (>= min_value) on black,
    one corner missing so a box must still reach the blob's edges."""
    rng = np.random.default_rng(seed)
    items = np.zeros((count, 28, 28), dtype=np.uint8)
    for item in items:
        top, left = rng.integers(0, 8, size=2)
        height, width = rng.integers(8, 20, size=2)
        item[top:top + height, left:left + width] = rng.integers(min_value, 256, size=(height, width))
        item[top, left] = 0
    return items, (np.arange(count) % 10).astype(np.uint8)


def run_cli(args, capsys):
    """`fmnist-tf ARGS` in-process: (exit code, stdout, stderr)."""
    from fmnist_tf.cli import main

    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A folder in the official IDX layout (with MD5SUMS): 300 train and 100 test images."""
    folder = tmp_path_factory.mktemp("tiny-fmnist")
    return write_idx_dataset(folder, synthetic_items(300, seed=1), synthetic_items(100, seed=2))


def write_item_png(path, image, colour=False):
    """A Fashion-MNIST-sized item saved 2x larger, as a user's own photo would be."""
    import cv2

    big = cv2.resize(image, (56, 56), interpolation=cv2.INTER_NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(big, cv2.COLOR_GRAY2BGR) if colour else big)
    return path


def write_class_tree(root, class_names=("boots", "coats", "shirts"), per_class=16, seed=3, suffix=".png"):
    """root/<class>/<n>.png: three learnable classes (synthetic_items' classes 0, 1, 2)."""
    images, labels = synthetic_items(per_class * 10, seed=seed)
    for index, name in enumerate(class_names):
        for number, image in enumerate(images[labels == index][:per_class]):
            write_item_png(root / name / f"{number}{suffix}", image, colour=number % 2 == 0)
    return root


TINY_WNIDS = {"n01443537": "goldfish, Carassius auratus", "n01629819": "European fire salamander",
              "n02124075": "Egyptian cat"}


def write_tiny_imagenet(root, per_class=16, val_per_class=4, seed=4):
    """The Tiny ImageNet layout: train/<wnid>/images, val/images + val_annotations.txt, words.txt."""
    images, labels = synthetic_items((per_class + val_per_class) * 10, seed=seed)
    (root / "val" / "images").mkdir(parents=True)
    annotations = []
    for index, wnid in enumerate(TINY_WNIDS):
        mine = images[labels == index]
        for number, image in enumerate(mine[:per_class]):
            write_item_png(root / "train" / wnid / "images" / f"{wnid}_{number}.JPEG", image, colour=True)
        for number, image in enumerate(mine[per_class:per_class + val_per_class]):
            name = f"val_{index * val_per_class + number}.JPEG"
            write_item_png(root / "val" / "images" / name, image, colour=True)
            annotations.append(f"{name}\t{wnid}\t0\t0\t27\t27")
    (root / "val" / "val_annotations.txt").write_text("\n".join(annotations) + "\n")
    (root / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    words = {**TINY_WNIDS, "n09999999": "not in this dataset"}
    (root / "words.txt").write_text("".join(f"{wnid}\t{name}\n" for wnid, name in words.items()))
    return root

"""Datasets from a user's image folders, so every classifier can train on them (`--data PATH`).

Three layouts are recognised (`folder_layout`):

- "tiny-imagenet": ROOT/train/<wnid>/images/*, ROOT/val/images/* labelled by
  ROOT/val/val_annotations.txt (`file<TAB>wnid<TAB>x<TAB>y<TAB>w<TAB>h`), optional ROOT/words.txt
  (`wnid<TAB>name, synonym, ...`) for the class names. "test" is the val folder, read in place.
- "split-tree": ROOT/train/<class>/* plus ROOT/test/<class>/* (else ROOT/val/<class>/*).
- "class-tree": ROOT/<class>/* (like keras.utils.image_dataset_from_directory), split here into a
  deterministic, stratified 80/20 train/test split (see `class_tree_split`).

Images are read where they lie (never moved, copied or written), as grey uint8, resized to
size x size (`folder_image`). Class ids are the folder names (wnids), sorted by code point; labels
index into them. Only the direct children of a class folder are read (no recursion); names starting
with "." and __MACOSX folders are skipped, and so are files without an image suffix.
"""

import os
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from fmnist_tf.errors import DataError, FmnistError
from fmnist_tf.vision.preprocess import plain_resize, read_image

# what cv2.imread decodes (no .gif: OpenCV builds commonly lack a GIF reader); compared lower-case
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
SPLITS = ("train", "test")
TEST_FRACTION = 0.2
SPLIT_SEED = 0
PROGRESS_THRESHOLD = 2000  # show a progress bar when reading more images than this

TINY_ANNOTATIONS = "val/val_annotations.txt"
_EXPECTED = ("expected class folders (ROOT/<class>/*.png|.jpg|...), ROOT/train/<class>/ with "
             "ROOT/test/<class>/ (or ROOT/val/<class>/), or the Tiny ImageNet layout "
             "(ROOT/train/<wnid>/images/, ROOT/val/val_annotations.txt)")


class FolderSplit(NamedTuple):
    images: np.ndarray          # uint8 [N, size, size]
    labels: np.ndarray          # int32 [N], indices into class_ids
    class_names: tuple          # human names, one per class id
    class_ids: tuple            # folder names (wnids for Tiny ImageNet), sorted


class _Listing(NamedTuple):
    """One split before decoding: image paths, their labels, and the class table."""
    paths: list
    labels: list
    class_ids: tuple
    class_names: tuple


# ---------------------------------------------------------------- scanning (no decoding)

def _skipped(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def is_image_file(name) -> bool:
    name = os.fspath(name)
    return not _skipped(os.path.basename(name)) and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _sorted_entries(folder: Path, keep) -> list:
    """Sorted names of the entries of `folder` that `keep(entry)` accepts ([] when it is not a folder)."""
    try:
        with os.scandir(folder) as entries:
            return sorted(e.name for e in entries if keep(e))
    except (NotADirectoryError, FileNotFoundError):
        return []
    except OSError as exc:
        raise DataError(f"{folder}: cannot list this folder ({exc.strerror})") from exc


def _subfolders(folder: Path) -> list:
    """Sorted names of the visible subfolders of `folder`."""
    return _sorted_entries(folder, lambda e: not _skipped(e.name) and e.is_dir())


def _image_names(folder: Path) -> list:
    """Sorted names of the image files directly inside `folder`."""
    return _sorted_entries(folder, lambda e: is_image_file(e.name) and e.is_file())


def _has_image(folder: Path) -> bool:
    """Whether `folder` directly holds an image file (stops at the first one)."""
    try:
        with os.scandir(folder) as entries:
            return any(is_image_file(e.name) and e.is_file() for e in entries)
    except OSError:
        return False


def _class_tree_folder(folder: Path) -> bool:
    """A folder whose visible subfolders are classes: at least one holds images directly."""
    return any(_has_image(folder / name) for name in _subfolders(folder))


def _split_tree_test(root: Path):
    """The split-tree's test folder name: "test", else "val", else None."""
    return next((name for name in ("test", "val") if _class_tree_folder(root / name)), None)


def folder_layout(root) -> str | None:
    """"tiny-imagenet", "split-tree", "class-tree", or None (not an image-folder dataset, e.g. a
    Fashion-MNIST IDX folder or a missing path). Cheap: lists folders, reads no image."""
    root = Path(root).expanduser()
    if not root.is_dir():
        return None
    train = root / "train"
    if (root / TINY_ANNOTATIONS).is_file() and any((train / wnid / "images").is_dir()
                                                    for wnid in _subfolders(train)):
        return "tiny-imagenet"
    if _class_tree_folder(train) and _split_tree_test(root) is not None:
        return "split-tree"
    if _class_tree_folder(root):
        return "class-tree"
    return None


def _check_root(root) -> tuple:
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"{root}: no such folder; --data expects a folder of images: {_EXPECTED}")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; --data expects a folder of images: {_EXPECTED}")
    layout = folder_layout(root)
    if layout is None:
        if _class_tree_folder(root / "train"):
            raise DataError(f"{root}: has train/<class>/ folders but no test/<class>/ or val/<class>/ "
                            f"folders; add a test split, or pass {root / 'train'} to split it 80/20")
        if any((root / "train" / name / "images").is_dir() for name in _subfolders(root / "train")):
            raise DataError(f"{root / TINY_ANNOTATIONS}: not found; a Tiny ImageNet folder needs it "
                            f"to label val/images/")
        raise DataError(f"{root}: no images found; {_EXPECTED}")
    return root, layout


def _scan_classes(parent: Path, names, images_subfolder=None) -> dict:
    """{class name: sorted image paths} for class folders parent/<name>[/images_subfolder]; an empty
    class folder is an error (its class could never be predicted)."""
    classes = {}
    for name in names:
        folder = parent / name / images_subfolder if images_subfolder else parent / name
        if images_subfolder and not folder.is_dir():
            raise DataError(f"{folder}: folder not found; Tiny ImageNet keeps each class's training "
                            f"images in train/<wnid>/images/ (remove {parent / name} if it is no class)")
        files = _image_names(folder)
        if not files:
            raise DataError(f"{folder}: class folder has no images ({' '.join(IMAGE_SUFFIXES)}); "
                            f"add images or remove the folder")
        classes[name] = [folder / file for file in files]
    return classes


def _need_two_classes(root: Path, class_ids):
    if len(class_ids) < 2:
        found = f"only class {class_ids[0]!r}" if class_ids else "no class folders"
        raise DataError(f"{root}: found {found}; a classifier needs at least 2 class folders of images")


def _flatten(classes: dict, class_ids) -> tuple:
    index = {name: i for i, name in enumerate(class_ids)}
    paths, labels = [], []
    for name, files in classes.items():
        paths += files
        labels += [index[name]] * len(files)
    return paths, labels


# ---------------------------------------------------------------- Tiny ImageNet

def tiny_imagenet_names(root, wnids) -> tuple:
    """Each wnid's first synonym from ROOT/words.txt (`n01443537<TAB>goldfish, Carassius auratus`
    -> "goldfish"), or the wnid itself when words.txt is missing or does not name it."""
    words = Path(root) / "words.txt"
    wanted, names = set(wnids), {}
    if words.is_file():
        try:
            with open(words, encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    wnid, _, text = line.rstrip("\r\n").partition("\t")
                    if wnid in wanted and wnid not in names:
                        first = text.split(",")[0].strip()
                        if first:
                            names[wnid] = first
        except OSError as exc:
            raise DataError(f"{words}: cannot read ({exc.strerror})") from exc
    return tuple(names.get(wnid, wnid) for wnid in wnids)


def read_val_annotations(root, class_ids) -> list:
    """[(image path, wnid)] from ROOT/val/val_annotations.txt, in file order. Lines are
    `file<TAB>wnid<TAB>x<TAB>y<TAB>w<TAB>h` (the box is checked, then ignored); blank lines are
    skipped. A malformed line, an unknown wnid, a missing image or a file listed twice is an error
    naming file:line."""
    path = Path(root) / TINY_ANNOTATIONS
    images = Path(root) / "val" / "images"
    known, seen, rows = set(class_ids), {}, []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from exc
    for number, line in enumerate(text.splitlines(), 1):
        line = line.rstrip()
        if not line.strip():
            continue
        where = f"{path}:{number}"
        parts = line.split("\t")
        if len(parts) != 6 or not parts[0] or not all(_is_int(p) for p in parts[2:]):
            shown = line if len(line) <= 80 else line[:77] + "..."
            raise DataError(f"{where}: expected 'file<TAB>wnid<TAB>x<TAB>y<TAB>w<TAB>h', got {shown!r}")
        name, wnid = parts[0], parts[1]
        if wnid not in known:
            raise DataError(f"{where}: wnid {wnid!r} has no training folder {Path(root) / 'train' / wnid}; "
                            f"fix the line or add the class")
        if name in seen:
            raise DataError(f"{where}: {name!r} is already listed on line {seen[name]}; list each image once")
        seen[name] = number
        image = images / name
        if not image.is_file():
            raise DataError(f"{where}: image {image} not found; restore it or remove the line")
        rows.append((image, wnid))
    return rows


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _list_tiny_imagenet(root: Path, split: str) -> _Listing:
    class_ids = tuple(_subfolders(root / "train"))
    _need_two_classes(root / "train", class_ids)
    names = tiny_imagenet_names(root, class_ids)
    if split == "train":
        paths, labels = _flatten(_scan_classes(root / "train", class_ids, "images"), class_ids)
    else:
        if not (root / "val" / "images").is_dir():
            raise DataError(f"{root / 'val' / 'images'}: folder not found; Tiny ImageNet keeps the "
                            f"validation images listed in {root / TINY_ANNOTATIONS} there")
        index = {wnid: i for i, wnid in enumerate(class_ids)}
        rows = read_val_annotations(root, class_ids)
        paths, labels = [p for p, _ in rows], [index[w] for _, w in rows]
    return _Listing(paths, labels, class_ids, names)


# ---------------------------------------------------------------- split-tree and class-tree

def _list_split_tree(root: Path, split: str) -> _Listing:
    class_ids = tuple(_subfolders(root / "train"))
    _need_two_classes(root / "train", class_ids)
    if split == "train":
        paths, labels = _flatten(_scan_classes(root / "train", class_ids), class_ids)
    else:
        test = root / _split_tree_test(root)
        test_ids = _subfolders(test)
        extra = [name for name in test_ids if name not in class_ids]
        if extra:
            raise DataError(f"{test / extra[0]}: class {extra[0]!r} has no folder in {root / 'train'}; "
                            f"test classes must be training classes (add {root / 'train' / extra[0]} "
                            f"or remove it)")
        paths, labels = _flatten(_scan_classes(test, test_ids), class_ids)
    return _Listing(paths, labels, class_ids, class_ids)


def class_tree_split(files, test_fraction=TEST_FRACTION, seed=SPLIT_SEED) -> tuple:
    """One class's sorted files -> (train, test), each sorted: sklearn's train_test_split with a
    fixed random_state, applied per class, so the split is stratified exactly, is the same on every
    machine for the same file names, and adding images to one class leaves the other classes'
    splits alone. A class with fewer than 2 images goes wholly to train (it then has no test image);
    otherwise test gets ceil(test_fraction * n) images and train the rest (at least one each)."""
    from sklearn.model_selection import train_test_split

    files = sorted(files)
    if len(files) < 2:
        return files, []
    train, test = train_test_split(files, test_size=test_fraction, random_state=seed, shuffle=True)
    return sorted(train), sorted(test)


def _list_class_tree(root: Path, split: str) -> _Listing:
    class_ids = tuple(_subfolders(root))
    _need_two_classes(root, class_ids)
    classes = _scan_classes(root, class_ids)
    # split on the names alone (not the absolute paths), so the result does not depend on where
    # the tree lies; names within a folder are unique and already sorted
    chosen = {}
    for name, files in classes.items():
        by_name = {f.name: f for f in files}
        train, test = class_tree_split(list(by_name))
        chosen[name] = [by_name[n] for n in (train if split == "train" else test)]
    paths, labels = _flatten(chosen, class_ids)
    return _Listing(paths, labels, class_ids, class_ids)


_LISTERS = {"tiny-imagenet": _list_tiny_imagenet, "split-tree": _list_split_tree,
            "class-tree": _list_class_tree}


def _listing(root, split) -> tuple:
    if split not in SPLITS:
        raise DataError(f"{root}: no split {split!r}; an image folder has the splits 'train' and 'test'")
    root, layout = _check_root(root)
    return layout, _LISTERS[layout](root, split)


# ---------------------------------------------------------------- decoding

def folder_image(path, size=28) -> np.ndarray:
    """One image file -> uint8 [size, size]: read grey by `read_image` (alpha laid on white), then a
    plain INTER_AREA resize of the whole image (no crop, no inversion: a folder's images keep their
    look). `predict` uses this on models trained on folders, so training and prediction match."""
    size = int(size)
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    try:
        grey = read_image(path)
    except DataError:
        raise
    except FmnistError as exc:
        raise DataError(f"{exc}; replace or remove it") from exc
    if grey is None or grey.size == 0:
        raise DataError(f"{path}: cannot read this file as an image; replace or remove it")
    return plain_resize(grey, size)


def load_folder_split(root, split, size=28) -> FolderSplit:
    """Split "train" or "test" of the image folder ROOT, decoded to grey size x size (see the module
    docstring for the layouts). For a class-tree, "train" and "test" are the 80% and 20% of each
    class's images (`class_tree_split`; a class with fewer than 2 images is all train)."""
    layout, listing = _listing(root, split)
    if not listing.paths:
        raise DataError(f"{Path(root).expanduser()}: the {layout} has no {split} images"
                        + ("; every class has fewer than 2 images, so none is held out for testing"
                           if layout == "class-tree" else "; add some"))
    from tqdm import tqdm

    images = np.empty((len(listing.paths), int(size), int(size)), dtype=np.uint8)
    progress = tqdm(listing.paths, desc=f"reading {split} images", unit="img", leave=False,
                    disable=len(listing.paths) <= PROGRESS_THRESHOLD)
    for i, path in enumerate(progress):
        images[i] = folder_image(path, size)
    return FolderSplit(images, np.asarray(listing.labels, dtype=np.int32),
                       tuple(listing.class_names), tuple(listing.class_ids))


def describe_folder(root) -> dict:
    """The layout, classes and per-split image counts of an image folder, for dataset.json. Lists
    files, decodes none (a corrupt image only shows when loading); raises DataError like
    `load_folder_split` for a folder it would refuse."""
    counts, listing, layout = {}, None, None
    for split in SPLITS:
        layout, listing = _listing(root, split)
        counts[split] = len(listing.paths)
    return {"root": str(Path(root).expanduser().resolve()), "layout": layout,
            "num_classes": len(listing.class_ids), "class_ids": list(listing.class_ids),
            "class_names": list(listing.class_names), "images": counts}

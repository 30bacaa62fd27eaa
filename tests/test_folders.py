"""Image-folder datasets: layouts, labels, class names, the class-tree split, errors, read-only."""

import os
import shutil

import cv2
import numpy as np
import pytest

from fmnist_tf.data import folders
from fmnist_tf.data.fashion_mnist import write_idx_dataset
from fmnist_tf.data.folders import (FolderSplit, describe_folder, folder_image, folder_layout,
                                    load_folder_split)
from fmnist_tf.errors import DataError
from tests.conftest import synthetic_items

SHAPES = [(28, 28), (40, 30), (17, 50), (64, 64), (9, 12)]  # (height, width)
MODES = ["grey.png", "colour.png", "alpha.png", "grey.bmp", "colour.jpg", "grey.jpeg"]


def write_image(path, value, shape, mode):
    """A constant image whose grey value (what folder_image must give back) is returned. `mode` is
    'grey|colour|alpha' + '.' + suffix; alpha images are opaque here (compositing is tested apart)."""
    kind, suffix = mode.split(".")
    if kind == "grey":
        image = np.full(shape, value, np.uint8)
    else:
        bgr = np.array([max(value - 20, 0), value, min(value + 20, 255)], np.uint8)
        image = np.broadcast_to(bgr, (*shape, 3)).copy()
        if kind == "alpha":
            image = np.dstack([image, np.full(shape, 255, np.uint8)])
    path.parent.mkdir(parents=True, exist_ok=True)
    file = path.with_suffix("." + suffix)
    assert cv2.imwrite(str(file), image)
    if kind == "alpha":  # composited, then cvtColor; other files are decoded grey by the codec
        return int(cv2.cvtColor(image[..., :3], cv2.COLOR_BGR2GRAY)[0, 0])
    return int(cv2.imread(str(file), cv2.IMREAD_GRAYSCALE)[0, 0])


def write_class(folder, band, count, stem="img", lossless=False):
    """`count` images in `folder`, grey values band + 5 * j (+ a few for colour): unique per file and
    inside [band, band + 80), so an image's value tells its class (and, lossless, its file)."""
    modes = [m for m in MODES if not m.endswith(("jpg", "jpeg"))] if lossless else MODES
    values = {}
    for j in range(count):
        mode = modes[j % len(modes)]
        name = f"{stem}_{j:02d}"
        values[f"{name}.{mode.split('.')[1]}"] = write_image(folder / name, band + 5 * j,
                                                             SHAPES[j % len(SHAPES)], mode)
    return values


def snapshot(root):
    """Every file and folder under root with size and mtime: loading must change none of them."""
    rows = []
    for folder, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            stat = os.stat(os.path.join(folder, name))
            rows.append((os.path.relpath(os.path.join(folder, name), root), stat.st_size, stat.st_mtime_ns))
    return sorted(rows)


def class_of(images, bands):
    """Each image's class from its (constant) grey value."""
    means = images.reshape(len(images), -1).mean(axis=1)
    return np.array([max(k for k, band in enumerate(bands) if mean >= band - 3) for mean in means])


BANDS = (10, 90, 170)


@pytest.fixture
def class_tree(tmp_path):
    root = tmp_path / "my photos"
    counts = {"boots": 10, "coats": 6, "hats": 1}  # hats: fewer than 2 images -> all train
    values = {name: write_class(root / name, band, counts[name], lossless=True)
              for name, band in zip(counts, BANDS)}
    all_values = [v for cls in values.values() for v in cls.values()]
    assert len(set(all_values)) == len(all_values) == 17  # a value identifies its file
    (root / "notes.txt").write_text("not a class")
    (root / ".ipynb_checkpoints").mkdir()  # hidden folders are no classes
    (root / "coats" / "README.txt").write_text("non-image files are ignored")
    return root, values


def test_class_tree_detected_and_split_is_stratified_disjoint_and_complete(class_tree):
    root, values = class_tree
    before = snapshot(root)
    assert folder_layout(root) == "class-tree"
    train, test = load_folder_split(root, "train"), load_folder_split(root, "test")
    assert isinstance(train, FolderSplit)
    assert train.class_ids == train.class_names == ("boots", "coats", "hats")
    assert test.class_ids == train.class_ids
    for split in (train, test):
        assert split.images.dtype == np.uint8 and split.images.shape[1:] == (28, 28)
        assert split.labels.dtype == np.int32 and len(split.labels) == len(split.images)
        assert (class_of(split.images, BANDS) == split.labels).all()
        # each image is constant (a plain resize of a constant image)
        assert (split.images == split.images[:, :1, :1]).all()
    # 80/20 per class: ceil(0.2 n) test images; the 1-image class goes wholly to train
    assert np.bincount(train.labels, minlength=3).tolist() == [8, 4, 1]
    assert np.bincount(test.labels, minlength=3).tolist() == [2, 2, 0]
    # disjoint and complete: every file's unique value appears exactly once over both splits
    loaded = sorted(int(v) for v in np.concatenate([train.images, test.images])[:, 0, 0])
    assert loaded == sorted(v for cls in values.values() for v in cls.values())
    assert describe_folder(root) == {
        "root": str(root.resolve()), "layout": "class-tree", "num_classes": 3,
        "class_ids": ["boots", "coats", "hats"], "class_names": ["boots", "coats", "hats"],
        "images": {"train": 13, "test": 4}}
    assert snapshot(root) == before


def test_class_tree_split_is_deterministic_anywhere_and_matches_sklearn(class_tree, tmp_path):
    from sklearn.model_selection import train_test_split

    root, values = class_tree
    first = load_folder_split(root, "test")
    copy = shutil.copytree(root, tmp_path / "elsewhere" / "copy")  # another path, new mtimes
    again = load_folder_split(copy, "test")
    assert np.array_equal(first.images, again.images) and np.array_equal(first.labels, again.labels)
    # the documented contract: per class, sorted names, train_test_split(test_size=0.2, random_state=0)
    names = sorted(values["boots"])
    expected_test = sorted(train_test_split(names, test_size=0.2, random_state=0)[1])
    got = sorted(int(v) for v in first.images[first.labels == 0][:, 0, 0])
    assert got == sorted(values["boots"][n] for n in expected_test)


@pytest.fixture
def tiny_imagenet(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n01629819", "n01443537", "n09999999"]  # unsorted on purpose; the last has no words.txt line
    (root / "wnids.txt").parent.mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (root / "words.txt").write_text("n00001740\tentity\n"
                                    "n01443537\tgoldfish, Carassius auratus\n"
                                    "n01629819\tEuropean fire salamander, Salamandra salamandra\n")
    bands = dict(zip(sorted(wnids), BANDS))
    for wnid in wnids:
        write_class(root / "train" / wnid / "images", bands[wnid], 4, stem=wnid)
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t10\t10\n")
    val = [("n01443537", 0), ("n09999999", 1), ("n01629819", 2), ("n01443537", 3), ("n09999999", 4)]
    lines = []
    for i, (wnid, j) in enumerate(val):
        write_image(root / "val" / "images" / f"val_{i}", bands[wnid] + 5 * j, SHAPES[i], "colour.JPEG")
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t1\t20\t27")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    (root / "test" / "images").mkdir(parents=True)  # the unlabelled test set: not used
    write_image(root / "test" / "images" / "test_0", 50, (64, 64), "grey.JPEG")
    return root, [sorted(wnids).index(wnid) for wnid, _ in val]


def test_tiny_imagenet_in_place_with_words_names(tiny_imagenet):
    root, val_labels = tiny_imagenet
    before = snapshot(root)
    assert folder_layout(root) == "tiny-imagenet"
    train = load_folder_split(root, "train")
    assert train.class_ids == ("n01443537", "n01629819", "n09999999")
    assert train.class_names == ("goldfish", "European fire salamander", "n09999999")
    assert train.images.shape == (12, 28, 28) and train.images.dtype == np.uint8
    assert train.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert (class_of(train.images, BANDS) == train.labels).all()
    test = load_folder_split(root, "test", size=32)
    assert test.images.shape == (5, 32, 32)
    assert test.labels.tolist() == val_labels  # annotation order, labels index the sorted wnids
    assert (class_of(test.images, BANDS) == test.labels).all()
    assert test.class_names == train.class_names
    assert describe_folder(root)["images"] == {"train": 12, "test": 5}
    assert snapshot(root) == before


@pytest.mark.parametrize("line, complaint", [
    ("val_9.JPEG n01443537 0 0 10 10", "expected 'file<TAB>wnid"),  # spaces, not tabs
    ("val_0.JPEG\tn01443537\t0\t0", "expected 'file<TAB>wnid"),       # box cut short
    ("val_0.JPEG\tn01443537\t0\tx\t1\t1", "expected 'file<TAB>wnid"),  # box not numbers
    ("val_0.JPEG\tn07777777\t0\t0\t1\t1", "n07777777"),                # unknown wnid
    ("missing.JPEG\tn01443537\t0\t0\t1\t1", "missing.JPEG"),           # no such image
    ("val_1.JPEG\tn01443537\t0\t0\t1\t1", "already listed on line 2"),  # listed twice
])
def test_bad_val_annotation_names_file_and_line(tiny_imagenet, line, complaint):
    root, _ = tiny_imagenet
    annotations = root / "val" / "val_annotations.txt"
    lines = annotations.read_text().splitlines()
    annotations.write_text("\n".join(lines[:3] + [line] + lines[3:]) + "\n")
    load_folder_split(root, "train")  # the training split does not read the annotations
    with pytest.raises(DataError, match="val_annotations.txt:4: ") as caught:
        load_folder_split(root, "test")
    assert complaint in str(caught.value) and "\n" not in str(caught.value)


def test_tiny_imagenet_without_annotations_says_so(tiny_imagenet):
    root, _ = tiny_imagenet
    (root / "val" / "val_annotations.txt").unlink()
    assert folder_layout(root) is None
    with pytest.raises(DataError, match="val_annotations.txt: not found"):
        load_folder_split(root, "train")


@pytest.mark.parametrize("test_name", ["test", "val"])
def test_split_tree_labels_index_train_classes(tmp_path, test_name):
    root = tmp_path / "shop"
    for name, band in zip(("cat", "dog", "emu"), BANDS):
        write_class(root / "train" / name, band, 3)
    write_class(root / test_name / "dog", BANDS[1], 2)
    write_class(root / test_name / "emu", BANDS[2], 1)
    before = snapshot(root)
    assert folder_layout(root) == "split-tree"
    train, test = load_folder_split(root, "train"), load_folder_split(root, "test")
    assert train.class_ids == test.class_ids == train.class_names == ("cat", "dog", "emu")
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert test.labels.tolist() == [1, 1, 2]
    assert (class_of(test.images, BANDS) == test.labels).all()
    assert describe_folder(root)["images"] == {"train": 9, "test": 3}
    assert snapshot(root) == before


def test_split_tree_extra_test_class_is_an_error(tmp_path):
    root = tmp_path / "shop"
    for name, band in zip(("cat", "dog"), BANDS):
        write_class(root / "train" / name, band, 2)
        write_class(root / "test" / name, band, 1)
    write_class(root / "test" / "yak", BANDS[2], 1)
    assert load_folder_split(root, "train").class_ids == ("cat", "dog")
    with pytest.raises(DataError, match="'yak'.*test classes must be training classes"):
        load_folder_split(root, "test")


def test_train_tree_without_test_split_explains(tmp_path):
    root = tmp_path / "shop"
    for name, band in zip(("cat", "dog"), BANDS):
        write_class(root / "train" / name, band, 2)
    assert folder_layout(root) is None
    assert folder_layout(root / "train") == "class-tree"
    with pytest.raises(DataError, match="no test/<class>/ or val/<class>/"):
        load_folder_split(root, "train")


def test_fashion_mnist_idx_folder_and_missing_paths_are_no_image_folder(tmp_path):
    idx = write_idx_dataset(tmp_path / "idx", synthetic_items(20, seed=1), synthetic_items(10, seed=2))
    assert folder_layout(idx) is None
    assert folder_layout(tmp_path / "nowhere") is None
    assert folder_layout(idx / "MD5SUMS") is None
    with pytest.raises(DataError, match="no images found; expected class folders"):
        load_folder_split(idx, "train")
    with pytest.raises(DataError, match="nowhere: no such folder"):
        load_folder_split(tmp_path / "nowhere", "train")
    with pytest.raises(DataError, match="MD5SUMS: not a folder"):
        describe_folder(idx / "MD5SUMS")


@pytest.mark.parametrize("content", [b"", b"this is not a PNG at all"])
def test_unreadable_image_is_an_error_naming_it(class_tree, content):
    root, _ = class_tree
    bad = root / "coats" / "broken.png"
    bad.write_bytes(content)
    assert describe_folder(root)["images"]["train"] + describe_folder(root)["images"]["test"] == 18
    with pytest.raises(DataError) as caught:
        for split in ("train", "test"):
            load_folder_split(root, split)
    assert str(bad) in str(caught.value) and "cannot read" in str(caught.value)
    with pytest.raises(DataError, match="broken.png: cannot read this file as an image"):
        folder_image(bad)


def test_empty_class_folder_too_few_classes_and_bad_split(class_tree, tmp_path):
    root, _ = class_tree
    (root / "scarves").mkdir()
    (root / "scarves" / "list.txt").write_text("no images here")
    with pytest.raises(DataError, match="scarves: class folder has no images"):
        load_folder_split(root, "train")
    one = tmp_path / "one"
    write_class(one / "only", 10, 3)
    with pytest.raises(DataError, match="only class 'only'; a classifier needs at least 2"):
        load_folder_split(one, "train")
    shutil.rmtree(root / "scarves")
    with pytest.raises(DataError, match="no split 'val'"):
        load_folder_split(root, "val")


def test_class_tree_where_no_class_has_two_images_has_no_test_split(tmp_path):
    for name, band in zip(("a", "b"), BANDS):
        write_class(tmp_path / "few" / name, band, 1)
    assert load_folder_split(tmp_path / "few", "train").labels.tolist() == [0, 1]
    with pytest.raises(DataError, match="no test images; every class has fewer than 2"):
        load_folder_split(tmp_path / "few", "test")


def test_folder_image_plain_resize_no_crop_no_inversion_alpha_on_white(tmp_path):
    dark = np.zeros((50, 100), np.uint8)
    dark[:, :25] = 200  # a light bar on the left quarter of a dark, wide image
    cv2.imwrite(str(tmp_path / "bar.png"), dark)
    out = folder_image(tmp_path / "bar.png")
    assert out.shape == (28, 28) and out.dtype == np.uint8
    assert (out[:, :6] == 200).all() and (out[:, 8:] == 0).all()  # squashed, not cropped or inverted
    assert folder_image(tmp_path / "bar.png", size=14).shape == (14, 14)
    bgra = np.zeros((30, 30, 4), np.uint8)  # black; left half transparent
    bgra[:, 15:, 3] = 255
    cv2.imwrite(str(tmp_path / "cut-out.png"), bgra)
    out = folder_image(tmp_path / "cut-out.png")
    assert (out[:, :13] == 255).all() and (out[:, 15:] == 0).all()


def test_progress_bar_only_for_large_loads(class_tree, capsys, monkeypatch):
    root, _ = class_tree
    load_folder_split(root, "train")
    assert "reading train images" not in capsys.readouterr().err
    monkeypatch.setattr(folders, "PROGRESS_THRESHOLD", 5)
    load_folder_split(root, "train")
    assert "reading train images" in capsys.readouterr().err


def test_image_suffixes_case_insensitive_and_hidden_files_skipped(tmp_path):
    root = tmp_path / "mixed"
    write_image(root / "a" / "one", 10, (20, 20), "grey.PNG")
    write_image(root / "a" / "two", 20, (20, 20), "grey.Jpg")
    write_image(root / "b" / "three", 100, (20, 20), "grey.TIFF")
    write_image(root / "b" / "four", 110, (20, 20), "grey.webp")
    (root / "b" / "._four.webp").write_bytes(b"AppleDouble junk")
    (root / "b" / "anim.gif").write_bytes(b"GIF89a")
    assert ".gif" not in folders.IMAGE_SUFFIXES
    assert describe_folder(root)["images"] == {"train": 2, "test": 2}
    both = [load_folder_split(root, s) for s in ("train", "test")]
    assert sorted(np.concatenate([b.labels for b in both]).tolist()) == [0, 0, 1, 1]

import gzip
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fmnist_tf.data import fashion_mnist as fm
from fmnist_tf.errors import DataError
from tests.conftest import synthetic_items


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=4), st.integers(0, 2**32 - 1))
def test_idx_round_trip_any_shape(shape, seed):
    array = np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)
    header = bytes([0, 0, 0x08, len(shape)]) + b"".join(d.to_bytes(4, "big") for d in shape)
    np.testing.assert_array_equal(fm.parse_idx(header + array.tobytes()), array)


def test_write_then_read_idx_file(tmp_path):
    images, _ = synthetic_items(20, seed=3)
    fm.write_idx(tmp_path / "x.gz", images)
    np.testing.assert_array_equal(fm.read_idx(tmp_path / "x.gz"), images)


@pytest.mark.parametrize("raw, message", [
    (b"\x01\x00\x08\x01" + (3).to_bytes(4, "big") + b"abc", "bad magic"),
    (b"\x00\x00\x08\x02" + (3).to_bytes(4, "big"), "header is truncated"),
    (b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"abc", "truncated or corrupt"),
])
def test_parse_idx_rejects_malformed(raw, message):
    with pytest.raises(DataError, match=message):
        fm.parse_idx(raw)


def test_truncated_gzip_is_a_data_error(tmp_path):
    images, _ = synthetic_items(50, seed=4)
    fm.write_idx(tmp_path / "x.gz", images)
    data = (tmp_path / "x.gz").read_bytes()
    (tmp_path / "x.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="x.gz: cannot decompress"):
        fm.read_idx(tmp_path / "x.gz")


def test_load_split_reads_folder_with_md5sums(tiny_data):
    images, labels = fm.load_split("train", tiny_data)
    assert images.shape == (300, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (300,) and set(labels) == set(range(10))


def test_corrupt_byte_fails_md5_naming_the_file(tiny_data, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_data, copy)
    target = copy / "train-images-idx3-ubyte.gz"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: md5 mismatch.*--data"):
        fm.load_split("train", copy)


def test_official_names_without_md5sums_are_checked_against_official_md5(tiny_data, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_data, copy)
    (copy / "MD5SUMS").unlink()
    with pytest.raises(DataError, match="md5 mismatch"):
        fm.load_split("test", copy)


def test_missing_file_says_how_to_fix(tiny_data, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_data, copy)
    (copy / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: file not found; pass --data"):
        fm.load_split("test", copy)


def test_environment_variable_is_used(tiny_data, monkeypatch):
    monkeypatch.setenv("FMNIST_DATA_DIR", str(tiny_data))
    images, _ = fm.load_split("test")
    assert len(images) == 100


def test_download_failure_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("FMNIST_DATA_DIR", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty-keras-home"))
    monkeypatch.setattr(fm, "keras_cache_dirs", lambda: [tmp_path / "empty-cache"])

    def no_network():
        raise OSError("no route to host")

    import keras
    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", no_network)
    with pytest.raises(DataError, match="downloading it failed.*--data"):
        fm.load_split("train")


def test_kaggle_csv(tmp_path):
    images, labels = synthetic_items(12, seed=5)
    rows = ["label," + ",".join(f"pixel{i}" for i in range(1, 785))]
    rows += [f"{y}," + ",".join(map(str, x.ravel())) for x, y in zip(images, labels)]
    (tmp_path / "fashion-mnist_test.csv").write_text("\n".join(rows) + "\n")
    got_images, got_labels = fm.load_split("test", tmp_path)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    single_file_images, _ = fm.load_split("train", tmp_path / "fashion-mnist_test.csv")
    assert single_file_images.shape == (12, 28, 28)


def test_csv_with_wrong_header_or_values(tmp_path):
    bad_header = tmp_path / "a.csv"
    bad_header.write_text("x,y\n1,2\n")
    with pytest.raises(DataError, match="a.csv: expected a header"):
        fm.load_csv(bad_header)
    bad_value = tmp_path / "b.csv"
    header = "label," + ",".join(f"pixel{i}" for i in range(1, 785))
    bad_value.write_text(header + "\n3," + ",".join(["300"] * 784) + "\n")
    with pytest.raises(DataError, match="0..255"):
        fm.load_csv(bad_value)


def test_gzip_header_garbage(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(b"not idx at all")
    with pytest.raises(DataError, match="bad magic"):
        fm.read_idx(path)

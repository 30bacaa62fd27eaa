"""Fashion-MNIST from IDX files (md5-checked), Kaggle-style CSV, the Keras cache or a download.

Search order for a split: the explicit `data` argument, $FMNIST_DATA_DIR, the Keras cache
(~/.keras/datasets/fashion-mnist or $KERAS_HOME), then the normal Keras download.
"""

import gzip
import hashlib
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from fmnist_tf.errors import DataError

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
OFFICIAL_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
CSV_FILES = {"train": "fashion-mnist_train.csv", "test": "fashion-mnist_test.csv"}
# A folder holding other IDX files (a subset, tests' tiny data) declares their md5s here.
CHECKSUM_FILE = "MD5SUMS"



def keras_cache_dirs():
    """Where keras.datasets.fashion_mnist.load_data() keeps the files ($KERAS_HOME, else ~/.keras,
    else /tmp/.keras when the home folder is read-only)."""
    home = Path(os.environ.get("KERAS_HOME", "~/.keras")).expanduser()
    return [home / "datasets" / "fashion-mnist", Path("/tmp/.keras/datasets/fashion-mnist")]


_HOW_TO_FIX = ("pass --data DIR (or set FMNIST_DATA_DIR) pointing at a folder with the four official "
               "Fashion-MNIST IDX .gz files")
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def expected_md5s(folder: Path) -> dict:
    """The official md5s, unless the folder ships its own MD5SUMS (md5sum's format)."""
    sums_file = folder / CHECKSUM_FILE
    if not sums_file.is_file():
        return OFFICIAL_MD5
    sums = {}
    for number, line in enumerate(sums_file.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or len(parts[0]) != 32:
            raise DataError(f"{sums_file}:{number}: expected '<md5> <file name>', got {line!r}")
        sums[Path(parts[1].lstrip("*")).name] = parts[0].lower()
    return sums


def verify_md5(path: Path, expected: dict):
    want = expected.get(path.name)
    if want is None:
        raise DataError(f"{path}: no md5 to check it against; list it in {path.parent / CHECKSUM_FILE}")
    got = md5_of(path)
    if got != want:
        raise DataError(f"{path}: md5 mismatch (expected {want}, got {got}): the file is corrupt or "
                        f"truncated; download it again or {_HOW_TO_FIX}")


def aligned_empty(shape, dtype, alignment=64) -> np.ndarray:
    """An uninitialised array whose data starts on an `alignment`-byte boundary: TensorFlow can then
    use its memory in place (see `fmnist_tf.data.pipeline.as_tensor`)."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    buffer = np.empty(size + alignment, np.uint8)
    start = -buffer.ctypes.data % alignment
    return buffer[start:start + size].view(dtype).reshape(shape)


def read_idx_stream(handle, name="IDX data", chunk_bytes=1 << 20) -> np.ndarray:
    """Decode an (uncompressed) IDX stream: magic 0,0,dtype,ndim; big-endian dims; data. The data is
    read in chunks straight into an aligned array, so the file's contents exist once in memory."""
    head = handle.read(4)
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES:
        raise DataError(f"{name}: not an IDX file (bad magic number)")
    ndim = head[3]
    dims = handle.read(4 * ndim)
    if ndim == 0 or len(dims) < 4 * ndim:
        raise DataError(f"{name}: IDX header is truncated")
    shape = struct.unpack(f">{ndim}I", dims)
    array = aligned_empty(shape, _IDX_DTYPES[head[2]])
    body = array.reshape(-1).view(np.uint8)
    filled = 0
    while filled < body.size:
        chunk = handle.read(min(chunk_bytes, body.size - filled))
        if not chunk:
            break
        body[filled:filled + len(chunk)] = np.frombuffer(chunk, np.uint8)
        filled += len(chunk)
    if filled < body.size or handle.read(1):
        size = "fewer" if filled < body.size else "more"
        raise DataError(f"{name}: IDX body has {size} than the {body.size} bytes its header promises "
                        f"(shape {shape}): the file is truncated or corrupt")
    return array


def parse_idx(raw: bytes, name="IDX data") -> np.ndarray:
    """`read_idx_stream` on a bytes buffer."""
    return read_idx_stream(io.BytesIO(raw), name)


def read_idx(path: Path) -> np.ndarray:
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            return read_idx_stream(handle, str(path))
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found; {_HOW_TO_FIX}") from exc
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot decompress ({exc}); the file is corrupt or truncated; "
                        f"download it again or {_HOW_TO_FIX}") from exc


def _check_pair(images, labels, source):
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise DataError(f"{source}: expected unsigned-byte IDX data, got {images.dtype} images and "
                        f"{labels.dtype} labels")
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{source}: images must be N x 28 x 28, got shape {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{source}: {len(labels)} labels for {len(images)} images")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(CLASS_NAMES)):
        raise DataError(f"{source}: labels must lie in 0..{len(CLASS_NAMES) - 1}")
    return images, labels.astype(np.int32)


def load_idx_split(folder: Path, split: str):
    folder = Path(folder)
    expected = expected_md5s(folder)
    image_path, label_path = (folder / name for name in FILES[split])
    for path in (image_path, label_path):
        if not path.is_file():
            raise DataError(f"{path}: file not found; {_HOW_TO_FIX}")
        verify_md5(path, expected)
    return _check_pair(read_idx(image_path), read_idx(label_path), folder)


def load_csv(path: Path):
    """Kaggle layout: a header `label,pixel1,...,pixel784`, then one image per row."""
    path = Path(path)
    try:
        with open(path) as handle:
            header = handle.readline().strip().split(",")
            if len(header) != 785 or header[0] != "label":
                raise DataError(f"{path}: expected a header 'label,pixel1,...,pixel784' (785 columns), "
                                f"got {len(header)} columns starting {header[0]!r}")
            table = np.loadtxt(handle, delimiter=",", dtype=np.int64, ndmin=2)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from exc
    except ValueError as exc:
        raise DataError(f"{path}: malformed CSV ({str(exc).splitlines()[0]})") from exc
    if table.shape[1] != 785:
        raise DataError(f"{path}: rows must have 785 values, got {table.shape[1]}")
    if table.size and (table[:, 1:].min() < 0 or table[:, 1:].max() > 255):
        raise DataError(f"{path}: pixel values must lie in 0..255")
    if table.size and (table[:, 0].min() < 0 or table[:, 0].max() >= len(CLASS_NAMES)):
        raise DataError(f"{path}: labels must lie in 0..{len(CLASS_NAMES) - 1}")
    return _check_pair(table[:, 1:].reshape(-1, 28, 28).astype(np.uint8), table[:, 0].astype(np.uint8), path)


def _load_from(source: Path, split: str):
    if source.is_file():
        if source.suffix.lower() != ".csv":
            raise DataError(f"{source}: --data must be a folder of IDX .gz files or a Kaggle-style .csv")
        return load_csv(source)
    if not source.is_dir():
        raise DataError(f"{source}: no such file or folder; {_HOW_TO_FIX}")
    csv_path = source / CSV_FILES[split]
    if not (source / FILES[split][0]).exists() and csv_path.is_file():
        return load_csv(csv_path)
    return load_idx_split(source, split)


def _cached_folder():
    return next((folder for folder in keras_cache_dirs()
                 if all((folder / name).is_file() for name in OFFICIAL_MD5)), None)


def _download_with_keras() -> Path:
    import keras  # the real Keras loader; it fills the cache read above

    try:
        keras.datasets.fashion_mnist.load_data()
    except Exception as exc:  # no network, proxy, HTTP error: all end the same way for the user
        raise DataError(f"Fashion-MNIST is not in {keras_cache_dirs()[0]} and downloading it failed "
                        f"({type(exc).__name__}); {_HOW_TO_FIX}") from exc
    folder = _cached_folder()
    if folder is None:
        raise DataError(f"the Keras download finished but the files are not in {keras_cache_dirs()[0]}; "
                        f"{_HOW_TO_FIX}")
    return folder


def resolve_source(data=None) -> Path | None:
    """Where the data will come from; None means 'download into the Keras cache'."""
    if data:
        return Path(data).expanduser()
    if os.environ.get("FMNIST_DATA_DIR"):
        return Path(os.environ["FMNIST_DATA_DIR"]).expanduser()
    return _cached_folder()


def load_split(split: str, data=None):
    """Return (images uint8 [N,28,28], labels int32 [N]) for split 'train' or 'test'."""
    if split not in FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return _load_from(resolve_source(data) or _download_with_keras(), split)


def write_idx(path: Path, array: np.ndarray):
    """Write a uint8 array as a gzip IDX file (used to make small datasets and test fixtures)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.tobytes())


def write_idx_dataset(folder: Path, train, test):
    """Write train/test (images, labels) pairs as IDX .gz files plus an MD5SUMS file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for split, (images, labels) in (("train", train), ("test", test)):
        write_idx(folder / FILES[split][0], images)
        write_idx(folder / FILES[split][1], labels)
    lines = [f"{md5_of(folder / name)}  {name}" for pair in FILES.values() for name in pair]
    (folder / CHECKSUM_FILE).write_text("\n".join(lines) + "\n")
    return folder

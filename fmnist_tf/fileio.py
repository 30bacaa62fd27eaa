"""Atomic writes: a crash leaves either the old file or the new one, never half of one."""

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


def _temp_beside(path: Path, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    os.chmod(name, 0o644)  # mkstemp makes 0600; outputs should be as readable as any file
    return Path(name)


def remove_stale_temporaries(folder):
    """Delete temporary files a killed process left behind (`.<name>.<random><suffix>`)."""
    for path in Path(folder).rglob(".*.*"):
        if path.is_file() and path.name.count(".") >= 2:
            path.unlink()


class PendingFile:
    """A temporary file beside `path` that becomes `path` on `commit()` and vanishes on `discard()`.
    For outputs written over a long time (video, CSV), where a `with` block does not fit.

    `suffix` keeps libraries that check extensions (Keras wants `.keras`, OpenCV `.mp4`) happy.
    """

    def __init__(self, path, suffix=""):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.temporary = _temp_beside(self.path, suffix or self.path.suffix)

    def commit(self):
        os.replace(self.temporary, self.path)

    def discard(self):
        self.temporary.unlink(missing_ok=True)


@contextmanager
def atomic_output(path, suffix=""):
    """Yields a temporary path, renamed over `path` if the block succeeds, deleted otherwise."""
    pending = PendingFile(path, suffix)
    try:
        yield pending.temporary
        pending.commit()
    finally:
        pending.discard()


def atomic_write(path, write, suffix=""):
    """Call `write(tmp_path)`, then rename the temporary file over `path`."""
    with atomic_output(path, suffix) as tmp:
        write(tmp)
    return Path(path)


def atomic_write_image(path, image, params=(), what="image"):
    """cv2.imwrite through a temporary file; the format follows the suffix (`params` e.g. JPEG quality)."""
    import cv2

    from fmnist_tf.errors import FmnistError

    with atomic_output(path, suffix=Path(path).suffix) as tmp:
        if not cv2.imwrite(str(tmp), image, list(params)):
            raise FmnistError(f"{path}: cannot write the {what} (is the folder writable?)")
    return Path(path)


def atomic_write_text(path, text: str):
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def atomic_write_json(path, obj):
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save_model(model, path):
    return atomic_write(path, lambda tmp: model.save(tmp), suffix=".keras")


def atomic_save_weights(model, path):
    return atomic_write(path, lambda tmp: model.save_weights(tmp), suffix=".weights.h5")


def atomic_save_figure(fig, path, dpi=110):
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png"))

"""Atomic writes: a crash leaves either the old file or the new one, never half of one."""

import json
import os
import tempfile
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


def atomic_write(path, write, suffix=""):
    """Call `write(tmp_path)`, then rename the temporary file over `path`.

    `suffix` keeps libraries that check extensions (Keras wants `.keras`) happy.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_beside(path, suffix or path.suffix)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


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

"""Finding and loading saved models (Keras safe mode, never compiled state or pickles)."""

import json
from pathlib import Path

from fmnist_tf.data.fashion_mnist import CLASS_NAMES
from fmnist_tf.errors import ModelFileError


def resolve_model_path(run_or_file) -> Path:
    """A `.keras` file, or a run directory (its best.keras, else last.keras)."""
    path = Path(run_or_file)
    if path.is_dir():
        for name in ("best.keras", "last.keras"):
            if (path / name).is_file():
                return path / name
        raise ModelFileError(f"{path}: no best.keras or last.keras in this folder; is it a run directory?")
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file or run directory")
    if path.suffix != ".keras":
        raise ModelFileError(f"{path}: expected a .keras model file or a run directory")
    return path


def run_dir_of(model_path: Path) -> Path | None:
    """The run directory a model file belongs to, if it sits in one."""
    parent = Path(model_path).parent
    return parent if (parent / "config.yaml").is_file() else None


def class_names_for(model_path: Path):
    run_dir = run_dir_of(model_path)
    if run_dir is not None and (run_dir / "dataset.json").is_file():
        return tuple(json.loads((run_dir / "dataset.json").read_text())["class_names"])
    return CLASS_NAMES


def load_model(run_or_file):
    """Load for inference: safe mode (no arbitrary code), no optimizer or metrics."""
    import keras

    path = resolve_model_path(run_or_file)
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for a bad file; the user needs one message
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"{path}: not a loadable Keras model ({detail[:200]})") from exc

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
        raise ModelFileError(f"{path}: expected a run directory or a model file (.keras, or an exported "
                             ".tflite, .onnx or SavedModel folder)")
    return path


def newest_run(runs_folder="runs") -> Path:
    """The most recently written run directory that holds a model."""
    runs = [folder for folder in Path(runs_folder).glob("*/") if (folder / "best.keras").is_file()
            or (folder / "last.keras").is_file()]
    if not runs:
        raise ModelFileError(f"no trained run in {runs_folder}/; pass --model, or train one: fmnist-tf train -c deep")
    return max(runs, key=lambda folder: folder.stat().st_mtime)


def run_dir_of(model_path: Path) -> Path | None:
    """The run directory a model file belongs to, if it sits in one."""
    parent = Path(model_path).parent
    return parent if (parent / "config.yaml").is_file() else None


def dataset_info(model_path: Path) -> dict:
    """The run's dataset.json (class names, data source, image format), or {} for a bare model file."""
    run_dir = run_dir_of(model_path)
    if run_dir is not None and (run_dir / "dataset.json").is_file():
        return json.loads((run_dir / "dataset.json").read_text())
    return {}


def class_names_for(model_path: Path):
    return tuple(dataset_info(model_path).get("class_names", CLASS_NAMES))


def image_format_for(model_path: Path):
    """How images must be prepared for this model (see fmnist_tf.data.sources)."""
    return dataset_info(model_path).get("image_format", "fashion-mnist")


def load_model(run_or_file):
    """Load for inference: safe mode (no arbitrary code), no optimizer or metrics."""
    import keras

    import fmnist_tf.models.batchnorm  # noqa: F401  registers our layer class for safe-mode loading

    path = resolve_model_path(run_or_file)
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for a bad file; the user needs one message
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"{path}: not a loadable Keras model ({detail[:200]})") from exc


def run_config_value(model_path: Path, key, default):
    """A key of the run's config.yaml, or `default` for a bare model file."""
    import yaml

    run_dir = run_dir_of(model_path)
    if run_dir is None:
        return default
    return (yaml.safe_load((run_dir / "config.yaml").read_text()) or {}).get(key, default)


def is_embedding_model(model) -> bool:
    """Embedding models end in an L2 normalisation instead of class probabilities."""
    return type(model.layers[-1]).__name__ == "UnitNormalization"

"""Training settings: one dataclass holds every key, its default, its check and its help.

`configs/NAME.yaml` files override the defaults; CLI flags override the file.
"""

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from fmnist_tf.errors import ConfigError

PACKAGED_CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # configs/ at the top is a link to it


def _key(default, help, choices=None, low=None, high=None, below=None):
    """`low`/`high` are inclusive bounds, `below` an exclusive upper bound."""
    return field(default=default, metadata={"help": help, "choices": choices, "low": low, "high": high,
                                            "below": below})


@dataclass
class TrainConfig:
    model: str = _key("baseline", "registered model builder (see `fmnist-tf models`)")
    epochs: int = _key(10, "number of epochs", low=1)
    batch_size: int = _key(128, "batch size", low=1)
    optimizer: str = _key("adam", "optimizer", choices=("adam", "adamw", "sgd"))
    learning_rate: float = _key(1e-3, "initial (peak) learning rate", low=0.0, high=10.0)
    momentum: float = _key(0.9, "SGD momentum", low=0.0, high=1.0)
    nesterov: bool = _key(False, "Nesterov momentum for SGD")
    weight_decay: float = _key(0.0, "decoupled weight decay", low=0.0)
    label_smoothing: float = _key(0.0, "label smoothing of the cross-entropy", low=0.0, high=0.5)
    schedule: str = _key("plateau", "learning-rate schedule",
                         choices=("plateau", "step", "cosine", "constant"))
    plateau_factor: float = _key(0.1, "plateau: LR multiplier on a plateau of val_loss", low=0.0, below=1.0)
    plateau_patience: int = _key(3, "plateau: epochs without improvement before cutting the LR", low=0)
    plateau_cooldown: int = _key(2, "plateau: epochs to wait after a cut", low=0)
    min_learning_rate: float = _key(1e-6, "plateau: lowest learning rate", low=0.0)
    step_every: int = _key(20, "step: epochs between LR cuts", low=1)
    step_factor: float = _key(0.2, "step: LR multiplier at each cut", low=0.0, below=1.0)
    warmup_epochs: int = _key(0, "cosine: epochs of linear warm-up", low=0)
    augment: bool = _key(False, "turn training augmentation on")
    flip: bool = _key(True, "augment: random horizontal flips")
    vertical_flip: bool = _key(False, "augment: random vertical flips too (the VGG-CAM reference used both)")
    zoom_out: float = _key(0.0, "augment: shrink images by a random factor up to 1 + this (1.0: down to half "
                                "size, 2.0: a third), so small items are seen too; with translate, anywhere "
                                "in the frame", low=0.0, high=3.0)
    translate: float = _key(0.1, "augment: max shift, as a fraction of the image size", low=0.0, high=0.5)
    erasing: float = _key(0.5, "augment: probability of random erasing", low=0.0, high=1.0)
    width: float = _key(1.0, "width multiplier for the model's channels", low=0.01, high=16.0)
    dropout: float = _key(0.5, "dropout before the classifier", low=0.0, high=0.95)
    input_size: int = _key(0, "model input side in pixels; 0: the model's own (28 for the CNNs, which take "
                                 "nothing else; efficientnet_b0 and vgg_rescam upscale 28x28 items inside the "
                                 "model; tinyyolov3 needs a multiple of 32)", low=0)
    cam_side: int = _key(7, "vgg_rescam: smallest side of the CAM feature map (VGG's pools stop before "
                           "going below it; 7 as the reference, 14 for finer CAM boxes at ~4x the FLOPs)", low=1)
    weights: str = _key("", "a local weights file to start from (e.g. ImageNet EfficientNet-B0 notop .h5); "
                            "empty: from scratch")
    backend: str = _key("keras", "library that builds the model: keras (keras.applications), or "
                                 "efficientnet (the `efficientnet` package, pip install .[efficientnet])",
                        choices=("keras", "efficientnet"))
    base: str = _key("", "transfer: the model to start from: one of our run directories or .keras files "
                         "(the CLI's --from), or a keras.applications name such as MobileNetV2 (ImageNet "
                         "weights from --weights PATH, else a download)")
    freeze: bool = _key(True, "transfer: keep the backbone's weights fixed, so only the new head trains")
    head_units: int = _key(0, "transfer: hidden units of the new head (0: Dropout -> Dense N; 64: the "
                              "reference embedding head Dropout -> Dense 64 -> ReLU -> Dropout -> Dense N)", low=0)
    fine_tune_epochs: int = _key(0, "transfer: epochs of a second stage, after `epochs`, that unfreezes the "
                                    "backbone and trains everything at fine_tune_learning_rate", low=0)
    fine_tune_learning_rate: float = _key(1e-5, "transfer: constant learning rate of the second stage",
                                          low=0.0, high=10.0)
    embedding_size: int = _key(128, "embedding: length of the L2-normalised embedding vector", low=2)
    margin: float = _key(0.2, "embedding: margin of the semi-hard triplet loss", low=0.0, high=4.0)
    knn_k: int = _key(13, "embedding: neighbours of the kNN classifier that scores embeddings", low=1)
    anchors: str = _key("default", "detector anchors: default (the reference's, scaled to input_size), "
                                   "kmeans (6 clusters of the training boxes), or 'w,h w,h ...' in input pixels")
    ignore_threshold: float = _key(0.7, "detector: no-object predictions overlapping a true box above "
                                        "this IoU are not penalised", low=0.0, high=1.0)
    strategy: str = _key("auto", "tf.distribute strategy: auto (mirrored when there are several GPUs), "
                                 "default (one device), mirrored (all GPUs, or --devices N logical CPUs), "
                                 "multiworker (several machines, from TF_CONFIG; see the README)",
                         choices=("auto", "default", "mirrored", "multiworker"))
    devices: int = _key(0, "devices for the mirrored strategy (0: every GPU; on a CPU, split it into N logical "
                           "devices)", low=0)
    multiworker_fit: bool = _key(False, "multiworker: train with model.fit instead of our distributed step; "
                                        "Keras 3's fit is broken under MultiWorkerMirroredStrategy "
                                        "(keras-team/keras#20585), switch this on once it is fixed")
    scale_learning_rate: bool = _key(False, "multiply the learning rate by the number of replicas (batch_size is "
                                            "always the global batch)")
    mixed_precision: bool = _key(False, "mixed precision: float16 compute on a GPU (with loss scaling), "
                                        "bfloat16 on a CPU; outputs and loss stay float32")
    jit_compile: bool = _key(False, "compile the training step with XLA (off: Keras' choice, which is XLA on "
                                    "a single GPU and none on a CPU)")
    val_fraction: float = _key(0.1, "stratified validation hold-out from the training set", low=0.01, high=0.5)
    seed: int = _key(42, "random seed for the split, shuffling, augmentation and weights", low=0)


KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig))
FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def _valid_keys_hint():
    return f"valid keys: {', '.join(KEYS)}"


def describe_key(f):
    m = f.metadata
    kind = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[f.type]
    if m["choices"]:
        return f"one of {', '.join(m['choices'])}"
    bounds = []
    if m["low"] is not None:
        bounds.append(f">= {m['low']}")
    if m["high"] is not None:
        bounds.append(f"<= {m['high']}")
    if m["below"] is not None:
        bounds.append(f"< {m['below']}")
    return kind + (" " + " and ".join(bounds) if bounds else "")


def _coerce(f, value):
    """Return `value` as the field's type, or raise ValueError."""
    if f.type is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ValueError
    if isinstance(value, bool):
        raise ValueError
    if f.type is int:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError
        return int(value)
    if f.type is float:
        value = float(value)
        if not math.isfinite(value):
            raise ValueError
        return value
    if not isinstance(value, str):
        raise ValueError
    return value


def check_value(key, value, source="config"):
    if key not in FIELDS:
        close = difflib.get_close_matches(key, KEYS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"{source}: unknown key '{key}'{hint}; {_valid_keys_hint()}")
    f = FIELDS[key]
    m = f.metadata
    try:
        value = _coerce(f, value)
        ok = ((m["choices"] is None or value in m["choices"])
              and (m["low"] is None or value >= m["low"])
              and (m["high"] is None or value <= m["high"])
              and (m["below"] is None or value < m["below"]))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"{source}: '{key}' must be {describe_key(f)}, got {value!r}; {_valid_keys_hint()}")
    if key == "model":
        from fmnist_tf.models import model_names  # imports Keras: only when a model name is checked

        if value not in model_names():
            raise ConfigError(f"{source}: unknown model '{value}'; registered models: {', '.join(model_names())}")
    return value


def find_config_file(name_or_path) -> Path:
    """A YAML path, or a name looked up in ./configs (your own), then the package's configs."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml"):
        if candidate.is_file():
            return candidate
        raise ConfigError(f"config file {candidate} does not exist")
    for folder in (Path.cwd() / "configs", PACKAGED_CONFIG_DIR):
        path = folder / f"{name_or_path}.yaml"
        if path.is_file():
            return path
    raise ConfigError(f"no config named '{name_or_path}'; available: {', '.join(available_configs())}")


def available_configs():
    names = set()
    for folder in (Path.cwd() / "configs", PACKAGED_CONFIG_DIR):
        names.update(p.stem for p in folder.glob("*.yaml"))
    return sorted(names)


def read_yaml_mapping(path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a mapping of key: value; {_valid_keys_hint()}")
    return data


def make_config(values: dict, source="config", base: TrainConfig | None = None) -> TrainConfig:
    checked = {key: check_value(str(key), value, source) for key, value in values.items()}
    return dataclasses.replace(base or TrainConfig(), **checked)


def load_config(name_or_path, overrides: dict | None = None) -> TrainConfig:
    """Defaults <- YAML file <- overrides (e.g. from CLI flags), each value validated."""
    path = find_config_file(name_or_path)
    config = make_config(read_yaml_mapping(path), source=str(path))
    return make_config(overrides or {}, source="command line", base=config)


def config_to_yaml(config: TrainConfig) -> str:
    return yaml.safe_dump(dataclasses.asdict(config), sort_keys=False)

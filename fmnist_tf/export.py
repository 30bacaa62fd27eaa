"""`fmnist-tf export`: a trained model as a SavedModel, a LiteRT .tflite (float32 or int8) or ONNX.

Every export is written to a hidden staging folder beside the target, reopened there with
`open_classifier` (the loader users' code goes through) and compared with the Keras model on
training images; only an artifact that passes is moved into place, so a failed export leaves the
target path exactly as it was.
"""

import contextlib
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from fmnist_tf.errors import DataError, FmnistError
from fmnist_tf.modelio import load_model, resolve_model_path, run_dir_of

FORMATS = ("savedmodel", "tflite", "onnx")
QUANTIZATIONS = ("int8",)
FLOAT_TOLERANCE = 1e-4  # max |Δprob| a float export may differ from Keras by
INT8_MIN_AGREEMENT = 0.95  # int8 changes probabilities; it must still pick the same class
LATENCY_CALLS = 50
SEED = 0


def check_request(fmt, quantize):
    """Reject impossible combinations before any slow work."""
    if fmt not in FORMATS:
        raise FmnistError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise FmnistError(f"unknown quantization {quantize!r}; choose one of {', '.join(QUANTIZATIONS)}")
    if quantize and fmt != "tflite":
        raise FmnistError(f"--quantize {quantize} works only with --format tflite, not {fmt}")
    if fmt == "onnx":
        try:
            import onnxruntime  # noqa: F401 - the numeric check runs the export with it
            import tf2onnx  # noqa: F401
        except ImportError as exc:
            raise FmnistError("exporting to ONNX needs tf2onnx and onnxruntime: "
                              "pip install 'fmnist-tf[onnx]'") from exc


def default_export_path(model_path: Path, fmt, quantize=None) -> Path:
    """`export/` beside the model (inside its run directory when it has one)."""
    stem = model_path.stem + (f"_{quantize}" if quantize else "")
    name = {"savedmodel": f"{stem}_savedmodel", "tflite": f"{stem}.tflite", "onnx": f"{stem}.onnx"}[fmt]
    return model_path.parent / "export" / name


def check_out_path(out: Path, fmt):
    # open_classifier picks the loader by suffix: another suffix would make an unloadable file
    suffix = {"tflite": ".tflite", "onnx": ".onnx"}.get(fmt)
    if suffix and out.suffix != suffix:
        raise FmnistError(f"{out}: a {fmt} export must be named *{suffix}")


def training_sample(model_path: Path, data, count, size, *, require_real):
    """(float32 [count, size, size, 1] images, "train" or "random"): training images from `data`,
    else the run's recorded source, else the default search. Never the test split: exports are
    often scored on it later."""
    from fmnist_tf.data.pipeline import to_model_input
    from fmnist_tf.data.sources import load_labelled_split
    from fmnist_tf.train.fit import recorded_source

    run_dir = run_dir_of(model_path)
    try:
        images = load_labelled_split("train", data or (recorded_source(run_dir) if run_dir else None)).images
    except DataError as exc:
        if data:
            raise  # the user named this data: what is wrong with it is the message
        if require_real:
            raise DataError(f"int8 calibration needs training images, and none were found: {exc}") from exc
        return np.random.default_rng(SEED).uniform(size=(count, size, size, 1)).astype(np.float32), "random"
    picked = np.random.default_rng(SEED).permutation(len(images))[:count]
    return to_model_input(images[np.sort(picked)]).numpy(), "train"


@contextlib.contextmanager
def quiet():
    """tf2onnx triggers TF deprecation warnings and the int8 converter warns about input statistics
    (our inputs stay float32): neither helps someone exporting a model."""
    tf_logger = logging.getLogger("tensorflow")
    level = tf_logger.level
    tf_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
            yield
    finally:
        tf_logger.setLevel(level)


def write_savedmodel(model, path: Path, calibration=None):
    # not keras' model.export(): it checkpoints every variable twice, doubling the folder's size
    import tensorflow as tf

    from fmnist_tf.litert import serving_function

    module = tf.Module()
    module.model = model  # tracked, so the serving function's weights are saved (once)
    module.serve = serving_function(model)
    signature = module.serve.get_concrete_function()
    tf.saved_model.save(module, str(path), signatures={"serving_default": signature})


def write_tflite(model, path: Path, calibration=None):
    from fmnist_tf.litert import convert_to_tflite

    with quiet():
        content = convert_to_tflite(model, calibration)
    path.write_bytes(content)


def write_onnx(model, path: Path, calibration=None):
    # not keras' export(format="onnx"): it turns the Normalization constants into required inputs;
    # a frozen graph (weights as constants) converts cleanly
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from fmnist_tf.litert import serving_function

    frozen = convert_variables_to_constants_v2(serving_function(model).get_concrete_function())
    with quiet():
        proto, _ = tf2onnx.convert.from_graph_def(
            frozen.graph.as_graph_def(), input_names=[t.name for t in frozen.inputs],
            output_names=[t.name for t in frozen.outputs], opset=17)
    path.write_bytes(proto.SerializeToString())


WRITERS = {"savedmodel": write_savedmodel, "tflite": write_tflite, "onnx": write_onnx}


def size_on_disk(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def compare(reference, candidate):
    """(max |Δprob|, top-1 agreement) between two probability arrays."""
    return (float(np.max(np.abs(reference - candidate))),
            float(np.mean(reference.argmax(axis=1) == candidate.argmax(axis=1))))


def median_latency_ms(classifier, image):
    """Median wall time of one batch-1 call, after warm-up (the first calls allocate)."""
    for _ in range(5):
        classifier(image)
    times = []
    for _ in range(LATENCY_CALLS):
        start = time.perf_counter()
        classifier(image)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def check_export(path: Path, reference, images, quantize, sample):
    """Reopen the written artifact as users would and hold it to the format's tolerance."""
    from fmnist_tf.inference import open_classifier

    classifier = open_classifier(path)
    max_abs_diff, agreement = compare(reference, classifier(images))
    if quantize and agreement < INT8_MIN_AGREEMENT:
        raise FmnistError(f"the {quantize} model agrees with Keras on only {agreement:.1%} of {len(images)} "
                          f"{sample} images (need {INT8_MIN_AGREEMENT:.0%}); nothing was written: "
                          f"export float32 instead")
    if not quantize and not max_abs_diff <= FLOAT_TOLERANCE:  # `not <=` also catches NaN
        raise FmnistError(f"the exported model differs from Keras by max |Δprob| {max_abs_diff:.2e} "
                          f"(allowed {FLOAT_TOLERANCE:.0e}); nothing was written")
    return {"max_abs_diff": max_abs_diff, "top1_agreement": agreement,
            "latency_ms_per_image": median_latency_ms(classifier, images[:1])}


def staging_folder(target: Path) -> Path:
    """A hidden folder beside the target: same file system, so the final rename is atomic."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as exc:
        raise FmnistError(f"{target}: cannot write there ({exc.strerror or exc})") from exc


def move_into_place(staged: Path, target: Path):
    """A file is renamed over the target in one step. A folder cannot be, so the old one is
    renamed aside first (into the staging folder, deleted with it)."""
    if target.exists() and (staged.is_dir() or target.is_dir()):
        os.rename(target, staged.parent / "replaced")
    os.replace(staged, target)


def export_model(run_or_model, fmt, *, out=None, quantize=None, data=None, sample_size=256) -> dict:
    """Export a run's model (or a .keras file) as `fmt`, check it against Keras, return a report dict."""
    check_request(fmt, quantize)
    model_path = resolve_model_path(run_or_model)
    target = Path(out) if out else default_export_path(model_path, fmt, quantize)
    check_out_path(target, fmt)
    model = load_model(model_path)
    # int8: calibrate on different images than the check, so agreement is not measured on the
    # very images that set the quantisation ranges
    images, sample = training_sample(model_path, data, sample_size * (2 if quantize else 1),
                                     int(model.input_shape[1]), require_real=bool(quantize))
    images, calibration = images[:sample_size], (images[sample_size:] if quantize else None)
    if quantize and len(calibration) == 0:
        calibration = images  # tiny datasets: calibrating on the checked images beats not exporting
    reference = np.asarray(model(images, training=False))

    staging = staging_folder(target)
    try:
        staged = staging / target.name
        WRITERS[fmt](model, staged, calibration)
        checks = check_export(staged, reference, images, quantize, sample)
        size = size_on_disk(staged)
        move_into_place(staged, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"format": fmt, "path": str(target), "bytes": size, **checks, "sample": sample,
            "sample_size": int(len(images)), "quantize": quantize}


def format_size(num_bytes):
    return f"{num_bytes / 1e6:.1f} MB" if num_bytes >= 1e6 else f"{num_bytes / 1e3:.0f} kB"


def format_export_report(result) -> str:
    images = ("training images" if result["sample"] == "train"
              else "random images (no training data found; pass --data to check on real ones)")
    return (f"exported {result['path']} ({format_size(result['bytes'])}); max |Δprob| vs Keras "
            f"{result['max_abs_diff']:.1e}, top-1 agreement {result['top1_agreement']:.1%} on "
            f"{result['sample_size']} {images}; {result['latency_ms_per_image']:.2f} ms/image")

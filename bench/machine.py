"""What every benchmark shares: the machine it ran on (for the README's results table), measuring
several paths in alternating rounds (so this noisy machine's slow spells hit them alike), a training
time budget, and `--set KEY=VALUE` config overrides."""

import argparse
import os
import platform
import statistics
import time

import keras


def cpu_model():
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def accelerators():
    """Names of the GPUs the Keras backend sees."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return [gpu.name for gpu in tf.config.list_physical_devices("GPU")]
    if backend == "jax":
        import jax

        return [device.device_kind for device in jax.devices() if device.platform == "gpu"]
    if backend == "torch":
        import torch

        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return []


def describe_machine():
    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
               "keras_backend": keras.backend.backend(), "keras": keras.__version__}
    if machine["keras_backend"] == "tensorflow":
        import tensorflow as tf

        machine["tensorflow"] = tf.__version__
    names = accelerators()
    return {**machine, "gpus": len(names), "gpu_names": names}


def alternating_rounds(paths, rounds, label="", unit="/s"):
    """Call each of `paths` (name -> measure(), returning a rate) once per round, round 0 being a
    warm-up that is not kept. Returns (all rates per path, median per path)."""
    rates = {path: [] for path in paths}
    for round_index in range(rounds + 1):
        for path, measure in paths.items():
            rate = measure()
            if round_index:
                rates[path].append(rate)
        print(f"{label}round {round_index}: " + ", ".join(f"{p} {r[-1]:.1f}{unit}" for p, r in rates.items() if r),
              flush=True)
    return rates, {path: statistics.median(values) for path, values in rates.items()}


class TimeBudget(keras.callbacks.Callback):
    """Stops training when this epoch's validation plus one more epoch would overrun the budget.
    It runs before the run-directory callbacks, so their time (validation mAP, checkpoints) is
    measured as the gap between one epoch's end and the next one's start."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds, self.start = seconds, time.perf_counter()
        self.longest_training = self.longest_after = 0.0
        self.last_end = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()
        if self.last_end is not None:
            self.longest_after = max(self.longest_after, self.epoch_start - self.last_end)

    def on_epoch_end(self, epoch, logs=None):
        self.last_end = time.perf_counter()
        self.longest_training = max(self.longest_training, self.last_end - self.epoch_start)
        still_needed = 2 * self.longest_after + self.longest_training
        if self.last_end - self.start + still_needed > self.seconds:
            self.model.stop_training = True


def parse_settings(pairs):
    """["width=0.25", ...] -> {"width": "0.25", ...} (load_config checks and converts them)."""
    settings = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals:
            raise SystemExit(f"--set takes KEY=VALUE, got {pair!r}")
        settings[key.strip()] = value.strip()
    return settings


def training_run_parser(description, models_help):
    """The arguments every accuracy benchmark takes: config names, data, results folder, `--set`
    overrides named by `--label`, and a time budget."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help=models_help)
    parser.add_argument("--data", help="Fashion-MNIST folder (default: $FMNIST_DATA_DIR)")
    parser.add_argument("--results", default="bench/results", help="folder for the JSON results")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides, e.g. width=0.25")
    parser.add_argument("--label", help="names the variant in the result file (needed with --set)")
    parser.add_argument("--budget-minutes", type=float, default=None, help="stop before overrunning this")
    return parser


def parse_training_run(parser):
    """(args, config overrides, result-file suffix); `--set` without `--label` is refused."""
    args = parser.parse_args()
    settings = parse_settings(args.set)
    if settings and not args.label:
        parser.error("--set changes the default config: name the variant with --label")
    return args, settings, f"-{args.label}" if args.label else ""

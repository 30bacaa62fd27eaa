"""Names the machine a benchmark ran on, for the README's results table."""

import os
import platform
import time


def cpu_model():
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine():
    import tensorflow as tf

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
            "tensorflow": tf.__version__, "gpus": len(tf.config.list_physical_devices("GPU"))}

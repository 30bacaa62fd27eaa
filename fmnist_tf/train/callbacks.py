"""Callbacks that write the run directory. Every file is replaced atomically."""

import csv
import io
import json
import math
import re
import time
from pathlib import Path

import keras
import numpy as np

from fmnist_tf.evaluate.scores import classification_scores
from fmnist_tf.fileio import atomic_save_model, atomic_save_weights, atomic_write_json, atomic_write_text


class EpochTimer(keras.callbacks.Callback):
    """Adds `epoch_seconds` (training time, without validation) and `learning_rate` to the logs."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs["epoch_seconds"] = time.perf_counter() - self._start
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class ValidationReport(keras.callbacks.Callback):
    """Scores the validation set with scikit-learn: val_loss, accuracy, weighted P/R/F1, per class."""

    def __init__(self, dataset, labels, loss_fn, num_classes):
        super().__init__()
        self.dataset, self.labels = dataset, labels
        self.loss_fn, self.num_classes = loss_fn, num_classes
        self.one_hot = np.eye(num_classes, dtype="float32")[labels]  # fixed: build once, not per epoch

    def on_epoch_end(self, epoch, logs=None):
        probabilities = self.model.predict(self.dataset, verbose=0)
        scores = classification_scores(self.labels, probabilities.argmax(axis=1), self.num_classes)
        logs["val_loss"] = float(keras.ops.convert_to_numpy(self.loss_fn(self.one_hot, probabilities)))
        for key in ("accuracy", "precision", "recall", "f1"):
            logs[f"val_{key}"] = scores[key]
        for index, value in enumerate(scores["class_accuracy"]):
            logs[f"val_acc_class{index}"] = value


class BestCheckpoint(keras.callbacks.Callback):
    """Saves `path` whenever `monitor` beats the best value so far (`best` carries it across resumes)."""

    def __init__(self, path, monitor="val_f1", best=-math.inf):
        super().__init__()
        self.path, self.monitor, self.best = Path(path), monitor, best

    def on_epoch_end(self, epoch, logs=None):
        value = logs[self.monitor]
        if value > self.best:
            self.best = value
            atomic_save_model(self.model, self.path)


class LastCheckpoint(keras.callbacks.Callback):
    def __init__(self, path):
        super().__init__()
        self.path = Path(path)

    def on_epoch_end(self, epoch, logs=None):
        atomic_save_model(self.model, self.path)


BACKUP_PATTERN = re.compile(r"^epoch-(\d+)\.weights\.h5$")
# Callback attributes that must survive a resume (Keras resets them in on_train_begin).
RESUMABLE_STATE = {"ReduceLROnPlateau": ("wait", "cooldown_counter", "best")}


def latest_backup(folder):
    """(completed epochs, weights path) of the newest backup in `folder`, or (0, None)."""
    found = [(int(m.group(1)), p) for p in Path(folder).glob("epoch-*.weights.h5")
             if (m := BACKUP_PATTERN.match(p.name))]
    return max(found, default=(0, None))


def backup_state_path(weights_path):
    return Path(str(weights_path).replace(".weights.h5", ".state.json"))


class Backup(keras.callbacks.Callback):
    """Model, optimizer and schedule state after each epoch, for `--resume` after any crash, SIGKILL included.

    The epoch count is in the file name and the weights file appears last, by an atomic rename, so the
    newest weights file always has its matching state beside it (Keras' BackupAndRestore writes weights
    and epoch as two files in place, and forgets ReduceLROnPlateau's counters).
    """

    def __init__(self, folder, callbacks=(), restore=None):
        super().__init__()
        self.folder = Path(folder)
        self.stateful = [cb for cb in callbacks if type(cb).__name__ in RESUMABLE_STATE]
        self.restore = restore or {}

    def on_train_begin(self, logs=None):
        for callback in self.stateful:
            for key, value in self.restore.get(type(callback).__name__, {}).items():
                setattr(callback, key, value)

    def on_epoch_end(self, epoch, logs=None):
        _, previous = latest_backup(self.folder)
        weights = self.folder / f"epoch-{epoch + 1:04d}.weights.h5"
        state = {type(cb).__name__: {k: float(getattr(cb, k)) for k in RESUMABLE_STATE[type(cb).__name__]}
                 for cb in self.stateful}
        atomic_write_json(backup_state_path(weights), state)
        atomic_save_weights(self.model, weights)
        if previous is not None:
            previous.unlink(missing_ok=True)
            backup_state_path(previous).unlink(missing_ok=True)


def read_backup_state(weights_path):
    path = backup_state_path(weights_path)
    return json.loads(path.read_text()) if path.is_file() else {}


def read_history(path):
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


class HistoryCSV(keras.callbacks.Callback):
    """history.csv, one row per epoch. On resume, rows from epochs about to be redone are dropped,
    so every epoch appears exactly once however the previous run died."""

    def __init__(self, path, initial_epoch=0):
        super().__init__()
        self.path = Path(path)
        self.rows = [row for row in read_history(path) if int(row["epoch"]) < initial_epoch]

    def on_epoch_end(self, epoch, logs=None):
        self.rows.append({"epoch": epoch, **{k: float(v) for k, v in logs.items()}})
        columns = list(dict.fromkeys(key for row in self.rows for key in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buffer.getvalue())

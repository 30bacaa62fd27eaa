import math

import keras
import numpy as np

from fmnist_tf.models import create_model
from fmnist_tf.train.callbacks import (Backup, BestCheckpoint, HistoryCSV, latest_backup, read_backup_state,
                                       read_history)


def tiny_model():
    model = create_model("deep", width=0.125)
    model.compile("adam", "categorical_crossentropy")
    return model


def test_best_checkpoint_saves_only_on_improvement(tmp_path):
    model = tiny_model()
    callback = BestCheckpoint(tmp_path / "best.keras", "val_f1", best=-math.inf)
    callback.set_model(model)
    callback.on_epoch_end(0, {"val_f1": 0.5})
    first = (tmp_path / "best.keras").stat().st_ino  # each atomic save renames a new file in
    callback.on_epoch_end(1, {"val_f1": 0.4})
    assert (tmp_path / "best.keras").stat().st_ino == first and callback.best == 0.5
    callback.on_epoch_end(2, {"val_f1": 0.7})
    assert callback.best == 0.7 and (tmp_path / "best.keras").stat().st_ino != first
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_best_checkpoint_respects_best_from_previous_run(tmp_path):
    callback = BestCheckpoint(tmp_path / "best.keras", "val_f1", best=0.9)
    callback.set_model(tiny_model())
    callback.on_epoch_end(3, {"val_f1": 0.8})
    assert not (tmp_path / "best.keras").exists()


def test_history_drops_epochs_that_will_be_redone(tmp_path):
    path = tmp_path / "history.csv"
    writer = HistoryCSV(path)
    for epoch in range(4):
        writer.on_epoch_end(epoch, {"loss": 1.0 / (epoch + 1), "val_f1": 0.1 * epoch})
    resumed = HistoryCSV(path, initial_epoch=2)
    resumed.on_epoch_end(2, {"loss": 0.3, "val_f1": 0.25})
    rows = read_history(path)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert float(rows[2]["val_f1"]) == 0.25


def test_backup_keeps_only_the_latest_epoch(tmp_path):
    model = tiny_model()
    backup = Backup(tmp_path)
    backup.set_model(model)
    for epoch in range(3):
        backup.on_epoch_end(epoch, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-0003.state.json", "epoch-0003.weights.h5"]
    epochs, path = latest_backup(tmp_path)
    assert epochs == 3 and path.name == "epoch-0003.weights.h5"
    restored = tiny_model()
    restored.load_weights(path)
    for a, b in zip(model.get_weights(), restored.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert latest_backup(tmp_path / "none") == (0, None)


def test_backup_carries_plateau_counters_across_a_resume(tmp_path):
    plateau = keras.callbacks.ReduceLROnPlateau(patience=3)
    model = tiny_model()
    backup = Backup(tmp_path, [plateau])
    for callback in (plateau, backup):
        callback.set_model(model)
    plateau.on_train_begin()
    plateau.wait, plateau.best = 2, 0.25
    backup.on_epoch_end(4, {})
    _, weights = latest_backup(tmp_path)

    fresh = keras.callbacks.ReduceLROnPlateau(patience=3)
    restored = Backup(tmp_path, [fresh], read_backup_state(weights))
    for callback in (fresh, restored):
        callback.set_model(model)
        callback.on_train_begin()  # Keras resets the counters here; the backup puts them back
    assert (fresh.wait, fresh.best) == (2, 0.25)

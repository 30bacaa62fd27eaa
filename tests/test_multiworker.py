"""`--strategy multiworker`: two worker processes on 127.0.0.1 (MultiWorkerMirroredStrategy from
TF_CONFIG), our distributed step instead of `model.fit`, and recovery after a worker is killed."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from fmnist_tf.data.fashion_mnist import write_idx_dataset
from fmnist_tf.errors import ConfigError
from fmnist_tf.train.callbacks import latest_backup, read_history
from tests.conftest import run_cli, synthetic_items

ROOT = Path(__file__).resolve().parents[1]
WORKER_TIMEOUT = 240  # seconds, per group of worker processes
TINY = ["--batch-size", "32", "--width", "0.125", "--strategy", "multiworker"]
COLLECTIVE_TIMEOUT = 15  # seconds: how long the chief waits for a dead peer in the crash test
RUN_FILES = {"config.yaml", "dataset.json", "history.csv", "best.keras", "last.keras", "tensorboard"}


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tf_config(ports, index):
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                       "task": {"type": "worker", "index": index}})


class Workers:
    """`fmnist-tf train ARGS` in one process per worker of a fresh 127.0.0.1 cluster; logs in files."""

    def __init__(self, args, folder, name, count=2, env=None):
        ports = free_ports(count)
        self.logs = [Path(folder) / f"{name}-worker{index}.log" for index in range(count)]
        self.processes = []
        for index, log in enumerate(self.logs):
            worker_env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3",
                          "PYTHONUNBUFFERED": "1", "TF_CONFIG": tf_config(ports, index),
                          "FMNIST_WORKER_SCRATCH": str(Path(folder) / f"{name}-scratch"), **(env or {})}
            with open(log, "w") as handle:
                self.processes.append(subprocess.Popen(
                    [sys.executable, "-m", "fmnist_tf", "train", *map(str, args)], env=worker_env,
                    stdout=handle, stderr=subprocess.STDOUT))

    def text(self, index):
        return self.logs[index].read_text()

    def wait(self, timeout=WORKER_TIMEOUT):
        """Exit codes of all workers; kills them all (and fails) if they outlive `timeout`."""
        deadline = time.monotonic() + timeout
        try:
            return [process.wait(timeout=max(0.1, deadline - time.monotonic())) for process in self.processes]
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"workers still running after {timeout} s:\n" + self.tails())

    def kill(self):
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    def tails(self, chars=1500):
        return "\n".join(f"--- worker {i} ---\n{self.text(i)[-chars:]}" for i in range(len(self.logs)))


@pytest.fixture
def workers():
    """Starts worker groups; whatever is still running when the test ends is killed."""
    groups = []

    def start(*args, **kwargs):
        groups.append(Workers(*args, **kwargs))
        return groups[-1]

    yield start
    for group in groups:
        group.kill()


def assert_same_weights(first, second):
    """Two saved models hold the same weights (BatchNorm's moving statistics included)."""
    first, second = (keras.models.load_model(path, compile=False) for path in (first, second))
    for mine, theirs in zip(first.weights, second.weights, strict=True):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(mine), keras.ops.convert_to_numpy(theirs),
                                   rtol=1e-6, atol=1e-7, err_msg=mine.path)


def scratch_of(log_text):
    found = re.search(r"^worker 1 writes to (\S+) ", log_text, flags=re.MULTILINE)
    assert found, "worker 1 must say where it writes:\n" + log_text[-1500:]
    return Path(found.group(1))


def test_two_workers_train_one_run_that_only_the_chief_writes(tiny_data, tmp_path, workers, capsys):
    """With XLA, which takes the same path plus the compiled replica step; the killed-worker test
    below covers two workers without it."""
    run = tmp_path / "run"
    args = ["-c", "baseline", "--data", tiny_data, "--out", run, "--epochs", "2", "--dropout", "0",
            "--jit-compile", *TINY]
    group = workers(args, tmp_path, "fit", env={"TF_CPP_MIN_LOG_LEVEL": "0"})
    assert group.wait() == [0, 0], group.tails()
    chief_log, other_log = group.text(0), group.text(1)
    assert "over 2 device(s), global batch 32 (16 per replica)" in chief_log
    # TensorFlow's own log line: the replica step really ran through XLA
    assert "Compiled cluster using XLA" in chief_log
    assert f"run saved in {run}" in chief_log

    # only the chief wrote the run directory; worker 1 wrote the same kind of files to its scratch folder
    scratch = scratch_of(other_log)
    assert set(os.listdir(run)) == RUN_FILES
    assert RUN_FILES <= set(os.listdir(scratch)) and not scratch.is_relative_to(run)
    assert f"run saved in {scratch}" in other_log

    # one model: every weight (BatchNorm's moving statistics included) is the same on both workers
    assert_same_weights(run / "last.keras", scratch / "last.keras")

    rows = read_history(run / "history.csv")
    assert [int(row["epoch"]) for row in rows] == [0, 1]
    assert float(rows[1]["loss"]) < float(rows[0]["loss"])
    assert {"accuracy", "f1", "val_f1", "val_loss", "learning_rate"} <= set(rows[0])
    def scores(history):  # all but the timing
        return [{key: value for key, value in row.items() if key != "epoch_seconds"} for row in history]

    assert scores(read_history(scratch / "history.csv")) == scores(rows)  # the same logs on every worker

    # about the first epoch of one process: the loss is averaged over the global batch (a loss summed
    # over the workers instead would double both it and the step). Measured first-epoch losses: one
    # device 1.208, model.fit on 2 logical CPUs 1.256, two workers 1.277 (BatchNorm sees 16 images, not 32)
    code, _, err = run_cli(["train", *args[:-2], "--out", tmp_path / "single", "--strategy", "default"], capsys)
    assert code == 0, err
    single = read_history(tmp_path / "single" / "history.csv")
    assert float(rows[0]["loss"]) == pytest.approx(float(single[0]["loss"]), rel=0.1)


def test_a_killed_worker_stops_the_chief_and_both_resume(tmp_path, workers):
    data = write_idx_dataset(tmp_path / "data", synthetic_items(1200, seed=5), synthetic_items(50, seed=6))
    run = tmp_path / "run"
    env = {"FMNIST_COLLECTIVE_TIMEOUT": str(COLLECTIVE_TIMEOUT)}
    group = workers(["-c", "baseline", "--data", data, "--out", run, "--epochs", "4", *TINY], tmp_path, "first",
                    env=env)
    deadline = time.monotonic() + WORKER_TIMEOUT
    while (not read_history(run / "history.csv") and time.monotonic() < deadline
           and all(process.poll() is None for process in group.processes)):
        time.sleep(0.02)
    assert all(process.poll() is None for process in group.processes), group.tails()
    group.processes[1].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    try:
        chief_code = group.processes[0].wait(timeout=COLLECTIVE_TIMEOUT + 45)
    except subprocess.TimeoutExpired:
        pytest.fail("the chief hangs after its peer died:\n" + group.tails())
    waited = time.monotonic() - killed
    assert chief_code != 0, group.tails()
    done_before = latest_backup(run / "backup")[0]
    assert 1 <= done_before < 4, "the kill must land mid-run:\n" + group.tails()

    # --resume keeps the run's config (--strategy multiworker included) and its data source
    again = workers(["--resume", run], tmp_path, "resume", env=env)
    assert again.wait() == [0, 0], again.tails()
    for index in range(2):
        assert f"after epoch {done_before}" in again.text(index)  # both restored the same backup
    rows = read_history(run / "history.csv")
    assert [int(row["epoch"]) for row in rows] == [0, 1, 2, 3]
    assert not (run / "backup").exists()
    # weights and optimizer were restored: the first redone epoch trains on (a fresh start would repeat
    # epoch 0's high loss), and both workers restored the same backup
    assert float(rows[done_before]["loss"]) < 0.8 * float(rows[0]["loss"])
    assert_same_weights(run / "last.keras", scratch_of(again.text(1)) / "last.keras")
    print(f"chief stopped {waited:.1f} s after its peer died")


# ---------------------------------------------------------------------------------------------------
# Unit level: no cluster needed


@pytest.mark.parametrize("value, expected", [
    (None, "needs the TF_CONFIG environment variable"),
    ("{'cluster': 1}", "not valid JSON"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}}', "task.type"),
    ('{"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}', "host:port"),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}', "from 0 to 1"),
])
def test_bad_tf_config_is_a_one_line_error_before_anything_starts(value, expected, tiny_data, tmp_path, capsys,
                                                                    monkeypatch):
    if value is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", value)
    code, _, err = run_cli(["train", "-c", "baseline", "--data", tiny_data, "--out", tmp_path / "run", *TINY],
                           capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert expected in err and "TF_CONFIG" in err and '"task": {"type": "worker", "index": 0}' in err
    assert not (tmp_path / "run").exists()


def test_bad_collective_timeout_is_a_config_error():
    from fmnist_tf.train.multiworker import collective_timeout

    assert collective_timeout({}) is None and collective_timeout({"FMNIST_COLLECTIVE_TIMEOUT": "0"}) is None
    assert collective_timeout({"FMNIST_COLLECTIVE_TIMEOUT": "2.5"}) == 2.5
    for bad in ("soon", "-1", "nan"):
        with pytest.raises(ConfigError, match="FMNIST_COLLECTIVE_TIMEOUT"):
            collective_timeout({"FMNIST_COLLECTIVE_TIMEOUT": bad})


def fake_strategy(cluster, task_type, task_id):
    import tensorflow as tf

    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id)
    return SimpleNamespace(cluster_resolver=resolver)


def test_chief_is_worker_0_unless_the_cluster_names_one():
    from fmnist_tf.train.multiworker import is_chief

    workers_only = {"worker": ["a:1", "b:2"]}
    assert is_chief(fake_strategy(workers_only, "worker", 0))
    assert not is_chief(fake_strategy(workers_only, "worker", 1))
    with_chief = {"chief": ["c:3"], "worker": ["a:1", "b:2"]}
    assert is_chief(fake_strategy(with_chief, "chief", 0))
    assert not is_chief(fake_strategy(with_chief, "worker", 0))
    assert is_chief(SimpleNamespace())  # a single-process strategy


def test_worker_run_needs_a_shared_run_directory(tmp_path):
    from fmnist_tf.config import load_config
    from fmnist_tf.train.multiworker import open_worker_run

    config = load_config("baseline", {})
    with pytest.raises(ConfigError, match="--out DIR"):
        open_worker_run(fake_strategy({"worker": ["a:1", "b:2"]}, "worker", 1), config, None, None)
    with pytest.raises(ConfigError, match="--out DIR"):
        open_worker_run(fake_strategy({"worker": ["a:1", "b:2"]}, "worker", 0), config, None, None)


def test_other_workers_write_to_scratch_but_resume_from_the_shared_run(tmp_path, monkeypatch, capsys):
    from fmnist_tf.config import load_config
    from fmnist_tf.train.multiworker import open_worker_run

    config = load_config("baseline", {"epochs": "4"})
    run = tmp_path / "run"
    (run / "backup").mkdir(parents=True)
    (run / "backup" / "epoch-0002.weights.h5").write_bytes(b"")
    monkeypatch.setenv("FMNIST_WORKER_SCRATCH", str(tmp_path / "scratch"))
    other = fake_strategy({"worker": ["a:1", "b:2"]}, "worker", 1)
    scratch, epoch, backup = open_worker_run(other, config, None, run)
    assert (epoch, backup) == (2, run / "backup" / "epoch-0002.weights.h5")
    assert scratch.parent == tmp_path / "scratch" and scratch.is_dir() and not any(scratch.iterdir())
    assert f"worker 1 writes to {scratch} " in capsys.readouterr().out
    fresh_scratch, epoch, backup = open_worker_run(other, config, tmp_path / "new", None)
    assert (epoch, backup) == (0, None) and fresh_scratch != scratch and not (tmp_path / "new").exists()
    # the chief opens the run directory as a single-process run does
    chief = fake_strategy({"worker": ["a:1", "b:2"]}, "worker", 0)
    assert open_worker_run(chief, config, None, run) == (run, 2, run / "backup" / "epoch-0002.weights.h5")


def test_weighted_scores_match_scikit_learn():
    from fmnist_tf.evaluate.scores import classification_scores
    from fmnist_tf.train.multiworker import weighted_scores

    rng = np.random.default_rng(0)
    truth, predicted = rng.integers(0, 4, 200), rng.integers(0, 5, 200) % 4
    predicted[:100] = truth[:100]
    matrix = np.zeros((4, 4))
    np.add.at(matrix, (truth, predicted), 1)
    expected = classification_scores(truth, predicted, 4)
    for key, value in weighted_scores(matrix).items():
        assert value == pytest.approx(expected[key]), key


def test_per_example_loss_keeps_the_loss_settings():
    from fmnist_tf.train.multiworker import per_example_loss
    from fmnist_tf.train.triplet import TripletSemiHardLoss

    loss = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)
    y = np.eye(3, dtype="float32")[[0, 1, 2, 1]]
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.5, 0.4, 0.1]], dtype="float32")
    values = keras.ops.convert_to_numpy(per_example_loss(loss)(y, p))
    assert values.shape == (4,) and values.mean() == pytest.approx(float(loss(y, p)), rel=1e-6)
    triplet = per_example_loss(TripletSemiHardLoss(0.3))
    values = keras.ops.convert_to_numpy(triplet(y, p))  # the batch's loss once per example
    assert triplet.margin == 0.3 and values.shape == (4,) and np.allclose(values, values[0])


@pytest.mark.parametrize("jit_compile", [False, True])
def test_distributed_fit_matches_model_fit_on_one_device(jit_compile, tiny_data):
    """The custom loop on the default strategy gives model.fit's losses and accuracies, epoch by epoch,
    with and without XLA. (Unshuffled data: both loops reshuffle every epoch, but draw different
    orders after the first.)"""
    import functools

    import tensorflow as tf

    from fmnist_tf.data.pipeline import make_dataset
    from fmnist_tf.data.sources import load_labelled_split
    from fmnist_tf.models import create_model
    from fmnist_tf.train.multiworker import distributed_fit

    dataset = load_labelled_split("train", tiny_data)
    # 200 = 4 x 48 + 8: a partial last batch
    make_train_ds = functools.partial(make_dataset, tf.constant(dataset.images), dataset.labels, 10, 48,
                                      indices=range(200))

    def trained(fit):
        keras.utils.set_random_seed(7)
        model = create_model("baseline", num_classes=10, mean=0.0, variance=1.0, width=0.125, dropout=0.0)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit_compile,
                      loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1), metrics=["accuracy"])
        return fit(model).history

    expected = trained(lambda m: m.fit(make_train_ds(), epochs=3, verbose=0, shuffle=False))
    got = trained(lambda m: distributed_fit(m, make_train_ds, tf.distribute.get_strategy(), 3, 0, [], 0))
    assert got["loss"] == pytest.approx(expected["loss"], rel=1e-5)
    assert got["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-6)
    assert {"precision", "recall", "f1"} <= set(got)

"""Training on several machines: `--strategy multiworker` (tf.distribute.MultiWorkerMirroredStrategy).

Keras 3's `model.fit` is broken under MultiWorkerMirroredStrategy (keras-team/keras#20585,
tensorflow/tensorflow#72388), so `distributed_fit` is our own loop: each worker builds its own input
pipeline of its replicas' parts of every global batch (`strategy.distribute_datasets_from_function`;
with `experimental_distribute_dataset`, the DATA auto-sharding that in-memory data needs has every
worker gather and convert every global batch, then drop the other workers' parts), each replica's
step runs under `strategy.run`, and the gradients are summed across every worker by the optimizer
(`apply_gradients` all-reduces them in replica context). It drives the same callbacks as `model.fit`, so the run directory is the same.

Every worker runs the whole program (same data, same callbacks); the run directory is written by the
chief only (worker 0, or the `chief` task if the cluster names one). The others write their callbacks'
files to a scratch folder of their own (see `open_worker_run`).

Environment:
  TF_CONFIG                  the cluster and this task (see `TF_CONFIG_HELP`), required.
  FMNIST_COLLECTIVE_TIMEOUT  seconds a collective operation (an all-reduce) may wait for the other
                             workers before it fails with DeadlineExceededError (default 0: no
                             limit). Off by default because TensorFlow starts one sleeping thread per
                             collective for it (measured: ~1,900 threads after 40 s of a small model
                             at 120 s). A dead worker is found without it: TensorFlow's coordination
                             service (heartbeats to worker 0) fails the survivors, ~3 s after a
                             killed worker and ~25 s after a frozen one (SIGSTOP) on 127.0.0.1. Set
                             it to also catch a worker that lives but stops taking part (say, stuck
                             writing to a dead file server).
  FMNIST_WORKER_SCRATCH      a folder for the non-chief workers' scratch folders, which are then
                             kept; without it they go to the system's temporary folder and are
                             deleted when the worker exits.
"""

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from fmnist_tf.errors import ConfigError

COLLECTIVE_TIMEOUT_ENV = "FMNIST_COLLECTIVE_TIMEOUT"
DEFAULT_COLLECTIVE_TIMEOUT = 0.0  # seconds; 0: none (see the module doc)
WORKER_SCRATCH_ENV = "FMNIST_WORKER_SCRATCH"
TF_CONFIG_HELP = ('TF_CONFIG must be a JSON object such as {"cluster": {"worker": ["host1:port", "host2:port"]}, '
                  '"task": {"type": "worker", "index": 0}}: the same cluster on every worker, each with its own '
                  'index (0 is the chief)')


# ---------------------------------------------------------------------------------------------------
# The strategy


def _host_port(address):
    host, sep, port = str(address).rpartition(":")
    return bool(sep and host and port.isdigit() and 0 < int(port) < 65536)


def read_tf_config(environ=None):
    """The parsed TF_CONFIG; a one-line ConfigError when it is missing or not a usable cluster."""
    environ = os.environ if environ is None else environ
    text = environ.get("TF_CONFIG", "")
    if not text.strip():
        raise ConfigError(f"--strategy multiworker needs the TF_CONFIG environment variable; {TF_CONFIG_HELP}")
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({exc.msg} at character {exc.pos}); "
                          f"{TF_CONFIG_HELP}") from None
    cluster = spec.get("cluster") if isinstance(spec, dict) else None
    task = spec.get("task") if isinstance(spec, dict) else None
    problem = None
    if not isinstance(cluster, dict) or not isinstance(cluster.get("worker", cluster.get("chief")), list):
        problem = "no cluster.worker list"
    elif not all(isinstance(cluster.get(job, []), list) and all(_host_port(a) for a in cluster.get(job, []))
                 for job in ("chief", "worker")):
        problem = "cluster addresses must be host:port strings"
    elif len(cluster.get("chief", [])) > 1:
        problem = "at most one chief"
    elif not isinstance(task, dict) or task.get("type") not in ("chief", "worker"):
        problem = 'task.type must be "worker" (or "chief")'
    elif not isinstance(task.get("index"), int) or isinstance(task.get("index"), bool) \
            or not 0 <= task["index"] < len(cluster.get(task["type"], [])):
        problem = (f"task.index must be an integer from 0 to {len(cluster.get(task['type'], [])) - 1} "
                   f"(the position of this machine in cluster.{task['type']})")
    if problem:
        raise ConfigError(f"TF_CONFIG: {problem}; {TF_CONFIG_HELP}")
    return spec


def collective_timeout(environ=None):
    """Seconds from FMNIST_COLLECTIVE_TIMEOUT (default DEFAULT_COLLECTIVE_TIMEOUT); None: no timeout."""
    environ = os.environ if environ is None else environ
    text = environ.get(COLLECTIVE_TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_COLLECTIVE_TIMEOUT or None
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not (seconds >= 0 and np.isfinite(seconds)):
        raise ConfigError(f"{COLLECTIVE_TIMEOUT_ENV} must be a number of seconds (0: no timeout), got {text!r}")
    return seconds or None


def make_multiworker_strategy():
    """MultiWorkerMirroredStrategy from TF_CONFIG, with FMNIST_COLLECTIVE_TIMEOUT on its collectives
    (see the module doc for how a dead worker stops the others). Blocks until every worker has started.
    Must run before TensorFlow has started its devices in this process."""
    read_tf_config()
    timeout = collective_timeout()
    import tensorflow as tf

    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout)
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    try:
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver, communication_options=options)
    except (RuntimeError, ValueError) as exc:
        message = str(exc)
        if "startup" in message or "initialized" in message:
            raise ConfigError("--strategy multiworker must set TensorFlow up before it starts; run training "
                              "in a fresh process") from None
        raise


def task_of(strategy):
    """(task type, task index) of this process; ("worker", 0) outside a cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    task_id = getattr(resolver, "task_id", None)
    if task_type is None or task_id is None:
        return "worker", 0
    return task_type, int(task_id)


def is_chief(strategy):
    """Whether this process writes the run directory: the `chief` task, or worker 0 when the cluster
    has no chief. Any single-process strategy is its own chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type, task_id = task_of(strategy)
    if task_type == "chief":
        return True
    jobs = resolver.cluster_spec().as_dict() if resolver is not None else {}
    return task_type == "worker" and task_id == 0 and not jobs.get("chief")


# ---------------------------------------------------------------------------------------------------
# The run directory


def require_shared_run_dir(out, resume):
    """Every worker must name the same run directory: --out DIR or --resume DIR."""
    if not out and not resume:
        raise ConfigError("--strategy multiworker needs the run directory named on every worker: --out DIR "
                          "(the same path on all of them, on a filesystem they share) or --resume DIR")


def _scratch_dir(task_type, task_id):
    parent = os.environ.get(WORKER_SCRATCH_ENV)
    if parent:
        Path(parent).mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"fmnist-tf-{task_type}{task_id}-", dir=parent or None))
    if not parent:
        atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    return scratch


def open_worker_run(strategy, config, out, resume):
    """`fit.open_run` for a multi-worker run: (run directory, epochs done, backup weights or None).

    The chief opens the real run directory exactly as a single-process run does. Every other worker
    gets a scratch folder of its own for its callbacks' files (nothing of theirs lands in the run
    directory), but reads the resume point from the shared run directory, so that all workers restore
    the same backup and start at the same epoch.
    """
    from fmnist_tf.train.fit import open_run, resume_point

    require_shared_run_dir(out, resume)
    if is_chief(strategy):
        return open_run(config, out, resume)
    shared = Path(resume or out)
    initial_epoch, backup_path = resume_point(shared, config) if resume else (0, None)
    task_type, task_id = task_of(strategy)
    scratch = _scratch_dir(task_type, task_id)
    print(f"{task_type} {task_id} writes to {scratch} (the chief writes the run directory {shared})", flush=True)
    return scratch, initial_epoch, backup_path


# ---------------------------------------------------------------------------------------------------
# The training loop


def per_example_loss(loss):
    """`loss` without its reduction: one value per example (a Keras Loss rebuilt with reduction "none";
    a loss function is called as it is). TripletSemiHardLoss gives its batch loss once per example;
    a plain loss function may still return one scalar for the whole batch."""
    import keras

    if isinstance(loss, str):
        loss = keras.losses.get(loss)
    if isinstance(loss, keras.losses.Loss):
        return type(loss).from_config({**loss.get_config(), "reduction": "none"})
    if callable(loss):
        return loss
    raise ValueError(f"distributed_fit needs the model compiled with one loss, got {loss!r}")


def weighted_scores(matrix):
    """accuracy and support-weighted precision/recall/F1 of a confusion matrix (rows: true class),
    by `fmnist_tf.evaluate.scores.classification_scores` on the (true, predicted) pairs it counts."""
    from fmnist_tf.evaluate.scores import classification_scores

    matrix = np.rint(np.asarray(matrix)).astype(np.int64)
    if not matrix.sum():
        return {"accuracy": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    true, predicted = np.nonzero(matrix)
    counts = matrix[true, predicted]
    scores = classification_scores(np.repeat(true, counts), np.repeat(predicted, counts), len(matrix))
    return {key: scores[key] for key in ("accuracy", "precision", "recall", "f1")}


def _output_width(model):
    outputs = getattr(model, "outputs", None)
    if outputs and len(outputs) == 1 and len(outputs[0].shape) == 2:
        return outputs[0].shape[-1]
    return None


def _make_train_step(model, strategy, element_spec, label_shape):
    """A tf.function running one global step; returns SUM-reduced {"loss", "count"[, "matrix"]}:
    "loss" is the step's loss (the mean over the global batch), "count" the global batch size."""
    import tensorflow as tf

    loss_fn = per_example_loss(model.loss)
    optimizer = model.optimizer
    replicas = strategy.num_replicas_in_sync
    # one-hot labels as wide as the model's output: a classifier, scored with a confusion matrix
    label_width = label_shape[-1] if label_shape is not None and len(label_shape) == 2 else None
    classes = label_width if label_width and label_width > 1 and label_width == _output_width(model) else None

    def replica_loss(y, y_pred, global_count):
        values = tf.cast(loss_fn(y, y_pred), tf.float32)
        if values.shape.rank == 0:  # a loss function scoring the whole batch: average over replicas
            return values / replicas
        if values.shape.rank > 1:
            values = tf.reduce_mean(values, axis=list(range(1, values.shape.rank)))
        return tf.nn.compute_average_loss(values, global_batch_size=tf.cast(tf.round(global_count), tf.int64))

    def gradients_of(x, y, local_count, global_count):
        def forward():
            y_pred = model(x, training=True)
            loss = replica_loss(y, y_pred, global_count)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n([tf.cast(v, tf.float32) for v in model.losses]))
            matrix = tf.zeros((0, 0))
            if classes:
                matrix = tf.math.confusion_matrix(tf.argmax(y, axis=-1), tf.argmax(y_pred, axis=-1),
                                                  num_classes=classes, dtype=tf.float32)
            return loss, matrix

        def idle():  # this replica got no examples (the end of an epoch): it still joins the all-reduce
            return tf.constant(0.0), tf.zeros((classes, classes) if classes else (0, 0))

        with tf.GradientTape() as tape:
            # an empty batch must not reach the model: BatchNormalization would average zero
            # examples and write NaN into its moving statistics
            loss, matrix = tf.cond(local_count > 0, forward, idle)
            scaled = optimizer.scale_loss(loss)
        return loss, matrix, tape.gradient(scaled, model.trainable_variables)

    if model.jit_compile is True:  # XLA on the replica's own computation; the all-reduces stay outside
        gradients_of = tf.function(gradients_of, jit_compile=True)

    def replica_step(x, y):
        context = tf.distribute.get_replica_context()
        local_count = tf.cast(tf.shape(y)[0], tf.float32)
        # the real global batch: the last batch of an epoch may be smaller, and split unevenly
        global_count = context.all_reduce(tf.distribute.ReduceOp.SUM, local_count)
        loss, matrix, gradients = gradients_of(x, y, local_count, global_count)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        # one vector, so that the step's logs cost a single cross-worker reduction
        return tf.concat([tf.reshape(loss, [1]), tf.reshape(local_count, [1]), tf.reshape(matrix, [-1])], axis=0)

    @tf.function(input_signature=[element_spec])
    def train_step(batch):
        x, y = batch[0], batch[1]
        totals = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(replica_step, args=(x, y)), axis=None)
        outputs = {"loss": totals[0], "count": totals[1]}
        if classes:
            outputs["matrix"] = tf.reshape(totals[2:], (classes, classes))
        return outputs

    return train_step


def _make_state_sync(model, strategy):
    """A tf.function that sets every float non-trainable weight (BatchNormalization's moving
    statistics) to its mean over all replicas. Each replica updates its own copy of these in training
    (Keras creates them with aggregation "none"); after this, every worker saves, validates and backs
    up the same model."""
    import tensorflow as tf

    state = [w for w in model.non_trainable_weights if tf.as_dtype(w.dtype).is_floating]
    if not state or strategy.num_replicas_in_sync == 1:
        return lambda: None

    def replica_sync():
        context = tf.distribute.get_replica_context()
        # read each local copy on its device (a bare convert_to_tensor has none, which all_reduce refuses)
        means = context.all_reduce(tf.distribute.ReduceOp.MEAN, [tf.identity(w.value) for w in state])
        for weight, mean in zip(state, means):
            weight.assign(mean)

    @tf.function
    def sync():
        strategy.run(replica_sync)

    return sync


def distribute_training_dataset(make_train_ds, strategy):
    """Each worker's own input pipeline: `make_train_ds(shard=(replicas, first, count))` yields, of every
    global batch, only the parts of this worker's replicas (see `make_dataset`). Every worker shuffles
    with the same seed, so the parts cover each global batch once."""

    def worker_dataset(context):
        per_pipeline = context.num_replicas_in_sync // context.num_input_pipelines
        return make_train_ds(shard=(context.num_replicas_in_sync, context.input_pipeline_id * per_pipeline,
                                    per_pipeline))

    return strategy.distribute_datasets_from_function(worker_dataset)


def distributed_fit(model, make_train_ds, strategy, end_epoch, initial_epoch, callbacks, verbose):
    """`model.fit(make_train_ds(), epochs=end_epoch, initial_epoch=initial_epoch, callbacks=callbacks,
    verbose=verbose)` as a custom loop for MultiWorkerMirroredStrategy (or any other strategy).

    `make_train_ds(shard=None)` returns the training pipeline (batches of the global batch size), or
    with `shard` one worker's part of it (as `fmnist_tf.data.pipeline.make_dataset` does). `model` must
    be built and compiled inside `strategy.scope()`; with `jit_compile`, each replica's forward and
    backward pass is compiled with XLA. Each replica's loss is averaged over the global batch
    (`tf.nn.compute_average_loss`; a loss function returning one scalar per batch is divided by the
    number of replicas), regularisation losses are scaled likewise, and the optimizer sums the
    gradients of all replicas. The callbacks get the same calls as from `model.fit`, with "loss" (the
    epoch mean) and, for classifiers, "accuracy", "precision", "recall" and "f1" (weighted, over the
    whole global batch) in the epoch logs. Returns the History callback.
    """
    import keras
    import tensorflow as tf

    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
    whole = make_train_ds()
    cardinality = int(whole.cardinality())
    steps = cardinality if cardinality > 0 else None
    labels = whole.element_spec[1] if isinstance(whole.element_spec, tuple) else None
    dataset = distribute_training_dataset(make_train_ds, strategy)
    train_step = _make_train_step(model, strategy, dataset.element_spec, getattr(labels, "shape", None))
    sync_state = _make_state_sync(model, strategy)

    callback_list = keras.callbacks.CallbackList(callbacks, add_history=True, add_progbar=verbose != 0,
                                                 verbose=verbose, epochs=end_epoch, steps=steps, model=model)
    model.stop_training = False
    callback_list.on_train_begin()
    training_logs = None
    for epoch in range(initial_epoch, end_epoch):
        callback_list.on_epoch_begin(epoch)
        loss_total, count_total, matrix_total = 0.0, 0.0, None
        for step, batch in enumerate(dataset):
            callback_list.on_train_batch_begin(step)
            outputs = {key: value.numpy() for key, value in train_step(batch).items()}
            count = float(outputs["count"])
            loss_total += float(outputs["loss"]) * count
            count_total += count
            if "matrix" in outputs:
                matrix_total = outputs["matrix"] if matrix_total is None else matrix_total + outputs["matrix"]
            callback_list.on_train_batch_end(step, {"loss": loss_total / max(count_total, 1.0)})
            if model.stop_training:
                break
        sync_state()
        logs = {"loss": loss_total / max(count_total, 1.0)}
        if matrix_total is not None:
            logs.update(weighted_scores(matrix_total))
        callback_list.on_epoch_end(epoch, logs)
        training_logs = logs
        if model.stop_training:
            break
    callback_list.on_train_end(logs=training_logs)
    return next((cb for cb in callback_list.callbacks if isinstance(cb, keras.callbacks.History)), None)

"""The semi-hard triplet loss against a slow loop-by-loop reference, its edge cases and Keras use."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from fmnist_tf.data.pipeline import make_dataset
from fmnist_tf.train.triplet import TripletSemiHardLoss, class_ids, semi_hard_triplet_loss
from tests.conftest import synthetic_items


def reference_loss(labels, embeddings, margin):
    """TFA's triplet_semihard_loss, one anchor, positive and negative at a time, in float64."""
    labels = np.asarray(labels).reshape(-1)
    points = np.asarray(embeddings, dtype=np.float64)
    size = len(labels)
    distance = np.sqrt(((points[:, None, :] - points[None, :, :]) ** 2).sum(axis=-1))
    total, pairs = 0.0, 0
    for a in range(size):
        negatives = [distance[a, n] for n in range(size) if labels[n] != labels[a]]
        for p in range(size):
            if p == a or labels[p] != labels[a]:
                continue
            farther = [d for d in negatives if d > distance[a, p]]
            if farther:
                d_an = min(farther)           # semi-hard: the closest negative beyond the positive
            elif negatives:
                d_an = max(negatives)         # none: the farthest negative
            else:
                d_an = 0.0                    # no negative at all (TFA's masked maximum of nothing)
            total += max(distance[a, p] - d_an + margin, 0.0)
            pairs += 1
    return total / pairs if pairs else 0.0


def unit_rows(rng, size, dim):
    points = rng.normal(size=(size, dim)).astype(np.float32)
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def loss_value(labels, embeddings, margin=0.2):
    return float(keras.ops.convert_to_numpy(semi_hard_triplet_loss(labels, embeddings, margin)))


def test_matches_reference_on_random_batches():
    rng = np.random.default_rng(7)
    checked = 0
    for trial in range(25):
        size, classes = int(rng.integers(2, 48)), int(rng.integers(1, 9))
        labels = rng.integers(0, classes, size)
        embeddings = unit_rows(rng, size, int(rng.integers(2, 16)))
        margin = float(rng.choice([0.2, 0.5, 1.0]))
        expected = reference_loss(labels, embeddings, margin)
        assert loss_value(labels, embeddings, margin) == pytest.approx(expected, abs=2e-5), trial
        checked += expected > 0
    assert checked >= 15  # most batches have a non-trivial loss


def test_matches_reference_for_unnormalised_embeddings_and_ties():
    rng = np.random.default_rng(3)
    embeddings = rng.normal(scale=3.0, size=(30, 5)).astype(np.float32)
    embeddings[5] = embeddings[4]  # a duplicate: zero distance, ties with d_ap
    labels = rng.integers(0, 4, 30)
    assert loss_value(labels, embeddings, 0.2) == pytest.approx(reference_loss(labels, embeddings, 0.2), rel=1e-5)
    # a grid gives many exactly equal distances: d_an == d_ap is not semi-hard (strictly farther)
    grid = np.array([[x, y] for x in range(4) for y in range(4)], dtype=np.float32)
    grid_labels = np.arange(16) % 3
    assert loss_value(grid_labels, grid, 1.0) == pytest.approx(reference_loss(grid_labels, grid, 1.0), rel=1e-6)


@pytest.mark.parametrize("shape", ["ids", "column", "one_hot"])
def test_label_formats_agree(shape):
    rng = np.random.default_rng(11)
    ids = rng.integers(0, 5, 40)
    embeddings = unit_rows(rng, 40, 8)
    labels = {"ids": ids, "column": ids[:, None], "one_hot": np.eye(5, dtype=np.float32)[ids]}[shape]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(class_ids(labels)), ids)
    assert loss_value(labels, embeddings) == pytest.approx(reference_loss(ids, embeddings, 0.2), abs=2e-5)


def test_single_class_batch_uses_no_negative_as_zero():
    rng = np.random.default_rng(5)
    embeddings = unit_rows(rng, 6, 4)
    expected = reference_loss(np.zeros(6), embeddings, 0.2)
    assert expected > 0.2  # mean(d_ap) + margin
    assert loss_value(np.zeros(6), embeddings) == pytest.approx(expected, rel=1e-5)


def test_zero_when_classes_are_separated_beyond_the_margin():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(4), 8)
    embeddings = np.eye(4, dtype=np.float32)[labels] + rng.normal(scale=0.01, size=(32, 4)).astype(np.float32)
    # class centres are sqrt(2) apart, each cluster ~0.03 wide
    assert loss_value(labels, embeddings, margin=0.5) == 0.0
    assert loss_value(labels, embeddings, margin=1.3) == 0.0
    # a margin beyond the gap, or shuffled labels, and the loss is back
    near_margin = loss_value(labels, embeddings, margin=1.5)
    assert near_margin == pytest.approx(reference_loss(labels, embeddings, 1.5), abs=2e-5)
    assert 1.5 - np.sqrt(2) < near_margin < 0.2  # margin - gap, plus the clusters' widths
    shuffled = rng.permutation(labels)
    assert loss_value(shuffled, embeddings, margin=0.5) == pytest.approx(
        reference_loss(shuffled, embeddings, 0.5), abs=2e-5)
    assert loss_value(shuffled, embeddings, margin=0.5) > 0.3


def gradient(labels, embeddings):
    variable = tf.Variable(embeddings)
    with tf.GradientTape() as tape:
        loss = semi_hard_triplet_loss(labels, variable, 0.2)
    return float(loss), tape.gradient(loss, variable).numpy()


def test_finite_gradients_with_a_single_sample_class_and_duplicates():
    rng = np.random.default_rng(2)
    embeddings = unit_rows(rng, 7, 4)
    embeddings[1] = embeddings[0]  # zero distance between a positive pair: sqrt's derivative there is infinite
    embeddings[6] = embeddings[2]  # and between a negative pair
    labels = np.array([0, 0, 1, 1, 1, 2, 3])  # classes 2 and 3 have one sample each
    loss, grad = gradient(labels, embeddings)
    assert loss > 0 and np.isfinite(grad).all() and np.abs(grad).sum() > 0
    # the loss really is differentiable there: a small step against the gradient lowers it
    assert loss_value(labels, embeddings - 0.05 * grad) < loss


def test_finite_gradients_at_exactly_zero_distances():
    """Integer coordinates make the Gram-matrix distances exact: duplicates are exactly 0 apart, where
    a plain sqrt would give an infinite derivative (and 0 * inf = NaN on the diagonal)."""
    embeddings = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]], np.float32)
    labels = np.array([0, 0, 1, 1, 2, 2])
    loss, grad = gradient(labels, embeddings)
    assert loss == pytest.approx(reference_loss(labels, embeddings, 0.2), abs=1e-6)
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 0


def test_no_positive_pair_gives_zero_loss_and_zero_gradient():
    embeddings = unit_rows(np.random.default_rng(4), 8, 4)
    loss, grad = gradient(np.arange(8), embeddings)  # every sample its own class
    assert loss == 0.0 and np.isfinite(grad).all() and not grad.any()
    loss, grad = gradient(np.array([0]), embeddings[:1])
    assert loss == 0.0 and np.isfinite(grad).all()


def test_works_in_a_graph_with_an_unknown_batch_size():
    graph_loss = tf.function(semi_hard_triplet_loss, input_signature=[
        tf.TensorSpec([None, 10], tf.float32), tf.TensorSpec([None, 16], tf.float32)])
    rng = np.random.default_rng(9)
    for size in (1, 17, 64):
        ids = rng.integers(0, 10, size)
        embeddings = unit_rows(rng, size, 16)
        value = float(graph_loss(np.eye(10, dtype=np.float32)[ids], embeddings))
        assert value == pytest.approx(reference_loss(ids, embeddings, 0.2), abs=2e-5)


def tiny_embedder(size=16):
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(size)(x)
    return keras.Model(inputs, keras.layers.UnitNormalization()(x))


def test_compiled_loss_trains_a_model_and_saves_with_it(tmp_path):
    keras.utils.set_random_seed(0)
    images, labels = synthetic_items(200, seed=3)
    dataset = make_dataset(images, labels, 10, 50, training=True, seed=0)  # one-hot labels, as in training
    model = tiny_embedder()
    loss = TripletSemiHardLoss(1.0)  # the synthetic classes are easy: margin 0.2 is met almost at once
    model.compile(optimizer=keras.optimizers.Adam(0.003), loss=loss)
    # Keras' reduction leaves the batch loss unchanged: the compiled loss is the function's value
    batch_images, batch_labels = next(iter(make_dataset(images, labels, 10, 64)))
    expected = loss_value(batch_labels.numpy(), model.predict(batch_images, verbose=0), 1.0)
    assert expected > 0.1
    assert model.evaluate(batch_images, batch_labels, batch_size=64, verbose=0) == pytest.approx(expected, rel=1e-5)
    assert float(loss(batch_labels, model(batch_images))) == pytest.approx(expected, rel=1e-5)
    before = loss_value(labels, model.predict(make_dataset(images, labels, 10, 100), verbose=0), 1.0)
    history = model.fit(dataset, epochs=6, shuffle=False, verbose=0).history["loss"]
    after = loss_value(labels, model.predict(make_dataset(images, labels, 10, 100), verbose=0), 1.0)
    assert all(np.isfinite(history)) and history[0] > 0.1
    assert history[-1] < 0.2 * history[0] and after < 0.2 * before
    # the registered loss comes back with the compiled model in safe mode
    model.save(tmp_path / "model.keras")
    restored = keras.models.load_model(tmp_path / "model.keras", safe_mode=True)
    assert isinstance(restored.loss, TripletSemiHardLoss) and restored.loss.margin == 1.0


def test_get_config_round_trip():
    loss = TripletSemiHardLoss(margin=0.35, name="triplet")
    config = loss.get_config()
    assert config["margin"] == 0.35 and config["name"] == "triplet"
    restored = TripletSemiHardLoss.from_config(config)
    assert restored.margin == 0.35 and restored.name == "triplet"
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(again, TripletSemiHardLoss) and again.margin == 0.35
    rng = np.random.default_rng(0)
    labels, embeddings = rng.integers(0, 3, 20), unit_rows(rng, 20, 4)
    assert float(again(labels, embeddings)) == pytest.approx(loss_value(labels, embeddings, 0.35), rel=1e-6)


def test_call_gives_one_value_per_example_so_keras_scales_it_for_distribution():
    """Keras divides a loss by the replica count only when it reduces per-example values; a bare
    scalar would make N replicas sum N times the gradient (measured: the logged loss doubled on 2)."""
    rng = np.random.default_rng(0)
    labels, embeddings = rng.integers(0, 3, 12), rng.normal(size=(12, 8)).astype("float32")
    values = keras.ops.convert_to_numpy(TripletSemiHardLoss(0.2).call(labels, embeddings))
    expected = float(keras.ops.convert_to_numpy(semi_hard_triplet_loss(labels, embeddings, 0.2)))
    assert values.shape == (12,) and np.allclose(values, expected)
    assert float(keras.ops.convert_to_numpy(TripletSemiHardLoss(0.2)(labels, embeddings))) == pytest.approx(expected)

"""The ZFNet-like embedding model, kNN scoring, the t-SNE plot and the KnnValidation callback."""

import cv2
import keras
import numpy as np
import pytest

from fmnist_tf.data.pipeline import make_dataset, to_model_input
from fmnist_tf.evaluate.embedding import knn_accuracy, knn_predict, save_tsne_plot, subsample
from fmnist_tf.models import create_model
from fmnist_tf.models.flops import forward_flops
from fmnist_tf.models.registry import model_task
from fmnist_tf.modelio import is_embedding_model
from fmnist_tf.train.knn import KnnValidation, batched_triplet_loss
from fmnist_tf.train.triplet import TripletSemiHardLoss, semi_hard_triplet_loss
from tests.conftest import synthetic_items


@pytest.fixture(scope="module")
def images():
    return to_model_input(synthetic_items(12, seed=4)[0])


def test_embedding_model_gives_unit_vectors(images):
    model = create_model("embedding", dropout=0.0)
    assert model_task("embedding") == "embed" and is_embedding_model(model)
    assert model.layers[-1].name == "embedding"
    embeddings = model.predict(images, verbose=0)
    assert embeddings.shape == (12, 128) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert np.ptp(embeddings, axis=0).max() > 1e-3  # different images, different embeddings
    # the deep classifier's size class (REFERENCE §5 adapted to 28x28; see the module doc)
    assert 40e6 <= forward_flops(model) <= 60e6
    assert 1.5e6 <= model.count_params() <= 2.5e6


def test_embedding_size_width_and_dropout_are_honoured(images):
    model = create_model("embedding", width=0.25, dropout=0.3, embedding_size=16)
    assert model.output_shape == (None, 16)
    assert model.get_layer("stage1_a_conv").filters == 8 and model.get_layer("fc1_dropout").rate == 0.3
    assert "fc1_dropout" not in {layer.name for layer in create_model("embedding", dropout=0.0).layers}


def test_mixed_precision_keeps_a_float32_unit_output(images):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = create_model("embedding", width=0.25, dropout=0.0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("stage1_a_conv").compute_dtype == "float16"
    embeddings = model.predict(images, verbose=0)
    assert embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


def test_round_trips_through_a_keras_file_in_safe_mode(tmp_path, images):
    model = create_model("embedding", width=0.5, dropout=0.2, mean=0.3, variance=0.1)
    model.compile(optimizer="adam", loss=TripletSemiHardLoss(0.2))
    model.fit(images, np.arange(12) % 3, epochs=1, batch_size=12, verbose=0)  # BN statistics move
    model.save(tmp_path / "embedding.keras")
    restored = keras.models.load_model(tmp_path / "embedding.keras", safe_mode=True, compile=False)
    assert is_embedding_model(restored)
    np.testing.assert_array_equal(restored.predict(images, verbose=0), model.predict(images, verbose=0))


def clusters(rng, count, classes=5, spread=0.05, dim=8):
    labels = rng.integers(0, classes, count)
    centres = rng.normal(size=(classes, dim)) * 3
    return (centres[labels] + rng.normal(scale=spread, size=(count, dim))).astype(np.float32), labels


def test_knn_accuracy_on_separated_clusters_and_on_noise():
    rng = np.random.default_rng(0)
    points, labels = clusters(rng, 300)
    assert knn_accuracy(points[:200], labels[:200], points[200:], labels[200:], k=13) == 1.0
    np.testing.assert_array_equal(knn_predict(points[:200], labels[:200], points[200:], k=5), labels[200:])
    noise = rng.normal(size=(600, 8)).astype(np.float32)
    random_labels = rng.integers(0, 10, 600)
    chance = knn_accuracy(noise[:400], random_labels[:400], noise[400:], random_labels[400:], k=13)
    assert 0.0 <= chance < 0.22  # chance is 0.1
    # k above the gallery size is reduced to it: the majority class of the whole gallery
    assert (knn_predict(points[:3], np.array([4, 4, 1]), points[200:210], k=13) == 4).all()


def test_save_tsne_plot_writes_a_png(tmp_path):
    rng = np.random.default_rng(1)
    points, labels = clusters(rng, 150, classes=3)
    names = ("T-shirt/top", "Trouser", "Pullover", "Dress")  # one class absent from the points
    path = save_tsne_plot(points, labels, names, tmp_path / "tsne.png", max_points=120, seed=0)
    assert path == tmp_path / "tsne.png"
    picture = cv2.imread(str(path))
    assert picture is not None and 400 <= picture.shape[0] <= 1500 and 400 <= picture.shape[1] <= 1500
    assert len(np.unique(picture.reshape(-1, 3), axis=0)) > 10  # coloured points, not a blank canvas
    assert [p.name for p in tmp_path.iterdir()] == ["tsne.png"]  # written atomically, no temporary left
    chosen = subsample(150, 120, seed=0)
    assert len(chosen) == len(set(chosen)) == 120 and (subsample(150, 120, seed=0) == chosen).all()
    assert (subsample(50, 120) == np.arange(50)).all()


def tiny_embedder():
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(8)(x)
    return keras.Model(inputs, keras.layers.UnitNormalization()(x))


def test_knn_validation_logs_accuracy_and_triplet_loss():
    keras.utils.set_random_seed(0)
    (train_images, train_labels), (val_images, val_labels) = synthetic_items(120, 5), synthetic_items(40, 6)
    gallery_ds = make_dataset(train_images, train_labels, 10, 64)
    val_ds = make_dataset(val_images, val_labels, 10, 16)
    callback = KnnValidation(gallery_ds, train_labels, val_ds, val_labels, k=5, margin=0.3, loss_batch_size=16)
    model = tiny_embedder()
    model.compile(optimizer=keras.optimizers.Adam(0.003), loss=TripletSemiHardLoss(0.3))
    history = model.fit(make_dataset(train_images, train_labels, 10, 40, training=True), epochs=2,
                        callbacks=[callback], shuffle=False, verbose=0).history
    assert len(history["val_knn_accuracy"]) == len(history["val_loss"]) == 2
    # the last epoch's values are those of the final model, from both datasets and the int labels
    gallery = model.predict(to_model_input(train_images), verbose=0)
    val = model.predict(to_model_input(val_images), verbose=0)
    assert history["val_knn_accuracy"][-1] == knn_accuracy(gallery, train_labels, val, val_labels, k=5)
    assert history["val_knn_accuracy"][-1] > 0.3  # the synthetic classes are easy; chance is 0.1
    chunks = [float(semi_hard_triplet_loss(val_labels[i:i + 16], val[i:i + 16], 0.3)) for i in (0, 16, 32)]
    assert history["val_loss"][-1] == pytest.approx(np.average(chunks, weights=[16, 16, 8]), rel=1e-5)
    assert history["val_loss"][-1] == pytest.approx(batched_triplet_loss(val, val_labels, 0.3, 16), rel=1e-5)

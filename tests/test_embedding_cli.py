"""Issue 7, embeddings end to end: train -c embedding, evaluate (kNN, t-SNE), the frozen-embedding
classifier, and `embed` retrieval."""

import csv
import json

import cv2
import keras
import numpy as np
import pytest

from fmnist_tf.models.transfer import BACKBONE
from tests.conftest import run_cli, write_class_tree


@pytest.fixture(scope="module")
def embedding_run(tiny_data, tmp_path_factory):
    from fmnist_tf.cli import main

    run = tmp_path_factory.mktemp("runs") / "embedding"
    assert main(["train", "-c", "embedding", "--data", str(tiny_data), "--out", str(run), "--epochs", "3",
                 "--batch-size", "64", "--width", "0.25", "--knn-k", "5"]) == 0
    return run


def test_history_logs_knn_accuracy_and_best_is_chosen_by_it(embedding_run):
    with open(embedding_run / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and {"loss", "val_loss", "val_knn_accuracy"} <= set(rows[0])
    assert all(0.0 <= float(row["val_knn_accuracy"]) <= 1.0 for row in rows)
    best = keras.models.load_model(embedding_run / "best.keras", safe_mode=True, compile=False)
    embeddings = best.predict(np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32), verbose=0)
    assert embeddings.shape == (4, 128) and np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


def test_evaluate_reports_knn_test_accuracy_and_saves_tsne(embedding_run, capsys):
    code, out, err = run_cli(["evaluate", embedding_run], capsys)
    assert code == 0, err
    assert "test kNN (k=5) accuracy" in out
    metrics = json.loads((embedding_run / "metrics.json").read_text())
    assert metrics["knn_k"] == 5 and metrics["gallery_size"] == 300 and metrics["test_size"] == 100
    assert metrics["accuracy"] > 0.5  # the synthetic classes are easy; chance is 0.1
    plot = cv2.imread(str(embedding_run / "plots" / "tsne.png"))
    assert plot is not None and plot.shape[0] > 300


def test_evaluate_also_scores_knn_against_the_split_the_run_trained_on(embedding_run, tiny_data, capsys):
    from fmnist_tf.data.fashion_mnist import load_split
    from fmnist_tf.data.prepare import split_indices
    from fmnist_tf.evaluate.embedding import knn_accuracy

    code, out, err = run_cli(["evaluate", embedding_run], capsys)
    assert code == 0, err
    metrics = json.loads((embedding_run / "metrics.json").read_text())
    train_images, train_labels = load_split("train", tiny_data)
    test_images, test_labels = load_split("test", tiny_data)
    fit, _ = split_indices(train_labels, 0.1, 42)  # the embedding config's val_fraction and seed
    model = keras.models.load_model(embedding_run / "best.keras", safe_mode=True, compile=False)
    embed = lambda images: model.predict(images[..., None].astype(np.float32) / 255.0, verbose=0)  # noqa: E731
    expected = knn_accuracy(embed(train_images[fit]), train_labels[fit], embed(test_images), test_labels, k=5)
    assert metrics["fit_split_gallery_size"] == len(fit) == 270
    assert metrics["fit_split_gallery_accuracy"] == pytest.approx(expected, abs=1e-9)
    assert "images the run trained on" in out


def test_classifier_head_on_the_frozen_embedding(embedding_run, tiny_data, tmp_path, capsys):
    code, out, err = run_cli(["train", "-c", "embedding_classifier", "--from", embedding_run, "--data", tiny_data,
                              "--out", tmp_path / "head", "--epochs", "2"], capsys)
    assert code == 0, err
    model = keras.models.load_model(tmp_path / "head" / "last.keras", safe_mode=True, compile=False)
    assert [layer.name for layer in model.layers[-4:]] == ["head_dropout", "head_fc", "head_fc_dropout",
                                                          "predictions"]
    assert model.get_layer("head_fc").units == 64 and not model.get_layer(BACKBONE).trainable
    source = keras.models.load_model(embedding_run / "best.keras", safe_mode=True, compile=False)
    frozen = model.get_layer(BACKBONE).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(source.get_weights(), frozen))


def test_embed_lists_the_nearest_gallery_images(embedding_run, tmp_path, capsys):
    gallery = write_class_tree(tmp_path / "gallery", per_class=4)
    query = next((gallery / "coats").glob("*.png"))
    code, out, err = run_cli(["embed", embedding_run, query, "--gallery", gallery, "--top", "12", "--json"], capsys)
    assert code == 0, err
    [result] = json.loads(out)
    neighbours = result["neighbours"]
    assert len(neighbours) == 12  # the whole gallery, nearest first
    assert [n["distance"] for n in neighbours] == sorted(n["distance"] for n in neighbours)
    # itself at distance ~0 (the query is embedded in another batch than the gallery: float noise),
    # so among the nearest; this barely trained embedding may put other coats as near
    [itself] = [n for n in neighbours if n["path"] == str(query)]
    assert itself["distance"] < 1e-3 and neighbours[0]["label"] == "coats"
    code, out, err = run_cli(["embed", embedding_run, query, "--gallery", gallery, "--top", "3", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)[0]["neighbours"] == neighbours[:3]


def test_embed_refuses_a_classifier_and_an_empty_gallery(embedding_run, tiny_data, tmp_path, capsys):
    classifier = tmp_path / "cls"
    code, _, err = run_cli(["train", "-c", "baseline", "--data", tiny_data, "--out", classifier, "--epochs", "1",
                            "--width", "0.125"], capsys)
    assert code == 0, err
    image = write_class_tree(tmp_path / "g", per_class=1) / "boots" / "0.png"
    (tmp_path / "empty").mkdir()
    for args, message in ((["embed", classifier, image, "--gallery", tmp_path / "g"], "not an embedding model"),
                          (["embed", embedding_run, image, "--gallery", tmp_path / "empty"], "no images")):
        code, _, err = run_cli(args, capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1

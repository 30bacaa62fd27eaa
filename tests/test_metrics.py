import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import precision_recall_fscore_support

from fmnist_tf.evaluate.scores import classification_scores
from fmnist_tf.train.metrics import WeightedScore


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 60))
def test_streaming_weighted_scores_match_scikit_learn(seed, count):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 4, count)
    y_pred = np.where(rng.random(count) < 0.6, y_true, rng.integers(0, 4, count))
    expected = precision_recall_fscore_support(y_true, y_pred, labels=range(4), average="weighted",
                                               zero_division=0)[:3]
    for score, want in zip(WeightedScore.SCORES, expected):
        metric = WeightedScore(score, 4)
        half = count // 2  # two updates: the confusion matrix must accumulate
        for part in (slice(0, half), slice(half, count)):
            metric.update_state(np.eye(4)[y_true[part]], np.eye(4)[y_pred[part]] * 0.7 + 0.05)
        assert abs(float(metric.result()) - want) < 1e-5
        metric.reset_state()
        assert float(metric.result()) == 0.0


def test_classification_scores_class_accuracy():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 0, 0])
    scores = classification_scores(y_true, y_pred, 4)
    assert scores["class_accuracy"] == [0.5, 1.0, 0.0, 0.0]
    assert scores["accuracy"] == 0.5 and scores["recall"] == 0.5


@pytest.mark.parametrize("rates", [[0.0], [0.1, 0.05, 0.0]], ids=["one-epoch", "three-epochs"])
def test_training_curves_of_a_cosine_run_that_ends_at_zero_learning_rate(rates, tmp_path):
    """A log LR axis cannot show the final 0 of a cosine schedule: the plot must not warn."""
    import warnings

    from fmnist_tf.evaluate.plots import save_training_curves

    rows = [{"epoch": str(e), "loss": str(1.0 / (e + 1)), "val_loss": "0.5", "learning_rate": str(lr),
             "epoch_seconds": "2.0"} for e, lr in enumerate(rates)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        save_training_curves(rows, ["a", "b"], tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 0


def _tiny_model(embedding):
    import keras

    inputs = keras.Input((6, 5, 1))
    x = keras.layers.Flatten()(inputs)
    if embedding:
        outputs = keras.layers.UnitNormalization(name="embedding")(keras.layers.Dense(4)(x))
    else:
        outputs = keras.layers.Dense(3, activation="softmax")(x)
    keras.utils.set_random_seed(3)
    return keras.Model(inputs, outputs)


def test_flip_tta_averages_the_image_and_its_left_right_mirror():
    from fmnist_tf.evaluate.report import model_outputs

    model = _tiny_model(embedding=False)
    images = np.random.default_rng(0).integers(0, 256, (7, 6, 5), dtype=np.uint8)
    plain = model_outputs(model, images, 4, flip_tta=False)
    mirrored = model_outputs(model, images[:, :, ::-1].copy(), 4, flip_tta=False)
    averaged = model_outputs(model, images, 4, flip_tta=True)
    np.testing.assert_allclose(averaged, (plain + mirrored) / 2, rtol=1e-5, atol=1e-6)
    assert not np.allclose(averaged, plain)  # the mirror image really changed the prediction
    np.testing.assert_allclose(averaged.sum(axis=1), 1.0, rtol=1e-5)


def test_flip_tta_embeddings_stay_unit_vectors():
    from fmnist_tf.evaluate.report import model_outputs

    images = np.random.default_rng(1).integers(0, 256, (5, 6, 5), dtype=np.uint8)
    embeddings = model_outputs(_tiny_model(embedding=True), images, 4, flip_tta=True)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)


def test_paired_comparison_counts_disagreements_and_mcnemar_p():
    from fmnist_tf.evaluate.scores import paired_comparison

    labels = np.array([0, 1, 2, 3, 4, 5, 6, 7])
    a = np.array([0, 1, 2, 3, 4, 5, 0, 0])  # right on 6
    b = np.array([0, 1, 9, 9, 9, 9, 6, 0])  # right on 3
    result = paired_comparison(labels, a, b)
    assert result["accuracy_a"] == 6 / 8 and result["accuracy_b"] == 3 / 8
    assert (result["only_a_right"], result["only_b_right"]) == (4, 1)
    assert result["mcnemar_exact_p"] == pytest.approx(2 * 6 / 32)  # P(X <= 1) + P(X >= 4), X ~ Bin(5, .5)
    assert paired_comparison(labels, a, a)["mcnemar_exact_p"] == 1.0


def test_test_predictions_round_trip_with_commas_in_class_names(tmp_path):
    from fmnist_tf.errors import FmnistError
    from fmnist_tf.evaluate.report import read_test_predictions, save_test_predictions

    path = tmp_path / "test_predictions.csv"
    save_test_predictions(np.array([1, 0, 1]), np.array([1, 1, 0]), ["goldfish, Carassius auratus", "cat"], path)
    labels, predicted = read_test_predictions(path)
    assert labels.tolist() == [1, 0, 1] and predicted.tolist() == [1, 1, 0]
    (tmp_path / "bad.csv").write_text("index,label\n0,cat\n")
    with pytest.raises(FmnistError, match="bad.csv"):
        read_test_predictions(tmp_path / "bad.csv")

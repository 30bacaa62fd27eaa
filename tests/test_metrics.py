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

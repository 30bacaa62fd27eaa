"""Classification scores from scikit-learn, shared by training (validation) and `evaluate`, and a
paired comparison of two models on the same test images."""

import numpy as np
from scipy.stats import binomtest
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support


def classification_scores(y_true, y_pred, num_classes):
    """Accuracy, weighted precision/recall/F1 and per-class accuracy (= per-class recall)."""
    labels = np.arange(num_classes)
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="weighted", zero_division=0)
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    support = matrix.sum(axis=1)
    class_accuracy = np.divide(np.diag(matrix), support, out=np.zeros(num_classes), where=support > 0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "class_accuracy": [float(a) for a in class_accuracy],
    }


def paired_comparison(labels, predicted_a, predicted_b):
    """Accuracies of A and B, how many images only A (only B) gets right, and McNemar's exact
    two-sided p-value: the chance of a split at least this uneven if both were equally accurate."""
    labels, predicted_a, predicted_b = (np.asarray(a).reshape(-1) for a in (labels, predicted_a, predicted_b))
    right_a, right_b = predicted_a == labels, predicted_b == labels
    only_a, only_b = int(np.sum(right_a & ~right_b)), int(np.sum(right_b & ~right_a))
    p_value = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return {"accuracy_a": float(right_a.mean()), "accuracy_b": float(right_b.mean()),
            "only_a_right": only_a, "only_b_right": only_b, "mcnemar_exact_p": float(p_value)}

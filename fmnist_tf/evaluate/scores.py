"""Classification scores from scikit-learn, shared by training (validation) and `evaluate`."""

import numpy as np
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

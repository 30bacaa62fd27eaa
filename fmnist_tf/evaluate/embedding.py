"""Scoring and showing embeddings: kNN classification against a gallery, and a t-SNE map."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402
from sklearn.neighbors import KNeighborsClassifier  # noqa: E402

from fmnist_tf.fileio import atomic_save_figure  # noqa: E402


def knn_predict(gallery_embeddings, gallery_labels, query_embeddings, k=13):
    """The majority class of each query's k nearest gallery embeddings (Euclidean; ties go to the
    lowest class id, as in scikit-learn). k larger than the gallery is reduced to the gallery size."""
    gallery_labels = np.asarray(gallery_labels).reshape(-1)
    classifier = KNeighborsClassifier(n_neighbors=min(int(k), len(gallery_labels)), metric="euclidean")
    classifier.fit(np.asarray(gallery_embeddings), gallery_labels)
    return classifier.predict(np.asarray(query_embeddings))


def knn_accuracy(gallery_embeddings, gallery_labels, query_embeddings, query_labels, k=13) -> float:
    """Fraction of queries whose kNN class (see `knn_predict`) is their label."""
    predicted = knn_predict(gallery_embeddings, gallery_labels, query_embeddings, k)
    return float(np.mean(predicted == np.asarray(query_labels).reshape(-1)))


def subsample(count, max_points, seed=0):
    """Sorted indices of a seeded random subset of at most `max_points` of `count` items (all of them
    when there are few enough): each class keeps about its share."""
    if count <= max_points:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=max_points, replace=False))


def tsne_2d(embeddings, seed=0):
    """(N, 2) t-SNE coordinates; perplexity 30, lowered for tiny sets (it must stay below N)."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    perplexity = min(30.0, max(1.0, (len(embeddings) - 1) / 3))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(embeddings)


def save_tsne_plot(embeddings, labels, class_names, path, max_points=2000, seed=0):
    """t-SNE map of (a seeded random subset of at most `max_points` of) the embeddings, one colour per
    class with a legend of class names, written atomically as PNG. Returns the path."""
    labels = np.asarray(labels).reshape(-1)
    chosen = subsample(len(labels), max_points, seed)
    points, labels = tsne_2d(np.asarray(embeddings)[chosen], seed), labels[chosen]
    colours = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(9, 8))
    for index, name in enumerate(class_names):
        mine = labels == index
        if mine.any():
            ax.scatter(points[mine, 0], points[mine, 1], s=6, color=colours(index % colours.N), label=name)
    ax.set_title(f"t-SNE of {len(labels)} embeddings")
    ax.set_xticks([])
    ax.set_yticks([])
    if len(class_names) <= 20:  # a longer legend would hide the plot
        ax.legend(markerscale=3, fontsize=8, loc="best")
    atomic_save_figure(fig, path)
    plt.close(fig)
    return path

"""`fmnist-tf embed`: retrieval with an embedding model: the gallery images nearest to each query."""

from pathlib import Path

import numpy as np
from sklearn.metrics.pairwise import euclidean_distances

from fmnist_tf.data.folders import IMAGE_SUFFIXES, is_image_file
from fmnist_tf.data.pipeline import to_model_input
from fmnist_tf.data.sources import image_loader
from fmnist_tf.errors import DataError, ModelFileError
from fmnist_tf.modelio import image_format_for, is_embedding_model, load_model, resolve_model_path


def gallery_images(folder):
    """Every image file under `folder` (recursively), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"--gallery {folder}: no such folder")
    paths = sorted(p for p in folder.rglob("*") if is_image_file(p) and p.is_file())
    if not paths:
        raise DataError(f"--gallery {folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in it")
    return paths


def embed_files(model, paths, load, batch_size=256):
    images = np.stack([load(path, size=int(model.input_shape[1])) for path in paths])
    return model.predict(to_model_input(images), batch_size=batch_size, verbose=0)


def nearest_gallery_images(run_or_model, query_paths, gallery, top=5):
    """For each query image, the `top` nearest gallery images by embedding distance. The label of a
    gallery image is its subfolder under `gallery` (none for images at the top level)."""
    model_path = resolve_model_path(run_or_model)
    model = load_model(model_path)
    if not is_embedding_model(model):
        raise ModelFileError(f"{model_path}: not an embedding model (it ends in class probabilities); "
                             f"train one with: fmnist-tf train -c embedding")
    load = image_loader(image_format_for(model_path))  # as its training images were prepared
    gallery = Path(gallery)
    gallery_paths = gallery_images(gallery)
    gallery_embeddings = embed_files(model, gallery_paths, load)
    query_embeddings = embed_files(model, query_paths, load)
    # scikit-learn sums in float64: in float32, 2 - 2 q.g rounds every distance below ~3e-4 to 0
    distances = euclidean_distances(query_embeddings, gallery_embeddings)
    results = []
    for path, row in zip(query_paths, distances):
        order = np.argsort(row, kind="stable")[:top]
        results.append({"path": str(path), "neighbours": [
            {"path": str(gallery_paths[i]), "distance": float(row[i]),
             "label": gallery_paths[i].parent.name if gallery_paths[i].parent != gallery else None}
            for i in order]})
    return results

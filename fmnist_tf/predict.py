"""`fmnist-tf predict`: classify real image files with a trained model."""

import numpy as np

from fmnist_tf.data.pipeline import to_model_input
from fmnist_tf.modelio import class_names_for, load_model, resolve_model_path
from fmnist_tf.vision.preprocess import load_as_fashion_mnist


def predict_images(run_or_model, image_paths, top=3):
    """Returns one dict per image: path, class index and name, probability and the top-k."""
    model_path = resolve_model_path(run_or_model)
    class_names = class_names_for(model_path)
    model = load_model(model_path)
    size = model.input_shape[1]
    batch = np.stack([load_as_fashion_mnist(path, size=size) for path in image_paths])
    probabilities = np.asarray(model(to_model_input(batch), training=False))
    results = []
    for path, probs in zip(image_paths, probabilities):
        order = np.argsort(-probs)[:top]
        results.append({
            "path": str(path), "class": int(order[0]), "name": class_names[order[0]],
            "probability": float(probs[order[0]]),
            "top": [{"name": class_names[i], "probability": float(probs[i])} for i in order],
        })
    return results

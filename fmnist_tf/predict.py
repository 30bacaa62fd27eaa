"""`fmnist-tf predict`: classify real image files with a trained or exported model."""

import numpy as np

from fmnist_tf.data.sources import image_loader
from fmnist_tf.inference import open_classifier


def predict_images(run_or_model, image_paths, top=3, backend="keras"):
    """Returns one dict per image: path, class index and name, probability and the top-k.
    `run_or_model`: a run directory, .keras, .tflite, .onnx or SavedModel folder."""
    classifier = open_classifier(run_or_model, backend=backend)
    load = image_loader(classifier.image_format)  # as the model's training images were prepared
    batch = np.stack([load(path, size=classifier.input_size) for path in image_paths])
    probabilities = classifier(batch.astype(np.float32) / 255.0)
    class_names = classifier.class_names
    results = []
    for path, probs in zip(image_paths, probabilities):
        order = np.argsort(-probs)[:top]
        results.append({
            "path": str(path), "class": int(order[0]), "name": class_names[order[0]],
            "probability": float(probs[order[0]]),
            "top": [{"name": class_names[i], "probability": float(probs[i])} for i in order],
        })
    return results

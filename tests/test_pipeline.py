import numpy as np

from fmnist_tf.config import make_config
from fmnist_tf.data.pipeline import augmentation_layers, make_dataset, split_train_val, standardization_stats
from fmnist_tf.models import create_model
from tests.conftest import synthetic_items


def test_split_is_stratified_disjoint_and_seeded():
    images, labels = synthetic_items(400, seed=0)
    images = images.copy()
    images[:, 0, 0] = np.arange(400) % 256  # tag rows to check disjointness
    images[:, 0, 1] = np.arange(400) // 256
    (xt, yt), (xv, yv) = split_train_val(images, labels, 0.1, seed=7)
    assert len(yv) == 40 and len(yt) == 360
    assert np.bincount(yv, minlength=10).tolist() == [4] * 10
    ids = lambda x: set((x[:, 0, 1].astype(int) * 256 + x[:, 0, 0]).tolist())  # noqa: E731
    assert ids(xt).isdisjoint(ids(xv)) and len(ids(xt) | ids(xv)) == 400
    (_, yt2), (_, yv2) = split_train_val(images, labels, 0.1, seed=7)
    np.testing.assert_array_equal(yv, yv2)


def test_dataset_shapes_dtypes_and_scaling():
    images, labels = synthetic_items(70, seed=1)
    dataset = make_dataset(images, labels, 10, batch_size=32, training=True, seed=0)
    batches = list(dataset)
    assert [int(x.shape[0]) for x, _ in batches] == [32, 32, 6]
    x, y = batches[0]
    assert x.shape[1:] == (28, 28, 1) and x.dtype.name == "float32"
    assert y.shape[1:] == (10,) and np.allclose(y.numpy().sum(axis=1), 1)
    assert 0.0 <= float(np.min(x)) and float(np.max(x)) <= 1.0


def test_eval_dataset_keeps_order():
    images, labels = synthetic_items(50, seed=2)
    x = np.concatenate([b[0].numpy() for b in make_dataset(images, labels, 10, 16)])
    np.testing.assert_allclose(x[..., 0], images / 255.0, atol=1e-6)


def test_model_standardizes_with_training_statistics():
    images, _ = synthetic_items(200, seed=3)
    mean, variance = standardization_stats(images)
    model = create_model("deep", mean=mean, variance=variance, width=0.125)
    standardize = model.get_layer("standardize")
    out = np.asarray(standardize(images[..., None].astype("float32") / 255.0))
    assert abs(out.mean()) < 1e-3 and abs(out.std() - 1) < 1e-3


def test_augmentation_changes_images_but_not_shape_or_range():
    images, labels = synthetic_items(64, seed=4)
    config = make_config({"augment": True, "flip": True, "translate": 0.2, "erasing": 1.0})
    augment = augmentation_layers(config, seed=0)
    plain = next(iter(make_dataset(images, labels, 10, 64)))[0].numpy()
    augmented = next(iter(make_dataset(images, labels, 10, 64, augment=augment)))[0].numpy()
    assert augmented.shape == plain.shape
    assert augmented.min() >= 0.0 and augmented.max() <= 1.0 + 1e-6
    changed = np.abs(augmented - plain).reshape(64, -1).max(axis=1) > 1e-3
    assert changed.mean() > 0.9


def test_augmentation_off_means_no_layers():
    assert augmentation_layers(make_config({"augment": False}), seed=0) is None


def test_zoom_out_shrinks_items_and_vertical_flip_is_optional():
    block = np.zeros((32, 28, 28, 1), np.float32)
    block[:, 4:24, 4:24] = 1.0
    config = make_config({"augment": True, "flip": False, "translate": 0.0, "erasing": 0.0, "zoom_out": 1.0})
    layers = augmentation_layers(config, seed=0)
    assert [type(layer).__name__ for layer in layers.layers] == ["RandomZoom"]
    shrunk = np.asarray(layers(block, training=True))
    areas = (shrunk[..., 0] > 0.5).sum(axis=(1, 2))
    assert areas.max() <= 400 and areas.min() >= 90 and areas.min() < 250  # 20x20 down to ~10x10
    both = augmentation_layers(make_config({"augment": True, "vertical_flip": True}), seed=0).layers[0]
    assert both.mode == "horizontal_and_vertical"

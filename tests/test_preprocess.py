import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fmnist_tf.errors import FmnistError
from fmnist_tf.vision.preprocess import load_as_fashion_mnist, to_fashion_mnist


def item(height=28, width=20):
    """A Fashion-MNIST-like item: a textured light shape that touches the top and bottom edges."""
    canvas = np.zeros((28, 28), np.uint8)
    left = (28 - width) // 2
    yy, xx = np.mgrid[:height, :width]
    canvas[:height, left:left + width] = (150 + 100 * np.sin(xx / 3.0) * np.cos(yy / 4.0)).clip(60, 255)
    return canvas


def photo_of(image, scale, background, dark_on_light, pad):
    big = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    shown = np.where(big > 0, 255 - big if dark_on_light else big, background)
    return cv2.copyMakeBorder(shown.astype(np.uint8), pad, pad, pad * 2, pad, cv2.BORDER_CONSTANT,
                              value=int(background))


@settings(max_examples=20, deadline=None)
@given(scale=st.integers(3, 12), pad=st.integers(5, 60), dark_on_light=st.booleans())
def test_enlarged_item_on_any_background_maps_back_to_the_dataset_look(scale, pad, dark_on_light):
    original = item()
    background = 250 if dark_on_light else 5
    recovered = to_fashion_mnist(photo_of(original, scale, background, dark_on_light, pad))
    assert recovered.shape == (28, 28) and recovered.dtype == np.uint8
    assert recovered[:, :3].max() < 30 and recovered[:, -3:].max() < 30  # dark background restored
    assert np.abs(recovered.astype(int) - original.astype(int)).mean() < 20


@pytest.mark.parametrize("background", [100, 150])
@pytest.mark.parametrize("light_item", [True, False])
def test_item_composited_on_a_mid_grey_background_comes_out_light_on_black_at_full_contrast(background, light_item):
    """As `detect-data` composites items (its green canvas is grey 150): the item's own intensity is the
    alpha over the background, so neither the border's level nor the item's range says the polarity."""
    original = item()
    alpha = cv2.resize(original, None, fx=6, fy=6, interpolation=cv2.INTER_NEAREST).astype(np.float32) / 255.0
    target = 255.0 if light_item else 0.0
    photo = background * (1.0 - alpha) + target * alpha
    recovered = to_fashion_mnist(cv2.copyMakeBorder(np.round(photo).astype(np.uint8), 20, 20, 30, 20,
                                                    cv2.BORDER_CONSTANT, value=background))
    assert recovered.max() == 255  # stretched back to the dataset's full brightness
    assert recovered[:, :3].max() < 30 and recovered[:, -3:].max() < 30
    assert np.corrcoef(recovered.ravel(), original.ravel())[0, 1] > 0.9


def test_colour_and_alpha_files(tmp_path):
    grey = photo_of(item(), 8, 245, True, 30)
    bgr = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    cv2.imwrite(str(tmp_path / "item.jpg"), bgr)
    rgba = np.dstack([bgr, np.where(grey < 200, 255, 0).astype(np.uint8)])
    cv2.imwrite(str(tmp_path / "cutout.png"), rgba)
    for name in ("item.jpg", "cutout.png"):
        result = load_as_fashion_mnist(tmp_path / name)
        assert result.shape == (28, 28) and result.mean() > 40


def test_blank_unreadable_and_empty_inputs(tmp_path):
    with pytest.raises(FmnistError, match="blank"):
        to_fashion_mnist(np.full((40, 40), 128, np.uint8))
    with pytest.raises(FmnistError, match="non-empty"):
        to_fashion_mnist(np.zeros((0, 0), np.uint8))
    (tmp_path / "x.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(FmnistError, match="cannot read"):
        load_as_fashion_mnist(tmp_path / "x.png")

"""Grad-CAM: the heat map shows where the model looked."""

from __future__ import annotations

import numpy as np
import pytest


def _corner_images(n: int, seed: int):
    """32x32 noise; the class is decided by the colour of the top-left 8x8 corner alone."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 32, 32, 3)).astype(np.uint8)
    labels = np.arange(n) % 2
    images[labels == 0, :8, :8] = (255, 0, 0)
    images[labels == 1, :8, :8] = (0, 0, 255)
    return images, labels


def test_heat_map_peaks_on_the_corner_that_decides_the_class():
    import keras

    from imgclf.config import ImageSpec, ModelConfig
    from imgclf.gradcam import grad_cam
    from imgclf.models import build_model

    keras.utils.set_random_seed(0)
    model = build_model(ModelConfig(name="small_cnn"), ImageSpec(32, 32, 3), 2)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    images, labels = _corner_images(240, seed=0)
    model.fit(images, labels, epochs=4, batch_size=16, verbose=0)
    test_images, test_labels = _corner_images(20, seed=1)
    assert np.mean(model.predict(test_images, verbose=0).argmax(axis=1) == test_labels) == 1.0

    maps = grad_cam(model, test_images, test_labels)
    assert maps.shape == (20, 4, 4) and maps.min() >= 0 and maps.max() <= 1
    # The 4x4 map's top-left cell covers the decisive 8x8 corner: every map peaks there.
    peaks = [np.unravel_index(m.argmax(), m.shape) for m in maps]
    assert sum(peak == (0, 0) for peak in peaks) >= 18, peaks
    assert maps[:, 0, 0].mean() > 3 * maps[:, 2:, 2:].mean()


def test_grad_cam_through_a_nested_backbone_and_none_for_an_mlp():
    from imgclf.config import ImageSpec, ModelConfig
    from imgclf.gradcam import grad_cam
    from imgclf.models import build_model

    images = np.random.default_rng(0).integers(0, 256, size=(3, 32, 32, 1)).astype(np.uint8)
    backbone = build_model(ModelConfig(name="mobilenet_v3_small", weights="none"), ImageSpec(32, 32, 1), 3)
    maps = grad_cam(backbone, images, [0, 1, 2])
    # The backbone's own last map is 1x1 at 32 pixels, which points nowhere: its last 4x4 map is explained instead.
    assert maps is not None and maps.shape == (3, 4, 4)
    mlp = build_model(ModelConfig(name="mlp", hidden=(8,)), ImageSpec(32, 32, 1), 3)
    assert grad_cam(mlp, images, [0, 1, 2]) is None

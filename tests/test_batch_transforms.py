"""Batch-level augmentation: the presets' transforms applied per batch, as albumentations applies them per image."""

import albumentations as A
import cv2
import numpy as np
import pytest

from imgclf.augment import PRESETS, apply_augment, augment_to_yaml, augment_from_yaml, build_augment
from imgclf.batch_transforms import batch_augment
from imgclf.pipeline import ImageBatches, SplitImages


def images(count=8, height=20, width=14, channels=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, height, width, channels), dtype=np.uint8)


# Each transform with ranges of one value, so both paths draw the same parameters: the outputs must be equal.
FIXED = {
    "affine": A.Affine(scale=(1.1, 1.1), translate_percent=(0.07, 0.07), rotate=(12, 12), shear=(5, 5), p=1),
    "affine per axis, pixels, reflect": A.Affine(scale={"x": (0.9, 0.9), "y": (1.2, 1.2)}, translate_px=(2, 2),
                                                 rotate=(-30, -30), border_mode=cv2.BORDER_REFLECT_101, p=1),
    "affine fill, nearest": A.Affine(scale=(0.8, 0.8), rotate=(40, 40), fill=77, interpolation=cv2.INTER_NEAREST, p=1),
    "brightness and contrast": A.RandomBrightnessContrast(brightness_limit=(0.13, 0.13),
                                                          contrast_limit=(-0.21, -0.21), p=1),
    "brightness by the mean": A.RandomBrightnessContrast(brightness_limit=(0.3, 0.3), contrast_limit=(0.4, 0.4),
                                                         brightness_by_max=False, p=1),
    "safe range": A.RandomBrightnessContrast(brightness_limit=(0.3, 0.3), contrast_limit=(0.4, 0.4),
                                             ensure_safe_range=True, p=1),
    "horizontal flip": A.HorizontalFlip(p=1),
    "vertical flip": A.VerticalFlip(p=1),
}


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", list(FIXED))
def test_each_transform_gives_albumentations_pixels_when_its_parameters_are_fixed(name, channels):
    pipeline = A.Compose([FIXED[name]])
    batch = images(channels=channels)
    expected = np.stack([pipeline(image=image)["image"].reshape(image.shape) for image in batch])
    got = batch_augment(pipeline)(batch, np.random.default_rng(1))
    assert np.array_equal(got, expected)
    assert not np.array_equal(got, batch)


def test_the_presets_are_recognised_and_other_pipelines_are_left_to_albumentations():
    for preset in ("none", "light", "standard"):
        for channels in (1, 3):
            assert batch_augment(build_augment(preset, channels=channels)) is not None, preset
    assert batch_augment(build_augment("heavy")) is None  # blur, dropout, hue: image by image
    assert batch_augment(A.Compose([A.Affine(fit_output=True)])) is None
    assert batch_augment(A.Compose([A.OneOf([A.HorizontalFlip()])])) is None
    assert batch_augment(A.Compose([A.HorizontalFlip()], bbox_params=A.BboxParams(format="pascal_voc"))) is None
    assert batch_augment(None) is None
    # A pipeline read back from its YAML (a run's augment.yaml) is recognised as well.
    assert batch_augment(augment_from_yaml(augment_to_yaml(build_augment("standard")))) is not None


def test_each_transform_applies_with_its_probability_and_its_ranges():
    """The parameters are drawn from albumentations' distributions: fraction applied, and range of the effect."""
    batch = np.full((4000, 9, 9, 1), 100, dtype=np.uint8)
    flip = batch_augment(A.Compose([A.HorizontalFlip(p=0.3)]))
    ramp = np.broadcast_to(np.arange(9, dtype=np.uint8)[None, None, :, None], (4000, 9, 9, 1))
    flipped = (flip(np.ascontiguousarray(ramp), np.random.default_rng(0))[:, 0, 0, 0] == 8).mean()
    assert 0.27 < flipped < 0.33

    contrast = batch_augment(A.Compose([A.RandomBrightnessContrast(brightness_limit=(-0.1, 0.1),
                                                                   contrast_limit=(0, 0), p=0.5)]))
    shifted = contrast(batch, np.random.default_rng(0))[:, 0, 0, 0].astype(int) - 100
    changed = shifted[shifted != 0]
    assert 0.45 < len(changed) / len(shifted) < 0.55
    # beta is uniform in [-0.1, 0.1] of 255, applied as a truncated lookup table: -25..25.
    assert shifted.min() >= -26 and shifted.max() <= 25 and shifted.min() < -20 and shifted.max() > 20

    never = batch_augment(A.Compose([A.HorizontalFlip(p=1)], p=0.0))
    assert np.array_equal(never(np.ascontiguousarray(ramp[:10]), np.random.default_rng(0)), ramp[:10])


def test_the_affine_parameters_follow_albumentations_ranges():
    """Translations are truncated to whole pixels as albumentations does: a bright dot moves 0..2 pixels."""
    batch = np.zeros((3000, 29, 29, 1), dtype=np.uint8)
    batch[:, 14, 14] = 255
    move = batch_augment(A.Compose([A.Affine(translate_percent=(-0.1, 0.1), p=1)]))
    moved = move(batch, np.random.default_rng(0))
    rows, cols = np.unravel_index(moved.reshape(len(moved), -1).argmax(axis=1), (29, 29))
    # int(U(-0.1, 0.1) * 29) lies in -2..2, 0 twice as likely as the others (truncation towards zero).
    shifts, counts = np.unique(cols - 14, return_counts=True)
    assert list(shifts) == [-2, -1, 0, 1, 2]
    assert 1.6 < counts[2] / counts[1] < 2.4
    # Same distribution of the rows as albumentations gives on the same images.
    reference = A.Compose([A.Affine(translate_percent=(-0.1, 0.1), p=1)], seed=0)
    ref_rows = [int(np.argmax(reference(image=image)["image"].reshape(29, 29).max(axis=1))) for image in batch[:3000]]
    ours, theirs = np.bincount(rows - 12, minlength=5) / len(rows), np.bincount(np.array(ref_rows) - 12, minlength=5) / 3000
    assert np.abs(ours - theirs).max() < 0.04


def test_batch_and_image_by_image_give_the_same_kind_of_images():
    """Standard on a photo-like batch: the two paths change images by the same amounts on average."""
    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), (32, 32), interpolation=cv2.INTER_LINEAR)
    batch = np.repeat(base[None], 2000, axis=0)
    pipeline = build_augment("standard", seed=0)
    by_image = apply_augment(pipeline, batch)
    by_batch = batch_augment(pipeline)(batch, np.random.default_rng(0))
    change = lambda out: np.abs(out.astype(int) - batch).mean(axis=(1, 2, 3))  # noqa: E731
    a, b = change(by_image), change(by_batch)
    assert abs(a.mean() - b.mean()) < 0.05 * a.mean()
    assert abs((a == 0).mean() - (b == 0).mean()) < 0.03  # the images nothing was applied to
    assert abs(by_image.mean() - by_batch.mean()) < 1.0


def test_image_batches_use_the_batch_path_with_the_same_batches_for_the_same_seed():
    split = SplitImages(images(40, 24, 24), np.arange(40, dtype=np.int32) % 4, entries=[None] * 40)
    pipeline = build_augment("standard", seed=0)
    fast = ImageBatches(split, batch_size=8, shuffle=True, augment=pipeline, seed=5)
    again = ImageBatches(split, batch_size=8, shuffle=True, augment=pipeline, seed=5, workers=3)
    slow = ImageBatches(split, batch_size=8, shuffle=True, augment=pipeline, seed=5, batch_augment=False)
    assert fast._batch_augment is not None and slow._batch_augment is None
    for index in (3, 0, 4):
        assert np.array_equal(fast[index][0], again[index][0])
        assert np.array_equal(fast[index][1], slow[index][1])  # same images in each batch, augmented otherwise
    assert not np.array_equal(fast[0][0], ImageBatches(split, batch_size=8, shuffle=True, augment=pipeline,
                                                       seed=6)[0][0])
    # The cached images are never changed by augmenting a batch in place.
    before = split.images.copy()
    fast[1]
    assert np.array_equal(split.images, before)


def test_every_preset_keeps_shape_and_dtype():
    for preset in PRESETS:
        pipeline = batch_augment(build_augment(preset, channels=1))
        if pipeline is not None:
            out = pipeline(images(channels=1), np.random.default_rng(0))
            assert out.shape == (8, 20, 14, 1) and out.dtype == np.uint8
    with pytest.raises(ValueError, match="uint8 batches"):
        batch_augment(build_augment("light"))(np.zeros((2, 4, 4, 3), np.float32), np.random.default_rng(0))

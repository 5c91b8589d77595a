"""Training-time augmentation: albumentations presets by name and their YAML round trip."""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations asks PyPI for updates at import otherwise

import albumentations as A  # noqa: E402
import yaml  # noqa: E402

PRESETS = ("none", "light", "standard", "heavy")


def build_augment(preset: str, *, channels: int = 3, seed: int | None = None) -> A.Compose:
    """Returns the albumentations pipeline of a preset.

    Presets:
        - `none`: no change.
        - `light`: small shifts, scales and rotations (safe for digits and text).
        - `standard`: `light` plus horizontal flips and brightness/contrast.
        - `heavy`: `standard` with stronger geometry, colour jitter (RGB
          only), blur and random erasing.

    Args:
        preset: one of `PRESETS`.
        channels: 1 for grayscale images (colour transforms are left out),
            3 for RGB. Defaults to 3.
        seed: seed of the pipeline's random generator. Defaults to `None`.

    Returns:
        An `A.Compose` that maps `image=uint8 HxWxC` to the same shape.
    """
    if preset not in PRESETS:
        raise ValueError(f"Unknown augmentation preset {preset!r}. Valid presets: {', '.join(PRESETS)}")
    transforms = []
    if preset == "light":
        transforms = [A.Affine(scale=(0.92, 1.08), translate_percent=(-0.08, 0.08), rotate=(-10, 10), p=0.7)]
    elif preset == "standard":
        transforms = [
            A.HorizontalFlip(p=0.5),
            A.Affine(scale=(0.85, 1.15), translate_percent=(-0.1, 0.1), rotate=(-15, 15), p=0.7),
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
        ]
    elif preset == "heavy":
        transforms = [
            A.HorizontalFlip(p=0.5),
            A.Affine(scale=(0.75, 1.25), translate_percent=(-0.15, 0.15), rotate=(-25, 25), shear=(-8, 8), p=0.8),
            A.RandomBrightnessContrast(brightness_limit=0.3, contrast_limit=0.3, p=0.6),
            *([A.HueSaturationValue(p=0.4)] if channels == 3 else []),
            A.GaussianBlur(blur_limit=(3, 5), p=0.2),
            A.CoarseDropout(num_holes_range=(1, 4), hole_height_range=(0.05, 0.2), hole_width_range=(0.05, 0.2), p=0.4),
        ]
    return A.Compose(transforms, seed=seed)


def augment_to_yaml(pipeline: A.Compose) -> str:
    """Serialises any albumentations pipeline to YAML text."""
    return yaml.safe_dump(A.to_dict(pipeline), sort_keys=False)


def augment_from_yaml(text: str) -> A.Compose:
    """Reads a pipeline written by `augment_to_yaml`."""
    return A.from_dict(yaml.safe_load(text))

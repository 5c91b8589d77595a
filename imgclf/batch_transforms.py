"""Whole-batch augmentation for the transforms of the presets, with albumentations' own arithmetic.

albumentations stays the definition of a pipeline: a preset is an `A.Compose`,
a YAML file is read into one, and a run's `augment.yaml` records it. What this
module changes is how a batch goes through it. albumentations runs each image
through its Python machinery (argument checks, a random draw per parameter,
the dispatch to the target functions), about 60 µs an image on a 2-core
machine: for 28x28 images that is most of an epoch. `batch_augment(pipeline)`
recognises a pipeline made only of the transforms below and returns a
`BatchAugment` that draws every random parameter of a batch in a few numpy
calls and applies each transform with the operation albumentations itself
performs:

- `HorizontalFlip`, `VerticalFlip`: `cv2.flip` of the images drawn.
- `Affine`: the same matrix (`create_affine_transformation_matrix`, which
  albumentations exports, about the same centre), then `cv2.warpAffine` with
  the transform's interpolation, border mode and fill. Scale, translation
  (truncated to whole pixels, as albumentations does), rotation and shear are
  drawn from the same ranges; `keep_ratio`, `balanced_scale`, `translate_px`
  are honoured. `fit_output=True` changes the size and is not taken.
- `RandomBrightnessContrast`: the same `alpha` and `beta` (by the maximum or by
  the image's mean, `ensure_safe_range` too), applied as albumentations does
  for uint8 images: a lookup table `clip(v * alpha + beta)` per image.

Each transform is applied with its probability `p` to each image on its own,
in the order of the pipeline, and the whole pipeline with the Compose's `p`.
The random numbers come from one numpy generator per batch, not from
albumentations' generators, so a batch is not the one albumentations would
draw with the same seed, but every parameter has the same distribution, and
with ranges of one value the output is identical pixel for pixel
(`tests/test_batch_transforms.py`). Any other pipeline (another transform, a
nested `OneOf`, bounding boxes) returns `None`, and the caller applies
albumentations image by image.

Measured on 2 cores (docs/BENCHMARKS.md, "Input pipeline"): see there for the
speed of each path.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations asks PyPI for updates at import otherwise

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
from albumentations.augmentations.geometric.functional import center  # noqa: E402

_MAX_VALUE = 255.0  # the cache holds uint8 images


@dataclasses.dataclass(frozen=True)
class BatchAugment:
    """A pipeline of recognised transforms, applied to a whole uint8 batch.

    Build one with `batch_augment(pipeline)`; call it with a batch and a
    numpy generator.

    Attributes:
        steps: one function per transform, `(images, rng, active) -> None`,
            changing the batch in place (`active` marks the images the
            pipeline applies to).
        p: probability that an image goes through the pipeline at all (the
            Compose's `p`).
        names: the transforms, for messages.
    """

    steps: tuple[Callable[[np.ndarray, np.random.Generator, np.ndarray], None], ...]
    p: float
    names: tuple[str, ...]

    def __call__(self, images: np.ndarray, rng: np.random.Generator, *, inplace: bool = False) -> np.ndarray:
        """Returns the augmented batch.

        Args:
            images: uint8 `(N, height, width, channels)`.
            rng: the generator every random parameter of this batch is drawn from.
            inplace: change `images` itself instead of a copy. Defaults to `False`.

        Returns:
            A uint8 array of the same shape (`images` itself with `inplace`).
        """
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(f"BatchAugment takes uint8 batches (N, height, width, channels). Received: "
                             f"{images.dtype} {images.shape}")
        out = images if inplace else np.array(images, copy=True)
        active = rng.random(len(out)) < self.p
        for step in self.steps:
            step(out, rng, active)
        return out


def batch_augment(pipeline) -> BatchAugment | None:
    """The whole-batch form of `pipeline`, or `None` when it holds a transform this module does not know.

    Args:
        pipeline: an albumentations pipeline (`A.Compose`), or `None`.

    Returns:
        A `BatchAugment`, or `None`: apply `pipeline` image by image.

    Example:

    >>> fast = batch_augment(build_augment("standard"))
    >>> batch = fast(images, np.random.default_rng(0))
    """
    if type(pipeline) is not A.Compose or not _plain_compose(pipeline):
        return None
    steps, names = [], []
    for transform in pipeline.transforms:
        builder = _BUILDERS.get(type(transform))
        step = builder(transform) if builder else None
        if step is None:
            return None
        steps.append(step)
        names.append(type(transform).__name__)
    return BatchAugment(tuple(steps), float(pipeline.p), tuple(names))


def _plain_compose(pipeline: A.Compose) -> bool:
    """A Compose that only transforms images: no boxes, keypoints or extra targets to carry along."""
    processors = getattr(pipeline, "processors", {}) or {}
    return not processors and not getattr(pipeline, "additional_targets", {})


def _draw(rng: np.random.Generator, p: float, active: np.ndarray) -> np.ndarray:
    """Indices of the images a transform of probability `p` applies to (drawn for every image, kept for active ones)."""
    return np.flatnonzero((rng.random(len(active)) < p) & active)


def _uniform(rng: np.random.Generator, bounds, n: int) -> np.ndarray:
    low, high = (float(v) for v in bounds)
    return rng.uniform(low, high, n) if high != low else np.full(n, low)


# Flips -----------------------------------------------------------------------


def _flip(code: int):
    def build(transform):
        p = float(transform.p)

        def step(images: np.ndarray, rng: np.random.Generator, active: np.ndarray) -> None:
            # cv2.flip, image by image, as albumentations does: a numpy slice with a negative stride over
            # (width, channels) copies 10x slower.
            for index in _draw(rng, p, active):
                images[index] = cv2.flip(images[index], code).reshape(images.shape[1:])

        return step

    return build


# Affine ----------------------------------------------------------------------


def _affine(transform: A.Affine):
    if transform.fit_output:
        return None
    p = float(transform.p)
    scale, keep_ratio, balanced = transform.scale, bool(transform.keep_ratio), bool(transform.balanced_scale)
    translate_percent, translate_px = transform.translate_percent, transform.translate_px
    rotate, shear = transform.rotate, transform.shear
    if not all(isinstance(v, dict) for v in (scale, shear)) or (translate_percent is None) == (translate_px is None):
        return None
    interpolation, border_mode = int(transform.interpolation), int(transform.border_mode)
    fill = transform.fill

    def draw_scale(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        drawn = {}
        for key in ("x", "y"):
            low, high = (float(v) for v in scale[key])
            if not balanced:
                drawn[key] = _uniform(rng, (low, high), n)
                continue
            # balanced_scale: first one of the two intervals below and above 1, with equal odds, then a value in it.
            intervals = [i for i in ((low, 1.0) if low < 1 else None, (1.0, high) if high > 1 else None) if i]
            if not intervals:
                drawn[key] = np.ones(n)
                continue
            pick = rng.integers(0, len(intervals), n)
            lows = np.array([i[0] for i in intervals])[pick]
            highs = np.array([i[1] for i in intervals])[pick]
            drawn[key] = lows + (highs - lows) * rng.random(n)
        if keep_ratio:
            drawn["y"] = drawn["x"]
        return drawn

    def draw_translate(rng: np.random.Generator, n: int, height: int, width: int) -> dict[str, np.ndarray]:
        if translate_px is not None:
            return {key: rng.integers(int(translate_px[key][0]), int(translate_px[key][1]) + 1, n).astype(float)
                    for key in ("x", "y")}
        # albumentations truncates the shift to whole pixels: int(fraction * side).
        return {"x": np.trunc(_uniform(rng, translate_percent["x"], n) * width),
                "y": np.trunc(_uniform(rng, translate_percent["y"], n) * height)}

    def step(images: np.ndarray, rng: np.random.Generator, active: np.ndarray) -> None:
        chosen = _draw(rng, p, active)
        if not len(chosen):
            return
        n, (height, width, channels) = len(chosen), images.shape[1:]
        translate = draw_translate(rng, n, height, width)
        shears = {key: -_uniform(rng, shear[key], n) for key in ("x", "y")}
        scales = draw_scale(rng, n)
        angles = _uniform(rng, rotate, n)
        matrices = affine_matrices(translate, shears, scales, angles, center((height, width)))
        border = tuple([float(fill)] * 4) if np.isscalar(fill) else tuple(float(v) for v in fill)
        # albumentations returns the image unchanged for the identity matrix.
        identity = np.all(np.isclose(matrices, np.eye(2, 3)), axis=(1, 2))
        for index, matrix in zip(chosen[~identity], matrices[~identity]):
            warped = cv2.warpAffine(images[index], matrix, (width, height), flags=interpolation,
                                    borderMode=border_mode, borderValue=border)
            images[index] = warped.reshape(height, width, channels)

    return step


def affine_matrices(translate: dict, shear: dict, scale: dict, rotate: np.ndarray,
                    shift: tuple[float, float]) -> np.ndarray:
    """The `(N, 2, 3)` matrices `create_affine_transformation_matrix` gives for N sets of parameters.

    The same product, written for whole arrays: shift to the centre,
    translate, shear, rotate, scale, shift back (shear in degrees, already
    negated as albumentations draws it).

    Args:
        translate, shear, scale: `{"x": array, "y": array}`.
        rotate: angles in degrees.
        shift: the centre `(x, y)`.

    Returns:
        float64 matrices for `cv2.warpAffine`.
    """
    n = len(rotate)

    def stack(rows) -> np.ndarray:
        return np.stack([np.stack([np.broadcast_to(np.asarray(v, float), (n,)) for v in row], axis=-1)
                         for row in rows], axis=-2)

    radians = np.deg2rad(np.asarray(rotate, float) % 360)
    cos, sin = np.cos(radians), np.sin(radians)
    zero, one = np.zeros(n), np.ones(n)
    sx, sy = shift
    to_origin = stack([[one, zero, -sx * one], [zero, one, -sy * one], [zero, zero, one]])
    scaling = stack([[scale["x"], zero, zero], [zero, scale["y"], zero], [zero, zero, one]])
    rotation = stack([[cos, sin, zero], [-sin, cos, zero], [zero, zero, one]])
    shearing = stack([[one, np.tan(np.deg2rad(shear["x"])), zero], [np.tan(np.deg2rad(shear["y"])), one, zero],
                      [zero, zero, one]])
    translation = stack([[one, zero, translate["x"]], [zero, one, translate["y"]], [zero, zero, one]])
    back = stack([[one, zero, sx * one], [zero, one, sy * one], [zero, zero, one]])
    return (back @ translation @ shearing @ rotation @ scaling @ to_origin)[:, :2, :]


# Brightness and contrast -----------------------------------------------------


def _brightness_contrast(transform: A.RandomBrightnessContrast):
    p = float(transform.p)
    brightness, contrast = transform.brightness_limit, transform.contrast_limit
    by_max, safe = bool(transform.brightness_by_max), bool(transform.ensure_safe_range)
    values = np.arange(256, dtype=np.float32)

    def step(images: np.ndarray, rng: np.random.Generator, active: np.ndarray) -> None:
        chosen = _draw(rng, p, active)
        if not len(chosen):
            return
        alpha = 1.0 + _uniform(rng, contrast, len(chosen))
        beta = _uniform(rng, brightness, len(chosen))
        if by_max:
            beta = beta * _MAX_VALUE
        else:
            beta = beta * images[chosen].reshape(len(chosen), -1).mean(axis=1)
        if safe:
            alpha, beta = np.array([_safe(a, b) for a, b in zip(alpha, beta)]).T
        # albumentations' lookup table for uint8: clip(v * alpha + beta, 0, 255), truncated to uint8.
        tables = np.clip(values * alpha[:, None].astype(np.float32) + beta[:, None].astype(np.float32),
                         0, _MAX_VALUE).astype(np.uint8)
        for index, table in zip(chosen, tables):
            images[index] = cv2.LUT(images[index], table).reshape(images.shape[1:])

    return step


def _safe(alpha: float, beta: float) -> tuple[float, float]:
    from albumentations.augmentations.pixel.functional import get_safe_brightness_contrast_params

    return get_safe_brightness_contrast_params(float(alpha), float(beta), _MAX_VALUE)


_BUILDERS = {
    A.HorizontalFlip: _flip(1),
    A.VerticalFlip: _flip(0),
    A.Affine: _affine,
    A.RandomBrightnessContrast: _brightness_contrast,
}

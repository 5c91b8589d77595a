"""What the model sees: the image size, channels and resize policy a config and a dataset resolve to.

Training, the augmentation preview and evaluation share these rules. This
module must not import TensorFlow, so that `imgclf augment-preview` stays quick.
"""

from __future__ import annotations

import statistics

from .config import ConfigError, DataConfig, ImageSpec
from .images import ImageLimits
from .manifest import Manifest

# Images larger than this are scaled down by default for models trained from scratch.
MAX_AUTO_SIDE = 224
# The largest side `--image-size` takes: past it a batch needs tens of gigabytes, and TensorFlow can crash on
# allocations that large (a segmentation fault at 5000 x 5000) instead of reporting them.
MAX_IMAGE_SIDE = 1024


def check_image_size(size: tuple[int, int], batch_size: int) -> None:
    """Raises `ConfigError`, before any image is decoded, for a side above `MAX_IMAGE_SIDE`."""
    if max(size) <= MAX_IMAGE_SIDE:
        return
    gigabytes = batch_size * size[0] * size[1] * 3 * 4 / 1e9
    cost = (f": a batch of {batch_size} such images is {gigabytes:.1f} GB in float32 before the first layer, and the "
            "layers' outputs need many times that") if gigabytes >= 0.1 else ""
    raise ConfigError(
        f"Image size {size[0]}x{size[1]} (--image-size, or image_size under data: in a config file) is above the "
        f"largest size imgclf trains at, {MAX_IMAGE_SIDE} pixels a side{cost}. Pass a size of at most {MAX_IMAGE_SIDE} "
        "a side (images are scaled down to it).")


def limits_of(data: DataConfig) -> ImageLimits:
    """The image limits a `DataConfig` asks for."""
    return ImageLimits(max_pixels=data.max_pixels, min_side=data.min_side, max_aspect=data.max_aspect)


def resolve_image_spec(data: DataConfig, manifest: Manifest, *, default_size: tuple[int, int] | None = None) -> ImageSpec:
    """Decides the size and channels the model sees.

    Every resize policy gives images of exactly `(height, width, channels)`;
    they differ in how an image of another aspect ratio gets there:
    `"stretch"` scales each side on its own (the content is distorted),
    `"pad"` scales the whole image to fit inside and fills the two bands
    left over with the background colour (white), `"crop"` scales it to
    cover the size and cuts off the centre (the edges of the longer side
    are lost).

    Args:
        data: `image_size` and `color_mode` of the config win when set;
            `resize` is carried into the spec.
        manifest: its training images give the defaults: grayscale if every
            image is, and the median height and width (at most 224).
        default_size: the size a pretrained backbone expects, used when
            `data.image_size` is `None`. Defaults to `None`.

    Returns:
        An `ImageSpec`.
    """
    usable = manifest.split("train") or manifest.usable
    if data.color_mode == "auto":
        channels = 1 if all(e.channels == 1 for e in usable) else 3
    else:
        channels = 1 if data.color_mode == "grayscale" else 3
    size = data.image_size or default_size
    if size is None:
        height = int(statistics.median(e.height for e in usable))
        width = int(statistics.median(e.width for e in usable))
        scale = min(1.0, MAX_AUTO_SIDE / max(height, width))
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
    return ImageSpec(int(size[0]), int(size[1]), channels, data.resize)

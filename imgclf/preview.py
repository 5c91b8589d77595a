"""The augmentation preview: a grid of training images and augmented versions of each, as the model sees them.

Each row is one training image, drawn across the classes in turn: first the
image decoded and resized exactly as training decodes it into the cache
(`images.load_image` with the run's size, channels and resize policy), then
versions of it through the augmentation pipeline training would build. Tiles
are enlarged by an integer factor with nearest-neighbour sampling, so every
pixel the model sees is a block of identical pixels in the picture.

Nothing here imports TensorFlow unless the image size is left to the model:
the default size of a pretrained backbone comes from `imgclf.models`.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .augment import AUTO, apply_augment, auto_preset, build_augment, check_augment, is_augment_file, pin_augment
from .config import Config, ConfigError, ImageSpec, as_config, with_options
from .files import atomic_path, check_file_target, escape_name, is_inside
from .images import ImageDecodeError, load_image
from .manifest import Entry, Manifest, scan
from .sizing import limits_of, resolve_image_spec

MARGIN = 4  # pixels around and between tiles
MIN_TILE = 96  # tiles are enlarged to at least this many pixels on their longer side
MAX_ZOOM = 8
MAX_PICTURE_PIXELS = 100_000_000  # about 300 MB of RGB: far beyond any screen, well within memory
BACKGROUND = (230, 230, 230)
INK = (20, 20, 20)


@dataclasses.dataclass
class Preview:
    """An augmentation preview.

    Attributes:
        image: the grid, a PIL RGB image.
        originals: uint8 `(rows, height, width, channels)`: each row's image
            as the model sees it without augmentation.
        augmented: uint8 `(rows, versions, height, width, channels)`.
        entries: the manifest entry of each row.
        spec: the size, channels and resize policy of the tiles.
        augment: the preset name or YAML file used.
        flip: whether mirroring transforms were kept.
        zoom: the integer factor tiles are enlarged by.
        line_height: height in pixels of the title and of each row's caption.
        path: the file written, or `None`.
    """

    image: Image.Image
    originals: np.ndarray
    augmented: np.ndarray
    entries: list[Entry]
    spec: ImageSpec
    augment: str
    flip: bool
    zoom: int
    line_height: int
    path: Path | None = None

    @property
    def rows(self) -> int:
        return len(self.originals)

    @property
    def columns(self) -> int:
        """The original and its augmented versions."""
        return 1 + self.augmented.shape[1]

    def box(self, row: int, column: int) -> tuple[int, int, int, int]:
        """`(left, top, right, bottom)` of a tile in `image`; column 0 is the original."""
        return tile_box(row, column, tile=(self.spec.height * self.zoom, self.spec.width * self.zoom),
                        line_height=self.line_height)

    def summary(self) -> str:
        classes = len({e.label for e in self.entries})
        s = self.spec
        return (f"{self.rows} image(s) from {classes} class(es), each with {self.columns - 1} augmented version(s), "
                f"at {s.height}x{s.width}x{s.channels} (resize {s.resize}), augment {self.augment}"
                f"{'' if self.flip else ' without flips'}"
                + (f"; written to {self.path}" if self.path else ""))


def tile_box(row: int, column: int, *, tile: tuple[int, int], line_height: int) -> tuple[int, int, int, int]:
    """Where a tile lies in the grid: a title line on top, then per row a caption line and the tiles."""
    height, width = tile
    left = MARGIN + column * (width + MARGIN)
    top = MARGIN + line_height + MARGIN + row * (line_height + height + MARGIN) + line_height
    return left, top, left + width, top + height


def grid_size(rows: int, columns: int, *, tile: tuple[int, int], line_height: int) -> tuple[int, int]:
    """`(width, height)` of the grid picture."""
    height, width = tile
    return (MARGIN + columns * (width + MARGIN),
            MARGIN + line_height + MARGIN + rows * (line_height + height + MARGIN))


def augment_preview(
    data,
    *,
    out=None,
    config=None,
    n: int = 8,
    versions: int = 5,
    zoom: int | None = None,
    progress: bool = True,
    **options,
) -> Preview:
    """Draws training images and augmented versions of each, at the size the model sees.

    The settings are those `imgclf.train` would use with the same `config`
    and options: the augmentation (`augment`, `flip`), the image size,
    channels and resize policy (with no `image_size`, the median size of the
    training images, or a pretrained backbone's own size, as training
    chooses it), the split and the seed.

    Args:
        data: a `Manifest`, or a folder or CSV to scan (see `imgclf.scan`).
        out: the picture to write (PNG). Defaults to `None`: nothing is
            written.
        config: a `Config`, a dict of its sections or a YAML file, whose
            values are the defaults. Defaults to `None`.
        n: rows: training images, drawn across the classes in turn, chosen
            by the seed. Defaults to 8.
        versions: augmented versions of each image. Defaults to 5.
        zoom: enlarge each tile by this integer factor (nearest neighbour).
            Defaults to `None`: enough for tiles of at least 96 pixels, at
            most 8.
        progress: show a progress bar while scanning. Defaults to `True`.
        **options: flat options of `imgclf.train`, e.g. `augment="heavy"`
            or `augment="my-augment.yaml"` (without it or a config:
            `"auto"`, as training), `flip=False`,
            `image_size=(64, 64)`, `resize="pad"`, `color_mode="grayscale"`,
            `seed=1`, `model="mobilenet_v2"`.

    Returns:
        A `Preview`.

    Raises:
        AugmentError: for an unknown preset or an invalid YAML file, before
            the folder is read.

    Example:

    >>> preview = augment_preview("data/digits", augment="light", flip=False, out="preview.png")
    >>> preview.image.size
    """
    _check_counts(n=n, versions=versions, zoom=zoom)
    if config is None:
        config = Config()  # augment "auto": what training does by default, by the images' channels
    else:
        config = as_config(config)
    cfg = with_options(config, **options)
    cfg = dataclasses.replace(cfg, augment=pin_augment(cfg.augment))
    build_augment(cfg.augment)  # an unknown preset or a bad file fails before any image is read
    if out is not None:
        _check_picture_path(out, data.root if isinstance(data, Manifest) else data)
    limits = limits_of(cfg.data)
    manifest = data if isinstance(data, Manifest) else scan(
        data, val=cfg.data.val, test=cfg.data.test, seed=cfg.data.seed, limits=limits, workers=cfg.data.workers,
        progress=progress)
    if out is not None and os.path.abspath(out) in {os.path.abspath(entry.path) for entry in manifest.entries}:
        raise ValueError(f"The picture {escape_name(os.fspath(out))} is an image of the dataset, which writing it "
                         "would replace. Choose an --out outside the dataset, e.g. preview.png.")
    default_size = None if cfg.data.image_size else _model_default_size(cfg)
    spec = resolve_image_spec(cfg.data, manifest, default_size=default_size)
    if cfg.augment.preset == AUTO:
        cfg = dataclasses.replace(cfg, augment=dataclasses.replace(cfg.augment, preset=auto_preset(spec.channels)))
    pipeline = build_augment(cfg.augment, channels=spec.channels, seed=cfg.train.seed)
    check_augment(pipeline, (spec.height, spec.width, spec.channels), source=cfg.augment.preset)

    entries, originals = [], []
    for entry in candidate_images(manifest, seed=cfg.train.seed):
        try:
            originals.append(load_image(entry.path, size=(spec.height, spec.width), channels=spec.channels,
                                        resize=spec.resize, limits=limits))
        except ImageDecodeError:
            continue  # training leaves such a file out too
        entries.append(entry)
        if len(entries) == n:
            break
    if not entries:
        raise ValueError(f"No training image of {escape_name(str(manifest.root))} could be decoded. "
                         "Run `imgclf audit` to see why.")
    originals = np.stack(originals)
    augmented = np.stack([apply_augment(pipeline, np.repeat(image[None], versions, axis=0)) for image in originals])
    zoom = zoom or min(MAX_ZOOM, max(1, math.ceil(MIN_TILE / max(spec.height, spec.width))))
    pixels = len(originals) * (1 + versions) * spec.height * spec.width * zoom * zoom
    if pixels > MAX_PICTURE_PIXELS:
        raise ConfigError(f"The preview would be a picture of {pixels / 1e6:,.0f} million pixels (at most "
                          f"{MAX_PICTURE_PIXELS / 1e6:,.0f} million): lower --zoom ({zoom}), --n or --versions.")
    title = (f"augment {_describe_augment(cfg.augment.preset)}, flips {'kept' if cfg.augment.flip else 'removed'}, "
             f"{spec.height}x{spec.width}x{spec.channels}, resize {spec.resize}, seed {cfg.train.seed}; "
             "first column: original")
    captions = [f"{entry.label}: {escape_name(Path(entry.path).name)}" for entry in entries]
    image, line_height = draw_grid(originals, augmented, zoom=zoom, title=title, captions=captions)
    preview = Preview(image, originals, augmented, entries, spec, cfg.augment.preset, cfg.augment.flip, zoom,
                      line_height)
    if out is not None:
        preview.path = Path(out)
        with atomic_path(out) as tmp:
            image.save(tmp)
    return preview


def _check_picture_path(out, data) -> None:
    """Raises, before any work, for a picture that would land in the dataset or that Pillow cannot write."""
    check_file_target(out)
    if isinstance(data, (str, os.PathLike)) and os.path.isdir(data) and is_inside(out, data):
        raise ValueError(f"The picture {escape_name(os.fspath(out))} is inside the dataset "
                         f"{escape_name(os.fspath(data))}: it would replace one of its images, or the next scan would "
                         "read it as one. Choose an --out outside it, e.g. preview.png.")
    suffix = Path(out).suffix.lower()
    picture_format = Image.registered_extensions().get(suffix)
    if picture_format is None:
        raise ValueError(f"Cannot tell the picture format of {escape_name(str(out))}: its name must end with an image "
                         f"extension such as .png or .jpg. Received: {suffix or 'no extension'}")
    try:
        Image.new("RGB", (1, 1)).save(io.BytesIO(), format=picture_format)
    except Exception as error:  # a format Pillow reads only, or not in RGB: each says so in its own way
        raise ValueError(f"Cannot write the picture {escape_name(str(out))}: Pillow cannot write an RGB picture as "
                         f"{picture_format} ({error}). Use an extension such as .png, .jpg or .webp.") from None


def _check_counts(**counts) -> None:
    for name, value in counts.items():
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ConfigError(f"Invalid {name}: expected a positive integer. Received: {name}={value!r}")


def _describe_augment(preset: str) -> str:
    return Path(preset).name if is_augment_file(preset) else preset


def _model_default_size(cfg: Config) -> tuple[int, int] | None:
    """The size training gives a model when the config sets none (imports Keras: pretrained backbones decide it)."""
    from .models import choose_model, default_image_size

    return default_image_size(choose_model(cfg.model).config)


def candidate_images(manifest: Manifest, *, seed: int) -> list[Entry]:
    """Usable training images in preview order: one from each class in turn, in a random order within each class.

    Args:
        manifest: the dataset; its train split, or every usable image when
            the train split is empty.
        seed: seed of the order within each class.

    Returns:
        All of them, so that a file that fails to decode can be passed over.
    """
    entries = [e for e in manifest.split("train") if e.usable] or manifest.usable
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[Entry]] = {}
    for entry in sorted(entries, key=lambda e: (e.label, e.path)):
        by_class.setdefault(entry.label, []).append(entry)
    queues = [[items[i] for i in rng.permutation(len(items))] for _, items in sorted(by_class.items())]
    return [queue[i] for i in range(max(map(len, queues), default=0)) for queue in queues if i < len(queue)]


def draw_grid(originals: np.ndarray, augmented: np.ndarray, *, zoom: int, title: str,
              captions: Sequence[str]) -> tuple[Image.Image, int]:
    """Draws the preview picture.

    Args:
        originals: uint8 `(rows, height, width, channels)`.
        augmented: uint8 `(rows, versions, height, width, channels)`.
        zoom: integer enlargement of every tile.
        title: the line above the grid.
        captions: one line above each row.

    Returns:
        `(picture, line_height)`; `tile_box` gives where each tile lies.
    """
    font = ImageFont.load_default()
    line_height = font.getbbox("Ag|")[3] + 2
    rows, versions, height, width = augmented.shape[:4]
    tile = (height * zoom, width * zoom)
    picture = Image.new("RGB", grid_size(rows, 1 + versions, tile=tile, line_height=line_height), BACKGROUND)
    draw = ImageDraw.Draw(picture)
    room = picture.width - 2 * MARGIN
    draw.text((MARGIN, MARGIN), _fit(title, font, room), fill=INK, font=font)
    for row in range(rows):
        tiles = [originals[row], *augmented[row]]
        for column, pixels in enumerate(tiles):
            left, top, _, _ = tile_box(row, column, tile=tile, line_height=line_height)
            picture.paste(Image.fromarray(_enlarge(pixels, zoom)), (left, top))
        left, top, _, _ = tile_box(row, 0, tile=tile, line_height=line_height)
        draw.text((left, top - line_height), _fit(captions[row], font, room), fill=INK, font=font)
    return picture, line_height


def _enlarge(pixels: np.ndarray, zoom: int) -> np.ndarray:
    """An RGB tile, each pixel a `zoom` x `zoom` block."""
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    return np.ascontiguousarray(pixels.repeat(zoom, axis=0).repeat(zoom, axis=1))


def _fit(text: str, font, width: int) -> str:
    """`text`, cut with an ellipsis to fit `width` pixels."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "...") > width:
        text = text[:-1]
    return text + "..."

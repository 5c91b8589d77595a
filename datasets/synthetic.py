"""Writes synthetic colour images of known difficulty, for tests and benchmarks.

Each class has its own base hue and its own shape (circle, square, triangle,
stripes, ...), drawn at a random position and scale on a plain background of
random colour. `difficulty` (0..1) controls how much the classes overlap:

- hue jitter grows from +-0.15 to +-0.5 of the hue step between classes;
- with probability `difficulty**2`, each of hue and shape is replaced, on its
  own, by the one of a class drawn at random;
- Gaussian pixel noise grows to a standard deviation of 50 (of 255), and the
  image is blended with uniform noise of weight `difficulty**4`.

At 0 every image shows its class's hue and shape, an easy task for a small CNN;
at 1 images are pure noise and carry nothing about their class. In mode `L`
only the shape tells the classes apart.

Layouts:

```
OUT/class_0/0000.jpg ...                 default: one folder per class
OUT/train|val|test/class_0/0000.png ...  with --split (70/15/15 of each class)
```

Every image picks its size, file format and colour mode from the given lists
with its own random generator, seeded from `(seed, class, index)`: the same
seed writes the same bytes.

Example:

```
python datasets/synthetic.py data/synth
python datasets/synthetic.py data/synth-hard --classes 6 --per-class 200 --difficulty 0.7 --split
python datasets/synthetic.py data/synth-modes --formats jpg,png --modes RGB,L,RGBA,P,CMYK
```
"""

from __future__ import annotations

import argparse
import colorsys
import re
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

try:
    from ._common import existing_files, finish_build, prepare_out, run_build, save_atomic
except ImportError:  # run as a script: python datasets/NAME.py
    from _common import existing_files, finish_build, prepare_out, run_build, save_atomic

SHAPES = ("circle", "square", "triangle", "hstripes", "cross", "ring", "vstripes", "diamond", "checker", "dstripes")
# File format: (Pillow format name, file extension, modes it stores faithfully).
FORMATS = {
    "jpg": ("JPEG", "jpg", ("RGB", "L", "CMYK")),
    "png": ("PNG", "png", ("RGB", "L", "RGBA", "P")),
    "bmp": ("BMP", "bmp", ("RGB", "L", "P")),
    "webp": ("WEBP", "webp", ("RGB", "RGBA")),
}
_FORMAT_ALIASES = {"jpeg": "jpg"}
MODES = ("RGB", "L", "RGBA", "P", "CMYK")
SPLIT_FRACTIONS = {"train": 0.70, "val": 0.15, "test": 0.15}
DEFAULT_SIZES = ((32, 32), (48, 36), (36, 48), (64, 64))
DEFAULT_FORMATS = ("jpg", "png")
DEFAULT_MODES = ("RGB",)
RECIPE = "synthetic"

__all__ = ["FORMATS", "MODES", "SHAPES", "build", "main", "render"]


# Options ----------------------------------------------------------------------


def _as_list(value, what: str) -> list[str]:
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    else:
        items = [str(v).strip() for v in value]
    items = [v for v in items if v]
    if not items:
        raise ValueError(f"{what} is empty. Give at least one value, e.g. {what}=" + {"sizes": "32x32,48x40", "formats": "jpg,png", "modes": "RGB,L", "names": "cat,dog"}[what])
    return items


def _parse_sizes(sizes) -> list[tuple[int, int]]:
    if isinstance(sizes, str):
        items = _as_list(sizes, "sizes")
    else:
        items = list(sizes)
        if not items:
            raise ValueError("sizes is empty. Give at least one WIDTHxHEIGHT, e.g. 32x32,48x40")
    parsed = []
    for item in items:
        if isinstance(item, str):
            match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", item)
            if not match:
                raise ValueError(f"size {item!r} is not WIDTHxHEIGHT. Write sizes like 32x32,48x40,64x64.")
            width, height = int(match.group(1)), int(match.group(2))
        else:
            try:
                width, height = (int(v) for v in item)
            except (TypeError, ValueError):
                raise ValueError(f"size {item!r} is not a (width, height) pair or a WIDTHxHEIGHT string like '48x40'.") from None
        if not (8 <= width <= 4096 and 8 <= height <= 4096):
            raise ValueError(f"size {width}x{height} is out of range: width and height must lie in 8..4096 pixels.")
        parsed.append((width, height))
    return parsed


def _parse_formats(formats) -> list[str]:
    parsed = []
    for item in _as_list(formats, "formats"):
        name = _FORMAT_ALIASES.get(item.lower(), item.lower())
        if name not in FORMATS:
            raise ValueError(f"unknown format {item!r}. Choose among {', '.join(FORMATS)}.")
        if name == "webp":
            from PIL import features

            if not features.check("webp"):
                raise ValueError("format 'webp' needs a Pillow built with WebP support, and this one has none. Use jpg, png or bmp.")
        if name not in parsed:
            parsed.append(name)
    return parsed


def _parse_modes(modes, formats: list[str]) -> list[str]:
    parsed = []
    for item in _as_list(modes, "modes"):
        name = item.upper()
        if name not in MODES:
            raise ValueError(f"unknown mode {item!r}. Choose among {', '.join(MODES)}.")
        if not any(name in FORMATS[f][2] for f in formats):
            able = [f for f in FORMATS if name in FORMATS[f][2]]
            raise ValueError(f"mode {name} cannot be stored in {', '.join(formats)}: add one of {', '.join(able)} to formats, or leave {name} out of modes.")
        if name not in parsed:
            parsed.append(name)
    return parsed


def _parse_names(names, classes) -> list[str]:
    if names is None:
        count = 4 if classes is None else classes
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
            raise ValueError(f"classes must be a positive number, e.g. 4. Received: {classes!r}")
        return [f"class_{i}" for i in range(int(count))]
    parsed = _as_list(names, "names")
    if classes is not None and classes != len(parsed):
        raise ValueError(f"classes={classes} but {len(parsed)} names were given ({', '.join(parsed)}). Give as many names as classes, or leave out classes.")
    for name in parsed:
        if name in (".", "..") or name.startswith(".") or any(c in name for c in '/\\:*?"<>|') or any(ord(c) < 32 for c in name):
            raise ValueError(f"class name {name!r} cannot be a folder name: avoid a leading dot and the characters / \\ : * ? \" < > |.")
    if len({n.lower() for n in parsed}) != len(parsed):
        raise ValueError(f"class names must be unique (ignoring case), received: {', '.join(parsed)}.")
    return parsed


# Drawing ----------------------------------------------------------------------


def _draw_shape(shape: str, side: int) -> Image.Image:
    """Draws `shape` filling a `side` x `side` square; returns the `L` mask (255 = shape)."""
    patch = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(patch)
    last = side - 1
    centre = last / 2
    line = max(1, round(side / 6))
    if shape == "circle":
        draw.ellipse((0, 0, last, last), fill=255)
    elif shape == "square":
        draw.rectangle((0, 0, last, last), fill=255)
    elif shape == "triangle":
        draw.polygon(((centre, 0), (last, last), (0, last)), fill=255)
    elif shape == "diamond":
        draw.polygon(((centre, 0), (last, centre), (centre, last), (0, centre)), fill=255)
    elif shape == "ring":
        draw.ellipse((0, 0, last, last), outline=255, width=line)
    elif shape == "cross":
        draw.rectangle((centre - line / 2, 0, centre + line / 2, last), fill=255)
        draw.rectangle((0, centre - line / 2, last, centre + line / 2), fill=255)
    elif shape in ("hstripes", "vstripes"):
        stripes = 4
        step = side / (2 * stripes - 1)
        for k in range(stripes):
            a, b = 2 * k * step, (2 * k + 1) * step - 1
            draw.rectangle((0, a, last, b) if shape == "hstripes" else (a, 0, b, last), fill=255)
    elif shape == "checker":
        step = side / 3
        for i in range(3):
            for j in range(3):
                if (i + j) % 2 == 0:
                    draw.rectangle((i * step, j * step, (i + 1) * step - 1, (j + 1) * step - 1), fill=255)
    elif shape == "dstripes":
        for k in range(-2, 3):
            offset = k * side / 2.5
            draw.line(((offset, last), (last + offset, 0)), fill=255, width=line)
    else:  # pragma: no cover - SHAPES lists every branch
        raise ValueError(f"unknown shape {shape!r}")
    return patch


def render(class_index: int, n_classes: int, size: tuple[int, int], difficulty: float, rng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
    """Draws one image of class `class_index`.

    Args:
        class_index: the class, in `0..n_classes - 1`.
        n_classes: the number of classes; the base hues are spread evenly
            around the colour wheel.
        size: `(width, height)` in pixels.
        difficulty: from 0 (each class always shows its own hue and shape)
            to 1 (pure noise).
        rng: the random generator of this image.

    Returns:
        The RGB image and an `L` mask that is 255 where the shape was drawn.
    """
    width, height = size
    swap = difficulty**2
    hue_class = class_index if rng.random() >= swap else int(rng.integers(n_classes))
    shape_class = class_index if rng.random() >= swap else int(rng.integers(n_classes))
    jitter = (0.15 + 0.35 * difficulty) / n_classes
    hue = (hue_class / n_classes + rng.uniform(-jitter, jitter)) % 1.0
    fg = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.65, 1.0), rng.uniform(0.7, 1.0)))
    luma = float(fg @ np.array([0.299, 0.587, 0.114]))
    # The background is greyish, dark behind a bright shape and light behind a dark one,
    # so that the shape stays visible in grayscale too.
    bg_value = rng.uniform(0.05, 0.3) if luma > 0.45 else rng.uniform(0.75, 0.95)
    bg = np.array(colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0, 0.3), bg_value))

    image = Image.new("RGB", (width, height), tuple(int(round(255 * c)) for c in bg))
    mask = Image.new("L", (width, height), 0)
    side = max(4, int(round(rng.uniform(0.4, 0.8) * min(width, height))))
    x0 = int(rng.integers(0, width - side + 1))
    y0 = int(rng.integers(0, height - side + 1))
    mask.paste(_draw_shape(SHAPES[shape_class % len(SHAPES)], side), (x0, y0))
    image.paste(tuple(int(round(255 * c)) for c in fg), mask=mask)

    pixels = np.asarray(image, dtype=np.float64)
    pixels = pixels + rng.normal(0.0, 3.0 + 47.0 * difficulty, pixels.shape)
    blend = difficulty**4
    noise = rng.integers(0, 256, pixels.shape)
    pixels = (1.0 - blend) * pixels + blend * noise
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8)), mask


def _convert(image: Image.Image, mask: Image.Image, mode: str, alpha: int) -> Image.Image:
    if mode == "RGB":
        return image
    if mode == "RGBA":
        rgba = image.convert("RGBA")
        rgba.putalpha(Image.fromarray(np.maximum(np.asarray(mask), alpha).astype(np.uint8)))
        return rgba
    if mode == "P":
        return image.quantize(colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    return image.convert(mode)  # L, CMYK


# Building ---------------------------------------------------------------------


def _split_sizes(per_class: int) -> dict[str, int]:
    val = max(1, round(per_class * SPLIT_FRACTIONS["val"]))
    test = max(1, round(per_class * SPLIT_FRACTIONS["test"]))
    return {"train": per_class - val - test, "val": val, "test": test}


def _class_folders(params: dict) -> list[str]:
    """The class folders a build with `params` writes, relative to its output folder."""
    if params["split"]:
        return [f"{split}/{name}" for split in SPLIT_FRACTIONS for name in params["classes"]]
    return list(params["classes"])


def build(
    out,
    *,
    classes: int | None = None,
    per_class: int = 50,
    difficulty: float = 0.3,
    seed: int = 0,
    sizes=DEFAULT_SIZES,
    formats=DEFAULT_FORMATS,
    modes=DEFAULT_MODES,
    split: bool = False,
    names=None,
    overwrite: bool = False,
) -> dict:
    """Writes a synthetic image classification dataset.

    Files that already exist are kept, so running again into a complete
    folder only lists it. Each file is written under a hidden temporary name
    and renamed into place, so a killed run never leaves a partial image under
    its final name.

    Args:
        out: the output folder. Created if missing; must be empty, or a folder
            written earlier by this recipe.
        classes: number of classes. Defaults to `None`: 4, or the number of
            `names`.
        per_class: images per class. Defaults to 50.
        difficulty: from 0 (trivially separable) to 1 (pure noise, classes
            indistinguishable). Defaults to 0.3.
        seed: seed of every random choice; the same seed writes the same
            bytes. Defaults to 0.
        sizes: image sizes as `"WxH,..."` or `(width, height)` pairs; each
            image picks one. Defaults to 32x32, 48x36, 36x48 and 64x64.
        formats: file formats among `jpg`, `png`, `bmp`, `webp` (a list or
            a comma-separated string); each image picks one that can store
            its mode. Defaults to `("jpg", "png")`.
        modes: colour modes among `RGB`, `L`, `RGBA`, `P`, `CMYK` (JPEG only
            among the formats); each image picks one. Defaults to `("RGB",)`.
        split: write `train/`, `val/` and `test/` folders (70/15/15 of each
            class) instead of one folder per class. Defaults to `False`.
        names: class folder names (a list or a comma-separated string).
            Defaults to `None`: `class_0`, `class_1`, ...
        overwrite: delete the images a previous build wrote in `out` (other
            files are kept) and write everything again. Also needed to
            rebuild a folder written with other settings. Defaults to `False`.

    Returns:
        A dict with `root` (the folder, as a string), `classes` (folder
        names), `counts` (`{class: images}`, or `{split: {class: images}}`
        with `split`), `images` (total), `written` (files written by this
        call) and `skipped` (files that already existed).

    Raises:
        ValueError: an option is out of range or malformed; the message says
            which and what is accepted.
        FileExistsError: `out` holds other files, or a build with other
            settings (pass `overwrite=True`).
    """
    class_names = _parse_names(names, classes)
    if isinstance(per_class, bool) or not isinstance(per_class, (int, np.integer)) or per_class < 1:
        raise ValueError(f"per_class must be a positive number of images, e.g. 50. Received: {per_class!r}")
    if split and per_class < 3:
        raise ValueError(f"split needs at least 3 images per class (one each for train, val and test). Received per_class={per_class}.")
    try:
        difficulty = float(difficulty)
    except (TypeError, ValueError):
        raise ValueError(f"difficulty must be a number in [0, 1]. Received: {difficulty!r}") from None
    if not 0.0 <= difficulty <= 1.0:
        raise ValueError(f"difficulty must lie in [0, 1] (0 = trivially separable, 1 = pure noise). Received: {difficulty}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer. Received: {seed!r}")
    size_list = _parse_sizes(sizes)
    format_list = _parse_formats(formats)
    mode_list = _parse_modes(modes, format_list)
    per_class, seed = int(per_class), int(seed)

    out = Path(out)
    params = {
        "recipe": RECIPE,
        "classes": class_names,
        "per_class": per_class,
        "difficulty": difficulty,
        "seed": seed,
        "sizes": [f"{w}x{h}" for w, h in size_list],
        "formats": format_list,
        "modes": mode_list,
        "split": bool(split),
    }
    prepare_out(out, params, overwrite=overwrite, folders=_class_folders)

    if split:
        sizes_by_split = _split_sizes(per_class)
        bounds, start = [], 0
        for name, n in sizes_by_split.items():
            bounds.append((name, start, start + n))
            start += n
    else:
        bounds = [("", 0, per_class)]
    width = max(4, len(str(per_class - 1)))

    written = skipped = 0
    counts: dict = {}
    for class_index, class_name in enumerate(class_names):
        for split_name, first, last in bounds:
            folder = out / split_name / class_name if split_name else out / class_name
            folder.mkdir(parents=True, exist_ok=True)
            existing = existing_files(folder)
            for index in range(first, last):
                rng = np.random.default_rng([seed, class_index, index])
                mode = mode_list[int(rng.integers(len(mode_list)))]
                able = [f for f in format_list if mode in FORMATS[f][2]]
                fmt = able[int(rng.integers(len(able)))]
                size = size_list[int(rng.integers(len(size_list)))]
                pil_format, extension, _ = FORMATS[fmt]
                filename = f"{index:0{width}d}.{extension}"
                if filename in existing:
                    skipped += 1
                    continue
                image, mask = render(class_index, len(class_names), size, difficulty, rng)
                alpha = int(rng.integers(96, 256))
                quality = int(rng.integers(75, 96))
                options = {"quality": quality} if pil_format in ("JPEG", "WEBP") else {}
                save_atomic(_convert(image, mask, mode, alpha), folder / filename, pil_format, **options)
                written += 1
            if split_name:
                counts.setdefault(split_name, {})[class_name] = last - first
            else:
                counts[class_name] = last - first

    return finish_build(out, params, classes=class_names, counts=counts, images=per_class * len(class_names),
                        written=written, skipped=skipped)


# Command line ----------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python datasets/synthetic.py",
        description=(
            "Write synthetic colour images of known difficulty: each class has its own hue and shape, "
            "mixed with noise and swaps that grow with --difficulty. Same --seed, same bytes."
        ),
        epilog=(
            "example:\n"
            "  python datasets/synthetic.py data/synth\n"
            "  python datasets/synthetic.py data/synth-hard --classes 6 --per-class 200 --difficulty 0.7 --split\n"
            "  python datasets/synthetic.py data/pets --names cat,dog,bird --sizes 64x48,48x64\n"
            "  python datasets/synthetic.py data/synth-modes --formats jpg,png --modes RGB,L,RGBA,P,CMYK"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("out", metavar="OUT", help="output folder (created; new, empty, or an earlier build of this recipe)")
    parser.add_argument("--classes", type=int, metavar="N", help="number of classes (default: 4, or the number of --names)")
    parser.add_argument("--per-class", type=int, default=50, metavar="N", help="images per class (default: 50)")
    parser.add_argument("--difficulty", type=float, default=0.3, metavar="F", help="0 = trivially separable .. 1 = pure noise (default: 0.3)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed writes the same bytes (default: 0)")
    parser.add_argument(
        "--sizes",
        default=",".join(f"{w}x{h}" for w, h in DEFAULT_SIZES),
        metavar="WxH,...",
        help="image sizes as WIDTHxHEIGHT; each image picks one (default: %(default)s)",
    )
    parser.add_argument("--formats", default=",".join(DEFAULT_FORMATS), metavar="F,...", help=f"file formats among {', '.join(FORMATS)}; each image picks one (default: %(default)s)")
    parser.add_argument(
        "--modes",
        default=",".join(DEFAULT_MODES),
        metavar="M,...",
        help=f"colour modes among {', '.join(MODES)} (CMYK needs jpg); each image picks one (default: %(default)s)",
    )
    parser.add_argument("--split", action="store_true", help="write OUT/train|val|test/<class>/ (70/15/15) instead of OUT/<class>/")
    parser.add_argument("--names", metavar="A,B,...", help="class folder names (default: class_0, class_1, ...)")
    parser.add_argument("--overwrite", action="store_true", help="delete the images of an earlier build in OUT (other files are kept) and write it again")
    return parser


def main(argv=None) -> int:
    """Runs the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    return run_build(lambda: build(
        args.out, classes=args.classes, per_class=args.per_class, difficulty=args.difficulty, seed=args.seed,
        sizes=args.sizes, formats=args.formats, modes=args.modes, split=args.split, names=args.names,
        overwrite=args.overwrite,
    ), argv=argv, out=args.out)


if __name__ == "__main__":
    sys.exit(main())

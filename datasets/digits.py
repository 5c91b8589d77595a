"""Writes scikit-learn's bundled handwritten digits as a folder of PNG files.

The 1,797 8x8 images of `sklearn.datasets.load_digits` (values 0..16) are
written as grayscale PNGs, one folder per digit:

```
OUT/
  .imgclf-dataset.json   settings of the build (hidden; imgclf notes a build that is not complete)
  0/0000.png  0/0010.png ...
  1/0001.png ...
  ...
  9/...
```

The file name is the image's index in `load_digits()`. Pixel values are scaled
from 0..16 to 0..255 with `round(v * 255 / 16)`. No network is needed.

Example:

```
python datasets/digits.py data/digits
python datasets/digits.py data/digits32 --size 32
```
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

try:
    from ._common import existing_files, finish_build, prepare_out, run_build, save_atomic
except ImportError:  # run as a script: python datasets/NAME.py
    from _common import existing_files, finish_build, prepare_out, run_build, save_atomic

CLASSES = tuple(str(d) for d in range(10))
RECIPE = "digits"

__all__ = ["CLASSES", "build", "main", "scale_to_uint8"]


def scale_to_uint8(values) -> np.ndarray:
    """Scales digit values from 0..16 to 0..255.

    Args:
        values: array-like of numbers in 0..16.

    Returns:
        A `uint8` array of `round(v * 255 / 16)` for each value.
    """
    values = np.asarray(values, dtype=np.float64)
    return np.clip(np.rint(values * 255.0 / 16.0), 0, 255).astype(np.uint8)


def build(out, *, size: int = 8, overwrite: bool = False) -> dict:
    """Writes the digits dataset as `OUT/<digit>/<index:04d>.png`.

    Files that already exist are kept, so running again into a complete
    folder only lists it. Each PNG is written under a hidden temporary name
    and renamed into place, so a killed run never leaves a partial PNG under
    its final name.

    Args:
        out: the output folder. Created if missing; must be empty, or a folder
            written earlier by this recipe.
        size: side of the written images in pixels. 8 keeps the native
            resolution; other sizes are resized with bilinear filtering.
            Defaults to 8.
        overwrite: delete the images a previous build wrote in `out` (other
            files are kept) and write everything again. Also needed to
            rebuild a folder written with other settings. Defaults to `False`.

    Returns:
        A dict with `root` (the folder, as a string), `classes` (folder
        names), `counts` (images per class), `images` (total),
        `written` (files written by this call) and `skipped` (files that
        already existed).

    Raises:
        ValueError: `size` is not a positive integer.
        FileExistsError: `out` holds other files, or a build with other
            settings (pass `overwrite=True`).
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive integer number of pixels, e.g. 8 or 32. Received: {size!r}")
    size = int(size)
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = scale_to_uint8(digits.images)
    labels = digits.target.astype(int)

    out = Path(out)
    params = {"recipe": RECIPE, "size": size}
    prepare_out(out, params, overwrite=overwrite, folders=lambda params: list(CLASSES))

    width = max(4, len(str(len(images) - 1)))
    written = skipped = 0
    for digit, name in enumerate(CLASSES):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        existing = existing_files(folder)
        for index in np.flatnonzero(labels == digit):
            filename = f"{index:0{width}d}.png"
            if filename in existing:
                skipped += 1
                continue
            image = Image.fromarray(images[index])
            if size != 8:
                image = image.resize((size, size), Image.Resampling.BILINEAR)
            save_atomic(image, folder / filename, "PNG")
            written += 1

    counts = {name: int(np.sum(labels == digit)) for digit, name in enumerate(CLASSES)}
    return finish_build(out, params, classes=CLASSES, counts=counts, images=len(images), written=written,
                        skipped=skipped)


# Command line ----------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python datasets/digits.py",
        description="Write scikit-learn's 1,797 handwritten 8x8 digits as grayscale PNGs in OUT/<digit>/<index>.png (no download).",
        epilog="example:\n  python datasets/digits.py data/digits\n  python datasets/digits.py data/digits32 --size 32",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("out", metavar="OUT", help="output folder (created; new, empty, or an earlier build of this recipe)")
    parser.add_argument("--size", type=int, default=8, metavar="N", help="side of the written images in pixels; 8 is native, others use bilinear resizing (default: 8)")
    parser.add_argument("--overwrite", action="store_true", help="delete the images of an earlier build in OUT (other files are kept) and write it again")
    return parser


def main(argv=None) -> int:
    """Runs the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    return run_build(lambda: build(args.out, size=args.size, overwrite=args.overwrite), argv=argv, out=args.out)


if __name__ == "__main__":
    sys.exit(main())

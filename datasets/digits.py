"""Writes scikit-learn's bundled handwritten digits as a folder of PNG files.

The 1,797 8x8 images of `sklearn.datasets.load_digits` (values 0..16) are
written as grayscale PNGs, one folder per digit:

```
OUT/
  .imgclf-dataset.json   settings of the build (hidden: imgclf ignores it)
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
import contextlib
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = tuple(str(d) for d in range(10))
STAMP = ".imgclf-dataset.json"
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
        overwrite: delete a previous build in `out` and write everything
            again. Also needed to rebuild a folder written with other
            settings. Defaults to `False`.

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
    _prepare_out(out, params, overwrite=overwrite)

    width = max(4, len(str(len(images) - 1)))
    written = skipped = 0
    for digit, name in enumerate(CLASSES):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        existing = _existing_files(folder)
        for index in np.flatnonzero(labels == digit):
            filename = f"{index:0{width}d}.png"
            if filename in existing:
                skipped += 1
                continue
            image = Image.fromarray(images[index])
            if size != 8:
                image = image.resize((size, size), Image.Resampling.BILINEAR)
            _save_atomic(image, folder / filename, "PNG")
            written += 1

    counts = {name: int(np.sum(labels == digit)) for digit, name in enumerate(CLASSES)}
    summary = {
        "root": str(out),
        "classes": list(CLASSES),
        "counts": counts,
        "images": int(len(images)),
        "written": written,
        "skipped": skipped,
    }
    _write_stamp(out, params, complete=True, summary=summary)
    return summary


# Output folder helpers -------------------------------------------------------

_TEMP = re.compile(r"^\..+\.\d+\.tmp$")


def _save_atomic(image: Image.Image, path: Path, fmt: str, **options) -> None:
    """Saves `image` to a hidden temporary file beside `path`, then renames it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        image.save(tmp, format=fmt, **options)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _existing_files(folder: Path) -> set[str]:
    """Names of the files in `folder`; removes temporary files left by a killed run."""
    names = set()
    with os.scandir(folder) as entries:
        for entry in entries:
            if _TEMP.match(entry.name):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
            elif entry.is_file():
                names.add(entry.name)
    return names


def _write_stamp(out: Path, params: dict, *, complete: bool, summary: dict | None = None) -> None:
    data = {"params": params, "complete": complete}
    if summary is not None:
        data["summary"] = {k: v for k, v in summary.items() if k not in ("written", "skipped")}
    tmp = out / f".{STAMP}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, out / STAMP)


def _prepare_out(out: Path, params: dict, *, overwrite: bool) -> None:
    """Checks that `out` is new, empty or an earlier build with the same settings."""
    params = json.loads(json.dumps(params))
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file. Pass the path of a folder (new or empty) for the dataset.")
    if out.is_dir():
        stamp = out / STAMP
        if stamp.is_file():
            try:
                previous = json.loads(stamp.read_text(encoding="utf-8")).get("params")
            except (OSError, ValueError, AttributeError):
                previous = None
            if previous != params and not overwrite:
                raise FileExistsError(
                    f"{out} holds a dataset built with other settings ({_differences(previous, params)}). "
                    f"Pass --overwrite (overwrite=True) to delete it and build again, or choose another output folder."
                )
            if overwrite:
                shutil.rmtree(out)
        elif any(not name.startswith(".") for name in os.listdir(out)):
            raise FileExistsError(
                f"{out} is not empty and was not written by this recipe (it has no {STAMP}). "
                f"Choose a new or empty output folder."
            )
    out.mkdir(parents=True, exist_ok=True)
    _write_stamp(out, params, complete=False)


def _differences(previous, params: dict) -> str:
    if not isinstance(previous, dict):
        return f"unreadable {STAMP}"
    keys = sorted(set(previous) | set(params))
    return ", ".join(f"{k}: {previous.get(k)!r} before, {params.get(k)!r} now" for k in keys if previous.get(k) != params.get(k))


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
    parser.add_argument("--overwrite", action="store_true", help="delete an earlier build in OUT and write it again")
    return parser


def main(argv=None) -> int:
    """Runs the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    start = time.perf_counter()
    try:
        summary = build(args.out, size=args.size, overwrite=args.overwrite)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - start
    print(
        f"{summary['images']} images in {len(summary['classes'])} classes under {summary['root']} "
        f"({summary['written']} written, {summary['skipped']} already there) in {seconds:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The decoded-image cache: every image decoded and resized once, kept on disk as a uint8 memmap.

Decoding a JPEG costs far more than a training step of a small network, so the
images of a split are decoded once, in parallel worker processes, into one
`.npy` file of shape `(N, height, width, channels)`. Epochs then read that
file through the page cache, and memory stays bounded by the OS, not by the
dataset. The file is keyed by the content hashes of the images and the decode
settings, so a second run on the same data starts at once.

A file that cannot be decoded here (it changed or broke after it was scanned)
is reported and left out; it never reaches an epoch.

A cache file is written under a temporary name and renamed when every row is
decoded; the failures file, written last, marks it complete. Before a cache
file is used, its `.npy` header must give the expected shape and dtype and the
file must be exactly as long as that header says, and the failures file must
be a valid list of rows: a file cut short (a process killed while writing it,
a full disk), with damaged header bytes, or with a damaged failures file is
decoded again, never read as images.

This module must not import TensorFlow: its worker processes import it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from .config import ImageSpec
from .images import ImageDecodeError, ImageLimits, load_image
from .parallel import chunked, parallel_map
from .files import atomic_path, write_json

_CHUNK = 64


@dataclasses.dataclass(frozen=True)
class DecodeFailure:
    """A file that could not be decoded into the cache."""

    path: str
    problem: str
    detail: str


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/imgclf`, or `~/.cache/imgclf`."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "imgclf"


def cache_key(sha1s: Sequence[str], spec: ImageSpec, limits: ImageLimits) -> str:
    digest = hashlib.sha1()
    digest.update(repr((spec, limits)).encode())
    for sha1 in sha1s:
        digest.update(sha1.encode())
    return digest.hexdigest()[:24]


def _decode_rows(job) -> list[tuple[int, str, str]]:
    """Decodes one chunk of files into rows `start...` of the cache file."""
    cache_file, start, paths, spec, limits = job
    array = np.load(cache_file, mmap_mode="r+")
    failures = []
    for offset, path in enumerate(paths):
        try:
            array[start + offset] = load_image(
                path, size=(spec.height, spec.width), channels=spec.channels, resize=spec.resize, limits=limits
            )
        except ImageDecodeError as error:
            failures.append((start + offset, error.problem.value, error.detail))
    array.flush()
    return failures


def decode_to_cache(
    paths: Sequence[str],
    sha1s: Sequence[str],
    spec: ImageSpec,
    *,
    cache_dir=None,
    limits: ImageLimits = ImageLimits(),
    workers: int | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, list[DecodeFailure]]:
    """Returns every image decoded to `spec`, from the cache or decoded now.

    Args:
        paths: the image files.
        sha1s: their content hashes (they key the cache).
        spec: size, channels and resize policy.
        cache_dir: folder of cache files. Defaults to `None`: `default_cache_dir()`.
        limits: decode limits. Defaults to `ImageLimits()`.
        workers: decoding processes. Defaults to `None`: one per CPU.
        progress: show a progress bar. Defaults to `True`.

    Returns:
        `(images, failures)`: a read-only uint8 memmap of shape
        `(len(paths), *spec.shape)` (rows of failed files are zero) and the
        files that failed.
    """
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(sha1s, spec, limits)
    array_file = cache_dir / f"{key}.npy"
    failures_file = cache_dir / f"{key}.failures.json"

    # The failures file is written last, so its presence marks a complete cache.
    rows, damage = _read_cache(array_file, failures_file, (len(paths), *spec.shape))
    if damage:
        warnings.warn(f"The decoded-image cache {array_file} is damaged ({damage}); decoding the images again.",
                      stacklevel=2)
        array_file.unlink(missing_ok=True)
        failures_file.unlink(missing_ok=True)
    if rows is None:
        with atomic_path(array_file) as tmp:
            np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), *spec.shape)).flush()
            jobs = [(str(tmp), start, list(chunk), spec, limits)
                    for start, chunk in zip(range(0, len(paths), _CHUNK), chunked(list(paths), _CHUNK))]
            results = parallel_map(_decode_rows, jobs, workers=workers, desc="decode", unit="chunk",
                                   files_per_item=_CHUNK, progress=progress)
            rows = [row for chunk_failures in results for row in chunk_failures]
        write_json(failures_file, rows)
    failures = [DecodeFailure(paths[i], problem, detail) for i, problem, detail in rows]
    return np.load(array_file, mmap_mode="r"), failures


def _read_cache(array_file: Path, failures_file: Path, shape: tuple[int, ...]) -> tuple[list | None, str]:
    """The failure rows of a complete, undamaged cache file, or `None` and what is wrong with it.

    Returns:
        `(rows, "")` for a usable cache, `(None, "")` for one never
        completed, `(None, damage)` for a damaged one.
    """
    if not (array_file.exists() and failures_file.exists()):
        return None, ""
    damage = check_array_file(array_file, shape)
    if damage:
        return None, damage
    try:
        rows = json.loads(failures_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return None, f"{failures_file.name} cannot be read: {error}"
    valid = isinstance(rows, list) and all(
        isinstance(row, list) and len(row) == 3 and isinstance(row[0], int) and 0 <= row[0] < shape[0]
        and isinstance(row[1], str) and isinstance(row[2], str) for row in rows)
    if not valid:
        return None, f"{failures_file.name} does not hold rows of (index, problem, detail)"
    return rows, ""


def check_array_file(path, shape: tuple[int, ...]) -> str:
    """What is wrong with a cache `.npy` file, or `""` if its header and length are as expected.

    Reads the header only: the magic string, the format version, a dtype of
    uint8 in C order, the shape, and a file length of exactly the header
    plus the pixels the shape holds.

    Args:
        path: the `.npy` file.
        shape: the shape it must hold.

    Returns:
        A short description of the damage, empty for a sound file.
    """
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                found, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version == (2, 0):
                found, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
            else:
                return f"unexpected .npy format version {version}"
            offset = handle.tell()
            size = os.fstat(handle.fileno()).st_size
    except Exception as error:  # any damage to the header: numpy raises ValueError, SyntaxError, EOFError, ...
        return f"unreadable .npy header: {type(error).__name__}: {error}"
    if dtype != np.uint8 or fortran or tuple(found) != tuple(shape):
        return f"header says {dtype} {tuple(found)}{' in Fortran order' if fortran else ''}, expected uint8 {tuple(shape)}"
    expected = offset + int(np.prod(shape, dtype=np.int64))
    if size != expected:
        return f"{size:,} bytes where its header says {expected:,}"
    return ""

"""The decoded-image cache: every image decoded and resized once, kept on disk as a uint8 memmap.

Decoding a JPEG costs far more than a training step of a small network, so the
images of a split are decoded once, in parallel worker processes, into one
`.npy` file of shape `(N, height, width, channels)`. Epochs then read that
file through the page cache, and memory stays bounded by the OS, not by the
dataset. The file is keyed by the content hashes of the images and the decode
settings, so a second run on the same data starts at once.

A file that cannot be decoded here (it changed or broke after it was scanned)
is reported and left out; it never reaches an epoch.

This module must not import TensorFlow: its worker processes import it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
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
    if not (array_file.exists() and failures_file.exists()):
        with atomic_path(array_file) as tmp:
            np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), *spec.shape)).flush()
            jobs = [(str(tmp), start, list(chunk), spec, limits)
                    for start, chunk in zip(range(0, len(paths), _CHUNK), chunked(list(paths), _CHUNK))]
            results = parallel_map(_decode_rows, jobs, workers=workers, desc="decode", unit="chunk",
                                   files_per_item=_CHUNK, progress=progress)
            rows = [row for chunk_failures in results for row in chunk_failures]
        write_json(failures_file, rows)
    rows = json.loads(failures_file.read_text())
    failures = [DecodeFailure(paths[i], problem, detail) for i, problem, detail in rows]
    return np.load(array_file, mmap_mode="r"), failures

"""The decoded-image cache: every image decoded and resized once, kept on disk as a uint8 memmap.

Decoding a JPEG costs far more than a training step of a small network, so the
images of a split are decoded once, in parallel worker processes, into one
`.npy` file of shape `(N, height, width, channels)`. Epochs then read that
file through the page cache, and memory stays bounded by the OS, not by the
dataset. The file is keyed by the content hashes of the images and the decode
settings, so a second run on the same data starts at once.

A file that cannot be decoded here (it changed or broke after it was scanned)
is reported and left out; it never reaches an epoch.

On a first run, the scan can decode too (`StagedImages`): `scan(...,
cache_spec=spec)` reads each file once, hashes its bytes, reads its header and
decodes it from memory into a staging file, because the split, and so the
cache file each image belongs to, is known only once every file is hashed.
`decode_to_cache` then copies a split's rows from the staging file (or renames
it, when one split holds every file in order) instead of opening every file a
second time. Reading and parsing each file once instead of twice is what
makes the first epoch of a new folder fast (docs/BENCHMARKS.md, "Input
pipeline"). The scan stages nothing when the caches of the last scan of the
same folder and spec are all still there: a second run then only hashes.

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

import contextlib
import dataclasses
import hashlib
import json
import os
import secrets
import warnings
import weakref
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .config import ImageSpec
from .images import FileCheck, ImageDecodeError, ImageLimits, ImageProblem, load_image, scan_and_load
from .parallel import chunked, parallel_map, resolve_workers
from .files import (atomic_path, escape_name, failures_named, process_tag, read_json, remove_abandoned, remove_path,
                    write_json)

_CHUNK = 64  # files per job at most: a job opens the memmap once
_COPY_BYTES = 16 << 20  # copied from a staging file at a time: bounded memory for any size of split


@dataclasses.dataclass(frozen=True)
class DecodeFailure:
    """A file that could not be decoded into the cache."""

    path: str
    problem: str
    detail: str


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/imgclf`, or `~/.cache/imgclf` where that variable is unset, empty or relative.

    The XDG specification has a relative value ignored: it would put the cache in whatever folder a command runs
    from (a dataset's folder included).
    """
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "imgclf"


def cache_folder(cache_dir=None) -> Path:
    """The cache folder `cache_dir` names (a leading `~` is the home folder, as in a shell), or `default_cache_dir()`."""
    return Path(cache_dir).expanduser() if cache_dir else default_cache_dir()


def make_cache_dir(cache_dir: Path) -> None:
    """Makes the cache folder, or raises a `ValueError` that names it as the image cache and says where it is set."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = error.strerror or str(error)
        raise ValueError(f"The folder of the decoded-image cache, {escape_name(str(cache_dir))}, cannot be made: "
                         f"{reason}. It is data.cache_dir of a --config file where one sets it, else "
                         "$XDG_CACHE_HOME/imgclf (~/.cache/imgclf by default): choose a folder that can be written."
                         ) from None


# Raised whenever the pixels a file decodes to change, so that a cache written by an earlier imgclf is decoded
# again rather than served (2: a PNG's transparent colour is composited; 3: a JPEG with a gain map is decoded
# at a reduced scale like any JPEG; 4: the transparent level of a 2-, 4- or 16-bit grey PNG is composited).
DECODING_VERSION = 4


def cache_key(sha1s: Sequence[str], spec: ImageSpec, limits: ImageLimits) -> str:
    digest = hashlib.sha1()
    digest.update(repr((DECODING_VERSION, spec, limits)).encode())
    for sha1 in sha1s:
        digest.update(sha1.encode())
    return digest.hexdigest()[:24]


def chunk_size(files: int, workers: int | None) -> int:
    """Files per job: at most `_CHUNK`, and at least 8 jobs per worker, so that no worker is left with
    a long last job while the others wait (300 phone photos make 16 jobs of 19, not 5 of 64)."""
    return max(1, min(_CHUNK, -(-files // (8 * resolve_workers(workers)))))


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
    # No flush: the rows are in the page cache, which every process shares; `flush` (msync) would wait for the
    # disk after each chunk and doubled the time of a scan of 60,000 small images.
    del array
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
    staged: "StagedImages | None" = None,
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
        staged: images the scan decoded already (`Manifest.staged`); when
            they hold every path at this spec, the cache file is made from
            them and no file is opened. Defaults to `None`.

    Returns:
        `(images, failures)`: a read-only uint8 memmap of shape
        `(len(paths), *spec.shape)` (rows of failed files are zero) and the
        files that failed.
    """
    unhashed = next((path for path, sha1 in zip(paths, sha1s) if not sha1), None)
    if unhashed is not None:  # the cache keys pixels by content: without a hash, another file's would be served
        raise ValueError(f"{escape_name(str(unhashed))} has no content hash (an empty sha1 in a manifest written by "
                         "hand?). Hash it first: `imgclf scan DIR --out FILE` writes a manifest with every hash, and "
                         "`Manifest.recheck_changed` fills in the missing ones.")
    cache_dir = cache_folder(cache_dir)
    make_cache_dir(cache_dir)
    key = cache_key(sha1s, spec, limits)
    array_file = cache_dir / f"{key}.npy"
    failures_file = cache_dir / f"{key}.failures.json"

    # The failures file is written last, so its presence marks a complete cache.
    rows, damage = _read_cache(array_file, failures_file, (len(paths), *spec.shape))
    if damage:
        warnings.warn(f"The decoded-image cache {array_file} is damaged ({damage}); decoding the images again.",
                      stacklevel=2)
        _discard(array_file, failures_file)
    if rows is None and staged is not None:
        rows = staged.write_cache(array_file, paths, spec, limits)
        if rows is not None:
            write_json(failures_file, rows)
    if rows is None:
        with atomic_path(array_file) as tmp:
            np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), *spec.shape)).flush()
            size = chunk_size(len(paths), workers)
            jobs = [(str(tmp), start, list(chunk), spec, limits)
                    for start, chunk in zip(range(0, len(paths), size), chunked(list(paths), size))]
            results = parallel_map(_decode_rows, jobs, workers=workers, desc="decode", unit="chunk",
                                   files_per_item=size, progress=progress)
            rows = [row for chunk_failures in results for row in chunk_failures]
        if not any(problem == ImageProblem.UNREADABLE.value for _, problem, _ in rows):
            write_json(failures_file, rows)
        # else the cache stays incomplete: a file that could not be read (gone, a share that dropped out) is no
        # property of its content, and is read again next time
    failures = [DecodeFailure(paths[i], problem, detail) for i, problem, detail in rows]
    return np.load(array_file, mmap_mode="r"), failures


def cached_rows(images: np.ndarray, rows: np.ndarray, sha1s: Sequence[str], spec: ImageSpec, *, cache_dir=None,
                limits: ImageLimits = ImageLimits()) -> np.ndarray:
    """Rows `rows` of a cached array, as a cache file of their own (a memmap), not a copy in memory.

    A split with files that failed to decode keeps its other rows: indexing
    the memmap would copy all of them into memory (gigabytes for a large
    split), so they are copied once into a cache file keyed by their hashes,
    in bounded chunks, and read from there.

    Args:
        images: the cached array (a memmap).
        rows: the rows to keep, in order.
        sha1s: the content hashes of those rows (they key the file).
        spec: the spec of the images.
        cache_dir: the cache folder. Defaults to `None`: `default_cache_dir()`.
        limits: the decode limits (part of the key). Defaults to `ImageLimits()`.

    Returns:
        A read-only uint8 memmap of shape `(len(rows), *spec.shape)`.
    """
    cache_dir = cache_folder(cache_dir)
    key = cache_key(sha1s, spec, limits)
    array_file, failures_file = cache_dir / f"{key}.npy", cache_dir / f"{key}.failures.json"
    found, damage = _read_cache(array_file, failures_file, (len(rows), *spec.shape))  # damaged or missing: rewritten
    if damage:
        _discard(array_file, failures_file)
    if found is None:
        with atomic_path(array_file) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(rows), *spec.shape))
            step = max(1, _COPY_BYTES // max(1, int(np.prod(spec.shape))))
            for start in range(0, len(rows), step):
                out[start:start + step] = images[rows[start:start + step]]
            del out  # unmapped without msync: the page cache holds the rows
        write_json(failures_file, [])
    return np.load(array_file, mmap_mode="r")


def _read_cache(array_file: Path, failures_file: Path, shape: tuple[int, ...]) -> tuple[list | None, str]:
    """The failure rows of a complete, undamaged cache file, or `None` and what is wrong with it.

    Returns:
        `(rows, "")` for a usable cache, `(None, "")` for one never
        completed, `(None, damage)` for a damaged one.
    """
    for path in (array_file, failures_file):
        if path.is_dir():
            return None, f"{path.name} is a folder"
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


# Decoding while scanning -----------------------------------------------------------


def _scan_rows(job) -> list[tuple[FileCheck, tuple[str, str] | None]]:
    """Hashes, checks and decodes one chunk of files into rows `start...` of a staging file."""
    staging_file, start, paths, spec, limits = job
    array = np.load(staging_file, mmap_mode="r+")
    results = []
    for offset, path in enumerate(paths):
        check, pixels, error = scan_and_load(path, size=(spec.height, spec.width), channels=spec.channels,
                                             resize=spec.resize, limits=limits)
        if pixels is not None:
            array[start + offset] = pixels
        results.append((check, None if error is None else (error.problem.value, error.detail)))
    del array  # no flush, as in `_decode_rows`
    return results


class StagedImages:
    """Images decoded while they were scanned, kept until the split says which cache file each belongs to.

    The scan (`manifest.scan` with `cache_spec`) fills a staging `.npy` file
    in the cache folder, one row per scanned file; `decode_to_cache` makes a
    split's cache file from its rows. The staging file is removed when this
    object is garbage collected or the process ends, or as soon as every
    row of a readable file went to a cache file; one left by a process that
    was killed is removed by the next scan on the same host.

    A grayscale spec can be served from RGB rows when every image asked for
    is stored in a gray mode (as its scan found): converting such an image
    to RGB repeats its one channel, so the first channel is exactly what a
    grayscale decode gives. Any other difference of spec, or a file not
    staged, and `write_cache` declines: the images are decoded as usual.

    Args:
        paths: the files, in scan order.
        spec: what each file is decoded to.
        limits: the decode limits.
        cache_dir: the cache folder.
        record: where to note the cache files made from these rows, so a
            later scan of the same folder knows they exist
            (`scan_is_cached`). Defaults to `None`.
    """

    def __init__(self, paths: Sequence[str], spec: ImageSpec, limits: ImageLimits, cache_dir, *, record=None):
        self.spec, self.limits = spec, limits
        self.cache_dir = cache_folder(cache_dir)
        make_cache_dir(self.cache_dir)
        self.rows = {path: row for row, path in enumerate(paths)}
        self.paths = list(paths)
        self.failures: dict[int, tuple[str, str]] = {}
        self.channels = np.zeros(len(paths), dtype=np.int8)  # as stored, from each file's header; 0 if unusable
        self.record = Path(record) if record else None
        self._served = np.zeros(len(paths), dtype=bool)
        remove_abandoned(self.cache_dir, ".staging-")
        self.path: Path | None = self.cache_dir / f".staging-{process_tag()}.{secrets.token_hex(4)}.npy"
        self._finalizer = weakref.finalize(self, remove_path, self.path)
        with failures_named(self.path):
            np.lib.format.open_memmap(self.path, mode="w+", dtype=np.uint8, shape=(len(paths), *spec.shape)).flush()

    def fill(self, *, workers: int | None = None, progress: bool = True) -> Iterator[FileCheck]:
        """Scans and decodes every file in worker processes, yielding each file's `FileCheck` in order.

        Args:
            workers: processes. Defaults to `None`: one per CPU.
            progress: show a progress bar. Defaults to `True`.
        """
        size = chunk_size(len(self.paths), workers)
        jobs = [(str(self.path), start, list(chunk), self.spec, self.limits)
                for start, chunk in zip(range(0, len(self.paths), size), chunked(self.paths, size))]
        row = 0
        for results in parallel_map(_scan_rows, jobs, workers=workers, desc="scan", unit="chunk",
                                    files_per_item=size, progress=progress):
            for check, failure in results:
                if failure is not None:
                    self.failures[row] = failure
                self.channels[row] = check.channels or 0
                row += 1
                yield check

    def write_cache(self, array_file: Path, paths: Sequence[str], spec: ImageSpec,
                    limits: ImageLimits) -> list | None:
        """Writes the cache file of `paths` at `spec` from the staged rows.

        Args:
            array_file: the cache `.npy` to write (atomically).
            paths: the files of the split, in its order.
            spec: the spec asked for.
            limits: the limits asked for.

        Returns:
            The failure rows `(index, problem, detail)` of the split, or
            `None` when the staged rows cannot serve this request (nothing
            is written then).
        """
        if self.path is None or not self.path.exists() or limits != self.limits:
            return None
        rows = np.array([self.rows.get(path, -1) for path in paths], dtype=np.int64)
        if len(rows) and rows.min() < 0:
            return None
        same = spec == self.spec
        gray = (not same and dataclasses.replace(spec, channels=self.spec.channels) == self.spec
                and spec.channels == 1 and len(set(limits.background)) == 1
                and bool(np.all(self.channels[rows] == 1)))
        if not (same or gray):
            return None
        failures = [[index, *self.failures[row]] for index, row in enumerate(rows.tolist()) if row in self.failures]
        if same and np.array_equal(rows, np.arange(len(self.paths))):
            # One split holds every staged file, in order: the staging file is that cache file.
            os.replace(self.path, array_file)
            self.path = None
        else:
            staging = np.load(self.path, mmap_mode="r")
            with atomic_path(array_file) as tmp:
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), *spec.shape))
                step = max(1, _COPY_BYTES // max(1, int(np.prod(self.spec.shape))))
                for start in range(0, len(rows), step):
                    out[start:start + step] = staging[rows[start:start + step]][..., :spec.channels]
                del out  # unmapped without msync: the page cache holds the rows
        self._note(array_file)
        self._served[rows] = True
        if self.path is not None and self._served[self.channels > 0].all():
            self.close()  # every usable row went to a cache file: the disk space goes back now, not at exit
        return failures

    def _note(self, array_file: Path) -> None:
        if self.record is None:
            return
        try:
            made = read_json(self.record) if self.record.exists() else []
        except (OSError, ValueError):
            made = []
        made = [name for name in made if isinstance(name, str)] if isinstance(made, list) else []
        if array_file.name not in made:
            with contextlib.suppress(OSError):  # the record only spares a later scan some work: never a reason to stop
                write_json(self.record, [*made, array_file.name])

    def close(self) -> None:
        """Removes the staging file now."""
        self._finalizer()
        self.path = None


def scan_record(root, spec: ImageSpec, limits: ImageLimits, cache_dir=None) -> Path:
    """Where the cache files made from the last staged scan of `root` at `spec` are listed."""
    cache_dir = cache_folder(cache_dir)
    key = hashlib.sha1(repr((os.path.realpath(root), spec, limits)).encode()).hexdigest()[:24]
    return cache_dir / "scans" / f"{key}.json"


def scan_is_cached(root, spec: ImageSpec, limits: ImageLimits, cache_dir=None) -> bool:
    """Whether every cache file made from the last staged scan of `root` at `spec` is still complete.

    Then a scan of the same folder most likely finds its images in the cache
    and need not decode them while it hashes; if the folder changed since,
    the splits that changed are decoded after the scan, as without staging.
    """
    record = scan_record(root, spec, limits, cache_dir)
    try:
        names = read_json(record)
    except (OSError, ValueError):
        return False
    if not isinstance(names, list) or not names:
        return False
    folder = record.parent.parent
    return all(isinstance(name, str) and (folder / name).is_file()
               and (folder / name.replace(".npy", ".failures.json")).is_file() for name in names)


def _discard(*paths: Path) -> None:
    """Removes damaged cache files; a folder found in the place of one (the cache is imgclf's alone) goes too."""
    for path in paths:
        remove_path(path)

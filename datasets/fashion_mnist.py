"""Writes Fashion-MNIST as a pre-split folder of PNG files.

Reads the four IDX files of Fashion-MNIST (28x28 grayscale clothes, 10
classes) and writes them in the pre-split layout imgclf reads:

```
OUT/
  .imgclf-dataset.json          settings of the build (hidden; imgclf notes a build that is not complete)
  train/t-shirt_top/00000.png   60,000 training images
  train/trouser/...
  ...
  test/t-shirt_top/...          10,000 test images
  ...
```

The file name is the image's index within its split. imgclf carves the
validation split out of `train/`.

Where the IDX files come from, in order:

1. `--source DIR`, or else `/usr/share/datasets/fashion-mnist`, where
   Debian's package `dataset-fashion-mnist` installs them
   (`sudo apt-get install dataset-fashion-mnist`). The folder is searched
   recursively for `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
   `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte`, gzipped (`.gz`)
   or plain.
2. The cache folder (`--cache`, default `~/.cache/imgclf/fashion-mnist`).
3. A download of the official files into the cache folder, unless
   `--no-download` is given.

Every file is checked against the SHA-256 of the published files' content
(`CHECKSUMS`); a download that does not match is never kept in the cache.

Example:

```
python datasets/fashion_mnist.py data/fashion-mnist
python datasets/fashion_mnist.py data/fashion-small --limit 1000
```
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import math
import os
import re
import shutil
import signal
import sys
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

try:
    from ._common import existing_files, finish_build, prepare_out, run_build, save_atomic
except ImportError:  # run as a script: python datasets/NAME.py
    from _common import existing_files, finish_build, prepare_out, run_build, save_atomic

CLASSES = ("t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot")
SPLITS = {"train": "train", "test": "t10k"}
FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("t10k", "images"): "t10k-images-idx3-ubyte",
    ("t10k", "labels"): "t10k-labels-idx1-ubyte",
}
DEFAULT_SOURCE = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_CACHE = Path("~/.cache/imgclf/fashion-mnist")
# HTTPS first; the official site serves plain HTTP only, which the checksums make safe to use.
MIRRORS = (
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
)
# SHA-256 of each file's content once uncompressed. The published .gz files (MD5 in the project's README:
# train-images 8d4fb7e6c68d591d4c3dfef9ec88bf0d, train-labels 25c81989df183df01b3e8a0aad5dffbe, t10k-images
# bef4ecab320f06d8554ea6380940ec79, t10k-labels bb300cfdad3c16e7a12a480ee83cd310) and Debian's copies, gzipped
# again without the file name, hold these same bytes; so does a plain, uncompressed file.
CHECKSUMS = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
DOWNLOAD_TIMEOUT = 15.0
RECIPE = "fashion_mnist"

# IDX type codes (third byte of the magic number) and their big-endian dtypes.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_NAME = re.compile(r"^(train|t10k)-(images|labels)[.-]idx[13]-ubyte(\.gz)?$", re.IGNORECASE)
_CHUNK = 500

__all__ = ["CHECKSUMS", "CLASSES", "DEFAULT_CACHE", "DEFAULT_SOURCE", "build", "find_idx_files", "load", "locate", "main", "read_idx"]


# Reading IDX -------------------------------------------------------------------


def read_idx(path, *, sha256: str | None = None) -> np.ndarray:
    """Reads an IDX file (the MNIST format), gzipped or plain.

    The header is big-endian: two zero bytes, a type code (0x08 for uint8),
    the number of dimensions, then each dimension as a 32-bit integer. The
    data follows in the type's big-endian byte order. Gzip is recognised by
    its magic bytes, whatever the file is called.

    Args:
        path: the file.
        sha256: the SHA-256 (hex) the content must have once uncompressed,
            e.g. `CHECKSUMS["t10k-labels-idx1-ubyte"]`. Defaults to `None`:
            not checked.

    Returns:
        A numpy array shaped by the header's dimensions, in native byte order.

    Raises:
        ValueError: the file is no IDX file, its size does not match its
            header, or its content does not have the SHA-256 `sha256`.
    """
    path = Path(path)
    data = _uncompressed(path)
    found = hashlib.sha256(data).hexdigest() if sha256 is not None else None
    if found != sha256:
        raise ValueError(
            f"{path} is not the published Fashion-MNIST file: the SHA-256 of its content is {found}, not {sha256}. "
            f"It is damaged, or another dataset's. Delete it and fetch it again (--source DIR with the official "
            f"files, or a download into the cache)."
        )
    return _parse_idx(path, data)


def _uncompressed(path: Path) -> bytes:
    """The bytes of `path`, gunzipped if they start with gzip's magic bytes."""
    with open(path, "rb") as handle:
        gzipped = handle.read(2) == b"\x1f\x8b"
    try:
        with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as handle:
            return handle.read()
    except (OSError, EOFError) as error:
        raise ValueError(f"{path} cannot be read as {'gzip' if gzipped else 'a file'}: {error}. Delete it and fetch it again.") from error


def _parse_idx(path: Path, data: bytes) -> np.ndarray:
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES or data[3] == 0:
        raise ValueError(f"{path} is not an IDX file (header bytes {data[:4].hex() or 'missing'}). Expected a file like train-images-idx3-ubyte.")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path} is truncated inside its IDX header. Delete it and fetch it again.")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = header + math.prod(dims) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(
            f"{path} holds {len(data)} bytes but its IDX header {dims} needs {expected}: the file is truncated or damaged. "
            f"Delete it and fetch it again."
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="))


def find_idx_files(folder) -> dict[tuple[str, str], Path]:
    """Finds the Fashion-MNIST IDX files under `folder`, searching subfolders too.

    Names may end in `.gz` or not, and use `-idx` or `.idx`. Where a file
    appears more than once, the one nearest to `folder` wins, a plain file
    before a gzipped one.

    Args:
        folder: the folder to search.

    Returns:
        A dict from `(split, kind)`, e.g. `("t10k", "labels")`, to the file;
        missing files are absent from it. Empty when `folder` does not exist.
    """
    folder = Path(folder).expanduser()
    found: dict[tuple[str, str], tuple[tuple, Path]] = {}
    if not folder.is_dir():
        return {}
    seen = set()
    for current, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(current)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        depth = len(Path(current).relative_to(folder).parts)
        for name in sorted(files):
            match = _IDX_NAME.match(name)
            if not match:
                continue
            key = (match.group(1).lower(), match.group(2).lower())
            rank = (depth, bool(match.group(3)), current, name)
            if key not in found or rank < found[key][0]:
                found[key] = (rank, Path(current) / name)
    return {key: path for key, (rank, path) in found.items()}


def _describe(folder: Path, found: dict) -> str:
    if not folder.exists():
        return "folder does not exist"
    if not folder.is_dir():
        return "not a folder"
    if not found:
        return "has no Fashion-MNIST IDX files"
    missing = [FILES[key] + "(.gz)" for key in FILES if key not in found]
    return "lacks " + ", ".join(missing)


# Finding or downloading the files --------------------------------------------


def _download(cache: Path, *, mirrors, timeout: float, log) -> list[str]:
    """Downloads the missing gzipped IDX files into `cache`; returns the problems met."""
    cache.mkdir(parents=True, exist_ok=True)
    present = find_idx_files(cache)
    problems = []
    for key, stem in FILES.items():
        if key in present:
            continue
        name = stem + ".gz"
        target = cache / name
        for mirror in mirrors:
            url = mirror + name
            tmp = cache / f".{name}.{os.getpid()}.tmp"
            try:
                log(f"downloading {url}")
                with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as handle:
                    shutil.copyfileobj(response, handle, 1 << 20)
                found = hashlib.sha256(_uncompressed(tmp)).hexdigest()  # a truncated gzip fails here
                if found != CHECKSUMS[stem]:
                    problems.append(f"{url}: not the published {name}, so it was not kept (the SHA-256 of its "
                                    f"content is {found}, not {CHECKSUMS[stem]})")
                    continue
                os.replace(tmp, target)
                break
            except Exception as error:  # any network or format problem: try the next mirror
                problems.append(f"{url}: {error}")
            finally:
                with contextlib.suppress(OSError):
                    tmp.unlink()
        else:
            return problems
    return problems


def locate(source=None, *, cache=None, download: bool = True, mirrors=None, timeout: float | None = None, log=None) -> dict[tuple[str, str], Path]:
    """Finds the four Fashion-MNIST IDX files, downloading them if needed.

    Args:
        source: folder searched (recursively) first. Defaults to `None`:
            `/usr/share/datasets/fashion-mnist`, where Debian's package
            `dataset-fashion-mnist` installs the files.
        cache: folder searched next, and where downloads go. Defaults to
            `None`: `~/.cache/imgclf/fashion-mnist`.
        download: download missing files into `cache` when neither folder
            has them all. Defaults to `True`.
        mirrors: base URLs tried in order for each file. Defaults to `None`:
            `MIRRORS`, the project's GitHub repository (HTTPS), then the
            official download site (HTTP). A downloaded file whose content
            does not match `CHECKSUMS` is not kept, and the next mirror is
            tried.
        timeout: seconds a network request may stall. Defaults to `None`:
            `DOWNLOAD_TIMEOUT` (15).
        log: function called with progress messages. Defaults to `None`
            (silent).

    Returns:
        A dict from `(split, kind)` (`split` in `train`, `t10k`; `kind` in
        `images`, `labels`) to the file.

    Raises:
        FileNotFoundError: no folder has the files and the download is
            disabled or failed. The message says where it looked and how to
            provide the files.
    """
    log = log or (lambda message: None)
    mirrors = tuple(MIRRORS if mirrors is None else mirrors)
    timeout = DOWNLOAD_TIMEOUT if timeout is None else timeout
    source = Path(source if source is not None else DEFAULT_SOURCE).expanduser()
    cache = Path(cache if cache is not None else DEFAULT_CACHE).expanduser()
    looked = []
    for folder, role in ((source, "source"), (cache, "cache")):
        found = find_idx_files(folder)
        if len(found) == len(FILES):
            if role == "cache":
                log(f"using the cached files in {folder} ({source}: {_describe(source, find_idx_files(source))})")
            return found
        looked.append(f"  {role}: {folder} ({_describe(folder, found)})")
    if download:
        problems = _download(cache, mirrors=mirrors, timeout=timeout, log=log)
        found = find_idx_files(cache)
        if len(found) == len(FILES):
            return found
        with contextlib.suppress(OSError):
            cache.rmdir()  # only removes a cache folder left empty by the failed download
        looked.append("  download: failed: " + "; ".join(problems[-len(mirrors) :] or ["no mirror answered"]))
        retry = "or download again once the network is reachable"
    else:
        looked.append("  download: disabled (--no-download)")
        retry = "or leave out --no-download to download them (needs network access)"
    raise FileNotFoundError(
        "Fashion-MNIST IDX files not found.\n" + "\n".join(looked) + "\n"
        f"Fix: install Debian's package with `sudo apt-get install dataset-fashion-mnist` (it puts the files in {DEFAULT_SOURCE}), "
        f"or pass --source DIR with {', '.join(stem + '(.gz)' for stem in FILES.values())}, {retry}."
    )


def load(source=None, *, cache=None, download: bool = True, log=None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Loads Fashion-MNIST as numpy arrays.

    Args:
        source: folder with the IDX files. Defaults to `None`: see `locate`.
        cache: cache folder for downloads. Defaults to `None`: see `locate`.
        download: download the files when no folder has them. Defaults to `True`.
        log: function called with progress messages. Defaults to `None`.

    Returns:
        `{"train": (images, labels), "test": (images, labels)}` with `uint8`
        images shaped `(n, height, width)` and integer labels in 0..9.

    Raises:
        FileNotFoundError: the files cannot be found or downloaded.
        ValueError: a file is damaged, or images and labels do not match.
    """
    return _read_splits(locate(source, cache=cache, download=download, log=log))


def _read_splits(files: dict[tuple[str, str], Path]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    data = {}
    for split, stem in SPLITS.items():
        images, labels = (read_idx(files[(stem, kind)], sha256=CHECKSUMS[FILES[(stem, kind)]]) for kind in ("images", "labels"))
        where = f"{files[(stem, 'images')]} and {files[(stem, 'labels')]}"
        if images.ndim != 3 or labels.ndim != 1:
            raise ValueError(f"{where}: expected images shaped (n, height, width) and labels shaped (n,), received {images.shape} and {labels.shape}.")
        if len(images) != len(labels):
            raise ValueError(f"{where}: {len(images)} images but {len(labels)} labels. The files come from different releases; fetch all four again.")
        if images.dtype != np.uint8:
            raise ValueError(f"{files[(stem, 'images')]}: expected uint8 pixels (IDX type 0x08), received {images.dtype}.")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(CLASSES)):
            raise ValueError(f"{files[(stem, 'labels')]}: labels must lie in 0..{len(CLASSES) - 1}, received {labels.min()}..{labels.max()}.")
        data[split] = (images, labels.astype(np.int64))
    return data


# Writing PNGs -----------------------------------------------------------------


def _write_chunk(task: tuple[list[str], np.ndarray]) -> int:
    paths, images = task
    for path, pixels in zip(paths, images):
        save_atomic(Image.fromarray(pixels), path, "PNG")
    return len(paths)


class _Progress:
    """tqdm when it is installed, else a line every 10 %; only on a terminal, silent when disabled.

    A bar redrawn in a pipe or a log file is only noise, so nothing is shown
    when stderr is not a terminal (as tqdm's `disable=None` does).
    """

    def __init__(self, total: int, enabled: bool):
        enabled = enabled and total > 0 and sys.stderr.isatty()
        self.total, self.done, self.enabled, self.bar, self.next_report = total, 0, enabled, None, 0.1
        if self.enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="img", desc="writing PNGs", file=sys.stderr)
            except ImportError:
                print(f"writing {total} PNGs", file=sys.stderr)

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(n)
        elif self.done / self.total >= self.next_report or self.done == self.total:
            print(f"  {self.done}/{self.total} ({100 * self.done // self.total}%)", file=sys.stderr)
            self.next_report = (self.done / self.total // 0.1 + 1) * 0.1

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def build(
    out,
    *,
    source=None,
    cache=None,
    download: bool = True,
    limit: int | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> dict:
    """Writes Fashion-MNIST as `OUT/train|test/<class>/<index:05d>.png`.

    Files that already exist are kept, so running again into a complete
    folder only lists it. Each PNG is written under a hidden temporary name
    and renamed into place, so a killed run never leaves a partial PNG under
    its final name; running again finishes the job.

    Args:
        out: the output folder. Created if missing; must be empty, or a folder
            written earlier by this recipe.
        source: folder with the IDX files, searched recursively. Defaults to
            `None`: `/usr/share/datasets/fashion-mnist` (Debian's
            `dataset-fashion-mnist`), then the cache, then a download.
        cache: folder for downloaded files. Defaults to `None`:
            `~/.cache/imgclf/fashion-mnist`.
        download: download the files when no folder has them. Defaults to `True`.
        limit: keep only the first `limit` images of each split (not
            stratified), for quick demos. Defaults to `None`: all of them.
        workers: processes that write PNGs. Defaults to `None`: one per CPU.
        overwrite: delete the images a previous build wrote in `out` (other
            files are kept) and write everything again. Also needed to
            rebuild a folder written with another `limit`. Defaults to `False`.
        progress: show messages, and a progress bar (tqdm if installed)
            when stderr is a terminal. Defaults to `False`.

    Returns:
        A dict with `root` (the folder, as a string), `classes` (folder
        names), `counts` (`{split: {class: images}}`), `images` (total),
        `written` (files written by this call), `skipped` (files that
        already existed) and `source` (the folder the IDX files came from).

    Raises:
        FileNotFoundError: the IDX files cannot be found or downloaded.
        ValueError: bad `limit` or `workers`, or a damaged IDX file.
        FileExistsError: `out` holds other files, or a build with another
            `limit` (pass `overwrite=True`).
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1):
        raise ValueError(f"limit must be a positive number of images per split, e.g. 1000, or None for all. Received: {limit!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1):
        raise ValueError(f"workers must be a positive number of processes, or None for one per CPU. Received: {workers!r}")
    log = (lambda message: print(message, file=sys.stderr)) if progress else None
    files = locate(source, cache=cache, download=download, log=log)
    data = _read_splits(files)

    out = Path(out)
    params = {"recipe": RECIPE, "limit": None if limit is None else int(limit)}
    prepare_out(out, params, overwrite=overwrite,
                folders=lambda params: [f"{split}/{name}" for split in SPLITS for name in CLASSES])

    counts, todo_paths, todo_images, total = {}, [], [], 0
    for split, (images, labels) in data.items():
        n = len(images) if limit is None else min(int(limit), len(images))
        labels = labels[:n]
        width = max(5, len(str(n - 1)))
        counts[split] = {name: int(np.sum(labels == c)) for c, name in enumerate(CLASSES)}
        total += n
        existing = {}
        for name in CLASSES:
            folder = out / split / name
            folder.mkdir(parents=True, exist_ok=True)
            existing[name] = existing_files(folder)
        for index in range(n):
            name = CLASSES[labels[index]]
            filename = f"{index:0{width}d}.png"
            if filename not in existing[name]:
                todo_paths.append(str(out / split / name / filename))
                todo_images.append((split, index))

    if todo_paths:
        # Group the missing images into chunks that carry their own pixels.
        tasks = []
        for start in range(0, len(todo_paths), _CHUNK):
            keys = todo_images[start : start + _CHUNK]
            pixels = np.stack([data[split][0][index] for split, index in keys])
            tasks.append((todo_paths[start : start + _CHUNK], pixels))
        workers = int(workers) if workers is not None else (os.cpu_count() or 1)
        workers = max(1, min(workers, len(tasks)))
        bar = _Progress(len(todo_paths), progress)
        try:
            if workers == 1:
                for task in tasks:
                    bar.update(_write_chunk(task))
            else:
                import multiprocessing

                with multiprocessing.Pool(workers, initializer=_leave_ctrl_c_to_the_parent) as pool:
                    for n in pool.imap_unordered(_write_chunk, tasks):
                        bar.update(n)
        finally:
            bar.close()

    return finish_build(out, params, classes=CLASSES, counts=counts, images=total, written=len(todo_paths),
                        skipped=total - len(todo_paths), source=str(files[("train", "images")].parent))


def _leave_ctrl_c_to_the_parent() -> None:
    """Ctrl-C reaches every process of the terminal's group: the pool's owner stops on it and ends the workers,
    which would otherwise print a traceback each."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# Command line ----------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python datasets/fashion_mnist.py",
        description=(
            "Write Fashion-MNIST (70,000 28x28 grayscale PNGs, 10 classes) as OUT/train/<class>/ and OUT/test/<class>/. "
            f"The IDX files are read from --source (default {DEFAULT_SOURCE}, installed by "
            "`sudo apt-get install dataset-fashion-mnist`), else from --cache, else downloaded into --cache."
        ),
        epilog=(
            "example:\n"
            "  python datasets/fashion_mnist.py data/fashion-mnist\n"
            "  python datasets/fashion_mnist.py data/fashion-small --limit 1000 --no-download\n"
            "  python datasets/fashion_mnist.py data/fashion-mnist --source ~/Downloads/fashion"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("out", metavar="OUT", help="output folder (created; new, empty, or an earlier build of this recipe)")
    parser.add_argument("--source", metavar="DIR", help=f"folder with the IDX files, searched recursively, .gz or plain (default: {DEFAULT_SOURCE})")
    parser.add_argument("--cache", metavar="DIR", help=f"folder for downloaded files (default: {DEFAULT_CACHE})")
    parser.add_argument("--no-download", action="store_true", help="never download; fail when no folder has the files")
    parser.add_argument("--limit", type=int, metavar="N", help="keep only the first N images of each split, for quick demos (default: all)")
    parser.add_argument("--workers", type=int, metavar="N", help="processes that write PNGs (default: one per CPU)")
    parser.add_argument("--overwrite", action="store_true", help="delete the images of an earlier build in OUT (other files are kept) and write it again")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    return parser


def main(argv=None) -> int:
    """Runs the command line; returns the exit status."""
    args = _parser().parse_args(argv)

    def describe(summary: dict) -> str:
        sizes = ", ".join(f"{split} {sum(c.values())}" for split, c in summary["counts"].items())
        return f"({sizes}) in {len(summary['classes'])} classes under {summary['root']} from {summary['source']}"

    return run_build(lambda: build(
        args.out, source=args.source, cache=args.cache, download=not args.no_download, limit=args.limit,
        workers=args.workers, overwrite=args.overwrite, progress=not args.quiet,
    ), describe, argv=argv, out=args.out)


if __name__ == "__main__":
    sys.exit(main())

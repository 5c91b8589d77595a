"""Predicting with a trained run: files, folders or CSV lists of paths in, one row per image out.

```
imgclf predict runs/flowers new_photos/ --out predictions.csv
path,predicted,confidence,class_1,probability_1,class_2,probability_2,class_3,probability_3,status,detail
new_photos/IMG_1.jpg,tulip,0.912,tulip,0.912,rose,0.051,daisy,0.020,ok,
new_photos/notes.jpg,,,,,,,,,not_an_image,"the file is text, not an image"
```

Images are decoded exactly as the run's training images were: the size,
channels and resize policy come from the run directory (`config.yaml`, checked
against the model's input), never from the new files. Nothing is hashed or
audited: each file is decoded once, and a file that cannot be decoded gets a
row with its problem instead of stopping the run.

Memory stays flat however many files there are: folders are walked lazily,
worker processes decode a few batches ahead of the model (so decoding
overlaps inference), and each batch's rows are written as soon as it is
predicted.

This module does not import TensorFlow at import time: its worker processes
import it too.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import dataclasses
import functools
import io
import json
import os
import sys
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from .config import ImageSpec
from .files import atomic_path, escape_name, unescape_name
from .images import JPEG_FORMATS, RESIZE_MODES, ImageDecodeError, ImageLimits, load_image
from .manifest import _is_dir, _is_ignored, _is_image_name, check_utf8_text, symlink_loop_note
from .parallel import WorkerDiedError, WorkerPool, resolve_workers

DEFAULT_BATCH_SIZE = 64
DEFAULT_TOP_K = 3
FORMATS = ("csv", "json")
OK = "ok"
# Below this many files, starting worker processes costs more than decoding in this process.
_MIN_FILES_FOR_WORKERS = 256


class UnsafeModelError(ValueError):
    """A model file holds Python code (a `Lambda` layer) and is refused."""


def load_keras_model(path):
    """Loads a `.keras` file in Keras' safe mode.

    A `Lambda` layer holds Python code that would run on loading; such a file
    is refused with a message that says so, never loaded with
    `safe_mode=False`.

    Args:
        path: the `.keras` file.

    Returns:
        The `keras.Model`.

    Raises:
        UnsafeModelError: if the file holds a `Lambda` layer.
        FileNotFoundError: if there is no such file.
        ValueError: if a weight is NaN or infinite (training diverged).
    """
    import keras

    if not os.path.isfile(path):
        raise FileNotFoundError(f"No model file at {escape_name(str(path))}.")
    try:
        model = keras.saving.load_model(path, safe_mode=True)
    except ValueError as error:
        if "safe_mode" not in str(error) and "Lambda" not in str(error):
            raise
        raise UnsafeModelError(
            f"{escape_name(str(path))} holds a Lambda layer, i.e. Python code that would run when the model is "
            "loaded, and imgclf loads models only in Keras' safe mode. Models trained by imgclf have no Lambda "
            "layer: use a model.keras written by `imgclf train`, or rebuild the model from layers without Lambda."
        ) from None
    broken = [w.path for w in model.weights if not np.isfinite(keras.ops.convert_to_numpy(w)).all()]
    if broken:
        raise ValueError(f"{escape_name(str(path))} holds NaN or infinite weights ({len(broken)} of {len(model.weights)} "
                         f"variables, e.g. {broken[0]}): training diverged, and every prediction would be NaN. "
                         "Train again with a lower learning rate (--lr).")
    return model


def run_image_spec(cfg, model) -> ImageSpec:
    """The size, channels and resize policy a run's model was trained on.

    `config.yaml` holds the resolved size and colour mode of every run; they
    must agree with the model's input, which wins only where the config
    leaves the size open.

    Args:
        cfg: the run's `Config`.
        model: its `keras.Model`.

    Returns:
        An `ImageSpec`.

    Raises:
        ValueError: if the config and the model disagree.
    """
    height, width, channels = (int(d) for d in model.input_shape[1:])
    size = tuple(cfg.data.image_size) if cfg.data.image_size else (height, width)
    expected = {"grayscale": 1, "rgb": 3}.get(cfg.data.color_mode, channels)
    if size != (height, width) or expected != channels:
        raise ValueError(
            f"The run's config.yaml says image_size={list(size)}, color_mode={cfg.data.color_mode!r}, but its "
            f"model takes {height}x{width}x{channels} images. The run directory is inconsistent; train it again."
        )
    return ImageSpec(height, width, channels, cfg.data.resize)


class Predictor:
    """A trained model with what it needs to read images: classes, input size, resize policy.

    Returned by `imgclf.load(run)`.

    Attributes:
        model: the `keras.Model` (takes uint8 images of `spec.shape`).
        classes: class names; probability column i is class i.
        spec: the `ImageSpec` images are decoded to.
        limits: the `ImageLimits` of the run.
        workers: decoding processes for many files (1: decode in this process).

    Example:

    >>> clf = imgclf.load("runs/flowers")
    >>> clf.classes
    ['daisy', 'rose', 'tulip']
    >>> probabilities = clf.predict(["a.jpg", PIL.Image.open("b.png"), array])
    >>> [clf.classes[i] for i in probabilities.argmax(axis=1)]
    ['tulip', 'rose', 'daisy']
    """

    def __init__(self, model, classes: Sequence[str], spec: ImageSpec, *, limits: ImageLimits = ImageLimits(),
                 workers: int | None = None):
        self.model = model
        self.classes = list(classes)
        self.spec = spec
        self.limits = limits
        self.workers = resolve_workers(workers)
        self._function = None
        self._pool: Executor | None = None
        self._model_pool: ThreadPoolExecutor | None = None

    def __repr__(self) -> str:
        s = self.spec
        return f"Predictor({len(self.classes)} classes, input {s.height}x{s.width}x{s.channels}, resize={s.resize!r})"

    # Images in memory ---------------------------------------------------------
    def predict(self, images, *, batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """Class probabilities of images given as files, PIL images or uint8 arrays.

        Every image is decoded, converted and resized as the run's training
        images were (files with EXIF orientation applied; any size, any mode).
        A PIL image of a JPEG that is not decoded yet (as `PIL.Image.open`
        returns it) is decoded in draft mode as a file is, so it gives the
        same probabilities as its path; the image passed in is left as it
        is. A PIL image already decoded is used as it is.

        Args:
            images: one image or an iterable of them: a file path (`str` or
                `os.PathLike`), a `PIL.Image.Image`, a uint8 array
                `(height, width)` or `(height, width, channels)` of any size,
                or a uint8 batch `(N, height, width, channels)` of the
                model's input size.
            batch_size: images per model call, at least 1. Defaults to 64.

        Returns:
            float32 array `(N, len(classes))`; rows sum to 1.

        Raises:
            ImageDecodeError: if a file cannot be decoded (use
                `imgclf.predict` to get a row per bad file instead).
            ValueError: for an array that is not uint8 or has the wrong
                shape, or a `batch_size` below 1.
            TypeError: for `None`, `bytes`, or anything else that is not an
                image or an iterable of images.
        """
        _check_batch_size(batch_size)
        if isinstance(images, np.ndarray) and images.ndim == 4:
            if images.dtype != np.uint8 or images.shape[1:] != self.spec.shape:
                raise ValueError(f"A batch of images must be uint8 of shape (N, {', '.join(map(str, self.spec.shape))}). "
                                 f"Received: dtype={images.dtype}, shape={images.shape}")
            batch = images
        else:
            if isinstance(images, (str, os.PathLike, np.ndarray, bytes, bytearray)) or _is_pil(images):
                images = [images]  # one image (bytes: refused as a path by _prepare)
            elif not hasattr(images, "__iter__"):
                raise TypeError("images must be a file path, a PIL image, a uint8 array or an iterable of them. "
                                f"Received: {type(images).__name__}")
            images = list(images)
            batch = np.stack([self._prepare(image) for image in images]) if images else np.zeros((0, *self.spec.shape), np.uint8)
        return np.concatenate([self._infer(batch[i:i + batch_size]) for i in range(0, len(batch), batch_size)]
                              or [np.zeros((0, len(self.classes)), np.float32)])

    def _prepare(self, image) -> np.ndarray:
        spec = self.spec
        if isinstance(image, (str, os.PathLike)):
            return load_image(image, size=(spec.height, spec.width), channels=spec.channels, resize=spec.resize,
                              limits=self.limits)
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
                raise ValueError("An image array must be uint8 of shape (height, width) or (height, width, 1|3|4). "
                                 f"Received: dtype={image.dtype}, shape={image.shape}")
            if 0 in image.shape[:2]:
                raise ValueError(f"An image must have at least 1x1 pixels. Received: shape={image.shape}")
            if image.shape == spec.shape:
                return image
            from PIL import Image

            image = Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image)
        elif isinstance(image, (bytes, bytearray)):
            raise TypeError(f"A path must be a str or a pathlib.Path, not bytes. Received: {image!r:.80}")
        elif not _is_pil(image):
            raise TypeError("Each image must be a file path, a PIL image or a uint8 array. "
                            f"Received: {type(image).__name__}")
        elif 0 in image.size:
            raise ValueError(f"An image must have at least 1x1 pixels. Received: a PIL image of size {image.size}")
        elif image.format in JPEG_FORMATS and getattr(image, "tile", None) and getattr(image, "fp", None) is not None:
            image = _draft_copy(image, spec)
        return resize_image(image, spec, self.limits)

    # The model ----------------------------------------------------------------
    def _infer(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities of one batch, as it is (a short last batch is not padded).

        The model is traced for the first batch size, then once more with a
        batch dimension of any size (`reduce_retracing`), so batches of other
        sizes do not trace it again.
        """
        if self._function is None:
            import tensorflow as tf

            # A partial, not a lambda: TensorFlow counts traces per Python code object, so the lambda of
            # every Predictor would count as one function traced again and again, and warn after five.
            self._function = tf.function(functools.partial(self.model, training=False), reduce_retracing=True)
        n = len(batch)
        if n == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        return np.asarray(self._function(batch))[:n]

    # Many files -----------------------------------------------------------------
    def predict_files(self, paths: Iterable[str], *, batch_size: int = DEFAULT_BATCH_SIZE,
                      top_k: int = DEFAULT_TOP_K) -> Iterator[dict]:
        """One row per file, in order, while the next batches are decoded in worker processes.

        Args:
            paths: image files (an iterator is read lazily).
            batch_size: images per model call, at least 1. Defaults to 64.
            top_k: classes listed per image. Defaults to 3.

        Returns:
            An iterator of rows (see `imgclf.predict`).
        """
        _check_batch_size(batch_size)
        top_k = max(1, min(top_k, len(self.classes)))
        # The model runs in a thread of its own: while it predicts one batch (TensorFlow releases the
        # GIL), this thread walks the folders and hands out the rows of the batch before.
        model_thread = self._model_thread()
        previous = None
        for paths_batch, images, failures in self._decoded_batches(paths, batch_size):
            current = (paths_batch, failures, model_thread.submit(self._infer, images))
            if previous is not None:
                yield from self._rows(*previous, top_k)
            previous = current
        if previous is not None:
            yield from self._rows(*previous, top_k)

    def _rows(self, paths: list[str], failures, probabilities: Future, top_k: int) -> Iterator[dict]:
        classes = self.classes
        probabilities = probabilities.result()
        # The top k of the whole batch at once: per-row NumPy calls would cost more than the model.
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
        scores = np.round(np.take_along_axis(probabilities, order, axis=1).astype(np.float64), 6).tolist()
        order = order.tolist()
        failed = dict(failures)
        for i, path in enumerate(paths):
            if i in failed:
                problem, detail = failed[i]
                yield {"path": path, "predicted": None, "confidence": None, "top_k": [], "status": problem,
                       "detail": detail}
            else:
                top = [(classes[c], p) for c, p in zip(order[i], scores[i])]
                yield {"path": path, "predicted": top[0][0], "confidence": top[0][1], "top_k": top, "status": OK,
                       "detail": ""}

    def _model_thread(self) -> ThreadPoolExecutor:
        if self._model_pool is None:
            self._model_pool = ThreadPoolExecutor(1, thread_name_prefix="imgclf-predict")
        return self._model_pool

    def _decoded_batches(self, paths: Iterable[str], batch_size: int):
        """Yields `(paths, images, failures)` per batch; at most a few batches are decoded ahead."""
        batches = _batches(paths, batch_size)
        head = []
        for batch in batches:  # a few files are decoded here: starting workers would cost more
            head.append(batch)
            if len(head) * batch_size >= _MIN_FILES_FOR_WORKERS:
                break
        else:
            for batch in head:
                yield (batch, *decode_batch((batch, self.spec, self.limits)))
            return
        pool = self._executor()
        ahead = 2 * self.workers + 2
        pending: collections.deque[tuple[list[str], Future]] = collections.deque()
        todo = _chain(head, batches)
        try:
            for batch in todo:
                pending.append((batch, pool.submit(decode_batch, (batch, self.spec, self.limits))))
                if len(pending) >= ahead:
                    done, future = pending.popleft()
                    yield (done, *future.result())
            while pending:
                done, future = pending.popleft()
                yield (done, *future.result())
        except BrokenProcessPool:
            self.close()
            raise WorkerDiedError(
                "A process decoding images died, most often killed by the system for lack of memory, or unable to "
                "start because the main script calls imgclf at its top level (put that code under "
                "`if __name__ == \"__main__\":`). Pass workers=1 (--workers 1) to decode in this process."
            ) from None
        finally:
            for _, future in pending:
                future.cancel()

    def _executor(self) -> Executor:
        if self._pool is None:
            self._pool = _InlineExecutor() if self.workers == 1 else WorkerPool(self.workers)
        return self._pool

    def start_workers(self) -> None:
        """Starts the decoding processes now (they start on first use otherwise), e.g. while the model loads."""
        pool = self._executor()
        for future in [pool.submit(_ready) for _ in range(self.workers)]:
            future.result()

    def close(self, *, wait: bool = True) -> None:
        """Stops the decoding processes and the model's thread; the predictor starts new ones if used again."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.shutdown(wait=wait, cancel_futures=True)
        if self._model_pool is not None:
            model_pool, self._model_pool = self._model_pool, None
            model_pool.shutdown(wait=wait, cancel_futures=True)

    def __enter__(self) -> "Predictor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close(wait=False)
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


class _InlineExecutor(Executor):
    """Runs each task at once in this process (`workers=1`)."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(error)
        return future


def _ready() -> bool:
    return True


def _is_pil(value) -> bool:
    module = type(value).__module__
    return module.startswith("PIL.") and hasattr(value, "mode") and hasattr(value, "size")


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1. Received: batch_size={batch_size}")


def _draft_copy(image, spec: ImageSpec):
    """A JPEG opened but not decoded yet, opened again from its bytes and set to draft mode as a file is.

    Draft mode changes the image it is set on (its size, its mode), so it is
    set on a new image of the same bytes, and the caller's stays as it was.
    """
    from PIL import Image

    handle = image.fp
    position = handle.tell()
    try:
        handle.seek(0)
        data = handle.read()
    finally:
        handle.seek(position)
    copy = Image.open(io.BytesIO(data))
    # As images._decode_opened does for every JPEG file: DCT scaling to the smallest scale at least this size.
    copy.draft("L" if spec.channels == 1 else "RGB", (spec.width, spec.height))
    return copy


def resize_image(image, spec: ImageSpec, limits: ImageLimits = ImageLimits()) -> np.ndarray:
    """A PIL image in memory, converted and resized as `images.load_image` does a file.

    Args:
        image: a `PIL.Image.Image` of any mode and size.
        spec: the size, channels and resize policy.
        limits: the background of transparent pixels. Defaults to `ImageLimits()`.

    Returns:
        A uint8 array of shape `spec.shape`.
    """
    from PIL import Image, ImageOps

    from .images import _convert, transparent_grey_level  # what every decoded file goes through

    if spec.resize not in RESIZE_MODES:
        raise ValueError(f"Unknown resize {spec.resize!r}. Valid values: {', '.join(RESIZE_MODES)}")
    grey_level = transparent_grey_level(image)  # before the copy below loads the pixels
    image = ImageOps.exif_transpose(image)  # a copy of the frame the image is at (an animated one is not rewound)
    if grey_level is not None:
        image.info["transparency"] = grey_level
    image = _convert(image, spec.channels, limits)
    size = (spec.width, spec.height)
    if spec.resize == "stretch":
        image = image.resize(size, Image.Resampling.BILINEAR)
    elif spec.resize == "crop":
        image = ImageOps.fit(image, size, Image.Resampling.BILINEAR)
    else:
        fill = limits.background[0] if spec.channels == 1 else limits.background
        image = ImageOps.pad(image, size, Image.Resampling.BILINEAR, color=fill)
    array = np.asarray(image, dtype=np.uint8)
    return array[..., None] if spec.channels == 1 else array


def decode_batch(job) -> tuple[np.ndarray, list[tuple[int, tuple[str, str]]]]:
    """Decodes one batch of files (in a worker process); failed rows are zero.

    Args:
        job: `(paths, spec, limits)`.

    Returns:
        `(images, failures)`: uint8 array `(len(paths), *spec.shape)` and
        `(index, (problem, detail))` for each file that failed.
    """
    paths, spec, limits = job
    images = np.zeros((len(paths), *spec.shape), np.uint8)
    failures = []
    for i, path in enumerate(paths):
        try:
            images[i] = load_image(path, size=(spec.height, spec.width), channels=spec.channels, resize=spec.resize,
                                   limits=limits)
        except ImageDecodeError as error:
            failures.append((i, (error.problem.value, error.detail)))
    return images, failures


def _batches(paths: Iterable[str], size: int) -> Iterator[list[str]]:
    batch = []
    for path in paths:
        batch.append(path)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _chain(first: list, rest: Iterator) -> Iterator:
    yield from first
    yield from rest


# Inputs ---------------------------------------------------------------------------

def iter_inputs(inputs, *, notes: list | None = None) -> Iterator[str]:
    """The image files that `inputs` name, lazily, for `imgclf predict`.

    Args:
        inputs: a path or a list of paths, each a file (predicted whatever
            its extension), a folder (every image below it, with the rules
            of `imgclf scan`: image extensions only, hidden and junk files
            such as `.DS_Store` and `Thumbs.db` skipped, symlinked folders
            walked once, a symlink to a folder that contains it not
            followed), or a `.csv` file listing paths (a `path` column, else
            a `file`, `filename`, `image` or `image_path` column, else the
            first column; a relative path is looked up beside the CSV file
            first, then from the current folder, so that a predictions CSV
            written by `imgclf predict` reads back; escaped names as imgclf
            writes them are read back).
        notes: a list that gets a note for each symlink not followed, as
            `imgclf scan` words it. Defaults to `None` (no notes).

    Returns:
        An iterator of file paths; a path that does not exist is yielded as
        it is, and its row says `unreadable`.

    Raises:
        TypeError: for `None`, or a path given as `bytes`.
    """
    notes = [] if notes is None else notes
    for item in _input_list(inputs):
        if not isinstance(item, (str, os.PathLike)):
            raise _not_paths(item)
        item = os.fspath(item)
        if os.path.isdir(item):
            yield from _walk_folder(item, notes)
        elif item.lower().endswith(".csv") and os.path.isfile(item):
            yield from _paths_from_csv(item)
        else:
            yield item


def _walk_folder(top: str, notes: list) -> Iterator[str]:
    """Image files below `top`, in the order the file system lists them.

    Nothing is listed ahead or sorted, so a folder of a million files costs
    no more memory than one of a hundred. As `imgclf scan` does, the real
    folders are walked first and symlinks to folders after them, each real
    folder once, and a symlink to a folder that contains it (a loop) is not
    followed but named in `notes`. `top` itself is walked even if it is
    such a link: it was named.
    """
    seen = set()
    stack = [top]
    links: collections.deque[str] = collections.deque()
    while stack or links:
        if stack:
            folder = stack.pop()
        else:
            folder = links.popleft()
            loop = symlink_loop_note(folder)
            if loop:
                notes.append(loop)
                continue
        real = os.path.realpath(folder)
        if real in seen:
            continue
        seen.add(real)
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if _is_ignored(entry.name):
                        continue
                    if _is_dir(entry):
                        (links if entry.is_symlink() else stack).append(entry.path)
                    elif _is_image_name(entry.name):
                        yield entry.path
        except OSError:
            continue


def _input_list(inputs) -> Iterable:
    """`inputs` as an iterable of paths: one path becomes a list of one."""
    if isinstance(inputs, (str, os.PathLike)):
        return [inputs]
    if inputs is None or isinstance(inputs, (bytes, bytearray)) or hasattr(inputs, "shape") or hasattr(inputs, "getpixel"):
        raise _not_paths(inputs)
    return inputs


def _not_paths(inputs) -> TypeError:
    """The error for inputs that are not paths: images in memory go to `Predictor.predict`."""
    return TypeError("inputs must be a path (str or pathlib.Path) or a list of paths: image files, folders or CSV "
                     "lists. For images in memory (numpy arrays, PIL images), use imgclf.load(run).predict(images). "
                     f"Received: {type(inputs).__name__} {inputs!r:.60}")


# The header names of the path column in a CSV list of inputs, in order of preference.
_PATH_COLUMNS = ("path", "file", "filename", "image", "image_path")


def _paths_from_csv(path: str) -> Iterator[str]:
    base = os.path.dirname(os.path.abspath(path))
    with open(path, newline="", encoding="utf-8-sig") as handle, _not_utf8_named(path):
        reader = csv.reader(handle)
        column = 0
        for number, row in enumerate(reader):
            if number == 0:
                names = [cell.strip().lower() for cell in row]
                header = next((name for name in _PATH_COLUMNS if name in names), None)
                if header:
                    column = names.index(header)
                    continue
            if len(row) <= column or not row[column].strip():
                continue
            yield _csv_path(base, row[column])


@contextlib.contextmanager
def _not_utf8_named(path: str) -> Iterator[None]:
    """A list that is not UTF-8 (Excel's plain "CSV") is refused with its name, the line and the fix."""
    try:
        yield
    except UnicodeDecodeError:
        check_utf8_text(path)
        raise


def check_csv_lists(inputs) -> None:
    """Refuses a CSV list among `inputs` that is not UTF-8, before a row is written (an iterator is not read)."""
    if isinstance(inputs, (str, os.PathLike, list, tuple)):
        for item in _input_list(inputs):
            if isinstance(item, (str, os.PathLike)) and os.fspath(item).lower().endswith(".csv") and os.path.isfile(item):
                check_utf8_text(item)


def _csv_path(base: str, cell: str) -> str:
    """The file a CSV cell names: beside the CSV, else from the current folder (as imgclf predict wrote it).

    The cell as written comes first, then without the spaces a spreadsheet
    may have added around it. An absolute path stays as it is. A file found
    nowhere is named beside the CSV, where its row says it is missing.
    """
    names = [unescape_name(cell)]
    if cell != cell.strip():
        names.append(unescape_name(cell.strip()))
    candidates = [os.path.join(base, name) for name in names] + [name for name in names if not os.path.isabs(name)]
    return next((path for path in candidates if os.path.lexists(path)), candidates[0])


def check_inputs_kept(inputs, out) -> None:
    """Refuses an output file that is also one of `inputs`, before anything is read or written.

    Only the paths given are compared (a list, a tuple or one path), not the
    files that folders or CSV lists name; an iterator is not read here.

    Raises:
        ValueError: naming the file.
    """
    if out is None or str(out) == "-" or not os.path.isfile(out):
        return
    if not isinstance(inputs, (str, os.PathLike, list, tuple)):
        return
    for item in _input_list(inputs):
        if isinstance(item, (str, os.PathLike)) and os.path.exists(item) and os.path.samefile(item, out):
            named = "" if os.fspath(item) == os.fspath(out) else f" ({escape_name(os.fspath(item))})"
            raise ValueError(f"The output file {escape_name(os.fspath(out))} is also an input{named}: writing the "
                             "predictions would replace it before it is read. Choose another output file (--out).")


def count_inputs(inputs) -> int | None:
    """How many files `iter_inputs(inputs)` yields (one walk, nothing kept); `None` for a one-shot iterator.

    A path, a list or a tuple can be walked twice; an iterator or generator
    is never read here, since its items would then be missing from the
    walk that predicts them.
    """
    if not isinstance(inputs, (str, os.PathLike, list, tuple)):
        return None
    return sum(1 for _ in iter_inputs(inputs))


# Writing ------------------------------------------------------------------------

def columns(top_k: int) -> list[str]:
    """The CSV header for `top_k` classes per image."""
    ranked = [name for k in range(1, top_k + 1) for name in (f"class_{k}", f"probability_{k}")]
    return ["path", "predicted", "confidence", *ranked, "status", "detail"]


@dataclasses.dataclass
class PredictionCounts:
    """What `imgclf.predict` wrote: images, how many failed, and where.

    Attributes:
        images: rows written.
        failed: rows whose status is not `ok`.
        problems: failed rows per problem.
        path: the file written, `None` for standard output or when no input gave a row.
    """

    images: int = 0
    failed: int = 0
    problems: dict = dataclasses.field(default_factory=dict)
    path: Path | None = None


def write_rows(rows: Iterable[dict], out, *, top_k: int, format: str = "csv") -> PredictionCounts:
    """Writes rows as they come, to a file or standard output.

    A CSV row flattens the top-k list into `class_K,probability_K` columns;
    JSON is a list of objects, one per line, with `top_k` as a list of
    `{"class", "probability"}`. Paths are escaped with `files.escape_name`.
    Standard output gets the rows as they come, flushed every 256 rows. A
    file is written row by row under a temporary name beside it, which
    replaces it once every row is written: a stopped or failed run leaves
    an existing file as it was, and no partial file. When no input gives a
    row, no file is written (`path` is `None`).

    Args:
        rows: rows from `Predictor.predict_files`.
        out: a file path, or `None` or `"-"` for standard output.
        top_k: columns of classes in the CSV.
        format: `"csv"` or `"json"`. Defaults to `"csv"`.

    Returns:
        A `PredictionCounts`.
    """
    if format not in FORMATS:
        raise ValueError(f"Unknown format {format!r}. Valid formats: {', '.join(FORMATS)}")
    if out is None or str(out) == "-":
        with _strict_encoding(standard_output()) as handle:
            return _write_rows(rows, handle, top_k, format, PredictionCounts())
    target = os.path.realpath(out)  # a symlink's target is written, and the link stays
    if os.path.exists(target) and not os.path.isfile(target):  # a device or a pipe (/dev/null): written to as it is
        with open(target, "w", newline="", encoding="utf-8") as handle:
            return _write_rows(rows, handle, top_k, format, PredictionCounts(path=Path(out)))
    try:
        with atomic_path(target) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
            counts = _write_rows(rows, handle, top_k, format, PredictionCounts(path=Path(out)))
            if counts.images == 0:
                raise _NoRows  # a mistyped or empty folder must not replace earlier predictions with a bare header
    except _NoRows:
        return PredictionCounts()
    return counts


class _NoRows(Exception):
    """No input gave a row: the temporary file is dropped and `out` stays as it was."""


def standard_output():
    """`sys.stdout`, or a `ValueError` saying how to keep the rows when it is closed (`imgclf predict ... >&-`)."""
    if sys.stdout is None:
        raise ValueError("Standard output is closed, so the rows would be lost: write them to a file with --out FILE.")
    return sys.stdout


@contextlib.contextmanager
def _strict_encoding(handle):
    """The rows are data: a class or file name that the output's encoding lacks is an error with the fix, not an
    escape, which would name another file."""
    errors = getattr(handle, "errors", None)
    if errors not in (None, "strict") and hasattr(handle, "reconfigure"):
        handle.reconfigure(errors="strict")
    try:
        yield handle
    except UnicodeEncodeError as error:
        raise ValueError(f"The encoding of standard output ({handle.encoding}) cannot hold "
                         f"{error.object[error.start:error.end]!r} of a class or file name, so the rows would not name "
                         "the files: write them to a file with --out FILE (UTF-8), or set PYTHONIOENCODING=utf-8."
                         ) from None
    finally:
        if errors not in (None, "strict") and hasattr(handle, "reconfigure"):
            handle.reconfigure(errors=errors)


def _write_rows(rows: Iterable[dict], handle, top_k: int, format: str, counts: PredictionCounts) -> PredictionCounts:
    try:
        writer = csv.writer(handle, lineterminator="\n") if format == "csv" else None
        if writer:
            writer.writerow(columns(top_k))
        else:
            handle.write("[")
        for row in rows:
            if writer:
                ranked = [cell for pair in row["top_k"] for cell in pair]
                ranked += [""] * (2 * top_k - len(ranked))
                writer.writerow([escape_name(row["path"]), _cell(row["predicted"]), _cell(row["confidence"]), *ranked,
                                 row["status"], row["detail"]])
            else:
                record = {**row, "path": escape_name(row["path"]),
                          "top_k": [{"class": c, "probability": p} for c, p in row["top_k"]]}
                handle.write(("\n" if counts.images == 0 else ",\n") + json.dumps(record, ensure_ascii=False))
            counts.images += 1
            if row["status"] != OK:
                counts.failed += 1
                counts.problems[row["status"]] = counts.problems.get(row["status"], 0) + 1
            if counts.images % 256 == 0:
                handle.flush()
        if not writer:
            handle.write("\n]\n")
    finally:
        handle.flush()
    return counts


def _cell(value) -> str:
    return "" if value is None else str(value)


def format_of(out, format: str | None) -> str:
    """The output format: as given, else `json` for a `.json` file, else `csv`."""
    if format:
        return format
    return "json" if out is not None and str(out).lower().endswith(".json") else "csv"


# The public entry points ------------------------------------------------------------

def load(run, *, workers: int | None = None, max_pixels: int | None = None) -> Predictor:
    """Loads a run's model with its classes and decode settings; see `imgclf.load`."""
    from .pipeline import limits_of
    from .runs import RunDir

    run = run if isinstance(run, RunDir) else RunDir(run)
    run.require("model.keras", "classes.json", "config.yaml")
    cfg = run.config()
    model, classes = run.load_model_and_classes()
    limits = limits_of(cfg.data)
    if max_pixels is not None:
        if max_pixels < 1:
            raise ValueError(f"max_pixels must be a positive number of pixels. Received: max_pixels={max_pixels}")
        limits = dataclasses.replace(limits, max_pixels=max_pixels)
    return Predictor(model, classes, run_image_spec(cfg, model), limits=limits, workers=workers)


def predict(run, inputs, *, out=None, top_k: int = DEFAULT_TOP_K, batch_size: int = DEFAULT_BATCH_SIZE,
            format: str | None = None, workers: int | None = None, max_pixels: int | None = None,
            progress: bool = True):
    """Predicts files, folders or CSV lists; see `imgclf.predict`."""
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1. Received: top_k={top_k}")
    _check_batch_size(batch_size)
    if format is not None and format not in FORMATS:
        raise ValueError(f"Unknown format {format!r}. Valid formats: {', '.join(FORMATS)}")
    _input_list(inputs)  # None or bytes: refused before the model loads
    check_inputs_kept(inputs, out)
    check_csv_lists(inputs)
    owned = not isinstance(run, Predictor)
    predictor = load(run, workers=workers, max_pixels=max_pixels) if owned else run
    top_k = min(top_k, len(predictor.classes))
    notes = []
    try:
        rows = _with_progress(predictor.predict_files(iter_inputs(inputs, notes=notes), batch_size=batch_size,
                                                      top_k=top_k), inputs, progress)
        result = list(rows) if out is None else write_rows(rows, out, top_k=top_k, format=format_of(out, format))
    finally:
        if owned:
            predictor.close()
    for note in notes:  # on standard error: standard output may hold the rows
        print(f"note: {note}", file=sys.stderr)
    return result


def _with_progress(rows: Iterator[dict], inputs, progress: bool) -> Iterator[dict]:
    """Rows with a progress bar (images/s) on a terminal; the files are counted first only then.

    An iterator of inputs is not counted (see `count_inputs`): its bar has no total.
    """
    if not (progress and sys.stderr.isatty()):
        yield from rows
        return
    from tqdm.auto import tqdm

    with tqdm(total=count_inputs(inputs), desc="predict", unit="img", leave=False) as bar:
        for row in rows:
            yield row
            bar.update()


__all__ = ["Predictor", "PredictionCounts", "UnsafeModelError", "load", "predict", "iter_inputs", "write_rows",
           "load_keras_model", "columns", "decode_batch", "resize_image"]


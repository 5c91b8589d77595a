"""Decoding plain PNGs with OpenCV, which gives exactly Pillow's pixels at a fraction of the cost.

Pillow stays the decoder of record (`images.py`). A PNG of the requested size
that needs no conversion (8-bit grey or RGB, no transparency, no EXIF, no
animation) is lossless, so any decoder gives the same pixels, and OpenCV's
per-file cost is about a third of Pillow's: on tiny images such as
Fashion-MNIST's that is most of the time spent. Whenever there is any doubt,
`plain_png` returns `None` and Pillow decodes the file. (For JPEGs OpenCV runs
the same libjpeg-turbo decode and is no faster, so Pillow keeps them.)

OpenCV also says what Pillow keeps to itself: libjpeg's warnings about
damaged JPEG data, which Pillow drops, and libpng's errors. Both libraries
print them to the process's stderr, so `jpeg_damage` and `plain_png` catch
that output (`_c_messages`): the first turns it into a finding, the second
keeps it off the terminal, since Pillow then decodes the file and names
the problem.
"""

from __future__ import annotations

import os
import struct
import sys
import tempfile
import threading
from typing import Callable, TypeVar

import numpy as np

T = TypeVar("T")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
# Chunks that make Pillow's pixels differ from the stored ones: transparency, EXIF orientation, animation.
_PNG_CHUNKS_NEEDING_PILLOW = (b"tRNS", b"eXIf", b"acTL")
# Keywords of the tEXt, zTXt or iTXt chunk in which ImageMagick and exiftool store EXIF, orientation
# included (a keyword is never compressed). Pillow reads "exif" as the file's EXIF; a file with the older
# "APP1" name goes to Pillow too, so that whatever Pillow makes of it is what imgclf gives.
_PNG_TEXT_KEYWORDS_NEEDING_PILLOW = (b"Raw profile type exif", b"Raw profile type APP1")


def plain_png(data: bytes, size: tuple[int, int], channels: int) -> np.ndarray | None:
    """The pixels of a PNG that needs neither resizing nor conversion; else `None`.

    Such a file is 8-bit grey (`channels=1`) or 8-bit RGB (`channels=3`) of
    exactly `size`, complete (it ends with its IEND chunk) and free of the
    chunks that Pillow's path would act on (EXIF in a "Raw profile type
    exif" text chunk included). A chunk name or keyword found by chance
    inside compressed data only sends the file to Pillow.

    Args:
        data: the file's bytes.
        size: `(height, width)` wanted.
        channels: 1 or 3.

    Returns:
        A uint8 array `(height, width, channels)`, or `None`.
    """
    if len(data) < 45 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR" or not data.endswith(_PNG_END):
        return None
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    if (height, width) != tuple(size) or depth != 8 or colour != (0 if channels == 1 else 2):
        return None
    if any(name in data for name in _PNG_CHUNKS_NEEDING_PILLOW + _PNG_TEXT_KEYWORDS_NEEDING_PILLOW):
        return None
    import cv2

    # libpng prints "libpng error: Not enough image data" for a stream that ends early; OpenCV then
    # returns None and Pillow names the problem (`png_rows`).
    pixels, _ = _c_messages(lambda: cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED), (b"libpng ",))
    return _checked(pixels, (height, width), channels)


# The beginnings of libjpeg's warnings about the compressed data (jerror.h): "Corrupt JPEG data: 458 extraneous
# bytes before marker 0xd9", "Corrupt JPEG data: bad Huffman code", "Premature end of JPEG file", ...
_JPEG_DAMAGE = (b"Corrupt JPEG data", b"Premature end of JPEG file")


def jpeg_damage(data: bytes) -> str | None:
    """libjpeg's warning about damaged data in a JPEG that Pillow decodes without complaint, or `None`.

    A flipped or zeroed byte in the compressed data desynchronises the
    decoder: every block after it comes out garbled, yet libjpeg only warns
    (e.g. "Corrupt JPEG data: 456 extraneous bytes before marker 0xd9") and
    Pillow drops its warnings. OpenCV runs the same libjpeg-turbo decode and
    lets them through, so the file is decoded once more at 1/8 scale in
    grey (every byte of the compressed data is still decoded) and the
    warning is read from stderr.

    Args:
        data: the bytes of a JPEG file.

    Returns:
        The first warning, e.g. `"Corrupt JPEG data: bad Huffman code"`, or
        `None` for data libjpeg decodes without a warning about it.
    """
    import cv2

    flags = cv2.IMREAD_REDUCED_GRAYSCALE_8 | cv2.IMREAD_IGNORE_ORIENTATION
    _, messages = _c_messages(lambda: cv2.imdecode(np.frombuffer(data, np.uint8), flags), _JPEG_DAMAGE)
    return messages[0] if messages else None


_stderr_lock = threading.Lock()
_sink_fd: int | None = None  # this process's anonymous file that stderr is pointed at, once opened


def _forget_sink() -> None:
    global _sink_fd
    _sink_fd = None  # a forked child opens its own: the parent's file offset would be shared


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_sink)


def _c_messages(call: Callable[[], T], prefixes: tuple[bytes, ...]) -> tuple[T, list[str]]:
    """Runs `call()` with file descriptor 2 pointed at a file; returns its result and the lines starting with `prefixes`.

    C libraries write to the descriptor, beneath Python's `sys.stderr`.
    Other lines written meanwhile (another thread's log) are passed on to
    stderr. The lock keeps threads of one process from swapping the
    descriptor under each other, which could leave stderr pointing at the
    file for good. Where descriptor 2 is closed, `call()` runs as it is.
    """
    with _stderr_lock:
        sink = _sink()
        try:
            sys.stderr.flush()  # what Python wrote before goes to the real stderr
        except (AttributeError, OSError, ValueError):  # no stderr (pythonw), or a closed one
            pass
        try:
            saved = os.dup(2)
        except OSError:
            return call(), []
        os.dup2(sink, 2)
        try:
            result = call()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        written = os.lseek(sink, 0, os.SEEK_CUR)
        if not written:
            return result, []
        os.lseek(sink, 0, os.SEEK_SET)
        lines = os.read(sink, written).splitlines(keepends=True)
        os.ftruncate(sink, 0)
        os.lseek(sink, 0, os.SEEK_SET)
    ours = [line for line in lines if line.startswith(prefixes)]
    others = b"".join(line for line in lines if not line.startswith(prefixes))
    if others:
        os.write(2, others)
    return result, [line.decode("utf-8", "replace").strip() for line in ours]


def _sink() -> int:
    """This process's anonymous file for `_c_messages`."""
    global _sink_fd
    if _sink_fd is None:
        with tempfile.TemporaryFile() as sink:  # unlinked at once; the duplicate descriptor keeps it open
            _sink_fd = os.dup(sink.fileno())
    return _sink_fd


def _checked(pixels, size: tuple[int, int], channels: int) -> np.ndarray | None:
    """OpenCV's result as uint8 `(height, width, channels)` in RGB order, or `None` if it is anything else."""
    if pixels is None or pixels.dtype != np.uint8 or pixels.shape[:2] != size:
        return None
    if channels == 1:
        return pixels[..., None] if pixels.ndim == 2 else None
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        return None
    return np.ascontiguousarray(pixels[..., ::-1])  # OpenCV's BGR to RGB


"""Decoding plain PNGs with OpenCV, which gives exactly Pillow's pixels at a fraction of the cost.

Pillow stays the decoder of record (`images.py`). A PNG of the requested size
that needs no conversion (8-bit grey or RGB, no transparency, no EXIF, no
animation) is lossless, so any decoder gives the same pixels, and OpenCV's
per-file cost is about a third of Pillow's: on tiny images such as
Fashion-MNIST's that is most of the time spent. Whenever there is any doubt,
`plain_png` returns `None` and Pillow decodes the file. (For JPEGs OpenCV runs
the same libjpeg-turbo decode and is no faster, so Pillow keeps them.)
"""

from __future__ import annotations

import struct

import numpy as np

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

    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    return _checked(pixels, (height, width), channels)


def _checked(pixels, size: tuple[int, int], channels: int) -> np.ndarray | None:
    """OpenCV's result as uint8 `(height, width, channels)` in RGB order, or `None` if it is anything else."""
    if pixels is None or pixels.dtype != np.uint8 or pixels.shape[:2] != size:
        return None
    if channels == 1:
        return pixels[..., None] if pixels.ndim == 2 else None
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        return None
    return np.ascontiguousarray(pixels[..., ::-1])  # OpenCV's BGR to RGB


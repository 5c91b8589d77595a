"""PNG files whose pixel data stops before the last row, or is damaged.

Pillow decodes such files without complaint. When the compressed stream ends
early, the rows it never received stay black (libpng calls this "Not enough
image data"). A file cut short at the end of the file is caught elsewhere (it
has no IEND chunk); `missing_rows` catches the stream that ends early inside
well-formed chunks, e.g. a writer that stopped mid-image and still closed the
file. Pillow also never checks the CRC of the chunks that hold the pixel data
(IDAT), so changed bytes there decode as garbled pixels; `damaged_pixel_data`
checks them, as libpng does.
"""

from __future__ import annotations

import struct
import zlib

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # samples per pixel by PNG colour type
# Adam7 interlacing: (first column, first row, column step, row step) of each of the 7 passes.
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def missing_rows(data: bytes) -> str | None:
    """Says how much pixel data a PNG lacks, or `None` when it has all of it (or is no plain PNG).

    Args:
        data: the file's bytes.

    Returns:
        A detail such as `"the pixel data ends after 512 of 1,056 bytes"`, or
        `None`.
    """
    header, compressed = _header_and_pixel_data(data)
    if header is None:
        return None
    width, height, depth, colour, interlace = header
    samples = _SAMPLES.get(colour)
    if samples is None or width == 0 or height == 0:
        return None
    expected = _stream_size(width, height, depth * samples, interlace)
    try:
        received = _inflated_size(compressed, expected)
    except zlib.error:
        return None  # a damaged stream is Pillow's to report
    if received >= expected:
        return None
    return f"the pixel data ends after {received:,} of {expected:,} bytes; the rest of the image would be black"


def damaged_pixel_data(data: bytes) -> str | None:
    """Says which pixel-data chunk of a PNG fails its CRC check, or `None` when none does (or it is no PNG).

    Args:
        data: the file's bytes.

    Returns:
        A detail such as `"the pixel data (IDAT chunk at byte 1,234) fails its
        CRC check: bytes of it were changed"`, or `None`.
    """
    for position, kind, body, crc in _chunks(data):
        if kind == b"IDAT" and crc is not None and zlib.crc32(body, zlib.crc32(kind)) != crc:
            return f"the pixel data (IDAT chunk at byte {position:,}) fails its CRC check: bytes of it were changed"
    return None


def _inflated_size(compressed: bytes, limit: int) -> int:
    """Bytes the zlib stream inflates to, counted up to `limit` a megabyte at a time (never all in memory)."""
    inflater, total = zlib.decompressobj(), 0
    while compressed and total < limit:
        out = inflater.decompress(compressed, min(limit - total, 1 << 20))
        total += len(out)
        compressed = inflater.unconsumed_tail
        if not out:
            break
    return total


def _header_and_pixel_data(data: bytes):
    header, parts = None, []
    for _, kind, body, _ in _chunks(data):
        if kind == b"IHDR" and len(body) >= 13:
            header = struct.unpack(">IIBBBBB", body[:13])
            header = header[:4] + header[6:]  # width, height, bit depth, colour type, interlace
        elif kind == b"IDAT":
            parts.append(body)
    return header, b"".join(parts)


def _chunks(data: bytes):
    """`(position, kind, body, crc)` of each chunk up to IEND; `crc` is `None` where the file ends before it."""
    if not data.startswith(_SIGNATURE):
        return
    view, position = memoryview(data), len(_SIGNATURE)  # chunk bodies as views: no copy of the pixel data
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = view[position + 8:position + 8 + length]
        end = position + 8 + length
        crc = struct.unpack(">I", data[end:end + 4])[0] if len(body) == length and end + 4 <= len(data) else None
        yield position, kind, body, crc
        if kind == b"IEND":
            return
        position = end + 4


def _stream_size(width: int, height: int, bits_per_pixel: int, interlace: int) -> int:
    """Bytes of the decompressed stream: each row is a filter byte and its packed pixels."""
    def rows(pass_width: int, pass_height: int) -> int:
        return 0 if pass_width == 0 or pass_height == 0 else pass_height * (1 + (pass_width * bits_per_pixel + 7) // 8)

    if interlace != 1:
        return rows(width, height)
    return sum(rows((width - x + dx - 1) // dx, (height - y + dy - 1) // dy) for x, y, dx, dy in _ADAM7)

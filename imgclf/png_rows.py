"""PNG files whose pixel data stops before the last row.

Pillow decodes such a file without complaint: when the compressed stream ends
early, the rows it never received stay black. libpng calls this "Not enough
image data". A file cut short at the end of the file is caught elsewhere (it
has no IEND chunk); this catches the stream that ends early inside well-formed
chunks, e.g. a writer that stopped mid-image and still closed the file.
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
    if not data.startswith(_SIGNATURE):
        return None, b""
    header, parts, position = None, [], len(_SIGNATURE)
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = data[position + 8:position + 8 + length]
        if kind == b"IHDR" and len(body) >= 13:
            header = struct.unpack(">IIBBBBB", body[:13])
            header = header[:4] + header[6:]  # width, height, bit depth, colour type, interlace
        elif kind == b"IDAT":
            parts.append(body)
        elif kind == b"IEND":
            break
        position += 12 + length
    return header, b"".join(parts)


def _stream_size(width: int, height: int, bits_per_pixel: int, interlace: int) -> int:
    """Bytes of the decompressed stream: each row is a filter byte and its packed pixels."""
    def rows(pass_width: int, pass_height: int) -> int:
        return 0 if pass_width == 0 or pass_height == 0 else pass_height * (1 + (pass_width * bits_per_pixel + 7) // 8)

    if interlace != 1:
        return rows(width, height)
    return sum(rows((width - x + dx - 1) // dx, (height - y + dy - 1) // dy) for x, y, dx, dy in _ADAM7)

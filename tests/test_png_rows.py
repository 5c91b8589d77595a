"""A PNG whose pixel data ends early is reported as truncated; every complete PNG is not."""

import io
import re
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import badfiles
from imgclf.images import ImageDecodeError, decode_image, inspect_file, load_image, scan_and_load
from imgclf.png_rows import missing_rows

def _png(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **options)
    return buffer.getvalue()


def _pixels(height, width, channels, seed=0):
    shape = (height, width) if channels == 1 else (height, width, channels)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize("size", [(1, 1), (1, 9), (7, 3), (8, 8), (13, 21), (64, 33)])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_complete_interlaced_pngs_are_whole(tmp_path, size, channels):
    pixels = _pixels(*size, channels)
    data = badfiles.interlaced_png(pixels)
    assert missing_rows(data) is None
    with Image.open(io.BytesIO(data)) as image:
        assert image.info.get("interlace") == 1
        np.testing.assert_array_equal(np.asarray(image), pixels)  # the writer above is a real PNG writer


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB", "RGBA", "LA", "I;16"])
@pytest.mark.parametrize("size", [(1, 1), (5, 3), (17, 31)])
def test_complete_pngs_of_every_mode_are_whole(mode, size):
    image = Image.fromarray(_pixels(*size, 3)).convert(mode if mode != "I;16" else "L")
    if mode == "I;16":
        image = Image.fromarray(np.asarray(image).astype(np.uint16) * 257)
    assert missing_rows(_png(image)) is None


def test_missing_rows_are_counted():
    data = badfiles.interlaced_png(_pixels(16, 16, 3), keep=0.5)
    # 16x16 RGB in 7 passes: 14 + 14 + 26 + 52 + 100 + 200 + 392 bytes, filter bytes included
    assert missing_rows(data) == "the pixel data ends after 399 of 798 bytes; the rest of the image would be black"
    assert missing_rows(b"not a png") is None


@pytest.mark.parametrize("name", ["rows_missing.png", "interlaced_half.png"])
def test_every_decode_reports_the_missing_rows(tmp_path, name):
    if name == "rows_missing.png":  # Pillow alone decodes it with 16 black rows
        path = badfiles.rows_missing_png(tmp_path / name)
        detail = "the pixel data ends after 528 of 1,056 bytes"  # 16 and 32 rows of 1 + 32 bytes
    else:  # Pillow notices this one itself
        path = badfiles.write(tmp_path / name, badfiles.interlaced_png(_pixels(16, 16, 3), keep=0.5))
        detail = "truncated"
    check = inspect_file(path)
    assert (check.status.value, check.problem) == ("error", "truncated") and detail in check.detail
    check, pixels, error = scan_and_load(path, size=(8, 8))  # a first run: the scan and the decode at once
    assert pixels is None and error.problem.value == "truncated" and detail in str(error)
    for decode in (lambda: decode_image(path), lambda: load_image(path, size=(8, 8)),
                   lambda: load_image(path, size=(16 if "interlaced" in name else 32,) * 2, channels=3)):
        with pytest.raises(ImageDecodeError, match=detail) as raised:  # predicting and the cache too
            decode()
        assert raised.value.problem.value == "truncated"


@pytest.mark.parametrize("mode", ["L", "RGB", "P", "RGBA"])
def test_a_whole_png_ending_in_black_rows_is_sound(tmp_path, mode):
    pixels = _pixels(20, 12, 3)
    pixels[-5:] = 0  # black at the bottom, as missing rows would be
    path = tmp_path / "dark.png"
    Image.fromarray(pixels).convert(mode).save(path)
    check = inspect_file(path)
    assert check.status.value != "error", check.detail  # RGBA: a warning for the alpha channel
    assert load_image(path, size=(20, 12)).shape == (20, 12, 3)


@pytest.mark.parametrize("size", [(8, 8), (64, 64)])  # 64x64 RGB goes through OpenCV first, which refuses it
def test_every_decode_reports_changed_bytes_in_the_pixel_data(tmp_path, size):
    pixels = _pixels(size[0] + 2, size[1], 3)
    # Stored (uncompressed) rows, two more than the header's height: Pillow stops inflating before the stream's own
    # checksum, so it decodes a few zeroed bytes as black pixels without a word.
    stream = zlib.compress(b"".join(b"\0" + row.tobytes() for row in pixels), 0)
    header = struct.pack(">IIBBBBB", size[1], size[0], 8, 2, 0, 0, 0)
    data = bytearray(b"\x89PNG\r\n\x1a\n" + badfiles.png_chunk(b"IHDR", header) + badfiles.png_chunk(b"IDAT", stream)
                     + badfiles.png_chunk(b"IEND", b""))
    start = data.index(b"IDAT") + 4
    data[start + 20:start + 24] = b"\0\0\0\0"  # a bad sector: the chunk's CRC no longer fits
    with Image.open(io.BytesIO(data)) as image:
        assert (np.asarray(image) != pixels[:size[0]]).any()
    path = badfiles.write(tmp_path / "changed.png", bytes(data))
    detail = f"the pixel data (IDAT chunk at byte {start - 8}) fails its CRC check: bytes of it were changed"
    check = inspect_file(path)
    assert (check.status.value, check.problem, check.detail) == ("error", "corrupt", detail)
    check, pixels, error = scan_and_load(path, size=(8, 8))
    assert pixels is None and error.problem.value == "corrupt"
    for decode in (lambda: decode_image(path), lambda: load_image(path, size=(8, 8)),
                   lambda: load_image(path, size=size, channels=3)):
        with pytest.raises(ImageDecodeError, match=re.escape(detail)):
            decode()

"""OpenCV decodes plain PNGs for models: the pixels and the errors must be exactly Pillow's."""

import io
import os
import struct

import numpy as np
import pytest
from PIL import Image, ImageOps, PngImagePlugin

import badfiles
from imgclf import opencv_decode
from imgclf.images import ImageDecodeError, ImageProblem, check_header, load_image, scan_and_load


def _by_pillow_only(monkeypatch, decode):
    """`decode()` with OpenCV switched off: what imgclf gave before it decoded PNGs."""
    with monkeypatch.context() as patch:
        patch.setattr(opencv_decode, "plain_png", lambda *args: None)
        return _outcome(decode)


def _outcome(decode):
    try:
        pixels = decode()
    except ImageDecodeError as error:
        return error.problem
    return pixels.dtype, pixels.shape, pixels.tobytes()


def _noise(height, width, seed=3) -> Image.Image:
    # Smooth gradients plus noise, so that PNG's row filters are exercised.
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x + y) % 256], axis=-1)
    return Image.fromarray(np.clip(base + rng.integers(-40, 40, base.shape), 0, 255).astype(np.uint8))


def _png(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **options)
    return buffer.getvalue()


def _png_with_chunk(image: Image.Image, name: bytes, payload: bytes) -> bytes:
    data = _png(image)
    return data[:33] + badfiles.png_chunk(name, payload) + data[33:]  # after the signature (8) and IHDR (25)


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def _raw_profile_exif(image: Image.Image, orientation: int, zip: bool = True) -> bytes:
    """A PNG whose EXIF sits in a "Raw profile type exif" text chunk, as ImageMagick and exiftool write it."""
    raw = b"Exif\x00\x00" + _exif(orientation).tobytes()
    hexed = raw.hex()
    text = f"\nexif\n{len(raw):8d}\n" + "\n".join(hexed[i:i + 72] for i in range(0, len(hexed), 72)) + "\n"
    info = PngImagePlugin.PngInfo()
    info.add_text("Raw profile type exif", text, zip=zip)
    return _png(image, pnginfo=info)


PNGS = {
    "grey": lambda image: _png(image.convert("L")),
    "rgb": _png,
    "palette": lambda image: _png(image.convert("P")),
    "rgba": lambda image: _png(image.convert("RGBA")),
    "grey_transparent_colour": lambda image: _png_with_chunk(image.convert("L"), b"tRNS", b"\x00\x80"),
    "rgb_transparent_colour": lambda image: _png_with_chunk(image, b"tRNS", b"\x00\x80\x00\x80\x00\x80"),
    "rgb_exif_rotated": lambda image: _png(image, exif=_exif(6)),
    "rgb_raw_profile_exif_rotated": lambda image: _raw_profile_exif(image, 6),
    "rgb_gamma": lambda image: _png_with_chunk(image, b"gAMA", struct.pack(">I", 100000)),
    "sixteen_bit": lambda image: _png(Image.fromarray(np.asarray(image.convert("L")).astype(np.uint16) * 257)),
    "interlaced_grey": lambda image: badfiles.interlaced_png(np.asarray(image.convert("L"))),
    "interlaced_rgb": lambda image: badfiles.interlaced_png(np.asarray(image)),
    "cut_short": lambda image: _png(image)[:-30],
}


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("kind", sorted(PNGS))
def test_png_of_the_model_size_gives_pillows_pixels(tmp_path, monkeypatch, kind, channels):
    path = badfiles.write(tmp_path / f"{kind}.png", PNGS[kind](_noise(12, 20)))
    decode = lambda: load_image(path, size=(12, 20), channels=channels)  # noqa: E731
    first_run = lambda: _pixels_or_error(scan_and_load(path, size=(12, 20), channels=channels))  # noqa: E731
    assert _outcome(decode) == _outcome(first_run) == _by_pillow_only(monkeypatch, decode)


def _pixels_or_error(scanned):
    check, pixels, error = scanned
    if error is not None:
        raise error
    return pixels


def test_only_plain_pngs_of_the_model_size_take_the_shortcut(tmp_path):
    data = _png(_noise(12, 20).convert("L"))
    assert opencv_decode.plain_png(data, (12, 20), 1).shape == (12, 20, 1)
    assert opencv_decode.plain_png(data, (20, 12), 1) is None  # another size: Pillow resizes
    assert opencv_decode.plain_png(data, (12, 20), 3) is None  # grey to RGB: Pillow converts
    assert opencv_decode.plain_png(PNGS["grey_transparent_colour"](_noise(12, 20)), (12, 20), 1) is None
    assert opencv_decode.plain_png(data[:-1], (12, 20), 1) is None


@pytest.mark.parametrize("zip", [True, False], ids=["zTXt", "tEXt"])
def test_exif_in_a_raw_profile_text_chunk_is_applied_at_any_size(tmp_path, zip):
    picture = np.zeros((16, 16, 3), np.uint8)
    picture[:, :8] = 255  # left half white: rotated by orientation 6, the top half is white
    path = badfiles.write(tmp_path / "converted.png", _raw_profile_exif(Image.fromarray(picture), 6, zip=zip))
    assert opencv_decode.plain_png(path.read_bytes(), (16, 16), 3) is None
    shown = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    at_input_size = load_image(path, size=(16, 16))
    assert np.array_equal(at_input_size, np.asarray(shown)) and at_input_size[:8].min() == 255
    check, first_run, _ = scan_and_load(path, size=(16, 16))
    assert np.array_equal(first_run, at_input_size)
    smaller = np.asarray(shown.resize((8, 8), Image.Resampling.BILINEAR))
    assert np.array_equal(load_image(path, size=(8, 8)), smaller)
    for scanned in (check, check_header(path)):  # the first run's scan, and `imgclf scan`'s
        assert [(f.problem, f.detail) for f in scanned.findings] == [(ImageProblem.EXIF_ORIENTATION,
                                                                      "EXIF orientation 6 applied")]


@pytest.mark.parametrize("name", sorted(badfiles.BAD_FILES))
def test_every_bad_file_is_reported_as_pillow_reports_it(tmp_path, monkeypatch, name):
    path = badfiles.BAD_FILES[name][0](tmp_path / name)
    try:
        with Image.open(path) as opened:
            size = opened.size[::-1]  # the file's own size, where OpenCV may take it
    except Exception:  # noqa: BLE001 - not an image at all
        size = (16, 16)
    for channels in (1, 3):
        decode = lambda: load_image(path, size=size, channels=channels)  # noqa: E731
        assert _outcome(decode) == _by_pillow_only(monkeypatch, decode)


def test_libpngs_own_error_line_is_kept_off_stderr(tmp_path, capfd):
    path = badfiles.rows_missing_png(tmp_path / "rows_missing.png")
    with pytest.raises(ImageDecodeError, match="truncated .the pixel data ends after"):
        load_image(path, size=(32, 32), channels=1)  # libpng refuses it, then Pillow names the problem
    assert capfd.readouterr().err == ""


def test_other_output_during_a_decode_still_reaches_stderr(capfd):
    def decode():
        os.write(2, b"libpng warning: iCCP: known incorrect sRGB profile\nanother thread's log line\n")
        return 7

    assert opencv_decode._c_messages(decode, (b"libpng ",)) == (7, ["libpng warning: iCCP: known incorrect sRGB profile"])
    assert capfd.readouterr().err == "another thread's log line\n"

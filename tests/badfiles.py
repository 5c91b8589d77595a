"""Writers of every kind of bad or unusual image file the audit must recognise.

Each writer takes a path, writes one small file there and returns the path.
`BAD_FILES` maps a file name to `(writer, expected status, expected problem slug)`.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _rgb(size=(16, 16), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8))


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg_bytes(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90, **options)
    return buffer.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def empty(path):
    return write(path, b"")


def text(path):
    return write(path, b"Just some notes about my holiday photos.\n" * 3)


def html(path):
    return write(path, b"<!DOCTYPE html><html><body>404 Not Found</body></html>")


def svg(path):
    return write(path, b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>')


def pdf(path):
    return write(path, b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n")


def truncated_jpeg(path):
    data = _jpeg_bytes(_rgb((64, 64)))
    return write(path, data[: len(data) // 2])


def truncated_png(path):
    data = _png_bytes(_rgb((64, 64)))
    return write(path, data[: len(data) // 2])


def header_only_png(path):
    """A PNG cut right after its IHDR chunk: Pillow cannot even identify it."""
    data = _png_bytes(_rgb((64, 64)))
    return write(path, data[: 8 + 25])


def bad_chunk_name_png(path):
    """A PNG of full length whose IHDR chunk name is damaged: Pillow cannot identify it."""
    data = bytearray(_png_bytes(_rgb((32, 32))))
    data[12:16] = b"XXXX"
    return write(path, bytes(data))


def signature_only_jpeg(path):
    return write(path, _jpeg_bytes(_rgb())[:3])


def bad_crc_png(path):
    data = bytearray(_png_bytes(_rgb((32, 32))))
    idat = data.index(b"IDAT")
    data[idat + 10] ^= 0xFF  # one flipped byte inside the compressed pixels: the chunk CRC no longer matches
    return write(path, bytes(data))


def garbled_png(path):
    data = bytearray(_png_bytes(_rgb((32, 32))))
    idat = data.index(b"IDAT")
    length = struct.unpack(">I", data[idat - 4:idat])[0]
    garbage = np.random.default_rng(1).integers(0, 255, size=length, dtype=np.uint8).tobytes()
    data[idat + 4:idat + 4 + length] = garbage
    crc = zlib.crc32(b"IDAT" + garbage) & 0xFFFFFFFF  # a valid CRC over garbage: only decoding can tell
    data[idat + 4 + length:idat + 8 + length] = struct.pack(">I", crc)
    return write(path, bytes(data))


def rows_missing_png(path):
    """Well-formed chunks, valid CRCs and an IEND chunk, but pixel data for only half of the rows."""
    gray = np.asarray(_rgb((32, 32)).convert("L"))
    rows = b"".join(b"\x00" + row.tobytes() for row in gray[:16])
    return write(path, raw_png(32, 32, 8, 0, rows))


def png_chunk(name: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + name + payload + struct.pack(">I", zlib.crc32(name + payload))


def raw_png(width: int, height: int, bits: int, colour: int, stream: bytes, *, chunks: bytes = b"",
            interlaced: bool = False) -> bytes:
    """A PNG written chunk by chunk: its header, `chunks`, then `stream` (filtered rows) compressed in one IDAT."""
    header = struct.pack(">IIBBBBB", width, height, bits, colour, 0, 0, int(interlaced))
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + chunks
            + png_chunk(b"IDAT", zlib.compress(stream)) + png_chunk(b"IEND", b""))


_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def interlaced_png(pixels: np.ndarray, *, keep: float = 1.0) -> bytes:
    """An Adam7-interlaced 8-bit PNG (Pillow writes none); `keep` < 1 cuts the pixel stream short."""
    colour = {1: 0, 3: 2, 4: 6}[1 if pixels.ndim == 2 else pixels.shape[2]]
    height, width = pixels.shape[:2]
    stream = b"".join(b"".join(b"\x00" + row.tobytes() for row in pixels[y::dy, x::dx])
                      for x, y, dx, dy in _ADAM7 if x < width and y < height)
    return raw_png(width, height, 8, colour, stream[:int(len(stream) * keep)], interlaced=True)


def dangling_ifd_tiff(path):
    """A TIFF whose pointer to a second page leads past the end of the file (Pillow raises TypeError)."""
    buffer = io.BytesIO()
    _rgb().save(buffer, format="TIFF")
    data = bytearray(buffer.getvalue())
    first_ifd = struct.unpack("<I", data[4:8])[0]
    entries = struct.unpack("<H", data[first_ifd:first_ifd + 2])[0]
    next_ifd = first_ifd + 2 + 12 * entries
    data[next_ifd:next_ifd + 4] = struct.pack("<I", len(data) * 30)
    return write(path, bytes(data))


def bomb_png(path, width=30_000, height=30_000):
    """A valid tiny PNG whose header claims `width` x `height` pixels."""
    data = bytearray(_png_bytes(Image.new("L", (1, 1))))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr:ihdr + 17])) & 0xFFFFFFFF
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", crc)
    return write(path, bytes(data))


def garbled_jpeg(path):
    """A JPEG with 40 bytes of its compressed data zeroed: Pillow decodes it, libjpeg warns of corrupt data."""
    data = bytearray(_jpeg_bytes(_rgb((32, 32))))
    middle = len(data) // 2
    data[middle:middle + 40] = bytes(40)
    return write(path, bytes(data))


def flipped_byte_progressive_jpeg(path):
    data = bytearray(_jpeg_bytes(_rgb((32, 32)), progressive=True))
    data[len(data) // 2] ^= 0x55
    return write(path, bytes(data))


def progressive_jpeg(path):
    return write(path, _jpeg_bytes(_rgb((32, 32)), progressive=True))


def grey_jpeg(path):
    return write(path, _jpeg_bytes(_rgb().convert("L")))


def heic_named_jpg(path):
    """The first bytes of an iPhone photo (a HEIC file) under a .jpg name."""
    return write(path, struct.pack(">I", 24) + b"ftypheic" + b"\0\0\0\0mif1heic" + b"\0\0\x01\x00meta" + bytes(64))


def cmyk_jpeg(path):
    return write(path, _jpeg_bytes(_rgb().convert("CMYK")))


def sixteen_bit_png(path):
    array = np.full((16, 16), 65535, dtype=np.uint16)
    array[:8] = 256
    image = Image.fromarray(array)
    return write(path, _png_bytes(image))


def rgb48_png(path):
    """An RGB PNG of 16 bits per channel, which Pillow opens as 8-bit RGB (Pillow cannot write one)."""
    pixels = np.random.default_rng(0).integers(0, 65536, size=(16, 16, 3), dtype=np.uint16).astype(">u2")
    rows = b"".join(b"\x00" + row.tobytes() for row in pixels)
    return write(path, raw_png(16, 16, 16, 2, rows))


def palette_transparency_png(path):
    image = _rgb().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", transparency=0)
    return write(path, buffer.getvalue())


def rgba_png(path):
    image = _rgb().convert("RGBA")
    image.putalpha(128)
    return write(path, _png_bytes(image))


def la_png(path):
    return write(path, _png_bytes(_rgb().convert("LA")))


def animated_gif(path):
    frames = [_rgb(seed=1).convert("P"), _rgb(seed=2).convert("P")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    return write(path, buffer.getvalue())


def animated_webp(path):
    frames = [_rgb(seed=1), _rgb(seed=2)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="WEBP", save_all=True, append_images=frames[1:], duration=100)
    return write(path, buffer.getvalue())


def exif_rotated_jpeg(path):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    return write(path, _jpeg_bytes(_rgb((16, 8)), exif=exif.tobytes()))


def tiny_png(path):
    return write(path, _png_bytes(_rgb((4, 4))))


def extreme_aspect_png(path):
    return write(path, _png_bytes(_rgb((200, 10))))


def colour_key_png(path):
    """An RGB PNG whose tRNS chunk makes one colour transparent, the colour of its top left pixel."""
    image = _rgb()
    image.info["transparency"] = image.getpixel((0, 0))
    return write(path, _png_bytes(image))


def grey_png_bytes(levels: np.ndarray, bits: int, transparent: int | None = None) -> bytes:
    """A grey PNG of 1, 2, 4, 8 or 16 bits a pixel holding `levels`, its tRNS chunk naming the `transparent` level."""
    height, width = levels.shape
    if bits == 16:
        rows = [row.astype(">u2").tobytes() for row in levels]
    else:
        rows = [np.packbits(np.unpackbits(row.astype(np.uint8)[:, None], axis=1)[:, 8 - bits:]).tobytes()
                for row in levels]
    trns = b"" if transparent is None else png_chunk(b"tRNS", struct.pack(">H", transparent))
    return raw_png(width, height, bits, 0, b"".join(b"\x00" + row for row in rows), chunks=trns)


def grey_level_key_png(path, bits=4):
    """A grey PNG of `bits` bits a pixel whose tRNS chunk makes the level of its top left pixel transparent."""
    levels = np.random.default_rng(0).integers(0, 2**bits, size=(16, 16))
    return write(path, grey_png_bytes(levels, bits, transparent=int(levels[0, 0])))


def blank_png(path):
    return write(path, _png_bytes(Image.new("L", (16, 16), 128)))


def black_jpeg(path):
    return write(path, _jpeg_bytes(Image.new("RGB", (64, 48), (0, 0, 0))))


def transparent_png(path):
    """Every pixel fully transparent over varied colours: white once composited on the background."""
    image = _rgb()
    image.putalpha(0)
    return write(path, _png_bytes(image))


def premultiplied_la_tiff(path, image: Image.Image | None = None):
    """A grey TIFF with associated (premultiplied) alpha, which Pillow opens in mode "La" (and cannot write).

    `image`: the grey and alpha to store, an LA image; by default an opaque grey picture other than that of
    `la_png` (the same pixels would make the two copies of each other).
    """
    if image is None:
        image = Image.fromarray(np.dstack([np.asarray(_rgb(seed=5).convert("L")), np.full((16, 16), 255, np.uint8)]),
                                "LA")
    buffer = io.BytesIO()
    image.save(buffer, format="TIFF")
    data = bytearray(buffer.getvalue())
    extra_samples = data.find(struct.pack("<HHI", 338, 3, 1))  # SHORT, one value: 2, unassociated alpha
    data[extra_samples + 8:extra_samples + 10] = struct.pack("<H", 1)
    return write(path, bytes(data))


def oriented_tiff(path, orientation=6):
    """A 24 wide x 16 high TIFF whose Orientation tag says how to show it."""
    buffer = io.BytesIO()
    _rgb((24, 16)).save(buffer, format="TIFF", tiffinfo={0x0112: orientation})
    return write(path, buffer.getvalue())


def mpo_jpeg(path):
    """A JPEG followed by a second image (an MPF segment, as phones store a gain map): Pillow's format "MPO"."""
    buffer = io.BytesIO()
    _rgb((32, 24)).save(buffer, format="MPO", save_all=True, append_images=[_rgb((32, 24), seed=1)], quality=90)
    return write(path, buffer.getvalue())


def flipped_byte_mpo_jpeg(path):
    data = bytearray(mpo_jpeg(path).read_bytes())
    data[data.index(b"\xff\xda") + 100] ^= 0x55  # in the first image's compressed data, after its start of scan
    return write(path, bytes(data))


def grey_alpha_48_png(path):
    """A PNG of 16-bit grey and alpha (colour type 4), which Pillow opens as RGBA (Pillow cannot write one)."""
    pixels = np.random.default_rng(0).integers(0, 65536, size=(16, 16, 2), dtype=np.uint16).astype(">u2")
    pixels[..., 1] = 65535
    rows = b"".join(b"\x00" + row.tobytes() for row in pixels)
    return write(path, raw_png(16, 16, 16, 4, rows))


def png_named_jpg(path):
    return write(path, _png_bytes(_rgb()))


def good_jpeg(path):
    return write(path, _jpeg_bytes(_rgb()))


BAD_FILES = {
    "empty.jpg": (empty, "error", "empty_file"),
    "notes.jpg": (text, "error", "not_an_image"),
    "page.jpg": (html, "error", "not_an_image"),
    "drawing.png": (svg, "error", "not_an_image"),
    "document.jpg": (pdf, "error", "not_an_image"),
    "truncated.jpg": (truncated_jpeg, "error", "truncated"),
    "truncated.png": (truncated_png, "error", "truncated"),
    "header_only.png": (header_only_png, "error", "truncated"),
    "jpeg_signature_only.jpg": (signature_only_jpeg, "error", "truncated"),
    "bad_chunk_name.png": (bad_chunk_name_png, "error", "corrupt"),
    "bad_crc.png": (bad_crc_png, "error", "corrupt"),
    "garbled.png": (garbled_png, "error", "corrupt"),
    "rows_missing.png": (rows_missing_png, "error", "truncated"),
    "bad_page.tif": (dangling_ifd_tiff, "error", "corrupt"),
    "garbled.jpg": (garbled_jpeg, "error", "corrupt"),
    "flipped_byte_progressive.jpg": (flipped_byte_progressive_jpeg, "error", "corrupt"),
    "iphone_photo.jpg": (heic_named_jpg, "error", "not_an_image"),
    "bomb.png": (bomb_png, "error", "decompression_bomb"),
    "cmyk.jpg": (cmyk_jpeg, "warning", "cmyk"),
    "deep.png": (sixteen_bit_png, "warning", "high_bit_depth"),
    "rgb48.png": (rgb48_png, "warning", "high_bit_depth"),
    "palette.png": (palette_transparency_png, "warning", "palette_transparency"),
    "rgba.png": (rgba_png, "warning", "alpha"),
    "la.png": (la_png, "warning", "alpha"),
    "colour_key.png": (colour_key_png, "warning", "alpha"),
    "grey1_key.png": (lambda path: grey_level_key_png(path, 1), "warning", "alpha"),
    "grey4_key.png": (grey_level_key_png, "warning", "alpha"),
    "grey16_key.png": (lambda path: grey_level_key_png(path, 16), "warning", "high_bit_depth;alpha"),
    "animated.gif": (animated_gif, "warning", "animated"),
    "animated.webp": (animated_webp, "warning", "animated"),
    "rotated.jpg": (exif_rotated_jpeg, "warning", "exif_orientation"),
    "rotated.tif": (oriented_tiff, "warning", "exif_orientation"),
    "premultiplied.tif": (premultiplied_la_tiff, "warning", "alpha"),
    "grey_alpha_48.png": (grey_alpha_48_png, "warning", "high_bit_depth;alpha"),
    "gain_map.jpg": (mpo_jpeg, "ok", ""),
    "flipped_byte_gain_map.jpg": (flipped_byte_mpo_jpeg, "error", "corrupt"),
    "tiny.png": (tiny_png, "warning", "too_small"),
    "banner.png": (extreme_aspect_png, "warning", "extreme_aspect"),
    "blank.png": (blank_png, "warning", "blank"),
    "black.jpg": (black_jpeg, "warning", "blank"),
    "clear.png": (transparent_png, "warning", "alpha;blank"),
    "really_png.jpg": (png_named_jpg, "ok", ""),
    "good.jpg": (good_jpeg, "ok", ""),
    "progressive.jpg": (progressive_jpeg, "ok", ""),
    "grey.jpg": (grey_jpeg, "ok", ""),
}


def short_strip_tiff(path):
    """An uncompressed 32x32 TIFF whose one strip holds 8 rows: its header's height was 8 before it was edited."""
    buffer = io.BytesIO()
    _rgb((32, 8)).save(buffer, format="TIFF")
    data = bytearray(buffer.getvalue())
    assert data[:4] == b"II*\0"
    ifd = struct.unpack("<I", data[4:8])[0]
    for entry in range(struct.unpack("<H", data[ifd:ifd + 2])[0]):
        at = ifd + 2 + 12 * entry
        if struct.unpack("<H", data[at:at + 2])[0] == 257:  # ImageLength
            data[at + 8:at + 12] = struct.pack("<I", 32) if data[at + 2] == 4 else struct.pack("<HH", 32, 0)
    return write(path, bytes(data))

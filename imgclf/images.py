"""The only place that opens image files.

Pillow decodes; this module decides what a file is (an image, a broken image,
or no image at all), converts every mode to RGB or L, applies EXIF orientation,
takes the first frame of animations, and rejects decompression bombs from the
header before any pixel is allocated. Problems are named by `ImageProblem`.

When pixels are decoded for a model, a plain PNG of the model's size goes to
`opencv_decode`, which gives exactly Pillow's pixels three times faster.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import enum
import errno
import functools
import hashlib
import io
import os
import re
import stat
import warnings
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError, features

from . import opencv_decode, png_rows
from .files import escape_name

# AVIF too where the installed Pillow reads it (built with libavif, as its recent wheels are).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
                             | ({".avif"} if "avif" in features.modules and features.check_module("avif") else set()))
RESIZE_MODES = ("stretch", "pad", "crop")
_GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_HIGH_BIT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_ALPHA_MODES = {"LA", "La", "RGBA", "RGBa", "PA"}
_EXIF_ORIENTATION = 0x0112
_SIDEWAYS_ORIENTATIONS = {5, 6, 7, 8}  # EXIF orientations that swap width and height
_PNG_RAW_EXIF = "Raw profile type exif"  # the text chunk in which ImageMagick stores a PNG's EXIF
# Pillow's names of a JPEG file: "MPO" is a JPEG with a second image after the first (an HDR gain map, a
# preview, the other eye of a stereo camera), which is no animation; imgclf uses the first, as any viewer does.
JPEG_FORMATS = ("JPEG", "MPO")


def _unreadable(path, error: OSError) -> str:
    """Why a file cannot be read, e.g. "No such file or directory (a symlink to /gone.png, which does not exist)"."""
    reason = error.strerror or str(error)
    if isinstance(error, FileNotFoundError) and os.path.islink(path):
        reason += f" (a symlink to {escape_name(os.fsdecode(os.readlink(path)))}, which does not exist)"
    return reason


class Severity(str, enum.Enum):
    """How bad a finding is: `ok`, `warning` (converted and used) or `error` (left out)."""

    OK = "ok"
    WARNING = "warning"
    ERROR = "error"


class ImageProblem(str, enum.Enum):
    """What is wrong with a file; the value is the slug written to `audit.csv`."""

    EMPTY_FILE = "empty_file"
    NOT_AN_IMAGE = "not_an_image"
    TRUNCATED = "truncated"
    CORRUPT = "corrupt"
    DECOMPRESSION_BOMB = "decompression_bomb"
    UNREADABLE = "unreadable"
    LABEL_CONFLICT = "label_conflict"
    CMYK = "cmyk"
    HIGH_BIT_DEPTH = "high_bit_depth"
    PALETTE_TRANSPARENCY = "palette_transparency"
    ALPHA = "alpha"
    ANIMATED = "animated"
    EXIF_ORIENTATION = "exif_orientation"
    TOO_SMALL = "too_small"
    EXTREME_ASPECT = "extreme_aspect"
    DUPLICATE = "duplicate"
    BLANK = "blank"

    @property
    def severity(self) -> Severity:
        return Severity.ERROR if self in _ERRORS else Severity.WARNING


_ERRORS = {
    ImageProblem.EMPTY_FILE, ImageProblem.NOT_AN_IMAGE, ImageProblem.TRUNCATED, ImageProblem.CORRUPT,
    ImageProblem.DECOMPRESSION_BOMB, ImageProblem.UNREADABLE, ImageProblem.LABEL_CONFLICT,
}


@dataclasses.dataclass(frozen=True)
class ImageLimits:
    """Limits applied to every image.

    Args:
        max_pixels: width × height above which a file is a decompression bomb.
            Defaults to 89,478,485 (Pillow's own limit).
        min_side: images with a shorter side are flagged `too_small`.
            Defaults to 8.
        max_aspect: images whose longer side exceeds this many times the
            shorter are flagged `extreme_aspect`. Defaults to 10.
        background: RGB colour that transparent pixels are composited on.
            Defaults to white.
    """

    max_pixels: int = 89_478_485
    min_side: int = 8
    max_aspect: float = 10.0
    background: tuple[int, int, int] = (255, 255, 255)

    def __post_init__(self):
        for name in ("max_pixels", "min_side", "max_aspect"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ImageLimits.{name} must be positive. Received: {name}={getattr(self, name)!r}")


@dataclasses.dataclass(frozen=True)
class Finding:
    """One problem of one file, with a sentence that explains it."""

    problem: ImageProblem
    detail: str


class ImageDecodeError(Exception):
    """A file cannot be used as an image.

    Attributes:
        path: the file.
        problem: an error-severity `ImageProblem`.
        detail: what went wrong.
    """

    def __init__(self, path, problem: ImageProblem, detail: str):
        self.path, self.problem, self.detail = str(path), problem, detail
        super().__init__(
            f"{escape_name(self.path)}: {problem.value} ({detail}). Remove or replace the file, "
            "or run `imgclf audit` to list every bad file."
        )


@dataclasses.dataclass(frozen=True)
class ImageHeader:
    """What the header says without decoding pixels.

    Attributes:
        width: width as displayed (after EXIF orientation).
        height: height as displayed.
        channels: 1 or 3, after conversion.
        format: Pillow's format name, e.g. `"JPEG"`.
        findings: the warnings the header already shows (mode, animation,
            orientation, size); a full decode (`inspect_file`) may add errors.
    """

    width: int
    height: int
    channels: int
    format: str | None
    findings: tuple[Finding, ...] = ()


@dataclasses.dataclass(frozen=True)
class FileCheck:
    """The result of `inspect_file`: hash, size and every finding of one file.

    `pixels_sha1` is the hash of the decoded pixels as training sees them
    (`pixels_hash`), the same for two files of one picture in other
    formats or with other metadata; `None` when the file was not decoded.
    Two checks compare equal when their hashes of the file, sizes and
    findings are: a JPEG's draft and its full decode compare equal, though
    their pixels hash differently.
    """

    sha1: str | None
    width: int | None
    height: int | None
    channels: int | None
    findings: tuple[Finding, ...]
    pixels_sha1: str | None = dataclasses.field(default=None, compare=False)

    @property
    def status(self) -> Severity:
        severities = {f.problem.severity for f in self.findings}
        for severity in (Severity.ERROR, Severity.WARNING):
            if severity in severities:
                return severity
        return Severity.OK

    @property
    def problem(self) -> str:
        return ";".join(f.problem.value for f in self.findings)

    @property
    def detail(self) -> str:
        return "; ".join(f.detail for f in self.findings)


# Opening -------------------------------------------------------------------

# The first bytes of the image formats imgclf reads (RIFF is checked for WEBP below).
_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
               (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))


def signature_format(head: bytes) -> str | None:
    """The image format whose signature `head` starts with, or `None`."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis") and ".avif" in IMAGE_EXTENSIONS:
        return "AVIF"
    return next((name for signature, name in _SIGNATURES if head.startswith(signature)), None)


def a_format(name: str) -> str:
    """`"a PNG"`, `"an AVIF"`."""
    return ("an " if name[0] in "AEIOU" else "a ") + name


# Brands of an ISO media file (`ftyp` box) that hold HEIF images: HEIC is how iPhones save photos.
_HEIF_BRANDS = {b"heic": "a HEIC", b"heix": "a HEIC", b"heim": "a HEIC", b"heis": "a HEIC", b"hevc": "a HEIC",
                b"hevx": "a HEIC", b"mif1": "a HEIF", b"msf1": "a HEIF", b"avif": "an AVIF", b"avis": "an AVIF"}


def _describe_non_image(head: bytes) -> str:
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return (f"the file is {_HEIF_BRANDS[head[8:12]]} image, a format imgclf cannot read; convert it to JPEG "
                "or PNG (e.g. with your photo app's export, or `heif-convert`)")
    text = head.lstrip().lower()
    for prefix, name in ((b"%pdf", "a PDF document"), (b"<svg", "an SVG drawing"), (b"<?xml", "an XML/SVG file"),
                         (b"<!doctype html", "an HTML page"), (b"<html", "an HTML page"), (b"pk\x03\x04", "a ZIP archive")):
        if text.startswith(prefix):
            return f"the file is {name}, not a raster image"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head)  # a character cut at the end of `head` is not an error
        return "the file is text, not an image"
    except UnicodeDecodeError:
        return "Pillow cannot identify this file as an image"


@contextlib.contextmanager
def _open(source, path, limits: ImageLimits) -> Iterator[Image.Image]:
    """Opens an image lazily (header only), applies the pixel limit, closes it on exit.

    Pillow checks every size it meets (the header, each GIF frame) against its
    module-wide `Image.MAX_IMAGE_PIXELS`, so that limit is set to
    `limits.max_pixels` while the file is open; otherwise a limit above
    Pillow's default could never be used. Decoding runs in one thread per
    process, so the temporary change is seen by this file alone.
    """
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = limits.max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)  # Pillow's notes on corrupt EXIF; the image is still usable
            try:
                image = Image.open(source)
            except UnidentifiedImageError:
                head, tail, size = _ends(source, path)
                _refuse_cut_short(path, head, size)
                image_format = signature_format(head)
                if image_format:  # an image whose header cannot be read: cut short, or damaged in place
                    cut = not tail.rstrip(b"\0").endswith(_END_MARKERS.get(image_format, b""))
                    how = "cut short" if cut else "damaged"
                    if image_format == "TIFF":  # no end marker to tell; and some sound TIFFs are beyond Pillow
                        how = ("damaged, or a kind of TIFF that Pillow does not read (floating-point colour, 64-bit "
                               "samples): if it opens elsewhere, save it as an 8- or 16-bit TIFF or a PNG")
                    raise ImageDecodeError(path, ImageProblem.TRUNCATED if cut else ImageProblem.CORRUPT,
                                           f"the file starts as {a_format(image_format)} image but Pillow cannot read its "
                                           f"header: {how}") from None
                raise ImageDecodeError(path, ImageProblem.NOT_AN_IMAGE, _describe_non_image(head)) from None
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
                raise ImageDecodeError(path, ImageProblem.DECOMPRESSION_BOMB, _bomb_detail(error, limits)) from None
            except (PermissionError, FileNotFoundError, IsADirectoryError) as error:
                raise ImageDecodeError(path, ImageProblem.UNREADABLE, _unreadable(path, error)) from None
            except Exception as error:  # noqa: BLE001 - see _corrupt
                head, _, size = _ends(source, path)
                _refuse_cut_short(path, head, size)
                raise _corrupt(path, error, "unreadable header: ") from None
            with image:
                width, height = image.size
                if width * height > limits.max_pixels:
                    raise ImageDecodeError(
                        path, ImageProblem.DECOMPRESSION_BOMB,
                        f"{width}x{height} = {width * height:,} pixels exceeds max_pixels={limits.max_pixels:,}"
                        + _BOMB_FIX.format(pixels=width * height),
                    )
                try:
                    yield image
                except ImageDecodeError:
                    raise
                except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
                    # A frame of an animation can be larger than the header says.
                    raise ImageDecodeError(path, ImageProblem.DECOMPRESSION_BOMB, _bomb_detail(error, limits)) from None
                except Exception as error:  # noqa: BLE001 - see _corrupt
                    raise _corrupt(path, error) from None
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _corrupt(path, error: Exception, prefix: str = "") -> ImageDecodeError:
    """Any exception Pillow raises while reading a file means the file is unusable.

    Its decoders raise many types on malformed data (`TypeError` from bad TIFF
    tags, `IndexError` from damaged GIF frames, `struct.error`, ...), so the
    type is kept in the detail rather than trusted to mean anything.
    """
    message = str(error) or type(error).__name__
    truncated = "truncated" in message.lower() or isinstance(error, EOFError)
    problem = ImageProblem.TRUNCATED if truncated else ImageProblem.CORRUPT
    return ImageDecodeError(path, problem, f"{prefix}{type(error).__name__}: {message}")


def _bomb_detail(error: Exception, limits: ImageLimits) -> str:
    # Pillow refuses some bombs itself before the size is known here; its message holds the count.
    found = re.search(r"\((\d+) pixels\)", str(error))
    if not found:
        return str(error)
    return f"{int(found[1]):,} pixels exceeds max_pixels={limits.max_pixels:,}" + _BOMB_FIX.format(pixels=int(found[1]))


_BOMB_FIX = "; if the image is sound, --max-pixels {pixels} (data.max_pixels) accepts it"


# The last bytes of a complete file of these formats (others have no fixed end, so they count as complete).
_END_MARKERS = {"PNG": b"IEND\xaeB`\x82", "JPEG": b"\xff\xd9", "GIF": b";"}


def _ends(source, path) -> tuple[bytes, bytes, int]:
    """The first 4,096 and the last 16 bytes of a file, or of the bytes read from it, and its size."""
    if isinstance(source, io.BytesIO):
        data = source.getvalue()
        return data[:4096], data[-16:], len(data)
    with open(path, "rb") as handle:
        head = handle.read(4096)
        size = os.fstat(handle.fileno()).st_size
        handle.seek(max(0, size - 16))
        return head, handle.read(), size


def _refuse_cut_short(path, head: bytes, size: int) -> None:
    """Raises `truncated` for a file that Pillow cannot open and that is shorter than its header says."""
    detail = _cut_short(head, size)
    if detail:
        raise ImageDecodeError(path, ImageProblem.TRUNCATED, detail) from None


def _cut_short(head: bytes, size: int) -> str | None:
    """How a WebP, TIFF or AVIF of `size` bytes was cut short, told by the sizes its header gives; `None` if it was
    not, or for another format (those have no size to compare, `_END_MARKERS` tells)."""
    if signature_format(head) == "AVIF":  # not a HEIC: imgclf cannot read those, cut short or not
        return _boxes_cut_short(head, size)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        declared = int.from_bytes(head[4:8], "little") + 8
        if size < declared:
            return f"the file ends after {size:,} bytes, but its header says it holds {declared:,}: cut short"
    if head[:4] in (b"II*\0", b"MM\0*"):
        directory = int.from_bytes(head[4:8], "little" if head[:2] == b"II" else "big")
        if directory >= size:
            return (f"the file ends after {size:,} bytes, before its image directory at byte {directory:,}: "
                    "cut short")
    return None


def _boxes_cut_short(head: bytes, size: int) -> str | None:
    """How an ISO media file (AVIF, HEIC) was cut short: a box of the ones `head` holds the start of ends past `size`."""
    start = 0
    while start + 8 <= len(head):
        length = int.from_bytes(head[start:start + 4], "big")
        if length == 1 and start + 16 <= len(head):  # the length follows the box's name, in 64 bits
            length = int.from_bytes(head[start + 8:start + 16], "big")
        if length < 8:  # 0: the box runs to the end of the file; below 8, not a box
            return None
        if start + length > size:
            name = head[start + 4:start + 8].decode("latin-1")
            return (f"the file ends after {size:,} bytes, but its '{name}' box ends at byte {start + length:,}: "
                    "cut short")
        start += length
    return None


_NOT_REGULAR = "not a regular file (a named pipe, socket or device)"
_EMPTY = "the file is empty (0 bytes)"


def _check_file(path) -> None:
    """Raises for files that are missing, unreadable or empty, before Pillow sees them."""
    try:
        status = os.stat(path)
    except OSError as error:
        raise ImageDecodeError(path, ImageProblem.UNREADABLE, _unreadable(path, error)) from None
    if stat.S_ISDIR(status.st_mode):
        raise ImageDecodeError(path, ImageProblem.UNREADABLE, "is a directory")
    if not stat.S_ISREG(status.st_mode):
        raise ImageDecodeError(path, ImageProblem.UNREADABLE, _NOT_REGULAR)
    if status.st_size == 0:
        raise ImageDecodeError(path, ImageProblem.EMPTY_FILE, _EMPTY)


def _channels(mode: str) -> int:
    return 1 if mode in _GRAY_MODES else 3


def _rawmode(image: Image.Image) -> str | None:
    """The raw mode of the pixels as stored, from an image opened and not yet loaded (loading drops it).

    It shows what the mode does not: 16 bits a channel that Pillow opens as
    8-bit RGB ("RGB;16B" in a PNG, "RGB;16N" in a TIFF), or grey and alpha
    that it opens as RGBA ("LA;16B").
    """
    if not image.tile:
        return None
    args = image.tile[0].args  # alone in a PNG, first of a tuple in a TIFF
    rawmode = args[0] if isinstance(args, tuple) and args else args
    return rawmode if isinstance(rawmode, str) else None


def _stored_channels(image: Image.Image) -> int:
    """1 for a grey image, 3 for colour, from an image opened and not yet loaded."""
    rawmode = _rawmode(image) if image.format == "PNG" else None
    return 1 if rawmode and rawmode.startswith("LA;") else _channels(image.mode)


@functools.cache
def _pillow_orients_tiff() -> bool:
    """Whether this Pillow applies a TIFF's orientation tag itself: it reports the displayed size and rotates
    the pixels while loading (Pillow 13 does; earlier versions leave the tag to the caller)."""
    buffer = io.BytesIO()
    Image.new("L", (2, 1)).save(buffer, format="TIFF", tiffinfo={_EXIF_ORIENTATION: 6})
    with Image.open(buffer) as probe:
        return probe.size == (1, 2)


def _pillow_turned(image: Image.Image, orientation: int) -> bool:
    """Whether Pillow reports the size of an image opened with this EXIF orientation as shown, not as stored."""
    return orientation in _SIDEWAYS_ORIENTATIONS and image.format == "TIFF" and _pillow_orients_tiff()


def _displayed_size(image: Image.Image, orientation: int) -> tuple[int, int]:
    """Width and height as shown, of an image opened and not yet loaded whose EXIF orientation is `orientation`."""
    width, height = image.size
    if orientation in _SIDEWAYS_ORIENTATIONS and not _pillow_turned(image, orientation):
        return height, width
    return width, height


def read_header(path, *, limits: ImageLimits = ImageLimits()) -> ImageHeader:
    """Reads only the header of an image file.

    Args:
        path: the file.
        limits: the pixel limit applies. Defaults to `ImageLimits()`.

    Returns:
        An `ImageHeader` with the warnings the header shows. A PNG's EXIF
        orientation is reported when its EXIF comes before the pixel data
        (an eXIf chunk, or the "Raw profile type exif" text chunk that
        ImageMagick writes, for which Pillow decodes the file); EXIF stored
        after the pixel data is left to the full decode.

    Raises:
        ImageDecodeError: for an empty, unreadable, non-image or too-large file.
    """
    _check_file(path)
    with _open(path, path, limits) as image:
        return _header_of(image, limits)


def _header_of(image: Image.Image, limits: ImageLimits, data: bytes | None = None) -> ImageHeader:
    """What `read_header` reports of an image opened (and not yet loaded).

    With the file's bytes in `data`, a PNG whose EXIF comes after its pixel
    data is read whole for it, so its orientation is reported too.
    """
    findings = []
    depth_findings, channels = _depth_findings(image), _stored_channels(image)  # before EXIF may load a PNG
    if getattr(image, "is_animated", False) and image.format not in JPEG_FORMATS:
        findings.append(Finding(ImageProblem.ANIMATED, "animated; the first frame is used"))
    png_without_exif = (image.format == "PNG" and "exif" not in image.info and _PNG_RAW_EXIF not in image.info
                        and (data is None or b"eXIf" not in data))
    orientation = 1 if png_without_exif else _exif_orientation(image)
    if orientation != 1:
        findings.append(Finding(ImageProblem.EXIF_ORIENTATION, f"EXIF orientation {orientation} applied"))
    width, height = _displayed_size(image, orientation)
    findings += depth_findings + _mode_findings(image) + _shape_findings(width, height, limits)
    return ImageHeader(width, height, channels, image.format, tuple(findings))


# Decoding ------------------------------------------------------------------

def _depth_findings(image: Image.Image) -> list[Finding]:
    """A warning for a PNG or TIFF of 16 bits per channel that Pillow opens as 8-bit RGB, RGBA or LA.

    Its mode does not show the depth (16-bit grey does, `I;16`), so this is
    read from the raw mode of the header (`_rawmode`), before the image is loaded.
    """
    if image.format not in ("PNG", "TIFF") or image.mode in _HIGH_BIT_MODES:
        return []
    rawmode = _rawmode(image)
    if rawmode and ";16" in rawmode:
        return [Finding(ImageProblem.HIGH_BIT_DEPTH, f"16-bit {image.mode} image scaled to 8 bits")]
    return []


def _mode_findings(image: Image.Image) -> list[Finding]:
    """Warnings about the stored pixel format, which `_convert` deals with."""
    mode = image.mode
    if mode == "CMYK":
        return [Finding(ImageProblem.CMYK, "CMYK image converted to RGB")]
    if mode in _HIGH_BIT_MODES:
        findings = [Finding(ImageProblem.HIGH_BIT_DEPTH, f"{mode} image scaled to 8 bits")]
        if _has_transparent_colour(image):
            findings.append(Finding(ImageProblem.ALPHA, f"{mode} image with a transparent level: composited on the background"))
        return findings
    if _has_palette_transparency(image):
        return [Finding(ImageProblem.PALETTE_TRANSPARENCY, "palette image with transparency composited on the background")]
    if mode in _ALPHA_MODES:
        return [Finding(ImageProblem.ALPHA, f"{mode} image: alpha composited on the background")]
    if _has_transparent_colour(image):
        return [Finding(ImageProblem.ALPHA, f"{mode} image with a transparent colour: composited on the background")]
    return []


def _has_transparent_colour(image: Image.Image) -> bool:
    """Whether a grey or RGB image marks one colour transparent (a PNG's tRNS chunk), as browsers show it."""
    return image.mode in ("1", "L", "RGB", *_HIGH_BIT_MODES) and "transparency" in image.info


def transparent_grey_level(image: Image.Image) -> int | None:
    """The transparent level of a grey image on the 0..255 scale of its pixels, read before loading; else `None`.

    Pillow opens a 2- or 4-bit grey PNG as 8-bit grey (level 1 of 2 bits
    becomes 85) but keeps the level of its tRNS chunk as stored, so no pixel
    would match it: that level is scaled here. The raw mode that tells the
    depth is gone once the image is loaded.
    """
    level = image.info.get("transparency")
    if image.mode != "L" or not isinstance(level, int):
        return None
    bits = {"L;2": 2, "L;4": 4}.get(_rawmode(image)) if image.format == "PNG" else None
    return level * 255 // (2**bits - 1) if bits else level


def _has_palette_transparency(image: Image.Image) -> bool:
    """Whether a palette image has a transparent entry (some writers store a table of opaque entries only)."""
    transparency = image.info.get("transparency") if image.mode == "P" else None
    return transparency is not None and not (isinstance(transparency, bytes) and set(transparency) <= {255})


def _convert(image: Image.Image, channels: int, limits: ImageLimits) -> Image.Image:
    """Converts a loaded image to mode `L` (channels=1) or `RGB`."""
    if image.mode in _HIGH_BIT_MODES:
        level = image.info.get("transparency")  # of a 16-bit grey PNG, compared before scaling
        opaque = np.asarray(image) != level if isinstance(level, int) else None
        image = _to_8bit(image)
        if opaque is not None:
            image.putalpha(Image.fromarray(opaque.astype(np.uint8) * 255))
    if image.mode == "La":  # grey and premultiplied alpha: Pillow converts it to LA only
        image = image.convert("LA")
    if image.mode in _ALPHA_MODES or _has_palette_transparency(image) or _has_transparent_colour(image):
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        # Pasted through its own alpha onto the background: the pixels of `alpha_composite` on an opaque
        # background, without its two full-size RGBA copies (a large transparent PNG took 18 bytes a pixel).
        image = Image.new("RGB", rgba.size, limits.background)
        image.paste(rgba, mask=rgba)
    target = "L" if channels == 1 else "RGB"
    if target == "L" and image.mode == "LAB":  # Pillow converts LAB to RGB only
        image = image.convert("RGB")
    return image if image.mode == target else image.convert(target)


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit images as 8 bits, as `preprocessing.json` of an export describes it.

    16-bit images are shifted right by 8 bits (65535 → 255); 32-bit integer
    images too when any value exceeds 255; float images are multiplied by 255
    when no value exceeds 1. The result is then clipped to 0..255, so values
    beyond 65535 or below 0 saturate instead of wrapping around.
    """
    array = np.asarray(image)
    if image.mode == "F":
        scaled = np.clip(array, 0.0, 1.0) * 255 if array.max(initial=0) <= 1.0 else np.clip(array, 0, 255)
    elif image.mode.startswith("I;16"):
        scaled = array.astype(np.uint32) >> 8
    else:
        high = int(array.max(initial=0))
        scaled = np.clip(array.astype(np.int64) >> 8 if high > 255 else array, 0, 255)
    return Image.fromarray(np.asarray(scaled, dtype=np.uint8), mode="L")


def _orientation_and_frames(image: Image.Image, stored_orientation: int) -> tuple[Image.Image, list[Finding]]:
    """The first frame of a loaded image, shown as its EXIF orientation says (`stored_orientation`, read before
    loading), with the findings of both."""
    findings = []
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        if image.format not in JPEG_FORMATS:
            findings.append(Finding(ImageProblem.ANIMATED, f"{frames} frames; the first is used"))
        image.seek(0)
    orientation = _exif_orientation(image)  # a PNG's EXIF after its pixel data is read while loading
    if orientation != 1:
        image = ImageOps.exif_transpose(image)
    applied = orientation if orientation != 1 else stored_orientation  # Pillow may have applied a TIFF's already
    if applied != 1:
        findings.append(Finding(ImageProblem.EXIF_ORIENTATION, f"EXIF orientation {applied} applied"))
    return image, findings


def _exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation 2..8 that changes how the image is shown, else 1 (also for invalid values)."""
    orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    return orientation if orientation in range(2, 9) else 1


def _shape_findings(width: int, height: int, limits: ImageLimits) -> list[Finding]:
    findings = []
    if min(width, height) < limits.min_side:
        findings.append(Finding(ImageProblem.TOO_SMALL, f"{width}x{height} is smaller than min_side={limits.min_side}"))
    aspect = max(width, height) / max(1, min(width, height))
    if aspect > limits.max_aspect:
        findings.append(Finding(ImageProblem.EXTREME_ASPECT, f"{width}x{height} has aspect ratio {aspect:.1f} > max_aspect={limits.max_aspect:g}"))
    return findings


def _decode(source, path, channels: int | None, limits: ImageLimits, draft_size=None,
            check_jpeg: bool = False) -> tuple[Image.Image, list[Finding], str]:
    """Opens and fully decodes one image.

    Returns the image (converted to `channels`, or as stored when `channels`
    is `None`), its warnings and its channels as stored (1 or 3).
    """
    data = source.getvalue() if isinstance(source, io.BytesIO) else None
    with _open(source, path, limits) as image:
        return _decode_opened(image, channels, limits, draft_size, path=path, data=data, check_jpeg=check_jpeg)


def _decode_opened(image: Image.Image, channels: int | None, limits: ImageLimits, draft_size=None, *,
                   path, data: bytes | None = None, check_jpeg: bool = False) -> tuple[Image.Image, list[Finding], str]:
    """`_decode` of an image already opened by `_open` (inside its `with`, which names the errors).

    `data` is the file's bytes when the caller has them, for `_check_png_data`
    and, with `check_jpeg`, for `_check_jpeg_data`.
    """
    stored_channels = _stored_channels(image)
    depth_findings = _depth_findings(image)  # before loading, which drops the header's raw mode
    grey_level = transparent_grey_level(image)
    stored_orientation = _exif_orientation(image)
    if draft_size is not None and image.format in JPEG_FORMATS:
        # JPEG can decode at 1/2, 1/4 or 1/8 scale directly: far faster for large photos.
        image.draft(None if channels is None else "L" if channels == 1 else "RGB", (draft_size[1], draft_size[0]))
    if image.format == "TIFF":
        _check_tiff_strips(image, path, _pillow_turned(image, stored_orientation))
    image.load()
    if image.format == "PNG":
        _check_png_data(data if data is not None else _read_bytes(path), path, missing_rows=_last_pixel_is_zero(image))
    if check_jpeg and image.format in JPEG_FORMATS:
        _check_jpeg_data(data if data is not None else _read_bytes(path), path)
    image, findings = _orientation_and_frames(image, stored_orientation)
    if getattr(image, "n_frames", 1) > 1:
        image.load()
    if grey_level is not None:
        image.info["transparency"] = grey_level
    findings += depth_findings + _mode_findings(image)
    if channels is not None:
        image = _convert(image, channels, limits)
    return image, findings, stored_channels


def decode_image(path, *, channels: int = 3, limits: ImageLimits = ImageLimits()) -> tuple[np.ndarray, tuple[Finding, ...]]:
    """Decodes a whole image to a uint8 array.

    Args:
        path: the file; its content, not its extension, decides the decoder.
        channels: 3 for RGB, 1 for grayscale. Defaults to 3.
        limits: pixel limit and alpha background. Defaults to `ImageLimits()`.

    Returns:
        `(array, warnings)`: a uint8 array `(height, width, channels)` with EXIF
        orientation applied, and the warning findings.

    Raises:
        ImageDecodeError: if the file is empty, unreadable, not an image,
            truncated, corrupt (a JPEG whose data libjpeg finds damaged
            included, `_check_jpeg_data`) or too large.
    """
    _check_file(path)
    image, findings, _ = _decode(path, path, channels, limits, check_jpeg=True)
    return _as_array(image, channels), tuple(findings)


def _as_array(image: Image.Image, channels: int) -> np.ndarray:
    array = np.asarray(image, dtype=np.uint8)
    return array[..., None] if channels == 1 else array


def load_image(path, *, size: tuple[int, int], channels: int = 3, resize: str = "stretch",
               limits: ImageLimits = ImageLimits()) -> np.ndarray:
    """Decodes an image and resizes it for a model.

    Args:
        path: the file.
        size: `(height, width)` of the result.
        channels: 3 for RGB, 1 for grayscale. Defaults to 3.
        resize: `"stretch"` to `size`; `"pad"` keeps the aspect ratio and fills
            the rest with the background colour; `"crop"` keeps the aspect ratio
            and cuts the centre. Defaults to `"stretch"`.
        limits: pixel limit and background. Defaults to `ImageLimits()`.

    Returns:
        A uint8 array `(size[0], size[1], channels)`.

    Raises:
        ImageDecodeError: as `decode_image`.
    """
    if resize not in RESIZE_MODES:
        raise ValueError(f"Unknown resize {resize!r}. Valid values: {', '.join(RESIZE_MODES)}")
    source = path
    if os.fsdecode(path).lower().endswith(".png"):
        try:
            data = _read_bytes(path)
        except OSError as error:
            raise ImageDecodeError(path, ImageProblem.UNREADABLE, _unreadable(path, error)) from None
        # A PNG of the model's size is within the pixel limit unless the model's input is not: then Pillow refuses it.
        pixels = opencv_decode.plain_png(data, size, channels) if size[0] * size[1] <= limits.max_pixels else None
        if pixels is not None:
            return pixels
        source = io.BytesIO(data) if data else path
    if source is path:  # bytes already read need no second look at the file
        _check_file(path)
    image, _, _ = _decode(source, path, channels, limits, draft_size=size)
    return _fit(image, size, channels, resize, limits)


def _fit(image: Image.Image, size: tuple[int, int], channels: int, resize: str, limits: ImageLimits) -> np.ndarray:
    """A decoded image brought to `size` by the `resize` policy, as a uint8 array."""
    height, width = size
    if image.size == (width, height):
        pass  # every policy leaves an image of the right size as it is
    elif resize == "stretch":
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    elif resize == "crop":
        image = ImageOps.fit(image, (width, height), Image.Resampling.BILINEAR)
    else:
        fill = limits.background[0] if channels == 1 else limits.background
        image = ImageOps.pad(image, (width, height), Image.Resampling.BILINEAR, color=fill)
    return _as_array(image, channels)


def check_header(path, *, limits: ImageLimits = ImageLimits()) -> FileCheck:
    """Hashes a file and reads its header from the same bytes: the fast check of `scan`; never raises.

    Args:
        path: the file.
        limits: pixel limit, smallest side and largest aspect ratio.
            Defaults to `ImageLimits()`.

    Returns:
        A `FileCheck` with the hash and the header's findings (as
        `read_header` gives them, and the orientation of a PNG whose EXIF
        comes after its pixel data, which takes decoding it).
    """
    return _read_once(path, limits, None)[0]


def scan_and_load(path, *, size: tuple[int, int], channels: int = 3, resize: str = "stretch",
                  limits: ImageLimits = ImageLimits()) -> tuple[FileCheck, np.ndarray | None, ImageDecodeError | None]:
    """Reads a file once: hashes it, reads its header and decodes it for a model.

    The bytes are read once, hashed, and parsed once from memory: the check
    is the one `scan` makes of a file (`check_header`), and the pixels are
    those of `load_image` (JPEG draft mode included). A file whose header is
    sound but whose pixels cannot be decoded (cut short, corrupt data) gets
    its check and the decoding error, as a scan followed by a decode would
    report them.

    Args:
        path: the file.
        size: `(height, width)` of the pixels.
        channels: 3 for RGB, 1 for grayscale. Defaults to 3.
        resize: `"stretch"`, `"pad"` or `"crop"` (see `load_image`).
            Defaults to `"stretch"`.
        limits: pixel limit, smallest side, largest aspect ratio and
            background. Defaults to `ImageLimits()`.

    Returns:
        `(check, pixels, error)`: the `FileCheck` of the scan; a uint8 array
        `(size[0], size[1], channels)`, or `None` when the file cannot be
        used; and the `ImageDecodeError` of a decode that failed after a
        sound header, else `None`. Never raises for a bad file.
    """
    if resize not in RESIZE_MODES:
        raise ValueError(f"Unknown resize {resize!r}. Valid values: {', '.join(RESIZE_MODES)}")
    return _read_once(path, limits, (size, channels, resize))


def _content_hash(data: bytes) -> str | None:
    """The sha1 of a file's bytes; `None` for an empty file, which has no content to place in a split (like a file
    that cannot be read, it then takes no place in its class's split order and moves no other file)."""
    return hashlib.sha1(data).hexdigest() if data else None


def _read_once(path, limits: ImageLimits, target) -> tuple[FileCheck, np.ndarray | None, ImageDecodeError | None]:
    """`check_header`, and with `target` `(size, channels, resize)` the pixels of `scan_and_load` too."""
    try:
        data = _read_bytes(path)
    except OSError as error:
        return FileCheck(None, None, None, None, (Finding(ImageProblem.UNREADABLE, _unreadable(path, error)),)), None, None
    sha1 = _content_hash(data)
    header, pixels = None, None
    try:
        if not data:
            raise ImageDecodeError(path, ImageProblem.EMPTY_FILE, _EMPTY)
        with _open(io.BytesIO(data), path, limits) as image:
            header = _header_of(image, limits, data)
            if target is not None:
                size, channels, resize = target
                pixels = opencv_decode.plain_png(data, size, channels) if header.format == "PNG" else None
                if pixels is None:
                    image, _, _ = _decode_opened(image, channels, limits, draft_size=size, path=path, data=data)
                    pixels = _fit(image, size, channels, resize, limits)
    except ImageDecodeError as error:
        if header is None:
            return FileCheck(sha1, None, None, None, (Finding(error.problem, error.detail),)), None, None
        return FileCheck(sha1, header.width, header.height, header.channels, header.findings), None, error
    return FileCheck(sha1, header.width, header.height, header.channels, header.findings), pixels, None


def _check_png_data(data: bytes, path, *, missing_rows: bool) -> None:
    """Raises for a PNG whose pixel data is damaged or stops early, which Pillow decodes as garbled or black rows.

    Every path that decodes a PNG with Pillow checks (`png_rows`), so the audit, a first run, the
    cache and `imgclf predict` agree on such a file. The CRC check of the pixel data is one pass of
    `zlib.crc32` over bytes in memory. The check for missing rows inflates the pixel data a second
    time, so it runs only when `missing_rows`: when the last pixel came out zero, as it does where
    rows are missing (a plain PNG of the model's size never gets here: libpng itself refuses one
    whose data ends early or fails its CRC, `opencv_decode`).
    """
    detail = png_rows.damaged_pixel_data(data)
    if detail:
        raise ImageDecodeError(path, ImageProblem.CORRUPT, detail)
    detail = png_rows.missing_rows(data) if missing_rows else None
    if detail:
        raise ImageDecodeError(path, ImageProblem.TRUNCATED, detail)


def _check_tiff_strips(image: Image.Image, path, sideways: bool) -> None:
    """Raises for a TIFF whose strips or tiles cover only part of the image (a writer that stopped after the first
    strips, a header edited): Pillow decodes the pixels no strip holds as black, without a word.

    `sideways`: Pillow reports the size as shown, width and height swapped from the stored ones that the strips
    cover."""
    width, height = image.size[::-1] if sideways else image.size
    covered = sum(max(0, min(x1, width) - x0) * max(0, min(y1, height) - y0) for _, (x0, y0, x1, y1), *_ in image.tile)
    if image.tile and covered < width * height:
        raise ImageDecodeError(path, ImageProblem.TRUNCATED, f"its strips hold {covered:,} of its {width * height:,} "
                                                             "pixels; the rest of the image would be black")


def _check_jpeg_data(data: bytes, path) -> None:
    """Raises for a JPEG whose compressed data is damaged, which Pillow decodes as garbled blocks without a word.

    libjpeg warns of such data (`opencv_decode.jpeg_damage`). The check
    decodes the file a second time, at 1/8 scale, so only the full decodes
    of the audit (`inspect_file`) and `decode_image` make it, not the decode
    for a model.
    """
    warning = opencv_decode.jpeg_damage(data)
    if warning:
        problem = ImageProblem.TRUNCATED if warning.startswith("Premature end") else ImageProblem.CORRUPT
        raise ImageDecodeError(path, problem, f"the JPEG data is damaged, so part of the image decodes as garbage "
                                              f"(libjpeg: {warning})")


def _last_pixel_is_zero(image: Image.Image) -> bool:
    width, height = image.size
    if width == 0 or height == 0:
        return False
    pixel = image.getpixel((width - 1, height - 1))
    return not any(pixel) if isinstance(pixel, tuple) else not pixel


def _read_bytes(path) -> bytes:
    """The whole file, read with two system calls: for a file of a few hundred bytes, Python's buffered
    file object costs as much as decoding it.

    Raises `OSError` for anything but a regular file: a named pipe or a device under an image's
    name would otherwise block the read or never end it (it is opened without blocking to find out).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        status = os.fstat(fd)
        if stat.S_ISDIR(status.st_mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory")
        if not stat.S_ISREG(status.st_mode):
            raise OSError(errno.EINVAL, _NOT_REGULAR)
        size = status.st_size
        chunks = [os.read(fd, max(size, 1))]
        while chunks[-1]:  # a file that grew, or a size the file system does not report
            chunks.append(os.read(fd, 1 << 20))
        return b"".join(chunks)
    finally:
        os.close(fd)


def inspect_file(path, *, limits: ImageLimits = ImageLimits(), draft: bool = True) -> FileCheck:
    """Hashes and fully decodes one file, recording every finding; never raises.

    The file is read once: its bytes are hashed, then decoded from memory, and
    no pixels are kept afterwards. A JPEG is decoded in draft mode, at 1/8 of
    its size: libjpeg still reads and Huffman-decodes every byte of the
    compressed data, so a file cut short or broken fails as it does in a
    full decode (`tests/test_jpeg_draft.py`), in a fraction of the time for
    a large photo. A JPEG whose data libjpeg finds damaged is `corrupt`
    (`_check_jpeg_data`).

    Args:
        path: the file.
        limits: pixel limit, smallest side and largest aspect ratio.
            Defaults to `ImageLimits()`.
        draft: decode JPEGs in draft mode; `False` decodes them at full
            size. Defaults to `True`.

    Returns:
        A `FileCheck`; width and height are after EXIF orientation, and
        those of the full image in draft mode too.
    """
    try:
        data = _read_bytes(path)  # a missing file, a folder or a named pipe fails here, as in `_check_file`
    except OSError as error:
        return FileCheck(None, None, None, None, (Finding(ImageProblem.UNREADABLE, _unreadable(path, error)),))
    sha1 = _content_hash(data)
    if not data:
        return FileCheck(sha1, None, None, None, (Finding(ImageProblem.EMPTY_FILE, _EMPTY),))
    try:
        with _open(io.BytesIO(data), path, limits) as opened:
            scaled = draft and opened.format in JPEG_FORMATS
            full, orientation = opened.size, _exif_orientation(opened) if scaled else 1
            image, findings, channels = _decode_opened(opened, None, limits, draft_size=(1, 1) if scaled else None,
                                                       path=path, data=data, check_jpeg=True)
            width, height = image.size
            if scaled:  # the size of the image, not of its draft
                width, height = full[::-1] if orientation in _SIDEWAYS_ORIENTATIONS else full
            shown = _convert(image, channels, limits)
            findings += _shape_findings(width, height, limits) + _blank_findings(shown, channels)
            if scaled and findings and findings[-1].problem == ImageProblem.BLANK:
                # a fine pattern can average out at 1/8 scale: the whole image decides
                findings[-1:] = _blank_findings(_decode(io.BytesIO(data), path, channels, limits)[0], channels)
    except ImageDecodeError as error:
        return FileCheck(sha1, None, None, None, (Finding(error.problem, error.detail),))
    return FileCheck(sha1, width, height, channels, tuple(findings), pixels_hash(shown, (width, height)))


def pixels_hash(image: Image.Image, size: tuple[int, int]) -> str:
    """The sha1 of an image's pixels (in mode `L` or `RGB`) and of `size`, the `(width, height)` of the picture.

    Of a JPEG decoded in draft mode, the pixels are those of the draft: two
    pictures that differ only in detail finer than 8 pixels can share it, so
    an equal hash of drafts needs a full decode to confirm.
    """
    width, height = image.size
    digest = hashlib.sha1(f"{size[0]}x{size[1]} {image.mode} {width}x{height}\n".encode())
    rows = max(1, (4 << 20) // max(1, width * len(image.getbands())))  # about 4 MB at a time: no copy of a large image
    if rows >= height:
        digest.update(image.tobytes())
    else:
        for top in range(0, height, rows):
            digest.update(image.crop((0, top, width, min(height, top + rows))).tobytes())
    return digest.hexdigest()


def _blank_findings(shown: Image.Image, channels: int) -> list[Finding]:
    """A warning for an image of one flat colour, as training sees it (`shown`, converted to `channels`: a
    placeholder, a failed render or export)."""
    extrema = shown.getextrema()
    bands = [extrema] if channels == 1 else list(extrema)
    if any(low != high for low, high in bands):
        return []
    colour = bands[0][0] if channels == 1 else tuple(low for low, _ in bands)
    return [Finding(ImageProblem.BLANK, f"every pixel is {colour}: the image shows nothing to learn from")]

import io
import os
import resource
import signal

import numpy as np
import pytest
from PIL import Image

import badfiles
from imgclf.config import ImageSpec
from imgclf.manifest import scan
from imgclf.images import (IMAGE_EXTENSIONS, ImageDecodeError, ImageLimits, ImageProblem, check_header, decode_image,
                           inspect_file, load_image, read_header, scan_and_load)


@pytest.mark.parametrize("name", sorted(badfiles.BAD_FILES))
def test_inspect_file_status_and_problem(tmp_path, name):
    writer, status, problem = badfiles.BAD_FILES[name]
    check = inspect_file(writer(tmp_path / name))
    assert (check.status.value, check.problem) == (status, problem)
    assert bool(check.detail) == (status != "ok")


@pytest.mark.parametrize("name", [n for n, (_, status, _) in badfiles.BAD_FILES.items() if status == "error"])
def test_decode_errors_name_the_file_and_the_fix(tmp_path, name):
    writer, _, problem = badfiles.BAD_FILES[name]
    path = writer(tmp_path / name)
    with pytest.raises(ImageDecodeError) as raised:
        decode_image(path)
    assert raised.value.problem == ImageProblem(problem)
    assert str(path) in str(raised.value) and "imgclf audit" in str(raised.value)


def test_unreadable_paths(tmp_path):
    for path in (tmp_path / "missing.jpg", tmp_path):
        assert inspect_file(path).problem == "unreadable"
        with pytest.raises(ImageDecodeError, match="unreadable"):
            read_header(path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are a POSIX feature")
def test_a_named_pipe_under_an_image_name_is_reported_not_waited_on(tmp_path):
    pipe = tmp_path / "data" / "cats" / "frame.png"
    pipe.parent.mkdir(parents=True)
    os.mkfifo(pipe)  # nothing ever writes to it: reading it would wait for ever
    def hung(*args):
        raise TimeoutError("a read of the named pipe blocked")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    try:
        check, pixels, error = scan_and_load(pipe, size=(8, 8))
        assert pixels is None and check.problem == "unreadable"
        audited = inspect_file(pipe)
        assert (audited.status.value, audited.problem) == ("error", "unreadable") and "not a regular file" in audited.detail
        with pytest.raises(ImageDecodeError, match="unreadable \\(not a regular file"):
            load_image(pipe, size=(8, 8))
        for staged in (None, ImageSpec(8, 8, 3, "stretch")):  # the plain scan, and the scan that decodes too
            manifest = scan(tmp_path / "data", val=0.0, test=0.0, workers=1, progress=False, cache_spec=staged,
                            cache_dir=tmp_path / "cache")
            assert [(e.status, e.problem) for e in manifest.entries] == [("error", "unreadable")]
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_bomb_is_rejected_from_the_header_without_allocating(tmp_path):
    path = badfiles.bomb_png(tmp_path / "bomb.png", width=40_000, height=40_000)  # 1.6 GB as 8-bit gray
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert inspect_file(path).problem == "decompression_bomb"
    with pytest.raises(ImageDecodeError, match="1,600,000,000 pixels exceeds max_pixels=89,478,485"):
        load_image(path, size=(8, 8))
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 100


def test_limits_are_configurable_and_validated(tmp_path):
    path = badfiles.good_jpeg(tmp_path / "a.jpg")
    assert inspect_file(path, limits=ImageLimits(max_pixels=100)).problem == "decompression_bomb"
    assert inspect_file(path, limits=ImageLimits(min_side=32)).problem == "too_small"
    with pytest.raises(ValueError, match="max_pixels=0"):
        ImageLimits(max_pixels=0)


def test_conversions_give_expected_pixels(tmp_path):
    deep, _ = decode_image(badfiles.sixteen_bit_png(tmp_path / "deep.png"), channels=1)
    assert deep.dtype == np.uint8 and deep.shape == (16, 16, 1)
    assert deep[0, 0, 0] == 1 and deep[-1, -1, 0] == 255  # 256 >> 8 and 65535 >> 8, not clipped to 255 everywhere
    clear, findings = decode_image(badfiles.transparent_png(tmp_path / "clear.png"))
    assert (clear == 255).all() and findings[0].problem == ImageProblem.ALPHA  # fully transparent → white background
    cmyk, _ = decode_image(badfiles.cmyk_jpeg(tmp_path / "cmyk.jpg"))
    assert cmyk.shape == (16, 16, 3)
    rotated, _ = decode_image(badfiles.exif_rotated_jpeg(tmp_path / "rot.jpg"))
    assert rotated.shape == (16, 8, 3)  # stored 16 wide x 8 high, displayed rotated
    assert inspect_file(tmp_path / "rot.jpg").width == 8


def test_32_bit_values_beyond_16_bits_saturate_instead_of_wrapping_around(tmp_path):
    values = np.array([[0, 1000, 65535, 65536, 70000, 200000, -5]], np.int32)
    Image.fromarray(values).save(tmp_path / "depth.tif")
    expected = [0, 3, 255, 255, 255, 255, 0]  # shifted right by 8 bits, then clipped to 0..255
    predicted = load_image(tmp_path / "depth.tif", size=(1, 7), channels=1)
    check, trained, error = scan_and_load(tmp_path / "depth.tif", size=(1, 7), channels=1)
    assert error is None and check.findings[0].problem == ImageProblem.HIGH_BIT_DEPTH
    assert predicted[0, :, 0].tolist() == trained[0, :, 0].tolist() == expected


def test_header_reports_channels(tmp_path):
    Image.new("L", (10, 12)).save(tmp_path / "gray.png")
    header = read_header(tmp_path / "gray.png")
    assert (header.width, header.height, header.channels, header.format) == (10, 12, 1, "PNG")
    assert read_header(badfiles.cmyk_jpeg(tmp_path / "c.jpg")).channels == 3


@pytest.mark.parametrize("resize", ["stretch", "pad", "crop"])
def test_load_image_sizes(tmp_path, resize):
    path = badfiles.extreme_aspect_png(tmp_path / "wide.png")
    assert load_image(path, size=(12, 20), resize=resize).shape == (12, 20, 3)
    assert load_image(path, size=(12, 20), channels=1, resize=resize).shape == (12, 20, 1)


def test_pad_keeps_aspect_with_background(tmp_path):
    Image.new("RGB", (40, 10), (0, 0, 0)).save(tmp_path / "black.png")
    padded = load_image(tmp_path / "black.png", size=(40, 40), resize="pad")
    assert (padded[0] == 255).all() and (padded[20] == 0).all()


def test_large_jpeg_is_decoded_at_reduced_scale(tmp_path):
    Image.new("RGB", (2000, 1600), (10, 200, 30)).save(tmp_path / "big.jpg", quality=90)
    small = load_image(tmp_path / "big.jpg", size=(32, 40))
    assert small.shape == (32, 40, 3)
    assert abs(int(small[16, 20, 1]) - 200) < 6


def test_unknown_resize_lists_valid_values(tmp_path):
    with pytest.raises(ValueError, match="stretch, pad, crop"):
        load_image(badfiles.good_jpeg(tmp_path / "a.jpg"), size=(8, 8), resize="zoom")


def test_extensions():
    from PIL import features

    avif = {".avif"} if "avif" in features.modules and features.check_module("avif") else set()
    assert IMAGE_EXTENSIONS == {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"} | avif


def test_max_pixels_above_pillows_own_limit_is_honoured(tmp_path):
    # 100 and 200 megapixels: above Pillow's default warning (89M) and error (179M) limits.
    for width, height in ((10_000, 10_000), (20_000, 10_000)):
        path = badfiles.bomb_png(tmp_path / f"big_{width}.png", width=width, height=height)
        header = read_header(path, limits=ImageLimits(max_pixels=300_000_000))
        assert (header.width, header.height) == (width, height)
        with pytest.raises(ImageDecodeError, match=f"{width * height:,} pixels exceeds max_pixels=50,000,000"):
            read_header(path, limits=ImageLimits(max_pixels=50_000_000))


@pytest.mark.parametrize("name", sorted(badfiles.BAD_FILES))
def test_header_shows_every_warning_a_full_decode_finds(tmp_path, name):
    writer, status, problem = badfiles.BAD_FILES[name]
    path = writer(tmp_path / name)
    full = inspect_file(path)
    if name in ("header_only.png", "jpeg_signature_only.jpg", "bad_chunk_name.png"):  # the header itself is broken
        with pytest.raises(ImageDecodeError, match=f"{problem} .the file starts as a (PNG|JPEG) image"):
            read_header(path)
    elif status == "error" and problem in ("truncated", "corrupt"):
        header = read_header(path)  # only decoding the pixels finds these
        assert all(f.problem.severity.value == "warning" for f in header.findings)
    elif status == "error":
        with pytest.raises(ImageDecodeError, match=problem):
            read_header(path)
    else:
        header = read_header(path)  # a blank image takes its pixels to find, as truncated and corrupt files do
        assert ";".join(f.problem.value for f in header.findings) == full.problem.replace(";blank", "").replace("blank", "")
        assert (header.width, header.height) == (full.width, full.height)  # rotated.jpg: displayed size


def _damaged_copies(data: bytes, count: int, seed: int):
    """Copies of `data` with a few random bytes changed or the end cut off."""
    rng = np.random.default_rng(seed)
    for trial in range(count):
        damaged = bytearray(data)
        if trial % 2:
            damaged = damaged[: rng.integers(1, len(damaged))]
        else:
            for _ in range(rng.integers(1, 6)):
                damaged[rng.integers(0, len(damaged))] = rng.integers(0, 256)
        yield bytes(damaged)


def test_damaged_files_of_every_format_are_reported_never_raised(tmp_path):
    # Pillow raises TypeError, IndexError, struct.error, ... on some damaged files; each must become a finding.
    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 255, (24, 20, 3), dtype=np.uint8)) for _ in range(2)]
    originals = {}
    for fmt in ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF"):
        buffer = io.BytesIO()
        frames[0].save(buffer, fmt, **({"save_all": True, "append_images": frames[1:]} if fmt == "GIF" else {}))
        originals[fmt] = buffer.getvalue()
    details = []
    for fmt, data in originals.items():
        for i, damaged in enumerate(_damaged_copies(data, 120, seed=len(fmt))):
            path = tmp_path / f"{fmt}_{i}.img"
            path.write_bytes(damaged)
            check = inspect_file(path)
            assert check.status.value in ("ok", "warning", "error")
            details.append(check.detail)
            try:
                assert load_image(path, size=(8, 8)).shape == (8, 8, 3)
            except ImageDecodeError as error:
                assert error.problem.severity.value == "error"
    assert any("IndexError" in d for d in details)  # damaged GIF frames


def test_a_dangling_symlink_is_named_as_one_with_its_target(tmp_path):
    link = tmp_path / "photo.png"
    link.symlink_to(tmp_path / "gone" / "photo.png")
    with pytest.raises(ImageDecodeError, match=r"unreadable \(No such file or directory \(a symlink to .*gone/photo.png, "
                                               r"which does not exist\)\)"):
        load_image(link, size=(8, 8))
    assert "a symlink to" in inspect_file(link).findings[0].detail


@pytest.mark.parametrize("name", ["garbled.jpg", "flipped_byte_progressive.jpg"])
def test_jpeg_with_damaged_data_is_corrupt_with_libjpegs_warning(tmp_path, name, capfd):
    path = badfiles.BAD_FILES[name][0](tmp_path / name)
    assert load_image(path, size=(32, 32)).shape == (32, 32, 3)  # Pillow decodes it without complaint
    check = inspect_file(path)
    assert (check.status.value, check.problem) == ("error", "corrupt")
    assert check.detail.startswith("the JPEG data is damaged, so part of the image decodes as garbage (libjpeg: "
                                   "Corrupt JPEG data: ")
    assert "extraneous bytes before marker" in check.detail
    with pytest.raises(ImageDecodeError, match="corrupt .the JPEG data is damaged"):
        decode_image(path)
    assert "Corrupt JPEG" not in capfd.readouterr().err  # reported once, as the finding, not printed


@pytest.mark.parametrize("name", ["good.jpg", "progressive.jpg", "grey.jpg", "cmyk.jpg", "rotated.jpg"])
def test_sound_jpegs_of_every_kind_pass_the_data_check(tmp_path, name):
    path = badfiles.BAD_FILES[name][0](tmp_path / name)
    assert inspect_file(path).problem in ("", "cmyk", "exif_orientation")
    assert inspect_file(path, draft=False).problem == inspect_file(path).problem


def test_sixteen_bit_rgb_png_is_named_high_bit_depth(tmp_path):
    path = badfiles.rgb48_png(tmp_path / "rgb48.png")
    expected = [("high_bit_depth", "16-bit RGB image scaled to 8 bits")]
    assert [(f.problem.value, f.detail) for f in inspect_file(path).findings] == expected
    assert [(f.problem.value, f.detail) for f in read_header(path).findings] == expected


def test_a_text_file_under_an_image_name_is_named_text_whatever_its_characters(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("\u6c49\u5b57" * 2000, encoding="utf-8")  # a character is cut wherever the head read stops
    assert inspect_file(path).detail == "the file is text, not an image"


@pytest.mark.skipif(".avif" not in IMAGE_EXTENSIONS, reason="this Pillow does not read AVIF")
def test_avif_images_are_read_and_one_cut_short_is_named_truncated(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / label / f"{i}.avif")
    whole = (root / "cat" / "0.avif").read_bytes()
    (root / "cat" / "cut.avif").write_bytes(whole[:len(whole) // 2])
    manifest = scan(root, progress=False)
    assert len(manifest.usable) == 6 and not any("cannot read" in note for note in manifest.notes)
    check = inspect_file(root / "cat" / "cut.avif")
    assert check.problem == "truncated"
    assert check.detail.startswith(f"the file ends after {len(whole) // 2:,} bytes, but its ")
    assert check.detail.endswith(" box ends at byte {:,}: cut short".format(len(whole)))  # the pixels' box, 'mdat'
    read = inspect_file(root / "cat" / "0.avif")
    assert not read.findings and (read.width, read.height, read.channels) == (64, 64, 3)


def test_heic_photo_under_a_jpg_name_is_named_with_the_fix(tmp_path):
    check = inspect_file(badfiles.heic_named_jpg(tmp_path / "IMG_0001.jpg"))
    assert (check.problem, check.detail) == ("not_an_image", "the file is a HEIC image, a format imgclf cannot read; "
                                             "convert it to JPEG or PNG (e.g. with your photo app's export, or "
                                             "`heif-convert`)")


def test_a_lab_image_decodes_as_grey_as_it_does_as_rgb(tmp_path):
    from imgclf.prediction import resize_image

    path = tmp_path / "lab.tif"
    Image.new("RGB", (8, 8), (200, 30, 40)).convert("LAB").save(path)
    rgb, _ = decode_image(path, channels=3)
    grey, findings = decode_image(path, channels=1)
    assert grey.shape == (8, 8, 1) and not findings
    assert grey[0, 0, 0] == np.asarray(Image.fromarray(rgb).convert("L"))[0, 0]
    spec = ImageSpec(8, 8, 1, "stretch")
    assert (resize_image(Image.open(path), spec) == grey).all()  # a PIL image given to predict, as a file


def test_a_tiff_whose_strips_miss_rows_is_truncated_in_every_decode(tmp_path):
    path = badfiles.short_strip_tiff(tmp_path / "short.tif")
    with Image.open(path) as image:
        assert image.size == (32, 32)
        assert not np.asarray(image.convert("L"))[8:].any()  # Pillow alone: 24 black rows
    detail = "its strips hold 256 of its 1,024 pixels; the rest of the image would be black"
    check = inspect_file(path)
    assert (check.status.value, check.problem, check.detail) == ("error", "truncated", detail)
    for decode in (lambda: decode_image(path), lambda: load_image(path, size=(8, 8))):
        with pytest.raises(ImageDecodeError, match=detail):
            decode()
    ok = badfiles.write(tmp_path / "strips.tif", b"")
    Image.fromarray(np.arange(32 * 20 * 3, dtype=np.uint8).reshape(32, 20, 3)).save(ok, tiffinfo={278: 5})  # 7 strips, the last one short
    assert inspect_file(ok).status.value == "ok"


def test_blank_means_one_colour_as_training_sees_it(tmp_path):
    grey = badfiles.blank_png(tmp_path / "grey.png")
    assert inspect_file(grey).detail == "every pixel is 128: the image shows nothing to learn from"
    black = inspect_file(badfiles.black_jpeg(tmp_path / "black.jpg"))
    assert (black.problem, black.detail) == ("blank", "every pixel is (0, 0, 0): the image shows nothing to learn from")
    one_dot = np.zeros((16, 16, 3), np.uint8)
    one_dot[5, 7, 2] = 1  # one pixel one step bluer: not blank
    Image.fromarray(one_dot).save(tmp_path / "dot.png")
    assert inspect_file(tmp_path / "dot.png").status.value == "ok"
    assert read_header(grey).findings == ()  # only decoding the pixels shows it


def test_a_transparent_colour_is_composited_on_the_background_in_every_decode(tmp_path):
    path = badfiles.colour_key_png(tmp_path / "key.png")
    stored = np.asarray(Image.open(path).convert("RGB"))
    keyed = (stored == stored[0, 0]).all(axis=-1)
    decoded, findings = decode_image(path)
    assert (decoded[keyed] == 255).all() and (decoded[~keyed] == stored[~keyed]).all()
    assert [f.problem for f in findings] == [ImageProblem.ALPHA] and "transparent colour" in findings[0].detail
    _, pixels, _ = scan_and_load(path, size=(16, 16))
    assert np.array_equal(pixels, decoded)
    grey, _ = decode_image(path, channels=1)
    assert (grey[keyed] == 255).all()


@pytest.mark.parametrize("bits", [1, 2, 4, 16])
def test_the_transparent_level_of_a_grey_png_of_any_depth_is_composited(tmp_path, bits):
    levels = np.random.default_rng(bits).integers(0, 2**bits, size=(12, 16))
    transparent = levels[0, 0] = (2**bits - 1) // 3  # 0 of 1 bit, else a level that 8 bits show otherwise
    path = badfiles.write(tmp_path / "key.png", badfiles.grey_png_bytes(levels, bits, transparent))
    shown = levels >> 8 if bits == 16 else levels * 255 // (2**bits - 1)  # as Pillow scales the levels
    keyed = levels == transparent
    decoded, findings = decode_image(path, channels=1)
    assert (decoded[..., 0][keyed] == 255).all() and np.array_equal(decoded[..., 0][~keyed], shown[~keyed])
    assert ImageProblem.ALPHA in [f.problem for f in findings]
    _, pixels, _ = scan_and_load(path, size=(12, 16), channels=1)
    assert np.array_equal(pixels, decoded)
    assert np.array_equal(decode_image(path)[0][..., 1], decoded[..., 0])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_an_oriented_tiff_is_shown_as_an_oriented_png_is(tmp_path, orientation):
    tiff = badfiles.oriented_tiff(tmp_path / "photo.tif", orientation)
    exif = Image.Exif()
    exif[0x0112] = orientation
    png = tmp_path / "photo.png"
    badfiles._rgb((24, 16)).save(png, exif=exif.tobytes())
    shown, findings = decode_image(tiff)
    assert np.array_equal(shown, decode_image(png)[0])
    assert np.array_equal(load_image(tiff, size=(10, 12)), load_image(png, size=(10, 12)))
    sideways = orientation >= 5
    size = (16, 24) if sideways else (24, 16)
    check, header = inspect_file(tiff), read_header(tiff)
    assert (check.width, check.height) == (header.width, header.height) == size
    expected = "exif_orientation" if orientation != 1 else ""
    assert check.problem == ";".join(f.problem.value for f in header.findings) == expected


def test_odd_grey_files_are_grey(tmp_path):
    premultiplied = badfiles.premultiplied_la_tiff(tmp_path / "scan.tif")
    assert Image.open(premultiplied).mode == "La"
    assert inspect_file(premultiplied).channels == read_header(premultiplied).channels == 1
    expected = np.asarray(badfiles._rgb(seed=5).convert("L"))[..., None]  # its alpha is opaque everywhere
    assert np.array_equal(load_image(premultiplied, size=(16, 16), channels=1), expected)
    deep = badfiles.grey_alpha_48_png(tmp_path / "deep.png")
    assert Image.open(deep).mode == "RGBA"  # as Pillow opens 16-bit grey and alpha
    assert inspect_file(deep).channels == read_header(deep).channels == 1


def test_a_fine_pattern_that_averages_out_in_the_audits_draft_is_not_blank(tmp_path):
    checks = ((np.indices((64, 64)).sum(axis=0) % 2) * 255).astype(np.uint8)
    Image.fromarray(checks).save(tmp_path / "checks.jpg", quality=100)
    assert inspect_file(tmp_path / "checks.jpg").problem == ""


def test_a_tiff_pillow_cannot_read_is_not_only_called_damaged(tmp_path):
    import cv2

    path = str(tmp_path / "float_rgb.tif")
    assert cv2.imwrite(path, np.random.default_rng(0).random((16, 16, 3), np.float32))  # sound, floating-point RGB
    check = inspect_file(path)
    assert check.status.value == "error" and "a kind of TIFF that Pillow does not read" in check.detail
    assert "save it as an 8- or 16-bit TIFF or a PNG" in check.detail


def test_the_scan_reads_a_png_whose_exif_comes_after_its_pixels(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    data = badfiles._png_bytes(badfiles._rgb((40, 24)))
    end = data.index(b"IEND") - 4
    exif_chunk = badfiles.png_chunk(b"eXIf", exif.tobytes()[6:])  # the TIFF data, after "Exif\0\0"
    path = badfiles.write(tmp_path / "portrait.png", data[:end] + exif_chunk + data[end:])
    assert data.index(b"IDAT") < path.read_bytes().index(b"eXIf")
    scanned, audited = check_header(path), inspect_file(path)
    assert (scanned.width, scanned.height, scanned.problem) == (audited.width, audited.height, audited.problem) \
        == (24, 40, "exif_orientation")


def test_findings_of_16_bit_tiffs_and_opaque_palettes(tmp_path):
    import cv2

    deep = str(tmp_path / "rgb16.tif")
    cv2.imwrite(deep, np.random.default_rng(0).integers(0, 65536, (16, 16, 3)).astype(np.uint16))
    assert inspect_file(deep).problem == check_header(deep).problem == "high_bit_depth"
    palette = badfiles._rgb().convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    palette.save(tmp_path / "opaque.png", transparency=bytes([255] * 4))  # a table of opaque entries only
    assert Image.open(tmp_path / "opaque.png").info["transparency"] == bytes([255] * 4)
    assert inspect_file(tmp_path / "opaque.png").problem == check_header(tmp_path / "opaque.png").problem == ""


@pytest.mark.parametrize("image_format, options", [("WEBP", {}), ("WEBP", {"lossless": True}),
                                                   ("TIFF", {"compression": "tiff_lzw"})])
def test_a_webp_or_tiff_cut_short_is_truncated_by_the_size_its_header_gives(tmp_path, image_format, options):
    buffer = io.BytesIO()
    badfiles._rgb((64, 64)).save(buffer, image_format, **options)
    data = buffer.getvalue()
    path = tmp_path / f"cut.{image_format.lower()}"
    path.write_bytes(data[:len(data) // 2])
    for check in (inspect_file(path), check_header(path)):
        assert (check.status.value, check.problem) == ("error", "truncated")
    assert inspect_file(path).detail.startswith(f"the file ends after {len(data) // 2:,} bytes, ")
    assert inspect_file(path).detail.endswith(": cut short")

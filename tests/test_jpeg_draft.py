"""The audit decodes JPEGs in draft mode (1/8 scale) and still finds every damaged file a full decode finds."""

import io

import numpy as np
import pytest
from PIL import Image

import imgclf
from imgclf.images import inspect_file

from badfiles import BAD_FILES, write


def photo_bytes(width=320, height=256, seed=0, **options) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90, **options)
    return buffer.getvalue()


def damaged_jpegs() -> dict[str, bytes]:
    """Cut at several points, and with the compressed data overwritten (garbage or zeros) at several places."""
    data = photo_bytes()
    start = data.index(b"\xff\xda")  # start of scan: the entropy-coded data follows
    cases = {"whole": data, "no end marker": data[:-2], "progressive": photo_bytes(progressive=True)}
    for fraction in (0.3, 0.6, 0.9, 0.99):
        cases[f"cut at {fraction:.0%}"] = data[:int(len(data) * fraction)]
        cases[f"progressive cut at {fraction:.0%}"] = cases["progressive"][:int(len(cases["progressive"]) * fraction)]
    rng = np.random.default_rng(1)
    for fraction in (0.2, 0.5, 0.8):
        at = start + int((len(data) - start) * fraction)
        garbled, zeroed = bytearray(data), bytearray(data)
        garbled[at:at + 200] = rng.integers(0, 256, 200, dtype=np.uint8).tobytes()
        zeroed[at:at + 2000] = bytes(2000)
        cases[f"garbage at {fraction:.0%}"], cases[f"zeros at {fraction:.0%}"] = bytes(garbled), bytes(zeroed)
    return cases


@pytest.mark.parametrize("name", list(damaged_jpegs()))
def test_draft_and_full_decodes_agree_on_damaged_jpegs(tmp_path, name):
    path = write(tmp_path / "photo.jpg", damaged_jpegs()[name])
    assert inspect_file(path, draft=True) == inspect_file(path, draft=False)


def test_files_cut_short_are_still_found_truncated_in_draft_mode(tmp_path):
    for name, data in damaged_jpegs().items():
        if "cut" in name or name == "no end marker":
            assert inspect_file(write(tmp_path / "cut.jpg", data)).problem == "truncated", name


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_draft_and_full_decodes_agree_on_every_bad_file(tmp_path, name):
    writer, status, problem = BAD_FILES[name]
    path = writer(tmp_path / name)
    draft, full = inspect_file(path, draft=True), inspect_file(path, draft=False)
    assert draft == full
    assert (draft.status.value, draft.problem) == (status, problem)


def test_draft_mode_reports_the_full_size_after_exif_orientation(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90 degrees
    path = write(tmp_path / "tall.jpg", photo_bytes(200, 120, exif=exif.tobytes()))
    check = inspect_file(path)
    assert (check.width, check.height) == (120, 200) and check.problem == "exif_orientation"


def test_audit_finds_a_photo_cut_short_among_good_ones(tmp_path):
    root = tmp_path / "data"
    for label in ("a", "b"):
        for index in range(3):
            write(root / label / f"{index}.jpg", photo_bytes(seed=index + (10 if label == "a" else 20)))
    cut = photo_bytes(seed=99)
    write(root / "a" / "cut.jpg", cut[:len(cut) * 2 // 3])
    result = imgclf.audit(imgclf.scan(root, workers=1, progress=False), workers=1, progress=False)
    bad = [(e.path.rsplit("/", 1)[-1], e.problem) for e in result.manifest.entries if not e.usable]
    assert bad == [("cut.jpg", "truncated")]

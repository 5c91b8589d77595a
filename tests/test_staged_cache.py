"""Decoding while scanning: each file read once, the same manifest, the same cached images, the same failures."""

import gc
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import imgclf
import imgclf.cache as cache
from imgclf.cache import StagedImages, scan_is_cached
from imgclf.config import DataConfig, ImageSpec
from imgclf.files import process_tag
from imgclf.images import ImageDecodeError, check_header, load_image, scan_and_load
from imgclf.manifest import scan
from imgclf.pipeline import load_split

from badfiles import BAD_FILES
from conftest import make_class_folder

SPEC = ImageSpec(12, 10, 3, "stretch")


@pytest.fixture
def dirty(tmp_path):
    """Three classes of JPEGs and PNGs with every kind of bad file among them."""
    root = make_class_folder(tmp_path / "data", per_class=8, size=16)
    make_class_folder(root, per_class=4, size=20, fmt="jpg", start=8)
    for name, (writer, _, _) in BAD_FILES.items():
        writer(root / "circle" / name)
    return root


def fields(manifest):
    return [(e.path, e.label, e.split, e.sha1, e.width, e.height, e.channels, e.status, e.problem, e.detail)
            for e in manifest.entries]


def forbid_decoding(monkeypatch):
    """Any decode into the cache after the scan fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("a file was opened again after the scan")
    monkeypatch.setattr(cache, "load_image", refuse)


def test_scan_and_load_reports_what_a_scan_and_a_decode_report_for_every_kind_of_file(tmp_path):
    for name, (writer, _, _) in BAD_FILES.items():
        path = str(writer(tmp_path / name))
        check, pixels, error = scan_and_load(path, size=(12, 10), channels=3)
        assert check == check_header(path, limits=cache.ImageLimits()), name
        try:
            expected = load_image(path, size=(12, 10), channels=3)
        except ImageDecodeError as failure:
            expected = failure
        if check.status.value == "error":
            assert pixels is None and error is None, name  # the scan already rejects the file
        elif isinstance(expected, ImageDecodeError):
            assert pixels is None and (error.problem, error.detail) == (expected.problem, expected.detail), name
        else:
            assert error is None and np.array_equal(pixels, expected), name


@pytest.mark.parametrize("resize", ["stretch", "pad", "crop"])
def test_a_staged_scan_gives_the_same_manifest_images_and_failures_without_opening_files_again(
        dirty, tmp_path, monkeypatch, resize):
    spec = ImageSpec(12, 10, 3, resize)
    broken = dirty / "square" / "cut.jpg"
    Image.fromarray(np.random.default_rng(7).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(broken, quality=90)
    broken.write_bytes(broken.read_bytes()[:-600])  # a sound header: found only by decoding
    plain = scan(dirty, workers=1, progress=False)
    staged = scan(dirty, workers=1, progress=False, cache_spec=spec, cache_dir=tmp_path / "staged")
    assert staged.staged is not None and fields(staged) == fields(plain)

    expected = {split: load_split(plain, split, plain.classes, spec, data=DataConfig(cache_dir=str(tmp_path / "plain")),
                                  progress=False) for split in ("train", "val", "test")}
    staging = staged.staged.path
    forbid_decoding(monkeypatch)
    for split in ("train", "val", "test"):
        got = load_split(staged, split, staged.classes, spec, data=DataConfig(cache_dir=str(tmp_path / "staged")),
                         progress=False)
        assert [e.path for e in got.entries] == [e.path for e in expected[split].entries]
        assert np.array_equal(np.asarray(got.images), np.asarray(expected[split].images)), split
    assert not staging.exists()  # removed once every readable file went to its split's cache file
    # The file cut short is flagged as the decode after a plain scan flags it.
    assert fields(staged) == fields(plain)
    assert next(e for e in staged.entries if e.path == str(broken)).problem == "truncated"


def test_one_split_holding_every_file_takes_the_staging_file_itself(tmp_path, monkeypatch):
    root = make_class_folder(tmp_path / "data", per_class=5, size=16)
    manifest = scan(root, val=0.0, test=0.0, workers=1, progress=False, cache_spec=SPEC, cache_dir=tmp_path / "c")
    staging = manifest.staged.path
    forbid_decoding(monkeypatch)
    split = load_split(manifest, "train", manifest.classes, SPEC, data=DataConfig(cache_dir=str(tmp_path / "c")),
                       progress=False)
    assert not staging.exists() and manifest.staged.path is None
    paths = [e.path for e in split.entries]
    assert np.array_equal(np.asarray(split.images), np.stack([load_image(p, size=(12, 10)) for p in paths]))


def test_gray_images_staged_in_rgb_serve_a_grayscale_spec_exactly(tmp_path, monkeypatch):
    root = make_class_folder(tmp_path / "data", per_class=6, size=16)
    for path in list(root.rglob("*.png"))[::2]:  # gray PNGs and gray JPEGs
        Image.open(path).convert("L").save(path.with_suffix(".jpg"), quality=90)
        Image.open(path).convert("L").save(path)
    for path in root.rglob("*.png"):
        Image.open(path).convert("L").save(path)
    manifest = scan(root, workers=1, progress=False, cache_spec=SPEC, cache_dir=tmp_path / "c")
    gray = ImageSpec(12, 10, 1, "stretch")
    forbid_decoding(monkeypatch)
    for split in ("train", "val", "test"):
        got = load_split(manifest, split, manifest.classes, gray, data=DataConfig(cache_dir=str(tmp_path / "c")),
                         progress=False)
        expected = np.stack([load_image(e.path, size=(12, 10), channels=1) for e in got.entries])
        assert np.array_equal(np.asarray(got.images), expected)


def test_a_spec_the_staged_images_cannot_serve_is_decoded_as_usual(tmp_path):
    root = make_class_folder(tmp_path / "data", per_class=6, size=16)  # RGB images
    manifest = scan(root, workers=1, progress=False, cache_spec=SPEC, cache_dir=tmp_path / "c")
    for spec in (ImageSpec(12, 10, 1, "stretch"), ImageSpec(8, 8, 3, "stretch"), ImageSpec(12, 10, 3, "pad")):
        got = load_split(manifest, "train", manifest.classes, spec, data=DataConfig(cache_dir=str(tmp_path / "c")),
                         progress=False)
        expected = np.stack([load_image(e.path, size=(spec.height, spec.width), channels=spec.channels,
                                        resize=spec.resize) for e in got.entries])
        assert np.array_equal(np.asarray(got.images), expected)


def test_a_second_scan_of_a_cached_folder_only_hashes(tmp_path):
    root = make_class_folder(tmp_path / "data", per_class=6, size=16)
    first = scan(root, workers=1, progress=False, cache_spec=SPEC, cache_dir=tmp_path / "c")
    assert not scan_is_cached(root, SPEC, cache.ImageLimits(), tmp_path / "c")
    for split in ("train", "val", "test"):
        load_split(first, split, first.classes, SPEC, data=DataConfig(cache_dir=str(tmp_path / "c")), progress=False)
    assert scan_is_cached(root, SPEC, cache.ImageLimits(), tmp_path / "c")
    second = scan(root, workers=1, progress=False, cache_spec=SPEC, cache_dir=tmp_path / "c")
    assert second.staged is None and fields(second) == fields(first)
    # A cache file removed since: the next scan stages again.
    next((tmp_path / "c").glob("*.npy")).unlink()
    assert scan(root, workers=1, progress=False, cache_spec=SPEC, cache_dir=tmp_path / "c").staged is not None


def test_a_scan_record_that_cannot_be_written_does_not_stop_the_images_from_loading(tmp_path):
    root = make_class_folder(tmp_path / "data", per_class=6, size=16)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "scans").write_text("a file where the folder of scan records belongs")
    first = scan(root, workers=1, progress=False, cache_spec=SPEC, cache_dir=tmp_path / "c")
    images = load_split(first, "train", first.classes, SPEC, data=DataConfig(cache_dir=str(tmp_path / "c")),
                        progress=False)
    assert len(images) > 0 and not scan_is_cached(root, SPEC, cache.ImageLimits(), tmp_path / "c")


def test_the_staging_file_goes_with_the_manifest_and_one_of_a_killed_process_with_the_next_scan(tmp_path):
    root = make_class_folder(tmp_path / "data", per_class=4, size=16)
    manifest = scan(root, workers=1, progress=False, cache_spec=SPEC, cache_dir=tmp_path / "c")
    staging = manifest.staged.path
    assert staging.exists()
    del manifest
    gc.collect()
    assert not staging.exists()
    # A process killed while it held a staging file leaves it; the next scan on this host removes it.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = process_tag().rsplit("-", 1)[0]
    left = tmp_path / "c" / f".staging-{host}-{int(dead.stdout)}.abcd1234.npy"
    left.write_bytes(b"\0" * 64)
    alive = tmp_path / "c" / f".staging-{host}-{os.getppid()}.abcd1234.npy"
    alive.write_bytes(b"\0" * 64)
    StagedImages([], SPEC, cache.ImageLimits(), tmp_path / "c").close()
    assert not left.exists() and alive.exists()


def test_train_with_a_known_size_reads_each_file_once(tmp_path, monkeypatch):
    root = make_class_folder(tmp_path / "data", per_class=8, size=16)
    forbid_decoding(monkeypatch)
    run = imgclf.train(root, out=tmp_path / "run", model="mlp", epochs=1, image_size=(12, 10), color_mode="auto",
                       verbose=0, progress=False)
    assert (run.path / "model.keras").exists()


def test_a_split_with_a_broken_file_keeps_its_other_rows_in_a_cache_file_not_in_memory(tmp_path):
    root = make_class_folder(tmp_path / "data", per_class=6, size=16)
    manifest = scan(root, val=0.0, test=0.0, workers=1, progress=False)
    broken = manifest.split("train")[3]
    with open(broken.path, "r+b") as handle:  # cut short after the scan: found by the decode into the cache
        handle.truncate(os.path.getsize(broken.path) // 2)
    split = load_split(manifest, "train", manifest.classes, SPEC, data=DataConfig(cache_dir=str(tmp_path / "c")),
                       progress=False)
    assert isinstance(split.images, np.memmap) and len(split) == 17 and broken.problem == "truncated"
    expected = np.stack([load_image(e.path, size=(12, 10)) for e in split.entries])
    assert np.array_equal(np.asarray(split.images), expected)

"""The decoded-image cache: a damaged cache file is detected and decoded again, never read as images."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import imgclf.cache as cache
from imgclf.cache import check_array_file, decode_to_cache
from imgclf.config import ImageSpec
from imgclf.images import load_image

from badfiles import truncated_png
from conftest import make_class_folder

SPEC = ImageSpec(12, 10, 3, "stretch")


@pytest.fixture
def cached(tmp_path):
    """Real images decoded into a real cache file, with one file that fails; and what they decode to."""
    folder = make_class_folder(tmp_path / "data", per_class=4, size=16)
    paths = sorted(str(p) for p in folder.rglob("*.png"))
    paths.append(str(truncated_png(tmp_path / "data" / "circle" / "cut.png")))
    sha1s = [f"{i:040x}" for i in range(len(paths))]
    images, failures = decode_to_cache(paths, sha1s, SPEC, cache_dir=tmp_path / "cache", workers=1, progress=False)
    expected = np.array(images)
    assert [f.path for f in failures] == [paths[-1]]
    assert np.array_equal(expected[0], load_image(paths[0], size=(12, 10)))
    array_file, = (tmp_path / "cache").glob("*.npy")
    return paths, sha1s, expected, failures, array_file


def header_length(path) -> int:
    with open(path, "rb") as handle:
        np.lib.format.read_magic(handle)
        np.lib.format.read_array_header_1_0(handle)
        return handle.tell()


def truncate_data(path):
    os.truncate(path, os.path.getsize(path) - 100)


def truncate_to_header(path):
    os.truncate(path, header_length(path))


def cut_in_header(path):
    os.truncate(path, 30)


def empty(path):
    os.truncate(path, 0)


def flip_shape_digit(path):
    data = bytearray(path.read_bytes())
    start = data.index(b"'shape': (") + len(b"'shape': (")
    data[start] = ord("7") if data[start] != ord("7") else ord("8")  # (13, ...) becomes (73, ...) or (83, ...)
    path.write_bytes(bytes(data))


def flip_dtype(path):
    data = bytearray(path.read_bytes())
    start = data.index(b"|u1")
    data[start:start + 3] = b"<i2"
    path.write_bytes(bytes(data))


def flip_magic(path):
    data = bytearray(path.read_bytes())
    data[1] ^= 0xFF
    path.write_bytes(bytes(data))


def garble_header(path):
    data = bytearray(path.read_bytes())
    start = data.index(b"{")
    data[start:start + 12] = b"\x00\xff" * 6
    path.write_bytes(bytes(data))


def extra_bytes(path):
    with open(path, "ab") as handle:
        handle.write(b"\0" * 64)


@pytest.mark.parametrize("damage", [truncate_data, truncate_to_header, cut_in_header, empty, flip_shape_digit,
                                    flip_dtype, flip_magic, garble_header, extra_bytes])
def test_a_damaged_cache_file_is_decoded_again(cached, damage, tmp_path):
    paths, sha1s, expected, failures, array_file = cached
    damage(array_file)
    assert check_array_file(array_file, expected.shape)
    with pytest.warns(UserWarning, match=f"The decoded-image cache {array_file} is damaged"):
        images, again = decode_to_cache(paths, sha1s, SPEC, cache_dir=tmp_path / "cache", workers=1, progress=False)
    assert images.shape == expected.shape and np.array_equal(images, expected)
    assert again == failures
    assert check_array_file(array_file, expected.shape) == ""
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted([array_file.name, array_file.stem + ".failures.json"])


@pytest.mark.parametrize("text", ["", "[[0, 'truncated'", '{"rows": []}', "[[99, \"truncated\", \"\"]]", "[[0]]"])
def test_a_damaged_failures_file_is_decoded_again(cached, text, tmp_path):
    paths, sha1s, expected, failures, array_file = cached
    array_file.with_suffix(".failures.json").write_text(text)
    with pytest.warns(UserWarning, match="failures.json"):
        images, again = decode_to_cache(paths, sha1s, SPEC, cache_dir=tmp_path / "cache", workers=1, progress=False)
    assert np.array_equal(images, expected) and again == failures


@pytest.mark.parametrize("replaced", [".npy", ".failures.json"])
def test_a_folder_in_the_place_of_a_cache_file_is_removed_and_the_images_decoded_again(cached, replaced, tmp_path):
    paths, sha1s, expected, failures, array_file = cached
    target = array_file.with_suffix(replaced)
    target.unlink()
    (target / "inside").mkdir(parents=True)
    if replaced == ".npy":
        array_file.with_suffix(".failures.json").unlink()  # a cache left incomplete on purpose (a file unreadable)
    with pytest.warns(UserWarning, match="is damaged"):
        images, again = decode_to_cache(paths, sha1s, SPEC, cache_dir=tmp_path / "cache", workers=1, progress=False)
    assert np.array_equal(images, expected) and again == failures and target.is_file()


def test_a_cache_never_completed_is_decoded_again_without_a_warning(cached, tmp_path, recwarn):
    paths, sha1s, expected, failures, array_file = cached
    array_file.with_suffix(".failures.json").unlink()  # killed after the rename, before the failures file
    truncate_data(array_file)
    images, again = decode_to_cache(paths, sha1s, SPEC, cache_dir=tmp_path / "cache", workers=1, progress=False)
    assert np.array_equal(images, expected) and again == failures
    assert not [w for w in recwarn if "damaged" in str(w.message)]


def test_a_sound_cache_is_read_without_decoding(cached, tmp_path, monkeypatch):
    paths, sha1s, expected, failures, array_file = cached

    def refuse(*args, **kwargs):
        raise AssertionError("a sound cache file was decoded again")

    monkeypatch.setattr(cache, "parallel_map", refuse)
    images, again = decode_to_cache(paths, sha1s, SPEC, cache_dir=tmp_path / "cache", workers=1, progress=False)
    assert np.array_equal(images, expected) and again == failures
    assert json.loads(array_file.with_suffix(".failures.json").read_text())[0][0] == len(paths) - 1


@pytest.mark.parametrize("value, expected", [("/data/cache", "/data/cache/imgclf"), ("", "~/.cache/imgclf"),
                                             ("relcache", "~/.cache/imgclf"), (None, "~/.cache/imgclf")])
def test_the_cache_folder_follows_xdg_cache_home_unless_it_is_relative(value, expected, monkeypatch):
    if value is None:
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_CACHE_HOME", value)
    assert cache.default_cache_dir() == Path(os.path.expanduser(expected))


def test_a_cache_dir_of_a_config_starting_with_a_tilde_is_in_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "a.png"
    Image.new("RGB", (8, 8), (10, 20, 30)).save(path)
    decode_to_cache([str(path)], ["0" * 40], SPEC, cache_dir="~/imgclf-cache", workers=1, progress=False)
    assert len(list((tmp_path / "home" / "imgclf-cache").glob("*.npy"))) == 1
    assert not (tmp_path / "~").exists()

"""Tests of the dataset recipes in datasets/ (digits, fashion_mnist, synthetic)."""

from __future__ import annotations

import gzip
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from datasets import digits, fashion_mnist, synthetic
from datasets._common import STAMP


def _files(root: Path) -> dict[str, bytes]:
    """Relative path -> content of every visible file under `root`."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    }


def _hidden(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*") if p.name != STAMP)


# Recipes in general -----------------------------------------------------------


def test_recipes_import_neither_imgclf_nor_tensorflow():
    code = (
        "import sys; from datasets import digits, fashion_mnist, synthetic; "
        "bad = [m for m in ('imgclf', 'tensorflow', 'keras') if m in sys.modules]; "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("module", [digits, fashion_mnist, synthetic])
def test_help_shows_an_example(module, capsys):
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "example:" in out and f"datasets/{module.__name__.rsplit('.', 1)[-1]}.py" in out


def test_scripts_run_from_the_command_line(tmp_path):
    out = tmp_path / "synth"
    result = subprocess.run(
        [sys.executable, "datasets/synthetic.py", str(out), "--classes", "2", "--per-class", "3"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "6 images in 2 classes" in result.stdout
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["class_0", "class_1"]


# digits -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits") / "out"
    return out, digits.build(out)


def test_digits_writes_1797_pngs_in_10_folders(digits_out):
    out, summary = digits_out
    from sklearn.datasets import load_digits

    target = load_digits().target
    assert summary["images"] == 1797 and summary["written"] == 1797
    assert summary["classes"] == [str(d) for d in range(10)]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == summary["classes"]
    assert sum(1 for _ in out.rglob("*.png")) == 1797
    for d in range(10):
        names = sorted(p.name for p in (out / str(d)).iterdir())
        assert names == [f"{i:04d}.png" for i in np.flatnonzero(target == d)]
        assert summary["counts"][str(d)] == len(names)
    assert _hidden(out) == []


def test_digits_pixels_are_scaled_from_0_16_to_0_255(digits_out):
    out, _ = digits_out
    from sklearn.datasets import load_digits

    data = load_digits()
    for index in (0, 1, 1796):
        image = Image.open(out / str(data.target[index]) / f"{index:04d}.png")
        assert image.format == "PNG" and image.mode == "L" and image.size == (8, 8)
        pixels = np.asarray(image)
        expected = [[round(v * 255 / 16) for v in row] for row in data.images[index]]
        assert pixels.tolist() == expected
    # Every value 0..16 maps as round(v * 255 / 16), 8 included.
    assert digits.scale_to_uint8(np.arange(17)).tolist() == [round(v * 255 / 16) for v in range(17)]


def test_digits_rerun_is_idempotent_and_checks_settings(digits_out):
    out, _ = digits_out
    before = _files(out)
    again = digits.build(out)
    assert again["written"] == 0 and again["skipped"] == 1797
    assert _files(out) == before
    with pytest.raises(FileExistsError, match="size: 8 before, 16 now.*--overwrite"):
        digits.build(out, size=16)


def test_digits_size_option_upscales(tmp_path, capsys):
    assert digits.main([str(tmp_path / "d16"), "--size", "16"]) == 0
    image = Image.open(tmp_path / "d16" / "0" / "0000.png")
    assert image.size == (16, 16) and image.mode == "L"
    assert "1797 images in 10 classes" in capsys.readouterr().out
    assert digits.main([str(tmp_path / "bad"), "--size", "0"]) == 1
    assert "size must be a positive integer" in capsys.readouterr().err


def test_recipes_refuse_a_folder_they_did_not_write(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty and was not written by this recipe"):
        synthetic.build(out, classes=2, per_class=3)
    with pytest.raises(FileExistsError, match="not empty"):
        synthetic.build(out, classes=2, per_class=3, overwrite=True)
    assert (out / "notes.txt").read_text() == "keep me"


def test_overwrite_deletes_only_the_images_of_the_earlier_build(tmp_path, capsys):
    out = tmp_path / "synth"
    assert synthetic.main([str(out), "--names", "a,b", "--per-class", "3", "--split"]) == 0
    (out / "NOTES.txt").write_text("my notes")
    (out / ".git").mkdir()
    (out / ".git" / "keep").write_text("x")
    (out / "runs").mkdir()
    (out / "runs" / "model.keras").write_text("precious")
    (out / "train" / "a" / "mine.txt").write_text("mine")
    assert synthetic.main([str(out), "--names", "c", "--per-class", "2", "--overwrite"]) == 0
    assert "2 images in 1 classes" in capsys.readouterr().out
    assert sorted(_files(out)) == ["NOTES.txt", "c/0000.png", "c/0001.png", "runs/model.keras", "train/a/mine.txt"]
    assert (out / ".git" / "keep").read_text() == "x" and (out / "runs" / "model.keras").read_text() == "precious"


def test_an_overwrite_stopped_while_it_deletes_leaves_a_build_marked_unfinished_that_the_command_finishes(
        tmp_path, capsys, monkeypatch):
    from datasets import _common
    from imgclf.manifest import interrupted_build

    out = tmp_path / "my data"
    assert synthetic.main([str(out), "--per-class", "4", "--sizes", "32x32"]) == 0
    built = _files(out)
    original, deleted = os.unlink, []

    def stopped_after_three(path, *args, **kwargs):
        if len(deleted) == 3:
            raise KeyboardInterrupt  # Ctrl-C, or a kill, half-way through the old images
        deleted.append(path)
        original(path, *args, **kwargs)

    monkeypatch.setattr(_common.os, "unlink", stopped_after_three)
    assert synthetic.main([str(out), "--per-class", "4", "--sizes", "48x48", "--overwrite"]) == 130
    assert capsys.readouterr().err == ("stopped: the images written so far are kept; run the same command again to "
                                       "finish the build\n")
    monkeypatch.setattr(_common.os, "unlink", original)
    assert len(_files(out)) == len(built) - 3
    # The earlier build is marked unfinished: imgclf's note gives the command that rebuilds it as it was.
    note = interrupted_build(out)
    assert note.endswith(f"run `python datasets/synthetic.py '{out}' --per-class 4 --sizes 32x32` to finish it")
    assert synthetic.main([str(out), "--per-class", "4", "--sizes", "32x32"]) == 0
    assert _files(out) == built and interrupted_build(out) is None


def test_overwrite_refuses_a_build_it_cannot_tell_apart(tmp_path):
    out = tmp_path / "synth"
    synthetic.build(out, classes=2, per_class=3)
    with pytest.raises(FileExistsError, match="built by the 'synthetic' recipe, not by 'digits'.*deletes nothing"):
        digits.build(out, overwrite=True)
    (out / STAMP).write_text("{not json")
    with pytest.raises(FileExistsError, match=f"has an unreadable {STAMP}.*Delete the earlier build yourself"):
        synthetic.build(out, classes=2, per_class=3, overwrite=True)
    assert len(_files(out)) == 6


# synthetic --------------------------------------------------------------------

ALL_MODES = "RGB,L,RGBA,P,CMYK"


def test_synthetic_is_deterministic_for_a_seed(tmp_path):
    options = dict(classes=3, per_class=8, modes=ALL_MODES, formats="jpg,png,bmp")
    first = synthetic.build(tmp_path / "a", seed=7, **options)
    synthetic.build(tmp_path / "b", seed=7, **options)
    synthetic.build(tmp_path / "c", seed=8, **options)
    a, b, c = (_files(tmp_path / name) for name in "abc")
    assert len(a) == first["images"] == 24
    assert a == b
    assert a != c
    assert sum(a[k] != c.get(k) for k in a) > len(a) // 2


def test_synthetic_honours_classes_per_class_and_names(tmp_path):
    summary = synthetic.build(tmp_path / "s", classes=5, per_class=7)
    assert summary["classes"] == [f"class_{i}" for i in range(5)]
    assert summary["counts"] == {f"class_{i}": 7 for i in range(5)}
    for i in range(5):
        assert len(list((tmp_path / "s" / f"class_{i}").iterdir())) == 7

    named = synthetic.build(tmp_path / "n", names="cat,dog,bird", per_class=2)
    assert named["classes"] == ["cat", "dog", "bird"]
    assert sorted(p.name for p in (tmp_path / "n").iterdir() if not p.name.startswith(".")) == ["bird", "cat", "dog"]
    with pytest.raises(ValueError, match="classes=2 but 3 names"):
        synthetic.build(tmp_path / "x", classes=2, names="a,b,c")


def test_synthetic_split_layout(tmp_path):
    summary = synthetic.build(tmp_path / "s", classes=3, per_class=20, split=True)
    assert sorted(p.name for p in (tmp_path / "s").iterdir() if not p.name.startswith(".")) == ["test", "train", "val"]
    expected = {"train": 14, "val": 3, "test": 3}
    for split, n in expected.items():
        for name in summary["classes"]:
            assert len(list((tmp_path / "s" / split / name).iterdir())) == n
            assert summary["counts"][split][name] == n
    assert summary["images"] == 60
    for name in summary["classes"]:
        indices = sorted(p.stem for p in (tmp_path / "s").glob(f"*/{name}/*"))
        assert indices == [f"{i:04d}" for i in range(20)]  # each index in exactly one split
    with pytest.raises(ValueError, match="at least 3 images per class"):
        synthetic.build(tmp_path / "t", per_class=2, split=True)


def test_synthetic_modes_and_formats_are_real(tmp_path):
    synthetic.build(tmp_path / "m", classes=3, per_class=12, modes=ALL_MODES, formats="jpg,png")
    seen = set()
    for path in (tmp_path / "m").rglob("*.*"):
        if path.name.startswith("."):
            continue
        with Image.open(path) as image:
            image.load()
            fmt, mode = image.format, image.mode
        assert fmt == {"jpg": "JPEG", "png": "PNG"}[path.suffix[1:]]
        assert mode in ALL_MODES.split(",")
        if mode == "CMYK":
            assert fmt == "JPEG"
        if mode in ("RGBA", "P"):
            assert fmt == "PNG"
        seen.add((fmt, mode))
    assert {mode for _, mode in seen} == set(ALL_MODES.split(","))
    assert ("JPEG", "CMYK") in seen and ("PNG", "RGBA") in seen and ("PNG", "P") in seen


def test_synthetic_single_mode_and_sizes(tmp_path):
    synthetic.build(tmp_path / "l", classes=2, per_class=6, modes="L", formats="png", sizes="20x10,10x30")
    for path in (tmp_path / "l").rglob("*.png"):
        image = Image.open(path)
        assert image.mode == "L" and image.size in {(20, 10), (10, 30)}


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(modes="RGBA", formats="jpg"), "mode RGBA cannot be stored in jpg"),
        (dict(modes="CMYK", formats="png"), "mode CMYK cannot be stored in png"),
        (dict(modes="HSV"), "unknown mode 'HSV'"),
        (dict(formats="gif"), "unknown format 'gif'"),
        (dict(difficulty=1.5), r"difficulty must lie in \[0, 1\]"),
        (dict(sizes="48by40"), "not WIDTHxHEIGHT"),
        (dict(sizes="4x4"), "out of range"),
        (dict(per_class=0), "per_class must be a positive"),
        (dict(names="a,../b"), "cannot be a folder name"),
        (dict(names="a,A"), "unique"),
    ],
)
def test_synthetic_rejects_bad_options_clearly(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        synthetic.build(tmp_path / "o", **options)
    assert not (tmp_path / "o").exists()


def test_synthetic_difficulty_controls_separability(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def score(difficulty: float) -> float:
        summary = synthetic.build(tmp_path / str(difficulty), classes=4, per_class=40, difficulty=difficulty, formats="png")
        features, labels = [], []
        for label, name in enumerate(summary["classes"]):
            for path in sorted((tmp_path / str(difficulty) / name).iterdir()):
                pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64).reshape(-1, 3) / 256
                hist = np.histogramdd(pixels, bins=4, range=[(0, 1)] * 3)[0].ravel() / len(pixels)
                features.append(hist)
                labels.append(label)
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
        return cross_val_score(model, np.array(features), labels, cv=4).mean()

    # Colour histograms alone see the hue, not the shape: near perfect at 0, chance (0.25) at 1.
    easy, hard = score(0.0), score(1.0)
    assert easy > 0.9
    assert hard < 0.45


def test_synthetic_rerun_skips_existing_and_cleans_temporary_files(tmp_path):
    out = tmp_path / "s"
    synthetic.build(out, classes=2, per_class=5)
    before = _files(out)
    leftover = out / "class_0" / ".0000.png.4242.tmp"
    leftover.write_bytes(b"half a png")
    first = sorted((out / "class_1").iterdir())[0]
    first.unlink()
    again = synthetic.build(out, classes=2, per_class=5)
    assert again["written"] == 1 and again["skipped"] == 9
    assert not leftover.exists()
    assert _files(out) == before
    with pytest.raises(FileExistsError, match="per_class: 5 before, 6 now"):
        synthetic.build(out, classes=2, per_class=6)
    rebuilt = synthetic.build(out, classes=2, per_class=6, overwrite=True)
    assert rebuilt["written"] == 12


def test_synthetic_failed_write_leaves_no_file(tmp_path, monkeypatch):
    original = Image.Image.save
    calls = []

    def failing_save(self, fp, *args, **kwargs):
        calls.append(fp)
        if len(calls) == 3:
            Path(fp).write_bytes(b"\x89PNG half")  # a partial file, then the crash
            raise OSError("disk full")
        return original(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        synthetic.build(tmp_path / "s", classes=1, per_class=5, formats="png")
    monkeypatch.setattr(Image.Image, "save", original)
    written = sorted(p.name for p in (tmp_path / "s" / "class_0").iterdir())
    assert written == ["0000.png", "0001.png"]  # no partial 0002.png, no temporary file
    for name in written:
        Image.open(tmp_path / "s" / "class_0" / name).load()
    assert synthetic.build(tmp_path / "s", classes=1, per_class=5, formats="png")["written"] == 3


def test_synthetic_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    assert synthetic.main([str(out), "--classes", "2", "--per-class", "4", "--split", "--modes", "CMYK,L", "--formats", "jpg"]) == 0
    assert "8 images in 2 classes" in capsys.readouterr().out
    assert {Image.open(p).mode for p in out.rglob("*.jpg")} <= {"CMYK", "L"}
    assert synthetic.main([str(tmp_path / "bad"), "--modes", "RGBA", "--formats", "jpg"]) == 1
    assert "error: mode RGBA cannot be stored in jpg" in capsys.readouterr().err


# fashion_mnist ----------------------------------------------------------------


def _write_idx(path: Path, array: np.ndarray, *, code: int = 0x08) -> Path:
    dtype = {0x08: ">u1", 0x0B: ">i2"}[code]
    data = bytes([0, 0, code, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes() + array.astype(dtype).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)
    return path


def _content_sha256(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha256(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data).hexdigest()


@pytest.fixture()
def tiny_source(tmp_path, monkeypatch):
    """Tiny Fashion-MNIST IDX files: train gzipped in a subfolder, t10k plain; `CHECKSUMS` are theirs."""
    rng = np.random.default_rng(0)
    source = tmp_path / "source"
    (source / "nested" / "deeper").mkdir(parents=True)
    data = {
        "train": (rng.integers(0, 256, (23, 28, 28)), np.arange(23) % 10),
        "t10k": (rng.integers(0, 256, (7, 28, 28)), np.array([9, 0, 0, 3, 5, 9, 1])),
    }
    images, labels = data["train"]
    _write_idx(source / "nested" / "train-images-idx3-ubyte.gz", images)
    _write_idx(source / "nested" / "deeper" / "train-labels-idx1-ubyte.gz", labels)
    images, labels = data["t10k"]
    _write_idx(source / "t10k-images-idx3-ubyte", images)
    _write_idx(source / "t10k-labels-idx1-ubyte", labels)
    checksums = {path.name.removesuffix(".gz"): _content_sha256(path)
                 for path in fashion_mnist.find_idx_files(source).values()}
    monkeypatch.setattr(fashion_mnist, "CHECKSUMS", checksums)
    return source, data


def test_read_idx_gzipped_and_plain(tmp_path):
    array = np.arange(2 * 3 * 4).reshape(2, 3, 4).astype(np.uint8)
    plain = fashion_mnist.read_idx(_write_idx(tmp_path / "a-idx3-ubyte", array))
    zipped = fashion_mnist.read_idx(_write_idx(tmp_path / "b-idx3-ubyte.gz", array))
    assert plain.dtype == zipped.dtype == np.uint8
    assert plain.shape == zipped.shape == (2, 3, 4)
    assert np.array_equal(plain, array) and np.array_equal(zipped, array)
    wide = fashion_mnist.read_idx(_write_idx(tmp_path / "c", np.array([-2, 300, 7]), code=0x0B))
    assert wide.tolist() == [-2, 300, 7] and wide.dtype.isnative


def test_read_idx_rejects_damaged_files(tmp_path):
    good = _write_idx(tmp_path / "x-idx1-ubyte", np.arange(10))
    truncated = tmp_path / "t-idx1-ubyte"
    truncated.write_bytes(good.read_bytes()[:-3])
    with pytest.raises(ValueError, match="truncated or damaged"):
        fashion_mnist.read_idx(truncated)
    junk = tmp_path / "junk"
    junk.write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(ValueError, match="not an IDX file"):
        fashion_mnist.read_idx(junk)
    broken_gz = tmp_path / "broken.gz"
    broken_gz.write_bytes(gzip.compress(good.read_bytes())[:-10])
    with pytest.raises(ValueError, match="cannot be read as gzip"):
        fashion_mnist.read_idx(broken_gz)


def test_fashion_mnist_writes_the_presplit_tree(tiny_source, tmp_path):
    source, data = tiny_source
    out = tmp_path / "fm"
    summary = fashion_mnist.build(out, source=source, download=False, workers=1)
    assert summary["images"] == 30 and summary["written"] == 30
    assert summary["classes"] == list(fashion_mnist.CLASSES)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["test", "train"]
    for split, stem in (("train", "train"), ("test", "t10k")):
        images, labels = data[stem]
        assert sorted(p.name for p in (out / split).iterdir()) == sorted(fashion_mnist.CLASSES)
        assert summary["counts"][split] == {name: int(np.sum(labels == c)) for c, name in enumerate(fashion_mnist.CLASSES)}
        for index, (pixels, label) in enumerate(zip(images, labels)):
            image = Image.open(out / split / fashion_mnist.CLASSES[label] / f"{index:05d}.png")
            assert image.format == "PNG" and image.mode == "L" and image.size == (28, 28)
            assert np.array_equal(np.asarray(image), pixels)
    assert sum(1 for _ in out.rglob("*.png")) == 30
    assert _hidden(out) == []
    again = fashion_mnist.build(out, source=source, download=False)
    assert again["written"] == 0 and again["skipped"] == 30


def test_fashion_mnist_limit_and_worker_processes(tiny_source, tmp_path, monkeypatch):
    source, data = tiny_source
    monkeypatch.setattr(fashion_mnist, "_CHUNK", 4)  # several chunks, so the pool is used
    summary = fashion_mnist.build(tmp_path / "fm", source=source, download=False, limit=10, workers=2)
    assert summary["images"] == 17  # 10 of 23 train, all 7 test
    train = sorted(p.name for p in (tmp_path / "fm" / "train").rglob("*.png"))
    assert train == [f"{i:05d}.png" for i in range(10)]
    assert sum(summary["counts"]["test"].values()) == 7
    with pytest.raises(FileExistsError, match="limit: 10 before, None now"):
        fashion_mnist.build(tmp_path / "fm", source=source, download=False)


def test_fashion_mnist_missing_source_without_download_says_how_to_fix(tmp_path, capsys):
    missing = tmp_path / "no-such-dir"
    cache = tmp_path / "cache"
    code = fashion_mnist.main([str(tmp_path / "out"), "--source", str(missing), "--cache", str(cache), "--no-download"])
    assert code == 1
    err = capsys.readouterr().err
    assert str(missing) in err and "folder does not exist" in err
    assert "apt-get install dataset-fashion-mnist" in err
    assert "--source DIR" in err and "--no-download" in err
    assert not (tmp_path / "out").exists() and not cache.exists()


def test_fashion_mnist_default_source_and_partial_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "DEFAULT_SOURCE", tmp_path / "usr-share")
    partial = tmp_path / "cache"
    partial.mkdir()
    _write_idx(partial / "train-labels-idx1-ubyte", np.arange(3))
    with pytest.raises(FileNotFoundError) as error:
        fashion_mnist.locate(cache=partial, download=False)
    message = str(error.value)
    assert str(tmp_path / "usr-share") in message
    assert "lacks train-images-idx3-ubyte(.gz), t10k-images-idx3-ubyte(.gz), t10k-labels-idx1-ubyte(.gz)" in message


def test_fashion_mnist_downloads_into_the_cache(tiny_source, tmp_path):
    source, _ = tiny_source
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for path in fashion_mnist.find_idx_files(source).values():
        content = path.read_bytes()
        name = path.name if path.name.endswith(".gz") else path.name + ".gz"
        (mirror / name).write_bytes(content if path.name.endswith(".gz") else gzip.compress(content))
    cache = tmp_path / "cache"
    messages = []
    found = fashion_mnist.locate(
        tmp_path / "absent", cache=cache, mirrors=["file:///nonexistent/", mirror.as_uri() + "/"], timeout=2, log=messages.append
    )
    assert sorted(p.name for p in cache.iterdir()) == sorted(p.name for p in mirror.iterdir())
    assert all(path.parent == cache for path in found.values())
    for name in os.listdir(mirror):
        assert hashlib.sha1((cache / name).read_bytes()).digest() == hashlib.sha1((mirror / name).read_bytes()).digest()
    # Found in the cache next time, without downloading.
    assert fashion_mnist.locate(tmp_path / "absent", cache=cache, download=False) == found


def test_fashion_mnist_progress_bar_only_on_a_terminal(tiny_source, tmp_path, capsys, monkeypatch):
    source, _ = tiny_source
    assert fashion_mnist.main([str(tmp_path / "piped"), "--source", str(source), "--no-download", "--workers", "1"]) == 0
    err = capsys.readouterr().err
    assert "writing PNGs" not in err and "it/s" not in err and "img/s" not in err
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert fashion_mnist.main([str(tmp_path / "terminal"), "--source", str(source), "--no-download", "--workers", "1"]) == 0
    assert "writing PNGs" in capsys.readouterr().err


@pytest.mark.skipif(not fashion_mnist.DEFAULT_SOURCE.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_checksums_match_the_files_of_debians_package():
    files = fashion_mnist.find_idx_files(fashion_mnist.DEFAULT_SOURCE)
    assert {path.name.removesuffix(".gz"): _content_sha256(path) for path in files.values()} == fashion_mnist.CHECKSUMS


def test_fashion_mnist_downloads_over_https_first():
    assert fashion_mnist.MIRRORS[0].startswith("https://")


def test_a_download_that_fails_its_checksum_is_not_cached_and_is_named(tiny_source, tmp_path):
    source, _ = tiny_source
    wrong, right = tmp_path / "wrong", tmp_path / "right"
    for mirror in (wrong, right):
        mirror.mkdir()
        for path in fashion_mnist.find_idx_files(source).values():
            content = path.read_bytes()
            if mirror == wrong and path.name.startswith("t10k-labels"):
                content = content[:-1] + bytes([(content[-1] + 1) % 10])  # one label changed: still a valid IDX file
            name = path.name if path.name.endswith(".gz") else path.name + ".gz"
            (mirror / name).write_bytes(content if path.name.endswith(".gz") else gzip.compress(content))
    cache = tmp_path / "cache"
    with pytest.raises(FileNotFoundError) as error:
        fashion_mnist.locate(tmp_path / "absent", cache=cache, mirrors=[wrong.as_uri() + "/"], timeout=2)
    assert (f"{wrong.as_uri()}/t10k-labels-idx1-ubyte.gz: not the published t10k-labels-idx1-ubyte.gz, so it was "
            "not kept (the SHA-256 of its content is ") in str(error.value)
    assert "t10k-labels-idx1-ubyte.gz" not in os.listdir(cache)
    found = fashion_mnist.locate(tmp_path / "absent", cache=cache, mirrors=[wrong.as_uri() + "/", right.as_uri() + "/"],
                                 timeout=2)
    assert (cache / "t10k-labels-idx1-ubyte.gz").read_bytes() == (right / "t10k-labels-idx1-ubyte.gz").read_bytes()
    assert fashion_mnist.load(tmp_path / "absent", cache=cache, download=False)["test"][1].tolist() == [9, 0, 0, 3, 5, 9, 1]
    assert found[("t10k", "labels")] == cache / "t10k-labels-idx1-ubyte.gz"


def test_a_source_file_that_fails_its_checksum_is_named_with_the_fix(tiny_source, tmp_path, capsys):
    source, data = tiny_source
    _write_idx(source / "t10k-labels-idx1-ubyte", np.array([9, 0, 0, 3, 5, 9, 2]))
    assert fashion_mnist.main([str(tmp_path / "out"), "--source", str(source), "--no-download", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert (f"error: {source / 't10k-labels-idx1-ubyte'} is not the published Fashion-MNIST file: the SHA-256 of its "
            "content is ") in err
    assert "Delete it and fetch it again" in err and not (tmp_path / "out").exists()

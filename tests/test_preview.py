"""`imgclf augment-preview`: a grid of training images and augmented versions, at the size the model sees."""

import os
import subprocess
import sys

import albumentations as A
import numpy as np
import pytest
from PIL import Image

import imgclf
from imgclf.augment import augment_to_yaml
from imgclf.cli import main
from imgclf.images import load_image
from imgclf.preview import MARGIN, augment_preview

from conftest import make_class_folder


@pytest.fixture
def folder(tmp_path):
    return make_class_folder(tmp_path / "data", per_class=6, size=20)


def test_grid_size_is_the_tiles_at_the_model_size_plus_margins(folder, tmp_path):
    preview = augment_preview(folder, out=tmp_path / "p.png", n=4, versions=3, image_size=(12, 18), zoom=5,
                              progress=False)
    picture = Image.open(tmp_path / "p.png")
    assert picture.format == "PNG" and picture.size == preview.image.size
    tile_h, tile_w, line = 12 * 5, 18 * 5, preview.line_height
    assert picture.size == (4 * tile_w + 5 * MARGIN, 4 * (line + tile_h + MARGIN) + line + 2 * MARGIN)
    assert preview.originals.shape == (4, 12, 18, 3) and preview.augmented.shape == (4, 3, 12, 18, 3)
    assert preview.box(3, 3)[2:] == (picture.width - MARGIN, picture.height - MARGIN)


def test_first_column_is_the_decoded_original_and_the_others_its_augmented_versions(folder, tmp_path):
    preview = augment_preview(folder, out=tmp_path / "p.png", n=3, versions=4, augment="heavy", image_size=(14, 10),
                              resize="pad", seed=2, progress=False)
    assert preview.zoom == 7  # the longer side 14 px, enlarged to at least 96 px: 98
    pixels = np.asarray(Image.open(tmp_path / "p.png").convert("RGB"))

    def tile(row, column):
        left, top, right, bottom = preview.box(row, column)
        block = pixels[top:bottom, left:right]
        assert (block == block[::7, ::7].repeat(7, 0).repeat(7, 1)).all()  # whole pixels
        return block[::preview.zoom, ::preview.zoom]

    for row, entry in enumerate(preview.entries):
        original = load_image(entry.path, size=(14, 10), channels=3, resize="pad")
        assert np.array_equal(tile(row, 0), original)
        assert np.array_equal(preview.originals[row], original)
        for version in range(4):
            assert np.array_equal(tile(row, 1 + version), preview.augmented[row, version])
        assert any(not np.array_equal(version, original) for version in preview.augmented[row])
    # Rows come from the train split, one class after another.
    assert [e.label for e in preview.entries] == ["circle", "square", "triangle"]
    assert all(e.split == "train" for e in preview.entries)


def test_same_seed_same_picture_and_another_seed_another(folder, tmp_path):
    def draw(seed, name):
        augment_preview(folder, out=tmp_path / name, n=3, versions=2, image_size=(16, 16), seed=seed, progress=False)
        return (tmp_path / name).read_bytes()

    assert draw(1, "a.png") == draw(1, "b.png")
    assert draw(1, "a.png") != draw(2, "c.png")


def test_grayscale_yaml_and_no_flip(folder, tmp_path):
    path = tmp_path / "mirror.yaml"
    path.write_text(augment_to_yaml(A.Compose([A.HorizontalFlip(p=1.0), A.RandomBrightnessContrast(p=0.0)])))
    flipped = augment_preview(folder, n=2, versions=2, augment=str(path), image_size=(16, 16), color_mode="grayscale",
                              progress=False)
    assert flipped.originals.shape == (2, 16, 16, 1) and flipped.augment == str(path) and flipped.flip
    for row in range(2):
        assert (flipped.augmented[row] == flipped.originals[row][:, ::-1]).all()
        assert not (flipped.augmented[row] == flipped.originals[row]).all()
    plain = augment_preview(folder, n=2, versions=2, augment=str(path), flip=False, image_size=(16, 16),
                            color_mode="grayscale", progress=False)
    assert not plain.flip and "without flips" in plain.summary()
    for row in range(2):
        assert (plain.augmented[row] == plain.originals[row]).all()


def test_bad_options_and_bad_yaml_are_refused_before_the_folder_is_read(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("transform:\n  __class_fullname__: Compose\n  transforms:\n  - {__class_fullname__: Flip}\n")
    with pytest.raises(ValueError, match="bad.yaml: unknown transform 'Flip'"):
        augment_preview(tmp_path / "not-read", augment=str(bad))
    with pytest.raises(ValueError, match="Invalid versions: expected a positive integer. Received: versions=0"):
        augment_preview(tmp_path / "not-read", versions=0)


def test_a_preview_too_large_to_draw_is_refused_with_the_options_to_lower(folder, tmp_path):
    with pytest.raises(ValueError, match=r"The preview would be a picture of 2,304 million pixels \(at most 100 "
                                         r"million\): lower --zoom \(1000\), --n or --versions"):
        augment_preview(folder, out=tmp_path / "p.png", n=2, versions=1, image_size=(24, 24), zoom=1000,
                        progress=False)
    assert not (tmp_path / "p.png").exists()


def test_cli_writes_the_png_without_importing_tensorflow(folder, tmp_path):
    code = ("import sys\n"
            "from imgclf.cli import main\n"
            f"status = main(['augment-preview', {str(folder)!r}, '--out', {str(tmp_path / 'p.png')!r}, '--n', '2', "
            "'--versions', '3', '--image-size', '16', '--no-flip', '--resize', 'crop'])\n"
            "print(status, [m for m in ('tensorflow', 'keras') if m in sys.modules])\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "0 []"
    assert "2 image(s) from 2 class(es), each with 3 augmented version(s), at 16x16x3 (resize crop), augment " \
           "standard without flips; written to" in result.stdout
    assert Image.open(tmp_path / "p.png").size == (4 * 96 + 5 * MARGIN, Image.open(tmp_path / "p.png").height)


def test_cli_names_a_bad_file_and_exits_1(folder, tmp_path, capsys):
    assert main(["augment-preview", str(folder), "--augment", str(tmp_path / "missing.yaml"), "--image-size", "8"]) == 1
    assert "imgclf augment-preview: error: Augmentation file not found" in capsys.readouterr().err
    assert imgclf.augment_preview is not None and "augment_preview" in imgclf.__all__


def test_out_inside_the_dataset_or_in_a_format_pillow_cannot_write_is_refused_before_the_work(folder, tmp_path,
                                                                                               capsys):
    image = sorted(folder.glob("*/*"))[0]
    before = image.read_bytes()
    for out in (image, image.parent / "preview.png"):
        assert main(["augment-preview", str(folder), "--out", str(out), "--image-size", "8"]) == 1
        assert (f"imgclf augment-preview: error: The picture {out} is inside the dataset {folder}: it would replace "
                "one of its images, or the next scan would read it as one. Choose an --out outside it") \
            in capsys.readouterr().err
    assert image.read_bytes() == before and not (image.parent / "preview.png").exists()
    # A CSV lists images that may lie anywhere: the picture must not be one of them.
    listing = tmp_path / "list.csv"
    listing.write_text("path,label\n" + "".join(f"{p},{p.parent.name}\n" for p in sorted(folder.glob("*/*"))))
    with pytest.raises(ValueError, match="is an image of the dataset, which writing it would replace"):
        augment_preview(listing, out=image, image_size=(8, 8), progress=False)
    assert image.read_bytes() == before
    for suffix, why in ((".xbm", "cannot write mode RGB as XBM"), (".h5", "HDF5 save handler not installed")):
        out = tmp_path / f"p{suffix}"
        assert main(["augment-preview", str(tmp_path / "not-read"), "--out", str(out)]) == 1
        assert (f"imgclf augment-preview: error: Cannot write the picture {out}: Pillow cannot write an RGB picture as "
                f"{Image.registered_extensions()[suffix]} ({why}). Use an extension such as .png, .jpg or .webp."
                in capsys.readouterr().err)
        assert not out.exists()

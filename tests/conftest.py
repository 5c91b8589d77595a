"""Fixtures: tiny generated image folders in tmp_path, and an isolated cache."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
# The dataset recipes live in the repository's datasets/ folder, not in an installed package.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Keras reads KERAS_HOME once, at import: every test sees an empty weights cache of its own session,
# never the user's ~/.keras/models, so `--model auto` and ImageNet weights behave the same everywhere.
os.environ["KERAS_HOME"] = tempfile.mkdtemp(prefix="imgclf-test-keras-home-")
atexit.register(shutil.rmtree, os.environ["KERAS_HOME"], ignore_errors=True)

# Each class is a colour and a bar orientation, so a tiny CNN learns it in a few epochs.
CLASS_STYLES = {
    "circle": ((220, 40, 40), "horizontal"),
    "square": ((40, 200, 40), "vertical"),
    "triangle": ((40, 40, 220), "diagonal"),
}


def draw_example(style, index: int, size: int = 16, seed: int = 0) -> Image.Image:
    """A small RGB image of a class style with noise that differs per index."""
    colour, orientation = style
    rng = np.random.default_rng([seed, index])
    pixels = rng.integers(0, 60, size=(size, size, 3)).astype(np.int16)
    band = np.zeros((size, size), bool)
    offset = index % (size // 2)
    if orientation == "horizontal":
        band[offset:offset + size // 3, :] = True
    elif orientation == "vertical":
        band[:, offset:offset + size // 3] = True
    else:
        band |= np.abs(np.subtract.outer(np.arange(size), np.arange(size)) - offset + size // 4) < 3
    pixels[band] = np.array(colour) + rng.integers(-20, 20, size=3)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def make_class_folder(root: Path, per_class: int = 12, *, classes=None, size: int = 16, fmt: str = "png",
                      start: int = 0, seed: int = 0) -> Path:
    """Writes `root/<class>/<class>_<i>.<fmt>` for every class; returns `root`."""
    for label in classes or CLASS_STYLES:
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(start, start + per_class):
            draw_example(CLASS_STYLES[label], i, size, seed).save(folder / f"{label}_{i:03d}.{fmt}")
    return root


def copy_of_run(run, folder: Path):
    """A copy of a run's files without its evaluations, exports and page, to damage or edit; returns its `RunDir`."""
    from imgclf.runs import RunDir

    shutil.copytree(run.path, folder, ignore=shutil.ignore_patterns(".lock", "eval", "export", "report.html"))
    return RunDir(folder)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Keeps the decoded-image cache of every test inside its own tmp_path."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """Three learnable classes of 12 tiny PNGs each."""
    return make_class_folder(tmp_path / "data")

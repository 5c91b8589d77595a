"""Pictures from an `Evaluation` and a run: confusion matrices, training curves, the gallery of
mistakes with Grad-CAM heat maps, and the reliability diagram.

matplotlib is imported only when drawing, with the file-only Agg backend.
Class names and paths are drawn as plain text: a `$` never starts matplotlib's
math mode.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import math
import unicodedata
import warnings
from pathlib import Path

import numpy as np

from ..evaluation import Evaluation
from ..files import atomic_path
from ..manifest import printable_name, short_names
from ..runs import RunDir

# Above this many classes the numbers no longer fit in the cells.
_MAX_ANNOTATED_CLASSES = 30
# Confusion-matrix tick labels: their size in points, and the room each class gets (label height x spacing).
_LABEL_POINTS = 10
_MIN_LABEL_POINTS = 6
_LINE_SPACING = 1.5
_MAX_SIDE_INCHES = 60.0  # 6,000 pixels at the figures' 100 dpi
# Gallery thumbnails per row, and their size in inches.
_GALLERY_COLUMNS = 4
_THUMBNAIL_INCHES = 2.6


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@contextlib.contextmanager
def _missing_glyphs_quiet():
    """A class name in a script the font lacks (CJK, emoji) is drawn as boxes, with one warning per glyph per
    figure when it is laid out; the page and the CSV files name the class in full, so the warnings only bury the
    output. Only while a figure is laid out: the caller's own warning filters stay as they were."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font", category=UserWarning)
        yield


def _use_installed_fonts_for_missing_glyphs(figure) -> None:
    """Lets every text of `figure` draw the characters its font lacks with an installed font that has them.

    matplotlib's fonts have no CJK, for one: a class named in Chinese would be
    drawn as boxes. matplotlib falls back along a list of font families glyph
    by glyph, so each text whose font lacks a character gets the installed
    families that have it after its own. Characters no installed font has
    stay boxes (`_missing_glyphs_quiet`).
    """
    from matplotlib import font_manager
    from matplotlib.text import Text

    for text in figure.findobj(Text):
        own = font_manager.findfont(text.get_fontproperties(), fallback_to_default=True)
        drawn = (c for c in text.get_text() if not c.isspace() and unicodedata.category(c) != "Cf")  # U+2068 is not
        lacking = frozenset(map(ord, drawn)) - _characters_of(own)
        fallbacks = _families_having(lacking) if lacking else ()
        if fallbacks:
            text.set_fontfamily([font_manager.FontProperties(fname=own).get_name(), *fallbacks])


@functools.cache
def _characters_of(font_file: str) -> frozenset[int]:
    """The code points a font file draws; none for a file FreeType cannot read."""
    from matplotlib.ft2font import FT2Font

    try:
        return frozenset(FT2Font(font_file).get_charmap())
    except (OSError, RuntimeError, ValueError):
        return frozenset()


@functools.cache
def _families_having(characters: frozenset[int]) -> tuple[str, ...]:
    """Installed font families, in name order, that together draw as many of `characters` as any can."""
    from matplotlib import font_manager

    families, left = [], set(characters)
    for entry in sorted(font_manager.fontManager.ttflist, key=lambda entry: (entry.name, entry.fname)):
        if entry.name.startswith("Last Resort"):
            continue  # matplotlib's font of placeholders: a box naming the Unicode block, not the character
        found = left & _characters_of(entry.fname)
        if found:
            left -= found
            if entry.name not in families:
                families.append(entry.name)
        if not left:
            break
    return tuple(families)


def _plain(text: str) -> str:
    """`text` as matplotlib draws it literally (a `$` would otherwise start math mode)."""
    return str(text).replace("$", r"\$")


def _names(classes, limit: int) -> list[str]:
    """Class names as the figures draw them: control characters escaped (as `imgclf scan` prints them), cut to
    `limit` characters by `short_names`, `$` literal, and isolated (U+2068 ... U+2069) so that a right-to-left
    name, or a right-to-left override in one, cannot reorder the text around it."""
    return ["\u2068" + _plain(name) + "\u2069" for name in short_names([printable_name(c) for c in classes], limit)]


def _save(figure, path: Path) -> Path:
    _use_installed_fonts_for_missing_glyphs(figure)
    with atomic_path(path) as tmp, _missing_glyphs_quiet():
        figure.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    return path


def confusion_matrix_layout(num_classes: int) -> tuple[float, float]:
    """Tick-label size in points and side of the matrix in inches for `num_classes` classes.

    Every class gets `_LINE_SPACING` times its label's height, so labels never
    overlap: 10-point labels up to 60 classes (cells of 0.4 inch while they
    hold numbers, up to 30 classes), then smaller labels down to 6 points,
    then a larger matrix: 200 classes give a 25-inch matrix of 6-point labels.
    The matrix grows to `_MAX_SIDE_INCHES` (480 classes), then the labels
    shrink again: drawing a larger one takes gigabytes (1,000 classes took
    7.7 GB uncapped).
    """
    points = float(np.clip(_LABEL_POINTS * 60 / max(num_classes, 1), _MIN_LABEL_POINTS, _LABEL_POINTS))
    cell = points * _LINE_SPACING / 72
    if num_classes <= _MAX_ANNOTATED_CLASSES:
        cell = max(cell, 0.4)
    if num_classes * cell > _MAX_SIDE_INCHES:  # labels shrink below 6 points rather than the memory growing further
        cell = _MAX_SIDE_INCHES / num_classes
        points = cell * 72 / _LINE_SPACING
    return points, max(4.0, num_classes * cell)


def confusion_matrix_figure(evaluation: Evaluation, *, normalized: bool = False):
    """The confusion matrix as a matplotlib figure (see `plot_confusion_matrix`)."""
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = _pyplot()
    n = len(evaluation.classes)
    matrix = evaluation.confusion_matrix_normalized if normalized else evaluation.confusion_matrix
    points, side = confusion_matrix_layout(n)
    figure = plt.figure(figsize=(side + 2.0, side + 1.0))
    axes = figure.add_axes((1.0 / (side + 2.0), 0.5 / (side + 1.0), side / (side + 2.0), side / (side + 1.0)))
    # Long class names are cut, or they would push the matrix into a corner; per_class.csv has them whole.
    display = ConfusionMatrixDisplay(matrix, display_labels=_names(evaluation.classes, 32))
    display.plot(ax=axes, include_values=n <= _MAX_ANNOTATED_CLASSES, cmap="Blues", colorbar=False,
                 xticks_rotation="vertical", values_format=".2f" if normalized else "d")
    figure.colorbar(display.im_, ax=axes, fraction=0.04, pad=0.02)
    axes.tick_params(labelsize=points)
    axes.xaxis.label.set_size(max(points, 10))
    axes.yaxis.label.set_size(max(points, 10))
    kind = "row-normalised" if normalized else "counts"
    axes.set_title(_plain(f"{evaluation.split}: error rate {evaluation.error_rate:.2%} on "
                          f"{len(evaluation.y_true):,} images ({kind})"), fontsize=12)
    return figure


def plot_confusion_matrix(evaluation: Evaluation, path, *, normalized: bool = False) -> Path:
    """Draws the confusion matrix to a PNG, readable from 2 to several hundred classes.

    The matrix grows with the number of classes so that tick labels never
    overlap (`confusion_matrix_layout`); cell values are written when there
    are at most 30 classes.

    Args:
        evaluation: the numbers to draw.
        path: the PNG file to write.
        normalized: draw row-normalised rates instead of counts.
            Defaults to `False`.

    Returns:
        The path written.
    """
    plt = _pyplot()
    figure = confusion_matrix_figure(evaluation, normalized=normalized)
    try:
        return _save(figure, Path(path))
    finally:
        plt.close(figure)


def plot_history(history_csv, path) -> Path | None:
    """Draws loss and accuracy per epoch from `history.csv`, phases marked; `None` if it is empty."""
    with open(history_csv, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return None
    plt = _pyplot()
    epochs = [int(r["epoch"]) + 1 for r in rows]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for prefix in ("", "val_"):
            key = prefix + metric
            values = [float(r[key]) if r.get(key) not in (None, "") else math.nan for r in rows]
            if not all(math.isnan(v) for v in values):
                ax.plot(epochs, values, marker="o", label=key)
        phases = [(epoch, row.get("phase", "")) for epoch, row in zip(epochs, rows)]
        if len({name for _, name in phases}) > 1:
            for (epoch, name), (_, before) in zip(phases[1:], phases[:-1]):
                if name != before:
                    ax.axvline(epoch - 0.5, color="grey", linestyle="--", linewidth=1)
            for epoch, name in [phases[0]] + [(e, n) for (e, n), (_, b) in zip(phases[1:], phases[:-1]) if n != b]:
                ax.annotate(_plain(name), xy=(epoch - 0.4, 1), xycoords=("data", "axes fraction"),
                            va="top", fontsize=9, color="grey")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend(loc="center right")
    try:
        return _save(figure, Path(path))
    finally:
        plt.close(figure)


def plot_calibration(evaluation: Evaluation, path) -> Path:
    """Draws the reliability diagram: accuracy against confidence per bin, with the ECE in the title.

    A perfectly calibrated model's bars reach the diagonal; bars below it
    mean the model is more sure than it is right. The lower panel counts the
    predictions in each bin.
    """
    plt = _pyplot()
    bins = evaluation.calibration()
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(5.5, 6.5), sharex=True,
                                         gridspec_kw={"height_ratios": [3, 1]})
    width = bins[0]["high"] - bins[0]["low"]
    centers = [b["low"] + width / 2 for b in bins]
    filled = [b for b in bins if b["count"]]
    top.bar([b["low"] + width / 2 for b in filled], [b["accuracy"] for b in filled], width=width * 0.95,
            color="#4c72b0", edgecolor="white", label="accuracy")
    top.plot([b["confidence"] for b in filled], [b["accuracy"] for b in filled], "o", color="#dd8452",
             label="mean confidence of the bin")
    top.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.legend(loc="upper left", fontsize=8)
    top.set_title(_plain(f"{evaluation.split}: expected calibration error (ECE) "
                         f"{evaluation.expected_calibration_error:.3f}"))
    bottom.bar(centers, [b["count"] for b in bins], width=width * 0.95, color="#8c8c8c")
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence (top probability)")
    bottom.set_ylabel("images")
    try:
        return _save(figure, Path(path))
    finally:
        plt.close(figure)


def gallery_figure(evaluation: Evaluation):
    """The highest-loss mistakes as a matplotlib figure (see `plot_gallery`); `None` when there are none."""
    if not evaluation.gallery:
        return None
    plt = _pyplot()
    heat = any(item["heatmap"] is not None for item in evaluation.gallery)
    panels = 2 if heat else 1
    count = len(evaluation.gallery)
    columns = min(_GALLERY_COLUMNS, count)
    rows = math.ceil(count / columns)
    names = _names(evaluation.classes, 24)
    # Each mistake gets two panels' width, heat map or not: its caption is that wide.
    figure, axes = plt.subplots(rows, columns * panels, squeeze=False,
                                figsize=(columns * 2 * _THUMBNAIL_INCHES * 0.62, rows * _THUMBNAIL_INCHES))
    for ax in axes.flat:
        ax.axis("off")
    for k, item in enumerate(evaluation.gallery):
        i = item["index"]
        image = item["image"]
        grey = image.ndim == 3 and image.shape[-1] == 1
        shown = image[..., 0] if grey else image
        height, width = shown.shape[:2]
        row, column = divmod(k, columns)
        first = axes[row, column * panels]
        first.imshow(shown, cmap="gray" if grey else None, vmin=0, vmax=255, interpolation="nearest")
        if heat and item["heatmap"] is not None:
            first.imshow(item["heatmap"], cmap="jet", alpha=0.45, extent=(-0.5, width - 0.5, height - 0.5, -0.5),
                         interpolation="bilinear", vmin=0, vmax=1)
            axes[row, column * panels + 1].imshow(shown, cmap="gray" if grey else None, vmin=0, vmax=255,
                                                  interpolation="nearest")
        caption = (f"#{k + 1} true {names[evaluation.y_true[i]]}\n"
                   f"predicted {names[evaluation.y_pred[i]]} {evaluation.probabilities[i, evaluation.y_pred[i]]:.0%}")
        first.set_title(caption, fontsize=8, loc="left")
    what = "heat map: Grad-CAM of the predicted class" if heat else "no heat map: the model has no convolutions"
    figure.suptitle(_plain(f"{evaluation.split}: the {count} highest-loss mistakes ({what})"), fontsize=10)
    _use_installed_fonts_for_missing_glyphs(figure)  # before the layout, which measures the captions
    with _missing_glyphs_quiet():
        figure.tight_layout()
    return figure


def plot_gallery(evaluation: Evaluation, path) -> Path | None:
    """Draws the highest-loss mistakes of `evaluation.gallery` as captioned thumbnails.

    Each thumbnail is numbered in loss order (#1 is the worst), captioned with
    the true class, the prediction and its confidence, and, for a
    convolutional model, overlaid with its Grad-CAM heat map (left) beside
    the plain image (right), so you see whether the model looked at the
    object or at the background.

    Returns:
        The path written, or `None` when there are no mistakes to draw.
    """
    figure = gallery_figure(evaluation)
    if figure is None:
        return None
    try:
        return _save(figure, Path(path))
    finally:
        _pyplot().close(figure)


def save_figures(run, evaluation: Evaluation) -> list[Path]:
    """Writes the pictures of an evaluation under `eval/<split>/`, and the run's training curves.

    `confusion_matrix.png`, `confusion_matrix_normalized.png`,
    `calibration.png`, `gallery.png` (when there are mistakes with pixels)
    and `training_curves.png` in the run folder.

    Args:
        run: a `RunDir` or its path.
        evaluation: the evaluation to draw.

    Returns:
        The files written, the confusion matrix (counts) first.
    """
    run = run if isinstance(run, RunDir) else RunDir(run)
    folder = run.eval_dir(evaluation.split)
    written = [
        plot_confusion_matrix(evaluation, folder / "confusion_matrix.png"),
        plot_confusion_matrix(evaluation, folder / "confusion_matrix_normalized.png", normalized=True),
        plot_calibration(evaluation, folder / "calibration.png"),
    ]
    gallery = plot_gallery(evaluation, folder / "gallery.png")
    if gallery:
        written.append(gallery)
    elif (folder / "gallery.png").exists():
        (folder / "gallery.png").unlink()  # from an earlier evaluation with mistakes
    if run.history_path.exists():
        curves = plot_history(run.history_path, run.path / "training_curves.png")
        written.extend([curves] if curves else [])
    return written


__all__ = ["confusion_matrix_layout", "confusion_matrix_figure", "plot_confusion_matrix", "plot_history",
           "plot_calibration", "gallery_figure", "plot_gallery", "save_figures"]

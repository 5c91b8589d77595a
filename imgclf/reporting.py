"""Pictures from an `Evaluation` and a run: confusion matrices and training curves.

matplotlib is imported only when drawing, with the file-only Agg backend.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .evaluation import Evaluation
from .files import atomic_path
from .runs import RunDir

# Above this many classes the numbers no longer fit in the cells.
_MAX_ANNOTATED_CLASSES = 30


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    return path


def plot_confusion_matrix(evaluation: Evaluation, path, *, normalized: bool = False) -> Path:
    """Draws the confusion matrix to a PNG, readable from 2 to several hundred classes.

    The figure grows with the number of classes; cell values are written when
    there are at most 30 classes, and tick labels shrink beyond that.

    Args:
        evaluation: the numbers to draw.
        path: the PNG file to write.
        normalized: draw row-normalised rates instead of counts.
            Defaults to `False`.

    Returns:
        The path written.
    """
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = _pyplot()
    n = len(evaluation.classes)
    matrix = evaluation.confusion_matrix_normalized if normalized else evaluation.confusion_matrix
    side = float(np.clip(0.45 * n + 3, 6, 40))
    figure, axes = plt.subplots(figsize=(side, side * 0.9))
    display = ConfusionMatrixDisplay(matrix, display_labels=evaluation.classes)
    display.plot(ax=axes, include_values=n <= _MAX_ANNOTATED_CLASSES, cmap="Blues", colorbar=True,
                 xticks_rotation="vertical", values_format=".2f" if normalized else "d")
    font = 10 if n <= _MAX_ANNOTATED_CLASSES else max(4, int(300 / n))
    axes.tick_params(labelsize=font)
    kind = "row-normalised" if normalized else "counts"
    axes.set_title(f"{evaluation.split}: error rate {evaluation.error_rate:.2%} on {len(evaluation.y_true):,} images ({kind})")
    try:
        return _save(figure, Path(path))
    finally:
        plt.close(figure)


def plot_history(history_csv, path) -> Path | None:
    """Draws loss and accuracy per epoch from `history.csv`; `None` if it is empty."""
    with open(history_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return None
    plt = _pyplot()
    epochs = [int(r["epoch"]) + 1 for r in rows]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for prefix in ("", "val_"):
            key = prefix + metric
            if key in rows[0] and rows[0][key] != "":
                ax.plot(epochs, [float(r[key]) for r in rows], marker="o", label=key)
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    try:
        return _save(figure, Path(path))
    finally:
        plt.close(figure)


def save_figures(run, evaluation: Evaluation) -> list[Path]:
    """Writes the confusion matrices (counts and normalised) and training curves of a run.

    Args:
        run: a `RunDir` or its path.
        evaluation: the evaluation to draw, saved under `eval/<split>/`.

    Returns:
        The files written.
    """
    run = run if isinstance(run, RunDir) else RunDir(run)
    folder = run.eval_dir(evaluation.split)
    written = [
        plot_confusion_matrix(evaluation, folder / "confusion_matrix.png"),
        plot_confusion_matrix(evaluation, folder / "confusion_matrix_normalized.png", normalized=True),
    ]
    if run.history_path.exists():
        curves = plot_history(run.history_path, run.path / "training_curves.png")
        written.extend([curves] if curves else [])
    return written

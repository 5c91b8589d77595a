"""Pictures and pages from an `Evaluation` and a run; nothing here computes a metric.

`figures` draws PNGs (confusion matrices, training curves, the gallery of
mistakes, the reliability diagram), `page` writes the self-contained
`report.html`, `comparison` puts runs side by side.
"""

from __future__ import annotations

from pathlib import Path

from .figures import (
    confusion_matrix_figure,
    confusion_matrix_layout,
    plot_calibration,
    plot_confusion_matrix,
    plot_gallery,
    plot_history,
    save_figures,
)
from .page import build_report, write_report


def report(run, evaluation=None, *, html: bool = True) -> list[Path]:
    """Draws an evaluation's pictures and writes the run's `report.html`.

    Args:
        run: a `RunDir` or its path.
        evaluation: an `Evaluation` to draw under `eval/<split>/`, or `None`
            to only (re)write the page from the files already in the run.
            Defaults to `None`.
        html: write `report.html`. Defaults to `True`.

    Returns:
        The files written: the confusion matrix (counts) first when an
        evaluation was drawn, `report.html` last.
    """
    if evaluation is not None:
        _refuse_another_runs_evaluation(run, evaluation)
    written = save_figures(run, evaluation) if evaluation is not None else []
    if html:
        written.append(write_report(run))
    return written


def _refuse_another_runs_evaluation(run, evaluation) -> None:
    """An evaluation is drawn into the run that `imgclf.evaluate` wrote its numbers to, and no other: the page would
    show one model's numbers above another's pictures."""
    from ..files import escape_name, read_json
    from ..runs import RunDir

    run = run if isinstance(run, RunDir) else RunDir(run)
    saved = run.eval_dir(evaluation.split) / "metrics.json"
    numbers = read_json(saved) if saved.is_file() else {}
    if (run.classes() != list(evaluation.classes) or numbers.get("images") != len(evaluation.y_true)
            or abs(numbers.get("accuracy", -1.0) - evaluation.accuracy) > 1e-5):
        raise ValueError(f"The evaluation of {escape_name(evaluation.split)} passed is not one of "
                         f"{escape_name(str(run.path))}: its classes or numbers differ from {escape_name(str(saved))}. "
                         f"Pass the evaluation that imgclf.evaluate({escape_name(str(run.path))!r}) returns.")


__all__ = ["report", "save_figures", "write_report", "build_report", "plot_confusion_matrix", "plot_history",
           "plot_calibration", "plot_gallery", "confusion_matrix_figure", "confusion_matrix_layout"]

"""Runs side by side: the settings that made each run and what it scored, differences marked.

Everything comes from the run folders (`config.yaml`, `environment.json`,
`history.csv`, `eval/*/metrics.json`), so comparing needs no model and no
TensorFlow.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import hashlib
import html
import io
import os
import re
from datetime import datetime
from pathlib import Path

from ..evaluation import read_metrics
from ..files import escape_name, read_json, write_text
from ..runs import RunDir
from .page import _POLICY, _STYLE, evaluation_folders


# What Markdown would read as markup in a table cell: HTML, emphasis, code, strikethrough, links, column breaks.
_MARKUP = re.compile(r"_+|\]\(|[\\*`~|&<>\r\n]")
_ESCAPED = {"](": "]\\(", "\\": "\\\\", "*": "\\*", "`": "\\`", "~": "\\~", "|": "\\|", "&": "&amp;", "<": "&lt;",
            ">": "&gt;", "\r": " ", "\n": " "}


def _markdown_cell(text: str) -> str:
    """`text` as a Markdown table cell that shows it as it is, on one line.

    Example:

    >>> print(_markdown_cell("a|b <img> *new* small_cnn _x_"))
    a\\|b &lt;img&gt; \\*new\\* small_cnn \\_x\\_
    """
    def escaped(match: re.Match) -> str:
        markup = match.group(0)
        if markup[0] != "_":
            return _ESCAPED[markup]
        before, after = text[match.start() - 1:match.start()], text[match.end():match.end() + 1]
        # Underscores inside a word (small_cnn) never start or end emphasis: they stay as they are.
        return markup if before.isalnum() and after.isalnum() else "\\_" * len(markup)

    return _MARKUP.sub(escaped, text)


def _markdown_text(text: str) -> str:
    """`text` as Markdown that shows it as it is, but for its `code spans`, which stay code."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an odd number of backticks: no code spans to keep
        return _markdown_cell(text)
    return "`".join(part if i % 2 else _markdown_cell(part) for i, part in enumerate(parts))


@dataclasses.dataclass
class Comparison:
    """A table of runs (columns) by settings and results (rows).

    Attributes:
        runs: the run names, one column each.
        rows: `(section, name, values)` with one value per run, as text
            (`""` where a run lacks it).
        notes: what to know before reading the table as a contest: runs
            trained on different classes, error rates from different splits,
            a run given twice, a run whose training stopped. Shown below the
            table in Markdown and HTML; `code` stays code.
    """

    runs: list[str]
    rows: list[tuple[str, str, list[str]]]
    notes: list[str] = dataclasses.field(default_factory=list)

    def differs(self, values: list[str]) -> bool:
        """Whether a row's values are not all the same."""
        return len(set(values)) > 1

    def markdown(self) -> str:
        """The table in Markdown; rows whose values differ are in bold and marked `≠`."""
        cell = _markdown_cell
        lines = ["| | " + " | ".join(cell(r) for r in self.runs) + " |", "|---|" + "---|" * len(self.runs)]
        for section, name, values in self.rows:
            if self.differs(values):
                lines.append(f"| **{cell(name)}** ≠ | " + " | ".join(f"**{cell(v)}**" if v else "" for v in values) + " |")
            else:
                lines.append(f"| {cell(name)} | " + " | ".join(cell(v) for v in values) + " |")
        lines.extend(f"\nNote: {_markdown_text(note)}" for note in self.notes)
        return "\n".join(lines) + "\n"

    def csv_text(self) -> str:
        """The table as CSV: section, setting, differs, then one column per run."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["section", "setting", "differs", *self.runs])
        for section, name, values in self.rows:
            writer.writerow([section, name, "yes" if self.differs(values) else "no", *values])
        return buffer.getvalue()

    def html(self) -> str:
        """The table as a self-contained page; rows that differ are highlighted."""
        e = lambda text: html.escape(str(text), quote=True)  # noqa: E731
        head = "".join(f"<th>{e(r)}</th>" for r in self.runs)
        body, section_now = [], None
        for section, name, values in self.rows:
            if section != section_now:
                body.append(f'<tr><th colspan="{len(self.runs) + 1}" class="section">{e(section)}</th></tr>')
                section_now = section
            marked = ' class="differs"' if self.differs(values) else ""
            body.append(f"<tr{marked}><th>{e(name)}</th>" + "".join(f"<td>{e(v)}</td>" for v in values) + "</tr>")
        notes = "".join(f'<p class="note">Note: {e(note)}</p>' for note in self.notes)
        style = _STYLE + "tr.differs td,tr.differs th{background:#fff4d6}th.section{background:#e4e9f2}"
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                '<meta name="viewport" content="width=device-width, initial-scale=1">'
                f'<meta http-equiv="Content-Security-Policy" content="{_POLICY}">'
                f"<title>imgclf: {len(self.runs)} runs compared</title><style>{style}</style></head><body>"
                f"<h1>{len(self.runs)} runs compared</h1><p class=\"muted\">Highlighted rows differ between runs.</p>"
                f'<div class="scroll"><table><thead><tr><th></th>{head}</tr></thead>'
                f'<tbody>{"".join(body)}</tbody></table></div>'
                f"{notes}</body></html>\n")

    def save(self, folder, *, html: bool = False) -> list[Path]:
        """Writes `comparison.md`, `comparison.csv` and, with `html`, `comparison.html` into `folder`."""
        folder = Path(folder)
        written = [write_text(folder / "comparison.md", self.markdown()),
                   write_text(folder / "comparison.csv", self.csv_text())]
        if html:
            written.append(write_text(folder / "comparison.html", self.html()))
        return written


def _schedule(history: list[dict], learning_rate: float) -> str:
    """The phases a run trained in, e.g. `head 2 ep @ 0.001, fine_tune 8 ep @ 0.0001`."""
    if not history:
        return f"constant {learning_rate:g}"
    phases: dict[str, list[dict]] = collections.OrderedDict()
    for row in history:
        phases.setdefault(row.get("phase") or "train", []).append(row)
    return ", ".join(f"{name} {len(rows)} ep @ {float(rows[0]['learning_rate']):g}" if rows[0].get("learning_rate")
                     else f"{name} {len(rows)} ep" for name, rows in phases.items())


def _training_time(run: RunDir, environment: dict) -> str:
    """From `environment.json`'s start of training to `model.keras` written (the last session of a resumed run)."""
    created = environment.get("created")
    if not created or not run.model_path.exists():
        return ""
    seconds = run.model_path.stat().st_mtime - datetime.fromisoformat(created).timestamp()
    if seconds < 0:
        return ""
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes}:{seconds:02d} min" if minutes < 60 else f"{minutes // 60}:{minutes % 60:02d} h"


def _column(run: RunDir) -> dict[tuple[str, str], str]:
    cfg = run.config()
    environment = read_json(run.environment_path) if run.environment_path.exists() else {}
    history = []
    if run.history_path.exists():
        with open(run.history_path, newline="", encoding="utf-8") as handle:
            history = list(csv.DictReader(handle))
    size = cfg.data.image_size
    channels = {"grayscale": 1, "rgb": 3}.get(cfg.data.color_mode, "")
    weights = cfg.model.weights or ("none" if cfg.model.name in ("mlp", "cnn", "small_cnn") else "")
    model = cfg.model.name + (f" {list(cfg.model.hidden)}" if cfg.model.name == "mlp" else "")
    values = {
        ("settings", "model"): model,
        ("settings", "weights"): weights,
        ("settings", "image size"): f"{size[0]}x{size[1]}x{channels}" if size else "",
        ("settings", "augmentation"): cfg.augment.preset + (f" (sha256 {cfg.augment.sha256[:8]})" if cfg.augment.sha256
                                                            else "") + ("" if cfg.augment.flip else ", no flips"),
        ("settings", "epochs"): f"{len(history)} of {cfg.train.epochs}" if len(history) != cfg.train.epochs
        else str(cfg.train.epochs),
        ("settings", "batch size"): str(cfg.train.batch_size),
        ("settings", "precision"): (environment.get("precision") or {}).get("policy", ""),  # what training used
        ("settings", "optimizer"): f"{cfg.train.optimizer}, lr {cfg.train.learning_rate:g}",
        ("settings", "schedule"): _schedule(history, cfg.train.learning_rate),
        ("settings", "class weights"): "yes" if cfg.train.class_weight else "no",
        ("settings", "split seed, val, test"): f"{cfg.data.seed}, {cfg.data.val:g}, {cfg.data.test:g}",
        ("settings", "classes"): _classes_value(_classes(run)),
        ("settings", "data hash"): (environment.get("data_hash") or "")[:12],
        ("results", "training time"): _training_time(run, environment),
    }
    folders = evaluation_folders(run)
    if folders:
        metrics = read_metrics(folders[0])
        interval = metrics.get("error_rate_interval") or {}
        values.update({
            ("results", "evaluated on"): f"{folders[0].name} ({metrics['images']:,} images)",
            ("results", "error rate"): f"{metrics['error_rate']:.2%}",
            ("results", "error rate, 95% interval"): f"{interval['low']:.2%}–{interval['high']:.2%}" if interval else "",
            ("results", "macro F1"): f"{metrics['macro_f1']:.3f}",
            ("results", "balanced accuracy"): f"{metrics['balanced_accuracy']:.2%}" if "balanced_accuracy" in metrics else "",
            ("results", "log loss"): f"{metrics['log_loss']:.3f}" if "log_loss" in metrics else "",
            ("results", "calibration error (ECE)"): f"{metrics['expected_calibration_error']:.3f}"
            if "expected_calibration_error" in metrics else "",
        })
    elif run.unfinished():
        values[("results", "evaluated on")] = ("not evaluated: still training" if run.in_use()
                                               else "not evaluated: its training stopped")
    else:
        values[("results", "evaluated on")] = "not evaluated (imgclf evaluate)"
    return values


def _classes(run: RunDir) -> list[str] | None:
    """The run's class names, or `None` for a run without `classes.json`."""
    return run.classes() if run.classes_path.exists() else None


def _classes_value(classes: list[str] | None) -> str:
    """The classes row: the count and the names, or a hash of the names where they would not fit in a cell."""
    if classes is None:
        return ""
    names = ", ".join(escape_name(name) for name in sorted(classes))
    if len(names) > 60:
        names = "sha1 " + hashlib.sha1("\n".join(sorted(classes)).encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{len(classes)}: {names}"


def _notes(runs: list[RunDir], names: list[str]) -> list[str]:
    """What makes the runs' numbers not comparable as they stand; see `Comparison.notes`."""
    notes = []
    given = collections.defaultdict(list)
    for run, name in zip(runs, names):
        given[os.path.realpath(run.path)].append(name)
    for same in given.values():
        if len(same) > 1:
            shown = f" (as {', '.join(same)})" if len(set(same)) > 1 else ""
            notes.append(f"{same[0]} is given {len(same)} times{shown}: its columns are the same run.")
    classes = {name: set(found) for run, name in zip(runs, names) if (found := _classes(run)) is not None}
    if len(set(map(frozenset, classes.values()))) > 1:
        uneven = sorted(set.union(*classes.values()) - set.intersection(*classes.values()))
        listed = ", ".join(escape_name(c) for c in uneven[:5]) + (f" and {len(uneven) - 5:,} more" if len(uneven) > 5
                                                                  else "")
        notes.append(f"The runs were trained on different classes ({listed} not in every run; row classes): their "
                     "error rates are not measured on the same task.")
    evaluated = collections.defaultdict(list)
    for run, name in zip(runs, names):
        folders = evaluation_folders(run)
        if folders:
            source = read_metrics(folders[0]).get("source")
            evaluated[folders[0].name + (f" (folder {source})" if source else "")].append(name)
    if len(evaluated) > 1:
        notes.append("The error rates come from different evaluations (row evaluated on: "
                     + "; ".join(f"{where} for {', '.join(evaluated[where])}" for where in evaluated)
                     + "): evaluate the runs on the same split or folder, e.g. `imgclf evaluate RUN --split test`, "
                     "to compare them.")
    for run, name in zip(runs, names):
        stopped = run.unfinished()
        if stopped:
            notes.append(f"{name} has no model.keras yet: {stopped}")
    return notes


def compare(runs, *, out=None, html: bool = False) -> Comparison:
    """Puts runs side by side: their key settings and their results, differences marked.

    Settings: model, weights, image size, augmentation, epochs, batch size,
    precision (the dtype policy training used), optimizer, schedule (the
    phases and their learning rates, from `history.csv`), class weights,
    split, classes and data hash. Results, from each
    run's test evaluation (else its first): error rate with its 95% Wilson
    interval, macro F1, balanced accuracy, log loss, calibration error and
    training time. Two error rates whose intervals overlap may not differ
    beyond chance. Notes below the table say where the runs are not
    comparable as they stand: different classes, error rates from different
    splits or folders, a run given twice, a run whose training stopped.

    Args:
        runs: run directories (paths or `RunDir`s), at least one; a single
            path is one run.
        out: a folder to write `comparison.md` and `comparison.csv` to.
            Defaults to `None`: nothing is written.
        html: also write `comparison.html` (a self-contained page).
            Defaults to `False`.

    Returns:
        A `Comparison`; `print(comparison.markdown())` shows it.

    Example:

    >>> table = compare(["runs/mlp", "runs/cnn", "runs/cnn-augmented"], out="comparison")
    >>> print(table.markdown())
    """
    if html and out is None:
        raise ValueError("html=True writes comparison.html into out: pass out=FOLDER too.")
    if isinstance(runs, (str, os.PathLike, RunDir)):  # one run, not the characters of its path
        runs = [runs]
    runs = [run if isinstance(run, RunDir) else RunDir(run) for run in runs]
    if not runs:
        raise ValueError("compare needs at least one run directory. Received: runs=[]")
    for run in runs:
        run.require("config.yaml")
    columns = [_column(run) for run in runs]
    keys = list(dict.fromkeys(key for column in columns for key in column))
    names = [escape_name(run.path.name or str(run.path)) for run in runs]
    if len(set(names)) < len(names):  # runs/a/x and runs/b/x: name them by their full paths
        names = [escape_name(os.fspath(run.path)) for run in runs]
    comparison = Comparison(names, [(section, name, [c.get((section, name), "") for c in columns])
                                    for section, name in keys], _notes(runs, names))
    if out is not None:
        comparison.save(out, html=html)
    return comparison


__all__ = ["Comparison", "compare"]

"""Predictions → `Evaluation`: confusion matrix, error rates, per-class scores, calibration, mistakes.

Every number scikit-learn has comes from scikit-learn; the few it lacks (the
Wilson interval and the top-label calibration error) are written out here and
say so. Nothing is drawn here: `imgclf.reporting` draws and writes pages.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn.metrics import (
    balanced_accuracy_score,
    confusion_matrix,
    log_loss,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)

from .files import escape_name, read_json, remove_temporaries, shell_word, write_csv, write_json
from .runs import RunDir
from .tracing import retracing_expected

# Reliability diagram and expected calibration error: equal-width bins of the top probability.
CALIBRATION_BINS = 10
# The highest-loss mistakes kept with their pixels (and Grad-CAM heat maps) for the gallery.
GALLERY_SIZE = 16
# z of a two-sided 95% normal interval.
_Z95 = 1.959963984540054


def wilson_interval(errors: int, total: int, z: float = _Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion, 95% by default.

    Written out because it is three lines and statsmodels is no dependency:
    `center = (p + z²/2n) / (1 + z²/n)` and
    `half = z·sqrt(p(1-p)/n + z²/4n²) / (1 + z²/n)`. Unlike the normal
    interval `p ± z·sqrt(p(1-p)/n)`, it stays inside [0, 1] and is not empty
    at 0 errors.

    Args:
        errors: wrong predictions.
        total: predictions.
        z: the normal quantile. Defaults to 1.96 (95%).

    Returns:
        `(low, high)`.

    Example:

    >>> wilson_interval(0, 100)
    (0.0, 0.036994...)
    """
    if total <= 0:
        raise ValueError(f"wilson_interval needs at least one prediction. Received: total={total}")
    p = errors / total
    denominator = 1 + z * z / total
    center = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    # At 0 errors (or all wrong) the bound is exactly 0 (or 1); the formula leaves a rounding error like 5.6e-17.
    low = 0.0 if errors == 0 else max(0.0, center - half)
    high = 1.0 if errors == total else min(1.0, center + half)
    return low, high


def calibration_bins(y_true: np.ndarray, probabilities: np.ndarray, bins: int = CALIBRATION_BINS) -> list[dict]:
    """Top-label reliability: how often the model is right at each level of its confidence.

    Written by hand: scikit-learn's `calibration_curve` is for binary
    problems only. Bin b holds the predictions whose top probability lies in
    `(b/bins, (b+1)/bins]` (the first bin also holds 0).

    Args:
        y_true: true class indices `(N,)`.
        probabilities: `(N, num_classes)`; the prediction is the argmax.
        bins: equal-width bins over [0, 1]. Defaults to 10.

    Returns:
        One dict per bin: `low`, `high`, `count`, `confidence` (mean top
        probability) and `accuracy` (fraction right); the last two are
        `None` in an empty bin.
    """
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == y_true
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        members = index == b
        count = int(members.sum())
        rows.append({"low": b / bins, "high": (b + 1) / bins, "count": count,
                     "confidence": float(confidence[members].mean()) if count else None,
                     "accuracy": float(correct[members].mean()) if count else None})
    return rows


def expected_calibration_error(y_true, probabilities, bins: int = CALIBRATION_BINS) -> float:
    """ECE: the gap between confidence and accuracy, averaged over bins weighted by their size.

    `ECE = Σ_b (n_b / N) · |accuracy_b − confidence_b|` over the bins of
    `calibration_bins` (Guo et al., 2017, on the top label).

    Example:

    >>> expected_calibration_error([0, 1], np.array([[0.9, 0.1], [0.8, 0.2]]))
    0.45
    """
    y_true = np.asarray(y_true)
    rows = calibration_bins(y_true, np.asarray(probabilities, dtype=np.float64), bins)
    return float(sum(r["count"] * abs(r["accuracy"] - r["confidence"]) for r in rows if r["count"]) / len(y_true))


@dataclasses.dataclass
class Evaluation:
    """What a model got right and wrong on one split or folder.

    Attributes:
        split: the split evaluated, or the name of the folder (`--data`).
        classes: class names; index i is class i.
        y_true: true class indices `(N,)`.
        y_pred: predicted class indices `(N,)`.
        probabilities: softmax outputs `(N, num_classes)`.
        paths: the image files, in the same order.
        confusion_matrix: counts, rows are true classes, columns predicted.
        confusion_matrix_normalized: each row divided by its total (recall on
            the diagonal); rows of absent classes are zero.
        accuracy: fraction predicted correctly.
        error_rate: `1 - accuracy`.
        per_class: one dict per class with `class`, `precision`, `recall`,
            `f1`, `support` and `error_rate` (`1 - recall`). Recall, F1 and
            error rate are `None` for a class with no image among those
            evaluated, precision is `None` for a class never predicted: they
            are undefined, not 0. Macro and weighted averages in `metrics()`
            are over the classes the images hold, and leave out the undefined
            precisions.
        top_k: `(k, accuracy)` when there are more than k classes, else `None`.
        source: the folder evaluated with `data=`; empty for a split.
        skipped: files that could not be used, one dict each with `path`
            and `problem`.
        changed: files of the split modified since the run was trained,
            evaluated as they are now (a file that is gone is in
            `skipped`).
        copies: files of the folder evaluated with `data=` whose bytes are
            those of an image of the run's `train` or `val` split, by split:
            the model learned them, or its best epoch was chosen on them, so
            they flatter its numbers. Evaluated with the rest.
        gallery: the highest-loss mistakes with their pixels, one dict each
            with `index` (into `paths`), `image` (uint8 `(H, W, C)`) and
            `heatmap` (Grad-CAM, floats in [0, 1], or `None` for a model
            without convolutions). Not written to disk; `imgclf.report`
            draws it.
    """

    split: str
    classes: list[str]
    y_true: np.ndarray
    y_pred: np.ndarray
    probabilities: np.ndarray
    paths: list[str]
    confusion_matrix: np.ndarray
    confusion_matrix_normalized: np.ndarray
    accuracy: float
    error_rate: float
    per_class: list[dict]
    top_k: tuple[int, float] | None
    source: str = ""
    skipped: list[dict] = dataclasses.field(default_factory=list)
    changed: list[str] = dataclasses.field(default_factory=list)
    copies: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    gallery: list[dict] = dataclasses.field(default_factory=list)

    @property
    def losses(self) -> np.ndarray:
        """Cross-entropy of each image, `-log p(true class)`, clipped as scikit-learn's `log_loss` clips."""
        eps = np.finfo(self.probabilities.dtype).eps
        p_true = self.probabilities[np.arange(len(self.y_true)), self.y_true]
        return -np.log(np.clip(p_true, eps, 1 - eps))

    @property
    def errors(self) -> int:
        """Wrong predictions."""
        return int(np.sum(self.y_true != self.y_pred))

    @property
    def error_rate_interval(self) -> tuple[float, float]:
        """95% Wilson interval of the error rate."""
        return wilson_interval(self.errors, len(self.y_true))

    def calibration(self, bins: int = CALIBRATION_BINS) -> list[dict]:
        """The reliability diagram's bins; see `calibration_bins`."""
        return calibration_bins(self.y_true, self.probabilities, bins)

    @property
    def expected_calibration_error(self) -> float:
        """ECE over `CALIBRATION_BINS` bins; see `expected_calibration_error`."""
        return expected_calibration_error(self.y_true, self.probabilities)

    def most_confused(self, n: int | None = 10) -> list[tuple[str, str, int]]:
        """The `n` largest off-diagonal cells (all with `None`): `(true class, predicted class, count)`."""
        counts = self.confusion_matrix.copy()
        np.fill_diagonal(counts, 0)
        order = np.argsort(counts, axis=None, kind="stable")[::-1]
        pairs = [np.unravel_index(i, counts.shape) for i in order[:int(np.count_nonzero(counts))]]
        return [(self.classes[t], self.classes[p], int(counts[t, p])) for t, p in pairs][:n]

    def most_confused_table(self) -> list[dict]:
        """Every confused pair, largest first: `true`, `predicted`, `count` and `share` of the true class."""
        support = dict(zip(self.classes, self.confusion_matrix.sum(axis=1).tolist()))
        return [{"true": t, "predicted": p, "count": n, "share": n / support[t]}
                for t, p, n in self.most_confused(None)]

    def misclassified(self) -> list[dict]:
        """Every wrong prediction, highest loss first, with the three most probable classes."""
        wrong = np.flatnonzero(self.y_true != self.y_pred)
        losses = self.losses
        rows = []
        for i in sorted(wrong, key=lambda i: (-losses[i], i)):
            top = np.argsort(-self.probabilities[i], kind="stable")[:3]
            row = {
                "path": self.paths[i],
                "true": self.classes[self.y_true[i]],
                "predicted": self.classes[self.y_pred[i]],
                "confidence": round(float(self.probabilities[i, self.y_pred[i]]), 4),
                "true_probability": round(float(self.probabilities[i, self.y_true[i]]), 4),
                "loss": round(float(losses[i]), 4),
            }
            for rank, k in enumerate(top, start=1):
                row[f"top_{rank}_class"] = self.classes[k]
                row[f"top_{rank}_probability"] = round(float(self.probabilities[i, k]), 4)
            rows.append(row)
        return rows

    def metrics(self) -> dict:
        """The summary written to `metrics.json`, numbers rounded to 6 significant digits."""
        labels = np.arange(len(self.classes))
        averaged = {}
        # Averaged over the classes the images hold: a class with no image here (a folder evaluated with `data=`
        # that lacks it) has no recall, and counting it as 0 would lower macro-F1 for images that are not there.
        # Likewise the precision of a class never predicted is undefined (NaN), and scikit-learn leaves NaN out.
        present = np.unique(self.y_true)
        for average in ("macro", "weighted"):
            precision, recall, f1, _ = precision_recall_fscore_support(
                self.y_true, self.y_pred, labels=present, average=average, zero_division=np.nan)
            averaged.update({f"{average}_precision": None if np.isnan(precision) else float(precision),
                             f"{average}_recall": float(recall), f"{average}_f1": float(f1)})
        with warnings.catch_warnings():  # a class predicted but absent from y_true: its recall is left out, as it should
            warnings.simplefilter("ignore", UserWarning)
            balanced = float(balanced_accuracy_score(self.y_true, self.y_pred))
        low, high = self.error_rate_interval
        # Softmax outputs in float32 sum to 1 only within ~1e-7; scikit-learn wants them to sum to 1.
        probabilities = self.probabilities / self.probabilities.sum(axis=1, keepdims=True)
        return _rounded({
            "split": self.split,
            **({"source": escape_name(self.source)} if self.source else {}),
            "images": int(len(self.y_true)),
            "classes": len(self.classes),
            "accuracy": self.accuracy,
            "error_rate": self.error_rate,
            "error_rate_interval": {"low": low, "high": high, "confidence": 0.95, "method": "wilson"},
            "errors": self.errors,
            "balanced_accuracy": balanced,
            **({f"top_{self.top_k[0]}_accuracy": self.top_k[1]} if self.top_k else {}),
            "log_loss": float(log_loss(self.y_true, probabilities, labels=labels)),
            "expected_calibration_error": self.expected_calibration_error,
            "calibration_bins": CALIBRATION_BINS,
            **averaged,
            "skipped_files": len(self.skipped),
            **({"copies_of_run_images": {split: len(paths) for split, paths in self.copies.items()}}
               if self.copies else {}),
            "per_class_error_rate": {row["class"]: row["error_rate"] for row in self.per_class},
            "most_confused": [{"true": t, "predicted": p, "count": n} for t, p, n in self.most_confused()],
        })

    def save(self, folder) -> Path:
        """Writes the numbers: `confusion_matrix.csv`, `confusion_matrix_normalized.csv`, `per_class.csv`,
        `most_confused.csv`, `misclassified.csv`, (if any) `skipped.csv`, and `metrics.json` last.

        A folder that holds `metrics.json` holds all of these files, from one
        evaluation: the `metrics.json` of an earlier evaluation is removed
        first, so a process killed halfway leaves a folder without it (which
        `imgclf report` and `imgclf compare` skip), never new numbers beside
        old ones. The earlier evaluation's pictures (drawn after `metrics.json`
        by `imgclf.report`) go too, with the temporary files of a process
        killed while writing, so no picture of other numbers is left beside
        these. Paths are escaped with `files.escape_name`.
        """
        folder = Path(folder)
        (folder / "metrics.json").unlink(missing_ok=True)
        if folder.is_dir():
            remove_temporaries(folder)
            for picture in folder.glob("*.png"):
                picture.unlink(missing_ok=True)
        corner = "true \\ predicted"
        write_csv(folder / "confusion_matrix.csv", [corner, *self.classes],
                  ([name, *row] for name, row in zip(self.classes, self.confusion_matrix.tolist())))
        write_csv(folder / "confusion_matrix_normalized.csv", [corner, *self.classes],
                  ([name, *_rounded(row)] for name, row in zip(self.classes, self.confusion_matrix_normalized.tolist())))
        columns = ["class", "precision", "recall", "f1", "support", "error_rate"]
        write_csv(folder / "per_class.csv", columns, ([_rounded(row[c]) for c in columns] for row in self.per_class))
        columns = ["true", "predicted", "count", "share"]
        write_csv(folder / "most_confused.csv", columns,
                  ([_rounded(row[c]) for c in columns] for row in self.most_confused_table()))
        columns = ["path", "true", "predicted", "confidence", "true_probability", "loss",
                   *(f"top_{k}_{what}" for k in (1, 2, 3) for what in ("class", "probability"))]
        rows = ([escape_name(row["path"]), *(row.get(c, "") for c in columns[1:])] for row in self.misclassified())
        write_csv(folder / "misclassified.csv", columns, rows)
        skipped = folder / "skipped.csv"
        if self.skipped:
            write_csv(skipped, ["path", "problem"], ([escape_name(r["path"]), r["problem"]] for r in self.skipped))
        elif skipped.exists():
            skipped.unlink()
        write_json(folder / "metrics.json", self.metrics())
        return folder


# The numbers of `metrics.json` that the report and `imgclf compare` show.
_SHOWN_NUMBERS = ("images", "classes", "accuracy", "error_rate", "errors", "macro_f1")


def read_metrics(folder) -> dict:
    """The `metrics.json` of an evaluation folder (`RUN/eval/NAME/`), checked for the numbers the pages show.

    Args:
        folder: the evaluation folder.

    Returns:
        The file's contents.

    Raises:
        DamagedFileError: (a `ValueError`) if the file is not JSON.
        ValueError: if it lacks one of those numbers (edited by hand, or
            written by another version of imgclf); the message names the
            file and the `imgclf evaluate` command that writes it again.
    """
    folder = Path(folder)
    path = folder / "metrics.json"
    metrics = read_json(path)
    numbers = metrics if isinstance(metrics, dict) else {}
    missing = [key for key in _SHOWN_NUMBERS if not is_number(numbers.get(key))]
    interval = numbers.get("error_rate_interval")
    if interval is not None and not (isinstance(interval, dict) and is_number(interval.get("low"))
                                     and is_number(interval.get("high"))):
        missing.append("error_rate_interval")
    if missing:
        command = evaluate_command(folder, numbers)
        which = (f", DATA being the folder that was evaluated into {escape_name(folder.name)}"
                 if command.endswith("--data DATA") else "")
        raise ValueError(f"{escape_name(str(path))} has no number for {', '.join(missing)}: it was edited by hand or "
                         f"written by another version of imgclf. Evaluate again with `{command}`{which}.")
    return metrics


def evaluate_command(folder, metrics: dict) -> str:
    """The `imgclf evaluate` command that writes the evaluation folder `RUN/eval/NAME/` again, given its metrics."""
    folder = Path(folder)
    command = f"imgclf evaluate {shell_word(folder.parent.parent)}"
    if isinstance(metrics.get("source"), str) and metrics["source"]:
        return f"{command} --data {shell_word(metrics['source'])}"
    return f"{command} --split {folder.name}" if folder.name in ("train", "val", "test") else f"{command} --data DATA"


def is_number(value) -> bool:
    """Whether a value read from JSON is a number (`true` is not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _rounded(value, digits: int = 6):
    """`value` with every float rounded to `digits` significant digits, in nested dicts and lists too.

    Written files then read `0.043`, not `0.04300000000000004` (the float
    error of `1 - 0.957`); 6 digits are exact to one image in a million.
    """
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {key: _rounded(item, digits) for key, item in value.items()}
    if isinstance(value, list):
        return [_rounded(item, digits) for item in value]
    return value


def evaluate_predictions(
    y_true: Sequence[int],
    probabilities: np.ndarray,
    classes: Sequence[str],
    *,
    paths: Sequence[str] | None = None,
    split: str = "test",
    top_k: int = 5,
) -> Evaluation:
    """Builds an `Evaluation` from true labels and predicted probabilities.

    Args:
        y_true: true class indices.
        probabilities: `(N, num_classes)` scores; the prediction is the argmax.
        classes: class names.
        paths: image files, for the list of mistakes. Defaults to `None`.
        split: name of the split, for the record. Defaults to `"test"`.
        top_k: k of the top-k accuracy (reported when there are more than k
            classes). Defaults to 5.

    Returns:
        An `Evaluation`.

    Example:

    >>> ev = evaluate_predictions([0, 1, 1], np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]]), ["cat", "dog"])
    >>> ev.error_rate, ev.most_confused()
    (0.333..., [('dog', 'cat', 1)])
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if len(y_true) == 0:
        raise ValueError(f"The {split} split has no usable images to evaluate. Choose another split or add images.")
    if probabilities.shape != (len(y_true), len(classes)):
        raise ValueError(f"Expected probabilities of shape ({len(y_true)}, {len(classes)}) for {len(y_true)} images "
                         f"and {len(classes)} classes. Received: shape {probabilities.shape}")
    labels = np.arange(len(classes))
    y_pred = probabilities.argmax(axis=1)
    counts = confusion_matrix(y_true, y_pred, labels=labels)
    normalized = confusion_matrix(y_true, y_pred, labels=labels, normalize="true")
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    predicted = counts.sum(axis=0)
    accuracy = float(np.mean(y_true == y_pred))
    # Undefined scores are None, not 0: a 0 would read as the worst class, and averages would count it.
    per_class = [
        {"class": name, "precision": float(p) if n else None, "recall": float(r) if s else None,
         "f1": float(f) if s else None, "support": int(s), "error_rate": float(1 - r) if s else None}
        for name, p, r, f, s, n in zip(classes, precision, recall, f1, support, predicted)
    ]
    top = None
    if len(classes) > top_k:
        top = (top_k, float(top_k_accuracy_score(y_true, probabilities, k=top_k, labels=labels)))
    return Evaluation(
        split=split, classes=list(classes), y_true=y_true, y_pred=y_pred, probabilities=probabilities,
        paths=list(paths) if paths is not None else [""] * len(y_true),
        confusion_matrix=counts, confusion_matrix_normalized=np.nan_to_num(normalized),
        accuracy=accuracy, error_rate=1.0 - accuracy, per_class=per_class, top_k=top,
    )


def evaluate(run, split: str | None = None, *, data=None, batch_size: int = 64, gallery: int = GALLERY_SIZE,
             progress: bool = True) -> Evaluation:
    """Evaluates a run's `model.keras` on one split of its manifest, or on another folder.

    Writes `eval/<split>/` (or `eval/<folder name>/` with `data`: never a
    split's folder, and never one that holds another folder's results; see
    `_data_eval_name`) in the run directory: `metrics.json`, `confusion_matrix.csv`,
    `confusion_matrix_normalized.csv`, `per_class.csv`, `most_confused.csv`,
    `misclassified.csv` and, when files could not be used, `skipped.csv`.
    `imgclf.report` draws the pictures and the page.

    Args:
        run: a `RunDir` or the path of one.
        split: `"train"`, `"val"` or `"test"`. Defaults to `None`: the
            run's `eval.split` in `config.yaml` (`"test"` unless set).
        data: a folder with one subfolder per class (or a `path,label` CSV)
            to evaluate instead of a split; every class in it must be one the
            model knows. Files that cannot be read are reported in
            `skipped` and left out. Defaults to `None`.
        batch_size: images per prediction step. Defaults to 64.
        gallery: how many of the highest-loss mistakes keep their pixels and
            a Grad-CAM heat map for the gallery. Defaults to 16.
        progress: show progress bars. Defaults to `True`.

    Returns:
        An `Evaluation`.

    Example:

    >>> ev = evaluate("runs/digits", split="test")
    >>> round(ev.error_rate, 3)
    0.025
    >>> ev = evaluate("runs/digits", data="data/digits-scanned")   # eval/digits-scanned/
    """
    from .config import ImageSpec
    from .pipeline import ImageBatches, limits_of, load_split

    run = run if isinstance(run, RunDir) else RunDir(run)
    run.require("model.keras", "manifest.csv", "classes.json", "config.yaml")
    cfg = run.config()
    split = split or cfg.eval.split
    model, classes = run.load_model_and_classes()
    if data is not None:
        manifest = _folder_manifest(data, classes, cfg, progress=progress)
        split_name, source = "test", os.path.abspath(data)
        name = _data_eval_name(run, source)
    else:
        manifest, name, split_name, source = run.manifest(classes), split, split, ""
        if not manifest.split(split):
            others = [s for s in ("test", "val", "train") if s != split and manifest.split(s)]
            raise ValueError(f"The {split} split of {run.path} holds no images (the split was empty when the run was "
                             f"trained). Evaluate {' or '.join(f'--split {s}' for s in others) or 'another split'}, "
                             "or a folder with --data DIR.")
    candidates = [e for e in manifest.entries if e.split == split_name or (data is not None and not e.usable)]
    entries = manifest.split(split_name)
    changed = []
    if data is None:
        # A file rewritten since training would be read from the cache by its old hash, or decoded anew into it
        # under that hash: its new content, hashed again, is what is evaluated, whatever the cache holds.
        hashes = {id(entry): entry.sha1 for entry in entries}
        rechecked = manifest.recheck_changed(os.stat(run.manifest_path).st_mtime, entries=entries,
                                             limits=limits_of(cfg.data), workers=cfg.data.workers, progress=False)
        changed = [entry.path for entry in rechecked if entry.usable and entry.sha1 != hashes[id(entry)]]
    height, width, channels = model.input_shape[1:]
    spec = ImageSpec(height, width, channels, cfg.data.resize)
    images = load_split(manifest, split_name, classes, spec, data=cfg.data, progress=progress)
    if not len(images):
        _refuse_no_images(run, data, split, entries)
    batches = ImageBatches(images, batch_size=batch_size)
    try:
        with retracing_expected():
            probabilities = model.predict(batches, verbose=0)
    finally:
        batches.release()
    evaluation = evaluate_predictions(images.labels, probabilities, classes, paths=[e.path for e in images.entries],
                                      split=name, top_k=cfg.eval.top_k)
    evaluation.source = source
    evaluation.skipped = [{"path": e.path, "problem": e.problem or e.status} for e in candidates if not e.usable]
    evaluation.changed = changed
    if data is not None:
        evaluation.copies = _copies_of_run_images(run, images.entries)
    evaluation.gallery = _gallery(evaluation, images.images, model, gallery)
    evaluation.save(run.eval_dir(name))
    return evaluation


def _refuse_no_images(run: RunDir, data, split: str, entries) -> None:
    """Explains why not one of `entries` could be decoded: the data folder moved, or every file is broken."""
    if data is None:
        run.check_images_exist(split, entries, "Put the folder back where it was, or evaluate the images where "
                                               f"they are now with `imgclf evaluate {shell_word(run.path)} "
                                               "--data NEWFOLDER` (every image in it, not one split).")
    where = f"the {split} split of {escape_name(str(run.manifest_path))}" if data is None else escape_name(os.fspath(data))
    example = entries[0]
    raise ValueError(f"None of the {len(entries)} images of {where} could be read (e.g. {escape_name(example.path)}: "
                     f"{example.detail or example.problem or example.status}): there is nothing to evaluate.")


def _copies_of_run_images(run: RunDir, entries) -> dict[str, list[str]]:
    """The paths of `entries` with the content of an image of the run's train or val split, by that split.

    A copy in another format, or with other metadata, has other bytes and is
    not found.
    """
    split_of = {entry.sha1: entry.split for entry in run.manifest().usable if entry.split in ("train", "val")}
    copies: dict[str, list[str]] = {}
    for entry in entries:
        if entry.sha1 in split_of:
            copies.setdefault(split_of[entry.sha1], []).append(entry.path)
    return {split: copies[split] for split in ("train", "val") if split in copies}


def _folder_manifest(data, classes: Sequence[str], cfg, *, progress: bool):
    """Scans `data` and puts every usable image into the test split; returns it and the eval folder name."""
    from .files import shell_word
    from .images import Severity
    from .manifest import DatasetError, class_name, describe_problems, printable_name, scan
    from .pipeline import limits_of

    manifest = scan(data, val=0.0, test=0.0, seed=cfg.data.seed, limits=limits_of(cfg.data),
                    workers=cfg.data.workers, progress=progress)
    spelled = {class_name(name): name for name in classes}  # a run may predate class names kept in NFC
    for entry in manifest.entries:
        entry.label = spelled.get(entry.label, entry.label)
    unknown = sorted(set(manifest.classes) - set(classes))
    if unknown:
        def quoted(name: str) -> str:
            return f"'{printable_name(name)}'"

        by_case = {name.casefold(): name for name in classes}
        named = [quoted(name) + (f" (the model has {quoted(by_case[name.casefold()])})"
                                 if name.casefold() in by_case else "") for name in unknown]
        raise DatasetError(
            f"{escape_name(os.fspath(data))} has classes the model was not trained on: {', '.join(named)}. The model "
            f"knows {', '.join(quoted(name) for name in classes)}; evaluate on a folder whose subfolders are among "
            "them (class names are case-sensitive)."
        )
    for entry in manifest.entries:
        entry.split = "test" if entry.usable else ""
    if not manifest.usable:
        problems = describe_problems(manifest.entries, Severity.ERROR)
        raise DatasetError(f"{escape_name(os.fspath(data))} has no usable images to evaluate: its "
                           f"{len(manifest.entries):,} file(s) all have errors ({problems}). "
                           f"`imgclf audit {shell_word(data)}` lists them.")
    return manifest


def _data_eval_name(run: RunDir, source: str) -> str:
    """The `eval/` folder of a `data=` evaluation: the folder's (or CSV's) name, never a split's or another source's.

    `eval/train|val|test` hold the run's own splits, so `photos/test` becomes
    `photos-test`; a name already used by another source gets a short hash
    of the path (`photos-1a2b3c4d`).
    """
    path = Path(source)
    name = escape_name(path.stem if path.is_file() else path.name) or "data"
    if name in ("train", "val", "test"):
        name = f"{escape_name(path.parent.name) or 'data'}-{name}"
    metrics = run.eval_dir(name) / "metrics.json"
    if metrics.exists() and read_json(metrics).get("source") != escape_name(source):
        digest = hashlib.sha1(os.fsencode(source)).hexdigest()[:8]
        name = f"{name}-{digest}"
    return name


def _gallery(evaluation: Evaluation, images: np.ndarray, model, size: int) -> list[dict]:
    """The `size` highest-loss mistakes with their pixels and Grad-CAM heat maps."""
    if size <= 0:
        return []
    from .gradcam import grad_cam

    losses = evaluation.losses
    wrong = sorted(np.flatnonzero(evaluation.y_true != evaluation.y_pred), key=lambda i: (-losses[i], i))[:size]
    if not wrong:
        return []
    pixels = np.asarray(images[np.sort(wrong)])
    pixels = pixels[np.argsort(np.argsort(wrong))]  # back to loss order after reading the memmap front to back
    heatmaps = grad_cam(model, pixels, evaluation.y_pred[wrong])
    return [{"index": int(i), "image": image, "heatmap": None if heatmaps is None else heatmaps[k]}
            for k, (i, image) in enumerate(zip(wrong, pixels))]

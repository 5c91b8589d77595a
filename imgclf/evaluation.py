"""Predictions → `Evaluation`: confusion matrix, error rates, per-class scores, mistakes.

Every number comes from scikit-learn on the model's predictions; nothing is drawn here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, top_k_accuracy_score

from .files import escape_name, write_csv, write_json
from .runs import RunDir


@dataclasses.dataclass
class Evaluation:
    """What a model got right and wrong on one split.

    Attributes:
        split: the split evaluated.
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
            `f1`, `support` and `error_rate` (`1 - recall`).
        top_k: `(k, accuracy)` when there are more than k classes, else `None`.
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

    def most_confused(self, n: int = 10) -> list[tuple[str, str, int]]:
        """The `n` largest off-diagonal cells: `(true class, predicted class, count)`."""
        counts = self.confusion_matrix.copy()
        np.fill_diagonal(counts, 0)
        order = np.argsort(counts, axis=None, kind="stable")[::-1][:n]
        pairs = [np.unravel_index(i, counts.shape) for i in order]
        return [(self.classes[t], self.classes[p], int(counts[t, p])) for t, p in pairs if counts[t, p] > 0]

    def misclassified(self) -> list[dict]:
        """Every wrong prediction, most confident first."""
        wrong = np.flatnonzero(self.y_true != self.y_pred)
        confidence = self.probabilities[wrong, self.y_pred[wrong]]
        return [
            {
                "path": self.paths[i],
                "true": self.classes[self.y_true[i]],
                "predicted": self.classes[self.y_pred[i]],
                "confidence": round(float(c), 4),
                "true_probability": round(float(self.probabilities[i, self.y_true[i]]), 4),
            }
            for i, c in sorted(zip(wrong, confidence), key=lambda pair: -pair[1])
        ]

    def metrics(self) -> dict:
        """The summary written to `metrics.json`, numbers rounded to 6 significant digits."""
        macro = {key: float(np.mean([row[key] for row in self.per_class])) for key in ("precision", "recall", "f1")}
        return _rounded({
            "split": self.split,
            "images": int(len(self.y_true)),
            "classes": len(self.classes),
            "accuracy": self.accuracy,
            "error_rate": self.error_rate,
            "errors": int(np.sum(self.y_true != self.y_pred)),
            **({f"top_{self.top_k[0]}_accuracy": self.top_k[1]} if self.top_k else {}),
            "macro_precision": macro["precision"],
            "macro_recall": macro["recall"],
            "macro_f1": macro["f1"],
            "per_class_error_rate": {row["class"]: row["error_rate"] for row in self.per_class},
            "most_confused": [{"true": t, "predicted": p, "count": n} for t, p, n in self.most_confused()],
        })

    def save(self, folder) -> Path:
        """Writes `metrics.json`, `confusion_matrix.csv`, `per_class.csv` and `misclassified.csv`.

        Paths in `misclassified.csv` are escaped with `files.escape_name`.
        """
        folder = Path(folder)
        write_json(folder / "metrics.json", self.metrics())
        write_csv(folder / "confusion_matrix.csv", ["true \\ predicted", *self.classes],
                  ([name, *row] for name, row in zip(self.classes, self.confusion_matrix.tolist())))
        columns = ["class", "precision", "recall", "f1", "support", "error_rate"]
        write_csv(folder / "per_class.csv", columns, ([_rounded(row[c]) for c in columns] for row in self.per_class))
        columns = ["path", "true", "predicted", "confidence", "true_probability"]
        rows = ([escape_name(row["path"]), *(row[c] for c in columns[1:])] for row in self.misclassified())
        write_csv(folder / "misclassified.csv", columns, rows)
        return folder


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
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if len(y_true) == 0:
        raise ValueError(f"The {split} split has no usable images to evaluate. Choose another split or add images.")
    labels = np.arange(len(classes))
    y_pred = probabilities.argmax(axis=1)
    counts = confusion_matrix(y_true, y_pred, labels=labels)
    normalized = confusion_matrix(y_true, y_pred, labels=labels, normalize="true")
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    accuracy = float(np.mean(y_true == y_pred))
    per_class = [
        {"class": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s),
         "error_rate": float(1 - r) if s else 0.0}
        for name, p, r, f, s in zip(classes, precision, recall, f1, support)
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


def evaluate(run, split: str = "test", *, batch_size: int = 64, progress: bool = True) -> Evaluation:
    """Evaluates a run's `model.keras` on one split of its manifest.

    Writes `eval/<split>/metrics.json`, `confusion_matrix.csv`,
    `per_class.csv` and `misclassified.csv` in the run directory.

    Args:
        run: a `RunDir` or the path of one.
        split: `"train"`, `"val"` or `"test"`. Defaults to `"test"`.
        batch_size: images per prediction step. Defaults to 64.
        progress: show progress bars. Defaults to `True`.

    Returns:
        An `Evaluation`.

    Example:

    >>> ev = evaluate("runs/digits", split="test")
    >>> round(ev.error_rate, 3)
    0.025
    """
    from .config import ImageSpec
    from .pipeline import ImageBatches, load_split

    run = run if isinstance(run, RunDir) else RunDir(run)
    run.require("model.keras", "manifest.csv", "classes.json", "config.yaml")
    cfg = run.config()
    classes = run.classes()
    manifest = run.manifest()
    unknown = sorted({e.label for e in manifest.split(split)} - set(classes))
    if unknown:
        raise ValueError(f"The {split} split has classes the model was not trained on: {unknown}.")
    model = run.load_model()
    height, width, channels = model.input_shape[1:]
    spec = ImageSpec(height, width, channels, cfg.data.resize)
    data = load_split(manifest, split, classes, spec, data=cfg.data, progress=progress)
    probabilities = model.predict(ImageBatches(data, batch_size=batch_size), verbose=0)
    evaluation = evaluate_predictions(data.labels, probabilities, classes, paths=[e.path for e in data.entries],
                                      split=split, top_k=cfg.eval.top_k)
    evaluation.save(run.eval_dir(split))
    return evaluation

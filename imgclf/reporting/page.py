"""`report.html`: one self-contained page of a run, built from the files in its folder.

The page holds everything inline: pictures as `data:` URIs, the style sheet,
and a few lines of script that sort tables. It loads nothing (its content
security policy forbids any request), so it opens from disk, from an e-mail
attachment or an archive years later. Every class name, path and config value
is HTML-escaped: a class folder named `<img src=x onerror=alert(1)>` shows as
that text.

The page reads only files (`config.yaml`, `manifest.csv`, `history.csv`,
`eval/*/`), so `imgclf report RUN` needs no model and no TensorFlow.
"""

from __future__ import annotations

import base64
import collections
import csv
import html
from pathlib import Path

from ..evaluation import GALLERY_SIZE, evaluate_command, is_number, read_metrics
from ..files import escape_name, read_json, write_text
from ..runs import RunDir

# Evaluations are shown in this order; folders evaluated with --data follow, by name.
_SPLIT_ORDER = ("test", "val", "train")
# Rows of the longer tables shown in the page (the CSV files beside it hold all of them).
_MOST_CONFUSED_ROWS = 20
_LEFT_OUT_ROWS = 50

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1200px;padding:0 24px 48px;color:#1d2433}
h1{font-size:24px;margin:24px 0 4px}h2{font-size:19px;margin:32px 0 8px;border-bottom:1px solid #d8dde6;padding-bottom:4px}
h1,h2,nav,td.name{overflow-wrap:anywhere}td.path{min-width:18em}
.warning{border-left:4px solid #c0392b;background:#fdf1ef;padding:6px 12px}
h3{font-size:16px;margin:20px 0 6px}.muted{color:#5b6474}
table{border-collapse:collapse;margin:6px 0 12px}th,td{border:1px solid #d8dde6;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f1f4f9}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
table.sortable th{cursor:pointer;user-select:none}table.sortable th[aria-sort=ascending]::after{content:" \\25B2"}
table.sortable th[aria-sort=descending]::after{content:" \\25BC"}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:12px 0}.card{border:1px solid #d8dde6;border-radius:6px;padding:8px 14px;min-width:150px}
.card .value{font-size:22px;font-weight:600}.card .label{color:#5b6474;font-size:12px}
img{max-width:100%;height:auto;border:1px solid #e3e7ee}figure{margin:8px 0;overflow:auto}
img.shrunk{cursor:zoom-in}img.full{max-width:none;cursor:zoom-out}figcaption{color:#5b6474;font-size:12px}
pre{background:#f6f8fb;border:1px solid #e3e7ee;padding:8px;overflow:auto;font-size:12px}
.scroll{overflow-x:auto;max-width:100%}
.path{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;word-break:break-all}
nav a{margin-right:12px}.row{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}.row figure{flex:1 1 460px;min-width:0}
"""

# Sorting and zooming by hand: a few lines, no library. A cell's data-sort (a number) wins over its text.
_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("thead th").forEach(function (th, column) {
    th.addEventListener("click", function () {
      var ascending = th.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("thead th").forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      function key(row) {
        var cell = row.cells[column], value = cell.getAttribute("data-sort");
        return value === null ? cell.textContent : value === "" ? null : parseFloat(value);
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null || y === null) return (x === null) - (y === null);  // a cell without a number goes last
        var order = (typeof x === "number" && typeof y === "number") ? x - y : String(x).localeCompare(String(y));
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
// A picture wider than its place (the confusion matrix of many classes) opens at full size on a click, scrolling
// inside its figure; a second click fits it to the page again.
document.querySelectorAll("figure img").forEach(function (image) {
  function mark() {
    if (image.classList.contains("full")) return;
    var shrunk = image.naturalWidth > image.clientWidth + 1;
    image.classList.toggle("shrunk", shrunk);
    image.title = shrunk ? "click to see it at full size" : "";
  }
  image.addEventListener("click", function () {
    if (!image.classList.contains("shrunk") && !image.classList.contains("full")) return;
    image.classList.toggle("full");
    image.classList.toggle("shrunk");
    image.title = image.classList.contains("full") ? "click to fit it to the page" : "click to see it at full size";
  });
  if (image.complete) mark(); else image.addEventListener("load", mark);
  window.addEventListener("resize", mark);
});
"""

_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


def _e(value) -> str:
    """Any value as HTML text, quotes escaped too."""
    return html.escape(str(value), quote=True)


class _Html(str):
    """Text that is HTML already: `_table` puts it into its cell as it is."""


def _name(value) -> str:
    """A class name as HTML, isolated (`<bdi>`): a right-to-left name, or one holding a right-to-left override,
    cannot reorder the text around it."""
    return f"<bdi>{_e(value)}</bdi>"


def _image(path: Path, alt: str) -> str:
    if not path.exists():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def _figure(path: Path, alt: str, caption: str) -> str:
    image = _image(path, alt)
    return f"<figure>{image}<figcaption>{_e(caption)}</figcaption></figure>" if image else ""


def _number(value, digits: int = 4) -> str:
    if value in (None, ""):
        return "–"  # undefined, e.g. the recall of a class without images
    number = float(value)
    return f"{int(number):,}" if number.is_integer() and abs(number) >= 1 else f"{number:.{digits}g}"


# Columns that hold class names: isolated, and wrapped anywhere so a long name cannot widen the page.
_NAME_COLUMNS = ("class", "true", "predicted", "top 3")


def _table(header, rows, *, numeric=(), sortable: bool = False, table_id: str = "") -> str:
    """An HTML table; columns named in `numeric` are right-aligned and sort by value, an empty one last."""
    head = "".join(f'<th class="num">{_e(h)}</th>' if h in numeric else f"<th>{_e(h)}</th>" for h in header)
    lines = []
    for row in rows:
        cells = []
        for name, value in zip(header, row):
            if name in numeric:
                number = "" if value in (None, "") else repr(float(value))
                cells.append(f'<td class="num" data-sort="{number}">{_e(_number(value))}</td>')
            elif name in _NAME_COLUMNS:
                cells.append(f'<td class="name">{value if isinstance(value, _Html) else _name(value)}</td>')
            elif name == "path":
                cells.append(f'<td class="path">{_e(value)}</td>')
            else:
                cells.append(f"<td>{_e(value)}</td>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    attributes = (f' id="{_e(table_id)}"' if table_id else "") + (' class="sortable"' if sortable else "")
    table = f"<table{attributes}><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"
    return f'<div class="scroll">{table}</div>'  # a wide table scrolls in its box, not the whole page


def _read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def evaluation_folders(run: RunDir) -> list[Path]:
    """The run's `eval/<name>/` folders that hold a `metrics.json`: test, val, train, then the others by name."""
    root = run.path / "eval"
    folders = [p.parent for p in root.glob("*/metrics.json")] if root.is_dir() else []
    rank = {name: i for i, name in enumerate(_SPLIT_ORDER)}
    return sorted(folders, key=lambda p: (rank.get(p.name, len(rank)), p.name))


# The files an evaluation writes beside metrics.json, pictures apart, and its pictures.
_EVALUATION_FILES = ("confusion_matrix.csv", "per_class.csv", "most_confused.csv", "misclassified.csv")
_PICTURES = ("confusion_matrix.png", "confusion_matrix_normalized.png", "calibration.png")


def _incomplete(folder: Path, metrics: dict) -> str | None:
    """Why the files of an evaluation folder do not make one evaluation (one stopped part-way), or `None`."""
    missing = [name for name in _EVALUATION_FILES if not (folder / name).exists()]
    if missing:
        return f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing beside metrics.json"
    counted = sum(int(float(row.get("support") or 0)) for row in _read_csv(folder / "per_class.csv"))
    mistakes = len(_read_csv(folder / "misclassified.csv"))
    if counted != metrics["images"] or mistakes != metrics["errors"]:
        return (f"metrics.json counts {metrics['images']:,} images and {metrics['errors']:,} mistakes, but "
                f"per_class.csv counts {counted:,} images and misclassified.csv {mistakes:,} mistakes")
    return None


def _value(metrics: dict, key: str, form: str) -> str:
    """`metrics[key]` formatted with `form`; "–" where it is undefined (null)."""
    value = metrics.get(key)
    return format(value, form) if is_number(value) else "–"


def _cards(metrics: dict) -> str:
    interval = metrics.get("error_rate_interval") or {}
    cards = [("error rate", f"{metrics['error_rate']:.2%}",
              f"95% interval {interval['low']:.2%}–{interval['high']:.2%} (Wilson)" if interval else ""),
             ("accuracy", f"{metrics['accuracy']:.2%}", f"{metrics['errors']:,} wrong of {metrics['images']:,}")]
    for key, label in (("balanced_accuracy", "balanced accuracy"), ("macro_f1", "macro F1"),
                       ("log_loss", "log loss"), ("expected_calibration_error", "calibration error (ECE)")):
        if key in metrics:
            cards.append((label, _value(metrics, key, ".2%" if key == "balanced_accuracy" else ".3f"), ""))
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="value">{_e(v)}</div><div class="label">{_e(l)}</div>'
        f'<div class="label">{_e(note)}</div></div>' for l, v, note in cards) + "</div>"


def _metrics_table(metrics: dict) -> str:
    keys = ["accuracy", "error_rate", "balanced_accuracy", *(k for k in metrics if k.startswith("top_")),
            "log_loss", "expected_calibration_error", "macro_precision", "macro_recall", "macro_f1",
            "weighted_precision", "weighted_recall", "weighted_f1"]
    rows = [(key.replace("_", " "), metrics[key]) for key in keys if key in metrics]
    interval = metrics.get("error_rate_interval")
    if interval:
        rows.insert(2, ("error rate, 95% Wilson interval", f"{interval['low']:.4g} – {interval['high']:.4g}"))
    return _table(["metric", "value"], ([name, _number(v) if v is None or is_number(v) else v] for name, v in rows))


def _evaluation_section(run: RunDir, folder: Path, anchor: str) -> str:
    metrics = read_metrics(folder)
    name = folder.name
    parts = [f'<h2 id="{_e(anchor)}">Evaluation: {_e(name)}</h2>']
    source = f" of the folder {metrics['source']}" if metrics.get("source") else (f" of the {name} split")
    parts.append(f'<p class="muted">{metrics["images"]:,} images{_e(source)}, {metrics["classes"]} classes'
                 + (f"; {metrics['skipped_files']:,} file(s) skipped" if metrics.get("skipped_files") else "") + ".</p>")
    copies = metrics.get("copies_of_run_images")
    if isinstance(copies, dict) and copies:
        counts = " and ".join(f"{count:,} of its {split} split" for split, count in copies.items())
        parts.append(f'<p class="warning"><b>{sum(copies.values()):,} of these images are copies of images the run '
                     f'trained on or chose its best epoch by</b> ({_e(counts)}): they flatter these numbers.</p>')
    again = _e(evaluate_command(folder, metrics))
    incomplete = _incomplete(folder, metrics)
    if incomplete:
        # Only metrics.json can be trusted: the tables and pictures would be missing or another evaluation's.
        parts.append(f'<p class="warning"><b>This evaluation is incomplete</b>: {_e(incomplete)}, as when '
                     f"<code>imgclf evaluate</code> is stopped part-way. Run <code>{again}</code> again for the "
                     "confusion matrices, per-class table, mistakes and calibration.</p>")
        parts.append(_cards(metrics))
        parts.append(_metrics_table(metrics))
        return "\n".join(parts)
    parts.append(_cards(metrics))
    parts.append(_metrics_table(metrics))
    missing = [picture for picture in _PICTURES if not (folder / picture).exists()]
    if missing:
        parts.append(f'<p class="warning">The pictures {_e(", ".join(missing))} are missing: <code>{again}</code> '
                     "draws them.</p>")

    parts.append("<h3>Confusion matrices</h3>")
    parts.append('<p class="muted">Rows are the true classes, columns the predictions; the normalised matrix divides '
                 "each row by its total, so its diagonal is the recall of each class.</p>")
    parts.append('<div class="row">'
                 + _figure(folder / "confusion_matrix.png", f"confusion matrix of {name}", "counts")
                 + _figure(folder / "confusion_matrix_normalized.png", f"normalised confusion matrix of {name}",
                           "row-normalised") + "</div>")

    per_class = _read_csv(folder / "per_class.csv")
    if per_class:
        parts.append("<h3>Per class</h3><p class=\"muted\">Click a column header to sort; – marks a value that is "
                     "undefined (the recall of a class without images, the precision of one never predicted).</p>")
        header = ["class", "precision", "recall", "f1", "support", "error_rate"]
        parts.append(_table(header, ([row[c] for c in header] for row in per_class),
                            numeric=header[1:], sortable=True, table_id=f"per-class-{anchor}"))

    pairs = _read_csv(folder / "most_confused.csv")
    parts.append("<h3>Most confused pairs</h3>")
    if pairs:
        header = ["true", "predicted", "count", "share"]
        parts.append('<p class="muted">share: the fraction of the true class predicted as the other; '
                     f"the {min(len(pairs), _MOST_CONFUSED_ROWS)} largest of {len(pairs)} (all in most_confused.csv).</p>")
        parts.append(_table(header, ([row[c] for c in header] for row in pairs[:_MOST_CONFUSED_ROWS]),
                            numeric=("count", "share"), sortable=True))
    else:
        parts.append("<p>No class was mistaken for another.</p>")

    mistakes = _read_csv(folder / "misclassified.csv")
    gallery = folder / "gallery.png"
    if mistakes:
        parts.append("<h3>The highest-loss mistakes</h3>")
        parts.append('<p class="muted">Where a heat map is drawn, it shows where the model looked for the class it '
                     "predicted (Grad-CAM): on the object, or on the background? Every mistake is in "
                     "misclassified.csv.</p>")
        parts.append(_figure(gallery, f"gallery of mistakes of {name}", "numbered by loss, #1 the worst"))
        shown = min(len(mistakes), GALLERY_SIZE)  # the gallery shows the first rows of misclassified.csv
        header = ["#", "path", "true", "predicted", "confidence", "loss", "top 3"]
        rows = ([k + 1, row["path"], row["true"], row["predicted"], row["confidence"], row["loss"],
                 _Html("; ".join(f"{_name(row[f'top_{i}_class'])} {float(row[f'top_{i}_probability']):.0%}"
                                 for i in (1, 2, 3) if row.get(f"top_{i}_class")))]
                for k, row in enumerate(mistakes[:shown]))
        parts.append(_table(header, rows, numeric=("#", "confidence", "loss"), table_id=f"gallery-{anchor}"))
    parts.append("<h3>Calibration</h3>")
    parts.append('<p class="muted">How often the model is right when it is this sure: bars under the diagonal mean '
                 "it is more confident than accurate.</p>")
    parts.append(_figure(folder / "calibration.png", f"reliability diagram of {name}",
                         f"expected calibration error {_value(metrics, 'expected_calibration_error', '.3f')}"))
    skipped = _read_csv(folder / "skipped.csv")
    if skipped:
        parts.append("<h3>Files skipped</h3>")
        parts.append(_table(["path", "problem"], ([row["path"], row["problem"]] for row in skipped)))
    return "\n".join(p for p in parts if p)


def _weights_text(weights) -> str:
    """The weights a run started from, as `environment.json` records them, in words: `"ImageNet (/path/file.h5)"`."""
    if not isinstance(weights, dict):
        return ""
    sources = {"none": "none: trained from scratch", "imagenet": "ImageNet", "run": "another run's model",
               "file": "a weights file"}
    source = sources.get(weights.get("source"), str(weights.get("source", "")))
    return f"{source} ({weights['file']})" if weights.get("file") else source


def _dataset_section(run: RunDir) -> str:
    from ..images import ImageProblem
    from ..manifest import Manifest

    if not run.manifest_path.exists():
        return ""
    manifest = Manifest.read_csv(run.manifest_path)
    counts = manifest.counts()
    splits = ("train", "val", "test")
    rows = [[label, *(row[s] for s in splits), sum(row.values())] for label, row in counts.items()]
    rows.append(["total", *(sum(r[s] for r in counts.values()) for s in splits), len(manifest.usable)])
    parts = ['<h2 id="dataset">Dataset</h2>',
             _table(["class", *splits, "total"], rows, numeric=(*splits, "total"))]
    problems = manifest.problem_counts()
    left_out = [e for e in manifest.entries if not e.usable]
    warned = sum(1 for e in manifest.entries if e.usable and e.problem)
    parts.append(f"<p>{len(manifest):,} files: {len(manifest.usable):,} used ({warned:,} with warnings), "
                 f"{len(left_out):,} left out with errors.</p>")
    if problems:
        def severity(slug):
            try:
                return ImageProblem(slug).severity.value
            except ValueError:
                return ""
        parts.append("<h3>Audit findings</h3>")
        parts.append(_table(["problem", "status", "files"],
                            ([slug, severity(slug), n] for slug, n in problems.items()), numeric=("files",)))
    if left_out:
        parts.append("<h3>Files left out</h3>")
        parts.append(_table(["path", "class", "problem", "detail"],
                            ([escape_name(e.path), e.label, e.problem, e.detail] for e in left_out[:_LEFT_OUT_ROWS])))
        if len(left_out) > _LEFT_OUT_ROWS:
            parts.append(f"<p class=\"muted\">… and {len(left_out) - _LEFT_OUT_ROWS:,} more in manifest.csv.</p>")
    return "\n".join(parts)


def _training_section(run: RunDir) -> str:
    parts = ['<h2 id="training">Training</h2>']
    history = _read_csv(run.history_path)
    if history:
        phases = collections.Counter(row.get("phase", "") for row in history)
        parts.append(f"<p>{len(history)} epoch(s)" + (
            ": " + ", ".join(f"{n} in phase {_e(p)}" for p, n in phases.items()) if any(phases) else "") + ".</p>")
    curves = run.path / "training_curves.png"
    # A resumed run appends epochs to history.csv: curves older than it miss them.
    if history and (not curves.exists() or curves.stat().st_mtime_ns < run.history_path.stat().st_mtime_ns):
        from .figures import plot_history

        plot_history(run.history_path, curves)
    parts.append(_figure(curves, "training curves", "loss and accuracy per epoch; dashed lines mark a new phase"))
    if run.environment_path.exists():
        environment = read_json(run.environment_path)
        model = environment.get("model", {})
        facts = [("model", model.get("name", "")), ("chosen because", model.get("reason") or ""),
                 ("weights", _weights_text(model.get("weights"))),
                 ("started", environment.get("created", "")), ("host", environment.get("host", "")),
                 ("versions", ", ".join(f"{k} {v}" for k, v in environment.get("versions", {}).items() if v)),
                 ("data hash", environment.get("data_hash", ""))]
        parts.append(_table(["", ""], [(k, v) for k, v in facts if v]).replace("<thead><tr><th></th><th></th></tr></thead>", ""))
    if run.config_path.exists():
        parts.append("<h3>Resolved config (config.yaml)</h3>")
        parts.append(f"<pre>{_e(run.config_path.read_text(encoding='utf-8'))}</pre>")
    return "\n".join(parts)


def build_report(run) -> str:
    """The HTML text of a run's report; see `write_report`."""
    run = run if isinstance(run, RunDir) else RunDir(run)
    run.require("config.yaml")
    folders = evaluation_folders(run)
    anchors = {folder: f"eval-{i}" for i, folder in enumerate(folders)}
    title = f"imgclf report: {escape_name(str(run.path.name))}"
    nav = ['<a href="#dataset">dataset</a>', '<a href="#training">training</a>',
           *(f'<a href="#{anchors[f]}">{_e(f.name)}</a>' for f in folders)]
    stopped = run.unfinished()
    if stopped:
        summary = f'<p class="warning"><b>This run has no model.keras yet</b>: {_e(stopped)}</p>'
    elif folders:
        metrics = read_metrics(folders[0])
        interval = metrics.get("error_rate_interval")
        summary = (f"<p><b>{_e(folders[0].name)} error rate {metrics['error_rate']:.2%}</b>"
                   + (f" (95% interval {interval['low']:.2%}–{interval['high']:.2%})" if interval else "")
                   + f" on {metrics['images']:,} images"
                   + (" (an incomplete evaluation, see below)" if _incomplete(folders[0], metrics) else "") + ".</p>")
    else:
        summary = "<p>Not evaluated yet: run <code>imgclf evaluate</code> on this run.</p>"
    body = [f"<h1>{_e(title)}</h1>", f'<p class="muted path">{_e(escape_name(str(run.path.resolve())))}</p>',
            f"<nav>{' '.join(nav)}</nav>", summary,
            *(_evaluation_section(run, folder, anchors[folder]) for folder in folders),
            _dataset_section(run), _training_section(run)]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{_POLICY}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head>\n<body>\n"
        + "\n".join(part for part in body if part)
        + f"\n<script>{_SCRIPT}</script>\n</body></html>\n"
    )


def write_report(run, path=None) -> Path:
    """Writes a run's `report.html`: one self-contained page to open, send or archive.

    It holds the dataset (images per class and split, audit findings, files
    left out), the resolved config, the training curves with their phases,
    and for each evaluation in `eval/` the metrics with the error rate's 95%
    interval, both confusion matrices, the per-class table (sortable), the
    most-confused pairs, the gallery of the highest-loss mistakes with their
    paths, and the reliability diagram. Pictures are embedded; nothing is
    loaded from elsewhere.

    Args:
        run: a `RunDir` or its path.
        path: the file to write. Defaults to `RUN/report.html`.

    Returns:
        The path written.
    """
    run = run if isinstance(run, RunDir) else RunDir(run)
    return write_text(Path(path) if path else run.path / "report.html", build_report(run))

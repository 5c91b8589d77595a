"""The dataset doctor: decode every file fully, say which file is bad and why.

`audit` decodes every image in worker processes (no pixels are kept after a
file is checked, so memory stays flat in the number of files), writes
`audit.csv`, reports class balance, split sizes and duplicates across splits,
and can move the files with errors aside (never deleting them).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import shutil
from pathlib import Path

from .images import ImageLimits, ImageProblem, Severity
from .manifest import Manifest, flag_duplicates, printable_name, read_files, scan
from .files import escape_name, is_inside, write_csv

AUDIT_COLUMNS = ("path", "label", "split", "status", "problem", "detail", "width", "height", "sha1", "quarantined")


@dataclasses.dataclass
class AuditResult:
    """What the audit found.

    Attributes:
        manifest: the dataset, with every file's status after a full decode;
            files with errors have no split.
        csv_path: where `audit.csv` was written, or `None`.
        quarantined: original path → new path of every file moved aside.
        quarantine_dir: the folder they were moved into, or `None`.
    """

    manifest: Manifest
    csv_path: Path | None = None
    quarantined: dict[str, str] = dataclasses.field(default_factory=dict)
    quarantine_dir: Path | None = None

    @property
    def errors(self) -> list:
        return [e for e in self.manifest.entries if e.status == Severity.ERROR.value]

    @property
    def warnings(self) -> list:
        return [e for e in self.manifest.entries if e.status == Severity.WARNING.value]

    def problem_counts(self) -> dict[str, int]:
        """Files per problem slug, most frequent first (a file with two problems counts under both)."""
        return self.manifest.problem_counts()

    def class_counts(self) -> dict[str, int]:
        """Usable images per class."""
        return dict(sorted(collections.Counter(e.label for e in self.manifest.usable).items()))

    @property
    def imbalance_ratio(self) -> float:
        """Images in the largest class divided by images in the smallest."""
        counts = self.class_counts().values()
        return max(counts) / min(counts) if counts else float("nan")

    def cross_split_duplicates(self) -> list[tuple[str, list[str]]]:
        """Content hashes found in more than one split, with their files (`Manifest.cross_split_duplicates`)."""
        return self.manifest.cross_split_duplicates()

    def summary(self) -> str:
        """A short text report: totals, problems (errors first), classes × splits, balance."""
        entries = self.manifest.entries
        ok = len(entries) - len(self.errors) - len(self.warnings)
        lines = [f"{len(entries):,} files: {ok:,} ok, {len(self.warnings):,} with warnings (used), "
                 f"{len(self.errors):,} with errors (left out)"]
        counts = self.problem_counts()
        if counts:
            examples = {}
            for entry in entries:
                for problem in filter(None, entry.problem.split(";")):
                    examples.setdefault(problem, entry.path)
            lines += ["", f"{'problem':<22} {'status':<8} {'files':>6}  example"]
            severity = {problem: ImageProblem(problem).severity for problem in counts}
            for problem in sorted(counts, key=lambda p: (severity[p] != Severity.ERROR, -counts[p], p)):
                lines.append(f"{problem:<22} {severity[problem].value:<8} {counts[problem]:>6}  "
                             f"{printable_name(self.manifest.display_path(examples[problem]))}")
        classes = self.class_counts()
        if classes:
            largest, smallest = max(classes, key=classes.get), min(classes, key=classes.get)
            sizes = (f"every class {classes[largest]:,} images" if classes[largest] == classes[smallest] else
                     f"largest '{largest}' {classes[largest]:,}, smallest '{smallest}' {classes[smallest]:,}")
            lines += ["", *self.manifest.class_table(),
                      f"{len(classes)} classes; imbalance ratio {self.imbalance_ratio:.1f} ({sizes})"]
        lines.extend(f"note: {printable_name(note)}" for note in self.manifest.notes)
        if self.csv_path:
            lines.append(f"details: {_printable_path(self.csv_path)}")
        if self.quarantined:
            lines.append(f"{len(self.quarantined)} file(s) with errors moved to {_printable_path(self.quarantine_dir)}")
        return "\n".join(lines)


def _printable_path(path) -> str:
    """A path for one line of the summary: undecodable bytes, newlines and tabs escaped."""
    return printable_name(escape_name(os.fspath(path)))


def audit(
    data,
    *,
    out=None,
    quarantine=None,
    limits: ImageLimits = ImageLimits(),
    val: float = 0.15,
    test: float = 0.15,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> AuditResult:
    """Decodes every image fully and reports every problem.

    Args:
        data: a folder or CSV (scanned first), or a `Manifest`.
        out: folder to write `audit.csv` (and `manifest.csv`) into; `None`
            writes nothing. Defaults to `None`.
        quarantine: folder to move broken files into, keeping their path
            relative to the dataset root; never deletes. Label conflicts stay
            where they are: a person must decide which label is right.
            Defaults to `None`.
        limits: pixel limit, smallest side and largest aspect ratio.
            Defaults to `ImageLimits()`.
        val: validation fraction when scanning. Defaults to 0.15.
        test: test fraction when scanning. Defaults to 0.15.
        seed: split seed when scanning. Defaults to 0.
        workers: decoding processes. Defaults to `None`: one per CPU.
        progress: show progress bars. Defaults to `True`.

    Returns:
        An `AuditResult`.

    Example:

    >>> result = audit("photos/", out="audit/")
    >>> print(result.summary())
    """
    for folder, what in ((quarantine, "quarantine folder"), (out, "audit folder")):
        if folder and not isinstance(data, Manifest) and os.path.isdir(data) and is_inside(folder, data):
            raise ValueError(f"The {what} {escape_name(os.fspath(folder))} is inside the dataset "
                             f"{escape_name(os.fspath(data))}: the next scan would read it as a class. Choose a "
                             "folder outside it, e.g. beside it.")
    if isinstance(data, Manifest):
        manifest = data
        read_files(manifest.entries, limits=limits, decode=True, workers=workers, progress=progress)
        flag_duplicates(manifest.entries)
        manifest.note_leaks()
    else:
        manifest = scan(data, val=val, test=test, seed=seed, limits=limits, decode=True, workers=workers,
                        progress=progress)
    for entry in manifest.entries:
        if not entry.usable:
            entry.split = ""

    result = AuditResult(manifest)
    if quarantine:
        broken = [e for e in result.errors if ImageProblem.LABEL_CONFLICT.value not in e.problem]
        result.quarantine_dir = Path(quarantine)
        result.quarantined = _quarantine(broken, Path(manifest.root), result.quarantine_dir)
        outside = len([e for e in broken if e.path not in result.quarantined and os.path.lexists(e.path)])
        if outside:
            how = "a CSV path that leaves its folder" if Path(manifest.root).is_file() else "a symlink"
            manifest.notes.append(f"{outside:,} file(s) with errors left where they are: they lie outside the dataset "
                                  f"folder (reached through {how}), and quarantine moves only the dataset's own files")
    if out:
        out = Path(out)
        rows = ([escape_name(e.path), e.label, e.split, e.status, e.problem, e.detail, e.width, e.height, e.sha1,
                 escape_name(result.quarantined.get(e.path, ""))] for e in manifest.entries)
        result.csv_path = write_csv(out / "audit.csv", AUDIT_COLUMNS, rows)
        manifest.to_csv(out / "manifest.csv")
    return result


def _quarantine(entries, root: Path, folder: Path) -> dict[str, str]:
    """Moves each file under `folder`, keeping its path relative to `root`; returns old → new.

    A symlink is moved as a link to the absolute path of the file it leads
    to, or to that file's new place when it is quarantined too: moved as it
    is, a relative link would point at nothing.
    """
    base = root if root.is_dir() else root.parent
    moved, new_places, links = {}, {}, {}
    for entry in entries:
        source = Path(entry.path)
        if not os.path.lexists(source) or not is_inside(source.parent, base):
            continue  # gone, or a shared folder elsewhere that a class links to: not the dataset's to move
        try:
            relative = source.relative_to(os.path.abspath(base))
        except ValueError:
            relative = Path(entry.label) / source.name
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        counter = 1
        while os.path.lexists(target):  # never overwrite an earlier quarantined file, nor a link to nowhere
            target = target.with_name(f"{source.stem}.{counter}{source.suffix}")
            counter += 1
        if source.is_symlink():
            links[target] = os.path.realpath(source)
            os.symlink(links[target], target)
            os.unlink(source)
        else:
            new_places[os.path.realpath(source)] = os.path.abspath(target)
            shutil.move(str(source), target)
        moved[entry.path] = str(target)
    for link, pointed in links.items():
        if pointed in new_places:
            os.unlink(link)
            os.symlink(new_places[pointed], link)
    return moved

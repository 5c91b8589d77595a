"""The Manifest: the table of images that travels through every stage.

`scan` builds one from a folder or a CSV, hashes every file, reads every header,
flags duplicates and label conflicts, and assigns a stable stratified split.
"""

from __future__ import annotations

import codecs
import collections
import csv
import dataclasses
import errno
import fractions
import hashlib
import io
import json
import math
import os
import re
import time
import unicodedata
from pathlib import Path
from typing import Callable, Sequence

from .cache import StagedImages, scan_is_cached, scan_record
from .config import DataConfig, ImageSpec
from .files import escape_name, shell_word, unescape_name, write_csv
from .images import (IMAGE_EXTENSIONS, FileCheck, ImageLimits, ImageProblem, Severity, a_format, check_header,
                     inspect_file, signature_format)
from .parallel import parallel_map

SPLITS = ("train", "val", "test")
_LEAK_NOTE = "appear in more than one split (a leak between splits)"
SPLIT_FOLDER_NAMES = {"train": "train", "val": "val", "validation": "val", "valid": "val", "test": "test"}
IGNORED_NAMES = {".ds_store", "thumbs.db", "desktop.ini", "__macosx"}
DATASET_STAMP = ".imgclf-dataset.json"  # the dataset recipes' record of a build (datasets/_common.py)
COLUMNS = ("path", "label", "split", "sha1", "width", "height", "channels", "status", "problem", "detail", "stat")
# Manifests written before `stat` was recorded lack it; their rows are checked by the manifest's own time.
_OPTIONAL_COLUMNS = ("stat",)


class DatasetError(ValueError):
    """The folder or CSV cannot be used as a dataset; the message says why and how to fix it."""


@dataclasses.dataclass
class Entry:
    """One image file of the dataset (a row of `manifest.csv`).

    `path` is the file's absolute path as the `os` functions take it; a file
    name that is not valid UTF-8 holds surrogate characters there and is
    written to CSV files and summaries with `files.escape_name`. `label` and
    `detail` are always plain text. `stat` is the file's size, modification
    time and inode change time (nanoseconds) when it was hashed
    (`file_stat`), so that a reused manifest hashes again exactly the files
    changed since; empty when unknown. `pixels_sha1` is the hash of the
    decoded pixels when the file was decoded (`images.pixels_hash`, by
    `imgclf audit`), else empty; it is not written to CSV.
    """

    path: str
    label: str
    split: str = ""
    sha1: str = ""
    width: int = 0
    height: int = 0
    channels: int = 0
    status: str = Severity.OK.value
    problem: str = ""
    detail: str = ""
    stat: str = dataclasses.field(default="", compare=False)
    pixels_sha1: str = dataclasses.field(default="", compare=False)

    @property
    def usable(self) -> bool:
        """Whether the image is used for training and evaluation."""
        return self.status != Severity.ERROR.value

    def flag(self, problem: ImageProblem, detail: str) -> None:
        """Adds a finding, raising the status to the problem's severity if worse."""
        detail = detail.encode("utf-8", "backslashreplace").decode("utf-8")  # text, even if it quotes a raw file name
        self.problem = ";".join(p for p in (self.problem, problem.value) if p)
        self.detail = "; ".join(d for d in (self.detail, detail) if d)
        if problem.severity == Severity.ERROR or self.status == Severity.ERROR.value:
            self.status = Severity.ERROR.value
        else:
            self.status = Severity.WARNING.value


# Class names longer than this are cut in the class table (the names themselves are kept whole).
TABLE_NAME_COLUMNS = 48


@dataclasses.dataclass
class Manifest:
    """A table of images with labels, splits, hashes and problems.

    Args:
        entries: one `Entry` per file.
        root: the folder (or CSV) the entries were scanned from.
        notes: dataset-level findings (empty class folders, tiny classes,
            ignored files), one sentence each.
        staged: the images a scan with `cache_spec` decoded while it read
            the files (`cache.StagedImages`), for the decoded-image cache;
            `None` otherwise. Not written to CSV.
        split_settings: the `val`, `test` and `seed` of the scan that split
            the entries, e.g. `{"val": 0.15, "test": 0.15, "seed": 0}`;
            `None` for a manifest read from CSV. Not written to CSV.
        hashed_at: when the scan started to read the files (`time.time()`),
            so that `imgclf.train` checks again those changed since;
            `None` for a manifest read from CSV. Not written to CSV.
    """

    entries: list[Entry]
    root: str = ""
    notes: list[str] = dataclasses.field(default_factory=list)
    staged: StagedImages | None = dataclasses.field(default=None, repr=False, compare=False)
    split_settings: dict | None = dataclasses.field(default=None, compare=False)
    hashed_at: float | None = dataclasses.field(default=None, compare=False)

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        # Short: the default repr lists every entry, megabytes in a notebook cell for a large folder.
        return (f"Manifest({len(self.entries):,} files, {len(self.usable):,} usable, {len(self.classes)} classes, "
                f"root={self.root!r})")

    @property
    def usable(self) -> list[Entry]:
        """Entries that are used for training and evaluation."""
        return [e for e in self.entries if e.usable]

    @property
    def classes(self) -> list[str]:
        """Sorted names of the classes that have at least one usable image."""
        return sorted({e.label for e in self.usable})

    def split(self, name: str) -> list[Entry]:
        """Usable entries of split `name` (`"train"`, `"val"` or `"test"`)."""
        if name not in SPLITS:
            raise ValueError(f"Unknown split {name!r}. Valid splits: {SPLITS}")
        return [e for e in self.usable if e.split == name]

    def check_entries(self) -> None:
        """Refuses usable entries that no split or class can hold, as a `Manifest` edited or built in Python may have.

        Raises:
            DatasetError: naming the file, what is wrong and the fix.
        """
        for entry in self.usable:
            if entry.split not in SPLITS:
                what = f"its split is {entry.split!r}" if entry.split else "it has no split"
                raise DatasetError(f"{escape_name(entry.path)}: {what}, but a usable image's split is one of "
                                   f"{', '.join(SPLITS)} (lower case). Set it, or remove the entry to leave the file "
                                   "out; imgclf.scan draws the splits of a folder.")
            if not isinstance(entry.label, str) or not entry.label.strip():
                raise DatasetError(f"{escape_name(entry.path)}: its label is {entry.label!r}, but a usable image's "
                                   "label is a class name. Set it, or remove the entry to leave the file out.")

    def counts(self) -> dict[str, dict[str, int]]:
        """Usable images per class and split: `{class: {split: n}}`."""
        table = {label: dict.fromkeys(SPLITS, 0) for label in self.classes}
        for entry in self.usable:
            table[entry.label][entry.split] += 1
        return table

    @property
    def data_hash(self) -> str:
        """A hash of the content, labels and splits of the usable images.

        It changes when any image, label or split changes, and not when the
        folder is moved, so it identifies the data a run was trained on.
        """
        digest = hashlib.sha1()
        for line in sorted(f"{e.label}\t{e.split}\t{e.sha1}" for e in self.usable):
            digest.update(line.encode() + b"\n")
        return digest.hexdigest()

    # CSV round trip -------------------------------------------------------
    def to_csv(self, path) -> Path:
        """Writes `manifest.csv` atomically.

        Paths are written as absolute paths, escaped with `files.escape_name`
        (a byte that is not UTF-8 as `\\xe9`, a carriage return as `\\x0d`, a
        backslash as `\\\\`);
        `read_csv` turns them back into the same files.
        """
        rows = ([escape_name(e.path), *(getattr(e, c) for c in COLUMNS[1:])] for e in self.entries)
        return write_csv(path, COLUMNS, rows)

    @classmethod
    def read_csv(cls, path) -> "Manifest":
        """Reads a manifest written by `to_csv`, or one edited by hand.

        A byte-order mark and rows of empty cells (as spreadsheets save them)
        are allowed, and spaces around the split, hash and size cells. A
        relative path is relative to the manifest's folder. A usable row
        whose `sha1` is not 40 hex digits gets an empty one, which
        `recheck_changed` fills in by hashing the file.

        Raises:
            DatasetError: if the file is not UTF-8 text, lacks a column of
                `COLUMNS`, or a row lacks a value or has one too many (an
                unquoted comma), or holds an unknown split, no split for a
                usable file, or a size that is not a whole number (naming the
                line).
        """
        path = Path(path)
        name = escape_name(str(path))
        reader = csv.reader(io.StringIO(_csv_text(path), newline=""))
        header = [field.strip() for field in next(reader, [])]
        missing = [c for c in COLUMNS if c not in header and c not in _OPTIONAL_COLUMNS]
        if missing:
            hint = (" Its columns are separated by semicolons: save it with commas." if len(header) == 1 and ";" in header[0]
                    else "")
            raise DatasetError(f"{name} is not an imgclf manifest: it lacks the columns {missing}.{hint} "
                               "`imgclf scan DIR --out FILE` writes one.")
        column = {c: header.index(c) for c in COLUMNS if c in header}
        entries, first_line, repeats = [], {}, []
        for cells in reader:
            number = reader.line_num
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) <= max(column.values()):
                raise DatasetError(f"{name}, line {number}: the row has {len(cells)} of the {len(header)} columns: the "
                                   "file may be cut short. Restore it, or remove the row.")
            _refuse_extra_cells(path, number, cells, header, empty_allowed=False)  # imgclf writes every row whole
            row = {c: cells[i] if c in ("path", "label", "problem", "detail") else cells[i].strip()
                   for c, i in column.items()}
            usable = row["status"] != Severity.ERROR.value
            if row["split"] not in (*SPLITS, ""):
                raise DatasetError(f"{name}, line {number}: unknown split {row['split']!r}. Valid splits: "
                                   f"{', '.join(SPLITS)} (lower case), or empty for a file with errors.")
            if usable and not row["split"]:
                raise DatasetError(f"{name}, line {number}: no split for {row['path']!r}, a usable file. Write train, "
                                   "val or test; only a file with errors (status error) has none.")
            try:
                sizes = {key: int(row[key] or 0) for key in ("width", "height", "channels")}
            except ValueError:
                raise DatasetError(f"{name}, line {number}: width, height and channels must be whole numbers. Received: "
                                   f"{row['width']!r}, {row['height']!r}, {row['channels']!r}.") from None
            if usable and not _SHA1.fullmatch(row["sha1"]):
                row["sha1"] = ""  # a hash written by hand: the file is hashed again
            file = Path(unescape_name(row["path"]))
            entry = Entry(**{**row, "path": str(file) if file.is_absolute() else os.path.abspath(path.parent / file),
                             **sizes})
            first, first_entry = first_line.setdefault(entry.path, (number, entry))
            if first == number:
                entries.append(entry)
            elif (entry.label, entry.split) != (first_entry.label, first_entry.split):
                raise DatasetError(f"{name}, line {number}: {row['path']!r} is listed as {entry.label!r} in split "
                                   f"{entry.split or '(none)'!r}, and on line {first} as {first_entry.label!r} in "
                                   f"{first_entry.split or '(none)'!r}. A file has one class and one split: keep one "
                                   "of the two rows.")
            else:
                repeats.append((number, first))
        manifest = cls(entries, root=str(path))
        if repeats:
            manifest.notes.append(f"{len(repeats)} row(s) of {name} repeat the file of an earlier row (line "
                                  f"{repeats[0][0]} repeats line {repeats[0][1]}): each file is used once")
        return manifest

    def recheck_changed(self, since: float, *, limits: ImageLimits = ImageLimits(), workers: int | None = None,
                        progress: bool = True, entries: Sequence[Entry] | None = None,
                        note: bool = True) -> list[Entry]:
        """Checks again the usable files that are gone or were changed since they were hashed.

        A reused manifest (`imgclf train --manifest`) names files by path and
        their pixels by hash; a file rewritten since would otherwise be
        trained on with the cached pixels of its old content, and a deleted
        one evaluated from the cache. Each such file is hashed and checked
        again (a gone one becomes `unreadable`), and a note says how many.
        A file is taken as changed when its size, modification time or inode
        change time differs from the `stat` recorded when it was hashed: a
        file replaced by one that keeps an older modification time (`cp -p`,
        `rsync -a`, `touch -r`) is seen too, since no tool sets the change
        time back, and so is a file changed before the manifest was edited by
        hand; a `chmod` or a new hard link also counts, at the cost of
        hashing the file at every later check (the note counts the files
        whose content is new). A row without a `stat` (a manifest written by
        an earlier imgclf, or a row added by hand) is taken as changed when
        its modification or change time is later than `since`. A row
        without a content hash is hashed too.

        Args:
            since: a time stamp, e.g. the manifest file's modification time;
                used for rows without a `stat`.
            limits: image limits. Defaults to `ImageLimits()`.
            workers: processes. Defaults to `None`: one per CPU.
            progress: show a progress bar. Defaults to `True`.
            entries: check only these (e.g. one split's). Defaults to
                `None`: every usable entry.
            note: add the note to `notes`. Defaults to `True`.

        Returns:
            The entries checked again.
        """
        changed = []
        for entry in self.usable if entries is None else [e for e in entries if e.usable]:
            if entry.stat:
                if file_stat(entry.path) != entry.stat or not entry.sha1:
                    changed.append(entry)
                continue
            try:
                status = os.stat(entry.path)
                modified = max(status.st_mtime, status.st_ctime)
            except OSError:
                modified = math.inf
            if modified > since or not entry.sha1:
                changed.append(entry)
        if changed:
            hashes = {id(e): e.sha1 for e in changed}
            read_files(changed, limits=limits, workers=workers, progress=progress)
            touched = [e for e in changed if hashes[id(e)]]
            gone = sum(not e.usable for e in touched)
            other = sum(e.usable and e.sha1 != hashes[id(e)] for e in touched)
            if touched and note:
                self.notes.append(f"{len(touched):,} file(s) touched since the manifest was written (edited, or their "
                                  "inode changed: chmod, a copy that kept the times) were hashed again: "
                                  f"{other:,} with other content, {gone:,} gone or unreadable and left out")
            unhashed = [e for e in changed if not hashes[id(e)]]
            if unhashed:
                self.notes.append(f"{len(unhashed):,} row(s) of the manifest had no content hash (a sha1 of 40 hex "
                                  f"digits) and were hashed; {sum(not e.usable for e in unhashed):,} of their files "
                                  "are gone or unreadable and left out")
        return changed

    def cross_split_duplicates(self) -> list[tuple[str, list[str]]]:
        """Content hashes of usable images found in more than one split, with their files, by path.

        A pre-split folder with the same picture in `train/` and `test/`
        tests the model on an image it learned; a split imgclf draws keeps
        copies together, so only given splits can leak. Where the files were
        decoded (`imgclf audit`), copies are those with the same pixels, and
        the hash is that of the pixels: the split, which goes by the bytes,
        can put one picture in another format in another split.
        """
        groups = collections.defaultdict(list)
        for entry in self.usable:
            groups[entry.pixels_sha1 or entry.sha1].append(entry)
        return [(sha1, sorted(e.path for e in group)) for sha1, group in groups.items()
                if len({e.split for e in group}) > 1]

    def note_leaks(self) -> None:
        """Adds a note naming the images in more than one split (replacing an earlier such note)."""
        self.notes = [note for note in self.notes if _LEAK_NOTE not in note]
        leaks = self.cross_split_duplicates()
        if leaks:
            example = " and ".join(self.display_path(path) for path in leaks[0][1][:2])
            self.notes.append(f"{len(leaks):,} image(s) {_LEAK_NOTE}: their results flatter the model, e.g. {example}; "
                              "`imgclf audit --out DIR` lists every one")

    def class_table(self) -> list[str]:
        """Lines of a table: usable images per class and split, with totals."""
        counts = self.counts()
        names = short_names([printable_name(label) for label in counts], TABLE_NAME_COLUMNS, _columns)
        rows = list(zip(names, counts.values()))
        width = max([5] + [_columns(label) for label, _ in rows])
        lines = [f"{'class':<{width}}  {'train':>6}  {'val':>6}  {'test':>6}  {'total':>6}"]
        for label, row in rows:
            padded = label + " " * (width - _columns(label))
            lines.append(f"{padded}  {row['train']:>6}  {row['val']:>6}  {row['test']:>6}  {sum(row.values()):>6}")
        totals = {s: sum(row[s] for _, row in rows) for s in SPLITS}
        lines.append(f"{'total':<{width}}  {totals['train']:>6}  {totals['val']:>6}  {totals['test']:>6}  {sum(totals.values()):>6}")
        return lines

    def display_path(self, path: str) -> str:
        """`path` as it reads from the folder the dataset was scanned from, e.g. `photos/cat/1.jpg`.

        A file name that is not valid UTF-8 is escaped (`files.escape_name`).
        """
        base = self.root if os.path.isdir(self.root) else os.path.dirname(self.root)
        relative = os.path.relpath(path, os.path.abspath(base)) if base else path
        return escape_name(path if relative.startswith("..") else os.path.join(base, relative))

    def problem_counts(self) -> dict[str, int]:
        """Files per problem slug, most frequent first (a file with two problems counts under both)."""
        counts = collections.Counter(p for e in self.entries for p in e.problem.split(";") if p)
        return dict(counts.most_common())

    def summary(self) -> str:
        """A table of classes × splits with totals, and the problems found."""
        errors = sum(1 for e in self.entries if not e.usable)
        warnings = sum(1 for e in self.entries if e.status == Severity.WARNING.value)
        lines = self.class_table()
        lines.append(f"{len(self.classes)} classes, {len(self.usable):,} usable images; "
                     f"{errors:,} left out with errors, {warnings:,} with warnings.")
        for severity in (Severity.ERROR, Severity.WARNING):
            found = describe_problems(self.entries, severity)
            if found:
                lines.append(f"{severity.value}s: {found}")
        first = next((e for e in self.entries if not e.usable), None)
        if first is not None:  # one file named, so that "unreadable 24" says which files it means, and why
            lines.append(f"first error: {self.display_path(first.path)}: {first.problem}"
                         + (f" ({first.detail})" if first.detail else ""))
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)


def describe_problems(entries: Sequence[Entry], severity: Severity) -> str:
    """The problems of one severity among `entries`, most frequent first, e.g. "truncated 12, corrupt 2"."""
    counts = collections.Counter(slug for entry in entries for slug in entry.problem.split(";")
                                 if slug and ImageProblem(slug).severity == severity)
    return ", ".join(f"{slug} {n:,}" for slug, n in counts.most_common())


# Scanning -----------------------------------------------------------------

def scan(
    root,
    *,
    val: float = 0.15,
    test: float = 0.15,
    seed: int = 0,
    limits: ImageLimits = ImageLimits(),
    decode: bool = False,
    workers: int | None = None,
    progress: bool = True,
    cache_spec: ImageSpec | None = None,
    cache_dir=None,
) -> Manifest:
    """Builds a `Manifest` from a folder of images or a CSV.

    Accepted layouts:

    ```
    root/<class>/<images>                 class per folder (nested folders belong to the class)
    root/train|val|test/<class>/<images>  pre-split (val also as validation/ or valid/)
    labels.csv                            columns path,label[,split]; paths relative to the CSV
    ```

    Hidden files and folders, `.DS_Store`, `Thumbs.db`, `desktop.ini` and
    `._*` files are ignored. Symlinks are followed, every real folder is
    scanned once (for the first class that reaches it), and a symlink to a
    folder that contains it is a loop, named in the notes and not followed.
    Every file is hashed and its header read; files that are no image are
    kept in the manifest with status `error` and left out of the split.

    Args:
        root: the folder or CSV file.
        val: fraction of each class for validation. Defaults to 0.15.
        test: fraction of each class for testing. Defaults to 0.15.
        seed: seed of the split. Defaults to 0.
        limits: image limits. Defaults to `ImageLimits()`.
        decode: decode every image fully, as `imgclf audit` does, instead of
            reading only headers. Defaults to `False`.
        workers: processes that read files. Defaults to `None`: one per CPU.
        progress: show a progress bar. Defaults to `True`.
        cache_spec: the `ImageSpec` training will decode to, when known
            before the scan (`imgclf.train` passes it when the image size
            and the colour mode do not depend on the data). Each file is
            then read once: hashed, checked and decoded from memory into a
            staging file, from which the decoded-image cache of each split
            is made (`cache.StagedImages`), instead of being opened again
            after the scan. Skipped when the caches of the last such scan of
            this folder are all still there. Defaults to `None`.
        cache_dir: the cache folder for `cache_spec`. Defaults to `None`:
            `cache.default_cache_dir()`.

    Returns:
        A `Manifest` whose usable entries all have a split.

    Example:

    >>> m = scan("photos/", val=0.15, test=0.15, seed=0)
    >>> print(m.summary())
    """
    DataConfig(val=val, test=test, seed=seed)  # training's checks: a fraction of each class, a seed
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"Dataset not found: {escape_name(str(root))}. Pass a folder with one subfolder per class, or a CSV with path,label columns.")
    if root.is_file():
        entries, notes = _entries_from_csv(root)
    else:
        entries, notes = _entries_from_folder(root)
        interrupted = interrupted_build(root)
        if interrupted:
            notes.insert(0, interrupted)
    if not entries and root.is_file():
        raise DatasetError(f"{escape_name(str(root))} lists no images: add a row per image under its path,label header.")
    if not entries:
        loose = len(_loose_images(root))
        if loose:
            raise DatasetError(
                f"{escape_name(str(root))} holds {loose:,} image(s) but no class folders: put the images of each class "
                "in a subfolder named after it (root/<class>/<image files>). To classify images without labels, use "
                f"`imgclf predict RUN {shell_word(root)}`."
            )
        raise DatasetError(
            f"No images found under {escape_name(str(root))}. Expected one subfolder per class (root/<class>/<image files>) "
            f"with extensions {', '.join(sorted(IMAGE_EXTENSIONS))}."
        )
    staged = None
    if cache_spec is not None and not decode and not scan_is_cached(root, cache_spec, limits, cache_dir):
        staged = StagedImages([e.path for e in entries], cache_spec, limits, cache_dir,
                              record=scan_record(root, cache_spec, limits, cache_dir))
    # A file changed within a tick of the file system's coarse clock of the start may carry a time just before it.
    hashed_at = time.time() - 0.1
    read_files(entries, limits=limits, decode=decode, workers=workers, progress=progress, staged=staged)
    flag_duplicates(entries)
    given = {entry.split for entry in entries if entry.split}  # by the folders or the CSV
    marked_train = [entry for entry in entries if entry.split == "train"]
    assign_splits(entries, val=val, test=test, seed=seed)
    if root.is_file():
        notes.extend(_carved_rows_notes(root, marked_train))
    manifest = Manifest(entries, root=str(root), notes=notes, staged=staged,
                        split_settings={"val": val, "test": test, "seed": seed}, hashed_at=hashed_at)
    manifest.notes.extend(class_size_notes(manifest))
    manifest.notes.extend(_empty_split_notes(manifest, {"val": val, "test": test}, given))
    manifest.note_leaks()
    return manifest


def interrupted_build(root) -> str | None:
    """The note for a folder that a dataset recipe (`datasets/`) stopped writing before it finished; else `None`.

    The recipes record `"complete": false` in `root/.imgclf-dataset.json`
    until the last image is written, and running the recipe again with the
    same options finishes the build.
    """
    stamp = Path(root) / DATASET_STAMP
    try:
        record = json.loads(stamp.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("complete") is not False:
        return None
    params = record.get("params") if isinstance(record.get("params"), dict) else {}
    command = f"python datasets/{params.get('recipe', 'RECIPE')}.py {shell_word(root)}"
    said = f"this dataset build was interrupted ({escape_name(str(stamp))} says \"complete\": false), so images are missing"
    given = record.get("options")
    if isinstance(given, list) and all(isinstance(option, str) for option in given):  # the recipe's command line
        return f"{said}: run `{' '.join([command, *map(shell_word, given)])}` to finish it"
    options = ", ".join(f"{key} {json.dumps(value)}" for key, value in params.items() if key != "recipe")
    return f"{said}: run `{command}` again{f' with the same options ({options})' if options else ''} to finish it"


def _is_ignored(name: str) -> bool:
    return name.startswith(".") or name.lower() in IGNORED_NAMES


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _is_dir(entry: os.DirEntry) -> bool:
    """Whether a folder entry is a directory or a link to one; a link that loops (ELOOP) or cannot be read is not."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _broken_link(path: str) -> tuple[str, str] | None:
    """`(kind, why)` for a symlink that leads to nothing (`"missing"`) or back to itself (`"loop"`), e.g.
    `("missing", "a symlink to /mnt/disk/birds, which does not exist")`; `None` for anything else."""
    if not os.path.islink(path):
        return None
    try:
        os.stat(path)
    except FileNotFoundError:
        kind, why = "missing", "which does not exist"
    except OSError as error:
        if error.errno != errno.ELOOP:
            return None
        kind, why = "loop", "which leads back to itself through links"
    else:
        return None
    return kind, f"a symlink to {escape_name(os.fsdecode(os.readlink(path)))}, {why}"


def _broken_link_notes(links: Sequence[tuple[str, str, str]]) -> list[str]:
    """One note per kind for `(path, kind, why)` of the symlinks found inside class folders that lead nowhere."""
    notes = []
    for kind, text in (("missing", "to nothing"), ("loop", "that loop")):
        found = [(path, why) for path, found_kind, why in links if found_kind == kind]
        if found:
            path, why = found[0]
            notes.append(f"{len(found)} symlink(s) {text} ignored, e.g. {escape_name(path)} ({why})")
    return notes


def symlink_loop_note(link: str) -> str | None:
    """The note for a directory symlink that points to a folder holding it, which a walk does not follow; `None`
    for any other link."""
    target = os.path.realpath(link)
    if not _contains_link(link, target):
        return None
    return f"symlink loop {escape_name(link)} → {escape_name(target)} not followed: it points to a folder that contains it"


def _contains_link(link: str, target: str) -> bool:
    """Whether `target`, the real path of the directory symlink `link`, is a folder that holds the link.

    Following such a link walks the same folders again forever (what `find -L`
    reports as a file system loop). Real paths are compared for every folder
    on the way to the link, as it was reached, up to the file system root.
    """
    folder = os.path.dirname(os.path.abspath(link))
    while True:
        if os.path.realpath(folder) == target:
            return True
        parent = os.path.dirname(folder)
        if parent == folder:
            return False
        folder = parent


def _walk_class_folders(folders: Sequence[tuple[str, str]]) -> tuple[list[list[str]], int, list[str], set[int]]:
    """Image files under each class folder, following symlinks to directories once.

    Every real directory is walked at most once, and its images belong to the
    class folder that reached it first. The class folders that are not links
    are walked first, without following links, so what a class folder holds is
    never claimed by another class through a link; class folders that are
    links come next, then the symlinks to directories inside the classes, in
    the order they were found. A symlink to a folder that holds it
    (its own folder, the dataset root, or any folder above) is a loop and is
    not followed. Each link not followed is described in a note, and so are
    the links that lead to nothing or loop (one with an image name is kept
    as a file, which its check finds unreadable).

    Paths are joined as strings: for large folders pathlib objects cost more
    than the rest of the walk.

    Args:
        folders: `(folder, label)` of every class folder.

    Returns:
        `(images, others, notes, skipped)`: absolute image paths per class
        folder, the other files counted by extension, notes on the folders not walked
        (loops, and folders reached a second time), and the indices of the
        class folders that were not walked for that reason.
    """
    images: list[list[str]] = [[] for _ in folders]
    owners: dict[str, tuple[int, str]] = {}  # real directory -> (class folder index, the path that reached it)
    links: list[tuple[int, str]] = []  # symlinks to directories, followed once the class folders are walked
    broken: list[tuple[str, str, str]] = []  # (path, kind, why) of the links that lead nowhere
    notes, skipped, others = [], set(), collections.Counter()

    def walk(index: int, top: str) -> bool:
        stack = [top]
        while stack:
            current = stack.pop()
            real = os.path.realpath(current)
            if real in owners:
                first, via = owners[real]
                notes.append(f"{escape_name(current)} leads to {escape_name(real)}, which was already scanned as "
                             f"{escape_name(via)}: its images count once, in class '{folders[first][1]}'")
                if current == top:
                    return False
                continue
            owners[real] = (index, current)
            try:
                with os.scandir(current) as scanned:
                    children = sorted(scanned, key=lambda child: child.name)
            except OSError:
                continue
            subfolders = []
            for child in children:
                if _is_ignored(child.name):
                    continue
                is_dir = _is_dir(child)
                if is_dir and child.is_symlink():
                    links.append((index, child.path))
                elif is_dir:
                    subfolders.append(child.path)
                elif _is_image_name(child.name):
                    images[index].append(os.path.abspath(child.path))
                elif broken_link := _broken_link(child.path):
                    broken.append((child.path, *broken_link))
                else:
                    others[os.path.splitext(child.name)[1].lower()] += 1
            stack.extend(reversed(subfolders))  # walked next, in name order
        return True

    def follow(index: int, link: str) -> bool:
        loop = symlink_loop_note(link)
        if loop:
            notes.append(loop)
            return False
        return walk(index, link)

    class_links = [index for index, (folder, _) in enumerate(folders) if os.path.islink(folder)]
    for index, (folder, _) in enumerate(folders):
        if index not in class_links and not walk(index, folder):
            skipped.add(index)
    for index in class_links:  # after every real class folder, so that a link never takes another class's images
        if not follow(index, folders[index][0]):
            skipped.add(index)
    for index, link in links:  # the list grows while linked folders are walked
        follow(index, link)
    return images, others, notes + _broken_link_notes(broken), skipped


def short_names(names: Sequence[str], limit: int, measure: Callable[[str], int] = len) -> list[str]:
    """`names` cut to at most `limit` each, as `measure` counts them (characters, or terminal columns), and still
    told apart.

    A long name keeps its start and its end (`escherichia_col…rphology_plate_3`),
    since names that share a start (a species, a project) usually differ at
    the end. Names that still come out alike show the part around where they
    first differ instead.
    """
    cut = [_cut(name, limit, measure) for name in names]
    alike = collections.Counter(cut)
    shown = []
    for name, short in zip(names, cut):
        if alike[short] > 1:
            differs = max((len(os.path.commonprefix([name, other])) for other, same in zip(names, cut)
                           if same == short and other != name), default=0)
            short = _around(name, differs, limit, measure)
        shown.append(short)
    return shown


def _cut(text: str, limit: int, measure: Callable[[str], int]) -> str:
    """`text` cut to at most `limit`: its start and its end, with "…" between them."""
    if measure(text) <= limit:
        return text
    head = ""
    for char in text:
        if measure(head + char) > (limit - 1) // 2:
            break
        head += char
    tail = ""
    for char in reversed(text[len(head):]):
        if measure(head + "…" + char + tail) > limit:
            break
        tail = char + tail
    return head + "…" + tail


def _around(text: str, index: int, limit: int, measure: Callable[[str], int]) -> str:
    """The part of `text` around `index` that fits `limit`, with "…" where it was cut."""
    def shown(begin: int, end: int) -> str:
        return ("…" if begin else "") + text[begin:end] + ("…" if end < len(text) else "")

    begin = end = min(index, len(text))
    grown = True
    while grown:  # a character more on the right, then on the left, while it fits
        grown = False
        if end < len(text) and measure(shown(begin, end + 1)) <= limit:
            end, grown = end + 1, True
        if begin > 0 and measure(shown(begin - 1, end)) <= limit:
            begin, grown = begin - 1, True
    return shown(begin, end)


def _columns(text: str) -> int:
    """The terminal columns `text` takes: two for each wide character (CJK, most emoji), none for combining marks."""
    return sum(0 if unicodedata.combining(char) else 2 if unicodedata.east_asian_width(char) in "WF" else 1
               for char in text)


def _loose_images(folder: Path) -> list[Path]:
    """Image files directly in `folder`, outside any class folder."""
    return [p for p in folder.iterdir() if p.is_file() and not _is_ignored(p.name) and _is_image_name(p.name)]


def _broken_class_links(folder: Path) -> list[tuple[str, str]]:
    """`(path, why)` of the links in `folder` that stand where a class folder would and lead nowhere (not images)."""
    links = []
    for path in sorted(folder.iterdir()):
        broken = None if _is_ignored(path.name) or _is_image_name(path.name) else _broken_link(str(path))
        if broken:
            links.append((str(path), broken[1]))
    return links


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not _is_ignored(p.name))


_SPLIT_NAMED_CLASS_FIX = ("A folder named like a split that holds folders is read as a split folder: if it is a class "
                          "whose images sit in subfolders (train/2023/), rename it (trains/) or list the images in a "
                          "CSV with path,label columns.")


def _presplit_reading_notes(root: Path, folders: Sequence[tuple[str, str, str, Path]]) -> list[str]:
    """A note when a pre-split reading looks like classes named like splits (`{test,train}/holiday/`): it gives a
    single class, or split folders with no class in common."""
    labels = collections.defaultdict(set)  # split folder -> its class names
    for _, label, _, parent in folders:
        labels[parent].add(label)
    classes = set().union(*labels.values())
    shared = any(len([names for names in labels.values() if label in names]) > 1 for label in classes)
    if len(classes) > 1 and (len(labels) < 2 or shared):
        return []
    split_names = ", ".join(sorted(f"{escape_name(parent.name)}/" for parent in labels))
    return [f"{escape_name(str(root))} was read as a pre-split folder ({split_names} hold folders), whose classes "
            f"are {', '.join(repr(label) for label in sorted(classes))}. {_SPLIT_NAMED_CLASS_FIX}"]


def _entries_from_folder(root: Path) -> tuple[list[Entry], list[str]]:
    folders = _class_folders(root)
    # A folder named like a split is one only if it holds class folders: vehicles/{bus,car,train}/ has a class 'train'.
    split_folders = {p: SPLIT_FOLDER_NAMES[p.name.lower()] for p in folders
                     if p.name.lower() in SPLIT_FOLDER_NAMES and _class_folders(p)}
    presplit = bool(split_folders)
    if presplit and len(split_folders) != len(folders):
        others = sorted(escape_name(p.name) for p in folders if p not in split_folders)
        raise DatasetError(
            f"{escape_name(str(root))} mixes split folders {sorted(p.name for p in split_folders)} (they hold class "
            f"folders) with other folders {others}. Use either root/<class>/ or root/train|val|test/<class>/, not "
            "both. " + _SPLIT_NAMED_CLASS_FIX
        )
    parents = [(p, split_folders[p]) for p in folders] if presplit else [(root, "")]
    if presplit and "train" not in split_folders.values():
        raise DatasetError(f"{escape_name(str(root))} has split folders {sorted(p.name for p in folders)} but no train/ folder. Add train/<class>/ images.")

    # A class folder on a disk that is not mounted is a link to nothing: it is named, not silently dropped.
    link_notes = [f"{'class folder' if split or not presplit else 'folder'} {escape_name(path)} is {why}: it is left out"
                  for parent, split in ([(root, "")] if presplit else []) + parents
                  for path, why in _broken_class_links(parent)]

    # A class is named after its folder; a folder name that is not valid UTF-8 becomes a label with the bytes escaped.
    folders = [(str(folder), class_name(escape_name(folder.name)), split, parent)
               for parent, split in parents for folder in _class_folders(parent)]
    images, others, notes, skipped = _walk_class_folders([(folder, label) for folder, label, _, _ in folders])
    notes = link_notes + notes
    if presplit:
        notes.extend(_presplit_reading_notes(root, folders))
    # A val/ or test/ whose class folders are all empty gives no split: it is carved out of train/ instead.
    hollow = {parent: split for parent, split in parents if split in ("val", "test") and not any(
        images[index] or index in skipped for index, folder in enumerate(folders) if folder[3] == parent)}
    entries = []
    for index, (folder, label, split, parent) in enumerate(folders):
        if not images[index] and index not in skipped and parent not in hollow:
            notes.append(f"empty class folder {escape_name(folder)} left out")
        entries.extend(Entry(path=path, label=label, split=split) for path in images[index])
    for parent, split in hollow.items():
        notes.append(f"{escape_name(str(parent))} holds only empty class folders: it counts as missing, and the "
                     f"{split} split is carved out of train/ as --{split} asks; put the {split} images in its class "
                     "folders to use them")
    for parent, _ in parents:
        loose = _loose_images(parent)
        if loose:
            notes.append(f"{len(loose)} image(s) directly in {escape_name(str(parent))} ignored: put them in a class folder")
    if others:
        notes.append(_other_files_note(others))
    return entries, notes


# Image formats that are common in photo folders but that imgclf cannot read.
_UNREADABLE_IMAGE_EXTENSIONS = frozenset({".heic", ".heif", ".avif", ".jxl", ".svg", ".psd", ".dng", ".cr2", ".cr3",
                                          ".nef", ".arw", ".raf", ".orf", ".rw2"}) - IMAGE_EXTENSIONS


def _other_files_note(others: collections.Counter) -> str:
    """The note on the files of class folders that were ignored for their extension (`others`: extension -> count)."""
    note = f"{sum(others.values())} file(s) without an image extension ignored"
    unreadable = sorted((extension, n) for extension, n in others.items() if extension in _UNREADABLE_IMAGE_EXTENSIONS)
    if unreadable:
        note += (f", among them {', '.join(f'{n} {extension}' for extension, n in unreadable)}: images in a format "
                 "imgclf cannot read; convert them to JPEG or PNG to use them")
    return note


def _entries_from_csv(path: Path) -> tuple[list[Entry], list[str]]:
    reader = csv.reader(io.StringIO(_csv_text(path), newline=""))
    header = next(reader, [])
    fields = [f.strip().lower() for f in header]
    if "path" not in fields or "label" not in fields:
        received = ", ".join(header) if header else "none (the file is empty)"
        raise DatasetError(f"{escape_name(str(path))} needs a header with columns path,label (optional split). "
                           f"Received columns: {received}")
    rows = []
    for cells in reader:
        if not any(cell.strip() for cell in cells):
            continue
        _refuse_extra_cells(path, reader.line_num, cells, header, empty_allowed=True)
        rows.append((reader.line_num, {name: cell.strip() for name, cell in zip(fields, cells) if name}))
    entries, first_line, repeats = [], {}, []
    for number, row in rows:
        if not row.get("path"):
            raise DatasetError(f"{escape_name(str(path))}, line {number}: no path in the row. Write the image's path "
                               "in the path column, or remove the row.")
        row.setdefault("label", "")
        split = SPLIT_FOLDER_NAMES.get(row.get("split", "").lower(), None) if row.get("split") else ""
        if split is None:
            raise DatasetError(f"{escape_name(str(path))}, line {number}: unknown split {row['split']!r}. Use train, val or test (or leave it empty).")
        if not row["label"]:
            raise DatasetError(f"{escape_name(str(path))}, line {number}: empty label for {row['path']!r}.")
        file = Path(unescape_name(row["path"]))
        file = file if file.is_absolute() else path.parent / file
        entry = Entry(path=os.path.abspath(file), label=class_name(row["label"]), split=split)
        first, first_split = first_line.setdefault((entry.path, entry.label), (number, split))
        if first == number:
            entries.append(entry)
        elif split != first_split:
            raise DatasetError(f"{escape_name(str(path))}, line {number}: {row['path']!r} is listed for split "
                               f"{split or '(empty)'!r}, and on line {first} for {first_split or '(empty)'!r}. A file "
                               "belongs to one split: keep one of the two rows.")
        else:
            repeats.append((number, first))
    if entries and all(entry.split in ("val", "test") for entry in entries):
        raise DatasetError(f"{escape_name(str(path))}: the split column names only val and test, which leaves nothing to "
                           "train on. Mark the training images train, or leave their split empty.")
    notes = []
    if repeats:
        number, first = repeats[0]
        notes.append(f"{len(repeats)} row(s) of {escape_name(str(path))} repeat a file and label of an earlier row (line "
                     f"{number} repeats line {first}): each file is used once")
    return entries, notes


def _refuse_extra_cells(path: Path, number: int, cells: list[str], header: list[str], *, empty_allowed: bool) -> None:
    """A row with more cells than the header has a comma that split a path or a class name in two; with
    `empty_allowed`, extra cells that are all empty (a trailing comma typed by hand) pass."""
    extra = cells[len(header):]
    if extra and not (empty_allowed and not any(cell.strip() for cell in extra)):
        raise DatasetError(f"{escape_name(str(path))}, line {number}: the row has {len(cells)} cells, more than the "
                           f"{len(header)} columns of the header. A path or class name that holds a comma must be in "
                           'double quotes: "photos/a,b.jpg" (Python\'s csv module and spreadsheets write it so).')


_SHA1 = re.compile("[0-9a-f]{40}")
_SAVE_AS_UTF8 = 'Save the CSV as UTF-8 (Excel: "CSV UTF-8").'


def _csv_text(path: Path) -> str:
    """The text of a CSV dataset; an image, or a file that is not UTF-8, is refused with what to pass instead."""
    data = path.read_bytes()
    image_format = signature_format(data[:16])
    if image_format:
        raise DatasetError(f"{escape_name(str(path))} is {a_format(image_format)} image, not a dataset. Pass a folder "
                           "with one subfolder per class, or a CSV with path,label columns; `imgclf predict RUN FILE` "
                           "classifies single images.")
    if b"\0" in data[:4096]:  # UTF-16 or UTF-32 text, or a binary file: both decode as UTF-8 where ASCII
        raise DatasetError(f"{escape_name(str(path))} is not UTF-8 text (it holds NUL bytes, as UTF-16 text or a "
                           f"binary file does). {_SAVE_AS_UTF8}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise _not_utf8(path, error, lines_before=0) from None


def check_utf8_text(path) -> None:
    """Refuses a CSV that is not UTF-8 text, naming the line of its first other byte; read in chunks, kept nowhere.

    Raises:
        DatasetError: naming the file, the line and the byte, with the fix.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines = 0
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as error:
                raise _not_utf8(path, error, lines_before=lines) from None
            lines += chunk.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as error:  # the file ends inside a character
            raise _not_utf8(path, error, lines_before=lines) from None


def _not_utf8(path, error: UnicodeDecodeError, *, lines_before: int) -> DatasetError:
    line = lines_before + error.object[:error.start].count(b"\n") + 1
    return DatasetError(f"{escape_name(str(path))}, line {line}: not UTF-8 text (byte {error.object[error.start]:#04x}). "
                        f"{_SAVE_AS_UTF8}")


def class_name(label: str) -> str:
    """A class name as imgclf keeps it: in Unicode's composed form (NFC), so that "é" typed as one character and
    "é" as "e" plus an accent (macOS writes folder names so) are the same class."""
    return unicodedata.normalize("NFC", label)


def printable_name(label: str) -> str:
    """A class name for a table row: a newline or other control character as its escape (`\\n`)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in label)


def class_size_notes(manifest: Manifest) -> list[str]:
    """Notes on classes too small to learn or to measure: with no usable image, with 1, or missing from a split."""
    sizes = collections.Counter(e.label for e in manifest.usable)
    listed = collections.Counter(e.label for e in manifest.entries)
    notes = [f"class '{label}' has no usable image ({n} file(s) with errors) and is left out; `imgclf audit` says why"
             for label, n in sorted(listed.items()) if not sizes[label]]
    if len(sizes) == 1:
        notes.append(f"only one class ('{next(iter(sizes))}') has usable images: a classifier needs at least 2. Is the "
                     "folder a class folder instead of the dataset folder that holds one subfolder per class?")
    notes += [f"class '{label}' has only {n} usable image(s); it needs at least 2 to be learned and evaluated"
              for label, n in sorted(sizes.items()) if n < 2]
    for split in SPLITS:
        counts = collections.Counter(e.label for e in manifest.split(split))
        if not counts:
            continue  # an empty split (--test 0, a pre-split folder without val/) is a choice, not a gap
        missing = [label for label, n in sorted(sizes.items()) if n >= 2 and not counts[label]]
        if missing:
            effect = "the model cannot learn them" if split == "train" else f"their {split} results cannot be measured"
            notes.append(f"{len(missing)} class(es) have no {split} images ({', '.join(map(repr, missing))}): {effect}")
    return notes


def _carved_rows_notes(path: Path, marked_train: Sequence[Entry]) -> list[str]:
    """The note for CSV rows marked train that the split moved to val or test (the CSV marks none so)."""
    moved = collections.Counter(e.split for e in marked_train if e.split in ("val", "test"))
    if not moved:
        return []
    splits = [split for split in ("val", "test") if moved[split]]
    return [f"no row of {escape_name(str(path))} is marked {' or '.join(splits)}, so "
            f"{' and '.join(f'{moved[split]} {split}' for split in splits)} image(s) were carved out of the rows marked "
            f"train, as for a pre-split folder without {' or '.join(f'{split}/' for split in splits)}; mark "
            f"{' and '.join(splits)} rows to choose them, or pass {' '.join(f'--{split} 0' for split in splits)} to "
            "keep every row marked train in train"]


def _empty_split_notes(manifest: Manifest, fractions: dict[str, float], given: set[str]) -> list[str]:
    """A split that was asked for (`fractions`, not `given` by the data) but holds no image."""
    broken = len(manifest.entries) - len(manifest.usable)
    why = "a class needs at least 3 distinct images to give one to val and test"
    if broken:  # their places in the order count, so they can take a small class's val or test place
        why += f", and the {broken} file(s) with errors keep their places in the split without an image"
    return [f"no {split} images although --{split} {fraction:g} asked for some ({why}): add or repair images, or "
            "results can only be measured on the training images, which the model has learned"
            for split, fraction in fractions.items()
            if fraction > 0 and split not in given and manifest.usable and not manifest.split(split)]


# Reading files ------------------------------------------------------------

def _check(job: tuple[str, ImageLimits, bool]) -> FileCheck:
    path, limits, decode = job
    return inspect_file(path, limits=limits) if decode else check_header(path, limits=limits)


def read_files(entries: Sequence[Entry], *, limits: ImageLimits = ImageLimits(), decode: bool = False,
               workers: int | None = None, progress: bool = True, staged: StagedImages | None = None) -> None:
    """Hashes and checks every file in worker processes, setting each entry's fields.

    Args:
        entries: the entries to check; their hash, stat, size, status and problems
            are replaced.
        limits: image limits. Defaults to `ImageLimits()`.
        decode: decode every image fully (`images.inspect_file`) instead of
            reading only headers. Defaults to `False`.
        workers: processes. Defaults to `None`: one per CPU.
        progress: show a progress bar. Defaults to `True`.
        staged: decode every file into this staging file as it is read
            (made for the same entries, in order); the checks are those of
            the header-only scan. Defaults to `None`.
    """
    stats = [file_stat(e.path) for e in entries]  # before the reads: a change during one shows at the next check
    if staged is not None:
        checks = staged.fill(workers=workers, progress=progress)
    else:
        jobs = [(e.path, limits, decode) for e in entries]
        checks = parallel_map(_check, jobs, workers=workers, desc="audit" if decode else "scan", progress=progress)
    for entry, stat, check in zip(entries, stats, checks):
        entry.sha1, entry.stat, entry.pixels_sha1 = check.sha1 or "", stat, check.pixels_sha1 or ""
        entry.width, entry.height, entry.channels = check.width or 0, check.height or 0, check.channels or 0
        entry.status, entry.problem, entry.detail = Severity.OK.value, "", ""
        for finding in check.findings:
            entry.flag(finding.problem, finding.detail)
    if decode:
        _confirm_pixel_copies(entries, limits=limits, workers=workers, progress=progress)


def _full_pixels_hash(job: tuple[str, ImageLimits]) -> str:
    path, limits = job
    return inspect_file(path, limits=limits, draft=False).pixels_sha1 or ""


def _confirm_pixel_copies(entries: Sequence[Entry], *, limits: ImageLimits, workers: int | None,
                          progress: bool) -> None:
    """Decodes again at full size the files whose pixels hash as those of another file with other bytes.

    The audit decodes JPEGs at 1/8 scale, where pictures that differ only
    in fine detail can look the same: only a full decode may call them
    identical. Such files are few, so this costs little.
    """
    contents = collections.defaultdict(set)
    for entry in entries:
        if entry.pixels_sha1 and entry.usable:
            contents[entry.pixels_sha1].add(entry.sha1)
    suspects = [e for e in entries if e.pixels_sha1 and e.usable and len(contents[e.pixels_sha1]) > 1]
    hashes = parallel_map(_full_pixels_hash, [(e.path, limits) for e in suspects], workers=workers,
                          desc="full decode", progress=progress and bool(suspects))
    for entry, pixels_sha1 in zip(suspects, hashes):
        entry.pixels_sha1 = pixels_sha1


def file_stat(path: str) -> str:
    """A file's size, modification time and inode change time, `"size:mtime_ns:ctime_ns"`; `""` for a file that
    cannot be read. Any write, replacement, `chmod` or new link changes it."""
    try:
        status = os.stat(path)
    except OSError:
        return ""
    return f"{status.st_size}:{status.st_mtime_ns}:{status.st_ctime_ns}"


def flag_duplicates(entries: Sequence[Entry]) -> None:
    """Flags identical files: under two classes as errors, within a class as warnings.

    Identical content with different labels cannot be learned, so every copy
    is left out (`label_conflict`). Within one class, every copy after the
    first (by path) is flagged `duplicate` and still used; the split keeps all
    copies together.

    Files whose bytes differ but whose decoded pixels are the same (one
    picture as PNG and BMP, or with other metadata; known only where the
    files were decoded, `Entry.pixels_sha1`) are flagged the same way. The
    split, which goes by the bytes, may put them apart: `note_leaks` then
    counts them.
    """
    for key, what in (("sha1", "same content"), ("pixels_sha1", "same pixels")):
        groups: dict[str, list[Entry]] = collections.defaultdict(list)
        for entry in entries:
            if getattr(entry, key) and entry.usable:
                groups[getattr(entry, key)].append(entry)
        for group in groups.values():
            if len(group) < 2 or (key == "pixels_sha1" and len({e.sha1 for e in group}) < 2):
                continue  # one file, or copies of the same bytes: flagged by their content hash already
            labels = sorted({e.label for e in group})
            if len(labels) > 1:
                for entry in group:
                    others = [escape_name(e.path) for e in group if e is not entry]
                    entry.flag(ImageProblem.LABEL_CONFLICT, f"{what} under classes {', '.join(labels)}: {', '.join(others)}")
                continue
            first, *copies = sorted(group, key=lambda e: e.path)
            for entry in copies:
                if key == "sha1":
                    entry.flag(ImageProblem.DUPLICATE, f"identical to {escape_name(first.path)}")
                elif entry.sha1 != first.sha1 and ImageProblem.DUPLICATE.value not in entry.problem.split(";"):
                    entry.flag(ImageProblem.DUPLICATE, f"the same pixels as {escape_name(first.path)}, in a file "
                                                       "with other bytes (another format, metadata or compression)")


# Splitting ------------------------------------------------------------------

def _unit_hash(seed: int, sha1: str) -> float:
    """Maps (seed, content hash) to a number in [0, 1) that nothing else affects."""
    digest = hashlib.sha1(f"{seed}:{sha1}".encode()).hexdigest()
    return int(digest[:15], 16) / 16**15


def assign_splits(entries: Sequence[Entry], *, val: float, test: float, seed: int) -> None:
    """Assigns `train`/`val`/`test` to usable entries that have no split yet.

    Each class is split on its distinct files (identical files count once
    and always share a split), in exact sizes: `round(n * test)` test and
    `round(n * val)` val of the n distinct files of the class, halves rounded
    up, the rest train, as scikit-learn's stratified splitters do. A class
    with at least 3 distinct files gets at least one in each split (taken
    from the largest); a class of 1 or 2 gets one in train first.

    n counts every file whose content could be read (an empty file has none), usable or not: a file
    that only a full decode finds broken then moves no other file, so
    `imgclf audit` and `imgclf train` (which reads headers) give the same
    split. Files with errors take their place in the order and get no split.

    Which images go where is decided by their content, not their order or
    path: each distinct image gets a number in [0, 1) from
    `sha1(seed, content hash)`, the images of a class are ordered by it, and
    the order is cut into test, val and train. Adding images to a class moves
    only the few existing images near the two cut points (about 2 of 100 when
    10 are added), never reshuffles the class.

    Entries that already have a split (a pre-split folder or a CSV with a
    split column) keep it; val and test are carved from train, in the same
    way, only when the dataset has none of them. An entry without a split
    whose content is identical to an entry given `val` or `test` gets that
    split (`test` if both).

    Args:
        entries: the entries to split; usable ones without a split are set.
        val: fraction of each class for validation.
        test: fraction of each class for testing.
        seed: seed of the split.
    """
    given = {e.split for e in entries if e.sha1 and e.split}
    fractions = {"test": test if "test" not in given else 0.0, "val": val if "val" not in given else 0.0}

    # A file without a split that is identical to one given val or test joins it, so the split makes no leak.
    held_out = {}
    for entry in entries:
        if entry.sha1 and entry.split in ("val", "test"):
            held_out[entry.sha1] = "test" if entry.split == "test" else held_out.get(entry.sha1, "val")
    for entry in entries:
        if entry.sha1 in held_out and not entry.split:
            entry.split = held_out[entry.sha1] if entry.usable else ""

    by_class: dict[str, dict[str, list[Entry]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    for entry in entries:
        if entry.sha1 and entry.split in ("", "train"):
            by_class[entry.label][entry.sha1].append(entry)

    for groups in by_class.values():
        order = sorted(groups, key=lambda sha1: (_unit_hash(seed, sha1), sha1))
        sizes = split_sizes(len(order), **fractions)
        names = [name for name in ("test", "val", "train") for _ in range(sizes[name])]
        for sha1, name in zip(order, names):
            for entry in groups[sha1]:
                entry.split = name if entry.usable else ""


def _round_half_up(n: int, fraction: float) -> int:
    """`round(n * fraction)`, halves rounded up, computed on the fraction as written: 50 * 0.29 is 14.5 and gives 15
    (in floating point it is 14.499999999999998)."""
    return math.floor(fractions.Fraction(str(float(fraction))) * n + fractions.Fraction(1, 2))


def split_sizes(n: int, *, val: float, test: float) -> dict[str, int]:
    """How many of `n` distinct images go to each split: `{"test": ..., "val": ..., "train": ...}`.

    `round(n * test)` and `round(n * val)` with halves rounded up, the rest
    train. From 3 images up, every split asked for (a fraction above 0, and
    train) gets at least one, taken from the largest split; below, train
    gets one first, taken from val if it has one (a class the model never
    sees cannot be learnt).

    Example:

    >>> split_sizes(12, val=0.15, test=0.15)
    {'test': 2, 'val': 2, 'train': 8}
    """
    n_test = min(_round_half_up(n, test), n)
    n_val = min(_round_half_up(n, val), n - n_test)
    sizes = {"test": n_test, "val": n_val, "train": n - n_test - n_val}
    if n >= 3:
        for name in [name for name, fraction in (("test", test), ("val", val), ("train", 1.0)) if fraction > 0]:
            if sizes[name] == 0:
                largest = max(sizes, key=sizes.get)
                sizes[largest] -= 1
                sizes[name] += 1
    elif n and sizes["train"] == 0:
        taken = "val" if sizes["val"] else "test"
        sizes[taken] -= 1
        sizes["train"] += 1
    return sizes

"""Writing files: atomic writes, and file names as text.

Every file imgclf writes goes through `atomic_path`: it is written under a
temporary name in the same folder, then renamed over the target, so a killed
process never leaves a half-written file behind. The stages that write files
(`manifest`, `auditing`, `runs`, `evaluation`, ...) import these helpers from
here.

File names on Linux are bytes, and not every name is valid UTF-8 (a name
copied from an old archive may hold Latin-1 `caf\\xe9.png`). Python holds such
a name as a string with surrogate characters (`os.fsdecode`), which opens the
file but cannot be written as UTF-8 text. `escape_name` turns it into text
that names the file unambiguously, and `unescape_name` turns that text back.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import glob
import io
import json
import os
import re
import secrets
import shlex
import shutil
import socket
import stat
from pathlib import Path
from typing import Iterable, Iterator, Sequence

_ESCAPED = re.compile(r"\\(\\|x[89a-fA-F][0-9a-fA-F]|x0[dD])")


def escape_name(name: str) -> str:
    r"""A file name or path as text that names the file unambiguously.

    Every byte that is not valid UTF-8 is written as `\x` and two hex
    digits, a carriage return as `\x0d` (CSV readers take a bare one for
    the end of a row, and a terminal for a return to the line's start), and
    a backslash as two backslashes, so a name that holds a real backslash is
    never read as an escaped byte. Names that are valid UTF-8 and hold no
    backslash or carriage return are returned unchanged.

    Args:
        name: a name as the `os` functions return it (undecodable bytes as
            surrogate characters).

    Returns:
        Text that can be written as UTF-8 and printed.

    Example:

    >>> print(escape_name(os.fsdecode(b"photos/caf\xe9.png")))
    photos/caf\xe9.png
    """
    return os.fsencode(name.replace("\\", "\\\\").replace("\r", "\\x0d")).decode("utf-8", "backslashreplace")


def shell_word(path) -> str:
    r"""`path` as a word of a command to paste into a shell, naming exactly that file.

    Quoted where the shell would split or expand it (`runs/my run` ->
    `'runs/my run'`; `runs/digits` stays as it is). A name with bytes that
    are not UTF-8 or with control characters is written in bash's `$'...'`
    quoting, which spells them as `\xNN` (`$'caf\xe9'`).
    """
    name = os.fspath(path)
    if name.isprintable():  # undecodable bytes, held as surrogates, are not printable
        return shlex.quote(name)
    spelled = []
    for byte in os.fsencode(name):
        if chr(byte) in "\\'":
            spelled.append("\\" + chr(byte))
        elif 0x20 <= byte < 0x7F:
            spelled.append(chr(byte))
        else:
            spelled.append(f"\\x{byte:02x}")
    return "$'" + "".join(spelled) + "'"


def unescape_name(text: str) -> str:
    r"""The file name or path that `escape_name` wrote as `text`.

    `\\` becomes one backslash, `\x0d` a carriage return and `\x80` to
    `\xff` the byte of that value; any other backslash is kept as it is.

    Args:
        text: an escaped name, e.g. a path from a CSV file imgclf wrote.

    Returns:
        The name as the `os` functions take it.
    """
    def byte(match: re.Match) -> str:
        escape = match.group(1)
        if escape == "\\":
            return "\\"
        value = int(escape[1:], 16)
        return chr(value) if value < 0x80 else chr(0xDC00 + value)

    # `escape_name` wrote the name's bytes as UTF-8, whatever the file system encoding: read them back the same way.
    return os.fsdecode(_ESCAPED.sub(byte, text).encode("utf-8", "surrogateescape"))


def _host() -> str:
    return "".join(c if c.isalnum() else "_" for c in socket.gethostname())[:40] or "host"


def process_tag() -> str:
    """`HOST-PID` of this process, for the name of a work file or folder that it removes when it is done, and
    that a later process removes with `remove_abandoned` if this one was killed first."""
    return f"{_host()}-{os.getpid()}"


def remove_abandoned(folder, prefix: str) -> None:
    """Removes the files and folders in `folder` named `prefix` + `process_tag()` + anything, of processes of this
    host that no longer run (killed before they could remove them)."""
    mine = f"{prefix}{_host()}-"
    for path in Path(folder).glob(f"{glob.escape(mine)}*"):
        found = re.match(r"[0-9]+", path.name[len(mine):])
        if not found:
            continue
        try:
            os.kill(int(found[0]), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):  # another process removing it at the same time
                remove_path(path)
        except OSError:  # a process of another user: still running
            continue


def remove_path(target) -> bool:
    """Removes a file, a link or a folder with its contents; returns whether there was one."""
    target = Path(target)
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    elif os.path.lexists(target):
        target.unlink()
    else:
        return False
    return True


_TEMPORARY_STEM_BYTES = 120


def _create_temporary(path: Path) -> Path:
    """Creates an empty, new file beside `path` and returns its name.

    `tempfile.mkstemp` creates files readable by their owner only (0600),
    which the rename would carry over to the target. The file is created here
    with mode 0666 instead, so the umask applies as it does for a plain
    `open(path, "w")` (usually giving 0644); a target that already exists
    keeps its own mode.
    """
    # The stem is cut to fit: a target name near the 255-byte limit must still get a temporary name.
    stem = os.fsdecode(os.fsencode(path.stem)[:_TEMPORARY_STEM_BYTES])
    while True:
        tmp = path.parent / f".{stem}.{secrets.token_hex(4)}.tmp{path.suffix}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        try:
            with contextlib.suppress(FileNotFoundError):
                os.fchmod(fd, stat.S_IMODE(os.stat(path).st_mode))
        finally:
            os.close(fd)
        return tmp


_TEMPORARY_NAME = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp(\.[^.]*)?$")


def remove_temporaries(folder) -> list[Path]:
    """Removes from `folder` (not below it) the temporary files `atomic_path` left behind when a process was killed
    while writing; returns them.

    Call it only where no other process can be writing into `folder`: its
    temporary files would go too.
    """
    folder = Path(folder)
    found = [p for p in folder.iterdir() if _TEMPORARY_NAME.match(p.name) and p.is_file()] if folder.is_dir() else []
    for path in found:
        path.unlink(missing_ok=True)
    return found


def is_inside(path, folder) -> bool:
    """Whether `path` is `folder` or below it, once both are resolved (symlinks followed, `..` removed)."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_file_target(path) -> None:
    """Raises, before any work, the error that writing the file `path` would end in.

    Raises:
        IsADirectoryError: if `path` is a folder.
        NotADirectoryError: if a file stands where one of its folders should be.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    _check_folders(path.parent)


def check_folder_target(path) -> None:
    """Raises, before any work, the error that writing into the folder `path` would end in.

    Raises:
        NotADirectoryError: if `path`, or a folder above it, is a file.
    """
    _check_folders(Path(path))


def _check_folders(folder: Path) -> None:
    for parent in (folder, *folder.parents):  # the nearest that exists decides
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(parent))
            return


@contextlib.contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Yields a temporary path beside `path`; renames it to `path` on success.

    The temporary name keeps the suffix, so writers that check it (Keras
    wants `.keras`) still work. The written file gets the permissions a plain
    `open(path, "w")` would give it. On error the temporary file is removed.

    Args:
        path: the file to write.

    Example:

    >>> with atomic_path("runs/digits/model.keras") as tmp:
    ...     model.save(tmp)
    """
    path = Path(path)
    check_file_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(path)
    try:
        with failures_named(path):
            yield tmp
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def failures_named(path) -> Iterator[None]:
    """Names `path` in an `OSError` that names no file: a write refused half-way (a full disk, a file size limit)."""
    try:
        yield
    except OSError as error:
        if error.filename is None:
            error.filename = os.fspath(path)
        raise


def write_text(path, text: str) -> Path:
    """Writes `text` to `path` as UTF-8, atomically, and returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path, value) -> Path:
    """Writes `value` as indented JSON, atomically, and returns the path."""
    return write_text(path, json.dumps(value, indent=2, sort_keys=False) + "\n")


def write_csv(path, header: Sequence[str], rows: Iterable[Sequence]) -> Path:
    """Writes a CSV file with a header row, atomically, and returns the path."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return write_text(path, buffer.getvalue())


class DamagedFileError(ValueError):
    """A file imgclf wrote cannot be read back (cut short, or edited by hand); the message names it and the fix.

    Attributes:
        path: the file.
        reason: what is wrong, e.g. "Expecting value: line 1 column 10 (char 9)".
    """

    def __init__(self, path, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"{escape_name(os.fspath(path))} is not valid JSON ({reason}): it was cut short or edited by "
                         "hand. Restore it from a copy, or run again the command that wrote it.")


def read_json(path):
    """Reads a JSON file written by `write_json`.

    Raises:
        DamagedFileError: (a `ValueError`) for a file that is not UTF-8 JSON.
    """
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        return json.loads(data.decode("utf-8"))
    except ValueError as error:  # json.JSONDecodeError and UnicodeDecodeError are both ValueErrors
        raise DamagedFileError(path, str(error)) from None

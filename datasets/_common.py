"""What the dataset recipes share: the output folder, atomic PNG writes, the command line."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Callable

from PIL import Image

STAMP = ".imgclf-dataset.json"
# The options of the command line that runs this build (`run_build`), recorded in the stamp: imgclf's note on an
# interrupted build repeats them. `None` for a build called from Python.
_command_options: list[str] | None = None
_TEMP = re.compile(r"^\..+\.\d+\.tmp$")
_IMAGE = re.compile(r"^\d+\.(png|jpg|bmp|webp)$")  # the names the recipes give their images


def save_atomic(image: Image.Image, path, fmt: str, **options) -> None:
    """Saves `image` to a hidden temporary file beside `path`, then renames it."""
    folder, name = os.path.split(os.fspath(path))
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    try:
        image.save(tmp, format=fmt, **options)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def existing_files(folder: Path) -> set[str]:
    """Names of the files in `folder`; removes temporary files left by a killed run."""
    names = set()
    with os.scandir(folder) as entries:
        for entry in entries:
            if _TEMP.match(entry.name):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
            elif entry.is_file():
                names.add(entry.name)
    return names


def write_stamp(out: Path, params: dict, *, complete: bool, summary: dict | None = None) -> None:
    """Records the recipe's settings in `out/.imgclf-dataset.json` (hidden: imgclf reads only `complete`)."""
    data = {"params": params, "complete": complete}
    if _command_options is not None:
        data["options"] = _command_options
    if summary is not None:
        data["summary"] = {k: v for k, v in summary.items() if k not in ("written", "skipped")}
    _write_record(out, data)


def _write_record(out: Path, data: dict) -> None:
    tmp = out / f".{STAMP}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, out / STAMP)


def prepare_out(out: Path, params: dict, *, overwrite: bool, folders: Callable[[dict], list[str]]) -> None:
    """Checks that `out` is new, empty or an earlier build with the same settings.

    A folder that holds other files is never deleted, even with `overwrite`:
    `overwrite` deletes only the images an earlier build of the same recipe
    wrote (`folders` of the settings in its stamp), and the class folders
    that this leaves empty.

    Args:
        out: the output folder.
        params: the settings of this build, recorded in the stamp.
        overwrite: delete an earlier build in `out`.
        folders: the recipe's class folders for a build's settings, relative
            to `out`, e.g. `["train/cat", "test/cat"]`.

    Raises:
        FileExistsError: `out` is a file, holds other files, or holds a build
            with other settings and `overwrite` is false, or a build whose
            files cannot be told apart (another recipe's, or an unreadable
            stamp) and `overwrite` is true.
    """
    params = json.loads(json.dumps(params))
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file. Pass the path of a folder (new or empty) for the dataset.")
    if out.is_dir():
        stamp = out / STAMP
        if stamp.is_file():
            try:
                record = json.loads(stamp.read_text(encoding="utf-8"))
                previous = record.get("params")
            except (OSError, ValueError, AttributeError):
                previous = None
            if previous != params and not overwrite:
                raise FileExistsError(
                    f"{out} holds a dataset built with other settings ({_differences(previous, params)}). "
                    f"Pass --overwrite (overwrite=True) to delete its images and build again, or choose another output folder."
                )
            if overwrite:
                earlier = _previous_folders(out, previous, params, folders)
                # Marked unfinished first: a build killed while its images are deleted is not taken for a whole one,
                # and its own command (in the record) finishes it.
                _write_record(out, {**record, "complete": False})
                _remove_build(out, earlier)
        elif any(not name.startswith(".") for name in os.listdir(out)):
            raise FileExistsError(
                f"{out} is not empty and was not written by this recipe (it has no {STAMP}). "
                f"Choose a new or empty output folder."
            )
    out.mkdir(parents=True, exist_ok=True)
    write_stamp(out, params, complete=False)


def _previous_folders(out: Path, previous, params: dict, folders: Callable[[dict], list[str]]) -> list[str]:
    """The class folders of the earlier build in `out`, from the settings in its stamp."""
    recipe = params["recipe"]
    if isinstance(previous, dict) and previous.get("recipe") != recipe:
        reason = f"was built by the {previous.get('recipe')!r} recipe, not by {recipe!r}"
    else:
        try:
            return list(folders(previous))
        except (KeyError, TypeError, AttributeError):
            reason = f"has an unreadable {STAMP}"
    raise FileExistsError(
        f"{out} {reason}, so which of its files the earlier build wrote is unknown and --overwrite deletes nothing. "
        f"Delete the earlier build yourself, or choose another output folder."
    )


def _remove_build(out: Path, folders: list[str]) -> None:
    """Deletes the images a build wrote in `folders` of `out`, then the folders left empty; keeps everything else."""
    root = os.path.realpath(out)
    for relative in folders:
        folder = out / relative
        # A class folder that leads outside `out` (a symlink, or `..` in an edited stamp) is not the build's.
        if not folder.is_dir() or not os.path.realpath(folder).startswith(root + os.sep):
            continue
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False) and (_IMAGE.match(entry.name) or _TEMP.match(entry.name)):
                    os.unlink(entry.path)
        for empty in (relative, *list(Path(relative).parents)[:-1]):  # train/cat, then train
            with contextlib.suppress(OSError):  # not empty: it holds files the build did not write
                (out / empty).rmdir()


def _differences(previous, params: dict) -> str:
    if not isinstance(previous, dict):
        return f"unreadable {STAMP}"
    keys = sorted(set(previous) | set(params))
    return ", ".join(f"{k}: {previous.get(k)!r} before, {params.get(k)!r} now" for k in keys if previous.get(k) != params.get(k))


def run_build(build: Callable[[], dict], describe: Callable[[dict], str] | None = None, *,
              argv: list[str] | None = None, out: str | None = None) -> int:
    """Runs a recipe's `build` for its command line: prints the summary, or the error; returns the exit status.

    `argv` (the command line's arguments; default `sys.argv[1:]`) less `out` and `--overwrite` is recorded in the
    build's stamp, so the note on an interrupted build gives the command that finishes it.
    """
    global _command_options
    arguments = list(sys.argv[1:] if argv is None else argv)
    if out in arguments:
        arguments.remove(out)
    _command_options = [argument for argument in arguments if argument != "--overwrite"]
    start = time.perf_counter()
    try:
        summary = build()
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopped: the images written so far are kept; run the same command again to finish the build",
              file=sys.stderr)
        return 130
    finally:
        _command_options = None
    seconds = time.perf_counter() - start
    where = describe(summary) if describe else f"in {len(summary['classes'])} classes under {summary['root']}"
    print(f"{summary['images']} images {where} ({summary['written']} written, {summary['skipped']} already there) "
          f"in {seconds:.1f} s")
    return 0


def finish_build(out: Path, params: dict, *, classes, counts: dict, images: int, written: int, skipped: int,
                 **extra) -> dict:
    """Marks the build complete and returns the summary that `build` returns."""
    summary = {"root": str(out), "classes": list(classes), "counts": counts, "images": int(images),
               "written": written, "skipped": skipped, **extra}
    write_stamp(out, params, complete=True, summary=summary)
    return summary

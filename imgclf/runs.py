"""The run directory: one folder holds everything a training run produced.

```
runs/<name>/
  config.yaml  environment.json  manifest.csv  classes.json  augment.yaml
  history.csv  model.keras  checkpoints/  eval/<split>/...  report.html
```

Every file is written atomically (`imgclf.files`), so a killed process never
leaves a half-written file behind.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import platform
import re
import socket
import sys
import zipfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Iterator, Sequence

from .config import Config, dump_config, load_config
from .files import (DamagedFileError, atomic_path, check_folder_target, escape_name, read_json, remove_path,
                    remove_temporaries, shell_word, write_json, write_text)

# What a run writes into its folder; `RunDir.start(overwrite=True)` removes these and nothing else.
RUN_CONTENTS = ("config.yaml", "environment.json", "manifest.csv", "classes.json", "augment.yaml", "history.csv",
                "training_curves.png", "model.keras", "report.html", "checkpoints", "eval", "tensorboard", "export")


_EPOCH_CHECKPOINT = re.compile(r"epoch-[0-9]+\.keras")


class RunError(RuntimeError):
    """A run directory is missing, incomplete or already in use."""


class RunDir:
    """A run directory on disk.

    Args:
        path: the folder, e.g. `"runs/flowers"`.

    Example:

    >>> run = RunDir("runs/digits")
    >>> run.classes()
    ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']
    """

    def __init__(self, path):
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError("A run is the path of the folder `imgclf train` wrote, e.g. 'runs/NAME'. Received: "
                            f"{type(path).__name__} {path!r}")
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    # Layout ---------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.csv"

    @property
    def classes_path(self) -> Path:
        return self.path / "classes.json"

    @property
    def environment_path(self) -> Path:
        return self.path / "environment.json"

    @property
    def history_path(self) -> Path:
        return self.path / "history.csv"

    @property
    def model_path(self) -> Path:
        return self.path / "model.keras"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def eval_dir(self, split: str) -> Path:
        return self.path / "eval" / split

    @property
    def resumable(self) -> bool:
        """Whether the folder holds a finished epoch to resume from (`checkpoints/state.json` and its checkpoint)."""
        return (self.checkpoints / "state.json").exists() and self.finished_checkpoint().exists()

    def state(self) -> dict:
        """`checkpoints/state.json`: the last finished epoch, and what resuming needs.

        Raises:
            DamagedFileError: (a `ValueError`) for a file that is not JSON.
            RunError: for one that does not hold the object imgclf writes.
        """
        path = self.checkpoints / "state.json"
        state = read_json(path)
        if not (isinstance(state, dict) and isinstance(state.get("epoch"), int)):
            raise RunError(f"{escape_name(str(path))} does not hold what imgclf writes there (a JSON object with the "
                           "last finished epoch): it was edited by hand. Pass --overwrite to start the run again.")
        return state

    def finished_checkpoint(self) -> Path:
        """The checkpoint of the epoch `checkpoints/state.json` records as finished.

        An epoch's checkpoint is saved as `epoch-N.keras`, named in
        `state.json`, then renamed to `last.keras`: the named file while it is
        there (the process was killed before the rename), else `last.keras`.
        """
        try:
            named = self.state().get("checkpoint")
        except (OSError, ValueError, RunError):
            named = None
        if isinstance(named, str) and _EPOCH_CHECKPOINT.fullmatch(named) and (self.checkpoints / named).is_file():
            return self.checkpoints / named
        return self.checkpoints / "last.keras"

    def settle_checkpoint(self) -> None:
        """Finishes what a process killed after `state.json` and before the rename left: the checkpoint it names
        becomes `last.keras`, and no other `epoch-N.keras` stays. Call it while holding `lock()`."""
        finished = self.finished_checkpoint()
        if finished.name != "last.keras":
            os.replace(finished, self.checkpoints / "last.keras")
        self.remove_epoch_checkpoints()

    def remove_epoch_checkpoints(self) -> None:
        """Removes the `epoch-N.keras` files of `checkpoints/`; call it once the finished one is `last.keras`."""
        for path in self.checkpoints.glob("epoch-*.keras"):
            if _EPOCH_CHECKPOINT.fullmatch(path.name):
                path.unlink(missing_ok=True)

    # Starting and locking -------------------------------------------------
    def start(self, *, overwrite: bool = False) -> None:
        """Prepares the folder for a new run; call it while holding `lock()`.

        A folder that is not a run (it has no `environment.json`, `model.keras`
        or `checkpoints/state.json`) but holds a file or folder with the name
        of one a run writes is refused, with or without `overwrite`: those are
        someone else's files, and training would replace or delete them.

        Args:
            overwrite: replace an earlier run there, finished or not: the
                files a run writes are removed, and nothing else.
                Defaults to `False`.

        Raises:
            RunError: if the folder holds a trained model or a run that was
                stopped before it finished, and `overwrite` is false; or if
                it is not a run but holds names a run writes.
        """
        if self._check_contents(overwrite=overwrite):
            for name in RUN_CONTENTS:
                remove_path(self.path / name)
        self.path.mkdir(parents=True, exist_ok=True)

    def check_start(self, *, overwrite: bool = False) -> bool:
        """Raises the `RunError` that `start` would, changing nothing; returns whether `start` would remove a run.

        Called before a dataset is scanned, so a wrong `--out` fails at once;
        a run that another process is training is refused as in use.
        """
        self._refuse_in_use()
        return self._check_contents(overwrite=overwrite)

    def remove_temporaries(self) -> None:
        """Removes the temporary files that a process killed while writing left in the run folder and its
        `checkpoints/`; call it while holding `lock()`."""
        for folder in (self.path, self.checkpoints):
            remove_temporaries(folder)

    def _check_contents(self, *, overwrite: bool) -> bool:
        state = self.checkpoints / "state.json"
        self._refuse_a_file()
        is_run = any(p.exists() for p in (self.environment_path, self.model_path, state))
        if not is_run:
            taken = [name + ("/" if (self.path / name).is_dir() else "") for name in RUN_CONTENTS
                     if os.path.lexists(self.path / name)]
            if taken:
                raise RunError(
                    f"{self.path} is not an imgclf run but holds {', '.join(taken)}, which a run would replace or "
                    "delete. Choose another --out (a new or empty folder), or move those files away.")
            return False
        if overwrite:
            return True
        if self.model_path.exists():
            raise RunError(
                f"{self.path} already holds a trained run (model.keras). "
                "Pass --overwrite to replace it, or choose another --out."
            )
        if state.exists():
            finished = self.state()["epoch"] + 1
            raise RunError(
                f"{self.path} holds a run that stopped after {finished} epoch(s). Pass --resume to continue it, "
                "--overwrite to start again, or choose another --out."
            )
        return True  # a run stopped before its first epoch ended: nothing to keep, and its TensorBoard file would stay

    def _refuse_a_file(self) -> None:
        """A run folder that is a file, or below one (`notes.txt/run`), cannot be made."""
        try:
            check_folder_target(self.path)
        except NotADirectoryError as error:
            file = Path(error.filename)
            what = "is a file" if file == self.path else f"is inside {file}, which is a file"
            raise RunError(f"{self.path} {what}, not a folder. Choose another --out (a new or empty folder).") from None

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Holds an exclusive lock on the run so two processes never train into it."""
        import fcntl

        self._refuse_a_file()
        made = not self.path.exists()
        had_lock_file = (self.path / ".lock").exists()
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "w") as handle:
            self._take_lock(handle)
            try:
                yield
            finally:
                if not had_lock_file:
                    self._remove_if_unused(made)
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _remove_if_unused(self, made: bool) -> None:
        """A run refused before it wrote anything leaves no lock file behind, nor the folder `lock()` made for it."""
        try:
            if [entry.name for entry in self.path.iterdir()] != [".lock"]:
                return
            (self.path / ".lock").unlink()
            if made:
                self.path.rmdir()
        except OSError:  # a folder someone else writes into meanwhile is theirs to keep
            pass

    def _refuse_in_use(self) -> None:
        """Raises `RunError` if another process holds `lock()` on this run (and changes nothing)."""
        if (self.path / ".lock").is_dir():
            raise RunError(f"{self.path / '.lock'} is a folder, where imgclf keeps the lock file of a run. Move it "
                           "away, or choose another --out.")
        try:
            handle = open(self.path / ".lock")
        except OSError:  # no lock file (no run yet), or one `lock()` will report on
            return
        with handle:  # closing the file lets go of the lock taken here
            self._take_lock(handle)

    def _take_lock(self, handle) -> None:
        import fcntl

        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(f"{self.path} is in use by another imgclf process; wait for it or choose another --out.") from None

    # Reading --------------------------------------------------------------
    def require(self, *names: str) -> None:
        """Raises `RunError` naming the first of `names` missing from the run."""
        if self.path.exists() and not self.path.is_dir():
            raise RunError(f"{self.path} is a file, not a run folder. Pass the folder `imgclf train DATA --out RUN` "
                           "wrote.")
        if not self.path.is_dir():
            raise RunError(f"Run directory not found: {self.path}. Train one with "
                           f"`imgclf train DIR --out {shell_word(self.path)}`.")
        for name in names:
            if not (self.path / name).exists():
                stopped = self.unfinished() if name == "model.keras" else None
                if stopped:
                    raise RunError(f"{self.path} has no model.keras yet: {stopped}")
                raise RunError(f"{self.path} has no {name}; it is not a finished run, i.e. a folder that "
                               "`imgclf train DATA --out RUN` wrote. Pass a run folder, or train one.")

    def unfinished(self) -> str | None:
        """How far the training of a run without `model.keras` got, and the command that continues it (or that
        another process is training it now); `None` for a run that has its model or never finished an epoch and is
        not being trained."""
        if self.model_path.exists():
            return None
        state = self.checkpoints / "state.json"
        try:
            done = self.state()["epoch"] + 1 if state.is_file() else 0
        except (DamagedFileError, RunError):
            done = None
        try:
            of = f" of {load_config(self.config_path).train.epochs}"
        except Exception:  # a damaged or missing config.yaml: the command can still be given
            of = ""
        if self.in_use():
            return (f"another imgclf process is training it now ({done or 0} epoch(s){of} done so far); wait for it "
                    "to finish")
        if not done:
            return None
        return (f"its training stopped after epoch {done}{of}. Continue it with `imgclf train DATA --out "
                f"{shell_word(self.path)} --resume`, DATA being the folder it was trained on.")

    def in_use(self) -> bool:
        """Whether another process holds `lock()` on this run, i.e. is training into it."""
        import fcntl

        try:
            handle = open(self.path / ".lock")
        except OSError:  # no lock file (no run yet), or not a file
            return False
        with handle:  # closing the file lets go of the lock taken here
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            except OSError:  # a file system without locks (ENOLCK): no one can be told to wait
                return False
        return False

    def config(self) -> Config:
        self.require("config.yaml")
        return load_config(self.config_path)

    def classes(self) -> list[str]:
        """The class names of `classes.json`: output i of the model is class i.

        Raises:
            RunError: if the file is missing, is not JSON, or does not hold
                a list of distinct names.
        """
        self.require("classes.json")
        shown = escape_name(str(self.classes_path))
        fix = "Restore it from a copy of the run, or train the run again."
        try:
            classes = read_json(self.classes_path)
        except DamagedFileError as error:  # not JSON, or not UTF-8
            raise RunError(f"{shown} is not valid JSON ({error.reason}); it should hold the run's class names, "
                           f'e.g. ["cat", "dog"]. {fix}') from None
        if not isinstance(classes, list) or not all(isinstance(name, str) for name in classes):
            held = json.dumps(classes, ensure_ascii=False)
            raise RunError(f"{shown} should hold a list of class names, e.g. [\"cat\", \"dog\"]; it holds "
                           f"{held if len(held) <= 60 else held[:57] + '...'}. {fix}")
        repeated = sorted(name for name, count in collections.Counter(classes).items() if count > 1)
        if repeated:
            raise RunError(f"{shown} names {repeated} more than once; each class has one output of the model. {fix}")
        return classes

    def manifest(self, classes: Sequence[str] | None = None):
        """The run's `manifest.csv`.

        Args:
            classes: the run's class names; when given, a usable image of
                any other class is refused (`classes.json` was edited or
                replaced). Defaults to `None`.

        Raises:
            RunError: if the manifest lists usable images of a class not in
                `classes`.
        """
        from .manifest import Manifest

        self.require("manifest.csv")
        manifest = Manifest.read_csv(self.manifest_path)
        unknown = sorted(set(manifest.classes) - set(classes)) if classes is not None else []
        if unknown:
            raise RunError(f"{escape_name(str(self.manifest_path))} lists images of {unknown}, which "
                           f"{escape_name(str(self.classes_path))} does not name (it names {list(classes)}). "
                           "The run directory is inconsistent; train it again.")
        return manifest

    def load_model(self):
        """Loads `model.keras` (the best checkpoint of the run), as `prediction.load_keras_model` does.

        Raises:
            RunError: if the run has no `model.keras`, or the file is
                damaged: cut short, empty, or a part of it fails its
                checksum (a `.keras` file is a zip archive).
        """
        from .prediction import load_keras_model

        self.require("model.keras")
        path = self.model_path
        if path.is_file() and not zipfile.is_zipfile(path):
            size = path.stat().st_size
            raise self._damaged_model(f"{size:,} bytes that are not a zip archive: cut short?" if size else "it is empty")
        try:
            return load_keras_model(path)
        except zipfile.BadZipFile as error:
            raise self._damaged_model(str(error)) from None

    def _damaged_model(self, reason: str) -> RunError:
        return RunError(f"{escape_name(str(self.model_path))} is damaged: it is not a valid .keras file ({reason}). "
                        "Train the run again, or copy model.keras again from where the run was trained.")

    def load_model_and_classes(self):
        """Loads `model.keras` and `classes.json`, checked against each other.

        Returns:
            `(model, classes)`: the `keras.Model` and its class names.

        Raises:
            RunError: if either file is missing or damaged, or the model's
                outputs and the names differ in number.
        """
        classes = self.classes()
        model = self.load_model()
        if model.output_shape[-1] != len(classes):
            raise RunError(f"{escape_name(str(self.model_path))} predicts {model.output_shape[-1]} classes but "
                           f"{escape_name(str(self.classes_path))} names {len(classes)}. The run directory is "
                           "inconsistent; train it again.")
        return model, classes

    def check_images_exist(self, split: str, entries, fix: str) -> None:
        """Raises `RunError` if not one of `entries`, the images of `split` in `manifest.csv`, exists.

        Called when none of them could be read: then the data folder has
        most likely moved, which `fix` tells the user what to do about.
        """
        if entries and not any(os.path.lexists(entry.path) for entry in entries):
            raise RunError(f"None of the {len(entries)} {split} images listed in {escape_name(str(self.manifest_path))} "
                           f"exist (e.g. {escape_name(entries[0].path)}): the data folder may have moved, or been "
                           f"deleted, since the run was trained. {fix}")

    # Writing --------------------------------------------------------------
    def write_config(self, cfg: Config) -> None:
        write_text(self.config_path, dump_config(cfg))

    def write_classes(self, classes: Sequence[str]) -> None:
        write_json(self.classes_path, list(classes))

    def write_environment(self, *, seeds: dict, data_hash: str, extra: dict | None = None) -> None:
        write_json(self.environment_path, environment_record(seeds=seeds, data_hash=data_hash, extra=extra))

    def remove_evaluations(self) -> list[str]:
        """Removes `eval/` and `report.html`, which describe the `model.keras` a resumed run is about to replace.

        Returns:
            The names removed, e.g. `["eval/", "report.html"]`.
        """
        return [shown for name, shown in (("eval", "eval/"), ("report.html", "report.html")) if remove_path(self.path / name)]

    def save_model(self, model, path=None) -> Path:
        """Saves a Keras model atomically, by default to `model.keras`."""
        path = Path(path or self.model_path)
        with atomic_path(path) as tmp:
            model.save(tmp)
        return path


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment_record(*, seeds: dict, data_hash: str, extra: dict | None = None) -> dict:
    """What a run needs to be reproduced: versions, seeds, data hash, host."""
    packages = ["imgclf", "tensorflow", "keras", "albumentations", "numpy", "pillow", "scikit-learn"]
    record = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "versions": {name: _version(name) for name in packages},
        "seeds": seeds,
        "data_hash": data_hash,
    }
    record.update(extra or {})
    return record

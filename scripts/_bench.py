"""What the benchmark scripts share: argument checks, child processes, the machine record and the JSON of results."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
from pathlib import Path


def machine(**versions: str) -> dict:
    """Cores, CPU model and Python version, plus `versions` (e.g. `pillow=PIL.__version__`)."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
               platform.processor())
    return {"cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version(), **versions}


def check_json_target(parser: argparse.ArgumentParser, path) -> None:
    """Refuses, before any measurement, a `--json` that `write_results` could not write (as course_experiments does)."""
    from imgclf.files import check_file_target

    if path is None:
        return
    try:
        check_file_target(path)
    except IsADirectoryError:
        parser.error(f"--json {path} is a folder. Pass the path of a file for the results, e.g. "
                     f"{Path(path) / 'results.json'}.")
    except NotADirectoryError as error:
        parser.error(f"--json {path} cannot be written: {error.filename} is a file, not a folder. Choose another path.")


def check_at_least(parser: argparse.ArgumentParser, args: argparse.Namespace, minimum: int, *names: str) -> None:
    """Refuses, before any measurement, an option among `names` (attribute names of `args`) below `minimum`."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < minimum:
            parser.error(f"--{name.replace('_', '-')} must be at least {minimum}. Received: {value}")


def check_train_test(parser: argparse.ArgumentParser, folder: Path, option: str = "") -> None:
    """Refuses a dataset folder without `train/` and `test/` class folders (Fashion-MNIST as its recipe writes it)."""
    if not (Path(folder) / "train").is_dir() or not (Path(folder) / "test").is_dir():
        parser.error(f"{option + ' ' if option else ''}{folder} needs train/ and test/ subfolders of class folders "
                     "(train/CLASS/*.png, test/CLASS/*.png); make Fashion-MNIST that way with "
                     "`datasets/fashion_mnist.py DIR` (it needs `apt-get install dataset-fashion-mnist`)")


def run_json(command: list[str], what: str, **options) -> dict:
    """Runs `command` (a measurement in a fresh process) and returns the JSON of its last output line.

    If it fails, stops the benchmark with the end of its standard error, which holds the real error.
    `options` go to `subprocess.run` (`env`, `cwd`).
    """
    done = subprocess.run(command, capture_output=True, text=True, **options)
    if done.returncode != 0:
        raise SystemExit(f"{what} failed (exit status {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_results(path: Path, record: dict) -> None:
    """Writes `record` as indented JSON to `path` (its folder is created) and says where."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written: {path}")

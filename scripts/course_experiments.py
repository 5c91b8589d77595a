"""The Keras course's sequence of MNIST experiments, as imgclf runs on any class-per-folder dataset.

The course trained on MNIST and reported these test errors:

| step | network | optimizer | epochs | course test error |
|---|---|---|---|---|
| 1 | one hidden Dense(784) layer | Adam | 2 | 2.93% |
| 2 | two hidden layers | Adam | 2 | 2.80% |
| 3 | three hidden layers | Adam | 2 | 2.62% |
| 4 | three hidden layers, dropout 0.2 | Adam | 2 | 2.60% |
| 5 | same, plain SGD at learning rate 0.01 | SGD | 2 | 9.49% |
| 6 | same, 20 epochs | SGD | 20 | 4.17% |
| 7 | the course's ConvNet (`cnn`) | Adam | 2 | — |

Each step is one `imgclf.train` with the course's settings, not imgclf's
defaults: Keras' default batch size (32), Adam at Keras' default learning rate
(0.001), SGD without momentum at Keras' default learning rate (0.01), no
augmentation, no label smoothing, no validation split (the course trained on the whole training
set and measured on the test set). The test error comes from
`imgclf.evaluate`; the seconds per epoch are the median of the epoch lines
`imgclf.train` prints.

Usage:

```
.venv/bin/python scripts/course_experiments.py data/fashion-mnist --json scripts/results/course_experiments_fashion_mnist.json
.venv/bin/python scripts/course_experiments.py data/digits --test 0.3 --json scripts/results/course_experiments_digits.json
```

A folder with `train/` and `test/` subfolders keeps its own test split
(Fashion-MNIST as `datasets/fashion_mnist.py` writes it), and is refused when
`test/` holds no images; any other folder is split with `--test`. A folder
that a dataset recipe stopped writing is refused with the command that
finishes it. The script prints a Markdown table beside the course's
figures and writes the same rows as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

HIDDEN = (784,)
STEPS = [
    {"step": "one hidden layer", "course_error": 2.93, "options": {"model": "mlp", "hidden": HIDDEN}},
    {"step": "two hidden layers", "course_error": 2.80, "options": {"model": "mlp", "hidden": HIDDEN * 2}},
    {"step": "three hidden layers", "course_error": 2.62, "options": {"model": "mlp", "hidden": HIDDEN * 3}},
    {"step": "+ dropout 0.2", "course_error": 2.60, "options": {"model": "mlp", "hidden": HIDDEN * 3, "dropout": 0.2}},
    {"step": "SGD instead of Adam", "course_error": 9.49,
     "options": {"model": "mlp", "hidden": HIDDEN * 3, "dropout": 0.2, "optimizer": "sgd", "momentum": 0.0,
                 "learning_rate": 0.01}},
    {"step": "20 epochs instead of 2", "course_error": 4.17,
     "options": {"model": "mlp", "hidden": HIDDEN * 3, "dropout": 0.2, "optimizer": "sgd", "momentum": 0.0,
                 "learning_rate": 0.01, "epochs": 20}},
    {"step": "the course's ConvNet", "course_error": None, "options": {"model": "cnn"}},
]
# The course's settings where imgclf's defaults differ.
COURSE = {"epochs": 2, "batch_size": 32, "optimizer": "adam", "learning_rate": 0.001, "augment": "none",
          "schedule": "constant", "label_smoothing": 0.0, "val": 0.0}
EPOCH_SECONDS = re.compile(r"^epoch \d+/\d+ .*, ([0-9.]+) s, [0-9.,]+ images/s$")


def run_step(data, step: dict, out: Path, *, test: float, seed: int) -> dict:
    import imgclf

    options = {**COURSE, "test": test, "seed": seed, **step["options"]}
    printed = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(printed):
        run = imgclf.train(data, out=out, overwrite=True, verbose=2, progress=False, **options)
    seconds = time.perf_counter() - started
    epochs = [float(m.group(1)) for m in map(EPOCH_SECONDS.match, printed.getvalue().splitlines()) if m]
    evaluation = imgclf.evaluate(run, "test", progress=False)
    return {"step": step["step"], "options": {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()},
            "test_error": round(100 * evaluation.error_rate, 2), "test_images": len(evaluation.y_true),
            "course_error": step["course_error"], "epochs": len(epochs),
            "seconds_per_epoch": round(statistics.median(epochs), 2) if epochs else None,
            "seconds": round(seconds, 1), "run": str(out)}


def markdown(rows: list[dict], dataset: str) -> str:
    lines = [f"| step ({dataset}) | test error | epochs | s/epoch | course (MNIST) |", "|---|---:|---:|---:|---:|"]
    for row in rows:
        course = f"{row['course_error']:.2f}%" if row["course_error"] is not None else "—"
        lines.append(f"| {row['step']} | {row['test_error']:.2f}% | {row['epochs']} | {row['seconds_per_epoch']} | {course} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="example: scripts/course_experiments.py data/fashion-mnist --json out.json")
    parser.add_argument("data", help="class-per-folder dataset (or one with train/ and test/ subfolders)")
    parser.add_argument("--out", default="runs/course", help="folder for the run directories (default runs/course)")
    parser.add_argument("--test", type=float, default=0.15,
                        help="test fraction for a folder without its own test split (default 0.15)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and of training (default 0)")
    parser.add_argument("--steps", type=int, nargs="+", choices=range(1, len(STEPS) + 1), metavar="STEP",
                        help=f"run only these steps, counted from 1 (1 to {len(STEPS)})")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    if not 0 <= args.test < 1:
        parser.error(f"--test is the fraction of the images held out for testing, from 0 to below 1. Received: {args.test}")

    import imgclf
    from imgclf.files import escape_name, shell_word, write_json
    from imgclf.manifest import interrupted_build

    dataset = Path(args.data).name
    chosen = [STEPS[i - 1] for i in args.steps] if args.steps else STEPS
    runs = [Path(args.out) / dataset / f"{STEPS.index(step) + 1}" for step in chosen]
    check_targets(parser, args, runs)
    interrupted = interrupted_build(args.data)
    if interrupted:
        parser.error(interrupted)
    try:
        manifest = imgclf.scan(args.data, val=0.0, test=args.test, seed=args.seed, progress=False)
    except (ValueError, OSError) as error:
        parser.error(str(error))
    test_folder = Path(args.data) / "test"
    if test_folder.parent.joinpath("train").is_dir() and test_folder.is_dir():
        inside = os.path.abspath(test_folder) + os.sep
        if not any(entry.path.startswith(inside) for entry in manifest.usable):
            parser.error(f"{test_folder} holds no usable images, so the test error would be measured on images carved "
                         f"out of train/ instead of the folder's own test split. Put the test images in "
                         f"{test_folder}/<class>/, or remove {test_folder} to carve a test split with --test.")
    left_out = [entry for entry in manifest.entries if not entry.usable]
    if left_out:
        print(f"note: {len(left_out):,} file(s) left out with errors, e.g. {escape_name(left_out[0].path)} "
              f"({left_out[0].problem}); `imgclf audit {shell_word(args.data)} --out DIR` lists every one",
              file=sys.stderr, flush=True)
    if len(manifest.classes) < 2:
        parser.error(f"{args.data} holds {len(manifest.classes)} class(es) with usable images; the experiments "
                     "need at least 2 class folders.")
    if not manifest.split("test"):
        parser.error(f"{args.data} has no test images, and the experiments report test error: give a folder with "
                     "test/ images or a --test fraction above 0 (classes need at least 3 images each).")
    rows = []
    for number, (step, run) in enumerate(zip(chosen, runs), 1):
        row = run_step(manifest, step, run, test=args.test, seed=args.seed)
        rows.append(row)
        print(f"[{number}/{len(chosen)}] {row['step']}: test error {row['test_error']:.2f}% "
              f"({row['seconds_per_epoch']} s/epoch)", file=sys.stderr, flush=True)
        if args.json:  # after every step, so that a stopped sequence keeps the rows it finished
            write_json(args.json, record(dataset, args.data, manifest, rows))
    print(markdown(rows, dataset))
    return 0


def check_targets(parser: argparse.ArgumentParser, args, runs: list[Path]) -> None:
    """Refuses, before any training, a `--json` or `--out` that the sequence could not write to."""
    from imgclf.files import check_file_target, check_folder_target, is_inside
    from imgclf.runs import RunDir, RunError

    if args.json:
        try:
            check_file_target(args.json)
        except IsADirectoryError:
            parser.error(f"--json {args.json} is a folder. Pass the path of a file for the rows, e.g. "
                         f"{Path(args.json) / 'course_experiments.json'}.")
        except NotADirectoryError as error:
            parser.error(f"--json {args.json} cannot be written: {error.filename} is a file, not a folder. "
                         "Choose another path.")
    try:
        check_folder_target(args.out)
    except NotADirectoryError as error:
        parser.error(f"--out {args.out} cannot hold the runs: {error.filename} is a file, not a folder. "
                     "Choose another --out.")
    if os.path.isdir(args.data) and is_inside(args.out, args.data):
        parser.error(f"--out {args.out} is inside the dataset {args.data}: the next scan would read the runs as a "
                     "class. Choose an --out outside it, e.g. runs/course.")
    for run in runs:
        try:
            RunDir(run).check_start(overwrite=True)
        except RunError as error:
            parser.error(str(error))


def record(dataset: str, data, manifest, rows: list[dict]) -> dict:
    """The JSON record of the rows, with the dataset's size and the host they were measured on."""
    import tensorflow as tf

    return {"dataset": dataset, "data": str(data), "train_images": len(manifest.split("train")),
            "test_images": rows[0]["test_images"] if rows else 0, "rows": rows,
            "host": {"python": platform.python_version(), "tensorflow": tf.__version__, "cpus": os.cpu_count(),
                     "machine": platform.machine()}}


if __name__ == "__main__":
    sys.exit(main())

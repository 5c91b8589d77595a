"""Benchmark: fine-tuning a backbone pretrained on other classes, against training it from scratch, with 20 images a class.

From the Fashion-MNIST class folder built by `datasets/fashion_mnist.py`:

1. Pretrain: train the backbone from random weights (`weights="none"`) on five classes
   (`--pretrain-classes`, by default t-shirt_top, trouser, pullover, sandal, bag: tops, trousers,
   shoes and bags, so that the features cover the kinds of things the target shows),
   `--pretrain-per-class` training images each, 200 more each for validation, 200 test images each.
2. Fine-tune: the same backbone with `weights="run:<pretrain run>"` on the OTHER five classes
   (by default dress, coat, shirt, sneaker, ankle_boot) with only 20 training images a
   class (100 in all, no validation split), in imgclf's two phases: the head on the frozen
   backbone for `--freeze-epochs` at `--head-lr`, then every layer at `--fine-tune-lr`.
3. Reference: the same network from scratch (`weights="none"`), same 100 images, same epochs,
   same augmentation, imgclf's default learning rate (1e-3).

Defaults (mobilenet_v2 at 32 px, 2 pretraining epochs, 40 epochs on the target of which 20 train
the head, `light` augmentation, 5 draws) run in about 12 minutes on 2 CPU cores.

Both are evaluated with `imgclf.evaluate` on the target classes' test images (all 1,000 a class
by default). Steps 2 and 3 are repeated for `--draws` different draws of the 100 training images
(each draw also seeds training); the table shows each draw and the mean.
Target: the fine-tuned model's test error is at least 10 points lower than from scratch.

The subsets are CSV files (path,label,split) that imgclf reads with their split kept.

Usage:

```
python datasets/fashion_mnist.py data/fashion-mnist          # once, if the folder is missing
.venv/bin/python scripts/bench_transfer.py data/fashion-mnist [--draws 5] [--json scripts/results/bench_transfer.json]
```
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _bench import (check_at_least, check_json_target,  # scripts/, first on sys.path
                    machine as machine_record, write_results)

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import imgclf  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ("t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot")
PRETRAIN_CLASSES = ("t-shirt_top", "trouser", "pullover", "sandal", "bag")
TARGET_POINTS = 10.0


def pick(data: Path, split: str, label: str, count: int | None, *, seed: int, skip: int = 0) -> list[Path]:
    """`count` files of `data/split/label`, in an order shuffled by `seed`, after the first `skip`."""
    files = sorted((data / split / label).glob("*.png"))
    random.Random(f"{seed}:{label}").shuffle(files)
    return files[skip:None if count is None else skip + count]


# The settings the recorded results were measured with, where imgclf's defaults have since changed.
RECIPE = {"schedule": "constant", "label_smoothing": 0.0}


def write_csv(path: Path, rows) -> Path:
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["path", "label", "split"])
        writer.writerows(rows)
    return path


def train_and_evaluate(csv: Path, out: Path, **options) -> dict:
    """Trains on a CSV (its split kept, nothing carved) and evaluates on its test rows."""
    start = time.perf_counter()
    manifest = imgclf.scan(csv, val=0, test=0, progress=False)
    options = {**RECIPE, **options}
    run = imgclf.train(manifest, out=out, overwrite=True, verbose=0, progress=False, **options)
    evaluation = imgclf.evaluate(run, "test", progress=False)
    return {"test_error": evaluation.error_rate, "seconds": time.perf_counter() - start}


def machine() -> dict:
    import keras
    import tensorflow as tf

    return machine_record(tensorflow=tf.__version__, keras=keras.__version__)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="Fashion-MNIST folder built by datasets/fashion_mnist.py")
    parser.add_argument("--model", default="mobilenet_v2", help="backbone (see `imgclf models`)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--pretrain-classes", default=",".join(PRETRAIN_CLASSES),
                        help="five classes to pretrain on, comma-separated; the other five are the target")
    parser.add_argument("--pretrain-per-class", type=int, default=5800, help="all but the 200 validation images")
    parser.add_argument("--pretrain-epochs", type=int, default=2)
    parser.add_argument("--per-class", type=int, default=20, help="training images a target class")
    parser.add_argument("--test-per-class", type=int, default=None, help="test images a target class (default: all)")
    parser.add_argument("--epochs", type=int, default=40, help="epochs of the fine-tuned and the scratch runs")
    parser.add_argument("--freeze-epochs", type=int, default=20, help="head-only epochs of fine-tuning")
    parser.add_argument("--head-lr", type=float, default=1e-2, help="learning rate of the head phase")
    parser.add_argument("--fine-tune-lr", type=float, default=1e-4, help="learning rate once every layer trains")
    parser.add_argument("--augment", default="light", help="augmentation of the target runs (both)")
    parser.add_argument("--draws", type=int, default=5, help="draws of the target training images")
    parser.add_argument("--runs", type=Path, default=None, help="folder for the runs (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=ROOT / "scripts" / "results" / "bench_transfer.json")
    args = parser.parse_args(argv)
    check_at_least(parser, args, 1, "image_size", "pretrain_per_class", "pretrain_epochs", "per_class",
                   "test_per_class", "epochs", "draws")
    check_json_target(parser, args.json)

    pretrain_classes = tuple(args.pretrain_classes.split(","))
    target_classes = tuple(c for c in CLASSES if c not in pretrain_classes)
    if not set(pretrain_classes) < set(CLASSES):
        parser.error(f"--pretrain-classes must name Fashion-MNIST classes {CLASSES}. Received: {args.pretrain_classes}")
    if not all((args.data / "train" / c).is_dir() for c in CLASSES):
        parser.error(f"{args.data} is not a Fashion-MNIST folder (train/CLASS/ for its 10 classes). Build one with "
                     "`sudo apt-get install dataset-fashion-mnist` and `python datasets/fashion_mnist.py DIR` (a new "
                     "folder DIR), then pass DIR.")
    data = args.data.resolve()  # the CSVs lie elsewhere; relative paths would be read relative to them
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        work = args.runs or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        size = (args.image_size, args.image_size)

        pretrain_csv = write_csv(work / "pretrain.csv", [
            *((f, c, "train") for c in pretrain_classes for f in pick(data, "train", c, args.pretrain_per_class, seed=0)),
            *((f, c, "val") for c in pretrain_classes
              for f in pick(data, "train", c, 200, seed=0, skip=args.pretrain_per_class)),
            *((f, c, "test") for c in pretrain_classes for f in pick(data, "test", c, 200, seed=0)),
        ])
        print(f"pretraining {args.model} at {args.image_size} px on {', '.join(pretrain_classes)} "
              f"({args.pretrain_per_class} images a class, {args.pretrain_epochs} epochs) ...", flush=True)
        pretrain = train_and_evaluate(pretrain_csv, work / "pretrain", model=args.model, weights="none",
                                      image_size=size, epochs=args.pretrain_epochs)
        print(f"  test error {pretrain['test_error']:.2%} on its own classes, {pretrain['seconds']:.0f} s", flush=True)

        test_rows = [(f, c, "test") for c in target_classes
                     for f in pick(data, "test", c, args.test_per_class, seed=0)]
        common = dict(model=args.model, epochs=args.epochs, augment=args.augment)
        draws = []
        for draw in range(args.draws):
            csv = write_csv(work / f"target-{draw}.csv", [
                *((f, c, "train") for c in target_classes for f in pick(data, "train", c, args.per_class, seed=draw)),
                *test_rows])
            fine_tuned = train_and_evaluate(
                csv, work / f"fine-tuned-{draw}", weights=f"run:{work / 'pretrain'}", seed=draw,
                learning_rate=args.head_lr, freeze_epochs=args.freeze_epochs, unfreeze="all",
                fine_tune_lr=args.fine_tune_lr, **common)
            from_scratch = train_and_evaluate(csv, work / f"scratch-{draw}", weights="none", image_size=size,
                                              seed=draw, **common)
            draws.append({"draw": draw, "fine_tuned": fine_tuned, "from_scratch": from_scratch,
                          "points": 100 * (from_scratch["test_error"] - fine_tuned["test_error"])})
            print(f"  draw {draw}: fine-tuned {fine_tuned['test_error']:.2%} ({fine_tuned['seconds']:.0f} s), "
                  f"from scratch {from_scratch['test_error']:.2%} ({from_scratch['seconds']:.0f} s)", flush=True)

    mean = lambda key: statistics.mean(d[key]["test_error"] for d in draws)  # noqa: E731
    points = statistics.mean(d["points"] for d in draws)
    seconds = time.perf_counter() - started
    test_images = len(test_rows)
    print(f"\n{args.model} at {args.image_size} px; {len(target_classes)} target classes, "
          f"{args.per_class * len(target_classes)} training images, {test_images:,} test images\n")
    print("| draw | fine-tuned test error | from scratch test error | difference (points) |")
    print("|---|---:|---:|---:|")
    for d in draws:
        print(f"| {d['draw']} | {d['fine_tuned']['test_error']:.2%} | {d['from_scratch']['test_error']:.2%} | "
              f"{d['points']:.1f} |")
    print(f"| mean | {mean('fine_tuned'):.2%} | {mean('from_scratch'):.2%} | {points:.1f} |")
    met = points >= TARGET_POINTS
    print(f"\nreference: the same network from scratch. target: fine-tuned at least {TARGET_POINTS:.0f} points lower: "
          f"{'met' if met else 'NOT met'} ({points:.1f} points); {seconds:.0f} s in all")

    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    summary = {"machine": machine(), "settings": settings, "pretrain_classes": pretrain_classes,
               "target_classes": target_classes, "test_images": test_images, "pretrain": pretrain, "draws": draws,
               "fine_tuned_test_error": mean("fine_tuned"), "from_scratch_test_error": mean("from_scratch"),
               "difference_points": points, "target_points": TARGET_POINTS, "target_met": met, "seconds": seconds}
    write_results(args.json, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())

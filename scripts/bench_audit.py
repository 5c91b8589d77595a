"""Benchmark: `imgclf.audit` on the 70,000 Fashion-MNIST PNGs against a hand-written check loop.

Measures, each in a fresh process so that peak memory belongs to one measurement:

1. `imgclf.audit` of all 70,000 files (full decode, sha1 of every file, EXIF and
   mode checks, duplicates and label conflicts, audit.csv written), with the
   default one worker process per CPU.
2. The reference: the loop people write by hand, and what fastai's
   `verify_images` does, one process opening and decoding every file with
   Pillow (`Image.open(p).load()`), over the same files.
3. `imgclf.audit` of a 10,000-file subset (a `path,label` CSV), to show that
   peak memory does not grow with the number of files.

Target: the full audit takes at most 30 s on 2 cores.

Usage:

```
.venv/bin/python scripts/bench_audit.py [--data data/fashion-mnist] [--repeat 1] [--json scripts/results/bench_audit.json]
```

The dataset is built with `datasets/fashion_mnist.py` when missing; that needs
Debian's `dataset-fashion-mnist` package (`sudo apt-get install dataset-fashion-mnist`).
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _bench import (check_at_least, check_json_target, check_train_test,  # scripts/, first on sys.path
                    machine as machine_record, run_json, write_results)

ROOT = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 30.0

# Each measurement runs as `python -c CODE folder_or_csv out_dir` and prints one JSON line.
AUDIT_CODE = """
import json, resource, sys, time
import imgclf
start = time.perf_counter()
result = imgclf.audit(sys.argv[1], out=sys.argv[2], progress=False)
seconds = time.perf_counter() - start
print(json.dumps({"files": len(result.manifest.entries), "errors": len(result.errors), "seconds": seconds,
                  "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "children_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""

REFERENCE_CODE = """
import json, resource, sys, time
from pathlib import Path
from PIL import Image
files = sorted(str(p) for p in Path(sys.argv[1]).rglob("*.png"))
start = time.perf_counter()
failures = []
for path in files:
    try:
        with Image.open(path) as image:
            image.load()
    except Exception as error:
        failures.append((path, error))
seconds = time.perf_counter() - start
print(json.dumps({"files": len(files), "errors": len(failures), "seconds": seconds,
                  "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "children_rss_mib": 0.0}))
"""


def ensure_dataset(folder: Path) -> None:
    if folder.exists():
        return
    print(f"building Fashion-MNIST PNGs in {folder} ...", flush=True)
    build = subprocess.run([sys.executable, str(ROOT / "datasets" / "fashion_mnist.py"), str(folder), "--quiet"])
    if build.returncode != 0:
        print("could not build Fashion-MNIST: install Debian's package with "
              "`sudo apt-get install dataset-fashion-mnist`, or pass --data with a built folder", file=sys.stderr)
        sys.exit(2)


def subset_csv(folder: Path, per_class: int, path: Path) -> Path:
    """A `path,label` CSV of the first `per_class` training images of every class."""
    folder = folder.resolve()  # the CSV lies elsewhere; imgclf reads relative paths relative to it
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["path", "label"])
        for class_folder in sorted(p for p in (folder / "train").iterdir() if p.is_dir()):
            for image in sorted(class_folder.glob("*.png"))[:per_class]:
                writer.writerow([image, class_folder.name])
    return path


def measure(name: str, code: str, target: Path, repeat: int) -> dict:
    """Best of `repeat` fresh-process runs of `code` on `target`."""
    runs = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as out:
            env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
            runs.append(run_json([sys.executable, "-c", code, str(target), out], f"{name} on {target}", env=env))
    return min(runs, key=lambda run: run["seconds"])


def warm_page_cache(folder: Path) -> None:
    for path in folder.rglob("*.png"):
        path.read_bytes()


def machine() -> dict:
    import PIL

    return machine_record(pillow=PIL.__version__)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "fashion-mnist", help="built Fashion-MNIST folder")
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement; the best is kept")
    parser.add_argument("--json", type=Path, default=ROOT / "scripts" / "results" / "bench_audit.json")
    args = parser.parse_args(argv)
    check_at_least(parser, args, 1, "repeat")
    check_json_target(parser, args.json)
    if args.data.exists():
        check_train_test(parser, args.data, "--data")

    ensure_dataset(args.data)
    warm_page_cache(args.data)
    # The JSON keys keep their names ("70k", "10k subset", as in scripts/results/bench_audit.json);
    # the printed rows and each result's "label" give the real file counts.
    with tempfile.TemporaryDirectory() as scratch:
        subset = subset_csv(args.data, 1000, Path(scratch) / "subset.csv")
        results = {
            "imgclf audit, 70k": measure("imgclf audit", AUDIT_CODE, args.data, args.repeat),
            "reference loop (Pillow open+load, 1 process), 70k": measure("reference loop", REFERENCE_CODE, args.data,
                                                                         args.repeat),
            "imgclf audit, 10k subset": measure("imgclf audit of the subset", AUDIT_CODE, subset, args.repeat),
        }
    full, reference, small = results.values()
    labels = [f"imgclf audit, {full['files']:,} files", f"reference loop (Pillow open+load, 1 process), "
              f"{reference['files']:,} files", f"imgclf audit, subset of {small['files']:,} files"]

    print(f"{'measurement':<60} {'files':>7} {'seconds':>8} {'files/s':>9} {'RSS MiB':>8} {'workers MiB':>12}")
    for label, run in zip(labels, results.values()):
        run["label"] = label
        run["files_per_second"] = run["files"] / run["seconds"]
        print(f"{label:<60} {run['files']:>7,} {run['seconds']:>8.2f} {run['files_per_second']:>9,.0f} "
              f"{run['rss_mib']:>8.0f} {run['children_rss_mib']:>12.0f}")
    speed_ratio = full["files_per_second"] / reference["files_per_second"]
    memory_ratio = full["rss_mib"] / small["rss_mib"]
    workers_ratio = full["children_rss_mib"] / max(small["children_rss_mib"], 1e-9)
    print(f"\nspeed: imgclf audit / reference loop = {speed_ratio:.2f}x "
          f"(the audit also hashes, checks EXIF/modes/duplicates and writes audit.csv)")
    print(f"target: full audit {full['seconds']:.1f} s <= {TARGET_SECONDS:.0f} s: "
          f"{'met' if full['seconds'] <= TARGET_SECONDS else 'NOT met'}")
    print(f"memory: peak RSS {full['files']:,} / {small['files']:,} files = {memory_ratio:.2f}x (main process), "
          f"{workers_ratio:.2f}x (workers) for {full['files'] / small['files']:.1f}x the files")

    summary = {"machine": machine(), "results": results, "speed_ratio_vs_reference": speed_ratio,
               "rss_ratio_70k_vs_10k": memory_ratio, "workers_rss_ratio_70k_vs_10k": workers_ratio,
               "target_seconds": TARGET_SECONDS, "target_met": full["seconds"] <= TARGET_SECONDS}
    write_results(args.json, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: worker processes against threads for scan, audit and the decode cache.

imgclf reads files in parallel in three places: `imgclf.scan` (sha1 and
header of every file), `imgclf.audit` (sha1 and full decode of every file) and
the decode cache (`imgclf.cache.decode_to_cache`: decode and resize every
image once, before training). Pillow and hashlib release the GIL while they
decode, resize and hash, so threads might do this work as fast as processes,
without starting any. This script measures both, in the same run, on two
folders at either end of what people bring:

1. Fashion-MNIST: 70,000 PNGs of 28x28 pixels. Each file is a few hundred
   bytes, so the Python work around each file (under the GIL) dominates.
   Decode cache at 28x28, grayscale.
2. Camera-size JPEGs: 384 generated photos of 4000x3000 pixels (about 4.5 MB
   each, quality 90), where decoding in C dominates. Decode cache at 224x224,
   RGB (Pillow's JPEG draft mode decodes at 1/8 scale).

Each dataset and backend runs in a fresh process (scan, then audit of the
scanned manifest, then the decode cache into a fresh folder), after the files
were read once (warm page cache). The backends alternate within each repeat
and the best of `--repeat` runs is kept per stage; the median (printed) and the
slowest run (in the JSON) show the noise. A third row runs everything in one process (`workers=1`)
as the reference for what parallelism gains.

Usage:

```
.venv/bin/python scripts/bench_workers.py [--repeat 3] [--json scripts/results/bench_workers.json]
```

Fashion-MNIST is built with `datasets/fashion_mnist.py` when missing; that
needs Debian's `dataset-fashion-mnist` package
(`sudo apt-get install dataset-fashion-mnist`). The JPEGs are generated into
`data/camera-jpegs` on the first run (a few minutes on 2 cores, 1.6 GB) and
reused afterwards.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from _bench import (check_at_least, check_json_target,  # scripts/, first on sys.path
                    machine as machine_record, run_json, write_results)

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from imgclf.parallel import BACKEND_VARIABLE, default_workers

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("scan", "audit", "decode cache")
BACKENDS = {
    # name: (value of IMGCLF_PARALLEL_BACKEND, workers); workers 0 means the default, one per CPU.
    "processes": ("process", 0),
    "threads": ("thread", 0),
    "one process": ("process", 1),
}
JPEG_CLASSES = ("beach", "city", "forest", "snow")

# Runs as `python -c CODE folder height width channels workers` and prints one JSON line.
STAGES_CODE = """
import json, sys, tempfile, time
import imgclf
from imgclf.cache import decode_to_cache
from imgclf.config import ImageSpec

folder, height, width, channels, workers = sys.argv[1], *map(int, sys.argv[2:6])
workers = workers or None
seconds = {}
start = time.perf_counter()
manifest = imgclf.scan(folder, workers=workers, progress=False)
seconds["scan"] = time.perf_counter() - start
start = time.perf_counter()
result = imgclf.audit(manifest, workers=workers, progress=False)
seconds["audit"] = time.perf_counter() - start
usable = result.manifest.usable
with tempfile.TemporaryDirectory() as cache_dir:
    start = time.perf_counter()
    images, failures = decode_to_cache([e.path for e in usable], [e.sha1 for e in usable],
                                       ImageSpec(height, width, channels), cache_dir=cache_dir,
                                       workers=workers, progress=False)
    seconds["decode cache"] = time.perf_counter() - start
print(json.dumps({"files": len(manifest.entries), "errors": len(result.errors) + len(failures),
                  "seconds": seconds}))
"""


def ensure_fashion_mnist(folder: Path) -> None:
    if folder.exists():
        return
    print(f"building Fashion-MNIST PNGs in {folder} ...", flush=True)
    build = subprocess.run([sys.executable, str(ROOT / "datasets" / "fashion_mnist.py"), str(folder), "--quiet"])
    if build.returncode != 0:
        print("could not build Fashion-MNIST: install Debian's package with "
              "`sudo apt-get install dataset-fashion-mnist`, or pass --fashion-mnist with a built folder",
              file=sys.stderr)
        sys.exit(2)


def camera_photo(seed: int, width: int = 4000, height: int = 3000) -> Image.Image:
    """A photo-like RGB image: smooth colour fields, shapes with edges, fine texture and sensor noise."""
    rng = np.random.default_rng(seed)
    sky = rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)
    image = Image.fromarray(sky).resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(40):
        x, y = rng.integers(0, width), rng.integers(0, height)
        w, h = rng.integers(50, width // 3), rng.integers(50, height // 3)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x, y, x + w, y + h), fill=colour)
    texture = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
    texture = Image.fromarray(texture).resize((width, height), Image.Resampling.BICUBIC)
    image = Image.blend(image, texture, 0.25).filter(ImageFilter.GaussianBlur(2))
    noise = Image.effect_noise((width, height), 8).convert("RGB")  # gaussian around 128
    return ImageChops.add(image, noise, scale=1.0, offset=-128)


def _write_photo(job: tuple[int, str]) -> None:
    seed, path = job
    tmp = f"{path}.tmp"
    camera_photo(seed).save(tmp, "JPEG", quality=90)
    os.replace(tmp, path)


def ensure_jpegs(folder: Path, count: int) -> None:
    """Generates `count` camera-size JPEGs in class folders, once; existing files are kept."""
    jobs = []
    for index in range(count):
        path = folder / JPEG_CLASSES[index % len(JPEG_CLASSES)] / f"IMG_{index:04d}.jpg"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            jobs.append((index, str(path)))
    if jobs:
        print(f"generating {len(jobs)} camera-size JPEGs in {folder} ...", flush=True)
        with ProcessPoolExecutor() as executor:
            list(executor.map(_write_photo, jobs))


def warm_page_cache(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            path.read_bytes()


def run_stages(folder: Path, size: tuple[int, int, int], backend: str) -> dict:
    variable, workers = BACKENDS[backend]
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", BACKEND_VARIABLE: variable}
    return run_json([sys.executable, "-c", STAGES_CODE, str(folder), *map(str, size), str(workers)],
                    f"scan, audit and decode cache of {folder} with {backend}", env=env)


def machine() -> dict:
    import PIL

    return machine_record(pillow=PIL.__version__, numpy=np.__version__)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fashion-mnist", type=Path, default=ROOT / "data" / "fashion-mnist",
                        help="built Fashion-MNIST folder")
    parser.add_argument("--jpegs", type=Path, default=ROOT / "data" / "camera-jpegs",
                        help="folder of generated camera-size JPEGs (made when missing)")
    parser.add_argument("--jpeg-count", type=int, default=384, help="camera-size JPEGs to generate")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best is kept")
    parser.add_argument("--json", type=Path, default=ROOT / "scripts" / "results" / "bench_workers.json")
    args = parser.parse_args(argv)
    check_at_least(parser, args, 1, "jpeg_count", "repeat")
    check_json_target(parser, args.json)

    ensure_fashion_mnist(args.fashion_mnist)
    ensure_jpegs(args.jpegs, args.jpeg_count)
    datasets = {
        "Fashion-MNIST PNG 28x28": (args.fashion_mnist, (28, 28, 1)),
        "camera JPEG 4000x3000": (args.jpegs, (224, 224, 3)),
    }
    for folder, _ in datasets.values():
        warm_page_cache(folder)

    runs = {(dataset, backend): [] for dataset in datasets for backend in BACKENDS}
    for repeat in range(args.repeat):
        # Alternate which backend goes first, so that a slow spell of the machine does not favour one.
        order = list(BACKENDS) if repeat % 2 == 0 else list(reversed(BACKENDS))
        for dataset, (folder, size) in datasets.items():
            for backend in order:
                # The 1-minute load average before the run shows how busy the machine was.
                load = os.getloadavg()[0]
                run = {**run_stages(folder, size, backend), "load_before": load}
                runs[dataset, backend].append(run)
                print(f"  run {repeat + 1}/{args.repeat} {dataset}, {backend} (load {load:.1f}): "
                      + ", ".join(f"{stage} {run['seconds'][stage]:.2f} s" for stage in STAGES), flush=True)

    results = {}
    print(f"\n{'dataset':<25} {'stage':<13} {'files':>7} "
          + " ".join(f"{backend + ' s (median)':>22}" for backend in BACKENDS) + f" {'threads/processes':>18}")
    for dataset in datasets:
        results[dataset] = {}
        for stage in (*STAGES, "total"):
            row = {}
            for backend in BACKENDS:
                times = [sum(run["seconds"].values()) if stage == "total" else run["seconds"][stage]
                         for run in runs[dataset, backend]]
                row[backend] = {"best": min(times), "worst": max(times), "median": statistics.median(times),
                                "all": times}
            row["threads_over_processes"] = row["threads"]["best"] / row["processes"]["best"]
            row["files"] = runs[dataset, "processes"][0]["files"]
            results[dataset][stage] = row
            cells = " ".join(f"{row[b]['best']:>13.2f} ({row[b]['median']:>6.2f})" for b in BACKENDS)
            print(f"{dataset:<25} {stage:<13} {row['files']:>7,} {cells} {row['threads_over_processes']:>17.2f}x")
    print("\nthreads/processes: best time with threads divided by best time with processes "
          "(above 1: processes are faster)")

    loads = [run["load_before"] for dataset_runs in runs.values() for run in dataset_runs]
    print(f"load average before the runs: {min(loads):.1f} to {max(loads):.1f} on {os.cpu_count()} cores")
    summary = {"machine": machine(), "repeat": args.repeat, "workers": default_workers(), "results": results,
               "load_before_runs": {"min": min(loads), "max": max(loads)},
               "errors": {f"{d}, {b}": runs[d, b][0]["errors"] for d, b in runs}}
    write_results(args.json, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())

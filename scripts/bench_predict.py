"""Benchmark: `imgclf.predict` on a folder against Keras' own folder loader and against the in-memory limit.

For each folder, in one process, with the same model and batch size, timed in turns
(a, b, c, d, a, b, c, d, ...) after one warm-up pass of each, each after a garbage
collection:

(a) Keras: `model.predict` over `keras.utils.image_dataset_from_directory(folder)`
    (TensorFlow decodes and resizes; the dataset is built inside the timing).
(b) imgclf: `imgclf.predict(predictor, folder, out=CSV)`: the folder walk, decoding
    in worker processes, the model, and every row written to the CSV. The predictor
    comes from `imgclf.load(run)` with its worker processes started, as in a long
    session or a second call.
(c) the limit: `model.predict` on the same images already decoded in memory.
(d) imgclf's decoding alone: the folder walked and every file decoded by the
    predictor's worker processes, with no model. Since (b) must decode everything,
    (d)/(c) is a floor under (b)/(c) that no overlap of decoding and inference can
    go below on the machine at hand.

Ratios: (a)/(b), the speed-up of imgclf over the Keras path (target at least 1.2),
and (b)/(c), imgclf's time over the in-memory time (target at most 1.5).

Memory: `imgclf predict RUN FOLDER --out CSV` runs in a fresh process on the
10,000-file and the 60,000-file Fashion-MNIST folders; the peak RSS of the main
process and of the largest worker are recorded.

Usage:

```
.venv/bin/python scripts/bench_predict.py --fashion-run runs/fmnist-cnn --camera-run runs/camera-160
```

The runs are trained when missing (one epoch each: speed does not depend on
accuracy): `imgclf train data/fashion-mnist --model cnn --epochs 1` and
`imgclf train data/camera-jpegs --model small_cnn --image-size 160 --color-mode rgb --epochs 1`.
The Fashion-MNIST folder comes from `datasets/fashion_mnist.py` (Debian's
`dataset-fashion-mnist` package); the camera JPEGs from `datasets/synthetic.py`
or any folder of photos.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _bench import check_at_least, check_json_target, run_json, write_results  # scripts/, first on sys.path

ROOT = Path(__file__).resolve().parent.parent
SPEEDUP_TARGET = 1.2
LIMIT_TARGET = 1.5

# Peak memory as /proc reports it (VmHWM) for this process and for each decoding worker. A worker's
# ru_maxrss would be wrong: Linux carries the parent's peak over the fork and exec that start it.
RSS_CODE = """
import json, sys, time
import imgclf

def peak_mib(pid="self"):
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024

if __name__ == "__main__":
    predictor = imgclf.load(sys.argv[1])
    start = time.perf_counter()
    counts = imgclf.predict(predictor, sys.argv[2], out=sys.argv[3], progress=False)
    seconds = time.perf_counter() - start
    workers = [peak_mib(pid) for pid in predictor._pool._processes] if predictor._pool else [0.0]
    print(json.dumps({"files": counts.images, "failed": counts.failed, "seconds": seconds,
                      "rss_mib": peak_mib(), "workers_rss_mib": max(workers)}))
"""


def ensure_run(run: Path, folder: Path, options: list[str]) -> None:
    if (run / "model.keras").exists():
        return
    print(f"training {run} on {folder} ...", flush=True)
    subprocess.run([sys.executable, "-m", "imgclf", "train", str(folder), "--out", str(run), "--epochs", "1",
                    "--overwrite", *options], check=True)


def keras_dataset(folder: Path, spec, batch_size: int):
    import keras
    import tensorflow as tf

    dataset = keras.utils.image_dataset_from_directory(
        str(folder), labels=None, image_size=(spec.height, spec.width),
        color_mode="grayscale" if spec.channels == 1 else "rgb", batch_size=batch_size, shuffle=False,
        interpolation="bilinear", verbose=False)
    return dataset.map(lambda x: tf.cast(x, tf.uint8))  # the model takes uint8 pixels, as imgclf gives it


def bench_folder(name: str, run: Path, folder: Path, *, batch_size: int, repeats: int) -> dict:
    import imgclf
    from imgclf.prediction import decode_batch, iter_inputs

    predictor = imgclf.load(run)
    predictor.start_workers()
    model, spec = predictor.model, predictor.spec
    paths = list(iter_inputs(folder))
    images, failures = decode_batch((paths, spec, predictor.limits))
    assert not failures, failures[:3]
    scratch = tempfile.TemporaryDirectory(prefix="bench-predict-")
    csv_path = Path(scratch.name) / "predictions.csv"

    def keras_path():
        model.predict(keras_dataset(folder, spec, batch_size), verbose=0)

    def imgclf_path():
        counts = imgclf.predict(predictor, folder, out=csv_path, batch_size=batch_size, progress=False)
        assert counts.images == len(paths) and counts.failed == 0, counts

    def in_memory():
        model.predict(images, batch_size=batch_size, verbose=0)

    def decode_only():
        for _ in predictor._decoded_batches(iter_inputs(folder), batch_size):
            pass

    steps = {"keras": keras_path, "imgclf": imgclf_path, "in_memory": in_memory, "decode_only": decode_only}
    times = {key: [] for key in steps}
    for key, step in steps.items():  # warm-up: tracing, page cache
        step()
    for _ in range(repeats):
        for key, step in steps.items():
            gc.collect()  # what one step leaves behind (tf.data iterators and their threads) is not timed in the next
            start = time.perf_counter()
            step()
            times[key].append(time.perf_counter() - start)
    predictor.close()
    scratch.cleanup()
    median = {key: statistics.median(values) for key, values in times.items()}
    return {
        "folder": str(folder), "run": str(run), "images": len(paths), "batch_size": batch_size,
        "input": f"{spec.height}x{spec.width}x{spec.channels}", "model_parameters": int(model.count_params()),
        "seconds": {key: [round(v, 4) for v in values] for key, values in times.items()},
        "median_seconds": {key: round(v, 4) for key, v in median.items()},
        "keras_over_imgclf": round(median["keras"] / median["imgclf"], 3),
        "imgclf_over_in_memory": round(median["imgclf"] / median["in_memory"], 3),
        "decode_only_over_in_memory": round(median["decode_only"] / median["in_memory"], 3),
        "images_per_second": {key: round(len(paths) / v, 1) for key, v in median.items()},
    }


def peak_rss(run: Path, folder: Path) -> dict:
    # The child runs in ROOT: relative paths, given from the caller's folder, are resolved first.
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as scratch:
        out = Path(scratch) / "predictions.csv"
        return run_json([sys.executable, "-c", RSS_CODE, str(run.resolve()), str(folder.resolve()), str(out)],
                        f"imgclf predict {run} {folder}", cwd=ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fashion", type=Path, default=ROOT / "data" / "fashion-mnist")
    parser.add_argument("--fashion-run", type=Path, default=ROOT / "runs" / "bench-fmnist-cnn")
    parser.add_argument("--camera", type=Path, default=ROOT / "data" / "camera-jpegs")
    parser.add_argument("--camera-run", type=Path, default=ROOT / "runs" / "bench-camera-160")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--camera-repeats", type=int, default=2, help="the Keras path decodes full-size JPEGs: slow")
    parser.add_argument("--skip-rss", action="store_true", help="skip the peak-memory runs at 10k and 60k files")
    parser.add_argument("--json", type=Path, default=ROOT / "scripts" / "results" / "bench_predict.json")
    args = parser.parse_args()
    check_at_least(parser, args, 1, "batch_size", "repeats", "camera_repeats")
    check_json_target(parser, args.json)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    ensure_run(args.fashion_run, args.fashion, ["--model", "cnn"])
    ensure_run(args.camera_run, args.camera, ["--model", "small_cnn", "--image-size", "160", "--color-mode", "rgb"])
    load = os.getloadavg()
    results = {
        "Fashion-MNIST test, cnn": bench_folder("fashion", args.fashion_run, args.fashion / "test",
                                                batch_size=args.batch_size, repeats=args.repeats),
        "camera JPEGs, small_cnn 160 px": bench_folder("camera", args.camera_run, args.camera,
                                                       batch_size=args.batch_size, repeats=args.camera_repeats),
    }
    print(f"\n{'folder':<32} {'images':>7} {'(a) keras':>10} {'(b) imgclf':>11} {'(c) memory':>11} "
          f"{'(d) decode':>11} {'a/b':>6} {'b/c':>6} {'d/c':>6}")
    for name, row in results.items():
        s = row["median_seconds"]
        print(f"{name:<32} {row['images']:>7,} {s['keras']:>9.3f}s {s['imgclf']:>10.3f}s {s['in_memory']:>10.3f}s "
              f"{s['decode_only']:>10.3f}s {row['keras_over_imgclf']:>6.2f} {row['imgclf_over_in_memory']:>6.2f} "
              f"{row['decode_only_over_in_memory']:>6.2f}")
    print(f"targets: a/b >= {SPEEDUP_TARGET}, b/c <= {LIMIT_TARGET}; medians of {args.repeats} "
          f"({args.camera_repeats} for the camera JPEGs), "
          f"batch size {args.batch_size}; load average at start {load[0]:.1f}")

    memory = {}
    if not args.skip_rss:
        for label, folder in (("10k", args.fashion / "test"), ("60k", args.fashion / "train")):
            memory[label] = peak_rss(args.fashion_run, folder)
            m = memory[label]
            print(f"imgclf predict, {m['files']:>6,} files: {m['seconds']:6.2f}s, peak RSS main {m['rss_mib']:.0f} MiB, "
                  f"largest worker {m['workers_rss_mib']:.0f} MiB")

    import PIL
    import tensorflow as tf

    record = {
        "machine": {"cores": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "tensorflow": tf.__version__, "pillow": PIL.__version__,
                    "load_average_at_start": [round(v, 2) for v in load]},
        "targets": {"keras_over_imgclf_at_least": SPEEDUP_TARGET, "imgclf_over_in_memory_at_most": LIMIT_TARGET},
        "results": results,
        "peak_rss": memory,
    }
    write_results(args.json, record)


if __name__ == "__main__":
    main()

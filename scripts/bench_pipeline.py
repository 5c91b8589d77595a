"""Benchmark: imgclf's input stage against the Keras pipeline, each feeding `model.fit`, cold and steady.

Both sides feed the same trivial model (rescaling, global average pooling and a
dense softmax layer, batch 128), so the images per second are those of the
input stage, not of a network:

- Keras: `keras.utils.image_dataset_from_directory` (TensorFlow decodes and
  resizes every file, every epoch), augmentation layers mapped over the
  batches with `num_parallel_calls=AUTOTUNE`, then `prefetch(AUTOTUNE)`.
  `standard` is matched by `RandomFlip("horizontal")`, `RandomRotation(15°)`,
  `RandomZoom(0.15)`, `RandomContrast(0.2)`; `light` (no flip, no colour) by
  `RandomRotation(10°)` and `RandomZoom(0.08)`.
- imgclf: `imgclf.scan` (every file hashed; with `cache_spec`, also decoded
  into the cache as it is read), `pipeline.load_split` (the decoded-image
  cache) and `pipeline.ImageBatches` with the preset (threads: one per CPU).

Cold is the time from nothing to the end of the first epoch: for imgclf the scan,
the decode into a fresh cache (a new `XDG_CACHE_HOME`) and the first epoch; for
Keras listing the folder and the first epoch; both include tracing the train step.
Steady is the median of the later epochs. The files are read once before (warm
page cache), and every measurement runs in a fresh process.

Three folders, as in issue #11: the 60,000 Fashion-MNIST training PNGs (28x28x1,
`light`), 4,000 camera-size JPEGs (160x160x3, `standard`) and 300 phone-size
JPEGs (4032x3024, about 3 MB; 224x224x3, `standard`). The JPEGs are generated
when missing (`bench_workers.camera_photo`: colour fields, shapes, texture and
sensor noise), into `data/camera-jpegs-1024` and `data/phone-jpegs`.

Also measured: imgclf's levers side by side (the cold path reading each file
twice, as before, and in threads; the augmentation run by albumentations image
by image instead of per batch); the steady images per second with 1 to CPU-count
threads preparing batches, with the model and without it (the input stage
alone); and the peak anonymous memory (`RssAnon`, sampled from
`/proc/self/status`; the page cache of the memory-mapped cache file is not
counted) while scanning, caching and training one epoch on 10,000 and on 60,000
Fashion-MNIST images at 96x96x3 with `standard`.

Usage:

```
.venv/bin/python scripts/bench_pipeline.py [--repeat 2] [--epochs 4] [--json scripts/results/bench_pipeline.json]
.venv/bin/python scripts/bench_pipeline.py --only camera --camera data/camera-jpegs-640 --camera-size 640x480
```

`--only` picks parts among `fashion camera phone workers memory`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from _bench import (check_at_least, check_json_target,  # scripts/, first on sys.path
                    machine as machine_record, run_json, write_results)

ROOT = Path(__file__).resolve().parent.parent
BATCH = 128
TARGETS = {  # issue #11: imgclf over Keras, cold and steady
    "fashion": {"cold": 1.0, "steady": 1.5},
    "camera": {"cold": 1.5, "steady": 3.0},
    "phone": {"cold": 2.0},
}
CAMERA_SIZE = (1024, 768)
PHONE_SIZE = (4032, 3024)
PHOTO_CLASSES = ("beach", "city", "forest", "snow")
PARTS = ("fashion", "camera", "phone", "workers", "memory")


# Data ---------------------------------------------------------------------------


def _write_photo(job: tuple[int, str, int, int, int]) -> None:
    from bench_workers import camera_photo

    seed, path, width, height, quality = job
    tmp = f"{path}.tmp"
    camera_photo(seed, width, height).save(tmp, "JPEG", quality=quality)
    os.replace(tmp, path)


def ensure_photos(folder: Path, count: int, size: tuple[int, int], quality: int) -> None:
    """Generates `count` photo-like JPEGs of `size` in four class folders, once; existing files are kept."""
    jobs = []
    for index in range(count):
        path = folder / PHOTO_CLASSES[index % len(PHOTO_CLASSES)] / f"IMG_{index:04d}.jpg"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            jobs.append((1000 + index, str(path), *size, quality))
    if jobs:
        print(f"generating {len(jobs)} JPEGs of {size[0]}x{size[1]} in {folder} ...", flush=True)
        with ProcessPoolExecutor() as executor:
            list(executor.map(_write_photo, jobs, chunksize=8))


def folder_stats(folder: Path) -> dict:
    files = [p for p in folder.rglob("*") if p.is_file()]
    total = sum(p.stat().st_size for p in files)
    for path in files:  # warm page cache: both sides read the files from memory
        path.read_bytes()
    return {"files": len(files), "mb_per_file": round(total / len(files) / 1e6, 3)}


# Child processes ------------------------------------------------------------------


def _model(shape, classes: int):
    import keras

    inputs = keras.Input(shape)
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(x))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", jit_compile=False)
    return model


def _epoch_timer():
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.ends = []

        def on_epoch_end(self, epoch, logs=None):
            self.ends.append(time.perf_counter())

    return EpochTimer()


def _epochs(start: float, fit_start: float, ends: list[float], images: int) -> dict:
    """Cold seconds (start to the end of epoch 1) and the steady images/s of the later epochs."""
    times = [b - a for a, b in zip(ends, ends[1:])]
    return {"cold_s": ends[0] - start, "first_epoch_s": ends[0] - fit_start, "epoch_s": times,
            "images": images, "steady_ips": images / statistics.median(times) if times else None}


def child_keras(folder: str, shape: tuple[int, int, int], preset: str, epochs: int) -> dict:
    import keras
    import tensorflow as tf

    classes = sorted(p.name for p in Path(folder).iterdir() if p.is_dir())
    model = _model(shape, len(classes))
    if preset == "light":
        layers = [keras.layers.RandomRotation(10 / 360), keras.layers.RandomZoom(0.08)]
    else:
        layers = [keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(15 / 360),
                  keras.layers.RandomZoom(0.15), keras.layers.RandomContrast(0.2)]
    augment = keras.Sequential(layers)
    timer = _epoch_timer()
    start = time.perf_counter()
    dataset = keras.utils.image_dataset_from_directory(
        folder, image_size=shape[:2], color_mode="grayscale" if shape[2] == 1 else "rgb", batch_size=BATCH,
        shuffle=True, seed=0, verbose=False)
    dataset = dataset.map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    images = sum(1 for p in Path(folder).rglob("*") if p.is_file())
    fit_start = time.perf_counter()
    model.fit(dataset, epochs=epochs, verbose=0, callbacks=[timer])
    return _epochs(start, fit_start, timer.ends, images)


def child_imgclf(folder: str, shape: tuple[int, int, int], preset: str, epochs: int, *, one_pass: bool = True,
                 batch_augment: bool = True, threads: int = 0, per_image_epochs: int = 0) -> dict:
    import imgclf
    import imgclf.manifest  # noqa: F401 (imported before the clock starts, as TensorFlow is for Keras)
    from imgclf.augment import build_augment
    from imgclf.config import ImageSpec
    from imgclf.parallel import default_workers
    from imgclf.pipeline import ImageBatches, load_split

    threads = threads or default_workers()
    spec = ImageSpec(*shape, "stretch")
    classes = sorted(p.name for p in Path(folder).iterdir() if p.is_dir())
    model = _model(shape, len(classes))
    augment = build_augment(preset, channels=shape[2], seed=0)
    timer = _epoch_timer()
    start = time.perf_counter()
    manifest = imgclf.scan(folder, val=0.0, test=0.0, progress=False, cache_spec=spec if one_pass else None)
    scanned = time.perf_counter()
    data = load_split(manifest, "train", manifest.classes, spec, progress=False)
    cached = time.perf_counter()
    batches = ImageBatches(data, batch_size=BATCH, shuffle=True, augment=augment, seed=0, workers=threads,
                           batch_augment=batch_augment)
    model.fit(batches, epochs=epochs, verbose=0, callbacks=[timer])
    result = _epochs(start, cached, timer.ends, len(data))
    result.update(scan_s=scanned - start, cache_s=cached - scanned, threads=threads)
    if per_image_epochs:
        # The same training with albumentations run image by image: the lever of batch-level augmentation.
        timer = _epoch_timer()
        batches = ImageBatches(data, batch_size=BATCH, shuffle=True, augment=augment, seed=0, workers=threads,
                               batch_augment=False)
        model.fit(batches, epochs=per_image_epochs + 1, verbose=0, callbacks=[timer])
        result["per_image_steady_ips"] = _epochs(start, start, timer.ends, len(data))["steady_ips"]
    return result


def child_workers(folder: str, shape: tuple[int, int, int], preset: str, epochs: int) -> dict:
    """Steady img/s with 1..CPU-count threads: into model.fit, and the input stage alone."""
    from concurrent.futures import ThreadPoolExecutor

    import imgclf
    from imgclf.augment import build_augment
    from imgclf.config import ImageSpec
    from imgclf.parallel import default_workers
    from imgclf.pipeline import ImageBatches, load_split

    spec = ImageSpec(*shape, "stretch")
    manifest = imgclf.scan(folder, val=0.0, test=0.0, progress=False, cache_spec=spec)
    data = load_split(manifest, "train", manifest.classes, spec, progress=False)
    count = len(data)
    model = _model(shape, len(manifest.classes))
    augment = build_augment(preset, channels=shape[2], seed=0)
    rows = {}
    for threads in range(1, default_workers() + 1):
        batches = ImageBatches(data, batch_size=BATCH, shuffle=True, augment=augment, seed=0, workers=threads)
        timer = _epoch_timer()
        model.fit(batches, epochs=epochs, verbose=0, callbacks=[timer])
        fit_ips = _epochs(0.0, 0.0, timer.ends, count)["steady_ips"]
        alone = []
        for _ in range(2):
            begin = time.perf_counter()
            with ThreadPoolExecutor(threads) as pool:  # as Keras' enqueuer reads a PyDataset with `workers` threads
                for _ in pool.map(batches.__getitem__, range(len(batches))):
                    pass
            alone.append(count / (time.perf_counter() - begin))
            batches.on_epoch_end()
        rows[threads] = {"fit_ips": fit_ips, "input_only_ips": max(alone)}
    return rows


def _rss_anon_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("RssAnon"))


def child_memory(source: str, shape: tuple[int, int, int], preset: str) -> dict:
    """Peak RssAnon while scanning, caching and training one epoch on `source` (a folder or a CSV)."""
    peak = {"value": _rss_anon_kib()}
    stop = threading.Event()

    def sample():
        while not stop.wait(0.005):
            peak["value"] = max(peak["value"], _rss_anon_kib())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    import imgclf
    from imgclf.augment import build_augment
    from imgclf.config import ImageSpec
    from imgclf.pipeline import ImageBatches, load_split

    spec = ImageSpec(*shape, "stretch")
    manifest = imgclf.scan(source, val=0.0, test=0.0, progress=False, cache_spec=spec)
    model = _model(shape, len(manifest.classes))
    after_scan = peak["value"]
    data = load_split(manifest, "train", manifest.classes, spec, progress=False)
    batches = ImageBatches(data, batch_size=BATCH, shuffle=True, augment=build_augment(preset, channels=3, seed=0),
                           seed=0, workers=os.cpu_count() or 1)
    model.fit(batches, epochs=1, verbose=0)
    stop.set()
    sampler.join()
    return {"images": len(data), "peak_rss_anon_mib": max(peak["value"], _rss_anon_kib()) / 1024,
            "rss_anon_after_scan_and_model_mib": after_scan / 1024}


CHILDREN = {"keras": child_keras, "imgclf": child_imgclf, "workers": child_workers, "memory": child_memory}


def run_child(kind: str, *args, env: dict | None = None, **kwargs) -> dict:
    """Runs one measurement in a fresh process with a fresh decoded-image cache; returns its JSON."""
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as cache:
        environment = {**os.environ, "XDG_CACHE_HOME": cache, "NO_ALBUMENTATIONS_UPDATE": "1",
                       "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
        return run_json([sys.executable, __file__, "--child", json.dumps([kind, args, kwargs])],
                        f"{kind} {args} {kwargs}", env=environment)


# Main ----------------------------------------------------------------------------------


def machine() -> dict:
    import albumentations
    import keras
    import PIL
    import tensorflow as tf

    return machine_record(tensorflow=tf.__version__, keras=keras.__version__, pillow=PIL.__version__,
                          albumentations=albumentations.__version__)


def subset_csv(folder: Path, per_class: int, out: Path) -> Path:
    """A `path,label` CSV of the first `per_class` files of each class folder."""
    folder = folder.resolve()  # the CSV lies elsewhere; imgclf reads relative paths relative to it
    with open(out, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["path", "label"])
        for label in sorted(p.name for p in folder.iterdir() if p.is_dir()):
            writer.writerows([path, label] for path in sorted((folder / label).iterdir())[:per_class])
    return out


def best(runs: list[dict], key: str, *, high: bool = True):
    values = [run[key] for run in runs if run.get(key) is not None]
    return (max(values) if high else min(values)) if values else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--fashion-mnist", type=Path, default=ROOT / "data" / "fashion-mnist" / "train")
    parser.add_argument("--camera", type=Path, default=ROOT / "data" / "camera-jpegs-1024",
                        help="camera-size JPEGs (generated when missing)")
    parser.add_argument("--camera-count", type=int, default=4000)
    parser.add_argument("--camera-size", default="x".join(map(str, CAMERA_SIZE)), metavar="WxH",
                        help="size of the generated camera-size JPEGs (default: %(default)s)")
    parser.add_argument("--phone", type=Path, default=ROOT / "data" / "phone-jpegs",
                        help="phone-size JPEGs (generated when missing)")
    parser.add_argument("--phone-count", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run: the first is cold, the rest steady")
    parser.add_argument("--repeat", type=int, default=2, help="runs per measurement; the best is kept")
    parser.add_argument("--only", nargs="*", default=None, choices=PARTS, metavar="PART",
                        help=f"parts to run among: {' '.join(PARTS)} (default: all)")
    parser.add_argument("--json", type=Path, default=ROOT / "scripts" / "results" / "bench_pipeline.json")
    args = parser.parse_args(argv)

    if args.child:
        kind, child_args, kwargs = json.loads(args.child)
        print(json.dumps(CHILDREN[kind](*child_args, **kwargs)))
        return 0

    check_at_least(parser, args, 1, "camera_count", "phone_count", "repeat")
    check_at_least(parser, args, 2, "epochs")  # the first is cold; the steady speed needs a second
    check_json_target(parser, args.json)
    settings = {
        "fashion": (args.fashion_mnist, (28, 28, 1), "light"),
        "camera": (args.camera, (160, 160, 3), "standard"),
        "phone": (args.phone, (224, 224, 3), "standard"),
    }
    parts = args.only or list(PARTS)
    fashion = args.fashion_mnist
    if {"fashion", "workers", "memory"} & set(parts) and not any(p.is_file() for p in fashion.rglob("*")):
        problem = "holds no files" if fashion.is_dir() else "is not a folder" if fashion.exists() else "does not exist"
        parser.error(f"--fashion-mnist {fashion} {problem}: pass the train/ folder of a built Fashion-MNIST "
                     "(`datasets/fashion_mnist.py DIR` writes DIR/train/)")
    if "camera" in parts or "workers" in parts:
        ensure_photos(args.camera, args.camera_count, tuple(int(v) for v in args.camera_size.split("x")), quality=90)
    if "phone" in parts or "workers" in parts:
        ensure_photos(args.phone, args.phone_count, PHONE_SIZE, quality=82)
    record = {"machine": machine(), "batch_size": BATCH, "epochs": args.epochs, "repeat": args.repeat,
              "load_before": os.getloadavg()[0], "settings": {}, "workers": {}, "memory": {}}
    print(f"load average at the start: {record['load_before']:.1f} on {os.cpu_count()} cores", flush=True)

    for name in [p for p in parts if p in settings]:
        folder, shape, preset = settings[name]
        stats = folder_stats(folder)
        runs = {"keras": [], "imgclf": [], "imgclf two passes": [], "imgclf threads": []}
        for repeat in range(args.repeat):
            common = (str(folder), shape, preset, args.epochs)
            runs["keras"].append(run_child("keras", *common))
            runs["imgclf"].append(run_child("imgclf", *common, per_image_epochs=2 if repeat == 0 else 0))
            runs["imgclf two passes"].append(run_child("imgclf", *common, one_pass=False))
            runs["imgclf threads"].append(run_child("imgclf", *common, env={"IMGCLF_PARALLEL_BACKEND": "thread"}))
            for variant, variant_runs in runs.items():
                run = variant_runs[-1]
                print(f"  {name} run {repeat + 1}: {variant:<18} cold {run['cold_s']:6.2f} s "
                      f"({run['images'] / run['cold_s']:7.0f} img/s), steady {run['steady_ips'] or 0:7.0f} img/s",
                      flush=True)
        keras_cold = best(runs["keras"], "cold_s", high=False)
        keras_steady = best(runs["keras"], "steady_ips")
        summary = {"folder": str(folder), **stats, "shape": shape, "preset": preset, "runs": runs}
        for variant, variant_runs in runs.items():
            cold = best(variant_runs, "cold_s", high=False)
            steady = best(variant_runs, "steady_ips")
            summary[variant] = {"cold_s": cold, "cold_ips": stats["files"] / cold, "steady_ips": steady}
            if variant != "keras":
                summary[variant]["cold_ratio"] = keras_cold / cold
                summary[variant]["steady_ratio"] = steady / keras_steady
        summary["imgclf"]["per_image_steady_ips"] = best(runs["imgclf"], "per_image_steady_ips")
        summary["targets"] = TARGETS[name]
        record["settings"][name] = summary

    for name in [p for p in ("workers",) if p in parts]:
        for setting, (folder, shape, preset) in settings.items():
            rows = run_child("workers", str(folder), shape, preset, 3)
            record["workers"][setting] = rows
            for threads, row in rows.items():
                print(f"  workers {setting} {threads}: fit {row['fit_ips']:7.0f} img/s, "
                      f"input stage alone {row['input_only_ips']:7.0f} img/s", flush=True)

    if "memory" in parts:
        with tempfile.TemporaryDirectory() as tmp:
            small = subset_csv(args.fashion_mnist, 1000, Path(tmp) / "fashion-10k.csv")
            for label, source in (("10k", small), ("60k", args.fashion_mnist)):
                record["memory"][label] = run_child("memory", str(source), (96, 96, 3), "standard")
                print(f"  memory {label}: {record['memory'][label]}", flush=True)
        small, large = record["memory"]["10k"]["peak_rss_anon_mib"], record["memory"]["60k"]["peak_rss_anon_mib"]
        record["memory"]["growth"] = large / small - 1

    print(f"\n{'folder':<9} {'variant':<18} {'cold s':>7} {'cold img/s':>10} {'steady img/s':>12} "
          f"{'cold x Keras':>12} {'steady x Keras':>14}")
    for name, summary in record["settings"].items():
        for variant in ("keras", "imgclf", "imgclf two passes", "imgclf threads"):
            row = summary[variant]
            ratios = ("", "") if variant == "keras" else (f"{row['cold_ratio']:.2f}x", f"{row['steady_ratio']:.2f}x")
            print(f"{name:<9} {variant:<18} {row['cold_s']:7.2f} {row['cold_ips']:10.0f} {row['steady_ips']:12.0f} "
                  f"{ratios[0]:>12} {ratios[1]:>14}")
        per_image = summary["imgclf"]["per_image_steady_ips"]
        if per_image:
            print(f"{'':<9} albumentations per image, steady {per_image:.0f} img/s "
                  f"(batch-level {summary['imgclf']['steady_ips'] / per_image:.2f}x)")
        print(f"{'':<9} targets: {summary['targets']}")
    if record["memory"]:
        print(f"memory (RssAnon peak, 96x96x3 standard): 10k {record['memory']['10k']['peak_rss_anon_mib']:.0f} MiB, "
              f"60k {record['memory']['60k']['peak_rss_anon_mib']:.0f} MiB, growth {record['memory']['growth']:+.1%}")
    record["load_after"] = os.getloadavg()[0]
    write_results(args.json, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())

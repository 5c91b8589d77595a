"""Benchmark: CPU speed of training and inference for every backbone, against `small_cnn`.

For each `keras.applications` backbone imgclf offers (`imgclf.models.backbones.BACKBONES`)
at the smallest input size its ImageNet weights exist for (96 px for mobilenet_v2, 224 px
for the others) and, for comparison, every backbone at 96 px, measures images per second of:

1. training with the backbone frozen (phase 1 of fine-tuning: only the head learns),
2. training with the whole backbone unfrozen (phase 2, `unfreeze="all"`),
3. inference (`model.predict`).

The reference is `small_cnn`, the network imgclf trains from scratch, at the same sizes
(it has no backbone, so it trains in one phase).

Each model is built by `imgclf.models.build_model` with `weights="none"` (random weights cost
the same time as ImageNet ones) for 10 classes and RGB input, made trainable with
`imgclf.models.backbones.set_trainable` and compiled as imgclf does (Adam,
sparse_categorical_crossentropy). Every measurement fits (or predicts) random uint8 batches
of 32 once to warm up (tracing), then times calls of enough batches to last about `--seconds`
(1 to 30 batches); the best of `--repeat` calls is kept, which damps noise from other processes.

Usage:

```
.venv/bin/python scripts/bench_backbones.py [--seconds 2] [--repeat 2] [--json scripts/results/bench_backbones.json]
```
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

from _bench import (check_at_least, check_json_target,  # scripts/, first on sys.path
                    machine as machine_record, write_results)

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Keras and imgclf.models (TensorFlow) are imported in the functions that use them, so that --help answers at once.

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = "small_cnn"
COMPARISON_SIZE = 96
NUM_CLASSES = 10


def smallest_weights_size(backbone) -> int:
    return min(backbone.weight_sizes or (backbone.default_size,))


def configurations() -> list[tuple[str, int]]:
    """(model, size) pairs: each backbone at its smallest weights size, then every one at 96 px, then small_cnn."""
    from imgclf.models.backbones import BACKBONES

    pairs = [(b.name, smallest_weights_size(b)) for b in BACKBONES]
    pairs += [(b.name, COMPARISON_SIZE) for b in BACKBONES if (b.name, COMPARISON_SIZE) not in pairs]
    pairs += [(REFERENCE, size) for size in sorted({size for _, size in pairs})]
    return pairs


def images_per_second(run, *, batch: int, seconds: float, repeat: int) -> tuple[float, int]:
    """Images per second of `run(batches)`, and the batches timed per call.

    One batch warms up (tracing); a timed batch then tells how many batches last about `seconds`
    (1 to 30), and `repeat` calls of that many are timed. The fastest call counts; calls stop
    early once one has taken 30 s.
    """
    run(1)
    first = _seconds(run, 1)
    steps = min(30, max(1, math.ceil(seconds / first)))
    timings = [first] if steps == 1 else []
    while len(timings) < repeat and not (timings and min(timings) > 30):
        timings.append(_seconds(run, steps))
    return steps * batch / min(timings), steps


def _seconds(run, batches: int) -> float:
    start = time.perf_counter()
    run(batches)
    return time.perf_counter() - start


def measure(name: str, size: int, *, batch: int, seconds: float, repeat: int) -> dict:
    import keras
    import numpy as np

    from imgclf.config import ImageSpec, ModelConfig
    from imgclf.models import build_model
    from imgclf.models.backbones import get_backbone, set_trainable

    keras.backend.clear_session()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(batch * 30, size, size, 3), dtype=np.uint8)
    y = rng.integers(0, NUM_CLASSES, size=(batch * 30,))
    model = build_model(ModelConfig(name=name, weights="none"), ImageSpec(size, size, 3), NUM_CLASSES)
    backbone = get_backbone(name)
    result = {"model": name, "size": size, "parameters": model.count_params()}

    def fit(batches):
        model.fit(x[: batch * batches], y[: batch * batches], batch_size=batch, epochs=1, verbose=0, shuffle=False)

    def predict(batches):
        model.predict(x[: batch * batches], batch_size=batch, verbose=0)

    phases = {"train_frozen": "none", "train_all": "all"} if backbone else {"train_all": None}
    for key, unfreeze in phases.items():
        if unfreeze is not None:
            set_trainable(model, backbone, unfreeze)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
        result[key], result[f"{key}_batches"] = images_per_second(fit, batch=batch, seconds=seconds, repeat=repeat)
    result["predict"], result["predict_batches"] = images_per_second(predict, batch=batch, seconds=seconds,
                                                                     repeat=repeat)
    return result


def machine() -> dict:
    import keras
    import tensorflow as tf

    return {**machine_record(tensorflow=tf.__version__, keras=keras.__version__),
            "load_average_at_start": os.getloadavg()[0]}


def _cell(value) -> str:
    return "—" if value is None else f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def table(results: list[dict]) -> str:
    reference = {r["size"]: r["train_all"] for r in results if r["model"] == REFERENCE}
    lines = ["| model | input px | parameters | train img/s, backbone frozen | train img/s, all unfrozen | "
             "predict img/s | frozen / small_cnn | unfrozen / small_cnn |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        frozen = r.get("train_frozen")
        ratio = lambda v: "—" if v is None else f"{v / reference[r['size']]:.2f}×"  # noqa: E731
        lines.append(f"| {r['model']} | {r['size']} | {r['parameters'] / 1e6:.2f} M | {_cell(frozen)} | "
                     f"{_cell(r['train_all'])} | {_cell(r['predict'])} | {ratio(frozen)} | {ratio(r['train_all'])} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=2.0, help="about how long each timed call runs")
    parser.add_argument("--repeat", type=int, default=2, help="timed calls per measurement; the fastest is kept")
    parser.add_argument("--json", type=Path, default=ROOT / "scripts" / "results" / "bench_backbones.json")
    args = parser.parse_args(argv)
    check_at_least(parser, args, 1, "batch_size", "repeat")
    check_json_target(parser, args.json)

    info = machine()
    start = time.perf_counter()
    results = []
    for name, size in configurations():
        began = time.perf_counter()
        results.append(measure(name, size, batch=args.batch_size, seconds=args.seconds, repeat=args.repeat))
        print(f"{name} at {size} px: {time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True)
    info["load_average_at_end"] = os.getloadavg()[0]
    print(table(results))
    seconds = time.perf_counter() - start
    print(f"\nreference: {REFERENCE} trained from scratch at the same size (ratios are speeds, higher is faster); "
          f"{seconds:.0f} s in all; load average {info['load_average_at_start']:.1f} at start, "
          f"{info['load_average_at_end']:.1f} at end on {info['cores']} cores")

    summary = {"machine": info, "batch_size": args.batch_size, "seconds_per_call": args.seconds, "repeat": args.repeat,
               "reference": REFERENCE, "seconds": seconds, "results": results}
    write_results(args.json, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())

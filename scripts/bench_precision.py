"""Mixed precision on a CPU: `imgclf train --mixed-precision` against float32, end to end.

On a folder with `train/` and `test/` subfolders (Fashion-MNIST as
`datasets/fashion_mnist.py` writes it), trains imgclf's default recipe for
`--epochs` epochs in float32 and with `--mixed-precision` (`mixed_bfloat16` on
a CPU with AVX512_BF16 or AMX, float32 with a note elsewhere), in turns, each
as a user types it with an empty image cache, then evaluates it on the test
split (`bench_train.run_imgclf`). Prints the training seconds, images per
second of the last epoch, the test error and the precision policy (from the
run's `environment.json`) of every run, and the ratio of the median training
times, or "not measured" where mixed precision fell back to float32; writes JSON.

Usage:

```
.venv/bin/python scripts/bench_precision.py data/fashion-mnist --epochs 2 --repeats 2 --json scripts/results/bench_precision.json
```
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import check_at_least, check_json_target, machine, write_results  # noqa: E402
from bench_train import run_imgclf  # noqa: E402

VARIANTS = {"float32": [], "mixed precision": ["--mixed-precision"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="folder with train/ and test/ class folders")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-precision"), help="run directory (replaced)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of each run (default 2)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each variant, in turns (default 2)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    check_at_least(parser, args, 1, "epochs", "repeats")
    check_json_target(parser, args.json)

    results = {name: [] for name in VARIANTS}
    for _ in range(args.repeats):
        for name, options in VARIANTS.items():
            result = run_imgclf(args.data, args.out, ["--epochs", str(args.epochs), *options])
            rate = re.search(r"([\d.]+) images/s", result["last_epoch_line"] or "")
            result["last_epoch_images_per_second"] = float(rate[1]) if rate else None
            # The policy imgclf used: mixed precision falls back to float32 where the machine lacks it.
            precision = json.loads((args.out / "environment.json").read_text())["precision"]
            result["precision_policy"], result["precision_note"] = precision["policy"], precision["note"]
            results[name].append(result)

    print()
    print("| variant | policy | training seconds (each run) | images/s, last epoch | test error |")
    print("|---|---|---|---|---|")
    for name, runs in results.items():
        policies = ", ".join(sorted({run["precision_policy"] for run in runs}))
        seconds = ", ".join(str(run["train_seconds"]) for run in runs)
        rates = ", ".join(str(run["last_epoch_images_per_second"]) for run in runs)
        errors = ", ".join(f"{run['test_error']:.2f}%" for run in runs)
        print(f"| {name} | {policies} | {seconds} | {rates} | {errors} |")
    medians = {name: statistics.median(r["train_seconds"] for r in runs) for name, runs in results.items()}
    if any(run["precision_policy"] == "float32" for run in results["mixed precision"]):
        speedup = "not measured: mixed precision falls back to float32 on this machine"
        note = next(run["precision_note"] for run in results["mixed precision"] if run["precision_policy"] == "float32")
        print(f"float32 / mixed precision, median training time: {speedup}" + (f" ({note})" if note else ""))
    else:
        speedup = round(medians["float32"] / medians["mixed precision"], 3)
        print(f"float32 / mixed precision, median training time: {speedup:.2f}x")
    if args.json:
        import tensorflow as tf

        write_results(args.json, {"machine": machine(tensorflow=tf.__version__), "epochs": args.epochs,
                                  "runs": results, "median_train_seconds": medians, "speedup": speedup})
    return 0


if __name__ == "__main__":
    sys.exit(main())

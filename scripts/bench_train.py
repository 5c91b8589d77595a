"""Accuracy within a time budget: imgclf's default recipe against the plain-Keras course ConvNet.

On a folder with `train/` and `test/` subfolders (Fashion-MNIST as
`datasets/fashion_mnist.py` writes it), in one run:

- imgclf: `imgclf train DATA --out RUN` with no other flags (plus `--option`
  flags, to measure a variant), then `imgclf evaluate RUN --split test`, each
  as a user types it. The wall time counts everything from the first command
  to the last: starting Python and TensorFlow, scanning and hashing every
  file, decoding into a fresh (cold) image cache, training, evaluating.
- Keras: the course's ConvNet (Conv2D(32, 5) → MaxPool → Dropout(0.2) →
  Dense(128) → softmax, Adam, batch 32) read with
  `keras.utils.image_dataset_from_directory` from `DATA/train` and trained for
  `--keras-epochs` epochs, then evaluated on `DATA/test`; the wall time counts
  the same steps inside this process.

It prints both test errors and wall times and the budget verdict, and writes
JSON.

Usage:

```
.venv/bin/python datasets/fashion_mnist.py data/fashion-mnist
.venv/bin/python scripts/bench_train.py data/fashion-mnist --json scripts/results/bench_train.json
.venv/bin/python scripts/bench_train.py data/fashion-mnist --option=--epochs=10 --skip-keras   # a variant
```
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import check_json_target, check_train_test, machine, write_results  # noqa: E402

BUDGET_MINUTES = 20.0
TARGET_ERROR = 5.5


def run_imgclf(data: Path, out: Path, options: list[str]) -> dict:
    """`imgclf train` then `imgclf evaluate --split test` in fresh processes with an empty image cache."""
    imgclf = shutil.which("imgclf", path=str(Path(sys.executable).parent)) or "imgclf"
    with tempfile.TemporaryDirectory(prefix="bench-train-cache-") as cache:
        env = {**os.environ, "XDG_CACHE_HOME": cache}
        train = [imgclf, "train", str(data), "--out", str(out), "--overwrite", *options]
        evaluate = [imgclf, "evaluate", str(out), "--split", "test"]
        started = time.perf_counter()
        log = _run(train, env)
        trained = time.perf_counter()
        _run(evaluate, env)
        seconds = time.perf_counter() - started
    metrics = json.loads((out / "eval" / "test" / "metrics.json").read_text())
    config = (out / "config.yaml").read_text()
    epoch_lines = [line for line in log.splitlines() if line.startswith("epoch ")]
    return {"command": " ".join(["imgclf", "train", str(data), "--out", str(out), *options]),
            "test_error": round(100 * metrics["error_rate"], 2), "test_images": metrics.get("images"),
            "seconds": round(seconds, 1), "train_seconds": round(trained - started, 1),
            "epochs": len(epoch_lines), "last_epoch_line": epoch_lines[-1] if epoch_lines else None,
            "config": config}


def _run(command: list[str], env: dict) -> str:
    """Runs `command`, echoing its standard output line by line; returns that output."""
    lines = []
    with tempfile.TemporaryFile("w+") as errors:  # a file, not a pipe: a full pipe would block the child
        with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=errors, text=True) as process:
            for line in process.stdout:
                print(line, end="", flush=True)
                lines.append(line)
        if process.returncode != 0:
            errors.seek(0)
            raise SystemExit(f"{' '.join(command)} failed:\n{errors.read()[-3000:]}")
    return "".join(lines)


def run_keras(data: Path, epochs: int, seed: int) -> dict:
    """The course ConvNet in plain Keras over `image_dataset_from_directory`."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    started = time.perf_counter()
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    options = dict(color_mode="grayscale", image_size=(28, 28), batch_size=32, seed=seed)
    train = keras.utils.image_dataset_from_directory(data / "train", shuffle=True, **options)
    test = keras.utils.image_dataset_from_directory(data / "test", shuffle=False, **options)
    classes = len(train.class_names)
    model = keras.Sequential([
        keras.Input((28, 28, 1)), layers.Rescaling(1 / 255), layers.Conv2D(32, 5, activation="relu"),
        layers.MaxPooling2D(2), layers.Dropout(0.2), layers.Flatten(), layers.Dense(128, activation="relu"),
        layers.Dense(classes, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(train.prefetch(2), epochs=epochs, verbose=2)
    _, accuracy = model.evaluate(test, verbose=0)
    return {"test_error": round(100 * (1 - accuracy), 2), "seconds": round(time.perf_counter() - started, 1),
            "epochs": epochs}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="folder with train/ and test/ class folders")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-train"), help="imgclf's run directory")
    parser.add_argument("--option", action="append", default=[],
                        help="an extra `imgclf train` flag, e.g. --option=--epochs=12 (repeatable)")
    parser.add_argument("--keras-epochs", type=int, default=5, help="epochs of the Keras course ConvNet (default 5)")
    parser.add_argument("--skip-keras", action="store_true", help="time imgclf only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    check_train_test(parser, args.data)
    check_json_target(parser, args.json)

    imgclf = run_imgclf(args.data, args.out, args.option)
    keras_result = None if args.skip_keras else run_keras(args.data, args.keras_epochs, args.seed)

    minutes = imgclf["seconds"] / 60
    met = imgclf["test_error"] <= TARGET_ERROR and minutes <= BUDGET_MINUTES
    print()
    print("| pipeline | test error | wall time |")
    print("|---|---:|---:|")
    print(f"| imgclf default recipe ({imgclf['epochs']} epochs) | {imgclf['test_error']:.2f}% | {minutes:.1f} min |")
    if keras_result:
        print(f"| Keras course ConvNet ({keras_result['epochs']} epochs) | {keras_result['test_error']:.2f}% | "
              f"{keras_result['seconds'] / 60:.1f} min |")
    print(f"target: at most {TARGET_ERROR}% within {BUDGET_MINUTES:g} minutes: {'met' if met else 'not met'}")
    if args.json:
        import keras
        import tensorflow as tf

        write_results(args.json, {"machine": machine(tensorflow=tf.__version__, keras=keras.__version__),
                                  "data": str(args.data), "imgclf": imgclf, "keras": keras_result,
                                  "target": {"test_error": TARGET_ERROR, "minutes": BUDGET_MINUTES, "met": met}})
    return 0


if __name__ == "__main__":
    sys.exit(main())

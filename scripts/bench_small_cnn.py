"""`small_cnn`'s training speed against the same network pooling at the end of each block, as it did before.

Both networks have the same convolutions (two 3x3 convolutions of 32, 64 and
128 filters, batch normalisation, global average pooling, dropout, softmax);
imgclf's `small_cnn` pools right after the first convolution of each block,
the reference after the second. Each is trained with `model.fit` on random
uint8 images held in memory (Adam, label smoothing 0.1, as imgclf's default
recipe), in turns, and the best pass of each gives images per second; prints
both and their ratio; writes JSON. `--variants` adds changed copies of
`small_cnn` (cheaper blocks, other pooling, no batch normalisation) to the
same turns, each with its ratio to `small_cnn`.

Usage:

```
.venv/bin/python scripts/bench_small_cnn.py --size 28 --channels 1 --json scripts/results/bench_small_cnn.json
```
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import check_at_least, check_json_target, machine, write_results  # noqa: E402


def small_cnn_variant(change: str, shape, num_classes: int):
    """`small_cnn` with one change.

    Args:
        change: `"pool_last"` (the reference: `small_cnn` as it was, each
            block pooling after its second convolution), `"pool_first"`
            (blocks 2 and 3 pool before their first
            convolution), `"stride_2"` (blocks 2 and 3 start with a stride-2
            convolution instead of a convolution and a pooling),
            `"average_pooling"` or `"no_batch_norm"`.
        shape: `(height, width, channels)` of the images.
        num_classes: outputs of the softmax.

    Returns:
        An uncompiled `keras.Model`.
    """
    import keras
    from keras import layers

    def normalised_relu(x):
        if change != "no_batch_norm":
            x = layers.BatchNormalization(momentum=0.9)(x)
        return layers.Activation("relu")(x)

    def pooling(x):
        if min(x.shape[1], x.shape[2]) < 2:  # as in small_cnn: nothing left to pool
            return x
        return (layers.AveragePooling2D if change == "average_pooling" else layers.MaxPooling2D)(2)(x)

    inputs = keras.Input(shape=shape)
    x = layers.Rescaling(1.0 / 255)(inputs)
    for block, filters in enumerate((32, 64, 128)):
        if change == "pool_last":
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        elif block and change == "pool_first":
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(pooling(x))
        elif block and change == "stride_2":
            x = layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False)(x)
        else:
            x = pooling(layers.Conv2D(filters, 3, padding="same", use_bias=False)(x))
        x = normalised_relu(x)
        x = normalised_relu(layers.Conv2D(filters, 3, padding="same", use_bias=False)(x))
        if change == "pool_last":
            x = pooling(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.3)(x)
    return keras.Model(inputs, layers.Dense(num_classes, activation="softmax")(x))


VARIANTS = ("pool_first", "stride_2", "average_pooling", "no_batch_norm")


def images_per_second(model, images, labels, batch_size: int) -> float:
    """Images per second of one epoch of `model.fit` over the arrays (tracing done beforehand)."""
    start = time.perf_counter()
    model.fit(images, labels, batch_size=batch_size, epochs=1, verbose=0, shuffle=False)
    return len(images) / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=28, help="image side in pixels (default 28)")
    parser.add_argument("--channels", type=int, choices=[1, 3], default=1, help="1 grey, 3 colour (default 1)")
    parser.add_argument("--images", type=int, default=3200, help="images per timed pass (default 3200)")
    parser.add_argument("--batch-size", type=int, default=32, help="default 32, as imgclf's default")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes of each network (default 3)")
    parser.add_argument("--variants", action="store_true",
                        help=f"also time small_cnn with one change each: {', '.join(VARIANTS)}")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    check_at_least(parser, args, 1, "images", "batch_size", "repeats")
    check_at_least(parser, args, 4, "size")
    check_json_target(parser, args.json)

    import keras
    import numpy as np
    import tensorflow as tf

    from imgclf.config import ImageSpec, ModelConfig
    from imgclf.models import build_model

    keras.utils.set_random_seed(0)
    shape = (args.size, args.size, args.channels)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(args.images, *shape), dtype=np.uint8)
    labels = keras.utils.to_categorical(rng.integers(0, 10, size=args.images), 10)
    models = {"small_cnn (pooling after the first convolution)":
              build_model(ModelConfig(name="small_cnn"), ImageSpec(args.size, args.size, args.channels), 10),
              "reference (pooling at the end of each block)": small_cnn_variant("pool_last", shape, 10)}
    if args.variants:
        models.update({f"small_cnn, {change}": small_cnn_variant(change, shape, 10) for change in VARIANTS})
    for model in models.values():
        model.compile(keras.optimizers.Adam(1e-3), keras.losses.CategoricalCrossentropy(label_smoothing=0.1))
        model.fit(images[:args.batch_size * 2], labels[:args.batch_size * 2], batch_size=args.batch_size, verbose=0)
    best = {name: 0.0 for name in models}
    for _ in range(args.repeats):  # in turns, so that a slower spell of a shared machine hits both
        for name, model in models.items():
            best[name] = max(best[name], images_per_second(model, images, labels, args.batch_size))
    ours, reference = list(best.values())[:2]
    print(f"{'network':<52} {'images/s':>9} {'/ small_cnn':>11}")
    for name, value in best.items():
        print(f"{name:<52} {value:>9.0f} {value / ours:>10.2f}x")
    print(f"ratio (small_cnn / reference): {ours / reference:.2f}x at {args.size}x{args.size}x{args.channels}, "
          f"batch {args.batch_size}")
    if args.json:
        write_results(args.json, {"machine": machine(tensorflow=tf.__version__, keras=keras.__version__),
                                  "shape": list(shape), "batch_size": args.batch_size, "images": args.images,
                                  "repeats": args.repeats, "images_per_second": best,
                                  "ratio": round(ours / reference, 3)})
    return 0


if __name__ == "__main__":
    sys.exit(main())

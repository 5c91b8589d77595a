"""The order in which an epoch visits the training images.

`shuffle` visits every image once; `balanced` draws the same number of
images from every class, with replacement for a class that has fewer than
that, so that small classes are seen as often as large ones.
"""

from __future__ import annotations

import math

import numpy as np


def shuffled_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Every index once, in random order."""
    return rng.permutation(len(labels))


def balanced_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices drawn evenly from every class present, in random order.

    Each of the K classes present gives `ceil(N / K)` indices (N = number of
    images): without replacement where it has that many images, with
    replacement where it has fewer. An epoch therefore has about N images,
    as with shuffling.

    Args:
        labels: class index of each image.
        rng: the epoch's random generator.

    Returns:
        An int64 array of indices into `labels`.
    """
    classes = np.unique(labels)
    if len(classes) == 0:
        return np.zeros(0, dtype=np.int64)
    per_class = math.ceil(len(labels) / len(classes))
    drawn = [rng.choice(np.flatnonzero(labels == c), per_class, replace=np.count_nonzero(labels == c) < per_class)
             for c in classes]
    return rng.permutation(np.concatenate(drawn)).astype(np.int64)


SAMPLERS = {"shuffle": shuffled_order, "balanced": balanced_order}

"""Manifest rows → batches for Keras: decoded-image cache, per-epoch shuffling, augmentation.

The model decides nothing here except, through `resolve_image_spec`, the default
image size of a pretrained backbone.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import hashlib
import threading
from typing import Sequence

import keras
import numpy as np

from .augment import apply_augment
from .batch_transforms import batch_augment as _batch_augment
from .cache import cached_rows, decode_to_cache
from .config import DataConfig, ImageSpec
from .images import ImageProblem
from .manifest import Entry, Manifest
from .sampling import SAMPLERS
from .sizing import MAX_AUTO_SIDE, limits_of, resolve_image_spec  # noqa: F401 (part of this module's API)


@dataclasses.dataclass
class SplitImages:
    """The decoded images of one split and their class indices.

    Attributes:
        images: uint8 array `(N, height, width, channels)` (a memmap).
        labels: int32 class indices, `(N,)`.
        entries: the manifest entries, in the same order.
    """

    images: np.ndarray
    labels: np.ndarray
    entries: list[Entry]

    def __len__(self) -> int:
        return len(self.entries)


def load_split(
    manifest: Manifest,
    split: str,
    classes: Sequence[str],
    spec: ImageSpec,
    *,
    data: DataConfig = DataConfig(),
    progress: bool = True,
) -> SplitImages:
    """Decodes the usable images of `split` through the cache.

    Files that fail to decode are flagged in `manifest` (status `error`) and
    left out, so a file that broke after the scan never reaches an epoch.

    Args:
        manifest: the dataset; failed entries are flagged in place.
        split: `"train"`, `"val"` or `"test"`.
        classes: class names; a label's index in it is its class index.
        spec: what to decode to.
        data: cache folder, workers and limits. Defaults to `DataConfig()`.
        progress: show a progress bar. Defaults to `True`.

    Returns:
        A `SplitImages`.
    """
    entries = manifest.split(split)
    images, failures = decode_to_cache(
        [e.path for e in entries], [e.sha1 for e in entries], spec,
        cache_dir=data.cache_dir, limits=limits_of(data), workers=data.workers, progress=progress,
        staged=manifest.staged,
    )
    failed = {f.path: f for f in failures}
    for entry in entries:
        if entry.path in failed:
            entry.flag(ImageProblem(failed[entry.path].problem), failed[entry.path].detail)
    keep = np.array([i for i, e in enumerate(entries) if e.path not in failed], dtype=np.int64)
    index = {name: i for i, name in enumerate(classes)}
    kept = [entries[i] for i in keep]
    if len(keep) != len(entries):
        # A cache file of the rows kept, not `images[keep]`: that would hold the whole split in memory.
        images = cached_rows(images, keep, [e.sha1 for e in kept], spec, cache_dir=data.cache_dir,
                             limits=limits_of(data))
    return SplitImages(images, np.array([index[e.label] for e in kept], dtype=np.int32), kept)


def pixel_copies_across_splits(splits: Sequence[SplitImages]) -> list[list[Entry]]:
    """Groups of images of more than one split whose pixels, as the model sees them, are the same, in files of
    other bytes.

    The split keeps files with the same bytes together, but the same picture
    in another format, with other metadata, or at another size that resizes
    to the same pixels, may land in another split: the model is then tested
    on what it learned.

    Args:
        splits: decoded splits (`load_split`).

    Returns:
        Each group's entries, in the order of `splits`.
    """
    groups: dict[bytes, list[Entry]] = collections.defaultdict(list)
    for data in splits:
        for image, entry in zip(data.images, data.entries):
            groups[hashlib.sha1(np.ascontiguousarray(image)).digest()].append(entry)
    return [group for group in groups.values() if len({e.split for e in group}) > 1 and len({e.sha1 for e in group}) > 1]


class ImageBatches(keras.utils.PyDataset):
    """Batches of `(uint8 images, int class indices)` for `model.fit`.

    Args:
        data: the decoded split.
        batch_size: images per batch. Defaults to 32.
        shuffle: reshuffle every epoch (seeded by `seed` and the epoch).
            Defaults to `False`.
        augment: an albumentations pipeline applied to each image, or `None`.
            Each batch draws its augmentations from generators seeded by
            `seed`, the epoch and the batch index, so the same seed gives the
            same batches whatever the number of threads and the order in
            which batches are read, and a resumed run repeats them. A
            pipeline made only of the transforms of the presets is applied
            to the whole batch at once (`imgclf.batch_transforms`): the same
            transforms and parameter distributions, several times faster on
            small images. Defaults to `None`.
        seed: seed of the shuffling and the augmentation. Defaults to 0.
        workers: threads that prepare batches. Defaults to 1.
        epoch: the epoch the first pass is, for resuming. Defaults to 0.
        sampler: with `shuffle`, how an epoch draws images: `"shuffle"`
            (each once) or `"balanced"` (evenly from every class; see
            `imgclf.sampling`). Defaults to `"shuffle"`.
        one_hot: give labels as one-hot float rows of this many classes
            (for a loss with label smoothing) instead of class indices.
            Defaults to `None`.
        batch_augment: apply a recognised pipeline to whole batches;
            `False` always runs albumentations image by image (to compare
            the two). Defaults to `True`.
        replicas: the devices of `MirroredStrategy` that share each batch.
            A last batch smaller than this, which would leave a device
            without an image, joins the batch before it, or, when that is
            the first batch (which every device must share evenly), takes
            `replicas` images of it. Defaults to 1.
    """

    def __init__(self, data: SplitImages, *, batch_size: int = 32, shuffle: bool = False,
                 augment=None, seed: int = 0, workers: int = 1, epoch: int = 0, sampler: str = "shuffle",
                 one_hot: int | None = None, batch_augment: bool = True, replicas: int = 1):
        super().__init__(workers=workers, use_multiprocessing=False)
        if sampler not in SAMPLERS:
            raise ValueError(f"Unknown sampler: expected one of {tuple(SAMPLERS)}. Received: sampler={sampler!r}")
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.seed = seed
        self.epoch = epoch
        self.sampler = sampler
        self.one_hot = one_hot
        self.replicas = replicas
        self.order = self._order()
        self.bounds = self._bounds()
        self._batch_augment = _batch_augment(augment) if augment is not None and batch_augment else None
        self._local = threading.local()  # each thread augments with its own copy of the pipeline

    def _order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.data))
        return SAMPLERS[self.sampler](self.data.labels, np.random.default_rng([self.seed, self.epoch]))

    @property
    def images_per_epoch(self) -> int:
        return len(self.order)

    def release(self) -> None:
        """Lets go of the images once `fit` or `predict` is done with them.

        Keras keeps the adapter of every `PyDataset` it was given alive, in
        TensorFlow's registry of Python functions, for the rest of the
        process: without this, each run would hold its splits' cache files
        open (a file descriptor and a mapping each) until the process ends.
        """
        self.data = None

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def _bounds(self) -> list[int]:
        """Where each batch starts in `order`, then its end."""
        total = len(self.order)
        bounds = [*range(0, total, self.batch_size), total]
        rest = total % self.batch_size
        if 0 < rest < self.replicas and len(bounds) > 2:
            if len(bounds) > 3:
                del bounds[-2]  # the last batch joins the one before it
            elif self.batch_size >= 2 * self.replicas:
                bounds[-2] -= self.replicas  # the first batch stays a multiple of the replicas
        return bounds

    def __getitem__(self, index: int):
        # Sorted indices read the memmap front to back; order within a batch does not matter.
        rows = np.sort(self.order[self.bounds[index]:self.bounds[index + 1]])
        images = np.asarray(self.data.images[rows])
        if self._batch_augment is not None:
            rng = np.random.default_rng(batch_seed(self.seed, self.epoch, index))
            images = self._batch_augment(images, rng, inplace=True)  # `images` is this batch's own copy
        elif self.augment is not None:
            pipeline = self._pipeline()
            pipeline.set_random_seed(batch_seed(self.seed, self.epoch, index))
            images = apply_augment(pipeline, images)
        labels = self.data.labels[rows]
        if self.one_hot:
            labels = np.eye(self.one_hot, dtype=np.float32)[labels]
        return images, labels

    def _pipeline(self):
        pipeline = getattr(self._local, "pipeline", None)
        if pipeline is None:
            pipeline = self._local.pipeline = copy.deepcopy(self.augment)
        return pipeline

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = self._order()
        self.bounds = self._bounds()


def batch_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of the augmentation of batch `index` of `epoch`: independent streams from one seed."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])

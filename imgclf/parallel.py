"""Runs a function over many files in worker processes, in order, with a progress bar."""

from __future__ import annotations

import multiprocessing
import os
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
R = TypeVar("R")

# Below this many files, starting worker processes costs more than it saves.
_MIN_FILES_FOR_PROCESSES = 256


def default_workers() -> int:
    """One worker per CPU this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def parallel_map(
    fn: Callable[[T], R],
    items: Sequence[T],
    *,
    workers: int | None = None,
    desc: str | None = None,
    unit: str = "file",
    files_per_item: int = 1,
    progress: bool = True,
) -> Iterator[R]:
    """Yields `fn(item)` for each item, in order.

    Args:
        fn: a picklable module-level function of one argument.
        items: the inputs.
        workers: processes to use; `None` means one per CPU, 1 runs in
            this process. Defaults to `None`.
        desc: label of the tqdm progress bar. Defaults to `None`.
        unit: what one item is, for the progress bar. Defaults to `"file"`.
        files_per_item: files one item stands for (a chunk of files counts
            as many); few files in all are done in this process. Defaults to 1.
        progress: show the progress bar. Defaults to `True`.

    Returns:
        An iterator over the results; nothing is held beyond a few chunks.
    """
    workers = workers or default_workers()
    bar = tqdm(total=len(items), desc=desc, unit=unit, disable=not progress, leave=False)
    with bar:
        if workers == 1 or len(items) * files_per_item < _MIN_FILES_FOR_PROCESSES:
            for item in items:
                yield fn(item)
                bar.update()
            return
        # "spawn", not "fork": the parent may already run TensorFlow threads,
        # which a forked child would inherit in a broken state.
        context = multiprocessing.get_context("spawn")
        chunksize = max(1, min(256, len(items) // (workers * 8)))
        with context.Pool(workers) as pool:
            for result in pool.imap(fn, items, chunksize=chunksize):
                yield result
                bar.update()


def chunked(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    """Splits `items` into consecutive slices of at most `size`."""
    for start in range(0, len(items), size):
        yield items[start:start + size]

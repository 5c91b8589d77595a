"""Runs a function over many files in worker processes, in order, with a progress bar."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
R = TypeVar("R")

# Below this many files, starting worker processes costs more than it saves.
_MIN_FILES_FOR_PROCESSES = 256


class WorkerDiedError(RuntimeError):
    """A worker process ended without finishing its files."""


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
        progress: show the progress bar when stderr is a terminal.
            Defaults to `True`.

    Returns:
        An iterator over the results; nothing is held beyond a few chunks.
    """
    workers = workers or default_workers()
    # disable=None hides the bar when stderr is not a terminal (a log file, CI), where it is only noise.
    bar = tqdm(total=len(items), desc=desc, unit=unit, disable=None if progress else True, leave=False)
    with bar:
        if workers == 1 or len(items) * files_per_item < _MIN_FILES_FOR_PROCESSES:
            for item in items:
                yield fn(item)
                bar.update()
            return
        # "spawn", not "fork": the parent may already run TensorFlow threads,
        # which a forked child would inherit in a broken state. An executor,
        # not multiprocessing.Pool: a Pool waits forever for a worker that was
        # killed, an executor says so.
        context = multiprocessing.get_context("spawn")
        chunksize = max(1, min(256, len(items) // (workers * 8)))
        done = 0
        with ProcessPoolExecutor(workers, mp_context=context) as executor:
            try:
                for result in executor.map(fn, items, chunksize=chunksize):
                    yield result
                    done += 1
                    bar.update()
            except BrokenProcessPool:
                raise WorkerDiedError(
                    f"A worker process died after {done:,} of {len(items):,} {unit}s ({desc or 'parallel work'}), "
                    "most often killed by the system for lack of memory. Run again with fewer workers, "
                    "e.g. --workers 1."
                ) from None


def chunked(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    """Splits `items` into consecutive slices of at most `size`."""
    for start in range(0, len(items), size):
        yield items[start:start + size]

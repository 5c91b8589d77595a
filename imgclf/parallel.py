"""Runs a function over many files in worker processes, in order, with a progress bar.

Processes, not threads: on 2 cores, processes check and decode small images
1.6 to 1.8 times as fast as threads, because the Python work around each file
holds the GIL; on camera-size JPEGs the two are even within the noise
(docs/BENCHMARKS.md, "Worker processes or threads"). The environment variable
`IMGCLF_PARALLEL_BACKEND=thread` runs the same work in threads of this process
instead, only so that `scripts/bench_workers.py` can measure both: decoding in
`images.py` changes process-wide Pillow and warnings settings around each file,
which threads would share.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
R = TypeVar("R")

# Below this many files, starting worker processes costs more than it saves.
_MIN_FILES_FOR_PROCESSES = 256

BACKEND_VARIABLE = "IMGCLF_PARALLEL_BACKEND"


class WorkerDiedError(RuntimeError):
    """A worker process ended without finishing its files."""


def default_workers() -> int:
    """One worker per CPU this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def resolve_workers(workers: int | None) -> int:
    """The number of workers to use: `workers`, or one per CPU for `None`.

    Raises:
        ValueError: if `workers` is below 1.
    """
    if workers is None:
        return default_workers()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError("workers must be a whole number of at least 1 (1 works in this process), or None for one "
                         f"per CPU. Received: workers={workers!r}")
    return workers


class WorkerPool(ProcessPoolExecutor):
    """A pool of spawned worker processes that leave Ctrl-C to this process.

    Ctrl-C sends SIGINT to every process of the terminal's foreground group,
    workers included, and a worker stopped by it prints a traceback of its
    own. Each worker ignores SIGINT instead; the process that owns the pool
    stops on it and shuts the workers down. A worker that is still starting
    (importing Python's `site`) has no initializer yet, so SIGINT is blocked
    in this thread while `submit` may start one: the new process inherits the
    blocked signal.

    "spawn", not "fork": this process may already run TensorFlow threads,
    which a forked child would inherit in a broken state.

    Args:
        workers: processes.
        initializer: called in each worker once it has started. Defaults to `None`.
    """

    def __init__(self, workers: int, *, initializer: Callable[[], object] | None = None):
        super().__init__(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
                         initargs=(initializer,))

    def submit(self, fn, /, *args, **kwargs):
        with _sigint_blocked():
            return super().submit(fn, *args, **kwargs)


def _start_worker(initializer: Callable[[], object] | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if initializer is not None:
        initializer()


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no signal masks, and no process groups to signal
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


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
        workers: processes to use, at least 1; `None` means one per CPU, 1
            runs in this process. Defaults to `None`.
        desc: label of the tqdm progress bar. Defaults to `None`.
        unit: what one item is, for the progress bar. Defaults to `"file"`.
        files_per_item: files one item stands for (a chunk of files counts
            as many); few files in all are done in this process. Defaults to 1.
        progress: show the progress bar when stderr is a terminal.
            Defaults to `True`.

    Returns:
        An iterator over the results; nothing is held beyond a few chunks.

    Raises:
        ValueError: if `workers` is below 1.
        WorkerDiedError: a worker process died, while starting (most often
            an unguarded main script) or while working (most often killed
            for lack of memory); the message says which and what to do.
    """
    workers = resolve_workers(workers)
    # disable=None hides the bar when stderr is not a terminal (a log file, CI), where it is only noise.
    bar = tqdm(total=len(items), desc=desc, unit=unit, disable=None if progress else True, leave=False)
    with bar:
        if workers == 1 or len(items) * files_per_item < _MIN_FILES_FOR_PROCESSES:
            results = map(fn, items)
        elif os.environ.get(BACKEND_VARIABLE) == "thread":
            results = _thread_map(fn, items, workers)
        else:
            results = _process_map(fn, items, workers, f"{unit}s ({desc or 'parallel work'})")
        for result in results:
            yield result
            bar.update()


def _chunksize(items: Sequence, workers: int) -> int:
    return max(1, min(256, len(items) // (workers * 8)))


def _process_map(fn: Callable[[T], R], items: Sequence[T], workers: int, what: str) -> Iterator[R]:
    # An executor, not multiprocessing.Pool: a Pool waits forever for a worker
    # that was killed, an executor says so.
    # Set by the first worker that finishes starting. A spawned worker first
    # imports the main script again; one whose top level calls imgclf dies there.
    started = multiprocessing.get_context("spawn").Event()
    done = 0
    executor = WorkerPool(workers, initializer=started.set)
    try:
        try:
            for result in executor.map(fn, items, chunksize=_chunksize(items, workers)):
                yield result
                done += 1
        except BrokenProcessPool:
            if not started.is_set():
                raise WorkerDiedError(
                    f"No worker process could start for {len(items):,} {what}. Each worker imports the main "
                    "script again, so a script that calls imgclf at its top level runs again in every worker "
                    "and stops it (see the traceback above). Put the script's code under "
                    "`if __name__ == \"__main__\":`, or pass workers=1 (--workers 1) to work in this process."
                ) from None
            raise WorkerDiedError(
                f"A worker process died after {done:,} of {len(items):,} {what}, most often killed by the "
                "system for lack of memory. Run again with fewer workers, e.g. --workers 1."
            ) from None
    finally:
        # Stopped early (Ctrl-C, an error, a caller that stops reading): the chunks not started are dropped.
        executor.shutdown(wait=True, cancel_futures=True)


def _thread_map(fn: Callable[[T], R], items: Sequence[T], workers: int) -> Iterator[R]:
    with ThreadPoolExecutor(workers) as executor:
        for results in executor.map(functools.partial(_map_chunk, fn), chunked(items, _chunksize(items, workers))):
            yield from results


def _map_chunk(fn: Callable[[T], R], chunk: Sequence[T]) -> list[R]:
    return [fn(item) for item in chunk]


def chunked(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    """Splits `items` into consecutive slices of at most `size`."""
    for start in range(0, len(items), size):
        yield items[start:start + size]

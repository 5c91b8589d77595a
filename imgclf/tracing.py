"""TensorFlow's warning of frequent retracing, held back where imgclf traces the functions of a new model."""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator


class _RetracingWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


@contextlib.contextmanager
def retracing_expected() -> Iterator[None]:
    """Holds back TensorFlow's "N out of the last N calls ... triggered tf.function retracing" within the block.

    TensorFlow counts traces by the Python function traced, so the training
    and prediction steps Keras makes anew for every model add up across the
    models of one process: after a few `imgclf.train` or `imgclf.evaluate`
    calls in a loop it warns, and advises changing code the user never
    wrote. A new model has to be traced, so within the block the warning is
    dropped; outside it, it is left as it was.
    """
    logger = logging.getLogger("tensorflow")
    held_back = _RetracingWarnings()
    logger.addFilter(held_back)
    try:
        yield
    finally:
        logger.removeFilter(held_back)

"""What training watches: the monitored metric and its direction, validation macro-F1, early stopping.

Callbacks here keep the state they need across a killed and resumed run:
`ResumableState.state()` goes into `checkpoints/state.json` after every epoch
and `restore()` puts it back before the resumed `model.fit` starts; the
TensorBoard points of an epoch that never finished are dropped before it is
trained again (`forget_unfinished_epochs`).
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
from sklearn.metrics import f1_score

from .files import atomic_path
from .pipeline import SplitImages


def choose_monitor(requested: str, has_validation: bool) -> str:
    """The metric that picks the best epoch: `requested`, or the training loss when there is no validation split."""
    return requested if has_validation else "loss"


def monitor_mode(monitor: str) -> str:
    """`"min"` for losses, `"max"` for accuracy and F1 (Keras' "auto" would take F1 for a loss)."""
    return "min" if "loss" in monitor else "max"


class ResumableState:
    """Mixin for a Keras callback whose counters must survive a resume.

    Keras resets `wait` and `best` in `on_train_begin`; values given to
    `restore` are applied after that reset.

    Attributes:
        STATE: names of the attributes saved, e.g. `("wait", "best")`.
    """

    STATE: tuple[str, ...] = ()
    _restored: dict | None = None

    def state(self) -> dict:
        return {name: _plain(getattr(self, name)) for name in self.STATE}

    def restore(self, state: dict | None) -> None:
        self._restored = dict(state) if state else None

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        for name, value in (self._restored or {}).items():
            if name in self.STATE:
                setattr(self, name, value)
        self._restored = None


def _plain(value):
    """Numbers as JSON can hold them (numpy scalars become floats/ints)."""
    if isinstance(value, (np.floating, float)):
        return float(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    return value


class ResumableEarlyStopping(ResumableState, keras.callbacks.EarlyStopping):
    """`keras.callbacks.EarlyStopping` whose patience counter and best value survive a resume."""

    STATE = ("wait", "best", "best_epoch")


class ValidationMacroF1(keras.callbacks.Callback):
    """Adds `val_macro_f1` (scikit-learn's `f1_score(average="macro")`) to each epoch's logs.

    It must come before the callbacks that read it (checkpoint, early
    stopping, the plateau schedule) in the callback list: Keras hands the
    same `logs` dict to each callback in order.

    Args:
        val: the decoded validation split.
        batches: batches of `val` to predict on.
    """

    def __init__(self, val: SplitImages, batches):
        super().__init__()
        self.labels = val.labels
        self.batches = batches

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        predicted = np.argmax(self.model.predict(self.batches, verbose=0), axis=1)
        # Over the classes the validation images hold, as `imgclf evaluate` averages: a class that only the
        # predictions name would count as an F1 of 0.
        logs["val_macro_f1"] = float(f1_score(self.labels, predicted, labels=np.unique(self.labels), average="macro",
                                              zero_division=0))


def forget_unfinished_epochs(folder, *, epoch: int, iterations: int | None) -> None:
    """Drops from TensorBoard's event files under `folder` the points written after the last finished epoch.

    Keras's `TensorBoard` callback writes an epoch's points before the run's
    checkpoint records the epoch as finished: a run killed in between
    trains that epoch again when resumed, and TensorBoard would draw it
    twice. Points are dropped by step: epochs after `epoch`, and for the
    tags Keras counts in training steps (`evaluation_*_vs_iterations`),
    steps after `iterations`. A record cut short by the kill is dropped
    too. Each file that changes is replaced atomically.

    Args:
        folder: the run's `tensorboard/` folder (missing is fine).
        epoch: the last finished epoch, counted from 0 (`state.json`).
        iterations: the optimizer steps at its end (`state.json`), or
            `None` to keep every point counted in steps.
    """
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    for path in sorted(Path(folder).rglob("events.out.tfevents.*")):
        records, changed = [], False
        try:
            for record in tf.data.TFRecordDataset(str(path)):
                records.append(record.numpy())
        except tf.errors.DataLossError:
            changed = True
        kept = [record for record in records if _finished(event_pb2.Event.FromString(record), epoch, iterations)]
        if not changed and len(kept) == len(records):
            continue
        with atomic_path(path) as tmp, tf.io.TFRecordWriter(str(tmp)) as writer:
            for record in kept:
                writer.write(record)


def _finished(event, epoch: int, iterations: int | None) -> bool:
    """Whether an event of TensorBoard's files belongs to a finished epoch; one that holds no point (the file's
    version, for one) always does."""
    tags = [value.tag for value in event.summary.value]
    if not tags:
        return True
    if all(tag.endswith("_vs_iterations") for tag in tags):
        return iterations is None or event.step <= iterations
    return event.step <= epoch

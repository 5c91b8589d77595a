"""What training prints: a bar per epoch on a terminal, one plain line per finished epoch everywhere.

Keras' own progress bar is not used (`model.fit(verbose=0)`): its bar
redraws with carriage returns that fill a log file, and its epoch line does
not show the learning rate or the images per second.
"""

from __future__ import annotations

import sys
import time

import keras

# Columns of the epoch line, in order, when present in the logs.
_SHOWN = ("loss", "accuracy", "val_loss", "val_accuracy", "val_macro_f1")


def epoch_line(epoch: int, epochs: int, phase: str, logs: dict, seconds: float, images: int) -> str:
    """One finished epoch as a line, e.g. `epoch 3/10 (train): loss 0.4121 accuracy 0.8512 ... 2.1 s, 2,850 images/s`."""
    values = " ".join(f"{key} {float(logs[key]):.4f}" for key in _SHOWN if key in logs)
    rate = images / seconds if seconds > 0 else 0.0
    learning_rate = f" lr {float(logs['learning_rate']):.3g}" if "learning_rate" in logs else ""
    shown = f"{rate:,.0f}" if rate >= 10 else f"{rate:.2g}"  # 0.45, not 0, for a slow first epoch
    return f"epoch {epoch + 1}/{epochs} ({phase}): {values}{learning_rate}, {seconds:.1f} s, {shown} images/s"


class EpochProgress(keras.callbacks.Callback):
    """Shows training progress: a tqdm bar during each epoch (optional) and a line when it ends.

    It belongs last in the callback list, so the line shows what earlier
    callbacks added to the logs (`val_macro_f1`, `learning_rate`).

    Args:
        epochs: epochs of the whole run (the line says "epoch 3/10").
        phase: the phase's name, shown on each line.
        images_per_epoch: images one epoch trains on.
        batch_size: images per step.
        bar: show the tqdm bar (loss, accuracy, images/s, ETA). Defaults to
            `None`: when standard error is a terminal.
        stream: where the epoch lines go. Defaults to `None` (standard output).
    """

    def __init__(self, *, epochs: int, phase: str, images_per_epoch: int, batch_size: int, bar: bool | None = None,
                 stream=None):
        super().__init__()
        self.epochs = epochs
        self.phase = phase
        self.images_per_epoch = images_per_epoch
        self.batch_size = batch_size
        self.show_bar = sys.stderr.isatty() if bar is None else bar
        self.stream = stream
        self._bar = None
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()
        if self.show_bar:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.images_per_epoch, unit="img", leave=False,
                             desc=f"epoch {epoch + 1}/{self.epochs}", file=sys.stderr, dynamic_ncols=True)

    def on_train_batch_end(self, batch, logs=None):
        if self._bar is None:
            return
        done = min((batch + 1) * self.batch_size, self.images_per_epoch)
        self._bar.update(done - self._bar.n)
        shown = {key: f"{float(logs[key]):.4f}" for key in ("loss", "accuracy") if logs and key in logs}
        self._bar.set_postfix(shown, refresh=False)

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._started
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        print(epoch_line(epoch, self.epochs, self.phase, logs or {}, seconds, self.images_per_epoch),
              file=self.stream or sys.stdout, flush=True)

    def on_train_end(self, logs=None):
        if self._bar is not None:  # stopped within an epoch (NaN loss)
            self._bar.close()
            self._bar = None

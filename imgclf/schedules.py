"""Learning-rate schedules within a phase, through Keras' own schedules and callbacks.

Each phase starts at its own learning rate (`Phase.learning_rate`) and the
schedule counts epochs from the phase's first one. With E epochs in the phase
and `lr` its learning rate, epoch i (from 0) uses:

```
constant   lr
cosine     i < W:  lr * (i + 1) / (W + 1)                (W = warmup_epochs, linear warm-up)
           i >= W: lr * (1 + cos(pi * (i - W) / (E - W))) / 2
step       lr * lr_factor ** (i // lr_step_epochs)
plateau    lr, times lr_factor whenever `monitor` has not improved for lr_patience epochs
```

`constant`, `cosine` and `step` are functions of the epoch alone
(`keras.optimizers.schedules.CosineDecay` and `ExponentialDecay` evaluated at
the epoch, set by `keras.callbacks.LearningRateScheduler`), so a resumed run
recomputes them. `plateau` is `keras.callbacks.ReduceLROnPlateau`; its lowered
rate is saved with the optimizer in `last.keras`, and its counters in
`checkpoints/state.json`.
"""

from __future__ import annotations

import keras

from .config import TrainConfig
from .monitoring import ResumableState, monitor_mode
from .phases import Phase


def learning_rate_at(train: TrainConfig, phase: Phase, epoch: int) -> float:
    """The learning rate of `epoch` (counted over the whole run) under the `constant`, `cosine` or `step` schedule.

    Args:
        train: the schedule and its settings.
        phase: the phase `epoch` belongs to.
        epoch: the epoch, from 0 at the start of the run.

    Returns:
        The learning rate, a float.

    Example:

    >>> learning_rate_at(TrainConfig(epochs=4, schedule="step", lr_step_epochs=2), Phase("train", 0, 4, 1e-3), 2)
    0.0001
    """
    i = epoch - phase.start
    lr = phase.learning_rate
    if train.schedule == "cosine":
        warmup = min(train.warmup_epochs, phase.epochs - 1)
        schedule = keras.optimizers.schedules.CosineDecay(
            lr / (warmup + 1), decay_steps=phase.epochs - warmup, alpha=0.0,
            warmup_target=lr if warmup else None, warmup_steps=warmup)
    elif train.schedule == "step":
        schedule = keras.optimizers.schedules.ExponentialDecay(
            lr, decay_steps=train.lr_step_epochs, decay_rate=train.lr_factor, staircase=True)
    else:
        return float(lr)
    return float(keras.ops.convert_to_numpy(schedule(i)))


class ResumableReduceLROnPlateau(ResumableState, keras.callbacks.ReduceLROnPlateau):
    """`keras.callbacks.ReduceLROnPlateau` whose counters survive a resume."""

    STATE = ("wait", "best", "cooldown_counter")


def schedule_callbacks(train: TrainConfig, phase: Phase, monitor: str) -> list[keras.callbacks.Callback]:
    """The Keras callbacks that apply `train.schedule` within `phase`; none for `constant`.

    The plateau callback must come before the checkpoint in the callback
    list, so the checkpoint saves the lowered rate and the counters.
    """
    if train.schedule == "constant":
        return []
    if train.schedule == "plateau":
        return [ResumableReduceLROnPlateau(monitor=monitor, mode=monitor_mode(monitor), factor=train.lr_factor,
                                           patience=train.lr_patience, min_lr=0.0, verbose=0)]
    return [keras.callbacks.LearningRateScheduler(lambda epoch: learning_rate_at(train, phase, epoch), verbose=0)]

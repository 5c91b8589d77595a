"""The phase plan of training: which layers train, at which learning rate, for which epochs.

A network trained from scratch, or a backbone from random weights, trains in
one phase. A pretrained backbone is fine-tuned in two, as the Keras
transfer-learning guide and fastai's `fine_tune` do:

```
epochs:   0 ........ freeze_epochs-1 | freeze_epochs ........ epochs-1
phase:    head (backbone frozen)     | fine_tune (unfreeze all, none or top K blocks)
lr:       learning_rate              | fine_tune_lr (default learning_rate / 10)
```

Both phases write the same `history.csv` (with a `phase` column) and count
epochs on from each other; `state.json` records the phase, so `--resume`
continues in the phase a run was killed in.
"""

from __future__ import annotations

import dataclasses

from .config import Config

HEAD, FINE_TUNE, TRAIN = "head", "fine_tune", "train"


@dataclasses.dataclass(frozen=True)
class Phase:
    """A stretch of epochs with fixed trainable layers and learning rate.

    Attributes:
        name: `"head"`, `"fine_tune"` or `"train"` (one phase, everything trains).
        start: first epoch, counted from 0.
        end: the epoch after the last one.
        learning_rate: the optimizer's learning rate.
        unfreeze: backbone layers that train besides the head: `"none"`,
            `"all"` or an int K (top K blocks); `None` for a model without a
            pretrained backbone, where every layer trains.
    """

    name: str
    start: int
    end: int
    learning_rate: float
    unfreeze: str | int | None = None

    @property
    def epochs(self) -> int:
        return self.end - self.start


def default_freeze_epochs(epochs: int) -> int:
    """Head-only epochs when `freeze_epochs` is not set: a fifth of the run, at least one."""
    return max(1, epochs // 5)


def resolve_phases(cfg: Config, *, pretrained_backbone: bool) -> Config:
    """Writes the automatic phase settings into the config, so a resumed run keeps its phase boundary.

    Args:
        cfg: the experiment.
        pretrained_backbone: whether the model is a backbone with pretrained weights.

    Returns:
        `cfg` with `train.freeze_epochs` and `train.fine_tune_lr` set when
        the model is fine-tuned, unchanged otherwise.
    """
    train = cfg.train
    if not pretrained_backbone:
        return cfg
    return cfg.replace(train={
        "freeze_epochs": default_freeze_epochs(train.epochs) if train.freeze_epochs is None else train.freeze_epochs,
        "fine_tune_lr": train.learning_rate / 10 if train.fine_tune_lr is None else train.fine_tune_lr,
    })


def plan_phases(cfg: Config, *, pretrained_backbone: bool) -> list[Phase]:
    """The phases of a run, in order; phases without epochs are left out.

    Args:
        cfg: the experiment.
        pretrained_backbone: whether the model is a backbone with pretrained weights.

    Returns:
        A list of `Phase`, covering epochs `0 .. cfg.train.epochs - 1`.

    Example:

    >>> plan_phases(Config.from_dict({"train": {"epochs": 10, "freeze_epochs": 2, "fine_tune_lr": 1e-4}}),
    ...             pretrained_backbone=True)
    [Phase(name='head', start=0, end=2, ...), Phase(name='fine_tune', start=2, end=10, ...)]
    """
    train = resolve_phases(cfg, pretrained_backbone=pretrained_backbone).train
    if not pretrained_backbone:
        return [Phase(TRAIN, 0, train.epochs, train.learning_rate)]
    if train.unfreeze == "none":
        return [Phase(HEAD, 0, train.epochs, train.learning_rate, "none")]
    freeze = min(train.freeze_epochs, train.epochs)
    phases = [Phase(HEAD, 0, freeze, train.learning_rate, "none"),
              Phase(FINE_TUNE, freeze, train.epochs, train.fine_tune_lr, train.unfreeze)]
    return [phase for phase in phases if phase.epochs > 0]

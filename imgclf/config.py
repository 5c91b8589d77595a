"""Configuration: frozen dataclasses, YAML on disk, validation that names the key.

A `Config` holds everything needed to rerun an experiment. It is written to
`config.yaml` in every run directory and can be read back with `load_config`.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from collections.abc import Hashable
from pathlib import Path
from typing import Any, Optional, Union

import yaml

COLOR_MODES = ("auto", "rgb", "grayscale")
RESIZE_MODES = ("stretch", "pad", "crop")
OPTIMIZERS = ("adam", "sgd", "rmsprop", "adamw")
SCHEDULES = ("constant", "cosine", "step", "plateau")
MONITORS = ("val_loss", "val_accuracy", "val_macro_f1")
SAMPLERS = ("shuffle", "balanced")
STRATEGIES = ("auto", "default", "mirrored", "multi-worker")


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names it and the fix."""


def _check(condition: bool, key: str, value: Any, expected: str) -> None:
    if not condition:
        raise ConfigError(f"Invalid {key}: expected {expected}. Received: {key}={value!r}")


_FLOAT32_MAX = 3.4e38
# Far beyond any training; TensorFlow cannot count epochs past 2**63.
MAX_EPOCHS = 1_000_000


def _positive(value, *, zero: bool = False) -> bool:
    """Whether `value` is a number above 0 (or 0 too, with `zero`) that a float32 holds: rates are float32 variables."""
    return (0 <= value if zero else 0 < value) and value <= _FLOAT32_MAX


def _check_seed(seed) -> None:
    _check(isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2**32, "seed", seed,
           "an integer from 0 to 2**32 - 1")


def _check_fraction(key: str, value: float) -> None:
    _check(isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value < 1.0, key, value,
           "a fraction in [0, 1)")


@dataclasses.dataclass(frozen=True)
class ImageSpec:
    """What the model sees: `height` × `width` × `channels`, made by `resize`.

    Resolved from a `DataConfig` and the data; the decode cache and the
    models both take it from here.
    """

    height: int
    width: int
    channels: int
    resize: str = "stretch"

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """How images are read, split and cached.

    Args:
        image_size: `(height, width)` the model sees. Defaults to `None`: the
            median size of the training images for models trained from
            scratch, the backbone's own size for pretrained models.
        color_mode: `"rgb"`, `"grayscale"` or `"auto"` (grayscale when every
            image is). Defaults to `"auto"`.
        resize: `"stretch"`, `"pad"` (keep aspect, letterbox) or `"crop"`
            (keep aspect, centre crop). Defaults to `"stretch"`.
        val: fraction of each class held out for validation. Defaults to 0.15.
        test: fraction of each class held out for testing. Defaults to 0.15.
        seed: seed of the split. Defaults to 0.
        cache_dir: where decoded images are cached. Defaults to `None`:
            `$XDG_CACHE_HOME/imgclf` (usually `~/.cache/imgclf`).
        workers: processes that decode images. Defaults to `None`: one per CPU.
        max_pixels: larger images are rejected as decompression bombs.
            Defaults to 89,478,485 (Pillow's limit).
        min_side: images with a shorter side are flagged as too small.
            Defaults to 8.
        max_aspect: images with a longer/shorter side ratio above this are
            flagged. Defaults to 10.
    """

    image_size: Optional[tuple[int, int]] = None
    color_mode: str = "auto"
    resize: str = "stretch"
    val: float = 0.15
    test: float = 0.15
    seed: int = 0
    cache_dir: Optional[str] = None
    workers: Optional[int] = None
    max_pixels: int = 89_478_485
    min_side: int = 8
    max_aspect: float = 10.0

    def __post_init__(self):
        if self.image_size is not None:
            size = tuple(self.image_size)
            _check(
                len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size),
                "image_size", self.image_size, "two positive integers (height, width)",
            )
            object.__setattr__(self, "image_size", size)
        _check(self.color_mode in COLOR_MODES, "color_mode", self.color_mode, f"one of {COLOR_MODES}")
        _check(self.resize in RESIZE_MODES, "resize", self.resize, f"one of {RESIZE_MODES}")
        _check_fraction("val", self.val)
        _check_fraction("test", self.test)
        _check(self.val + self.test < 1.0, "val+test", self.val + self.test, "less than 1 so that some images are left to train on")
        _check(self.workers is None or self.workers >= 1, "workers", self.workers, "a positive integer or null")
        _check(self.max_pixels > 0, "max_pixels", self.max_pixels, "a positive integer")
        _check(self.min_side > 0, "min_side", self.min_side, "a positive integer")
        _check(self.max_aspect >= 1, "max_aspect", self.max_aspect, "a ratio of at least 1")
        _check_seed(self.seed)


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation.

    Args:
        preset: name of an albumentations preset (`"none"`, `"light"`,
            `"standard"`, `"heavy"`), `"auto"` (`"light"` for grayscale
            images, which are often digits or text; `"standard"` for colour
            ones; the run's `config.yaml` records which), or the path of a
            YAML file holding any albumentations pipeline in the format of a
            run's `augment.yaml`. `imgclf augment-preview` shows what either
            does. Defaults to `"auto"`.
        flip: keep mirroring transforms. `False` removes `HorizontalFlip`,
            `VerticalFlip`, `Transpose` and `D4`/`SquareSymmetry` from the
            preset or the file, for data where a mirror image is another
            class (digits, text, left/right). Defaults to `True`.
        sha256: SHA-256 of the YAML file `preset` names, recorded when a run
            starts; a run resumed or repeated after the file changed is
            refused. `None` for presets, and for a file not yet recorded.
            Defaults to `None`.
    """

    preset: str = "auto"
    flip: bool = True
    sha256: Optional[str] = None

    def __post_init__(self):
        _check(isinstance(self.preset, str) and self.preset.strip() != "", "preset", self.preset,
               "a preset name or the path of a .yaml file")
        _check(self.sha256 is None or (len(self.sha256) == 64 and all(c in "0123456789abcdef" for c in self.sha256)),
               "sha256", self.sha256, "64 lowercase hex digits or null")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Which network to build.

    Args:
        name: a registered model (`imgclf models` lists them), or `"auto"`:
            a pretrained backbone whose ImageNet weights are in the Keras
            cache, else the strongest network trained from scratch.
            Defaults to `"auto"`.
        hidden: widths of the hidden Dense layers of `mlp`. Defaults to `(784,)`.
        dropout: dropout rate; `None` uses the model's own default.
            Defaults to `None`.
        weights: initial weights of a backbone: `"imagenet"`, `"none"`
            (random), the path of a `.weights.h5` file of the backbone, or
            `"run:DIR"` (the backbone of an earlier imgclf run). `None` means
            `"imagenet"` for backbones and `"none"` for networks trained from
            scratch. Defaults to `None`.
    """

    name: str = "auto"
    hidden: tuple[int, ...] = (784,)
    dropout: Optional[float] = None
    weights: Optional[str] = None

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(self.hidden))
        _check(all(isinstance(h, int) and h > 0 for h in self.hidden), "hidden", self.hidden, "positive integers")
        if self.dropout is not None:
            _check_fraction("dropout", self.dropout)
        _check(self.weights is None or (isinstance(self.weights, str) and self.weights.strip() not in ("", "run:")),
               "weights", self.weights, "imagenet, none, a .weights.h5 path or run:DIR")
        if self.weights is not None and self.weights.startswith("run:"):  # "run: runs/large" names runs/large
            object.__setattr__(self, "weights", "run:" + self.weights[len("run:"):].strip())

    @property
    def pretrained(self) -> bool:
        """Whether the weights come from somewhere (ImageNet, a file or a run), not random initialisation."""
        return self.weights not in (None, "none")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How the model is fitted.

    Args:
        epochs: passes over the training split. Defaults to 20.
        batch_size: images per step. Defaults to 32.
        learning_rate: initial learning rate. Defaults to 1e-3.
        optimizer: `"adam"`, `"adamw"`, `"sgd"` or `"rmsprop"`. Defaults to `"adam"`.
        patience: stop after this many epochs without a better `monitor`;
            `None` never stops early. Defaults to `None`.
        class_weight: weight the loss by inverse class frequency.
            Defaults to `False`.
        seed: seed of weight initialisation and shuffling. Defaults to 0.
        freeze_epochs: epochs of the first phase of fine-tuning a pretrained
            backbone, which trains the new head on the frozen backbone; they
            count towards `epochs`. `None` chooses `max(1, epochs // 5)`.
            Defaults to `None`.
        unfreeze: what the second phase trains besides the head: `"all"`
            layers of the backbone, `"none"` (feature extraction: the head
            alone for every epoch) or an integer K, the backbone's top K
            blocks. Batch normalisation layers stay frozen and in inference
            mode. Defaults to `"all"`.
        fine_tune_lr: learning rate of the second phase. `None` means
            `learning_rate / 10`. Defaults to `None`.
        momentum: momentum of `"sgd"` and `"rmsprop"`; `0.0` is plain SGD.
            `None` means 0.9 for `"sgd"` and Keras' 0.0 for `"rmsprop"`.
            Defaults to `None`.
        weight_decay: decoupled weight decay (as in AdamW). `None` keeps the
            optimizer's own: 0.004 for `"adamw"`, none for the others.
            Defaults to `None`.
        label_smoothing: share of each label's probability spread evenly
            over all classes, in `[0, 1)`. Defaults to 0.1.
        schedule: how the learning rate changes within each phase, starting
            from that phase's learning rate: `"constant"`; `"cosine"`
            (linear warm-up for `warmup_epochs`, then cosine decay towards
            0 over the phase's remaining epochs); `"step"` (multiplied by
            `lr_factor` every `lr_step_epochs` epochs); `"plateau"`
            (multiplied by `lr_factor` after `lr_patience` epochs without a
            better `monitor`). Defaults to `"cosine"`.
        warmup_epochs: epochs of linear warm-up of `"cosine"`: epoch i of
            W warm-up epochs uses `(i + 1) / (W + 1)` of the learning rate.
            Defaults to 0.
        lr_factor: factor of `"step"` and `"plateau"`. Defaults to 0.1.
        lr_step_epochs: epochs between steps of `"step"`. Defaults to 10.
        lr_patience: epochs without improvement before `"plateau"` lowers
            the learning rate. Defaults to 2.
        monitor: validation metric that picks the best epoch (the weights
            `model.keras` holds), stops early and drives `"plateau"`:
            `"val_loss"`, `"val_accuracy"` or `"val_macro_f1"` (scikit-learn's
            macro-averaged F1 on the validation split). Without a validation
            split the training loss is used. Defaults to `"val_loss"`.
        sampler: how each epoch draws training images: `"shuffle"` (every
            image once, in a new order) or `"balanced"` (as many images as
            the split holds, drawn evenly from every class, with
            replacement for classes too small). Defaults to `"shuffle"`.
        mixed_precision: compute in float16 with float32 weights
            (`mixed_float16`) on a GPU, in bfloat16 (`mixed_bfloat16`) on a
            CPU with bfloat16 instructions (AVX512_BF16 or AMX). On other
            CPUs it would be slower, so it is ignored with a note.
            `model.keras` computes in float32 either way. Defaults to `False`.
        strategy: how training is spread over devices: `"default"` (one
            device), `"mirrored"` (`tf.distribute.MirroredStrategy`: a copy of
            the model on every GPU, or on every logical CPU device without
            GPUs; `batch_size` is the global batch, split between them),
            `"multi-worker"` (`tf.distribute.MultiWorkerMirroredStrategy`:
            one process per machine, the cluster described by the
            `TF_CONFIG` environment variable; `batch_size` is the batch of
            all workers together) or `"auto"` (`"mirrored"` when there are
            several GPUs, else `"default"`). Defaults to `"auto"`.
    """

    epochs: int = 20
    batch_size: int = 32
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    patience: Optional[int] = None
    class_weight: bool = False
    seed: int = 0
    freeze_epochs: Optional[int] = None
    unfreeze: Union[str, int] = "all"
    fine_tune_lr: Optional[float] = None
    momentum: Optional[float] = None
    weight_decay: Optional[float] = None
    label_smoothing: float = 0.1
    schedule: str = "cosine"
    warmup_epochs: int = 0
    lr_factor: float = 0.1
    lr_step_epochs: int = 10
    lr_patience: int = 2
    monitor: str = "val_loss"
    sampler: str = "shuffle"
    mixed_precision: bool = False
    strategy: str = "auto"

    def __post_init__(self):
        _check(1 <= self.epochs <= MAX_EPOCHS, "epochs", self.epochs, f"a positive integer up to {MAX_EPOCHS:,}")
        _check_seed(self.seed)
        _check(self.batch_size >= 1, "batch_size", self.batch_size, "a positive integer")
        _check(_positive(self.learning_rate), "learning_rate", self.learning_rate, "a positive number up to 3.4e38")
        _check(self.optimizer in OPTIMIZERS, "optimizer", self.optimizer, f"one of {OPTIMIZERS}")
        _check(self.patience is None or self.patience >= 1, "patience", self.patience, "a positive integer or null")
        _check(self.freeze_epochs is None or self.freeze_epochs >= 0, "freeze_epochs", self.freeze_epochs,
               "a non-negative integer or null")
        _check(self.fine_tune_lr is None or _positive(self.fine_tune_lr), "fine_tune_lr", self.fine_tune_lr,
               "a positive number up to 3.4e38, or null")
        unfreeze = self.unfreeze
        if isinstance(unfreeze, str) and unfreeze.strip().isdigit():
            unfreeze = int(unfreeze)
        _check(unfreeze in ("all", "none") or (isinstance(unfreeze, int) and not isinstance(unfreeze, bool) and unfreeze >= 1),
               "unfreeze", self.unfreeze, "all, none or a number of blocks K >= 1")
        object.__setattr__(self, "unfreeze", unfreeze)
        if self.momentum is not None:
            _check(0.0 <= self.momentum < 1.0, "momentum", self.momentum, "a number in [0, 1) or null")
            _check(self.optimizer in ("sgd", "rmsprop"), "momentum", self.momentum,
                   f"null with optimizer={self.optimizer!r} (momentum applies to sgd and rmsprop)")
        _check(self.weight_decay is None or _positive(self.weight_decay, zero=True), "weight_decay", self.weight_decay,
               "a non-negative number up to 3.4e38, or null")
        _check(0.0 <= self.label_smoothing < 1.0, "label_smoothing", self.label_smoothing, "a number in [0, 1)")
        _check(self.schedule in SCHEDULES, "schedule", self.schedule, f"one of {SCHEDULES}")
        _check(self.warmup_epochs >= 0, "warmup_epochs", self.warmup_epochs, "a non-negative integer")
        _check(self.warmup_epochs < self.epochs or self.warmup_epochs == 0, "warmup_epochs", self.warmup_epochs,
               f"fewer than epochs={self.epochs} (the rate must have epochs left to decay)")
        _check(self.warmup_epochs == 0 or self.schedule == "cosine", "warmup_epochs", self.warmup_epochs,
               f"0 with schedule={self.schedule!r} (warm-up belongs to the cosine schedule)")
        _check(0.0 < self.lr_factor < 1.0, "lr_factor", self.lr_factor, "a number in (0, 1)")
        _check(self.lr_step_epochs >= 1, "lr_step_epochs", self.lr_step_epochs, "a positive integer")
        _check(self.lr_patience >= 1, "lr_patience", self.lr_patience, "a positive integer")
        _check(self.monitor in MONITORS, "monitor", self.monitor, f"one of {MONITORS}")
        _check(self.sampler in SAMPLERS, "sampler", self.sampler, f"one of {SAMPLERS}")
        _check(not (self.class_weight and self.sampler == "balanced"), "sampler", self.sampler,
               "'shuffle' with class_weight=True (both correct class imbalance; choose one)")
        _check(self.strategy in STRATEGIES, "strategy", self.strategy, f"one of {STRATEGIES}")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """How a model is evaluated.

    Args:
        split: the split `imgclf evaluate RUN` (and `imgclf.evaluate(run)`)
            evaluates when none is named. Defaults to `"test"`.
        top_k: also report top-k accuracy for this k. Defaults to 5.
    """

    split: str = "test"
    top_k: int = 5

    def __post_init__(self):
        _check(self.split in ("train", "val", "test"), "split", self.split, "one of ('train', 'val', 'test')")
        _check(self.top_k >= 1, "top_k", self.top_k, "a positive integer")


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines an experiment; written to `config.yaml`."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        """Returns plain Python types (tuples as lists), ready for YAML."""
        return _to_plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, values: dict, *, source: str = "config") -> "Config":
        """Builds a `Config` from nested dicts; unknown keys are an error.

        Args:
            values: e.g. `{"train": {"epochs": 3}}`; missing keys keep defaults.
            source: where the values came from, used in error messages.

        Returns:
            A validated `Config`.
        """
        return _build(cls, values or {}, prefix="", source=source)

    def replace(self, **sections) -> "Config":
        """Returns a copy with fields overridden, e.g. `replace(train={"epochs": 3})`."""
        merged = self.to_dict()
        for section, updates in sections.items():
            if section not in merged:
                raise ConfigError(f"Unknown config section {section!r}. Valid sections: {sorted(merged)}")
            merged[section].update(_to_plain(updates))
        return Config.from_dict(merged)


def _to_plain(value):
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


# The key a section's single value most likely meant, for `model: mlp` written for `model: {name: mlp}`.
_MAIN_KEYS = {"model": "name", "augment": "preset"}


def _build(cls, values: dict, *, prefix: str, source: str):
    section = prefix.rstrip(".")
    if values is None and section:  # every key of the section commented out: its defaults
        values = {}
    if not isinstance(values, dict):
        main = _MAIN_KEYS.get(section)
        hint = (f" Write it as a mapping of keys, e.g. `{section}: {{{main}: {values}}}`." if main and isinstance(values, str)
                else "")
        raise ConfigError(f"{source}: {section or 'the file'} must be a mapping. Received: {values!r}.{hint}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields), key=str)  # YAML keys may be numbers too
    if unknown:
        key = str(unknown[0])
        close = _FLAG_ALIASES.get(key) or difflib.get_close_matches(key, list(fields), n=1)
        raise ConfigError(
            f"{source}: unknown key {prefix}{key}.{f' Did you mean {prefix}{close[0]}?' if close else ''} Valid keys "
            f"under {section or 'the top level'}: {sorted(fields)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            kwargs[name] = _build(kind, value, prefix=f"{prefix}{name}.", source=source)
        else:
            kwargs[name] = _coerce(value, kind, f"{prefix}{name}", source)
    try:
        return cls(**kwargs)
    except ConfigError as error:
        section = f", section {prefix.rstrip('.')}" if prefix else ""  # data.seed and train.seed are both "seed"
        raise ConfigError(f"{source}{section}: {error}") from None


def _coerce(value, kind, key: str, source: str):
    """Checks `value` against a field's annotation; ints are accepted for floats."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [k for k in typing.get_args(kind) if k is not type(None)]
        if value is None:
            return None
        for option in options[:-1]:
            try:
                return _coerce(value, option, key, source)
            except ConfigError:
                continue
        if len(options) > 1:
            try:
                return _coerce(value, options[-1], key, source)
            except ConfigError:  # the field's own check names the forms it takes (`unfreeze`: all, none or K)
                return value
        return _coerce(value, options[-1], key, source)
    if origin is tuple:
        if key.endswith("image_size"):
            value = _size_value(value)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {key} must be a list. Received: {key}={value!r}")
        item = typing.get_args(kind)[0]
        return tuple(_coerce(v, item, key, source) for v in value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind in (int, float) and isinstance(value, str):
        # YAML 1.1 (PyYAML) reads 1e-3, without a dot, as text, and a quoted '3' is text: take the number it names.
        try:
            return kind(value)
        except ValueError:
            pass
    if kind is bool and not isinstance(value, bool):
        raise ConfigError(f"{source}: {key} must be true or false. Received: {key}={value!r}")
    if kind in (int, float, str) and (not isinstance(value, kind) or isinstance(value, bool)):
        raise ConfigError(f"{source}: {key} must be of type {kind.__name__}. Received: {key}={value!r}")
    return value


def _size_value(value):
    """An image size written as the flag takes it: one number (a square) or `"HxW"`; a list stays a list."""
    if isinstance(value, int) and not isinstance(value, bool):
        return [value, value]
    if isinstance(value, str):
        parts = value.lower().replace("x", ",").split(",")
        if all(p.strip().isdigit() for p in parts) and len(parts) in (1, 2):
            return [int(p) for p in parts] * (2 if len(parts) == 1 else 1)
    return value


def as_config(config) -> Config:
    """The `Config` that `config` stands for, as `imgclf.train` accepts it.

    Args:
        config: a `Config`, a dict of its sections (as `config.yaml` holds
            them) or the path of a YAML file.

    Returns:
        A `Config`.

    Raises:
        TypeError: for anything else, naming what was passed.
    """
    if isinstance(config, Config):
        return config
    if isinstance(config, dict):
        return Config.from_dict(config)
    if isinstance(config, (str, os.PathLike)):
        return load_config(config)
    raise TypeError("config must be a Config, a dict of its sections or the path of a YAML file. Received: "
                    f"config={config!r} (a {type(config).__name__}).")


def load_config(path) -> Config:
    """Reads a YAML file into a validated `Config`.

    Args:
        path: a YAML file with any of the sections `data`, `augment`,
            `model`, `train`, `eval`.

    Returns:
        A `Config`; keys not in the file keep their defaults.

    Example:

    >>> cfg = load_config("runs/flowers/config.yaml")
    >>> cfg.train.epochs
    10
    """
    path = Path(path)
    try:
        values = load_yaml(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"Config file not found: {path}. Check the path or omit --config.") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path} is not UTF-8 text (byte {error.start}: {error.reason}). Save it as UTF-8.") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    return Config.from_dict(values or {}, source=str(path))


# YAML 1.1 reads 010 as 8 (octal), 0x10 as 16 and 1:30 as 90 (base 60); people write decimal numbers. Only those
# are integers here; the rest stays text, which a field then converts as written (010 -> 10) or refuses.
_DECIMAL_INT = re.compile(r"^[-+]?(?:0|[1-9][0-9_]*)$")


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML keeps the last), and
    that integers are decimal."""

    yaml_implicit_resolvers = {
        first: [(tag, _DECIMAL_INT if tag == "tag:yaml.org,2002:int" else pattern) for tag, pattern in resolvers]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}

    def construct_mapping(self, node, deep=False):
        lines = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue  # a list or mapping as a key: PyYAML refuses it below, naming its line
            if key in lines:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice (lines {lines[key]} and "
                    f"{key_node.start_mark.line + 1}); keep one", key_node.start_mark)
            lines[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def load_yaml(text: str):
    """`yaml.safe_load` that refuses a key given twice in one mapping instead of keeping the last silently."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def dump_config(cfg: Config) -> str:
    """Returns `cfg` as YAML text."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


# Flat option names (CLI flags and keyword arguments of `imgclf.train`) → config keys.
OPTION_KEYS: dict[str, tuple[tuple[str, str], ...]] = {
    "model": (("model", "name"),),
    "hidden": (("model", "hidden"),),
    "dropout": (("model", "dropout"),),
    "weights": (("model", "weights"),),
    "augment": (("augment", "preset"),),
    "flip": (("augment", "flip"),),
    "epochs": (("train", "epochs"),),
    "batch_size": (("train", "batch_size"),),
    "learning_rate": (("train", "learning_rate"),),
    "optimizer": (("train", "optimizer"),),
    "patience": (("train", "patience"),),
    "class_weight": (("train", "class_weight"),),
    "freeze_epochs": (("train", "freeze_epochs"),),
    "unfreeze": (("train", "unfreeze"),),
    "fine_tune_lr": (("train", "fine_tune_lr"),),
    "momentum": (("train", "momentum"),),
    "weight_decay": (("train", "weight_decay"),),
    "label_smoothing": (("train", "label_smoothing"),),
    "schedule": (("train", "schedule"),),
    "warmup_epochs": (("train", "warmup_epochs"),),
    "lr_factor": (("train", "lr_factor"),),
    "lr_step_epochs": (("train", "lr_step_epochs"),),
    "lr_patience": (("train", "lr_patience"),),
    "monitor": (("train", "monitor"),),
    "sampler": (("train", "sampler"),),
    "mixed_precision": (("train", "mixed_precision"),),
    "strategy": (("train", "strategy"),),
    "seed": (("data", "seed"), ("train", "seed")),
    "val": (("data", "val"),),
    "test": (("data", "test"),),
    "image_size": (("data", "image_size"),),
    "color_mode": (("data", "color_mode"),),
    "resize": (("data", "resize"),),
    "cache_dir": (("data", "cache_dir"),),
    "workers": (("data", "workers"),),
    "max_pixels": (("data", "max_pixels"),),
    "min_side": (("data", "min_side"),),
    "max_aspect": (("data", "max_aspect"),),
    "split": (("eval", "split"),),
    "top_k": (("eval", "top_k"),),
}


_FLAG_ALIASES = {"lr": ["learning_rate"]}


def with_options(cfg: Config, **options) -> Config:
    """Returns `cfg` with flat options applied; options that are `None` are skipped.

    Args:
        cfg: the base config (defaults, or a YAML file's).
        **options: names of `OPTION_KEYS`, e.g. `epochs=3, model="mlp"`.
            `seed` sets both the split's and the training's seed.

    Returns:
        A validated `Config`.
    """
    unknown = sorted(set(options) - set(OPTION_KEYS))
    if unknown:
        # The flags' own short names (`--lr`) are not keywords: point from them to the keyword.
        close = _FLAG_ALIASES.get(unknown[0]) or difflib.get_close_matches(unknown[0], OPTION_KEYS, n=1)
        hint = f" Did you mean {close[0]}?" if close else ""
        raise ConfigError(f"Unknown option {unknown[0]!r}.{hint} Valid options: {', '.join(OPTION_KEYS)}")
    sections: dict[str, dict] = {}
    for name, value in options.items():
        if value is None:
            continue
        if isinstance(value, os.PathLike):
            value = os.fspath(value)  # a path (an augmentation file, a cache folder) is kept as text
        for section, key in OPTION_KEYS[name]:
            sections.setdefault(section, {})[key] = value
    if options.get("augment") is not None:
        sections["augment"]["sha256"] = None  # a file named again is recorded as it is now
    return cfg.replace(**sections)

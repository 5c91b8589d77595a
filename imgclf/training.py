"""Training: `fit(cfg, manifest, run)` writes a complete run directory.

Every epoch saves `checkpoints/last.keras` (and `best.keras` when the monitored
metric improves), `history.csv` and `checkpoints/state.json`, each atomically,
so a killed run resumes from its last finished epoch with `resume=True` and
repeats the history of a run that was never stopped.

`fit` asks small modules for what grows: `phases` (which layers train, at
which learning rate), `schedules` (the learning rate within a phase),
`monitoring` (the metric that picks the best epoch, validation macro-F1, early
stopping), `sampling` (the order of an epoch's images), `strategy` (devices and
number format), `distributed` (the epochs of a multi-worker cluster, where
`model.fit` fails) and `progress` (what is printed per epoch).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import os
import random
import re
import shutil
import tempfile
from typing import Callable

import keras
import numpy as np
from sklearn.utils.class_weight import compute_class_weight

from .augment import (AUTO as AUTO_AUGMENT, AugmentError, augment_to_yaml, auto_preset, build_augment, check_augment,
                      is_augment_file)
from .distributed import fit_epochs, refuse_disagreeing_workers
from .config import Config, ImageSpec, TrainConfig
from .images import Severity
from .manifest import Manifest, class_size_notes, describe_problems
from .models import ModelChoice, build_model, choose_model, default_image_size
from .models.backbones import (absolute_weights, check_weights, describe_weights, find_backbone_layer, get_backbone,
                               set_trainable)
from .monitoring import (ResumableEarlyStopping, ValidationMacroF1, choose_monitor, forget_unfinished_epochs,
                         monitor_mode)
from .phases import TRAIN, Phase, default_freeze_epochs, plan_phases, resolve_phases
from .parallel import default_workers
from .pipeline import ImageBatches, SplitImages, load_split, pixel_copies_across_splits, resolve_image_spec
from .progress import EpochProgress
from .schedules import schedule_callbacks
from .sizing import check_image_size
from .strategy import Devices, choose_devices, cluster_addresses, float32_model
from .tracing import retracing_expected
from .files import atomic_path, escape_name, read_json, shell_word, write_csv, write_json, write_text
from .runs import RunDir, RunError


class TrainingDivergedError(RunError):
    """The loss became NaN or infinite before any epoch could be kept as the model."""


class TrainingOutOfMemoryError(RunError):
    """The model, or a batch of images through it, needs more memory than the machine has."""


class RunCheckpoint(keras.callbacks.Callback):
    """Saves last/best checkpoints, `history.csv` and the resume state after every epoch.

    Keras' `ModelCheckpoint` and `CSVLogger` write in place, so a process
    killed while saving leaves a broken or half-written file; this callback
    writes each file atomically instead. `state.json` marks an epoch as
    finished only once its checkpoint and history row exist: the checkpoint
    is saved under the epoch's own name (`epoch-3.keras`), `state.json` names
    it, and only then does it replace `last.keras`. A process killed at any
    moment leaves the weights of the epoch `state.json` records
    (`RunDir.finished_checkpoint`), never those of the epoch after it.

    Args:
        run: the run directory.
        monitor: metric that decides the best epoch (lower is better for
            names containing "loss", higher otherwise).
        best: best value seen before this process started (when resuming).
        history: rows of `history.csv` from before this process started
            (when resuming).
        write: write the files; a worker that is not the chief of a
            multi-worker cluster keeps the history and saves the model
            only to discard it. Defaults to `True`.

    Attributes:
        phase: the phase now training (see `imgclf.phases`), written to
            `history.csv` and `state.json`.
        stateful: callbacks of the phase whose counters `state.json` keeps
            (`imgclf.monitoring.ResumableState`), by name.
    """

    def __init__(self, run: RunDir, monitor: str, best: float | None = None, history: list[dict] | None = None,
                 write: bool = True):
        super().__init__()
        self.write = write
        self.run = run
        self.monitor = monitor
        self.lower_is_better = "loss" in monitor
        self.best = best
        self.history = list(history or [])
        self.phase = TRAIN
        self.stateful: dict = {}
        self._learning_rate = math.nan

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        return value < self.best if self.lower_is_better else value > self.best

    def on_epoch_begin(self, epoch, logs=None):
        # The rate this epoch trains with; a plateau schedule may lower it at the epoch's end, for the next.
        # Read back from the optimizer (a float32), written with the digits it was set with.
        self._learning_rate = float(f"{float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)):.6g}")

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        logs["learning_rate"] = self._learning_rate
        value = float(logs.get(self.monitor, math.nan))
        self.history.append({"epoch": epoch, "phase": self.phase, **{key: float(logs[key]) for key in sorted(logs)}})
        if not self.write:
            # Saving may run collective ops (a variable created under a multi-worker strategy is broadcast from
            # the chief), so every worker saves, as in TensorFlow's multi-worker tutorial; this copy is discarded.
            with tempfile.TemporaryDirectory(prefix="imgclf-worker-") as scratch:
                self.model.save(os.path.join(scratch, "last.keras"))
            return
        if not self.run.config_path.exists():  # each write below would make its folder again
            raise RunError(f"{self.run.path} lost its config.yaml while training (was the folder deleted or moved?): "
                           "training stops. Start the run again, with --overwrite.")
        checkpoints = self.run.checkpoints
        saved = self.run.save_model(self.model, checkpoints / f"epoch-{epoch + 1}.keras")
        if _finite_epoch(logs, self.monitor) and self._improved(value):
            self.best = value
            with atomic_path(checkpoints / "best.keras") as tmp:
                shutil.copyfile(saved, tmp)
        columns = ["epoch", "phase", *sorted({key for row in self.history for key in row} - {"epoch", "phase"})]
        write_csv(self.run.history_path, columns, ([row.get(c, "") for c in columns] for row in self.history))
        write_json(checkpoints / "state.json",
                   {"epoch": epoch, "phase": self.phase, "monitor": self.monitor, "best": self.best,
                    "checkpoint": saved.name, "iterations": optimizer_steps(self.model),
                    "callbacks": {name: callback.state() for name, callback in self.stateful.items()},
                    "seed_generators": [state.tolist() for state in seed_generator_states(self.model)]})
        os.replace(saved, checkpoints / "last.keras")
        self.run.remove_epoch_checkpoints()


def _finite_epoch(logs: dict, monitor: str) -> bool:
    """Whether an epoch's numbers are finite: one whose loss is NaN or infinite has broken weights, whatever its
    accuracy says."""
    return all(math.isfinite(float(logs[key])) for key in ("loss", "val_loss", monitor) if key in logs)


class StopOnNaN(keras.callbacks.Callback):
    """Ends training after a batch whose loss is NaN or infinite (the epoch's row and checkpoint still follow).

    Keras' `TerminateOnNaN` does the same but prints a line of its own;
    `fit` says what happened once training has stopped.
    """

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.model.stop_training = True


def _seed_generator_variables(model) -> list:
    return [v for v in model.non_trainable_variables if v.name == "seed_generator_state"]


def seed_generator_states(model) -> list[np.ndarray]:
    """The states of the model's random generators (dropout masks), in layer order.

    A `.keras` file does not keep them: a loaded model draws the masks of its
    first epoch again. `state.json` keeps them, so a resumed run draws the
    masks the uninterrupted run would have drawn.
    """
    return [np.asarray(keras.ops.convert_to_numpy(v)) for v in _seed_generator_variables(model)]


def restore_seed_generators(model, states: list) -> None:
    """Sets the random generators of a loaded model to states from `seed_generator_states`."""
    variables = _seed_generator_variables(model)
    if len(variables) != len(states):
        raise RunError(f"The checkpoint has {len(variables)} random generator(s) but state.json lists {len(states)}: "
                       "the run directory was changed by hand. Start a new run (--overwrite or another --out).")
    for variable, value in zip(variables, states):
        variable.assign(np.asarray(value, dtype=variable.dtype))


def _refuse_a_checkpoint_of_another_epoch(run: RunDir, model, state: dict) -> None:
    """The optimizer's step count in the checkpoint must be the one `state.json` recorded: a checkpoint of another
    epoch (its `epoch-N.keras` deleted by hand) would train on from the wrong weights without a word."""
    recorded, held = state.get("iterations"), optimizer_steps(model)
    if recorded is None or held == recorded:
        return
    raise RunError(f"{run.finished_checkpoint()} does not hold the epoch {run.checkpoints / 'state.json'} records "
                   f"(epoch {state['epoch'] + 1}: {recorded:,} optimizer steps, the checkpoint {held:,}); was a file "
                   f"of {run.checkpoints} deleted or replaced? Start the run again with --overwrite.")


def optimizer_steps(model) -> int:
    """The steps the model's optimizer has taken (a plain or a distributed variable)."""
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


def _finished_history(run: RunDir, last_epoch: int) -> list[dict]:
    """Rows of `history.csv` up to `last_epoch`; a row written just before a kill, past it, is dropped."""
    if not run.history_path.exists():
        return []
    with open(run.history_path, newline="", encoding="utf-8") as handle:
        return [row for row in csv.DictReader(handle) if int(row["epoch"]) <= last_epoch]


def _optimizer(cfg: TrainConfig, learning_rate: float) -> keras.optimizers.Optimizer:
    optimizers = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW, "sgd": keras.optimizers.SGD,
                  "rmsprop": keras.optimizers.RMSprop}
    options = {"learning_rate": learning_rate}
    if cfg.optimizer == "sgd":
        options["momentum"] = 0.9 if cfg.momentum is None else cfg.momentum
    elif cfg.momentum is not None:
        options["momentum"] = cfg.momentum
    if cfg.weight_decay is not None:
        options["weight_decay"] = cfg.weight_decay
    return optimizers[cfg.optimizer](**options)


def _loss(cfg: TrainConfig):
    """Keras' sparse cross-entropy has no label smoothing; with smoothing, labels come one-hot (see `_Batches`)."""
    if cfg.label_smoothing:
        return keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing)
    return "sparse_categorical_crossentropy"


def _class_weights(data: SplitImages, num_classes: int) -> dict[int, float]:
    present = np.unique(data.labels)
    weights = compute_class_weight("balanced", classes=present, y=data.labels)
    table = dict.fromkeys(range(num_classes), 1.0)
    table.update({int(c): float(w) for c, w in zip(present, weights)})
    return table


def _resolve_config(cfg: Config, choice: ModelChoice, spec: ImageSpec) -> Config:
    """The config with automatic choices written out, so the run can be repeated exactly."""
    color_mode = "grayscale" if spec.channels == 1 else "rgb"
    cfg = cfg.replace(data={"image_size": [spec.height, spec.width], "color_mode": color_mode},
                      model=dataclasses.asdict(choice.config))
    if cfg.augment.preset == AUTO_AUGMENT:
        cfg = cfg.replace(augment={"preset": auto_preset(spec.channels)})
    return resolve_phases(cfg, pretrained_backbone=_fine_tuned(cfg))


def _fine_tuned(cfg: Config) -> bool:
    """Whether the model is a pretrained backbone, trained in phases."""
    return get_backbone(cfg.model.name) is not None and cfg.model.pretrained


def check_choices(cfg: Config, *, resuming: bool = False) -> None:
    """Raises for a model, weights, image size or augmentation preset that cannot be used, before any image is read.

    ImageNet weights missing from the Keras cache are downloaded here; without
    network the error names the file and the folder to put it in.

    Args:
        cfg: the experiment.
        resuming: the run continues from its checkpoint, which holds every
            weight: the weights it started from are not looked at (the file
            or run may have moved since). Defaults to `False`.
    """
    build_augment(cfg.augment)
    choice = choose_model(cfg.model)
    size = cfg.data.image_size or default_image_size(choice.config)
    if size:
        check_image_size(size, cfg.train.batch_size)
    backbone = get_backbone(choice.config.name)
    if backbone and size:
        backbone.check_size(ImageSpec(size[0], size[1], 3))
        if not resuming:
            check_weights(backbone, choice.config.weights, ImageSpec(size[0], size[1], 3))


def with_absolute_paths(cfg: Config) -> Config:
    """The config with the files it names (an augmentation YAML file, a weights file, `run:DIR`) as absolute paths,
    as `config.yaml` records them: the run then resumes and repeats from any folder."""
    augment = {"preset": os.path.abspath(cfg.augment.preset)} if is_augment_file(cfg.augment.preset) else {}
    return cfg.replace(augment=augment, model={"weights": absolute_weights(cfg.model.weights)})


def fit(cfg: Config, manifest: Manifest, run: RunDir, *, resume: bool = False, verbose="auto", progress: bool = True,
        augment_checked: bool = False, start: Callable[[], None] | None = None) -> RunDir:
    """Trains `cfg.model` on `manifest` and writes the run directory.

    Args:
        cfg: the experiment.
        manifest: the dataset with its split.
        run: where to write; see `RunDir`.
        resume: continue from `checkpoints/last.keras` if it exists, in the
            phase it was in. Defaults to `False`.
        verbose: unless 0, print the model choice, each phase and a line
            per finished epoch (`imgclf.progress`). Defaults to `"auto"`.
        progress: show progress bars while decoding, and a bar per epoch
            when standard error is a terminal. Defaults to `True`.
        augment_checked: the augmentation was checked against the image
            size and channels already (`check_augment`); else it is checked
            here, before any image is decoded. Defaults to `False`.
        start: called once every check that can refuse the run has
            passed (the images are decoded), before the first file is
            written: `imgclf.train` prepares the run folder there, so a run
            refused after the scan leaves an earlier one in the folder as it
            was. Defaults to `None`.

    Returns:
        `run`, now holding `model.keras` and the files of `runs.RunDir`.
    """
    with _seeded(cfg.train.seed):
        return _fit(cfg, manifest, run, resume=resume, verbose=verbose, progress=progress,
                    augment_checked=augment_checked, start=start)


@contextlib.contextmanager
def _seeded(seed: int):
    """Seeds the global random generators (Python's, NumPy's, TensorFlow's, Keras') for training, and puts back the
    caller's Python and NumPy generators and TensorFlow's global seed afterwards: a loop that draws its own random
    settings between runs (a hyper-parameter search) would otherwise draw the same ones after every run.
    TensorFlow has no public way to read its generator's position: a global seed the caller set starts its
    sequence again."""
    import tensorflow as tf

    python, numpy, tensorflow = random.getstate(), np.random.get_state(), tf.compat.v1.get_seed(None)[0]
    keras.utils.set_random_seed(seed)
    try:
        yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy)
        tf.random.set_seed(tensorflow)


def _fit(cfg: Config, manifest: Manifest, run: RunDir, *, resume: bool, verbose, progress: bool,
         augment_checked: bool, start: Callable[[], None] | None) -> RunDir:
    classes = manifest.classes
    if len(classes) < 2:
        raise ValueError(f"Training needs at least 2 classes with usable images; found {classes}. Check the folder with `imgclf scan`.")
    resuming = resume and run.resumable
    if resuming and run.classes() != classes:
        raise RunError(f"Cannot resume {run.path}: its classes {run.classes()} differ from the dataset's {classes}.")

    choice = choose_model(cfg.model)
    default_size = None if cfg.data.image_size else default_image_size(choice.config)
    spec = resolve_image_spec(cfg.data, manifest, default_size=default_size)
    cfg = _resolve_config(cfg, choice, spec)
    augment = build_augment(cfg.augment, channels=spec.channels, seed=cfg.train.seed)
    if not augment_checked:
        check_augment(augment, (spec.height, spec.width, spec.channels), source=cfg.augment.preset)
    state = run.state() if resuming else {}
    plateau_rates = _plateau_rates(run.config()) if resuming else {}
    if resuming:
        _refuse_changed_settings(run, cfg)
        if cfg.train.epochs < state["epoch"] + 1:
            raise RunError(f"Cannot resume {run.path} with epochs={cfg.train.epochs}: it has trained "
                           f"{state['epoch'] + 1} epoch(s) already. Leave --epochs out to keep the run's own, or pass "
                           f"--epochs {state['epoch'] + 2} or more to train further.")
    if cfg.train.strategy == "multi-worker" and verbose:
        print(f"joining the cluster of TF_CONFIG ({', '.join(cluster_addresses())}): this waits until every worker "
              "has started", flush=True)
    devices = choose_devices(cfg.train.strategy, mixed_precision=cfg.train.mixed_precision)
    cfg = _batch_shared_evenly(cfg, devices, verbose=verbose)
    if resume and not devices.chief and not resuming:
        raise RunError(f"Cannot resume in {run.path}: no checkpoint of the chief there. Every worker of a multi-worker "
                       "run reads the chief's run directory, so --out must name the same folder on storage all "
                       "workers share.")
    if verbose:
        print(f"model: {cfg.model.name}" + (f" (auto: {choice.reason})" if choice.reason else "")
              + f", weights {cfg.model.weights}, input {spec.height}x{spec.width}x{spec.channels}", flush=True)
        print(devices.describe() + (f"; {devices.note}" if devices.note else ""), flush=True)
        for note in _unused_settings(cfg):
            print(f"note: {note}", flush=True)
    with devices.scope(), _out_of_memory_named(cfg, spec):
        # The model comes before the images: weights that cannot be found fail before anything is decoded.
        model = (keras.saving.load_model(run.finished_checkpoint()) if resuming
                 else build_model(cfg.model, spec, len(classes)))
    if resuming:
        _refuse_a_checkpoint_of_another_epoch(run, model, state)
    if verbose:
        for note in _phase_notes(cfg, model):
            print(f"note: {note}", flush=True)

    usable_before = {id(entry) for entry in manifest.usable}
    train_data = load_split(manifest, "train", classes, spec, data=cfg.data, progress=progress)
    val_data = load_split(manifest, "val", classes, spec, data=cfg.data, progress=progress)
    # The test images are decoded now too, so manifest.csv marks every file that cannot be
    # decoded, and evaluation later finds them in the cache.
    test_data = load_split(manifest, "test", classes, spec, data=cfg.data, progress=progress)
    if verbose:
        for line in _decode_failures(manifest, usable_before, {"train": len(train_data), "val": len(val_data),
                                                               "test": len(test_data)}):
            print(line, flush=True)
        copies = pixel_copies_across_splits([train_data, val_data, test_data])
        if copies:
            example = " and ".join(escape_name(entry.path) for entry in copies[0][:2])
            print(f"note: {len(copies):,} picture(s) are in more than one split, in files with other bytes (the same "
                  f"pixels at {spec.height}x{spec.width}; e.g. {example}): their results flatter the model. "
                  f"`imgclf audit` lists every copy; keep one file of each", flush=True)
    if resuming:
        _refuse_changed_data(run, manifest)
    if len(train_data) == 0:
        undecoded = [e for e in manifest.entries if id(e) in usable_before and e.split == "train" and not e.usable]
        if undecoded:
            raise ValueError(f"None of the {len(undecoded):,} images of the train split could be decoded "
                             f"({describe_problems(undecoded, Severity.ERROR)}; e.g. "
                             f"{escape_name(undecoded[0].path)}): check that the folder is still where it was, "
                             "and the files with `imgclf audit`.")
        raise ValueError("The train split has no usable images. Lower --val/--test or add images.")
    if devices.name == "multi-worker":
        _refuse_batches_below_replicas(cfg.train.batch_size, {"train": len(train_data), "val": len(val_data)},
                                       devices.replicas)
        with _lost_workers_named():
            refuse_disagreeing_workers(devices.strategy, {
                "images, labels or splits": manifest.data_hash,
                # Paths may differ from machine to machine (a weights file, an augmentation YAML): what they hold
                # may not, so the pipeline built from the YAML is compared, and whether there are weights.
                "training settings": [dataclasses.asdict(cfg.train), dataclasses.asdict(spec), augment_to_yaml(augment),
                                      {**dataclasses.asdict(cfg.model), "weights": cfg.model.pretrained}],
                "checkpoints to resume from": state.get("epoch", -1)})
    if devices.name == "mirrored":
        _refuse_splits_replicas_cannot_share(cfg.train.batch_size, {"train": len(train_data), "val": len(val_data)},
                                             devices.replicas)

    if start is not None:
        start()
    first_epoch, loaded_phase = state.get("epoch", -1) + 1, state.get("phase", TRAIN) if resuming else None
    restored = state.get("callbacks", {})
    # A resume that trains nothing leaves the run's files as they were: config.yaml still repeats the run.
    if devices.chief and _trains_anything(cfg, first_epoch, loaded_phase, restored):
        _write_run_files(run, cfg, classes, manifest, augment, spec, choice, devices)
        if resuming:
            forget_unfinished_epochs(run.path / "tensorboard", epoch=state["epoch"], iterations=state.get("iterations"))

    if resuming and state["epoch"] + 1 >= cfg.train.epochs and verbose:
        print(f"nothing to resume: all {state['epoch'] + 1} epoch(s) of {run.path} are done "
              "(pass --epochs N to train further)", flush=True)
    history = _finished_history(run, state["epoch"]) if resuming else []
    monitor = choose_monitor(cfg.train.monitor, len(val_data) > 0)
    if monitor != cfg.train.monitor and verbose:
        print(f"note: there is no validation split: the training loss takes the place of {cfg.train.monitor} "
              "(for the best epoch, early stopping and the plateau schedule)", flush=True)
    checkpoint = RunCheckpoint(run, monitor, best=state.get("best"), history=history, write=devices.chief)
    batches = _Batches(cfg, train_data, val_data, augment, len(classes),
                       replicas=devices.replicas if devices.name == "mirrored" else 1)
    with devices.scope(), _out_of_memory_named(cfg, spec):
        if "seed_generators" in state:
            restore_seed_generators(model, state["seed_generators"])
        try:
            _train_in_phases(model, cfg, batches, checkpoint, devices, first_epoch=first_epoch,
                             loaded_phase=loaded_phase, restored=restored, plateau_rates=plateau_rates,
                             verbose=verbose, progress=progress)
        finally:
            batches.release()

    best_path = run.checkpoints / "best.keras"
    diverged = _diverged(checkpoint.history)
    # Every worker of a cluster knows whether an epoch was kept; only the chief has the file to show it.
    kept = (best_path.exists() if devices.chief
            else any(_finite_epoch(row, checkpoint.monitor) for row in checkpoint.history))
    if diverged and not kept:
        raise TrainingDivergedError(
            f"Training diverged: {diverged}, before any epoch had a finite {checkpoint.monitor}, so no model.keras "
            f"was written in {run.path}. Train again with {_steadier(cfg.train)} and --overwrite.")
    if not devices.chief:
        return run
    if diverged and verbose:
        print(f"training stopped: {diverged}; model.keras holds the best epoch before it "
              f"(by {checkpoint.monitor}). Training with {_steadier(cfg.train)} may go further.", flush=True)
    chosen = best_path if best_path.exists() else run.checkpoints / "last.keras"
    # A resumed run that found no better epoch keeps its model.keras, and the evaluations of it.
    unchanged = run.model_path.exists() and best_path.exists() and checkpoint.best == state.get("best")
    if not unchanged:
        removed = run.remove_evaluations()  # results of the model.keras replaced below
        if removed and verbose:
            print(f"removed {' and '.join(removed)} of the previous model.keras: run "
                  f"`imgclf evaluate {shell_word(run.path)}` again", flush=True)
        if verbose and (run.path / "export").is_dir():
            print(f"{shell_word(run.path / 'export')} still holds the exports of the previous model.keras: "
                  f"`imgclf export {shell_word(run.path)}` replaces them with the new one's", flush=True)
        if devices.precision == "float32":
            with atomic_path(run.model_path) as tmp:
                shutil.copyfile(chosen, tmp)
        else:  # trained in mixed precision: model.keras computes in float32, as every run's does
            run.save_model(float32_model(keras.saving.load_model(chosen)))
    manifest.to_csv(run.manifest_path)
    return run


# Keras' `fit` and `evaluate` under MirroredStrategy average the first batch over the replicas to build the model
# (`_maybe_symbolic_build`), which fails with an AddN shape error unless every replica holds as many images.
def _batch_shared_evenly(cfg: Config, devices, *, verbose) -> Config:
    """The config with a batch size that the replicas of `mirrored` share evenly (rounded up, with a note)."""
    replicas = devices.replicas
    if devices.name != "mirrored" or cfg.train.batch_size % replicas == 0:
        return cfg
    shared = -(-cfg.train.batch_size // replicas) * replicas
    if verbose:
        print(f"note: batch size {cfg.train.batch_size} rounded up to {shared}, so that each of the {replicas} "
              f"replicas gets {shared // replicas} images of a batch", flush=True)
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=shared))


def _refuse_splits_replicas_cannot_share(batch_size: int, split_sizes: dict[str, int], replicas: int) -> None:
    """Raises `ValueError` before training if the first batch of a split cannot be shared evenly: a split of less
    than one batch that is not a multiple of the replicas, or one whose short last batch `ImageBatches` could only
    move into a first batch of as many images as replicas."""
    for split, size in split_sizes.items():
        if 0 < size < batch_size and size % replicas:
            raise ValueError(f"Mirrored training shares each batch evenly among its {replicas} replicas, but the "
                             f"{split} split holds {size} image(s), less than one batch and not a multiple of "
                             f"{replicas}. " + ("Pass --val 0, or a larger --val." if split == "val"
                                                else "Add images, or lower --val/--test."))
        if batch_size < 2 * replicas and batch_size < size < 2 * batch_size and size % replicas:
            raise ValueError(f"Mirrored training shares each batch evenly among its {replicas} replicas: the {split} "
                             f"split of {size} images needs a --batch-size of at least {2 * replicas}. Received: "
                             f"--batch-size {batch_size}")


@contextlib.contextmanager
def _lost_workers_named():
    """A collective that failed because another worker stopped (killed, or refused after joining) as one line."""
    import tensorflow as tf

    try:
        yield
    except (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError):
        raise RunError(f"A worker of the cluster ({', '.join(cluster_addresses())}) stopped answering, so this one "
                       "stopped too: see that worker's own output for why, then start every worker again with the "
                       "same command and --resume (the run continues from its last finished epoch).") from None


def _refuse_batches_below_replicas(batch_size: int, split_sizes: dict[str, int], replicas: int) -> None:
    """Raises `ValueError` before training if a batch could leave a replica of the cluster without an image."""
    if batch_size < replicas:
        raise ValueError(f"Multi-worker training splits each batch across its {replicas} replicas: pass a --batch-size "
                         f"of at least {replicas}. Received: --batch-size {batch_size}")
    for split, size in split_sizes.items():
        if 0 < size < replicas:
            raise ValueError(f"Multi-worker training splits each batch across its {replicas} replicas, but the {split} "
                             f"split holds {size} image(s). " + ("Pass --val 0, or a larger --val." if split == "val"
                                                                 else "Add images, or lower --val/--test."))


def _steadier(train: TrainConfig) -> str:
    """The settings that can make a loss diverge, as advice: "a lower learning rate (--lr)", and any others given."""
    others = [f"--{name.replace('_', '-')} (now {value:g})" for name, value in
              (("weight_decay", train.weight_decay), ("momentum", train.momentum)) if value]
    return "a lower learning rate (--lr)" + "".join(f" or a smaller {other}" for other in others)


def _unused_settings(cfg: Config) -> list[str]:
    """Settings that were given but do not apply to this model (they are kept in config.yaml as given)."""
    defaults, notes = Config(), []
    if cfg.model.name != "mlp" and cfg.model.hidden != defaults.model.hidden:
        notes.append(f"hidden={list(cfg.model.hidden)} applies to the mlp model only; {cfg.model.name} ignores it")
    if not _fine_tuned(cfg):
        given = [f"{key}={getattr(cfg.train, key)!r}" for key in ("freeze_epochs", "unfreeze", "fine_tune_lr")
                 if getattr(cfg.train, key) != getattr(defaults.train, key)]
        if given:
            notes.append(f"{', '.join(given)}: fine-tuning phases apply to a pretrained backbone only; "
                         f"{cfg.model.name} without pretrained weights trains every layer in one phase")
    return notes


def _phase_notes(cfg: Config, model) -> list[str]:
    """What the fine-tuning phases make of settings beyond what the run and the backbone hold."""
    if not _fine_tuned(cfg):
        return []
    notes, train = [], cfg.train
    if train.freeze_epochs is not None and train.freeze_epochs >= train.epochs and train.unfreeze != "none":
        default = (" (the default: a fifth of the epochs, at least 1)"
                   if train.freeze_epochs == default_freeze_epochs(train.epochs) else "")
        notes.append(f"freeze_epochs={train.freeze_epochs}{default} is not below epochs={train.epochs}: every epoch "
                     "trains the head only, and the backbone is never fine-tuned")
    if isinstance(train.unfreeze, int):
        backbone = get_backbone(cfg.model.name)
        count = len(backbone.blocks(find_backbone_layer(model))) - 1  # the stem is not a block
        if train.unfreeze > count:
            notes.append(f"unfreeze={train.unfreeze} is more than the {count} blocks of {cfg.model.name}: "
                         "fine-tuning trains all of them")
    return notes


def _decode_failures(manifest: Manifest, usable_before: set[int], sizes: dict[str, int]) -> list[str]:
    """What decoding took out of the scan's counts: files whose header passed the scan but whose pixels do not
    decode (cut short, corrupt), the splits that remain, and the classes left too small by it."""
    failed = [entry for entry in manifest.entries if id(entry) in usable_before and not entry.usable]
    if not failed:
        return []
    described = describe_problems(failed, Severity.ERROR)
    lines = [f"{len(failed):,} more file(s) could not be decoded and are left out ({described}): training uses "
             + ", ".join(f"{split} {n:,}" for split, n in sizes.items()) + " images"]
    return lines + [f"note: {note}" for note in class_size_notes(manifest) if note not in manifest.notes]


def _diverged(history: list[dict]) -> str:
    """Says where the loss first became NaN or infinite, e.g. "the loss became NaN in epoch 3 (learning rate 0.5)";
    empty if it never did."""
    for row in history:
        for key in ("loss", "val_loss"):
            value = float(row.get(key, 0) or 0)
            if not math.isfinite(value):
                rate = f" (learning rate {float(row['learning_rate']):g})" if row.get("learning_rate") not in (None, "") else ""
                return f"the {key} became {'NaN' if math.isnan(value) else 'infinite'} in epoch {int(row['epoch']) + 1}{rate}"
    return ""


def _write_run_files(run: RunDir, cfg: Config, classes, manifest: Manifest, augment, spec: ImageSpec,
                     choice: ModelChoice, devices: Devices) -> None:
    backbone = get_backbone(cfg.model.name)
    model_record = {"name": cfg.model.name, "requested": "auto" if choice.reason else cfg.model.name, "reason": choice.reason,
                    "weights": describe_weights(backbone, cfg.model.weights, spec) if backbone else {"source": "none"}}
    run.write_config(cfg)
    run.write_classes(classes)
    manifest.to_csv(run.manifest_path)
    write_text(run.path / "augment.yaml", augment_to_yaml(augment))
    run.write_environment(seeds={"split": cfg.data.seed, "train": cfg.train.seed}, data_hash=manifest.data_hash,
                          extra={"image_spec": dataclasses.asdict(spec), "model": model_record, "devices": _devices(),
                                 "strategy": {"name": devices.name, "devices": devices.devices,
                                              "replicas": devices.replicas, "workers": devices.workers},
                                 "precision": {"policy": devices.precision, "note": devices.note},
                                 "sampler": cfg.train.sampler})


@dataclasses.dataclass
class _Batches:
    """What every phase fits on: the decoded splits and how to batch them."""

    cfg: Config
    train: SplitImages
    val: SplitImages
    augment: object
    num_classes: int
    replicas: int = 1  # of MirroredStrategy, which batches must leave no device without an image
    made: list = dataclasses.field(default_factory=list)

    @property
    def _one_hot(self) -> int | None:
        return self.num_classes if self.cfg.train.label_smoothing else None

    def training(self, epoch: int) -> ImageBatches:
        augmenting = self.cfg.augment.preset != "none"
        return self._made(ImageBatches(self.train, batch_size=self.cfg.train.batch_size, shuffle=True,
                                       augment=self.augment if augmenting else None, seed=self.cfg.train.seed,
                                       workers=min(4, default_workers()) if augmenting else 1, epoch=epoch,
                                       sampler=self.cfg.train.sampler, one_hot=self._one_hot, replicas=self.replicas))

    def validation(self) -> ImageBatches | None:
        if not len(self.val):
            return None
        return self._made(ImageBatches(self.val, batch_size=self.cfg.train.batch_size, one_hot=self._one_hot,
                                       replicas=self.replicas))

    def _made(self, batches: ImageBatches) -> ImageBatches:
        self.made.append(batches)
        return batches

    def release(self) -> None:
        """Lets go of the images of every `ImageBatches` made (see `ImageBatches.release`)."""
        for batches in self.made:
            batches.release()


def _train_in_phases(model, cfg: Config, batches: _Batches, checkpoint: RunCheckpoint, devices: Devices, *,
                     first_epoch: int, loaded_phase: str | None, restored: dict, plateau_rates: dict[str, float],
                     verbose, progress: bool) -> None:
    """Runs `model.fit` (`distributed.fit_epochs` on a multi-worker cluster) once per phase of `plan_phases`,
    from `first_epoch` on.

    A phase starts by choosing the trainable layers and compiling with its
    learning rate, unless the model was loaded in that phase (a resumed
    run), whose compiled optimizer state is kept, and whose schedule and
    early-stopping counters are taken from `restored`. The loaded phase goes
    on from the rate its plateaus left only if it trained under `plateau`
    from the same rate (`plateau_rates`, from `_plateau_rates`).
    """
    class_weight = _class_weights(batches.train, model.output_shape[-1]) if cfg.train.class_weight else None
    for phase in plan_phases(cfg, pretrained_backbone=_fine_tuned(cfg)):
        start = max(first_epoch, phase.start)
        if start >= phase.end:
            continue
        restored_here = restored if phase.name == loaded_phase else {}
        waited = _early_stopping_ended(cfg, phase, loaded_phase, restored)
        if waited is not None:
            if verbose:
                print(f"nothing to resume in phase {phase.name}: early stopping ends it after epoch {start} "
                      f"({waited} epoch(s) without a better {checkpoint.monitor}, patience {cfg.train.patience}); "
                      "pass a larger --patience to train it further", flush=True)
            continue
        plateaus_go_on = (phase.name == loaded_phase and cfg.train.schedule == "plateau"
                          and _same_rate(plateau_rates.get(phase.name, math.nan), phase.learning_rate))
        if phase.name != loaded_phase:
            _enter_phase(model, phase, cfg)
        elif cfg.train.schedule == "constant" or (cfg.train.schedule == "plateau" and not plateaus_go_on):
            # No callback sets the rate as an epoch starts: the checkpoint's would stay, not --lr's.
            model.optimizer.learning_rate = phase.learning_rate
        if verbose:
            lowered = ""
            if plateaus_go_on:  # the rate the plateaus left
                current = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
                lowered = f" (resuming at {current:g})" if not _same_rate(current, phase.learning_rate) else ""
            print(f"phase {phase.name}: epochs {start + 1}-{phase.end} of {cfg.train.epochs}, {_trains(phase)}, "
                  f"learning rate {phase.learning_rate:g}{lowered}" + _scheduled(cfg.train, checkpoint.monitor),
                  flush=True)
        checkpoint.phase = phase.name
        training = batches.training(start)
        callbacks = _callbacks(cfg, phase, batches, checkpoint, training, restored_here, verbose=verbose,
                               progress=progress)
        with _augment_errors_unwrapped(), retracing_expected():
            if devices.name == "multi-worker":
                with _lost_workers_named():
                    fit_epochs(model, training, batches.validation(), strategy=devices.strategy, epochs=phase.end,
                               initial_epoch=start, callbacks=callbacks, class_weight=class_weight)
            else:
                if devices.name != "mirrored":  # Keras builds them itself under a strategy
                    _build_state_before_tracing(model, training)
                # shuffle=False: the batches shuffle themselves, seeded by the epoch; Keras' own shuffling of the
                # batch order draws from the global random state, which a resumed process does not share.
                model.fit(training, validation_data=batches.validation(), epochs=phase.end, initial_epoch=start,
                          class_weight=class_weight, callbacks=callbacks, verbose=0, shuffle=False)
        if checkpoint.history and not math.isfinite(float(checkpoint.history[-1].get("loss", 0))):
            break  # StopOnNaN stopped the run; a later phase would start from the same broken weights
        stopping = checkpoint.stateful.get("early_stopping")
        if verbose and stopping is not None and 0 < stopping.stopped_epoch < phase.end - 1:
            print(f"phase {phase.name} stopped early after epoch {stopping.stopped_epoch + 1}: no better "
                  f"{checkpoint.monitor} in {cfg.train.patience} epoch(s) (best: epoch {stopping.best_epoch + 1})",
                  flush=True)


def _early_stopping_ended(cfg: Config, phase: Phase, loaded_phase: str | None, restored: dict) -> int | None:
    """The epochs a resumed run's `phase` waited for a better monitored value, where they are enough for early
    stopping to end it (as Keras' `EarlyStopping` would); else `None`."""
    if phase.name != loaded_phase or not cfg.train.patience:
        return None
    waited = (restored.get("early_stopping") or {}).get("wait", 0)
    return waited if waited >= cfg.train.patience else None


def _trains_anything(cfg: Config, first_epoch: int, loaded_phase: str | None, restored: dict) -> bool:
    """Whether `_train_in_phases` has an epoch left to train, from `first_epoch` on."""
    return any(max(first_epoch, phase.start) < phase.end and _early_stopping_ended(cfg, phase, loaded_phase, restored) is None
               for phase in plan_phases(cfg, pretrained_backbone=_fine_tuned(cfg)))


def _plateau_rates(saved: Config) -> dict[str, float]:
    """The learning rate each phase of a run started from, if the run trained under the `plateau` schedule (a
    resumed phase goes on from the rate its plateaus left only under the same schedule and rate); else empty."""
    if saved.train.schedule != "plateau":
        return {}
    return {phase.name: phase.learning_rate for phase in plan_phases(saved, pretrained_backbone=_fine_tuned(saved))}


def _same_rate(a: float, b: float) -> bool:
    """Learning rates equal but for float32 rounding (the optimizer keeps its rate in float32)."""
    return math.isclose(a, b, rel_tol=1e-6)


def _build_state_before_tracing(model, training: ImageBatches) -> None:
    """Creates the optimizer's, the loss's and the metrics' variables before `fit` traces its train step.

    Outside a distribution strategy Keras leaves them to the first trace of
    the step, and TensorFlow traces a function that created variables a
    second time: the seconds before the first batch double, over 10 s for a
    backbone on a CPU. One image of a real batch builds them here, in
    inference mode; the metrics it counted are reset, as `fit` resets them
    every epoch.
    """
    images, labels = training[0]
    images, labels = images[:1], labels[:1]
    predicted = model(images, training=False)
    model.compute_loss(x=images, y=labels, y_pred=predicted)
    model.compute_metrics(images, labels, predicted)
    if not model.optimizer.built:  # a resumed model's was built as it loaded
        model.optimizer.build(model.trainable_variables)
    model.reset_metrics()


@contextlib.contextmanager
def _out_of_memory_named(cfg: Config, spec: ImageSpec):
    """TensorFlow's out-of-memory error (a traceback of many lines) as one `TrainingOutOfMemoryError` with the fix."""
    import tensorflow as tf

    try:
        yield
    except (tf.errors.ResourceExhaustedError, MemoryError) as error:
        found = re.search(r"tensor with shape\s*\[[\d,]*\]", str(error))
        raise TrainingOutOfMemoryError(
            f"Out of memory training {cfg.model.name} on {spec.height}x{spec.width}x{spec.channels} images in batches "
            f"of {cfg.train.batch_size}" + (f" (allocating a {found[0]})" if found else "")
            + ". Pass a smaller --image-size or --batch-size"
            + (", or smaller --hidden widths." if cfg.model.name == "mlp" else ".")) from None


@contextlib.contextmanager
def _augment_errors_unwrapped():
    """An `AugmentError` raised while a batch is made (a transform that, now and then, changes the size) reaches
    the caller as itself: TensorFlow wraps it in a graph error of many lines, with the message inside."""
    try:
        yield
    except AugmentError:
        raise
    except Exception as error:
        found = re.search(r"AugmentError: (.+)", str(error))
        if not found:
            raise
        raise AugmentError(found[1]) from None


def _callbacks(cfg: Config, phase: Phase, batches: _Batches, checkpoint: RunCheckpoint, training: ImageBatches,
               restored: dict, *, verbose, progress: bool) -> list[keras.callbacks.Callback]:
    """The callbacks of one phase, in the order Keras must call them at the end of an epoch.

    Keras hands one `logs` dict to each callback in turn: validation macro-F1
    is added first, so the schedule, early stopping and the checkpoint can
    watch it; the plateau schedule and early stopping update their counters
    before the checkpoint saves them; the progress line comes last.
    """
    monitor = checkpoint.monitor
    callbacks: list[keras.callbacks.Callback] = []
    if monitor == "val_macro_f1":
        callbacks.append(ValidationMacroF1(batches.val, batches.validation()))
    if checkpoint.write:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(checkpoint.run.path / "tensorboard"),
                                                     write_graph=False, profile_batch=0, update_freq="epoch"))
    callbacks += schedule_callbacks(cfg.train, phase, monitor)
    if cfg.train.patience:
        callbacks.append(ResumableEarlyStopping(monitor=monitor, mode=monitor_mode(monitor), patience=cfg.train.patience))
    checkpoint.stateful = {}
    for callback in callbacks:
        if hasattr(callback, "restore"):
            name = "early_stopping" if isinstance(callback, ResumableEarlyStopping) else "schedule"
            callback.restore(restored.get(name))
            checkpoint.stateful[name] = callback
    callbacks += [checkpoint, StopOnNaN()]
    if verbose:
        callbacks.append(EpochProgress(epochs=cfg.train.epochs, phase=phase.name, images_per_epoch=training.images_per_epoch,
                                       batch_size=cfg.train.batch_size, bar=None if progress else False))
    return callbacks


def _scheduled(train: TrainConfig, monitor: str) -> str:
    if train.schedule == "cosine":
        return f", cosine schedule ({train.warmup_epochs} warm-up epoch(s))" if train.warmup_epochs else ", cosine schedule"
    if train.schedule == "step":
        return f", times {train.lr_factor:g} every {train.lr_step_epochs} epoch(s)"
    if train.schedule == "plateau":
        return f", times {train.lr_factor:g} after {train.lr_patience} epoch(s) without a better {monitor}"
    return ""


def _trains(phase: Phase) -> str:
    if phase.unfreeze is None:
        return "every layer trains"
    if phase.unfreeze == "none":
        return "backbone frozen, the head trains"
    blocks = "every block" if phase.unfreeze == "all" else f"the top {phase.unfreeze} block(s)"
    return f"the head and {blocks} of the backbone train (batch norm frozen)"


def _enter_phase(model, phase: Phase, cfg: Config) -> None:
    """Sets the phase's trainable layers and compiles with its learning rate (a fresh optimizer)."""
    if phase.unfreeze is not None:
        set_trainable(model, get_backbone(cfg.model.name), phase.unfreeze)
    model.compile(optimizer=_optimizer(cfg.train, phase.learning_rate), loss=_loss(cfg.train), metrics=["accuracy"])


# Settings that do not change what a run learns, so a resumed run may use others.
_FREE_ON_RESUME = {("data", "workers"), ("data", "cache_dir")}
# Training settings the saved checkpoint is built for (its compiled loss and optimizer, its layers' number format),
# the metric its best epoch and early-stopping counter were measured by, what the loss weighs and draws, and the
# phase plan of fine-tuning (which epochs train which layers, at which rate; the checkpoint's trainable layers).
_FIXED_ON_RESUME = {("train", "label_smoothing"), ("train", "mixed_precision"), ("train", "optimizer"),
                    ("train", "momentum"), ("train", "weight_decay"), ("train", "monitor"), ("train", "class_weight"),
                    ("train", "sampler"), ("train", "freeze_epochs"), ("train", "unfreeze"), ("train", "fine_tune_lr")}


def _refuse_changed_settings(run: RunDir, cfg: Config) -> None:
    """Raises `RunError` if the data, model, augmentation, loss, optimizer, monitor, class weighting, sampler,
    precision or fine-tuning phase settings differ from the run's own."""
    # A run started before paths were recorded absolute: its relative ones are taken from the current folder.
    saved, new = with_absolute_paths(run.config()).to_dict(), cfg.to_dict()
    for section in ("data", "model", "augment", "train"):
        for key, value in saved[section].items():
            fixed = (section, key) in _FIXED_ON_RESUME or (section != "train" and (section, key) not in _FREE_ON_RESUME)
            if fixed and new[section][key] != value:
                raise RunError(
                    f"Cannot resume {run.path} with {section}.{key}={new[section][key]!r}: the run was started with "
                    f"{section}.{key}={value!r}. Resume without changing it, or start a new run (--overwrite or another --out)."
                )


def _refuse_changed_data(run: RunDir, manifest: Manifest) -> None:
    """Raises `RunError` if the images, labels or splits differ from those the run started on."""
    started_on = read_json(run.environment_path).get("data_hash") if run.environment_path.exists() else None
    if started_on and started_on != manifest.data_hash:
        raise RunError(
            f"Cannot resume {run.path}: its images, labels or splits changed since it started (data hash "
            f"{started_on[:12]}, now {manifest.data_hash[:12]}). Start a new run (--overwrite or another --out)."
        )


def _devices() -> list[str]:
    import tensorflow as tf

    return [device.name for device in tf.config.list_logical_devices()]

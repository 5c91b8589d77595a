"""imgclf: a folder of your own images in, a trained and evaluated image classifier out.

Example:

```python
import imgclf
m = imgclf.scan("photos/", val=0.15, test=0.15, seed=0)
run = imgclf.train(m, model="cnn", epochs=10, out="runs/photos")
ev = imgclf.evaluate(run, split="test")
print(ev.error_rate, ev.confusion_matrix)
imgclf.report(run, ev)
```

Importing imgclf does not import TensorFlow; the functions that need it import it.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["scan", "audit", "train", "evaluate", "report", "compare", "predict", "load", "export", "list_models",
           "augment_preview", "Config", "load_config", "Manifest", "RunDir"]


def __getattr__(name):
    # Classes are imported on first use so that `import imgclf` stays light.
    if name in ("Config", "load_config"):
        from . import config

        return getattr(config, name)
    if name == "Manifest":
        from .manifest import Manifest

        return Manifest
    if name == "RunDir":
        from .runs import RunDir

        return RunDir
    raise AttributeError(f"module 'imgclf' has no attribute {name!r}")


def scan(root, *, val: float = 0.15, test: float = 0.15, seed: int = 0, limits=None, workers: int | None = None,
         progress: bool = True, cache_spec=None, cache_dir=None):
    """Scans a folder (or a `path,label` CSV) into a `Manifest` with a stable stratified split.

    See `imgclf.manifest.scan` for the layouts accepted and the arguments;
    `limits` is an `imgclf.images.ImageLimits`, `None` for the defaults.
    With `cache_spec` (an `imgclf.config.ImageSpec`), each file is also
    decoded to that spec while it is read, for the decoded-image cache in
    `cache_dir`, so that training at that spec opens no file again.

    Example:

    >>> m = imgclf.scan("photos/", val=0.15, test=0.15, seed=0)
    >>> m.classes
    ['cat', 'dog']
    """
    import os

    from .images import ImageLimits
    from .manifest import scan as scan_folder

    if not isinstance(root, (str, os.PathLike)):
        raise TypeError("root must be a folder with one subfolder per class, or a CSV of path,label rows: one path. "
                        f"Received: root={root!r}")

    return scan_folder(root, val=val, test=test, seed=seed, limits=limits or ImageLimits(), workers=workers,
                       progress=progress, cache_spec=cache_spec, cache_dir=cache_dir)


def train(data, *, out, config=None, resume: bool = False, overwrite: bool = False, strict: bool = False,
          verbose="auto", progress: bool = True, **options):
    """Trains a model and writes a run directory.

    Args:
        data: a `Manifest`, or a folder/CSV to scan with the config's split.
        out: the run directory to write, e.g. `"runs/flowers"`.
        config: a `Config`, a YAML file, a dict of its sections (as
            `config.yaml` holds them), or `None` for the defaults.
            Defaults to `None`.
        resume: continue a killed run from its last checkpoint, with the
            settings saved in its `config.yaml` (options may change the
            number of epochs, not the data, model or augmentation).
            Defaults to `False`.
        overwrite: replace an earlier run at `out`, finished or stopped
            (only the files a run writes are removed). Without it, such a
            folder is refused. Defaults to `False`.
        strict: decode every file first (`imgclf.audit`) and refuse to train
            if any has an error. Without it, bad files are reported and
            left out. Defaults to `False`.
        verbose: unless 0, the class table, the model chosen, each phase
            and one line per finished epoch are printed (Keras' own progress
            bar never is). Defaults to `"auto"`.
        progress: show progress bars while scanning and decoding, and a bar
            per epoch when standard error is a terminal. Defaults to `True`.
        **options: flat overrides of the config, e.g. `model="mlp"`,
            `epochs=3`, `augment="light"`, `seed=1`, `weights="imagenet"`,
            `freeze_epochs=2`, `unfreeze=3`, `fine_tune_lr=1e-4`,
            `schedule="cosine"`, `warmup_epochs=2`, `label_smoothing=0.1`,
            `weight_decay=0.01`, `momentum=0.0`, `monitor="val_macro_f1"`,
            `sampler="balanced"`, `mixed_precision=True`,
            `strategy="mirrored"`, `augment="my-augment.yaml"`, `flip=False`,
            `resize="pad"` (see `imgclf.config.TrainConfig` for what
            each means and `imgclf.config.OPTION_KEYS` for the full list).

    Returns:
        The `RunDir`, holding `model.keras`, `history.csv`, `manifest.csv`, ...

    Example:

    >>> run = imgclf.train("data/digits", model="cnn", epochs=10, out="runs/digits")
    >>> run = imgclf.train("photos/", model="efficientnet_b0", weights="imagenet", out="runs/photos")
    """
    import random

    callers = random.getstate()  # importing Keras the first time draws from Python's generator
    try:
        return _train(data, out=out, config=config, resume=resume, overwrite=overwrite, strict=strict,
                      verbose=verbose, progress=progress, **options)
    finally:
        random.setstate(callers)


def _train(data, *, out, config, resume: bool, overwrite: bool, strict: bool, verbose, progress: bool, **options):
    import dataclasses
    import os

    from .augment import build_augment, check_augment, is_augment_file, pin_augment
    from .config import Config, as_config, load_config, with_options
    from .manifest import Manifest, class_name, class_size_notes
    from .runs import RunDir
    from .pipeline import limits_of
    from .strategy import is_chief
    from .training import check_choices, fit, with_absolute_paths

    _check_paths(data, out)
    if resume and overwrite:
        raise ValueError("resume and overwrite contradict each other: --resume continues the run in --out, "
                         "--overwrite replaces it. Pass one of them.")
    if config is None:
        saved = RunDir(out).config_path  # a resumed run keeps its own settings
        config = load_config(saved) if resume and saved.exists() else Config()
    else:
        config = as_config(config)
    cfg = with_absolute_paths(with_options(config, **options))
    run = RunDir(out)
    # A YAML augmentation file is recorded with its hash: a resumed or repeated run refuses one edited since.
    kept = run.path / "augment.yaml" if resume and run.resumable else None
    cfg = dataclasses.replace(cfg, augment=pin_augment(cfg.augment, kept=kept))
    if kept is not None and verbose and is_augment_file(cfg.augment.preset) and not os.path.lexists(cfg.augment.preset):
        print(f"note: {cfg.augment.preset} is gone: the run goes on with the pipeline it recorded, {kept}", flush=True)
    check_choices(cfg, resuming=resume and run.resumable)
    spec = _spec_before_scan(cfg)
    # The channels of color_mode "auto" are known after the scan: then training checks the pipeline before decoding.
    augment_checked = spec is not None and cfg.data.color_mode != "auto"
    if augment_checked:
        check_augment(build_augment(cfg.augment, channels=spec.channels), (spec.height, spec.width, spec.channels),
                      source=cfg.augment.preset)
    if resume and run.resumable and options.get("epochs") is None:
        # epochs from a config file, below what the run has trained since: the run's own count is meant
        done = run.state()["epoch"] + 1
        cfg = with_options(cfg, epochs=max(cfg.train.epochs, done))
    if not (resume and run.resumable) and not (cfg.train.strategy == "multi-worker" and not is_chief()):
        run.check_start(overwrite=overwrite)  # a wrong --out fails before the folder is scanned
    _refuse_a_run_inside(data.root if isinstance(data, Manifest) else data, out)
    if isinstance(data, Manifest):
        cfg = _with_the_split_of(data, cfg, options, verbose=verbose)
        # Files that fail to decode are flagged on a copy: the caller's manifest stays as it was, to train on again.
        data = dataclasses.replace(data, entries=[dataclasses.replace(e) for e in data.entries], notes=list(data.notes))
    limits = limits_of(cfg.data)
    if isinstance(data, Manifest):  # perhaps edited or built in Python: checked and described as a scan would be
        for entry in data.entries:
            entry.label = class_name(entry.label) if isinstance(entry.label, str) else entry.label
        data.check_entries()
        _hash_again_what_changed(data, limits, workers=cfg.data.workers, progress=progress)
        data.note_leaks()
        data.notes += [note for note in class_size_notes(data) if note not in data.notes]
    else:
        # When the size and colour mode the model sees do not depend on the images, the scan decodes them
        # into the cache as it reads them: each file is read once.
        data = scan(data, val=cfg.data.val, test=cfg.data.test, seed=cfg.data.seed, limits=limits,
                    workers=cfg.data.workers, progress=progress, cache_spec=spec,
                    cache_dir=cfg.data.cache_dir)
    if strict:
        _refuse_errors(audit(data, limits=limits, workers=cfg.data.workers, progress=progress).manifest)
    if verbose:
        print(data.summary(), flush=True)  # flushed: Keras' epoch lines follow on the same stream
    if cfg.train.strategy == "multi-worker" and not is_chief():
        # The chief of the cluster alone writes (and locks) the run directory; the other workers only read it to resume.
        return fit(cfg, data, run, resume=resume, verbose=verbose, progress=progress, augment_checked=augment_checked)
    with run.lock():
        fresh = not (resume and run.resumable)
        if fresh and resume and verbose:
            print(f"nothing to resume in {run.path} (no finished epoch): a new run starts", flush=True)

        def start() -> None:  # after every check that can refuse the run: an earlier run is removed only then
            if fresh:
                run.start(overwrite=overwrite)
            else:
                run.settle_checkpoint()
            run.remove_temporaries()

        return fit(cfg, data, run, resume=resume, verbose=verbose, progress=progress, augment_checked=augment_checked,
                   start=start)


def _hash_again_what_changed(manifest, limits, *, workers, progress: bool) -> None:
    """Hashes again the files of `manifest` changed since its scan, and those it has no hash (or size) for.

    A file rewritten since the scan would be decoded into the cache under
    its old hash, and served to any folder holding the old content. Files
    gone are left to the decoding, whose error says where the folder went. A
    `Manifest` built in Python, never scanned, has its unhashed entries read
    as a scan reads them.
    """
    import math
    import os

    if manifest.hashed_at is None:
        unhashed = [entry for entry in manifest.usable if not entry.sha1]
        if unhashed:
            manifest.recheck_changed(math.inf, entries=unhashed, limits=limits, workers=workers, progress=progress)
        return
    hashes = {id(entry): entry.sha1 for entry in manifest.entries}
    present = [entry for entry in manifest.usable if os.path.lexists(entry.path)]
    checked = manifest.recheck_changed(manifest.hashed_at, limits=limits, workers=workers, progress=progress,
                                       entries=present, note=False)
    changed = [entry for entry in checked if entry.sha1 != hashes[id(entry)] or not entry.usable]
    if changed:
        manifest.staged = None  # the scan's decoded pixels are of the old content
        manifest.notes.append(f"{len(changed):,} file(s) changed since the scan and were hashed again: "
                              f"{sum(e.usable for e in changed):,} with other content, "
                              f"{sum(not e.usable for e in changed):,} unreadable and left out")


def _check_paths(data, out) -> None:
    """Raises `TypeError` for a `data` or an `out` that is not a path (or, for `data`, a `Manifest`)."""
    import os

    from .manifest import Manifest

    if not isinstance(data, (str, os.PathLike, Manifest)):
        raise TypeError("data must be a folder with one subfolder per class, a CSV of path,label rows, or the Manifest "
                        f"imgclf.scan returns. Received: data={data!r}")
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be the path of the run folder to write, e.g. out='runs/NAME'. Received: out={out!r}")


def _with_the_split_of(manifest, cfg, options: dict, *, verbose):
    """The config with the split settings a Manifest was made with, which are what the run records; `val` or `test`
    options that would split it otherwise are refused."""
    from .config import ConfigError

    settings = manifest.split_settings
    given = [key for key in ("val", "test")
             if options.get(key) is not None and (settings is None or options[key] != settings[key])]
    if given:
        raise ConfigError(f"{' and '.join(given)} cannot apply to a manifest: its images are split already. Pass them "
                          "to imgclf.scan (imgclf scan --val/--test), or train on the folder instead.")
    if settings is None:
        if verbose:
            print("note: the splits are the manifest's own, which config.yaml's data.val, data.test and data.seed do "
                  "not describe: --manifest RUN/manifest.csv with --config RUN/config.yaml repeats this run", flush=True)
        return cfg
    return cfg.replace(data=settings)


def _refuse_a_run_inside(data, out) -> None:
    """A run folder inside the dataset would be scanned as a class (of its own figures) the next time."""
    import os

    from .files import escape_name, is_inside

    if isinstance(data, (str, os.PathLike)) and os.path.isdir(data) and is_inside(out, data):
        raise ValueError(f"The run folder {escape_name(os.fspath(out))} is inside the dataset {escape_name(os.fspath(data))}: "
                         "the next scan would read it as a class. Choose an --out outside it, e.g. runs/NAME.")


def _spec_before_scan(cfg):
    """The image spec training will decode to, if the config alone decides it; else `None`.

    The size is the config's or the chosen backbone's (the median size of
    the images, for a network trained from scratch, is known only after the
    scan). With `color_mode="auto"` the images are staged in RGB: a
    grayscale spec is served from the first channel of images stored in
    gray (`cache.StagedImages`).
    """
    from .config import ImageSpec
    from .models import choose_model, default_image_size

    size = cfg.data.image_size or default_image_size(choose_model(cfg.model).config)
    if size is None:
        return None
    return ImageSpec(int(size[0]), int(size[1]), 1 if cfg.data.color_mode == "grayscale" else 3, cfg.data.resize)


def augment_preview(data, *, out=None, config=None, n: int = 8, versions: int = 5, zoom: int | None = None,
                    progress: bool = True, **options):
    """Draws training images and augmented versions of each, at the size the model sees; see `imgclf.preview`.

    Takes the options of `imgclf.train` (`augment` a preset or a YAML
    file, `flip`, `image_size`, `resize`, `seed`, ...) and returns a
    `Preview` whose `image` is the grid, written to `out` when given.

    Example:

    >>> preview = imgclf.augment_preview("data/digits", augment="light", flip=False, out="preview.png")
    >>> print(preview.summary())
    """
    from .preview import augment_preview as draw

    return draw(data, out=out, config=config, n=n, versions=versions, zoom=zoom, progress=progress, **options)


def _refuse_errors(manifest) -> None:
    from .files import escape_name
    from .manifest import DatasetError

    bad = [e for e in manifest.entries if not e.usable]
    if bad:
        raise DatasetError(
            f"{len(bad):,} of {len(manifest):,} files have errors (strict), e.g. {escape_name(bad[0].path)}: {bad[0].problem}. "
            "Run `imgclf audit` for the list, or train without --strict to leave them out."
        )


def audit(data, *, out=None, quarantine=None, limits=None, val: float = 0.15, test: float = 0.15, seed: int = 0,
          workers: int | None = None, progress: bool = True):
    """Decodes every image and reports every bad file; see `imgclf.auditing.audit`.

    Example:

    >>> result = imgclf.audit("photos/", out="audit/")
    >>> print(result.summary())
    """
    from .auditing import audit as audit_files
    from .images import ImageLimits

    return audit_files(data, out=out, quarantine=quarantine, limits=limits or ImageLimits(), val=val, test=test,
                       seed=seed, workers=workers, progress=progress)


def evaluate(run, split: str | None = None, *, data=None, progress: bool = True):
    """Evaluates a run's model on a split (by default the run's `eval.split`, `"test"` unless its config says
    otherwise), or on another folder of the same classes.

    Writes the numbers to `eval/<split>/` (`eval/<folder name>/` with `data`);
    see `imgclf.evaluation.evaluate`. `imgclf.report` draws them.

    Example:

    >>> ev = imgclf.evaluate("runs/photos", split="test")
    >>> ev.error_rate, ev.error_rate_interval
    >>> ev = imgclf.evaluate("runs/photos", data="photos-2025/")
    """
    import os

    from .evaluation import evaluate as evaluate_run

    if data is not None and not isinstance(data, (str, os.PathLike)):
        raise TypeError("data must be the path of a folder with one subfolder per class, or of a CSV of path,label "
                        f"rows. Received: data={data!r}")
    if data is not None and split is not None:
        raise ValueError(f"split={split!r} and data contradict each other: data evaluates every image of its folder. "
                         "Pass one of them.")
    return evaluate_run(run, split, data=data, progress=progress)


def report(run, evaluation=None, *, html: bool = True):
    """Draws an evaluation's pictures and writes the run's self-contained `report.html`.

    With `evaluation=None` only the page is (re)written, from the files the
    run already holds; see `imgclf.reporting.report`. Returns the files written.

    Example:

    >>> imgclf.report(run, imgclf.evaluate(run))   # figures in eval/test/, then RUN/report.html
    """
    from .reporting import report as write

    return write(run, evaluation, html=html)


def compare(runs, *, out=None, html: bool = False):
    """A side-by-side table of runs' settings and results; see `imgclf.reporting.comparison.compare`.

    Example:

    >>> table = imgclf.compare(["runs/a", "runs/b"], out="comparison")
    >>> print(table.markdown())
    """
    from .reporting.comparison import compare as compare_runs

    return compare_runs(runs, out=out, html=html)


def list_models():
    """One dict per model `train(model=...)` accepts: name, kind, input, parameters, weights, description."""
    from .models import list_models as registered

    return registered()


def load(run, *, workers: int | None = None, max_pixels: int | None = None):
    """Loads a run's model, with its class names and the way it reads images, for predicting.

    The model file is loaded in Keras' safe mode: a `.keras` file with a
    `Lambda` layer (Python code) is refused. Images are decoded to the run's
    own input size, channels and resize policy.

    Args:
        run: a run directory (or `RunDir`) written by `imgclf.train`.
        workers: processes that decode many files. Defaults to `None`: one
            per CPU.
        max_pixels: refuse larger images as decompression bombs. Defaults
            to `None`: the run's own limit (89,478,485 unless it was trained
            with another); raise it to predict a larger scan or panorama.

    Returns:
        A `Predictor`: `predict(images)` takes file paths, PIL images or
        uint8 arrays and returns probabilities `(N, len(classes))`;
        `classes` are the class names.

    Example:

    >>> clf = imgclf.load("runs/flowers")
    >>> probabilities = clf.predict(["a.jpg", PIL.Image.open("b.png")])
    >>> clf.classes[probabilities[0].argmax()]
    'tulip'
    """
    from .prediction import load as load_run

    return load_run(run, workers=workers, max_pixels=max_pixels)


def predict(run, inputs, *, out=None, top_k: int = 3, batch_size: int = 64, format: str | None = None,
            workers: int | None = None, max_pixels: int | None = None, progress: bool = True):
    """Predicts the class of every image in files, folders or CSV lists of paths.

    Folders are searched recursively with the rules of `imgclf.scan` (image
    extensions only; hidden and junk files skipped). A file that cannot be
    decoded gets a row with its problem and does not stop the others.
    Nothing is hashed or audited; decoding runs in worker processes while
    the model predicts, and memory stays flat however many files there are.

    Args:
        run: a run directory, or a `Predictor` from `imgclf.load`.
        inputs: a path or an iterable of paths: image files, folders, or
            `.csv` files with a `path` column (else the first column is the
            path).
        out: a `.csv` or `.json` file to write rows to as they are
            predicted, under a temporary name that replaces `out` at the end
            (`"-"` for standard output). Defaults to `None`: the rows are
            returned.
        top_k: classes listed per image, most probable first.
            Defaults to 3.
        batch_size: images per model call. Defaults to 64.
        format: `"csv"` or `"json"`. Defaults to `None`: json for a `.json`
            `out`, else csv.
        workers: decoding processes. Defaults to `None`: one per CPU.
        max_pixels: as in `imgclf.load`. Defaults to `None`: the run's limit.
        progress: show a progress bar with images/s on a terminal.
            Defaults to `True`.

    Returns:
        Without `out`, a list of rows, one dict per file: `path`,
        `predicted`, `confidence`, `top_k` (`[(class, probability), ...]`),
        `status` (`"ok"` or the problem, e.g. `"truncated"`) and `detail`.
        With `out`, a `PredictionCounts` (images, failed, problems, path).

    Example:

    >>> rows = imgclf.predict("runs/flowers", "new_photos/")
    >>> rows[0]["predicted"], rows[0]["confidence"]
    ('tulip', 0.912)
    >>> imgclf.predict("runs/flowers", "new_photos/", out="predictions.csv").failed
    0
    """
    from .prediction import predict as predict_files

    return predict_files(run, inputs, out=out, top_k=top_k, batch_size=batch_size, format=format, workers=workers,
                         max_pixels=max_pixels, progress=progress)


def export(run, *, format: str = "keras", quantize: str = "none", out=None, progress: bool = True):
    """Exports a run's model for use without imgclf, after checking it predicts like the original.

    The folder gets the model (`model.keras`, `saved_model/` or
    `model.tflite`), `labels.json` (class names), `preprocessing.json`
    (input size, channels, resize policy, input dtype) and `README.txt`
    (how to call it with only TensorFlow or LiteRT installed). The exported
    model predicts the run's validation images before anything is written
    there: probabilities within 1e-4 of the Keras model, or, quantized, the
    same top-1 class for at least 99% of them; otherwise nothing is left
    behind and `ExportCheckError` is raised.

    Args:
        run: a run directory written by `imgclf.train`.
        format: `"keras"`, `"savedmodel"` or `"tflite"`. Defaults to `"keras"`.
        quantize: `"none"`, `"dynamic"` (int8 weights) or `"int8"` (int8
            weights and activations, calibrated on the run's training
            images); tflite only. Defaults to `"none"`.
        out: the folder to write. Defaults to `None`: `RUN/export/<format>`
            (`RUN/export/tflite-int8` when quantized).
        progress: show progress bars. Defaults to `True`.

    Returns:
        An `ExportResult`: the folder, the model file, its size and the check.

    Example:

    >>> result = imgclf.export("runs/flowers", format="tflite", quantize="int8")
    >>> result.check.top1_agreement, result.size_bytes
    (0.997, 412_880)
    """
    from .exporting import export as export_run

    return export_run(run, format=format, quantize=quantize, out=out, progress=progress)

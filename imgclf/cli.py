"""`imgclf <command>`: argparse only; each command calls the public API.

Nothing heavy is imported at module level, so `imgclf --help` is instant.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import errno
import os
import signal
import sys
import textwrap
import threading
import warnings
from collections.abc import Iterator

EPILOG = """\
commands in order:
  imgclf scan data/flowers                     class table and counts
  imgclf audit data/flowers --out audit/       every bad file and why
  imgclf train data/flowers --out runs/f1      train (scans the folder itself)
  imgclf evaluate runs/f1 --split test         confusion matrix and error rates
"""


def _quiet_tensorflow() -> None:
    """Imports TensorFlow with its start-up log lines hidden.

    TensorFlow's C++ code logs at import (oneDNN, CUDA drivers, cuInit) before
    it reads TF_CPP_MIN_LOG_LEVEL, so the CLI also points file descriptor 2 at
    /dev/null for the import and the device probe. An import error still
    raises, and is printed once stderr is back.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow as tf

            tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _image_size(text: str) -> tuple[int, int]:
    parts = [p.strip() for p in text.lower().replace("x", ",").split(",")]
    try:
        size = tuple(int(p) for p in parts)  # an empty part ("48x", "x64") is an error, not a square
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SIZE or HEIGHTxWIDTH, e.g. 64 or 48x64. Received: {text!r}") from None
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) < 1:
        raise argparse.ArgumentTypeError(f"expected SIZE or HEIGHTxWIDTH, e.g. 64 or 48x64. Received: {text!r}")
    return size


def _at_least_1(meaning: str):
    """An argparse type: a whole number of at least 1; the error says `meaning`."""
    def whole_number(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise argparse.ArgumentTypeError(f"expected a whole number of at least 1 ({meaning}). Received: {text!r}")
        return value

    return whole_number


_workers = _at_least_1("1 works in this process; leave --workers out for one per CPU")


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1). Received: {text}")
    return value


def _command(subparsers, name: str, summary: str, example: str) -> argparse.ArgumentParser:
    return subparsers.add_parser(
        name, help=summary, description=summary,
        epilog="example:\n" + textwrap.indent(example.strip(), "  "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


# Options shared by several commands: (flag, type, default, help). The help states the default.
SPLIT_OPTIONS = (
    ("--val", _fraction, 0.15, "fraction of each class for validation (default 0.15)"),
    ("--test", _fraction, 0.15, "fraction of each class for testing (default 0.15)"),
    ("--seed", int, 0, "seed of the split and of training (default 0)"),
)
LIMIT_OPTIONS = (
    ("--max-pixels", int, 89_478_485, "larger images are decompression bombs (default 89,478,485)"),
    ("--min-side", int, 8, "flag images with a shorter side (default 8)"),
    ("--max-aspect", float, 10.0, "flag images with a larger aspect ratio (default 10)"),
)


AUGMENT_HELP = ("augmentation: a preset (auto, none, light, standard, heavy) or a YAML file of any albumentations pipeline, "
                "in the format of a run's augment.yaml")
NO_FLIP_HELP = ("remove mirroring transforms (HorizontalFlip, VerticalFlip, Transpose, D4) from the augmentation, "
                "for digits, text or left/right classes")
RESIZE_HELP = ("how images reach --image-size, always exactly that shape: stretch (default; aspect ratio lost), pad "
               "(whole image, white bands) or crop (centre, edges cut)")


def _add_options(parser: argparse.ArgumentParser, options, *, defaults: bool) -> None:
    """Adds shared options; `defaults=False` leaves them None so a --config file can set them."""
    for flag, kind, default, text in options:
        parser.add_argument(flag, type=kind, default=default if defaults else None, help=text)
    if options is SPLIT_OPTIONS:
        parser.set_defaults(split_parser=parser)  # for `_check_split_fractions`, which needs both values


def _check_split_fractions(args) -> None:
    """Makes --val and --test that add up to 1 or more a usage error (exit 2), as each one outside [0, 1) is.

    A flag left out counts with its default, unless a --config file may set
    it; the config's own check then names the file.
    """
    parser = getattr(args, "split_parser", None)
    if parser is None or (args.val is None and args.test is None):
        return
    if (args.val is None or args.test is None) and getattr(args, "config", None):
        return
    defaults = {flag: default for flag, _, default, _ in SPLIT_OPTIONS}
    val = defaults["--val"] if args.val is None else args.val
    test = defaults["--test"] if args.test is None else args.test
    if val + test >= 1:
        parser.error(f"argument --val/--test: val+test must be less than 1, so that some images are left to train "
                     f"on. Received: --val {val:g} and --test {test:g}")


def _limits(args):
    from .images import ImageLimits

    return ImageLimits(max_pixels=args.max_pixels, min_side=args.min_side, max_aspect=args.max_aspect)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imgclf",
        description="Turn a folder of your own images (one subfolder per class) into a trained, evaluated image classifier.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"imgclf {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="command")

    scan = _command(subparsers, "scan", "List the classes and images of a folder and how they split.",
                    "imgclf scan data/flowers --val 0.1 --test 0.1 --out flowers-manifest.csv")
    scan.add_argument("data", help="folder with one subfolder per class, pre-split train/val/test folders, or a CSV with path,label")
    _add_options(scan, SPLIT_OPTIONS, defaults=True)
    scan.add_argument("--out", help="also write the manifest (path, label, split, sha1, ...) to this CSV")
    scan.add_argument("--workers", type=_workers, help="processes that read files (default one per CPU)")
    _add_options(scan, LIMIT_OPTIONS, defaults=True)
    scan.set_defaults(handler=cmd_scan)

    audit = _command(subparsers, "audit", "Decode every image and report each bad file and why (audit.csv).",
                     "imgclf audit data/photos --out audit/ --quarantine data/quarantine --strict")
    audit.add_argument("data", help="folder or CSV to check (see `imgclf scan`)")
    audit.add_argument("--out", default=None, help="folder for audit.csv and manifest.csv (default: print only)")
    audit.add_argument("--quarantine", metavar="DIR", help="move files with errors into DIR (never deletes)")
    audit.add_argument("--strict", action="store_true", help="exit with status 1 if any file has an error")
    _add_options(audit, LIMIT_OPTIONS, defaults=True)
    audit.add_argument("--workers", type=_workers, help="decoding processes (default one per CPU)")
    _add_options(audit, SPLIT_OPTIONS, defaults=True)
    audit.set_defaults(handler=cmd_audit)

    train = _command(subparsers, "train", "Train a model on a folder and write a run directory.",
                     "imgclf train data/digits --model cnn --epochs 10 --out runs/digits\n"
                     "imgclf train data/photos --model efficientnet_b0 --weights imagenet --out runs/photos\n"
                     "imgclf train data/digits --config exp.yaml --epochs 3 --out runs/quick")
    train.add_argument("data", help="folder or CSV to train on (see `imgclf scan`)")
    train.add_argument("--out", required=True, help="run directory to write, e.g. runs/flowers")
    train.add_argument("--config", help="YAML config whose values are the defaults; flags override them")
    train.add_argument("--manifest", help="reuse this manifest CSV (from `imgclf scan --out`) instead of scanning")
    train.add_argument("--model", help="a model from `imgclf models`, or auto (default): a backbone whose ImageNet "
                       "weights are cached, else small_cnn")
    train.add_argument("--weights", help="backbone weights: imagenet (default for backbones), none, a .weights.h5 "
                       "file (or a Keras .h5 weights file), or run:DIR (the backbone of an earlier run)")
    train.add_argument("--freeze-epochs", type=int, help="epochs that train only the new head of a pretrained "
                       "backbone, counted in --epochs (default max(1, epochs // 5))")
    train.add_argument("--unfreeze", help="what fine-tuning trains after those: all (default), none, or K (the top "
                       "K blocks); batch norm stays frozen")
    train.add_argument("--fine-tune-lr", type=float, help="learning rate of fine-tuning (default --lr / 10)")
    train.add_argument("--epochs", type=int, help="passes over the training images (default 20)")
    train.add_argument("--batch-size", type=int, help="images per step (default 32)")
    train.add_argument("--lr", "--learning-rate", dest="learning_rate", type=float, help="learning rate (default 0.001)")
    train.add_argument("--optimizer", help="adam, adamw, sgd or rmsprop (default adam)")
    train.add_argument("--image-size", type=_image_size, help="SIZE or HEIGHTxWIDTH (default: median of the images, at most 224)")
    train.add_argument("--color-mode", choices=["auto", "rgb", "grayscale"], help="default auto: grayscale if every image is")
    train.add_argument("--augment", metavar="NAME|FILE.yaml",
                       help=AUGMENT_HELP + " (default auto: light for grayscale images, standard for colour)")
    train.add_argument("--no-flip", dest="flip", action="store_const", const=False, help=NO_FLIP_HELP)
    train.add_argument("--resize", choices=["stretch", "pad", "crop"], help=RESIZE_HELP)
    train.add_argument("--hidden", type=int, nargs="+", help="hidden Dense widths of mlp, e.g. --hidden 784 256 (default 784)")
    train.add_argument("--dropout", type=float, help="dropout rate (default: the model's own)")
    train.add_argument("--momentum", type=float, help="momentum of sgd and rmsprop; 0 is plain SGD (default 0.9 for sgd)")
    train.add_argument("--weight-decay", type=float, help="decoupled weight decay (default: the optimizer's own, "
                       "0.004 for adamw)")
    train.add_argument("--label-smoothing", type=float, help="spread this share of each label over all classes (default 0.1)")
    train.add_argument("--schedule", choices=["constant", "cosine", "step", "plateau"],
                       help="learning rate within each phase (default cosine)")
    train.add_argument("--warmup-epochs", type=int, help="cosine: epochs of linear warm-up (default 0)")
    train.add_argument("--lr-factor", type=float, help="step and plateau: multiply the rate by this (default 0.1)")
    train.add_argument("--lr-step-epochs", type=int, help="step: epochs between steps (default 10)")
    train.add_argument("--lr-patience", type=int, help="plateau: epochs without a better --monitor before the rate "
                       "drops (default 2)")
    train.add_argument("--monitor", choices=["val_loss", "val_accuracy", "val_macro_f1"],
                       help="metric that picks the best epoch, stops early and drives plateau (default val_loss)")
    train.add_argument("--patience", type=int, help="stop after this many epochs without a better --monitor")
    train.add_argument("--class-weight", action="store_const", const=True, help="weight the loss by inverse class frequency")
    train.add_argument("--sampler", choices=["shuffle", "balanced"], help="balanced: each epoch draws every class "
                       "evenly, with replacement for small ones (default shuffle)")
    train.add_argument("--mixed-precision", action="store_const", const=True,
                       help="mixed_float16 on a GPU, mixed_bfloat16 on a CPU with bfloat16 instructions (AVX512_BF16, AMX); "
                            "ignored with a note on other CPUs")
    train.add_argument("--strategy", choices=["auto", "default", "mirrored", "multi-worker"],
                       help="devices: mirrored copies the model to every GPU; multi-worker trains on several "
                       "machines, as TF_CONFIG describes; auto (default) picks mirrored with several GPUs")
    train.add_argument("--workers", type=_workers, help="processes that decode images (default one per CPU)")
    _add_options(train, LIMIT_OPTIONS, defaults=False)
    _add_options(train, SPLIT_OPTIONS, defaults=False)
    train.add_argument("--strict", action="store_true", help="refuse to train if any file has an error")
    train.add_argument("--resume", action="store_true", help="continue a killed run from its last checkpoint")
    train.add_argument("--overwrite", action="store_true", help="replace an earlier run at --out, finished or stopped")
    train.set_defaults(handler=cmd_train)

    evaluate = _command(subparsers, "evaluate", "Evaluate a run's model: confusion matrix, error rates, mistakes, "
                        "report.html.",
                        "imgclf evaluate runs/digits --split test\n"
                        "imgclf evaluate runs/digits --data data/digits-new      # writes runs/digits/eval/digits-new/")
    evaluate.add_argument("run", help="run directory written by `imgclf train`")
    evaluate.add_argument("--split", choices=["train", "val", "test"],
                          help="split to evaluate (default: the run's eval.split in config.yaml, test unless set)")
    evaluate.add_argument("--data", metavar="DIR", help="evaluate on this folder of the same classes instead of a split "
                          "(written to eval/<folder name>/)")
    evaluate.add_argument("--no-report", action="store_true", help="do not write RUN/report.html")
    evaluate.set_defaults(handler=cmd_evaluate)

    report = _command(subparsers, "report", "Write RUN/report.html: one self-contained page with the data, training "
                      "curves, metrics, confusion matrices, mistakes and calibration.",
                      "imgclf report runs/digits        # then open runs/digits/report.html")
    report.add_argument("run", help="run directory written by `imgclf train` (and `imgclf evaluate`)")
    report.add_argument("--out", help="write the page here instead of RUN/report.html")
    report.set_defaults(handler=cmd_report)

    compare = _command(subparsers, "compare", "Put runs side by side: settings and results, differences marked.",
                       "imgclf compare runs/mlp runs/cnn runs/cnn-augmented --html")
    compare.add_argument("runs", nargs="+", metavar="RUN", help="run directories written by `imgclf train`")
    compare.add_argument("--out", default="comparison", help="folder for comparison.md and comparison.csv "
                         "(default ./comparison)")
    compare.add_argument("--html", action="store_true", help="also write comparison.html, a self-contained page")
    compare.set_defaults(handler=cmd_compare)

    predict = _command(subparsers, "predict", "Predict the class of new images: files, folders or CSV lists of paths.",
                       "imgclf predict runs/flowers new_photos/ --out predictions.csv\n"
                       "imgclf predict runs/flowers a.jpg b.png --top-k 1 --format json\n"
                       "exit status 1 if any input could not be predicted (its row says why)")
    predict.add_argument("run", help="run directory written by `imgclf train`")
    predict.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (searched like `imgclf scan` "
                         "does) or CSV files with a path column")
    predict.add_argument("--out", help="CSV or JSON file for the rows, written under a temporary name that replaces "
                         "it once all are written; not one of the inputs (default: standard output, row by row)")
    predict.add_argument("--top-k", type=_at_least_1("the classes listed per image"), default=3,
                         help="classes listed per image, with probabilities (default 3)")
    predict.add_argument("--batch-size", type=_at_least_1("images per model call"), default=64,
                         help="images per model call (default 64)")
    predict.add_argument("--format", choices=["csv", "json"], help="default: json for a .json --out, else csv")
    predict.add_argument("--workers", type=_workers, help="processes that decode images (default one per CPU)")
    predict.add_argument("--max-pixels", type=_at_least_1("pixels"),
                         help="larger images are refused as decompression bombs (default: the run's limit, "
                         "89,478,485 unless trained with another); raise it for a large scan")
    predict.set_defaults(handler=cmd_predict)

    export = _command(subparsers, "export", "Export a run's model for deployment, checked against the original.",
                      "imgclf export runs/flowers --format tflite --quantize int8 --out flowers-tflite\n"
                      "imgclf export runs/flowers --format savedmodel")
    export.add_argument("run", help="run directory written by `imgclf train`")
    export.add_argument("--format", default="keras", choices=["keras", "savedmodel", "tflite"],
                        help="keras (.keras file), savedmodel (TensorFlow SavedModel) or tflite (default keras)")
    export.add_argument("--quantize", default="none", choices=["none", "dynamic", "int8"],
                        help="tflite only: dynamic (int8 weights) or int8 (calibrated on training images) (default none)")
    export.add_argument("--out", metavar="DIR", help="folder to write (default RUN/export/FORMAT)")
    export.set_defaults(handler=cmd_export)

    preview = _command(subparsers, "augment-preview", "Draw training images and augmented versions of each, at the "
                       "size the model sees (a PNG grid).",
                       "imgclf augment-preview data/photos --augment heavy --out preview.png\n"
                       "imgclf augment-preview data/digits --augment light --no-flip --image-size 28\n"
                       "imgclf augment-preview data/photos --augment runs/photos/augment.yaml --n 4 --versions 8")
    preview.add_argument("data", help="folder or CSV of images (see `imgclf scan`)")
    preview.add_argument("--augment", metavar="NAME|FILE.yaml", help=AUGMENT_HELP + " (default auto, as train)")
    preview.add_argument("--no-flip", dest="flip", action="store_const", const=False, help=NO_FLIP_HELP)
    preview.add_argument("--out", default="preview.png", help="picture to write (default preview.png)")
    preview.add_argument("--n", type=_at_least_1("rows of training images"), default=8,
                         help="rows: training images, drawn across the classes (default 8)")
    preview.add_argument("--versions", type=_at_least_1("augmented versions of each image"), default=5,
                         help="augmented versions of each image (default 5)")
    preview.add_argument("--zoom", type=_at_least_1("screen pixels a side for each pixel of the model's input"),
                         help="enlarge every pixel to ZOOM x ZOOM (default: tiles of at least 96 px)")
    preview.add_argument("--config", help="YAML config (e.g. a run's config.yaml) whose values are the defaults")
    preview.add_argument("--image-size", type=_image_size, help="SIZE or HEIGHTxWIDTH (default: as `imgclf train` "
                         "chooses it: the median of the images, at most 224, or a backbone's own size)")
    preview.add_argument("--resize", choices=["stretch", "pad", "crop"], help=RESIZE_HELP)
    preview.add_argument("--color-mode", choices=["auto", "rgb", "grayscale"], help="default auto: grayscale if every image is")
    preview.add_argument("--model", help="the model `imgclf train` would train; its size is the default (default auto)")
    preview.add_argument("--weights", help="backbone weights, as for `imgclf train` (they can decide the default size)")
    preview.add_argument("--workers", type=_workers, help="processes that read files (default one per CPU)")
    _add_options(preview, SPLIT_OPTIONS, defaults=False)
    preview.set_defaults(handler=cmd_augment_preview)

    models = _command(subparsers, "models", "List the models `imgclf train --model` accepts.", "imgclf models")
    models.set_defaults(handler=cmd_models)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def cmd_scan(args) -> int:
    import imgclf
    from .files import check_file_target

    if args.out:
        check_file_target(args.out)

    manifest = imgclf.scan(args.data, val=args.val, test=args.test, seed=args.seed, limits=_limits(args),
                           workers=args.workers)
    print(manifest.summary())
    if args.out:
        print(f"manifest written to {manifest.to_csv(args.out)}")
    return 0


def cmd_audit(args) -> int:
    import imgclf
    from .files import check_folder_target

    for folder in (args.out, args.quarantine):
        if folder:
            check_folder_target(folder)

    result = imgclf.audit(args.data, out=args.out, quarantine=args.quarantine, limits=_limits(args), val=args.val,
                          test=args.test, seed=args.seed, workers=args.workers)
    print(result.summary())
    if args.strict and result.errors:
        print(f"imgclf audit: {len(result.errors):,} file(s) have errors (--strict)", file=sys.stderr)
        return 1
    return 0


def cmd_train(args) -> int:
    import imgclf
    from .files import shell_word
    from .manifest import Manifest

    options = {key: getattr(args, key) for key in (
        "model", "weights", "freeze_epochs", "unfreeze", "fine_tune_lr", "epochs", "batch_size", "learning_rate",
        "optimizer", "image_size", "color_mode", "augment", "hidden", "dropout", "patience", "class_weight", "workers",
        "val", "test", "seed", "max_pixels", "min_side", "max_aspect", "momentum", "weight_decay", "label_smoothing",
        "schedule", "warmup_epochs", "lr_factor", "lr_step_epochs", "lr_patience", "monitor", "sampler",
        "mixed_precision", "strategy", "flip", "resize")}
    data = args.data
    if args.manifest:
        from .images import ImageLimits

        data = Manifest.read_csv(args.manifest)
        data.root = args.data  # the folder it lists: a run folder inside it is refused as for a scan
        limits = {key: getattr(args, key) for key in ("max_pixels", "min_side", "max_aspect") if getattr(args, key) is not None}
        # Training names the classes, and notes leaks and small classes, as a scan would (the file may be edited).
        data.recheck_changed(os.stat(args.manifest).st_mtime, limits=ImageLimits(**limits), workers=args.workers)
    model_before = _modified(os.path.join(args.out, "model.keras")) if args.resume else None
    run = imgclf.train(data, out=args.out, config=args.config, resume=args.resume, overwrite=args.overwrite,
                       strict=args.strict, verbose=2, **options)
    if _another_worker(run):
        print("\nthis worker's part is done; the chief of the cluster writes the run to the --out it was given "
              f"(which must be the folder this worker was given too, {shell_word(run.path)}, on shared storage)")
        return 0
    manifest = run.manifest()
    if any(not entry.usable for entry in manifest.entries):
        print(f"files left out have status 'error' in {run.manifest_path}; `imgclf audit` explains each one")
    if model_before is not None and _modified(run.model_path) == model_before:
        print(f"\nmodel unchanged: {run.model_path}")
    else:
        print(f"\nmodel written to {run.model_path}")
    split = next((s for s in ("test", "val", "train") if manifest.split(s)), "train")
    print(f"next: imgclf evaluate {shell_word(run.path)} --split {split}")
    return 0


def _another_worker(run) -> bool:
    """Whether this process trained `run` as a worker of a multi-worker cluster other than its chief."""
    from .strategy import is_chief

    if not os.environ.get("TF_CONFIG", "").strip():
        return False
    if run.config_path.exists() and run.config().train.strategy != "multi-worker":
        return False
    return not is_chief()  # config.yaml is the chief's, on storage this worker may not share


def cmd_augment_preview(args) -> int:
    from .config import load_config
    from .preview import augment_preview

    options = {key: getattr(args, key) for key in (
        "augment", "flip", "image_size", "resize", "color_mode", "model", "weights", "workers", "val", "test", "seed")}
    if args.image_size is None and (args.config is None or load_config(args.config).data.image_size is None):
        _quiet_tensorflow()  # the model decides the default size, and Keras knows it
    preview = augment_preview(args.data, out=args.out, config=args.config, n=args.n, versions=args.versions,
                              zoom=args.zoom, **options)
    print(preview.summary())
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, `timeout`, a scheduler's time limit), raised as Ctrl-C is: on the way out every temporary
    file is removed and every lock let go, where the signal's default action would end the process on the spot."""


@contextlib.contextmanager
def _sigterm_as_interruption() -> Iterator[None]:
    """Raises `Terminated` on SIGTERM while the command runs; a handler someone else installed is left alone."""
    def stop(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process without waiting
        raise Terminated

    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _interrupted(args, interruption: KeyboardInterrupt) -> int:
    """The one line of a command stopped by Ctrl-C or SIGTERM, and its exit status (128 + the signal's number)."""
    resume = ""
    if args.command == "train":
        how = "with --resume in place of --overwrite" if args.overwrite else "with --resume"
        resume = f" (the same command {how} continues from the last finished epoch)"
    if isinstance(interruption, Terminated):
        print(f"imgclf {args.command}: stopped by SIGTERM{resume}", file=sys.stderr)
        return 128 + signal.SIGTERM
    print(f"imgclf {args.command}: interrupted{resume}", file=sys.stderr)
    return 130


def cmd_evaluate(args) -> int:
    import imgclf
    from .files import escape_name
    from .manifest import printable_name as shown  # a class name as `imgclf scan` prints it: `new\nline`, `\u202eevil`

    evaluation = imgclf.evaluate(args.run, args.split, data=args.data)
    written = imgclf.report(args.run, evaluation, html=not args.no_report)
    metrics = evaluation.metrics()
    interval = metrics["error_rate_interval"]
    print(f"{evaluation.split}: {metrics['images']:,} images, accuracy {evaluation.accuracy:.2%}, "
          f"error rate {evaluation.error_rate:.2%} (95% interval {interval['low']:.2%}-{interval['high']:.2%}, "
          f"{metrics['errors']:,} wrong)")
    print(f"balanced accuracy {metrics['balanced_accuracy']:.2%}, macro F1 {metrics['macro_f1']:.3f}, "
          f"log loss {metrics['log_loss']:.3f}, calibration error (ECE) {metrics['expected_calibration_error']:.3f}")
    worst = sorted((row for row in evaluation.per_class if row["error_rate"] is not None), key=lambda row: -row["error_rate"])[:5]
    print("highest error rates: " + ", ".join(f"{shown(row['class'])} {row['error_rate']:.1%}" for row in worst))
    pairs = evaluation.most_confused(5)
    if pairs:
        print("most confused (true → predicted): " + ", ".join(f"{shown(t)} → {shown(p)} ({n})" for t, p, n in pairs))
    if evaluation.changed:
        print(f"note: {len(evaluation.changed):,} file(s) of the split changed since the run was trained (e.g. "
              f"{escape_name(evaluation.changed[0])}): evaluated as they are now")
    if evaluation.copies:
        counts = " and ".join(f"{len(paths):,} of its {split} split" for split, paths in evaluation.copies.items())
        example = next(iter(evaluation.copies.values()))[0]
        print(f"note: {sum(map(len, evaluation.copies.values())):,} of the {metrics['images']:,} images are copies of "
              f"images the run trained on or chose its best epoch by ({counts}; e.g. {escape_name(example)}): they "
              "flatter these numbers. Evaluate images the run has not seen, e.g. its own --split test")
    for row in evaluation.skipped[:10]:
        print(f"skipped {escape_name(row['path'])}: {row['problem']}")
    if len(evaluation.skipped) > 10:
        print(f"... {len(evaluation.skipped) - 10:,} more skipped files in skipped.csv")
    folder = os.path.join(str(args.run), "eval", evaluation.split)
    gallery = ["gallery.png"] if any(path.name == "gallery.png" for path in written) else []  # none without mistakes
    files = ["metrics.json", "confusion_matrix.csv/.png", "per_class.csv", "most_confused.csv", "misclassified.csv",
             *gallery, "calibration.png", *(["skipped.csv"] if evaluation.skipped else [])]
    print(f"files:  {folder}{os.sep} ({', '.join(files)})")
    if not args.no_report:
        print(f"report: {written[-1]}")
    return 0


def cmd_report(args) -> int:
    import imgclf
    from .reporting import write_report

    path = write_report(args.run, args.out) if args.out else imgclf.report(args.run)[-1]
    print(f"report written to {path}")
    return 0


def cmd_compare(args) -> int:
    import imgclf
    from .files import check_folder_target

    check_folder_target(args.out)

    comparison = imgclf.compare(args.runs, out=args.out, html=args.html)
    print(comparison.markdown())
    names = ["comparison.md", "comparison.csv"] + (["comparison.html"] if args.html else [])
    print("written: " + ", ".join(os.path.join(args.out, name) for name in names))
    return 0


def cmd_models(args) -> int:
    import imgclf

    rows = imgclf.list_models()
    print(f"{'name':<20} {'kind':<9} {'input':<17} {'parameters':>11}  weights")
    for row in rows:
        print(f"{row['name']:<20} {row['kind']:<9} {row['input']:<17} {row['parameters']:>11,}  {row['weights']}")
    print("\nbackbone parameters exclude the head; scratch models are counted at 28x28x1 with 10 classes.")
    print("--model auto (the default) picks the first backbone whose ImageNet weights are cached, else small_cnn.")
    return 0


def cmd_predict(args) -> int:
    import imgclf
    from .files import check_file_target
    from .prediction import standard_output

    to_file = bool(args.out) and args.out != "-"
    if to_file:
        check_file_target(args.out)
    else:
        standard_output()
    counts = imgclf.predict(args.run, args.inputs, out=args.out or "-", top_k=args.top_k, batch_size=args.batch_size,
                            format=args.format, workers=args.workers, max_pixels=args.max_pixels)
    say = sys.stdout if to_file else sys.stderr  # standard output may hold the rows
    if counts.images == 0:
        print(f"imgclf predict: no image files found in {' '.join(args.inputs)} (extensions: jpg, jpeg, png, bmp, "
              "gif, webp, tif, tiff)", file=sys.stderr)
        return 1
    print(f"{counts.images - counts.failed:,} of {counts.images:,} images predicted, {counts.failed:,} could not be read"
          + (f"; rows written to {counts.path}" if to_file else ""), file=say)
    if counts.failed:
        problems = ", ".join(f"{slug} {n:,}" for slug, n in sorted(counts.problems.items(), key=lambda item: -item[1]))
        print(f"imgclf predict: {counts.failed:,} of {counts.images:,} inputs failed ({problems}); "
              "their rows say why in the status and detail columns", file=sys.stderr)
        return 1
    return 0


def cmd_export(args) -> int:
    import imgclf
    from .exporting import ExportCheckError
    from .files import check_folder_target

    if args.out:
        check_folder_target(args.out)

    try:
        result = imgclf.export(args.run, format=args.format, quantize=args.quantize, out=args.out)
    except ExportCheckError as error:
        print(f"imgclf export: error: {error}", file=sys.stderr)
        return 1
    print(result.summary())
    return 0


_TENSORFLOW_COMMANDS = {"export", "predict", "train", "evaluate", "models"}


def _modified(path) -> int | None:
    """The modification time of `path` in nanoseconds, or `None` where there is no file."""
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Prints imgclf's own warnings as a line of the command's output; others as Python prints them."""
    if os.path.dirname(os.path.abspath(filename)).startswith(os.path.dirname(os.path.abspath(__file__))):
        print(f"warning: {message}", file=file or sys.stderr, flush=True)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_python_show_warning = warnings.showwarning


def main(argv: list[str] | None = None) -> int:
    """Runs the `imgclf` command line; returns the exit status."""
    _tolerate_unprintable_characters()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    _check_split_fractions(args)
    from .config import ConfigError
    from .manifest import DatasetError
    from .parallel import WorkerDiedError
    from .runs import RunError

    try:
        if args.command in _TENSORFLOW_COMMANDS:
            _quiet_tensorflow()
        with warnings.catch_warnings(), _sigterm_as_interruption():
            warnings.showwarning = _show_warning
            return args.handler(args)
    except (ConfigError, DatasetError, RunError, WorkerDiedError, FileNotFoundError, ValueError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        return _error(args, message)
    except KeyboardInterrupt as interruption:
        return _interrupted(args, interruption)
    except RuntimeError as error:
        # Ctrl-C that lands inside threading.Condition.wait (waiting on a thread's result) can leave the condition's
        # lock released and surface as "cannot release un-acquired lock", with the KeyboardInterrupt as its context.
        if isinstance(error.__context__, KeyboardInterrupt):
            return _interrupted(args, error.__context__)
        raise
    except BrokenPipeError:  # `imgclf models | head`: the reader left; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as error:  # a path the system refused: say which, and why, in one line
        return _error(args, describe_os_error(error))


def _error(args, message) -> int:
    """Prints the error line; returns the exit status 1."""
    print(f"imgclf {args.command}: error: {message}", file=sys.stderr)
    if not _current_folder_exists():  # every relative path then names nothing, whatever the message says
        print(f"imgclf {args.command}: note: the current folder no longer exists: cd into one that does, or give "
              "absolute paths", file=sys.stderr)
    return 1


def _tolerate_unprintable_characters() -> None:
    """Prints what the terminal's encoding lacks (`→`, `é` under `PYTHONIOENCODING=ascii`) as `\\u2192`, `\\u00e9`.

    Without this, a class name or an arrow the encoding cannot show would stop the command with a codec error.
    Always `\\u` with four digits (or `\\U` with eight): `\\xe9` is how imgclf names a byte that is not UTF-8
    (`files.escape_name`), so `café` and a Latin-1 `caf\\xe9` stay apart. `imgclf predict` writes its rows
    strictly (`prediction.write_rows`): they are data.
    """
    codecs.register_error(UNICODE_ESCAPES, _unicode_escapes)
    for stream in (sys.stdout, sys.stderr):
        if stream is not None and hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors=UNICODE_ESCAPES)
            except (ValueError, OSError):  # a stream already closed, or one that cannot change
                pass


UNICODE_ESCAPES = "imgclf.unicode_escapes"


def _unicode_escapes(error: UnicodeEncodeError) -> tuple[str, int]:
    text = error.object[error.start:error.end]
    return "".join(f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}" for c in text), error.end


_OS_ERROR_HINTS = {
    errno.EEXIST: "a file stands where a folder is needed; choose another path",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path",
    errno.EISDIR: "it is a folder; name a file inside it",
    errno.EACCES: "check the permissions, or choose another path",
    errno.ENOSPC: "free some space, or choose another disk",
    errno.EFBIG: "a limit on the size of files stopped the write: see `ulimit -f`",
    errno.EMFILE: "too many files open at once: raise the limit with `ulimit -n`, or pass fewer --workers",
    errno.EROFS: "the disk is read-only; choose another path",
}


def describe_os_error(error: OSError) -> str:
    """One line naming the path the system refused, the reason and, where known, the fix."""
    from .files import escape_name

    path = escape_name(os.fsdecode(error.filename)) if error.filename is not None else ""
    reason = error.strerror or str(error)
    hint = _OS_ERROR_HINTS.get(error.errno)
    return (f"{path}: " if path else "") + reason + (f" ({hint})" if hint else "")


def _current_folder_exists() -> bool:
    try:
        os.getcwd()
    except FileNotFoundError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())

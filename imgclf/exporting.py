"""Exporting a run's model for deployment, checked against the model it came from.

```
imgclf export runs/flowers --format tflite --quantize int8 --out flowers-tflite
flowers-tflite/
  model.tflite         (or model.keras, or saved_model/)
  labels.json          class names, in the order of the model's outputs
  preprocessing.json   input size, channels, resize policy, input dtype
  README.txt           how to call it from Python with only TensorFlow or LiteRT
  export.json          the check: images, measured difference or agreement, file size
```

Every export is checked before it is declared done: the exported artifact,
loaded back as a user would load it, predicts the run's validation images,
and its probabilities must match the Keras model's (float: largest absolute
difference at most 1e-4; quantized: the same top-1 class for at least 99% of
the images). Everything is written into a hidden folder inside the output
folder first and moved into place only after the check passes, so a failed
export leaves nothing behind that looks valid (and an output folder it
created is removed again). Only fixed file names are written; class names go
into `labels.json`, never into paths.

The output folder holds one export at a time. Its `export.json` marks an
earlier export, whose model files (`model.keras`, `model.tflite`,
`saved_model/`) the new export removes when it moves into place; any other
file or folder in the way of a name the export writes was not written by
imgclf, and is refused before any work.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import itertools
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from .files import check_folder_target, escape_name, process_tag, read_json, remove_abandoned, write_json, write_text
from .prediction import load_keras_model, run_image_spec
from .runs import RunDir
from .tracing import retracing_expected

FORMATS = ("keras", "savedmodel", "tflite")
QUANTIZATIONS = ("none", "dynamic", "int8")
FLOAT_TOLERANCE = 1e-4
QUANTIZED_AGREEMENT = 0.99
# The check predicts at most this many validation images (the first ones of the manifest)...
MAX_CHECK_IMAGES = 2000
# ...and at least this many when the run has them: a smaller validation split is topped up with test, then
# training images, so that a 99% agreement means something.
MIN_CHECK_IMAGES = 200
# Training images that calibrate int8 activations.
REPRESENTATIVE_IMAGES = 200
_MODEL_FILES = {"keras": "model.keras", "savedmodel": "saved_model", "tflite": "model.tflite"}
_OTHER_FILES = ("labels.json", "preprocessing.json", "README.txt", "export.json")
_BATCH = 64


class ExportCheckError(RuntimeError):
    """The exported model does not predict like the run's model; nothing was written."""


@dataclasses.dataclass(frozen=True)
class ParityCheck:
    """How closely the exported model follows the Keras model on the validation images.

    Attributes:
        images: images predicted by both.
        split: the splits they came from: `"val"`, or e.g. `"val + train"`
            when the validation split holds fewer than `MIN_CHECK_IMAGES`.
        max_abs_difference: largest absolute difference of any probability.
        top1_agreement: fraction of images with the same most probable class.
        metric: `"max_abs_difference"` (float export) or `"top1_agreement"`
            (quantized export): the number that decides.
        threshold: its limit (at most 1e-4, or at least 0.99).
    """

    images: int
    split: str
    max_abs_difference: float
    top1_agreement: float
    metric: str
    threshold: float

    @property
    def passed(self) -> bool:
        if self.metric == "max_abs_difference":
            return self.max_abs_difference <= self.threshold
        return self.top1_agreement >= self.threshold

    def describe(self) -> str:
        """One line, e.g. `top-1 agreement 99.70% (required: at least 99%), largest difference 0.021, on 1,200 val images`."""
        difference = f"largest probability difference {self.max_abs_difference:.2g}"
        agreement = f"top-1 agreement {self.top1_agreement:.2%}"
        if self.metric == "max_abs_difference":
            measured = f"{difference} (required: at most {self.threshold:g}), {agreement}"
        else:
            measured = f"{agreement} (required: at least {self.threshold:.0%}), {difference}"
        return f"{measured}, on {self.images:,} {self.split} images"


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What `imgclf.export` wrote.

    Attributes:
        folder: the output folder.
        model_path: the model file (or `saved_model/` folder) in it.
        format: `"keras"`, `"savedmodel"` or `"tflite"`.
        quantize: `"none"`, `"dynamic"` or `"int8"`.
        size_bytes: size of the model file (or folder).
        check: the `ParityCheck` it passed.
        files: every file and folder written.
        replaced: the model files of an earlier export in the folder that
            this one removed or overwrote.
    """

    folder: Path
    model_path: Path
    format: str
    quantize: str
    size_bytes: int
    check: ParityCheck
    files: tuple[Path, ...]
    replaced: tuple[Path, ...] = ()

    def summary(self) -> str:
        kind = self.format + ("" if self.quantize == "none" else f" ({self.quantize} quantized)")
        lines = [
            f"exported {kind}: {self.model_path} ({_size(self.size_bytes)})",
            f"check passed: {self.check.describe()}",
            "written: " + ", ".join(p.name + ("/" if p.is_dir() else "") for p in self.files),
        ]
        if self.replaced:
            done = [("overwrote " if p.name == self.model_path.name else "removed ")
                    + p.name + ("/" if p.name == _MODEL_FILES["savedmodel"] else "") for p in self.replaced]
            lines.append(f"replaced an earlier export in {escape_name(str(self.folder))}: {', '.join(done)}")
        return "\n".join([*lines, f"how to use it: {self.folder / 'README.txt'}"])


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n}"


def _tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def export(run, *, format: str = "keras", quantize: str = "none", out=None, progress: bool = True) -> ExportResult:
    """Exports a run's model and checks it against the original; see `imgclf.export`.

    Raises:
        ValueError: for an unknown format or quantization, or quantization
            of a format other than tflite.
        FileExistsError: before any work, if a file or folder that imgclf
            did not write stands where the export writes one.
        ExportCheckError: if the exported model does not predict like the
            run's model; nothing is left in the output folder.
    """
    if format not in FORMATS:
        raise ValueError(f"Unknown export format {format!r}. Valid formats: {', '.join(FORMATS)}")
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"Unknown quantize {quantize!r}. Valid values: {', '.join(QUANTIZATIONS)}")
    if quantize != "none" and format != "tflite":
        raise ValueError(f"Quantization is for tflite only. Received: format={format!r}, quantize={quantize!r}; "
                         "pass --format tflite, or --quantize none.")
    run = run if isinstance(run, RunDir) else RunDir(run)
    run.require("model.keras", "classes.json", "config.yaml", "manifest.csv")
    folder = Path(out) if out else run.path / "export" / (format if quantize == "none" else f"{format}-{quantize}")
    _earlier_model_files(folder, _MODEL_FILES[format])  # refuses what is in the way before any work
    cfg = run.config()
    model, classes = run.load_model_and_classes()
    spec = run_image_spec(cfg, model)
    created = list(itertools.takewhile(lambda path: not path.exists(), (folder, *folder.parents)))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return _export_into(folder, run, model, cfg, classes, spec, format, quantize, progress)
    except BaseException:
        for path in created:  # innermost first; a folder that is not empty is not ours to remove
            with contextlib.suppress(OSError):
                path.rmdir()
        raise


def _export_into(folder: Path, run: RunDir, model, cfg, classes, spec, format: str, quantize: str,
                 progress: bool) -> ExportResult:
    """Writes and checks the export in a hidden folder inside `folder`, then moves it into place."""
    images, split = _check_images(run, cfg, classes, spec, progress=progress)
    with retracing_expected():
        expected = model.predict(images, batch_size=_BATCH, verbose=0)
    remove_abandoned(folder, ".export-")  # the hidden folder of an export that was killed
    staging = Path(tempfile.mkdtemp(prefix=f".export-{process_tag()}-", dir=folder))  # inside the output folder
    try:
        artifact = staging / _MODEL_FILES[format]
        with _write_failures_named(folder):
            if format == "keras":
                model.save(artifact)
                predicted = _predict_keras(artifact, images)
            elif format == "savedmodel":
                _write_saved_model(model, artifact, spec)
                predicted = _predict_saved_model(artifact, images)
            else:
                representative = (_representative_images(run, cfg, classes, spec, progress) if quantize == "int8"
                                  else None)
                _write_tflite(model, artifact, staging, spec, quantize, representative)
                predicted = predict_tflite(artifact, images)
        check = _compare(expected, predicted, split, quantized=quantize != "none")
        size = _tree_size(artifact)
        if not check.passed:
            raise ExportCheckError(
                f"The exported {format} model ({_size(size)}) does not predict like {escape_name(str(run.model_path))}: "
                f"{check.describe()}. Nothing was written to {escape_name(str(folder))}. "
                + {"int8": "Try --quantize dynamic, or --quantize none.",
                   "dynamic": "Try --quantize none: its weights stay float32."}.get(
                    quantize, "Report this with the run's environment.json; --format keras exports the model unchanged.")
            )
        write_json(staging / "labels.json", classes)
        write_json(staging / "preprocessing.json", preprocessing_record(spec, cfg))
        write_text(staging / "README.txt", readme_text(format, quantize, spec))
        write_json(staging / "export.json", {
            "format": format, "quantize": quantize, "model": artifact.name, "size_bytes": size,
            "run": os.path.abspath(run.path), "check": {**dataclasses.asdict(check), "passed": True},
        })
        # The earlier export's model files go first and its export.json last: a folder left half-way by a
        # killed process still holds an export.json, so the next export replaces what is there.
        replaced = _earlier_model_files(folder, artifact.name)
        for path in replaced:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.name != artifact.name:  # a file of the new model's name is replaced atomically below
                path.unlink()
        written = []
        for name in (artifact.name, *_OTHER_FILES):
            os.replace(staging / name, folder / name)
            written.append(folder / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(folder, folder / artifact.name, format, quantize, size, check, tuple(written),
                        tuple(replaced))


_REFUSED_WRITES = (errno.ENOSPC, errno.EFBIG, errno.EACCES, errno.EROFS)


@contextlib.contextmanager
def _write_failures_named(folder: Path):
    """A write the system refused while TensorFlow saves (a full disk, a file size limit) as one `OSError` naming
    the export folder: TensorFlow raises it as an error of its own, a traceback of many lines."""
    import tensorflow as tf

    try:
        yield
    except tf.errors.OpError as error:
        for code in _REFUSED_WRITES:
            if os.strerror(code) in error.message:
                raise OSError(code, os.strerror(code), str(folder)) from None
        raise


def _earlier_export(folder: Path) -> tuple[str | None, str]:
    """The model file an earlier export in `folder` wrote (named by its `export.json`), or `None` and why not."""
    if not os.path.lexists(folder / "export.json"):
        return None, "no export.json"
    try:
        record = read_json(folder / "export.json")
    except (OSError, ValueError):
        record = None
    model = record.get("model") if isinstance(record, dict) else None
    if model in _MODEL_FILES.values():
        return model, ""
    return None, "its export.json is not one imgclf export wrote"


def _earlier_model_files(folder: Path, model_name: str) -> list[Path]:
    """The model file of an earlier export in `folder`, which an export writing `model_name` replaces.

    Only what an earlier export wrote may go: its `export.json` names its
    model file, and the other files every export writes.

    Raises:
        NotADirectoryError: if `folder`, or a folder above it, is a file.
        FileExistsError: if a file or folder stands where the export
            writes one, and imgclf did not write it (a run's own
            `model.keras` included), or it is a folder where an export
            writes a file (or a file where it writes `saved_model/`).
    """
    check_folder_target(folder)
    if not folder.is_dir():
        return []
    earlier, why = _earlier_export(folder)
    found = []
    for name in dict.fromkeys((model_name, *_OTHER_FILES, *([earlier] if earlier else []))):
        path = folder / name
        if not os.path.lexists(path):
            continue
        is_folder = path.is_dir() and not path.is_symlink()
        written = earlier is not None and (name == earlier or name in _OTHER_FILES)
        if not written or is_folder != (name == _MODEL_FILES["savedmodel"]):
            where = (f" ({escape_name(str(folder))}: {why})" if earlier is None else
                     f" (the earlier export in {escape_name(str(folder))} wrote {earlier})" if not written else "")
            raise FileExistsError(f"{escape_name(str(path))} is a {'folder' if is_folder else 'file'} that imgclf "
                                  f"export did not write{where}; choose another --out, or move it away")
        if name in _MODEL_FILES.values():
            found.append(path)
    return found


# Images for the check and the calibration -------------------------------------

def _check_images(run: RunDir, cfg, classes, spec, *, progress: bool) -> tuple[np.ndarray, str]:
    """The first `MAX_CHECK_IMAGES` validation images, topped up to `MIN_CHECK_IMAGES` with test, then training
    images, decoded through the cache; and the splits they came from, e.g. `"val"` or `"val + train"`."""
    from .pipeline import load_split

    manifest = run.manifest(classes)
    parts, splits = [], []
    for split in ("val", "test", "train"):
        taken = sum(map(len, parts))
        if taken >= MIN_CHECK_IMAGES:
            break
        entries = manifest.split(split)
        if entries:
            data = load_split(manifest, split, classes, spec, data=cfg.data, progress=progress)
            if len(data):
                parts.append(np.asarray(data.images[:MAX_CHECK_IMAGES - taken]))
                splits.append(split)
            else:
                run.check_images_exist(split, entries, "Put the data folder back where it was: an export is "
                                                       "checked on the run's own images.")
    if not parts:
        raise ValueError(f"{run.manifest_path} lists no usable image to check the export on. Train the run again.")
    return np.concatenate(parts), " + ".join(splits)


def _representative_images(run: RunDir, cfg, classes, spec, progress: bool) -> np.ndarray:
    """A seeded sample of the run's training images, for int8 calibration."""
    from .pipeline import load_split

    data = load_split(run.manifest(classes), "train", classes, spec, data=cfg.data, progress=progress)
    if not len(data):
        raise ValueError(f"{run.manifest_path} lists no training image to calibrate int8 quantization on.")
    rng = np.random.default_rng(cfg.train.seed)
    rows = np.sort(rng.choice(len(data), size=min(REPRESENTATIVE_IMAGES, len(data)), replace=False))
    return np.asarray(data.images[rows])


# Writing and running each format ------------------------------------------------

def _write_saved_model(model, path: Path, spec) -> None:
    """A SavedModel whose `serve` signature takes uint8 images `(None, height, width, channels)`, as the run does."""
    import tensorflow as tf

    signature = [tf.TensorSpec((None, *spec.shape), tf.uint8, name="image")]
    model.export(str(path), format="tf_saved_model", verbose=False, input_signature=signature)


def _write_tflite(model, path: Path, staging: Path, spec, quantize: str, representative) -> None:
    import tensorflow as tf

    saved = staging / "saved_model_for_tflite"
    _write_saved_model(model, saved, spec)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "int8":
        # int8 weights and activations, ranges measured on training images; input stays uint8, output float.
        converter.representative_dataset = lambda: ([image[None]] for image in representative)
    with _native_logs_held():  # the quantizer prints its settings ("fully_quantize: 0, ...") at any log level
        path.write_bytes(converter.convert())
    shutil.rmtree(saved)


def _predict_keras(path: Path, images: np.ndarray) -> np.ndarray:
    with retracing_expected():
        return load_keras_model(path).predict(images, batch_size=_BATCH, verbose=0)


def _predict_saved_model(path: Path, images: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))  # kept referenced: `serve` uses its variables
    return np.concatenate([loaded.serve(tf.constant(images[i:i + _BATCH])).numpy()
                           for i in range(0, len(images), _BATCH)])


@contextlib.contextmanager
def _native_logs_held():
    """Holds back what native code writes to the process's stderr (file descriptor 2) while the block runs.

    TensorFlow Lite's converter and interpreter print lines such as
    `INFO: Created TensorFlow Lite XNNPACK delegate for CPU.` from C++,
    whatever `TF_CPP_MIN_LOG_LEVEL` says. They are dropped when the block
    succeeds, and written to stderr before its exception when it fails, so
    an error keeps its details.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as held:
            os.dup2(held.fileno(), 2)
            try:
                yield
            except BaseException:
                sys.stderr.flush()
                os.dup2(saved, 2)
                held.seek(0)
                with open(os.dup(2), "wb") as stderr:
                    shutil.copyfileobj(held, stderr)
                raise
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def tflite_interpreter(path):
    """A TFLite interpreter for `path`: LiteRT's (`ai-edge-litert`) where installed, else TensorFlow's."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # tf.lite.Interpreter is deprecated in favour of LiteRT, but still runs
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter(model_path=str(path))


def predict_tflite(path, images: np.ndarray, *, batch_size: int = _BATCH) -> np.ndarray:
    """Probabilities of a `.tflite` classifier on uint8 images `(N, height, width, channels)`.

    Args:
        path: the `.tflite` file.
        images: uint8 images of the model's input size.
        batch_size: images per invocation. Defaults to 64.

    Returns:
        float32 array `(N, classes)`.
    """
    with _native_logs_held():  # the interpreter announces its XNNPACK delegate on stderr
        return _predict_tflite(path, images, batch_size)


def _predict_tflite(path, images: np.ndarray, batch_size: int) -> np.ndarray:
    interpreter = tflite_interpreter(path)
    source = interpreter.get_input_details()[0]
    size = min(batch_size, len(images))
    interpreter.resize_tensor_input(source["index"], [size, *images.shape[1:]])
    interpreter.allocate_tensors()
    target = interpreter.get_output_details()[0]
    results = []
    for start in range(0, len(images), size):
        batch = images[start:start + size]
        n = len(batch)
        if n < size:  # the last batch, padded to the allocated shape
            batch = np.concatenate([batch, np.zeros((size - n, *batch.shape[1:]), batch.dtype)])
        interpreter.set_tensor(source["index"], batch.astype(source["dtype"], copy=False))
        interpreter.invoke()
        results.append(np.array(interpreter.get_tensor(target["index"]))[:n])
    return np.concatenate(results).astype(np.float32)


def _compare(expected: np.ndarray, predicted: np.ndarray, split: str, *, quantized: bool) -> ParityCheck:
    expected = np.asarray(expected, np.float64)
    predicted = np.asarray(predicted, np.float64)
    if predicted.shape != expected.shape:
        return ParityCheck(len(expected), split, float("inf"), 0.0,
                           "top1_agreement" if quantized else "max_abs_difference",
                           QUANTIZED_AGREEMENT if quantized else FLOAT_TOLERANCE)
    difference = float(np.max(np.abs(expected - predicted))) if len(expected) else 0.0
    agreement = float(np.mean(expected.argmax(axis=1) == predicted.argmax(axis=1))) if len(expected) else 1.0
    if quantized:
        return ParityCheck(len(expected), split, difference, agreement, "top1_agreement", QUANTIZED_AGREEMENT)
    return ParityCheck(len(expected), split, difference, agreement, "max_abs_difference", FLOAT_TOLERANCE)


# What travels with the model ------------------------------------------------------

def preprocessing_record(spec, cfg) -> dict:
    """`preprocessing.json`: everything a program needs to turn an image file into the model's input."""
    from .pipeline import limits_of

    background = list(limits_of(cfg.data).background)
    return {
        "input_size": [spec.height, spec.width],
        "height": spec.height,
        "width": spec.width,
        "channels": spec.channels,
        "color_mode": "grayscale" if spec.channels == 1 else "rgb",
        "resize": spec.resize,
        "resize_filter": "bilinear",
        "input_dtype": "uint8",
        "input_range": [0, 255],
        "input_layout": "NHWC",
        "scaling": "none: the model scales its uint8 input itself",
        "jpeg_draft": (f"image.draft(\"{'L' if spec.channels == 1 else 'RGB'}\", ({spec.width}, {spec.height})) on a JPEG "
                       "file as opened (before EXIF orientation): Pillow decodes it at the smallest scale of 1/1, "
                       "1/2, 1/4 or 1/8 that is at least width x height, directly in that mode; then resized"),
        "exif_orientation": "applied before resizing",
        "high_bit_depth": ("16-bit images (I;16) shifted right by 8 bits (65535 -> 255); 32-bit integer images (I) "
                           "shifted right by 8 bits if any value exceeds 255; float images (F) times 255 if all values "
                           "are at most 1; then clipped to 0..255; never clipped first"),
        "transparency": {"composited_on": background},
        "output": "softmax probabilities, one per class, in the order of labels.json",
    }


_RESIZE_CODE = {
    "stretch": "image = image.resize((pre[\"width\"], pre[\"height\"]), Image.Resampling.BILINEAR)",
    "crop": "image = ImageOps.fit(image, (pre[\"width\"], pre[\"height\"]), Image.Resampling.BILINEAR)",
    "pad": ("image = ImageOps.pad(image, (pre[\"width\"], pre[\"height\"]), Image.Resampling.BILINEAR,\n"
            "                     color=255 if pre[\"channels\"] == 1 else (255, 255, 255))"),
}

_RUN_CODE = {
    "keras": ("import keras  # TensorFlow and Keras 3\n"
              "model = keras.saving.load_model(\"model.keras\")  # safe mode: no Python code is loaded\n"
              "probabilities = model.predict(x, verbose=0)[0]"),
    "savedmodel": ("import tensorflow as tf\n"
                   "model = tf.saved_model.load(\"saved_model\")\n"
                   "probabilities = model.serve(tf.constant(x)).numpy()[0]"),
    "tflite": ("try:\n"
               "    from ai_edge_litert.interpreter import Interpreter  # pip install ai-edge-litert\n"
               "except ImportError:\n"
               "    import tensorflow as tf\n"
               "    Interpreter = tf.lite.Interpreter  # deprecated in TensorFlow, still works\n"
               "interpreter = Interpreter(model_path=\"model.tflite\")\n"
               "interpreter.allocate_tensors()  # input shape (1, height, width, channels), uint8\n"
               "interpreter.set_tensor(interpreter.get_input_details()[0][\"index\"], x)\n"
               "interpreter.invoke()\n"
               "probabilities = interpreter.get_tensor(interpreter.get_output_details()[0][\"index\"])[0]"),
}


def readme_text(format: str, quantize: str, spec) -> str:
    """`README.txt`: the files, and a Python example that needs only TensorFlow or LiteRT, Pillow and NumPy."""
    model_file = _MODEL_FILES[format] + ("/" if format == "savedmodel" else "")
    kind = {"keras": "Keras 3 model file", "savedmodel": "TensorFlow SavedModel (signature `serve`)",
            "tflite": "TensorFlow Lite / LiteRT model"}[format]
    if quantize == "dynamic":
        kind += ", int8 weights (dynamic range quantization)"
    elif quantize == "int8":
        kind += ", int8 weights and activations calibrated on training images; uint8 input, float output"
    mode = "grayscale (L)" if spec.channels == 1 else "RGB"
    return f"""An image classifier exported by imgclf.

Files
  {model_file:<19} {kind}
  labels.json         class names; output i is the probability of labels[i]
  preprocessing.json  what the model expects: {spec.height}x{spec.width} pixels, {spec.channels} channel(s) ({mode}),
                      resize "{spec.resize}", uint8 values 0..255 (the model scales them itself)
  export.json         the check this export passed against the original model

Use from Python (needs only Pillow, NumPy and {"LiteRT or TensorFlow" if format == "tflite" else "TensorFlow"}):

import json
import numpy as np
from PIL import Image, ImageOps

labels = json.load(open("labels.json"))
pre = json.load(open("preprocessing.json"))
image = Image.open("photo.jpg")
bits = {{"L;2": 2, "L;4": 4}}.get(image.tile[0][3] if image.format == "PNG" and image.tile else None)
if bits and isinstance(image.info.get("transparency"), int):  # a 2- or 4-bit grey PNG's transparent level,
    image.info["transparency"] = image.info["transparency"] * 255 // (2**bits - 1)  # scaled as its pixels are
if image.format in ("JPEG", "MPO"):  # decoded at a reduced scale no smaller than the model's input, as in training
    image.draft("L" if pre["channels"] == 1 else "RGB", (pre["width"], pre["height"]))
image = ImageOps.exif_transpose(image)
if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):  # 16-bit or float: scaled to 0..255, as in training
    a = np.asarray(image)
    level = image.info.get("transparency")  # a 16-bit grey PNG's transparent level
    opaque = a != level if isinstance(level, int) else None
    if image.mode == "F":
        a = np.clip(a, 0, 1) * 255 if a.max(initial=0) <= 1 else np.clip(a, 0, 255)
    else:
        a = np.clip(a.astype(np.int64) >> 8 if image.mode.startswith("I;16") or a.max(initial=0) > 255 else a, 0, 255)
    image = Image.fromarray(a.astype(np.uint8), mode="L")
    if opaque is not None:
        image.putalpha(Image.fromarray(opaque.astype(np.uint8) * 255))
if image.mode == "La":  # grey and premultiplied alpha
    image = image.convert("LA")
if image.mode in ("LA", "RGBA", "RGBa", "PA") or (image.mode in ("P", "1", "L", "RGB") and "transparency" in image.info):
    rgba = image.convert("RGBA")  # transparent pixels: composited on the background below
    image = Image.alpha_composite(Image.new("RGBA", rgba.size, (*pre["transparency"]["composited_on"], 255)), rgba)
if image.mode == "LAB":  # which Pillow converts to RGB only
    image = image.convert("RGB")
image = image.convert("L" if pre["channels"] == 1 else "RGB")
{_RESIZE_CODE[spec.resize]}
x = np.asarray(image, dtype=np.uint8).reshape(1, pre["height"], pre["width"], pre["channels"])

{_RUN_CODE[format]}
best = int(np.argmax(probabilities))
print(labels[best], float(probabilities[best]))

Several images at once: stack them into x of shape (N, height, width, channels){
"; for tflite call interpreter.resize_tensor_input(index, x.shape) and allocate_tensors() first" if format == "tflite" else ""}.
"""

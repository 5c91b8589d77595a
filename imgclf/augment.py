"""Training-time augmentation: albumentations presets by name, pipelines from YAML files, and their round trip.

A pipeline is chosen by a preset name (`build_augment("standard")`) or by the
path of a YAML file in the format a run writes to its `augment.yaml`
(`build_augment("my-augment.yaml")`), so a run's augmentation can be copied,
edited and reused. A file is checked completely when it is read: an unknown
transform, an unknown argument or an invalid value is an `AugmentError` that
names the file, the transform and the argument, before any image is decoded.

`flip=False` removes the transforms that mirror an image (`MIRRORS`) from a
preset or a file, for data where a mirror image is another class.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import inspect
import os
import warnings
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations asks PyPI for updates at import otherwise

import albumentations as A  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402
from albumentations.augmentations.mixing.domain_adaptation import BaseDomainAdaptation  # noqa: E402
from albumentations.core.serialization import SERIALIZABLE_REGISTRY, shorten_class_name  # noqa: E402

from .config import AugmentConfig, ConfigError, load_yaml  # noqa: E402

PRESETS = ("none", "light", "standard", "heavy")
# The default: the preset chosen by the images' channels (`auto_preset`).
AUTO = "auto"
# Transforms that can mirror an image; `flip=False` removes them. D4 (alias SquareSymmetry) draws one of
# the 8 symmetries of a square, 4 of which are mirror images, so it goes too (with its pure rotations).
MIRRORS = ("HorizontalFlip", "VerticalFlip", "Transpose", "D4", "SquareSymmetry")
YAML_SUFFIXES = (".yaml", ".yml")
# Seeds each transform is tried with by `check_augment`: a random turn of a non-square image is drawn among them.
CHECK_SEEDS = range(8)
# The bytes of the files `pin_augment` read, by SHA-256: the pipeline is built from the bytes that were hashed.
_PINNED: dict[str, bytes] = {}
# Base classes in albumentations' registry that are not transforms of their own.
_BASES = {"BasicTransform", "DualTransform", "ImageOnlyTransform", "Transform3D", "BaseCompose", "MaxSizeTransform"}


class AugmentError(ConfigError):
    """An augmentation preset, file or pipeline cannot be used; the message names it and the fix."""


def is_augment_file(preset: str) -> bool:
    """Whether `preset` names a YAML file (`.yaml` or `.yml`) rather than a preset."""
    return str(preset).lower().endswith(YAML_SUFFIXES)


def auto_preset(channels: int) -> str:
    """The preset `"auto"` stands for: `"light"` (no flips, no colour changes) for grayscale images, which are
    often digits or text, and `"standard"` for colour ones."""
    return "light" if channels == 1 else "standard"


def build_augment(augment, *, channels: int = 3, seed: int | None = None, flip: bool = True) -> A.Compose:
    """Returns the albumentations pipeline of a preset or of a YAML file.

    Presets:
        - `auto`: `light` for grayscale images, `standard` for colour ones.
        - `none`: no change.
        - `light`: small shifts, scales and rotations (safe for digits and text).
        - `standard`: `light` plus horizontal flips and brightness/contrast.
        - `heavy`: `standard` with stronger geometry, colour jitter (RGB
          only), blur and random erasing.

    Args:
        augment: one of `PRESETS`, the path of a `.yaml`/`.yml` file in the
            format of a run's `augment.yaml` (see `read_augment`), or an
            `AugmentConfig` (its `preset`, `flip` and `sha256`: a file is
            built from the bytes `pin_augment` hashed).
        channels: 1 for grayscale images (the presets leave colour
            transforms out), 3 for RGB. A file's pipeline is used as written.
            Defaults to 3.
        seed: seed of the pipeline's random generators. Defaults to `None`.
        flip: keep the transforms of `MIRRORS`; `False` removes them.
            With an `AugmentConfig`, its `flip` must allow them too.
            Defaults to `True`.

    Returns:
        An `A.Compose` that maps `image=uint8 HxWxC` to the same shape.

    Raises:
        AugmentError: for an unknown preset, a missing file, or a file that
            does not hold a valid pipeline.

    Example:

    >>> pipeline = build_augment("standard", seed=0, flip=False)
    >>> pipeline = build_augment("runs/flowers/augment.yaml", seed=0)
    """
    sha256 = None
    if isinstance(augment, AugmentConfig):
        augment, flip, sha256 = augment.preset, flip and augment.flip, augment.sha256
    if augment == AUTO:
        augment = auto_preset(channels)
    if augment in PRESETS:
        pipeline = _preset(augment, channels=channels, flip=flip)
    elif isinstance(augment, (str, os.PathLike)) and is_augment_file(os.fspath(augment)):
        pipeline = read_augment(augment, flip=flip, sha256=sha256)
    else:
        raise AugmentError(f"Unknown augmentation preset {augment!r}. Valid presets: {', '.join((AUTO, *PRESETS))}; or the "
                           f"path of a YAML file ({' or '.join(YAML_SUFFIXES)}) holding an albumentations pipeline "
                           "in the format of a run's augment.yaml.")
    if seed is not None:
        pipeline.set_random_seed(seed)
    return pipeline


def _preset(name: str, *, channels: int, flip: bool) -> A.Compose:
    transforms = []
    if name == "light":
        transforms = [A.Affine(scale=(0.92, 1.08), translate_percent=(-0.08, 0.08), rotate=(-10, 10), p=0.7)]
    elif name == "standard":
        transforms = [
            *([A.HorizontalFlip(p=0.5)] if flip else []),
            A.Affine(scale=(0.85, 1.15), translate_percent=(-0.1, 0.1), rotate=(-15, 15), p=0.7),
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
        ]
    elif name == "heavy":
        transforms = [
            *([A.HorizontalFlip(p=0.5)] if flip else []),
            A.Affine(scale=(0.75, 1.25), translate_percent=(-0.15, 0.15), rotate=(-25, 25), shear=(-8, 8), p=0.8),
            A.RandomBrightnessContrast(brightness_limit=0.3, contrast_limit=0.3, p=0.6),
            *([A.HueSaturationValue(p=0.4)] if channels == 3 else []),
            A.GaussianBlur(blur_limit=(3, 5), p=0.2),
            A.CoarseDropout(num_holes_range=(1, 4), hole_height_range=(0.05, 0.2), hole_width_range=(0.05, 0.2), p=0.4),
        ]
    return A.Compose(transforms)


def augment_to_yaml(pipeline: A.Compose) -> str:
    """Serialises any albumentations pipeline to YAML text (albumentations' own dict format)."""
    return yaml.safe_dump(A.to_dict(pipeline), sort_keys=False)


def augment_from_yaml(text: str, *, source: str = "augmentation YAML", flip: bool = True) -> A.Compose:
    """Reads a pipeline written by `augment_to_yaml` (or by hand in that format).

    Args:
        text: YAML text.
        source: what the text came from, for error messages.
            Defaults to `"augmentation YAML"`.
        flip: keep the transforms of `MIRRORS`. Defaults to `True`.

    Returns:
        An `A.Compose`.

    Raises:
        AugmentError: naming the transform and argument that are wrong.
    """
    try:
        values = load_yaml(text)
    except yaml.YAMLError as error:
        raise AugmentError(f"{source} is not valid YAML: {error}") from None
    return pipeline_from_dict(values, source=source, flip=flip)


def read_augment(path, *, flip: bool = True, sha256: str | None = None) -> A.Compose:
    """Reads an albumentations pipeline from a YAML file.

    The file holds the dict `A.to_dict` makes, as a run's `augment.yaml`
    does: a `transform` mapping (usually a `Compose`) whose transforms each
    name their albumentations class in `__class_fullname__` and give their
    arguments beside it. A transform without `p` takes its class's default.

    Example file:

    ```yaml
    transform:
      __class_fullname__: Compose
      transforms:
      - __class_fullname__: Affine
        rotate: [-10, 10]
        p: 0.7
      - __class_fullname__: RandomBrightnessContrast
        p: 0.5
    ```

    Args:
        path: the `.yaml` or `.yml` file.
        flip: keep the transforms of `MIRRORS`. Defaults to `True`.
        sha256: the hash `pin_augment` recorded: the pipeline is built from
            the bytes it read, whatever happened to the file since; a file
            not pinned in this process must still have this hash.
            Defaults to `None`: the file as it is now.

    Returns:
        An `A.Compose`.

    Raises:
        AugmentError: for a missing file, one changed since `sha256`, invalid YAML, or an unknown
            transform, unknown argument or invalid value (named, with the
            file and the transform's place in it).
    """
    path = Path(path)
    data = _PINNED.get(sha256)
    if data is None:
        data = _read_bytes(path)
        if sha256:
            _check_unchanged(path, sha256, hashlib.sha256(data).hexdigest())
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise AugmentError(f"Cannot read augmentation file {path}: {error}") from None
    return augment_from_yaml(text, source=str(path), flip=flip)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise AugmentError(f"Augmentation file not found: {path}. Check the path; a run's own pipeline is its "
                           "augment.yaml.") from None
    except OSError as error:
        raise AugmentError(f"Cannot read augmentation file {path}: {error}") from None


def _check_unchanged(path: Path, recorded: str, digest: str) -> None:
    if recorded != digest:
        raise AugmentError(
            f"Augmentation file {path} changed since it was recorded (sha256 {recorded[:12]}, now {digest[:12]}). "
            f"A run's exact pipeline is in its augment.yaml: start a new run with --augment RUN/augment.yaml, or name "
            f"the file again (--augment {path}) to use it as it is now."
        )


def pipeline_from_dict(values, *, source: str = "augmentation", flip: bool = True) -> A.Compose:
    """Builds a pipeline from albumentations' dict format, checking every transform and argument.

    `A.from_dict` only warns about an unknown argument, raises a bare
    `KeyError` for an unknown transform and never says which transform an
    invalid value belongs to; this walks the dict itself so every error
    names the transform, its place and the argument.

    Args:
        values: `{"transform": {...}}` as `A.to_dict` makes it (a
            `__version__` key is allowed), or the transform mapping itself.
        source: what the values came from, for error messages.
            Defaults to `"augmentation"`.
        flip: keep the transforms of `MIRRORS`. Defaults to `True`.

    Returns:
        An `A.Compose` (a single transform at the top is wrapped in one).
    """
    if not isinstance(values, dict):
        raise AugmentError(f"{source}: an augmentation pipeline must be a mapping with a 'transform' key (the format "
                           f"of a run's augment.yaml). Received: {_short(values)}")
    if "transform" in values:
        unknown = sorted(set(values) - {"transform", "__version__"})
        if unknown:
            raise AugmentError(f"{source}: unknown top-level key {unknown[0]!r}. Valid keys: transform, __version__.")
        node, where = values["transform"], "transform"
    elif "__class_fullname__" in values:
        node, where = values, "the top level"
    else:
        raise AugmentError(f"{source}: no 'transform' key: an augmentation pipeline is a mapping with a 'transform' "
                           f"key (the format of a run's augment.yaml). Received keys: {sorted(map(str, values))}")
    built = _build(node, where, source, flip)
    if built is None:  # the whole pipeline was a mirror, removed by flip=False
        return A.Compose([])
    return built if isinstance(built, A.Compose) else A.Compose([built])


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _build(node, where: str, source: str, flip: bool):
    """One transform of a pipeline dict (and, for a compose, its transforms); `None` if `flip` removes it."""
    if not isinstance(node, dict) or "__class_fullname__" not in node:
        raise AugmentError(f"{source}: {where} must be a mapping that names its transform in __class_fullname__, "
                           f"e.g. {{__class_fullname__: Affine, rotate: [-10, 10], p: 0.5}}. Received: {_short(node)}")
    full_name = node["__class_fullname__"]
    name = shorten_class_name(str(full_name))
    if name == "Lambda":
        raise AugmentError(f"{source}: {where} is a Lambda transform, which holds Python code and cannot be read from "
                           "YAML. Replace it with albumentations transforms.")
    if name not in _transform_names():
        close = difflib.get_close_matches(name, _transform_names(), n=3)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise AugmentError(f"{source}: unknown transform {full_name!r} at {where}.{hint} Transforms are albumentations "
                           f"{A.__version__} class names, e.g. Affine, HorizontalFlip, RandomBrightnessContrast.")
    cls = SERIALIZABLE_REGISTRY[name]
    if not flip and name in MIRRORS:
        return None
    place = f"{name} ({where})"
    if issubclass(cls, A.ReplayCompose):
        raise AugmentError(f"{source}: {place}: {name} records each call's parameters to replay them on other images, "
                           "which training never does. Use Compose.")
    if issubclass(cls, BaseDomainAdaptation):
        raise AugmentError(f"{source}: {place}: {name} matches each image to reference images passed with it, which "
                           "training cannot pass, and a run's augment.yaml cannot record. Leave it out.")
    args = {key: value for key, value in node.items() if key != "__class_fullname__"}
    parameters = inspect.signature(cls.__init__).parameters
    inherited = {}
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        valid = [key for key in parameters if key != "self"]
        derived = _inherited_arguments(cls) - set(valid)
        for key in args:
            if key not in valid and key not in derived:
                raise AugmentError(f"{source}: {place}: unknown argument {key!r}. Valid arguments of {name}: "
                                   f"{', '.join(valid)}.")
        # A.to_dict also writes the arguments of the parent classes, which the class sets from its own.
        inherited = {key: args.pop(key) for key in list(args) if key in derived}
    if issubclass(cls, A.BaseCompose):
        # Unlike the transforms, albumentations' composes take any p; above 1 it acts as 1.
        chance = args.get("p", 0)
        if isinstance(chance, bool) or not isinstance(chance, (int, float)) or not 0 <= chance <= 1:
            raise AugmentError(f"{source}: {place}: invalid argument p: Input should be a number from 0 to 1. "
                               f"Received: p={chance!r}")
        children = args.get("transforms")
        if not isinstance(children, list):
            raise AugmentError(f"{source}: {place}: transforms must be a list of transforms. Received: "
                               f"transforms={_short(children)}")
        built = [_build(child, f"{where}.transforms[{i}]", source, flip) for i, child in enumerate(children)]
        args["transforms"] = [transform for transform in built if transform is not None]
    try:
        transform = cls(**args)
    except (ValueError, TypeError) as error:
        raise AugmentError(f"{source}: {place}: {_describe(error, args)}") from None
    try:
        recorded = transform.to_dict_private()  # what the run's augment.yaml will record
    except NotImplementedError as error:
        raise AugmentError(f"{source}: {place}: a run's augment.yaml cannot record it ({error}). Leave it out.") from None
    if inherited:
        for key, value in inherited.items():
            if _plain(value) != _plain(recorded.get(key)):
                raise AugmentError(f"{source}: {place}: argument {key!r} is set by {name} from its own arguments "
                                   f"(to {_short(_plain(recorded.get(key)))}). Received: {key}={_short(value)}. "
                                   f"Leave it out, or set it through {', '.join(valid)}.")
    return transform


def _inherited_arguments(cls) -> set[str]:
    """The arguments of the transform classes `cls` derives from."""
    names = set()
    for parent in cls.__mro__[1:]:
        if issubclass(parent, (A.BasicTransform, A.BaseCompose)):
            names.update(key for key, p in inspect.signature(parent.__init__).parameters.items()
                         if key != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))
    return names


def _plain(value):
    """A value as YAML reads it back: tuples as lists."""
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _describe(error: Exception, args: dict) -> str:
    """The first invalid argument of a transform and why, from albumentations' pydantic error if it has one."""
    cause = error.__cause__ or error.__context__
    details = getattr(cause, "errors", None) or getattr(error, "errors", None)
    if callable(details):
        for detail in details():
            if detail.get("loc"):
                key = str(detail["loc"][0])
                if key in args:
                    return f"invalid argument {key}: {detail['msg']}. Received: {key}={args[key]!r}"
                return f"{detail['msg']} ({'.'.join(map(str, detail['loc']))})"
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _transform_names() -> list[str]:
    """The transform classes a YAML file may name."""
    return sorted(name for name, cls in SERIALIZABLE_REGISTRY.items()
                  if inspect.isclass(cls) and issubclass(cls, (A.BasicTransform, A.BaseCompose)) and name not in _BASES)


def augment_sha256(path) -> str:
    """SHA-256 of a file's bytes, as `AugmentConfig.sha256` records it."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def pin_augment(augment: AugmentConfig, *, kept: Path | None = None) -> AugmentConfig:
    """Records the SHA-256 of the YAML file an `AugmentConfig` names.

    A config that already records one (a resumed run, or a run's
    `config.yaml` used again) must still match the file, so a file edited
    since cannot silently change a run's augmentation. The file is read
    once, here: `build_augment` with the returned config builds the
    pipeline from these bytes, so the pipeline that trains is the one
    whose hash the run records, even if the file is edited or deleted
    after the run starts.

    Args:
        augment: the config; a preset name is returned unchanged.
        kept: the `augment.yaml` of the run being resumed: where the file
            `augment` records is gone (moved, or deleted), the run goes on
            with the pipeline this copy holds. Defaults to `None`.

    Returns:
        The config with `sha256` set for a file, whose path is made
        absolute.

    Raises:
        AugmentError: for a missing file, or one that changed since its
            hash was recorded.
    """
    if not is_augment_file(augment.preset):
        return augment
    path = Path(augment.preset)
    if kept is not None and augment.sha256 and not os.path.lexists(path) and kept.is_file():
        _PINNED[augment.sha256] = kept.read_bytes()
        return augment
    data = _read_bytes(path)
    digest = hashlib.sha256(data).hexdigest()
    if augment.sha256:
        _check_unchanged(path, augment.sha256, digest)
    _PINNED[digest] = data
    # The absolute path: the run's config.yaml repeats it from any folder.
    return dataclasses.replace(augment, preset=os.path.abspath(path), sha256=digest)


def check_augment(pipeline: A.Compose, shape: tuple[int, int, int], *, source: str) -> None:
    """Raises for a transform that cannot keep an image of `shape` as the model sees it, before any image is read.

    A blank uint8 image of `shape` goes through the pipeline with every
    transform both applied (`p=1`, on a copy, with each seed of
    `CHECK_SEEDS`) and, where its `p` is below 1, left out, so a transform
    that breaks the image only now and then is found too, and one that
    only prepares the next (`PadIfNeeded` before `RandomCrop`) is not
    refused. A transform whose output size is random can still break an
    image later, when `apply_augment` refuses it.

    Args:
        pipeline: the pipeline training or the preview will apply.
        shape: `(height, width, channels)` of the images the model sees.
        source: the preset name or the YAML file, for error messages.

    Raises:
        AugmentError: naming the source, the transform and its place, for a
            transform that fails on such an image (one that needs bounding
            boxes, masks or other targets) or after which the pipeline can
            return another size, channels or dtype.
    """
    source = source if is_augment_file(source) else f"augment preset {source!r}"
    blank = np.zeros(shape, np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "The image is already gray": a blank image is no real one
        outcomes = _outcomes(pipeline, {_kind(blank): (blank, None)}, "transform", source)
        for image, culprit in outcomes.values():
            problem = _changed(blank, image)
            if problem:
                raise AugmentError(f"{source}: {culprit}: with it the pipeline {problem}")
        whole = copy.deepcopy(pipeline)  # the composes' own settings, such as bbox_params
        whole.set_random_seed(0)
        _apply_once(whole, blank, f"{source}: {type(pipeline).__name__} (transform)")


def _kind(image: np.ndarray) -> tuple:
    return image.shape, image.dtype.str


def _outcomes(transform, images: dict, where: str, source: str) -> dict:
    """The images `transform` can turn `images` into: `{(shape, dtype): (image, the last transform that changed it)}`."""
    if isinstance(transform, A.OneOrOther):  # its p picks the first child or the last, and the one picked always runs
        results = {}
        for i in sorted({0, len(transform.transforms) - 1} if transform.transforms else set()):
            results.update(_outcomes(transform.transforms[i], images, f"{where}.transforms[{i}]", source))
        return results or dict(images)
    if isinstance(transform, (A.Compose, A.Sequential, A.OneOf, A.SomeOf)):
        results = {} if isinstance(transform, A.OneOf) else dict(images)
        for i, child in enumerate(transform.transforms):
            place = f"{where}.transforms[{i}]"
            if isinstance(transform, A.OneOf):  # one child, on the compose's input
                results.update(_outcomes(child, images, place, source))
            elif isinstance(transform, A.SomeOf):  # any of the children, in turn
                results.update(_outcomes(child, results, place, source))
            else:
                results = _outcomes(child, results, place, source)
        if transform.p < 1 or not transform.transforms:
            results.update(images)
        return results
    results = dict(images) if transform.p < 1 else {}
    name = f"{type(transform).__name__} ({where})"
    always = copy.deepcopy(transform)
    always.p = 1.0
    single = A.Compose([always])
    for image, culprit in images.values():
        for seed in CHECK_SEEDS:
            single.set_random_seed(seed)
            result = _apply_once(single, image, f"{source}: {name}")
            results[_kind(result)] = (result, culprit if _kind(result) == _kind(image) else name)
    return results


def _apply_once(pipeline: A.Compose, image: np.ndarray, name: str) -> np.ndarray:
    try:
        result = pipeline(image=image)["image"]
    except KeyError as error:  # a target the transform reads: bboxes, mask, ...
        raise AugmentError(f"{name} failed on a {_dims(image)} image: {type(error).__name__}: {error}. Training "
                           "passes only the image (no bounding boxes, masks or other targets): leave out transforms "
                           "that need more.") from None
    except Exception as error:
        raise AugmentError(f"{name} failed on a {_dims(image)} image: {type(error).__name__}: {error}. Change its "
                           "arguments, or leave it out.") from None
    if not isinstance(result, np.ndarray):
        raise AugmentError(f"{name} returned a {type(result).__name__}; it must return uint8 images.")
    return result


def _dims(array) -> str:
    return "x".join(map(str, getattr(array, "shape", ())))


def _changed(image: np.ndarray, result) -> str | None:
    """Why `result` cannot stand for the augmented `image`, or `None`."""
    if not isinstance(result, np.ndarray):
        return f"returned a {type(result).__name__}; it must return uint8 images of the image's shape."
    if result.dtype != np.uint8:
        return (f"returned {result.dtype} pixels; it must return uint8 images (0-255), which the model scales "
                "itself. Leave out transforms that make floats (Normalize, ToFloat).")
    if result.shape[:2] == image.shape[:2] and result.size == image.size:  # (H, W) for (H, W, 1) is the same
        return None
    change = f"changed an image of {_dims(image)} to {_dims(result)}"
    if result.shape[:2] == image.shape[:2]:
        return (f"{change}; it must keep the image's {image.shape[-1]} channel(s). Leave out transforms that change "
                "them (ToGray, ToRGB), or set the color mode (--color-mode) to theirs.")
    if result.shape[:2] == image.shape[1::-1]:
        return (f"{change}; it must keep the size the model sees, and this turns a non-square image. Leave out "
                "transforms that turn it (Transpose, RandomRotate90, D4), or make the image size square.")
    return (f"{change}; it must keep the size the model sees. Give crops and resizes (RandomResizedCrop, Resize) "
            "the image size, or set the image size to theirs.")


def apply_augment(pipeline: A.Compose, images: np.ndarray) -> np.ndarray:
    """Applies a pipeline to each image of a batch, drawing from the pipeline's random generators in order.

    Args:
        pipeline: an albumentations pipeline.
        images: uint8 array `(N, height, width, channels)`.

    Returns:
        The augmented batch, of the same shape.

    Raises:
        AugmentError: if a transform fails on these images or changes their
            size (a pipeline must keep the size the model sees).
    """
    out = np.empty_like(images)
    for i, image in enumerate(images):
        try:
            result = pipeline(image=image)["image"]
        except Exception as error:
            raise AugmentError(f"The augmentation pipeline failed on a {_dims(image)} image: "
                               f"{type(error).__name__}: {error}") from error
        problem = _changed(image, result)
        if problem:
            raise AugmentError(f"The augmentation pipeline {problem}")
        out[i] = result.reshape(image.shape)
    return out

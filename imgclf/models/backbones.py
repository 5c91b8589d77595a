"""Pretrained backbones from `keras.applications`, each behind one generic classification head.

A `Backbone` is what a backbone needs besides its Keras constructor: the input
size it was trained at, how its inputs are scaled, the sizes its ImageNet
weights exist for, the name of its weights file, and where its blocks start
(for unfreezing the top K). The model built around it takes raw uint8 images:

```
uint8 image (H, W, C) → [grey channel repeated to RGB] → [scaling] → backbone(training=False) → head
```

Scaling is a `Rescaling` layer, never a `Lambda`, so `model.keras` loads in
Keras' safe mode. MobileNetV3, EfficientNet(V2) and ConvNeXt scale their inputs
themselves and take 0..255 as they are.
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from pathlib import Path
from typing import Callable

import keras
from keras import layers

from ..config import ImageSpec, ModelConfig
from . import MODELS, probabilities_layer

# ImageNet mean and standard deviation of RGB in [0, 1], for backbones trained in PyTorch's convention.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

# How each `preprocess_input` of keras.applications scales 0..255 pixels: (scale, offset) of `Rescaling`.
_SCALING = {
    "tf": (1.0 / 127.5, -1.0),  # [-1, 1]
    "torch": ([1.0 / (255.0 * s) for s in _IMAGENET_STD], [-m / s for m, s in zip(_IMAGENET_MEAN, _IMAGENET_STD)]),
    "built_in": None,  # the backbone holds its own preprocessing and takes 0..255
}


# Batch-norm momentum of a backbone trained from random weights (as small_cnn uses).
BATCH_NORM_MOMENTUM_FROM_SCRATCH = 0.9


class WeightsError(ValueError):
    """Pretrained weights cannot be found or do not fit; the message names the file and the fix."""


@dataclasses.dataclass(frozen=True)
class Backbone:
    """A `keras.applications` network used without its top, and what imgclf needs to know about it.

    Args:
        name: the name `--model` takes, e.g. `"mobilenet_v2"`.
        constructor: the `keras.applications` function that builds it.
        default_size: the input size its ImageNet weights were trained at.
        preprocessing: `"tf"` ([-1, 1]), `"torch"` (ImageNet mean/std) or
            `"built_in"` (the network scales 0..255 itself).
        weights_file: name of the ImageNet weights file (without top), with
            `{size}` where it depends on the input size.
        parameters: weights of the network without its top.
        block_pattern: regular expression whose first group names the block
            a layer belongs to; layers that do not match belong to the block
            before them.
        weight_sizes: square input sizes an ImageNet weights file exists for;
            other sizes use the `default_size` file. Defaults to `()`: one
            file for every size.
        min_size: smallest input side it accepts. Defaults to 32.
    """

    name: str
    constructor: Callable[..., keras.Model]
    default_size: int
    preprocessing: str
    weights_file: str
    parameters: int
    block_pattern: str
    weight_sizes: tuple[int, ...] = ()
    min_size: int = 32

    def __call__(self, cfg: ModelConfig, spec: ImageSpec, num_classes: int) -> keras.Model:
        return build_classifier(self, cfg, spec, num_classes)

    @property
    def description(self) -> str:
        """One line for `imgclf models`."""
        return f"keras.applications.{self.constructor.__name__}, ImageNet weights at {self.default_size} px"

    def check_size(self, spec: ImageSpec) -> None:
        """Raises `ValueError` for images smaller than `min_size` on a side."""
        if min(spec.height, spec.width) < self.min_size:
            raise ValueError(
                f"{self.name} needs images of at least {self.min_size}x{self.min_size} pixels. "
                f"Received: image_size=({spec.height}, {spec.width}); pass --image-size {self.min_size} or larger."
            )

    def weights_size(self, spec: ImageSpec) -> int:
        """The input size of the ImageNet weights file Keras loads for `spec`."""
        if not self.weight_sizes:
            return self.default_size
        square = spec.height == spec.width and spec.height in self.weight_sizes
        return spec.height if square else self.default_size

    def weights_filename(self, spec: ImageSpec) -> str:
        """The file `keras.applications` looks for in `$KERAS_HOME/models` for `spec`."""
        return self.weights_file.format(size=self.weights_size(spec))

    def cached_sizes(self) -> list[int]:
        """Input sizes whose ImageNet weights file is in the Keras cache, the default size first."""
        sizes = sorted(self.weight_sizes or (self.default_size,), key=lambda s: (s != self.default_size, s))
        return [s for s in sizes if (weights_cache_dir() / self.weights_file.format(size=s)).is_file()]

    def blocks(self, backbone: keras.Model) -> list[list[keras.layers.Layer]]:
        """The backbone's layers grouped into blocks, input to output; the first group is the stem.

        Layers after the last block (a final convolution, normalisation)
        belong to the last block.
        """
        pattern = re.compile(self.block_pattern)
        groups: list[list] = [[]]
        current = None
        for layer in backbone.layers:
            match = pattern.search(layer.name)
            if match and match.group(1) != current:
                current = match.group(1)
                groups.append([])
            groups[-1].append(layer)
        return groups


def weights_cache_dir() -> Path:
    """Where Keras keeps downloaded weights: `$KERAS_HOME/models`, by default `~/.keras/models`."""
    # Keras reads KERAS_HOME once, at import; its private accessor is the one place that knows the result.
    from keras.src.backend.config import keras_home

    return Path(keras_home()) / "models"


def _register(backbone: Backbone) -> Backbone:
    MODELS.register(backbone.name)(backbone)
    return backbone


_applications = keras.applications
BACKBONES = tuple(_register(b) for b in (
    Backbone("mobilenet_v2", _applications.MobileNetV2, 224, "tf",
             "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{size}_no_top.h5", 2_257_984,
             r"^(expanded_conv|block_\d+)_", weight_sizes=(96, 128, 160, 192, 224)),
    Backbone("mobilenet_v3_small", _applications.MobileNetV3Small, 224, "built_in",
             "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5", 939_120, r"^(expanded_conv(?:_\d+)?)_"),
    Backbone("mobilenet_v3_large", _applications.MobileNetV3Large, 224, "built_in",
             "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5", 2_996_352, r"^(expanded_conv(?:_\d+)?)_"),
    Backbone("efficientnet_b0", _applications.EfficientNetB0, 224, "built_in",
             "efficientnetb0_notop.h5", 4_049_571, r"^(block\d+[a-z])_"),
    Backbone("efficientnet_v2_b0", _applications.EfficientNetV2B0, 224, "built_in",
             "efficientnetv2-b0_notop.h5", 5_919_312, r"^(block\d+[a-z])_"),
    Backbone("resnet50_v2", _applications.ResNet50V2, 224, "tf",
             "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5", 23_564_800, r"^(conv\d_block\d+)_"),
    Backbone("densenet121", _applications.DenseNet121, 224, "torch",
             "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5", 7_037_504, r"^(conv\d_block\d+)_"),
    Backbone("convnext_tiny", _applications.ConvNeXtTiny, 224, "built_in",
             "convnext_tiny_notop.h5", 27_820_128, r"_(stage_\d+_block_\d+)_"),
))


def get_backbone(name: str) -> Backbone | None:
    """The `Backbone` registered as `name`, or `None` for a network trained from scratch."""
    return next((b for b in BACKBONES if b.name == name), None)


def find_backbone_layer(model: keras.Model) -> keras.Model:
    """The backbone inside a classifier built by `build_classifier` (its one nested model)."""
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(nested) != 1:
        raise WeightsError(f"{model.name} holds {len(nested)} nested models; expected one backbone.")
    return nested[0]


# Building ------------------------------------------------------------------

def build_classifier(backbone: Backbone, cfg: ModelConfig, spec: ImageSpec, num_classes: int) -> keras.Model:
    """Builds uint8 image → scaling → backbone → `classification_head`.

    A pretrained backbone runs in inference mode (`training=False`), so its
    batch normalisation statistics stay those it was trained with, in both
    phases of fine-tuning; a backbone trained from random weights learns them.

    Args:
        backbone: which network.
        cfg: `weights` (see `ModelConfig`) and `dropout` of the head.
        spec: input size and channels; grey images are repeated to RGB
            inside the model.
        num_classes: width of the softmax.

    Returns:
        An uncompiled `keras.Model` from uint8 `(N, H, W, C)` to class
        probabilities `(N, num_classes)`.

    Raises:
        WeightsError: the weights cannot be found or do not fit.
    """
    backbone.check_size(spec)
    features = create_backbone(backbone, cfg.weights, spec)
    inputs = keras.Input(shape=spec.shape, name="image")
    x = inputs
    if spec.channels == 1:
        x = layers.Concatenate(name="grey_to_rgb")([x, x, x])
    scaling = _SCALING[backbone.preprocessing]
    if scaling is not None:
        x = layers.Rescaling(scaling[0], offset=scaling[1], name="preprocess")(x)
    x = features(x, training=False) if cfg.pretrained else features(x)
    outputs = classification_head(x, num_classes, dropout=0.2 if cfg.dropout is None else cfg.dropout)
    return keras.Model(inputs, outputs, name=f"{backbone.name}_classifier")


def classification_head(features, num_classes: int, *, dropout: float = 0.2):
    """The head every backbone shares: global average pooling → dropout → softmax.

    Args:
        features: a feature map `(N, h, w, channels)`.
        num_classes: width of the softmax.
        dropout: dropout rate before the last layer. Defaults to 0.2.

    Returns:
        Class probabilities `(N, num_classes)`.
    """
    x = layers.GlobalAveragePooling2D(name="pool")(features)
    if dropout:
        x = layers.Dropout(dropout, name="head_dropout")(x)
    return probabilities_layer(num_classes)(x)


def create_backbone(backbone: Backbone, weights: str | None, spec: ImageSpec) -> keras.Model:
    """Builds the backbone for RGB input of `spec`'s size and loads `weights` into it.

    Args:
        backbone: which network.
        weights: `"imagenet"`, `"none"` (or `None`), a weights file, or `"run:DIR"`.
        spec: input size.

    Returns:
        A `keras.Model` from `(N, H, W, 3)` to a feature map.

    Raises:
        WeightsError: the weights cannot be found or do not fit.
    """
    shape = (spec.height, spec.width, 3)
    if weights in (None, "none"):
        model = backbone.constructor(input_shape=shape, include_top=False, weights=None)
        for layer in model.layers:
            if isinstance(layer, layers.BatchNormalization):
                # keras.applications use momentum 0.99-0.999, tuned for ImageNet's millions of steps: on a
                # folder of a few thousand images the moving statistics would stay near their initial
                # values, and the model would predict one class in inference mode.
                layer.momentum = BATCH_NORM_MOMENTUM_FROM_SCRATCH
        return model
    if weights == "imagenet":
        return _imagenet_backbone(backbone, spec)
    if weights.startswith("run:"):
        return find_backbone_layer(_source_run(backbone, weights, spec).load_model())
    path = _weights_file(weights)
    model = backbone.constructor(input_shape=shape, include_top=False, weights=None)
    try:
        with warnings.catch_warnings():  # a mismatch warns once per layer before it raises: the error says it all
            warnings.simplefilter("ignore")
            model.load_weights(path)
    except Exception as error:  # Keras raises ValueError or h5py errors, depending on the mismatch
        reason = str(error).split("\n")[0][:300]
        hint = (" It is a whole model (.keras): for a model trained by imgclf, pass --weights run:DIR with its run "
                "folder." if str(path).endswith(".keras") else "")
        raise WeightsError(f"{path} does not hold weights of {backbone.name} ({reason}). Pass a .weights.h5 file "
                           f"saved from keras.applications' {backbone.name} without its top.{hint}") from None
    return model


def _imagenet_backbone(backbone: Backbone, spec: ImageSpec) -> keras.Model:
    """Through Keras's own download and cache; offline and uncached, fails at once naming the file."""
    filename = backbone.weights_filename(spec)
    folder = weights_cache_dir()
    cached = (folder / filename).is_file()
    try:
        return backbone.constructor(input_shape=(spec.height, spec.width, 3), include_top=False, weights="imagenet")
    except Exception as error:  # keras' get_file raises a bare Exception ("URL fetch failure ...")
        if (folder / filename).is_file():
            raise WeightsError(f"ImageNet weights of {backbone.name} in {folder / filename} could not be loaded: {error}. "
                               "Delete the file to download it again.") from None
        if cached:  # Keras checks the file's hash, removes a file that fails it, then tries to download it again
            raise WeightsError(
                f"{folder / filename} was incomplete or damaged (its hash is not the one Keras expects), so Keras "
                f"removed it, and downloading it again failed: {(str(error).splitlines() or [''])[0][:200]}. Copy "
                "a complete file there (compare its size with the original), or pass --weights none.") from None
        reason = re.sub(r" on \S+?: ", ": ", (str(error).splitlines() or [type(error).__name__])[0])  # the URL is long
        raise WeightsError(
            f"ImageNet weights of {backbone.name} are not in the Keras cache and could not be downloaded "
            f"({reason}). Put the file {filename} into {folder}{os.sep} (copy it from a "
            f"machine with internet, where `keras.applications.{backbone.constructor.__name__}(include_top=False, "
            f"input_shape=({spec.height}, {spec.width}, 3))` downloads it), or pass --weights none."
        ) from None


def _weights_file(weights: str) -> Path:
    path = Path(weights).expanduser()
    if path.is_dir():
        run = f", or run:{path} to start from the imgclf run in it" if (path / "config.yaml").is_file() else ""
        raise WeightsError(f"--weights {path} is a folder, not a weights file. Pass a .weights.h5 file{run}.")
    if not path.is_file():
        raise WeightsError(f"Weights file not found: {path}. Pass an existing .weights.h5 file, imagenet, none or run:DIR.")
    return path


def _source_run(backbone: Backbone, weights: str, spec: ImageSpec):
    """The run that `weights="run:DIR"` names, checked to hold a trained `backbone` of `spec`'s size."""
    from ..runs import RunDir, RunError

    run = RunDir(weights[len("run:"):])
    try:
        run.require("model.keras", "config.yaml")
    except RunError as error:
        raise WeightsError(f"--weights {weights}: {error}") from None
    trained = run.config()
    if trained.model.name != backbone.name:
        raise WeightsError(f"--weights {weights} holds a {trained.model.name} model, not {backbone.name}. "
                           f"Pass --model {trained.model.name}, or weights of a {backbone.name} run.")
    size = tuple(trained.data.image_size or ())
    if size != (spec.height, spec.width):
        raise WeightsError(f"--weights {weights} was trained at image size {size}, not {(spec.height, spec.width)}. "
                           "Leave --image-size out to use the run's size.")
    return run


def check_weights(backbone: Backbone, weights: str | None, spec: ImageSpec) -> None:
    """Fails fast, before any image is read, if `weights` cannot be had for `backbone` at `spec`'s size.

    ImageNet weights missing from the Keras cache are downloaded now; without
    network the `WeightsError` names the file and the folder to put it in. A
    weights file is loaded into the backbone, so that one of another network
    fails now too.
    """
    if weights == "imagenet":
        if not (weights_cache_dir() / backbone.weights_filename(spec)).is_file():
            _imagenet_backbone(backbone, spec)
    elif weights and weights.startswith("run:"):
        _source_run(backbone, weights, spec)
    elif weights not in (None, "none"):
        create_backbone(backbone, weights, spec)


def absolute_weights(weights: str | None) -> str | None:
    """`weights` with the path of a weights file or of `run:DIR` made absolute; other values unchanged.

    Example:

    >>> absolute_weights("run:runs/large")  # run in /home/me
    'run:/home/me/runs/large'
    """
    if weights in (None, "none", "imagenet"):
        return weights
    if weights.startswith("run:"):
        return "run:" + os.path.abspath(os.path.expanduser(weights[len("run:"):]))
    return os.path.abspath(os.path.expanduser(weights))


def run_image_size(weights: str | None) -> tuple[int, int] | None:
    """The image size of the run that `weights="run:DIR"` names, else `None`."""
    if not (weights or "").startswith("run:"):
        return None
    from ..runs import RunDir

    run = RunDir(weights[len("run:"):])
    if not run.config_path.exists():
        raise WeightsError(f"--weights {weights}: {run.path} is not an imgclf run (no config.yaml).")
    size = run.config().data.image_size
    return tuple(size) if size else None


def describe_weights(backbone: Backbone, weights: str | None, spec: ImageSpec) -> dict:
    """What the run records about the weights it started from (source, and the file)."""
    if weights in (None, "none"):
        return {"source": "none"}
    if weights == "imagenet":
        return {"source": "imagenet", "file": str(weights_cache_dir() / backbone.weights_filename(spec))}
    if weights.startswith("run:"):
        return {"source": "run", "file": str(Path(weights[len("run:"):]).resolve() / "model.keras")}
    return {"source": "file", "file": str(Path(weights).expanduser().resolve())}


# Unfreezing ----------------------------------------------------------------

def set_trainable(model: keras.Model, backbone: Backbone, unfreeze) -> None:
    """Chooses which backbone layers train; the head always trains.

    Args:
        model: a classifier built by `build_classifier`.
        backbone: its `Backbone`.
        unfreeze: `"none"` (backbone frozen), `"all"`, or an int K: the top K
            blocks. Batch normalisation layers stay frozen either way.
    """
    features = find_backbone_layer(model)
    if unfreeze == "none":
        features.trainable = False
        return
    features.trainable = True
    if unfreeze == "all":
        chosen = set(id(layer) for layer in features.layers)
    else:
        blocks = backbone.blocks(features)[1:]  # the stem never counts as a block
        chosen = {id(layer) for block in blocks[-int(unfreeze):] for layer in block}
    for layer in features.layers:
        layer.trainable = id(layer) in chosen and not isinstance(layer, layers.BatchNormalization)

"""Models by name: `build_model(cfg, spec, num_classes)`, `choose_model(cfg)` and `list_models()`.

Every model takes raw uint8 images (`0..255`) and scales them itself, so a saved
model needs no preprocessing outside it. Networks trained from scratch live in
`scratch.py`, pretrained `keras.applications` backbones in `backbones.py`.
"""

from __future__ import annotations

import dataclasses

from ..config import ImageSpec, ModelConfig
from ..registry import Registry

MODELS = Registry("model")
AUTO = "auto"
# What `auto` trains when no pretrained weights are at hand.
SCRATCH_DEFAULT = "small_cnn"


def probabilities_layer(num_classes: int):
    """The last layer of every model: a softmax `Dense` named `probabilities`.

    It computes in float32 under a mixed-precision policy too, as Keras'
    mixed-precision guide advises: probabilities in float16 or bfloat16 lose
    the small values the loss and the confidence depend on.
    """
    from keras import layers

    return layers.Dense(num_classes, activation="softmax", name="probabilities", dtype="float32")


def _load_definitions() -> None:
    # Importing the modules runs their registrations.
    from . import backbones, scratch  # noqa: F401


def build_model(cfg: ModelConfig, spec: ImageSpec, num_classes: int):
    """Builds the uncompiled Keras model that `cfg.name` names.

    Args:
        cfg: model name and options; `choose_model` resolves `"auto"` first.
        spec: input height, width and channels.
        num_classes: width of the softmax output.

    Returns:
        A `keras.Model` mapping uint8 images `(N, H, W, C)` to class
        probabilities `(N, num_classes)`.

    Example:

    >>> model = build_model(ModelConfig(name="cnn"), ImageSpec(28, 28, 1), 10)
    """
    if num_classes < 2:
        raise ValueError(f"A classifier needs at least 2 classes. Received: num_classes={num_classes}")
    if cfg.name == AUTO:
        cfg = choose_model(cfg).config
    return model_factory(cfg.name)(cfg, spec, num_classes)


def model_factory(name: str):
    """Returns the function that builds model `name`.

    Raises:
        KeyError: for an unknown name; the message lists the valid ones.
    """
    _load_definitions()
    return MODELS.get(name)


def check_model_name(name: str) -> None:
    """Raises `KeyError` (listing the valid names) unless `name` is `auto` or a registered model."""
    if name != AUTO:
        model_factory(name)


@dataclasses.dataclass(frozen=True)
class ModelChoice:
    """The model a run trains, with `auto` and the default weights resolved.

    Attributes:
        config: a `ModelConfig` with a registered name and explicit weights.
        reason: why `auto` chose it; empty when the name was given.
    """

    config: ModelConfig
    reason: str = ""


def choose_model(cfg: ModelConfig) -> ModelChoice:
    """Resolves `auto` and the default weights of `cfg`.

    `auto` is the first backbone (in `imgclf models` order) whose ImageNet
    weights are in the Keras cache, so nothing is downloaded unasked; without
    one it is `small_cnn` trained from scratch. With `weights="run:DIR"` it is
    that run's model. Backbones default to ImageNet weights, networks
    trained from scratch to none.

    Args:
        cfg: the requested model.

    Returns:
        A `ModelChoice`.

    Raises:
        ValueError: for weights a network trained from scratch cannot take.
    """
    from .backbones import BACKBONES, get_backbone, weights_cache_dir

    _load_definitions()
    weights = cfg.weights
    if cfg.name == AUTO:
        if weights and weights.startswith("run:"):
            from ..runs import RunDir

            name = RunDir(weights[len("run:"):]).config().model.name
            chosen = choose_model(dataclasses.replace(cfg, name=name)).config
            return ModelChoice(chosen, f"the model of the run in {weights[len('run:'):]}")
        if weights in (None, "imagenet"):
            cached = next((b for b in BACKBONES if b.cached_sizes()), None)
            if cached:
                return ModelChoice(dataclasses.replace(cfg, name=cached.name, weights="imagenet"),
                                   f"its ImageNet weights are in {weights_cache_dir()}")
            if weights == "imagenet":
                return ModelChoice(dataclasses.replace(cfg, name=BACKBONES[0].name),
                                   "the fastest backbone on a CPU; its ImageNet weights will be downloaded")
            return ModelChoice(dataclasses.replace(cfg, name=SCRATCH_DEFAULT, weights="none"),
                               f"no ImageNet weights in {weights_cache_dir()}, so a network trained from scratch")
        if weights == "none":
            return ModelChoice(dataclasses.replace(cfg, name=SCRATCH_DEFAULT), "--weights none: trained from scratch")
        raise ValueError(f"--weights {weights} needs a backbone: pass --model too (see `imgclf models`).")
    model_factory(cfg.name)
    if get_backbone(cfg.name):
        return ModelChoice(dataclasses.replace(cfg, weights=weights or "imagenet"))
    if weights not in (None, "none"):
        raise ValueError(f"{cfg.name} is trained from scratch and takes no pretrained weights. Received: "
                         f"weights={weights!r}. --weights works with the backbones of `imgclf models`; "
                         f"leave it out to train {cfg.name}.")
    return ModelChoice(dataclasses.replace(cfg, weights="none"))


def default_image_size(cfg: ModelConfig) -> tuple[int, int] | None:
    """The input size a model chosen by `choose_model` gets when the config sets none.

    A backbone's own training size; with ImageNet weights, a size whose
    weights file is already cached if the default one is not; with
    `run:DIR` weights, that run's size. `None` for networks trained from
    scratch: they take the median size of the images.
    """
    from .backbones import get_backbone, run_image_size

    backbone = get_backbone(cfg.name)
    if backbone is None:
        return None
    from_run = run_image_size(cfg.weights)
    if from_run:
        return from_run
    cached = backbone.cached_sizes() if cfg.weights == "imagenet" else []
    size = cached[0] if cached else backbone.default_size
    return (size, size)


def list_models() -> list[dict]:
    """One dict per registered model: `name`, `kind`, `input`, `parameters`, `weights`, `description`.

    Parameters of a backbone are those without the head; a network trained
    from scratch is counted for 28x28 grey images and 10 classes, since its
    size depends on them.
    """
    from .backbones import get_backbone

    _load_definitions()
    rows = []
    for name in sorted(MODELS.names(), key=lambda n: get_backbone(n) is not None):  # scratch networks first
        backbone = get_backbone(name)
        if backbone:
            cached = backbone.cached_sizes()
            rows.append({
                "name": name, "kind": "backbone", "input": f"{backbone.default_size}x{backbone.default_size}",
                "parameters": backbone.parameters,
                "weights": f"imagenet (cached: {', '.join(map(str, cached))} px)" if cached else "imagenet (download)",
                "description": backbone.description,
            })
        else:
            factory = model_factory(name)
            model = factory(ModelConfig(name=name), ImageSpec(28, 28, 1), 10)
            rows.append({
                "name": name, "kind": "scratch", "input": "median of images", "parameters": model.count_params(),
                "weights": "none", "description": (factory.__doc__ or "").strip().splitlines()[0],
            })
    return rows

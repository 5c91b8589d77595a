"""Models by name: `build_model(cfg, spec, num_classes)` and `list_models()`.

Every model takes raw uint8 images (`0..255`) and scales them itself, so a saved
model needs no preprocessing outside it.
"""

from __future__ import annotations

from ..config import ImageSpec, ModelConfig
from ..registry import Registry

MODELS = Registry("model")


def _load_definitions() -> None:
    # Importing the modules runs their @MODELS.register decorators.
    from . import scratch  # noqa: F401


def build_model(cfg: ModelConfig, spec: ImageSpec, num_classes: int):
    """Builds the uncompiled Keras model that `cfg.name` names.

    Args:
        cfg: model name and options.
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
    return model_factory(cfg.name)(cfg, spec, num_classes)


def model_factory(name: str):
    """Returns the function that builds model `name`.

    Raises:
        KeyError: for an unknown name; the message lists the valid ones.
    """
    _load_definitions()
    return MODELS.get(name)


def list_models() -> list[tuple[str, str]]:
    """Returns `(name, one-line description)` for every registered model."""
    _load_definitions()
    return [(name, (model_factory(name).__doc__ or "").strip().splitlines()[0]) for name in MODELS.names()]

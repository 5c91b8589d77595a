"""Networks trained from scratch: the course's MLP and ConvNet, and a stronger small CNN."""

from __future__ import annotations

import keras
from keras import layers

from ..config import ImageSpec, ModelConfig
from . import MODELS, probabilities_layer


def _inputs(spec: ImageSpec):
    """uint8 pixels in, floats in [0, 1] out: scaling lives inside the model."""
    inputs = keras.Input(shape=spec.shape, name="image")
    return inputs, layers.Rescaling(1.0 / 255, name="scale")(inputs)


def _dropout(cfg: ModelConfig, default: float) -> float:
    return default if cfg.dropout is None else cfg.dropout


@MODELS.register("mlp")
def mlp(cfg: ModelConfig, spec: ImageSpec, num_classes: int) -> keras.Model:
    """Fully connected network: Flatten → Dense(784, relu) per --hidden → softmax."""
    inputs, x = _inputs(spec)
    x = layers.Flatten()(x)
    rate = _dropout(cfg, 0.0)
    for width in cfg.hidden:
        x = layers.Dense(width, activation="relu")(x)
        if rate:
            x = layers.Dropout(rate)(x)
    outputs = probabilities_layer(num_classes)(x)
    return keras.Model(inputs, outputs, name="mlp")


@MODELS.register("cnn")
def cnn(cfg: ModelConfig, spec: ImageSpec, num_classes: int) -> keras.Model:
    """Small ConvNet: Conv2D(32, 5) → MaxPool → Dropout → Dense(128) → softmax."""
    if min(spec.height, spec.width) < 6:  # its 5x5 convolution leaves 2x2 for the pooling
        raise ValueError(f"cnn needs images of at least 6x6 pixels. Received: image_size=({spec.height}, {spec.width}); pass a larger --image-size.")
    inputs, x = _inputs(spec)
    x = layers.Conv2D(32, 5, activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Dropout(_dropout(cfg, 0.2))(x)
    x = layers.Flatten()(x)
    x = layers.Dense(128, activation="relu")(x)
    outputs = probabilities_layer(num_classes)(x)
    return keras.Model(inputs, outputs, name="cnn")


def _normalised_relu(x):
    return layers.Activation("relu")(layers.BatchNormalization(momentum=0.9)(x))


@MODELS.register("small_cnn")
def small_cnn(cfg: ModelConfig, spec: ImageSpec, num_classes: int) -> keras.Model:
    """Three blocks of two convolutions with batch norm, and global pooling; stronger on colour photos.

    Each block pools right after its first convolution, so its normalisation,
    activations and second convolution work on a quarter of the positions:
    on a CPU this trains twice as fast as pooling at the end of each block,
    at the same error (docs/BENCHMARKS.md).
    """
    inputs, x = _inputs(spec)
    for filters in (32, 64, 128):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        if min(x.shape[1], x.shape[2]) >= 2:
            x = layers.MaxPooling2D(2)(x)
        x = _normalised_relu(x)
        x = _normalised_relu(layers.Conv2D(filters, 3, padding="same", use_bias=False)(x))
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(_dropout(cfg, 0.3))(x)
    outputs = probabilities_layer(num_classes)(x)
    return keras.Model(inputs, outputs, name="small_cnn")

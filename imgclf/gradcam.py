"""Grad-CAM: where in an image a convolutional model looked for the class it predicted.

Selvaraju et al., 2017: the gradient of the class score with respect to the
last convolutional feature map, averaged over the map's positions, weights
each channel; the weighted sum of the channels, kept where positive, is the
heat map. fastai draws it over the top losses (`plot_top_losses(heatmap=True)`).
"""

from __future__ import annotations

import numpy as np


def _last_feature_map(model) -> int | None:
    """Index in `model.layers` of the feature map Grad-CAM explains, or `None` for a model without one.

    The last 4-D output fixes the map's size. Of the layers of that size, the
    last one before a convolution at that size is taken: such a convolution
    mixes each position with its neighbours, which moves the heat map off the
    place that decided (`small_cnn` pools in the middle of its last block).
    """
    import keras

    found, size, mixed = None, None, False
    for index, layer in enumerate(model.layers):
        shape = getattr(getattr(layer, "output", None), "shape", None)
        if shape is None or len(shape) != 4 or index == 0 or _is_input_side(layer):
            continue
        if tuple(shape[1:3]) != size:
            found, size, mixed = index, tuple(shape[1:3]), False
        elif isinstance(layer, keras.layers.Conv2D):
            mixed = True
        elif not mixed:
            found = index
    return found


# A map of fewer positions a side cannot say where in the image the model looked (a backbone's last map is 1x1 for
# 32-pixel images): Grad-CAM then explains the backbone's last map of at least this size.
MIN_MAP_SIDE = 4


def _inner_feature_map(backbone):
    """For a nested backbone whose last map is smaller than `MIN_MAP_SIDE` a side, a model from its input to its
    last map of at least that size and to its output; else `None` (its own output is the map)."""
    import keras

    def side(shape):
        return min(shape[1] or 0, shape[2] or 0) if shape is not None and len(shape) == 4 else 0

    if not isinstance(backbone, keras.Model) or side(backbone.output.shape) >= MIN_MAP_SIDE:
        return None
    candidates = [layer for layer in backbone.layers[1:]
                  if side(getattr(getattr(layer, "output", None), "shape", None)) >= MIN_MAP_SIDE
                  and not isinstance(layer, keras.layers.ZeroPadding2D)]  # a border of zeros is not a feature
    if not candidates:
        return None
    return keras.Model(backbone.inputs, [candidates[-1].output, backbone.output])


def _is_input_side(layer) -> bool:
    """Scaling and channel layers at the input: a 4-D output, but no features."""
    return type(layer).__name__ in ("InputLayer", "Rescaling", "Concatenate", "Normalization")


def grad_cam(model, images: np.ndarray, classes, *, batch_size: int = 32) -> np.ndarray | None:
    """Grad-CAM heat maps of `images` for `classes`, at the resolution of the last feature map.

    The model is run layer by layer (the classifiers imgclf builds are a
    chain: scaling, convolutions or a nested `keras.applications` backbone,
    pooling, head), recording the feature map of `_last_feature_map`. A nested backbone counts as
    one layer whose output is its last feature map, unless that map has
    fewer than `MIN_MAP_SIDE` positions a side (small images): then its last
    map of at least that size is taken, through a model from the backbone's
    own input (one from the outer inputs to a layer inside it fails in
    Keras 3). The class score is the logit of the final softmax layer, whose
    gradient does not vanish when the model is sure.

    Args:
        model: a Keras classifier from uint8 images to probabilities.
        images: uint8 `(N, H, W, C)`.
        classes: the class index to explain for each image, `(N,)`.
        batch_size: images per step. Defaults to 32.

    Returns:
        Floats in [0, 1] of shape `(N, h, w)`, each map divided by its
        maximum (all zero where no position speaks for the class); `None`
        for a model without a feature map (an MLP) or one that is not a
        chain of layers.

    Example:

    >>> maps = grad_cam(run.load_model(), images, predicted)
    >>> maps.shape
    (16, 4, 4)
    """
    import keras
    import tensorflow as tf

    target = _last_feature_map(model)
    if target is None or len(images) == 0:
        return None
    layers = model.layers[1:]  # after the InputLayer
    target -= 1
    inner = _inner_feature_map(layers[target])
    last = layers[-1]
    softmax_head = isinstance(last, keras.layers.Dense) and getattr(last.activation, "__name__", "") == "softmax"
    maps = []
    for start in range(0, len(images), batch_size):
        x = tf.convert_to_tensor(np.asarray(images[start:start + batch_size]))
        picked = np.asarray(classes[start:start + batch_size], dtype=np.int64)
        with tf.GradientTape() as tape:
            features = None
            for index, layer in enumerate(layers):
                if index == len(layers) - 1 and softmax_head:
                    x = tf.matmul(x, last.kernel) + last.bias  # logits: the softmax is left out
                elif isinstance(layer, keras.layers.Concatenate):
                    x = layer([x] * len(layer.input) if isinstance(layer.input, list) else [x, x, x])
                elif index == target and inner is not None:
                    tape.watch(x)  # so the map inside is recorded whatever the backbone's trainable flags
                    features, x = inner(x, training=False)
                else:
                    x = layer(x, training=False)
                if index == target and inner is None:
                    features = x
                    tape.watch(features)
            score = tf.gather(x, picked, axis=1, batch_dims=1)
        if not softmax_head:
            probabilities = x
        else:
            probabilities = tf.nn.softmax(x)
        expected = model(tf.convert_to_tensor(np.asarray(images[start:start + batch_size])), training=False)
        if not np.allclose(np.asarray(probabilities), np.asarray(expected), atol=1e-4):
            return None  # not a chain of layers: the layer-by-layer pass is not the model
        gradients = tape.gradient(score, features)
        weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1)).numpy()
        peak = cam.max(axis=(1, 2), keepdims=True)
        maps.append(np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0))
    return np.concatenate(maps).astype(np.float32)

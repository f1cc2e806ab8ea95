"""Looking inside a network (Keras): block activations, first-layer filters, splitting a network at a block,
Grad-CAM and per-block weights (chapters 01, 07-08)."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from helpers import checks
from helpers.interpretation import grad_cam_maps, target_classes
from helpers.keras.core import input_shape
from helpers.keras.mobilenet_port import leaf_layers
from helpers.keras.models import blocks

__all__ = [
    "block_outputs",
    "first_layer_filters",
    "split_model",
    "grad_cam",
    "block_weights",
]


def block_outputs(backbone, x, indices) -> list[np.ndarray]:
    """Activations of the chosen feature blocks for inputs x, as NHWC NumPy arrays (negative indices count back)."""
    found = blocks(backbone)
    chosen = [checks.index("block index", i, len(found)) for i in indices]
    x = checks.inputs(x, input_shape(backbone))
    captured = {i: [] for i in chosen}
    for start in range(0, len(x), 64):
        h = keras.ops.convert_to_tensor(x[start : start + 64])
        for i, block in enumerate(found[: max(chosen) + 1]):
            h = block(h, training=False)
            if i in captured:
                captured[i].append(keras.ops.convert_to_numpy(h))
    return [np.concatenate(captured[i]) for i in chosen]


def first_layer_filters(backbone) -> np.ndarray:
    """The first convolution's kernels as (filters, height, width, channels)."""
    conv = next(layer for layer in leaf_layers(blocks(backbone)[0]) if isinstance(layer, keras.layers.Conv2D))
    return np.transpose(conv.kernel.numpy(), (3, 0, 1, 2))


def _chain(model) -> tuple[list, list]:
    """The model as layers applied one after another (its feature blocks one by one), and its blocks."""
    found = blocks(model)
    ids = {id(b) for b in found}

    def expand(layer):
        if isinstance(layer, keras.layers.InputLayer):
            return []
        if id(layer) not in ids and isinstance(layer, keras.Model) and any(id(s) in ids for s in layer.layers):
            return [part for sub in layer.layers for part in expand(sub)]
        return [layer]

    return [part for layer in model.layers for part in expand(layer)], found


def _block_position(model, block_index: int) -> tuple[list, int]:
    """The model's chain of layers and the position of feature block `block_index` in it."""
    chain, found = _chain(model)
    block = found[checks.index("block_index", block_index, len(found))]
    return chain, next(i for i, layer in enumerate(chain) if layer is block)


def _apply(layers, inputs, training=None):
    for layer in layers:
        inputs = layer(inputs, training=training) if training is not None else layer(inputs)
    return inputs


def split_model(model, block_index):
    """(lower, upper): images to the input of block `block_index`, and that input to the outputs; weights shared."""
    chain, position = _block_position(model, block_index)
    images = keras.Input(model.inputs[0].shape[1:], name="images")
    entering = _apply(chain[:position], images)
    lower = keras.Model(images, entering, name=f"{model.name}_lower")
    activations = keras.Input(entering.shape[1:], name="activations")
    upper = keras.Model(activations, _apply(chain[position:], activations), name=f"{model.name}_upper")
    return lower, upper


def grad_cam(model, x, class_index=None, block_index=-1) -> np.ndarray:
    """Grad-CAM maps (N, h, w) in [0, 1] at a block's output for `class_index` (default: each image's top class)."""
    chain, position = _block_position(model, block_index)
    x = checks.inputs(x, input_shape(model))
    activations = _apply(chain[: position + 1], tf.convert_to_tensor(x), False)
    with tf.GradientTape() as tape:
        tape.watch(activations)
        logits = _apply(chain[position + 1 :], activations, False)
        targets = target_classes(logits.numpy(), class_index)
        score = tf.reduce_sum(tf.gather(logits, targets, batch_dims=1))
    gradients = tape.gradient(score, activations)
    return grad_cam_maps(activations.numpy(), gradients.numpy())


def block_weights(model) -> list[np.ndarray]:
    """Each feature block's parameters (not BatchNorm statistics) as one flat vector, from input to output."""
    flat = lambda block: [np.ravel(w.numpy()) for w in block.weights if "moving_" not in w.path]
    return [np.concatenate(flat(block)) for block in blocks(model)]

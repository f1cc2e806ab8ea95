"""Choosing a pretrained backbone (chapter 17), Keras: EfficientNet-Lite0 beside MobileNetV2 (the port is in
`helpers.keras.efficientnet_port`), and the cost of each backbone (time per image, peak memory of a training step).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from helpers import backbones, checks, fast_training
from helpers.keras.models import Model, device

__all__ = ["inference_seconds", "step_memory", "snapshot", "restore"]


def inference_seconds(model: Model, x, batch_size: int = 64, repeats: int = 3) -> float:
    """Seconds per image of a forward pass in inference mode over batches of `x` (a traced tf.function; median of
    `repeats` after a warm-up that also traces it)."""
    batch_size, repeats = checks.count("batch_size", batch_size), checks.count("repeats", repeats)
    x = checks.inputs(x, None)
    batches = [tf.constant(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    forward = tf.function(lambda batch: model(batch, training=False), reduce_retracing=True)

    def run():
        for batch in batches:
            out = forward(batch)
        np.asarray(out)  # the last batch's result: waits for the device

    return fast_training.median_seconds(run, repeats=repeats, warmup=1) / len(x)


def _counting_cpu_allocator() -> str | None:
    """The name "CPU:0" when TensorFlow's CPU allocator counts its bytes, else None.

    With oneDNN's CPU kernels (TensorFlow's default on x86) large CPU buffers come from a pooling (BFC) allocator that
    keeps freed memory for reuse and reports its own current and peak use. The pool is never handed back to the
    system, so the process's resident memory cannot show a step's working memory once an earlier, larger step has
    grown the pool; the allocator's own peak can. Without oneDNN there is no such count and no such pool.
    """
    try:
        tf.config.experimental.get_memory_info("CPU:0")
    except ValueError:  # "Allocator stats not available for device CPU:0"
        return None
    return "CPU:0"


def step_memory(model: Model, train, batch_size: int = 32) -> float:
    """Peak memory (MB) of one training step (forward, cross-entropy, backward, Adam) on one batch, run as a
    `tf.function` as `fit` runs it, after a warm-up step. On a GPU, and on a CPU with oneDNN's kernels (TensorFlow's
    default): the rise of TensorFlow's allocator's peak above its current use. On a CPU without them: the rise of the
    process's peak resident memory (`helpers.backbones.peak_memory_growth`). The model's weights are restored
    afterwards.

    Not eagerly: an eager step holds temporaries that the graph does not, and its peak would measure those as well.
    """
    batch_size = checks.count("batch_size", batch_size)
    x, y = checks.pair(train, "train")
    xb = tf.constant(checks.inputs(np.asarray(x[:batch_size]), None))
    yb = tf.constant(np.asarray(y[:batch_size], dtype=np.int64))
    saved = model.get_weights()
    opt = keras.optimizers.Adam(1e-5)
    opt.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    # One trace for every batch size (the warm-up below runs one example), so the measured step does not trace.
    @tf.function(
        input_signature=[
            tf.TensorSpec((None, *xb.shape[1:]), xb.dtype),
            tf.TensorSpec((None,), yb.dtype),
        ]
    )
    def train_step(inputs, labels):
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(inputs, training=True))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    def step(inputs=xb, labels=yb):
        np.asarray(train_step(inputs, labels))  # waits for the step

    try:
        # Warm-up on one example: Adam's state and the allocator's first growth are not the step's working memory.
        # Not on the whole batch: with oneDNN's CPU kernels (on by default) TensorFlow keeps a warm-up step's freed
        # buffers in its own pool, so a second step of the same size would raise the resident memory by ~0.
        step(xb[:1], yb[:1])
        allocator = "GPU:0" if device() == "cuda" else _counting_cpu_allocator()
        if allocator:
            tf.config.experimental.reset_memory_stats(allocator)
            base = tf.config.experimental.get_memory_info(allocator)["current"]
            step()
            return (tf.config.experimental.get_memory_info(allocator)["peak"] - base) / 2**20
        return backbones.peak_memory_growth(step)
    finally:
        model.set_weights(saved)


def snapshot(model: Model):
    """A copy of every weight of `model` (BatchNorm statistics included), for `restore`."""
    return [np.array(w, copy=True) for w in model.get_weights()]


def restore(model: Model, saved) -> Model:
    """Put the weights of a `snapshot` back into `model`."""
    model.set_weights(saved)
    return model

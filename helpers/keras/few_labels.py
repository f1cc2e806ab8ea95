"""Chapter 10 (few labels, many unlabelled images): pseudo-labelling and consistency training.

Mirrors the module of the same name in the other framework package (tests/test_parity.py). The rounds of
self-training and co-training are written once, framework-neutral, in `helpers.few_labels`; this module gives them
Keras' training and prediction, and writes FixMatch's consistency loss and training step with keras.ops and a
tf.GradientTape.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from helpers import few_labels
from helpers.keras.core import compiled, input_shape
from helpers.keras.models import Model
from helpers.keras.training import OPTIMIZERS, fit, predict

__all__ = ["fit_steps", "pseudo_labels", "self_train", "co_train", "consistency_loss", "fit_consistency"]


# fit_steps, pseudo_labels, self_train and co_train need no framework beyond this wing's fit and predict: they are
# written once, in helpers/few_labels.py (wing_functions), and built here with Keras'.
fit_steps, pseudo_labels, self_train, co_train = few_labels.wing_functions(fit, predict, __name__)


def consistency_loss(logits_weak, logits_strong, threshold=0.95) -> tuple:
    """FixMatch's unlabelled loss and its mask: the weak view's hard pseudo-label (no gradient) is the target of
    the strong view's cross-entropy, counted only where the weak view's confidence >= threshold; averaged over
    the whole batch (masked examples count as zeros)."""
    threshold = few_labels.check_threshold(threshold)
    probs = keras.ops.softmax(keras.ops.stop_gradient(logits_weak), axis=-1)
    mask = keras.ops.cast(keras.ops.max(probs, axis=-1) >= threshold, logits_strong.dtype)
    hard = keras.ops.argmax(probs, axis=-1)
    per_example = keras.losses.sparse_categorical_crossentropy(hard, logits_strong, from_logits=True)
    return keras.ops.mean(per_example * mask), mask


def _consistency_step(model: Model, optimizer, threshold: float, weight: float):
    """One FixMatch step under a tf.GradientTape (a graph, or eager in the smoke profile like `fit`)."""

    def step(xb, yb, weak_b, strong_b):
        n_lab, n_unl = keras.ops.shape(xb)[0], keras.ops.shape(weak_b)[0]
        with tf.GradientTape() as tape:
            # one forward pass on the three batches together, as FixMatch implementations do (one BatchNorm update)
            logits = model(keras.ops.concatenate([xb, weak_b, strong_b], axis=0), training=True)
            logits_lab, logits_weak, logits_strong = (
                logits[:n_lab],
                logits[n_lab : n_lab + n_unl],
                logits[n_lab + n_unl :],
            )
            supervised = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(yb, logits_lab, from_logits=True))
            unsupervised, mask = consistency_loss(logits_weak, logits_strong, threshold)  # stops the weak gradient
            loss = supervised + weight * unsupervised
        gradients = tape.gradient(loss, model.trainable_weights)
        optimizer.apply_gradients(zip(gradients, model.trainable_weights))
        return loss, supervised, unsupervised, keras.ops.mean(mask)

    return compiled(step)


def fit_consistency(
    model, labelled, weak, strong, steps=200, threshold=0.95, weight=1.0, ratio=3, lr=1e-3, batch_size=64, seed=0
) -> dict:
    """FixMatch-style training: each step, cross-entropy on `batch_size` labelled examples plus `weight` times
    consistency_loss on `ratio * batch_size` unlabelled examples (their weak view and one of their strong views,
    `strong` shaped like `weak` or (views, *weak.shape)). Adam; examples drawn with replacement from `seed`. The
    labelled, weak and strong batches go through the model in one train-mode forward pass (concatenated). Each call
    compiles a fresh step function (one trace per call).
    History per step: loss, supervised, unsupervised, mask_rate (share of unlabelled examples above threshold)."""
    x, y, weak, strong = few_labels.consistency_data(input_shape(model), labelled, weak, strong)
    steps, threshold, ratio, batch_size = few_labels.consistency_options(
        steps, threshold, weight, ratio, lr, batch_size
    )
    optimizer = OPTIMIZERS["adam"](learning_rate=lr)
    step = _consistency_step(model, optimizer, threshold, float(weight))
    history = {"loss": [], "supervised": [], "unsupervised": [], "mask_rate": []}
    for batch in few_labels.consistency_batches(x, y, weak, strong, steps, ratio, batch_size, seed):
        values = step(*batch)
        for key, value in zip(history, values):
            history[key].append(float(value))
    return history

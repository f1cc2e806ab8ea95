"""Chapter 10 (few labels, many unlabelled images): pseudo-labelling and consistency training.

Mirrors the module of the same name in the other framework package (tests/test_parity.py). The rounds of
self-training and co-training are written once, framework-neutral, in `helpers.few_labels`; this module gives them
Keras' training and prediction. FixMatch is written in Keras' idiom: a `keras.Model` subclass whose `train_step`
takes a batch {'labelled', 'labels', 'weak', 'strong'}, trained by `compile` and `fit` on a tf.data pipeline, with a
callback that records every step's logs (keras.io's "AdaMatch" example trains its semi-supervised model the same way).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from helpers import config, few_labels
from helpers.keras.core import input_shape
from helpers.keras.training import OPTIMIZERS, fit, predict

__all__ = [
    "fit_steps",
    "pseudo_labels",
    "self_train",
    "co_train",
    "strong_augment",
    "consistency_loss",
    "fit_consistency",
]

HISTORY = ("loss", "supervised", "unsupervised", "mask_rate")  # what fit_consistency records per step


# fit_steps, pseudo_labels, self_train and co_train need no framework beyond this wing's fit and predict: they are
# written once, in helpers/few_labels.py (wing_functions), and built here with Keras'.
fit_steps, pseudo_labels, self_train, co_train = few_labels.wing_functions(fit, predict, __name__)


def strong_augment(images, seed: int = 0) -> np.ndarray:
    """FixMatch's strong view with Keras layers: `keras.layers.RandAugment` (two operations, Keras' default
    strength factor 0.5) and then `keras.layers.RandomErasing` on every image (a rectangle of 2-33 % of the image set
    to black, as FixMatch's Cutout). uint8 (N, H, W) in and out. The layers run in a tf.data `map`, one image at a
    time, because RandAugment draws its operations once per call: on a whole batch every image would get the same
    two. `seed` makes it repeatable."""
    images = few_labels.grey_images(images)
    augment = keras.Sequential(
        [
            keras.layers.RandAugment(value_range=(0, 255), num_ops=2, seed=seed),
            keras.layers.RandomErasing(factor=(1.0, 1.0), fill_value=0.0, value_range=(0, 255), seed=seed + 1),
        ]
    )
    dataset = tf.data.Dataset.from_tensor_slices(images[..., None].astype("float32"))
    views = dataset.map(lambda image: augment(image, training=True)).batch(256)
    augmented = np.concatenate([batch.numpy() for batch in views])[..., 0]
    return np.clip(np.round(augmented), 0, 255).astype(np.uint8)


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


class _FixMatch(keras.Model):
    """A classifier trained FixMatch's way by `fit`: `train_step` takes a batch {'labelled', 'labels', 'weak',
    'strong'} and returns that step's loss, supervised, unsupervised and mask_rate (not running means: fit's
    History keeps the last step's, a callback sees every step's). Calling it calls the classifier."""

    def __init__(self, classifier, threshold: float, weight: float, **kwargs):
        super().__init__(name="fixmatch", **kwargs)
        self.classifier, self.threshold, self.weight = classifier, threshold, weight

    def call(self, inputs, training=False):
        return self.classifier(inputs, training=training)

    def train_step(self, data):
        n_lab, n_unl = keras.ops.shape(data["labelled"])[0], keras.ops.shape(data["weak"])[0]
        with tf.GradientTape() as tape:
            # one forward pass on the three batches together, as FixMatch implementations do (one BatchNorm update)
            inputs = keras.ops.concatenate([data["labelled"], data["weak"], data["strong"]], axis=0)
            logits = self(inputs, training=True)
            logits_lab, logits_weak, logits_strong = (
                logits[:n_lab],
                logits[n_lab : n_lab + n_unl],
                logits[n_lab + n_unl :],
            )
            per_example = keras.losses.sparse_categorical_crossentropy(data["labels"], logits_lab, from_logits=True)
            supervised = keras.ops.mean(per_example)
            unsupervised, mask = consistency_loss(logits_weak, logits_strong, self.threshold)  # stops the weak gradient
            loss = supervised + self.weight * unsupervised
        gradients = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_weights))
        return dict(zip(HISTORY, (loss, supervised, unsupervised, keras.ops.mean(mask))))


class _StepLogs(keras.callbacks.Callback):
    """Record the logs of every training step: with _FixMatch's train_step, each step's own values."""

    def __init__(self, keys):
        super().__init__()
        self.history = {key: [] for key in keys}

    def on_train_batch_end(self, batch, logs=None):
        for key, values in self.history.items():
            values.append(float(logs[key]))


def _consistency_dataset(x, y, weak, strong, steps, ratio, batch_size, seed) -> tf.data.Dataset:
    """few_labels.consistency_batches as a tf.data pipeline of dicts, in the order the other wing draws them."""

    def batches():
        drawn = few_labels.consistency_batches(x, y, weak, strong, steps, ratio, batch_size, seed)
        for xb, yb, weak_b, strong_b in drawn:
            yield {"labelled": xb, "labels": yb, "weak": weak_b, "strong": strong_b}

    spec = lambda a: tf.TensorSpec((None, *a.shape[1:]), tf.as_dtype(a.dtype))
    signature = {"labelled": spec(x), "labels": spec(y), "weak": spec(weak), "strong": spec(strong[0])}
    dataset = tf.data.Dataset.from_generator(batches, output_signature=signature)
    return dataset.apply(tf.data.experimental.assert_cardinality(steps))  # fit then knows it holds `steps` batches


def fit_consistency(
    model, labelled, weak, strong, steps=200, threshold=0.95, weight=1.0, ratio=3, lr=1e-3, batch_size=64, seed=0
) -> dict:
    """FixMatch-style training: each step, cross-entropy on `batch_size` labelled examples plus `weight` times
    consistency_loss on `ratio * batch_size` unlabelled examples (their weak view and one of their strong views,
    `strong` shaped like `weak` or (views, *weak.shape)). Adam; examples drawn with replacement from `seed`. The
    labelled, weak and strong batches go through the model in one train-mode forward pass (concatenated).
    History per step: loss, supervised, unsupervised, mask_rate (share of unlabelled examples above threshold).

    Keras' idiom, bent to match the PyTorch wing: `model` is wrapped in a keras.Model subclass whose train_step is
    one FixMatch step, compiled with Adam and fitted for one pass over a tf.data pipeline of exactly `steps` batches
    that NumPy draws with replacement (the other wing's batches, not tf.data's shuffling); a callback records each
    step's logs, and the dict of lists is returned instead of a keras History. Each call compiles (and traces) a
    fresh train function: one trace per call."""
    x, y, weak, strong = few_labels.consistency_data(input_shape(model), labelled, weak, strong)
    steps, threshold, ratio, batch_size = few_labels.consistency_options(
        steps, threshold, weight, ratio, lr, batch_size
    )
    fixmatch = _FixMatch(model, threshold, float(weight))
    fixmatch.compile(
        optimizer=OPTIMIZERS["adam"](learning_rate=lr), run_eagerly=config.profile().keras_eager, jit_compile=False
    )
    recorder = _StepLogs(HISTORY)
    fixmatch.fit(
        _consistency_dataset(x, y, weak, strong, steps, ratio, batch_size, seed),
        shuffle=False,  # the batches are drawn already
        verbose=0,
        callbacks=[recorder],
    )
    return recorder.history

"""Chapter 12 (domain adaptation): AdaBN, CORAL, DANN's gradient reversal.

Mirrors the module of the same name in the other framework package (tests/test_parity.py). The data recipes, the
argument checks and the NumPy reference formulas are framework-neutral, in `helpers.domain_adaptation`.
"""

from __future__ import annotations

import collections
import math
import time

import keras
import numpy as np
import tensorflow as tf

from helpers import checks, config, domain_adaptation, tuning
from helpers.keras.core import check_data, input_shape
from helpers.keras.models import Model
from helpers.keras.training import predict

__all__ = [
    "batchnorm_statistics",
    "adapt_batchnorm",
    "coral_loss",
    "gradient_reversal",
    "backbone_features",
    "fit_adapted",
]

ops = keras.ops


def _batchnorms(model) -> list:
    """The BatchNorm layers inside a model, input to output (depth first through nested models)."""
    found = []
    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        else:
            found.extend(_batchnorms(layer))
    return found


def batchnorm_statistics(model) -> list[tuple[np.ndarray, np.ndarray]]:
    """The running (mean, variance) of every BatchNorm layer, input to output, as NumPy copies."""
    numpy = ops.convert_to_numpy
    return [(numpy(layer.moving_mean), numpy(layer.moving_variance)) for layer in _batchnorms(model)]


def _unlabelled_images(model, target_x) -> np.ndarray:
    return checks.inputs(domain_adaptation.check_unlabelled(target_x), input_shape(model))


def adapt_batchnorm(model, target_x, batch_size=256) -> Model:
    """AdaBN (Li et al. 2016): replace every BatchNorm layer's running statistics by the target images' statistics.

    One pass over the unlabelled target images in training mode without gradients; each layer's new mean and
    variance are the batch statistics averaged over the pass (weighted by batch size). Weights do not change.
    Works in place and returns the model.
    """
    batch_size = checks.count("batch_size", batch_size)
    layers = _batchnorms(model)
    if not layers:
        raise ValueError(
            "the model has no BatchNorm layer: AdaBN re-estimates BatchNorm statistics on the target domain, so it "
            "needs a network with BatchNorm (e.g. book.small_cnn); without it, try CORAL or DANN"
        )
    x = _unlabelled_images(model, target_x)
    saved = [(layer.momentum, layer.trainable) for layer in layers]
    for layer in layers:
        layer.moving_mean.assign(ops.zeros_like(layer.moving_mean))
        layer.moving_variance.assign(ops.ones_like(layer.moving_variance))
        layer.trainable = True  # a frozen Keras BatchNorm layer would run in inference mode and update nothing
    seen = 0
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        seen += len(batch)
        for layer in layers:
            layer.momentum = 1.0 - len(batch) / seen  # running = m old + (1 - m) batch: a running mean over batches
        model(batch, training=True)
    for layer, (momentum, trainable) in zip(layers, saved):
        layer.momentum, layer.trainable = momentum, trainable
    return model


def _covariance(features):
    centred = features - ops.mean(features, axis=0, keepdims=True)
    return ops.matmul(ops.transpose(centred), centred) / (ops.cast(ops.shape(features)[0], features.dtype) - 1.0)


def coral_loss(source_features, target_features):
    """Deep CORAL (Sun & Saenko 2016): ||C_s - C_t||_F^2 / (4 d^2), C the unbiased covariance of a (N, d) batch."""
    domain_adaptation.check_feature_pair(tuple(source_features.shape), tuple(target_features.shape))
    source = ops.convert_to_tensor(source_features, "float32")
    target = ops.convert_to_tensor(target_features, "float32")
    difference = _covariance(source) - _covariance(target)
    return ops.sum(difference**2) / (4 * int(source.shape[1]) ** 2)


@tf.custom_gradient
def _reverse(x, weight):
    """Identity forward; the gradient times -weight backward (no gradient for the weight)."""

    def backward(grad):
        return -weight * grad, tf.zeros_like(weight)

    return tf.identity(x), backward


def gradient_reversal(x, weight=1.0):
    """DANN's gradient reversal layer (Ganin & Lempitsky 2015): x unchanged forward, gradient * -weight backward."""
    weight = domain_adaptation.check_weight(weight)
    return _reverse(tf.convert_to_tensor(x, tf.float32), tf.constant(weight, tf.float32))


def _parts(model) -> tuple:
    """The backbone and head of a model built by add_head or small_cnn."""
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(nested) != 2 or nested[1].name != "head":
        raise ValueError("expected a model with a backbone and a head, as book.small_cnn or book.add_head build it")
    return nested[0], nested[1]


def backbone_features(model, x, batch_size=256) -> np.ndarray:
    """The pooled features (N, d) that the model's backbone gives images x (in inference mode)."""
    return predict(_parts(model)[0], x, batch_size=batch_size)


def _discriminator(num_features: int):
    """DANN's domain classifier: features -> 64 ReLU units -> one logit (target = 1); PyTorch's default init."""

    def dense(units: int, fan_in: int, activation=None):
        init = keras.initializers.RandomUniform(-1 / np.sqrt(fan_in), 1 / np.sqrt(fan_in))
        return keras.layers.Dense(units, activation, kernel_initializer=init, bias_initializer=init)

    layers = [keras.Input((num_features,)), dense(64, num_features, "relu"), dense(1, 64)]
    return keras.Sequential(layers, name="domain_classifier")


def _check_adaptation(model, source, target_x, method: str, weight) -> tuple:
    """Checked (xs, ys, xt, method, weight) for fit_adapted."""
    method, weight = domain_adaptation.check_method(method), domain_adaptation.check_weight(weight)
    xs, ys = check_data(model, source, "source")
    xt = _unlabelled_images(model, target_x)
    domain_adaptation.check_same_images(xs.shape, xt.shape)
    return xs, ys, xt, method, weight


class AlignedTraining(keras.Model):
    """A classifier trained on labelled source batches while its backbone's features align with target batches.

    The Keras idiom for a custom objective, as keras.io's AdaMatch and knowledge-distillation examples write it:
    `train_step` computes the step's loss under a GradientTape and applies the gradients; `compile` / `fit` run it.
    A batch is {'source': images, 'labels': labels, 'target': unlabelled images}. method 'source' trains on
    cross-entropy only; 'coral' adds weight * coral_loss of the source and target features; 'dann' adds a domain
    classifier's binary cross-entropy behind a gradient reversal whose weight is the non-trainable variable
    `reversal` (ReversalSchedule sets it before each batch).
    `fit` reports 'loss', 'cross_entropy' and 'alignment', averaged over each epoch's steps.
    """

    def __init__(self, classifier, method: str = "dann", weight: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.classifier = classifier
        backbone, _ = _parts(classifier)
        self.method, self.weight = domain_adaptation.check_method(method), domain_adaptation.check_weight(weight)
        num_features = int(backbone.output.shape[-1])
        self.discriminator = _discriminator(num_features) if self.method == "dann" else None
        self.reversal = self.add_weight(shape=(), initializer="zeros", trainable=False, name="reversal")
        self.trackers = {name: keras.metrics.Mean(name=name) for name in ("loss", "cross_entropy", "alignment")}
        self.built = True

    def call(self, images, training=False):
        return self.classifier(images, training=training)

    def train_step(self, data):
        source, labels, target = data["source"], data["labels"], data["target"]
        backbone, head = _parts(self.classifier)
        n = ops.shape(source)[0]
        with tf.GradientTape() as tape:
            inputs = source if self.method == "source" else ops.concatenate([source, target], axis=0)
            features = backbone(inputs, training=True)  # one pass: BatchNorm sees both domains' batches together
            logits = head(features[:n], training=True)
            cross_entropy = ops.mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
            if self.method == "source":
                alignment, loss = ops.zeros(()), cross_entropy
            elif self.method == "coral":
                alignment = coral_loss(features[:n], features[n:])
                loss = cross_entropy + self.weight * alignment
            else:  # DANN: the domain classifier behind the gradient reversal, source 0 and target 1
                reversed_ = _reverse(features, ops.convert_to_tensor(self.reversal))
                domain_logits = self.discriminator(reversed_, training=True)
                domain_labels = ops.concatenate([ops.zeros((n, 1)), ops.ones((ops.shape(target)[0], 1))], axis=0)
                alignment = ops.mean(keras.losses.binary_crossentropy(domain_labels, domain_logits, from_logits=True))
                loss = cross_entropy + alignment
        variables = self.trainable_weights  # the classifier's and, for 'dann', the domain classifier's
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        for tracker, value in zip(self.trackers.values(), (loss, cross_entropy, alignment)):
            tracker.update_state(value)
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    @property
    def metrics(self):
        return list(self.trackers.values())  # reset by fit at the start of every epoch


class ReversalSchedule(keras.callbacks.Callback):
    """DANN's schedule as a callback: before step k of `total_steps`, reversal = weight * dann_ramp(k / total_steps)."""

    def __init__(self, weight: float, total_steps: int, steps_per_epoch: int):
        super().__init__()
        self.weight, self.total_steps, self.steps_per_epoch = weight, total_steps, steps_per_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        step = self.epoch * self.steps_per_epoch + batch
        self.model.reversal.assign(self.weight * domain_adaptation.dann_ramp(step / self.total_steps))


class _EpochLog(keras.callbacks.Callback):
    """Record each epoch's seconds, and print its losses when verbose."""

    def __init__(self, epochs: int, verbose: bool):
        super().__init__()
        self.epochs, self.verbose, self.seconds, self.history = epochs, verbose, [], collections.defaultdict(list)

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)
        for key in ("loss", "cross_entropy", "alignment"):
            self.history[key].append(float(logs[key]))
        if self.verbose:
            line = domain_adaptation.history_line(self.history)
            print(f"  epoch {epoch + 1}/{self.epochs}  {self.seconds[-1]:.1f}s  {line}")


class _BookOrder(keras.utils.PyDataset):
    """Batches {'source', 'labels', 'target'} in the order tuning.batch_order gives, all epochs in one pass."""

    def __init__(self, xs, ys, xt, source_order, target_order):
        super().__init__()
        self.xs, self.ys, self.xt, self.source_order, self.target_order = xs, ys, xt, source_order, target_order

    def __len__(self):
        return len(self.source_order)

    def __getitem__(self, index):
        batch = self.source_order[index]
        return {"source": self.xs[batch], "labels": self.ys[batch], "target": self.xt[self.target_order[index]]}


def fit_adapted(
    model, source, target_x, method="dann", weight=1.0, epochs=1, lr=1e-3, batch_size=32, seed=0, verbose=False
) -> dict:
    """Train on labelled source data (xs, ys) while aligning the backbone's features with unlabelled target images.

    method: 'source' (cross-entropy only, target unused: the control), 'coral' (+ weight * coral_loss of the source
    and target features) or 'dann' (+ a domain classifier's binary cross-entropy behind a gradient reversal whose
    weight rises from 0 to `weight` by domain_adaptation.dann_ramp). Each step takes one source and one target batch of
    batch_size (tuning.batch_order with seeds seed and seed + 1; one epoch is ceil(N_source / batch_size) steps);
    'coral' and 'dann' run both batches through the backbone together. Adam at lr for every trained weight.
    In Keras: an AlignedTraining model around `model`, compiled and fitted (ReversalSchedule sets DANN's weight).
    Returns {'loss', 'cross_entropy', 'alignment', 'epoch_seconds'} per epoch.
    """
    epochs, batch_size = checks.count("epochs", epochs), checks.count("batch_size", batch_size)
    checks.positive(lr=lr)
    xs, ys, xt, method, weight = _check_adaptation(model, source, target_x, method, weight)
    steps = math.ceil(len(xs) / batch_size)
    source_order = tuning.batch_order(len(xs), min(batch_size, len(xs)), epochs * steps, seed)
    target_order = tuning.batch_order(len(xt), min(batch_size, len(xt)), epochs * steps, seed + 1)
    trainer = AlignedTraining(model, method, weight)
    optimizer = keras.optimizers.Adam(learning_rate=lr, epsilon=tuning.ADAM_EPSILON)
    trainer.compile(optimizer=optimizer, run_eagerly=config.profile().keras_eager, jit_compile=False)
    log = _EpochLog(epochs, verbose)
    callbacks = [log] if method != "dann" else [ReversalSchedule(weight, epochs * steps, steps), log]
    batches = _BookOrder(xs, ys, xt, source_order, target_order)
    trainer.fit(batches, epochs=epochs, steps_per_epoch=steps, shuffle=False, verbose=0, callbacks=callbacks)
    return {**log.history, "epoch_seconds": log.seconds}

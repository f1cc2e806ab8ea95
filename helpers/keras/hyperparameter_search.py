"""Keras: hyperparameter search (Optuna trials, pruning) (chapter 13). Mirrors `helpers.torch.hyperparameter_search`.

A trial fine-tunes the top `unfreeze` feature blocks of the ImageNet MobileNetV2 and a new head on features that
the frozen lower blocks computed once (`trial_features`): the space, the samplers, the pruners and the budget
live in `helpers.hyperparameter_search`, the same for both frameworks.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from helpers import checks, config, hyperparameter_search, tuning
from helpers.keras.core import compiled
from helpers.keras.internals import flatten_layers
from helpers.keras.models import Model, blocks, feature_dim, new_head

__all__ = ["trial_features", "top_model", "run_trial", "trial_accuracy"]


def trial_features(
    backbone, images, max_unfreeze=hyperparameter_search.MAX_UNFREEZE, batch_size=256
) -> dict[int, np.ndarray]:
    """The frozen part's output once for every unfreeze depth k = 0..max_unfreeze: {k: input of the top k blocks}
    (NHWC float32 feature maps; k = 0 is the pooled feature vector), computed in inference mode."""
    parts = blocks(backbone)
    max_unfreeze = checks.up_to("max_unfreeze", max_unfreeze, len(parts) - 1, f" (the network has {len(parts)} blocks)")
    images = checks.inputs(images, (None, None, 3))
    lower = keras.Sequential(parts[: len(parts) - max_unfreeze])
    found = {k: [] for k in range(max_unfreeze + 1)}
    for begin in range(0, len(images), batch_size):  # eager: large batches, and no retracing for the last one
        x = lower(images[begin : begin + batch_size], training=False)
        for k in range(max_unfreeze, -1, -1):
            found[k].append(np.asarray(ops.mean(x, axis=(1, 2)) if k == 0 else x))
            if k:
                x = parts[len(parts) - k](x, training=False)
    return {k: np.concatenate(v) for k, v in found.items()}


def _copy(block) -> Model:
    """A new block with the same architecture and weights (BatchNorm statistics included)."""
    clone = keras.models.clone_model(block)
    clone.set_weights(block.get_weights())
    return clone


def top_model(backbone, unfreeze, num_classes) -> Model:
    """Copies of the top `unfreeze` feature blocks of `backbone`, global average pooling and a new head: cached
    features of depth `unfreeze` in, logits out (unfreeze=0: the head alone, a linear probe)."""
    parts = blocks(backbone)
    unfreeze = checks.up_to("unfreeze", unfreeze, len(parts) - 1, f" (the network has {len(parts)} blocks)")
    head = new_head(feature_dim(backbone), num_classes)
    if unfreeze == 0:
        inputs = keras.Input((feature_dim(backbone),), name="features")
        x = inputs
    else:
        top = [_copy(block) for block in parts[len(parts) - unfreeze :]]
        inputs = keras.Input(top[0].inputs[0].shape[1:], name="features")
        x = keras.Sequential(top, name="blocks")(inputs)
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, head(x), name=f"top_{unfreeze}")
    model.unfreeze = unfreeze
    for layer in flatten_layers(model, include_self=True, recursive=True):
        keras.layers.Layer.trainable.fset(layer, True)
    return model


def _data(pair, unfreeze: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    features, labels = checks.pair(pair, what)
    if not isinstance(features, dict) or unfreeze not in features:
        raise ValueError(f"{what} must be (trial_features(...), labels) with features of depth {unfreeze}")
    x = np.asarray(features[unfreeze], dtype=np.float32)
    return x, checks.labels(labels, len(x), None).astype(np.int32)


def _accuracy(model: Model, x: np.ndarray, y: np.ndarray, batch_size: int = 512) -> float:
    hits = 0
    for i in range(0, len(y), batch_size):
        logits = model(x[i : i + batch_size], training=False)
        hits += int(np.sum(np.asarray(ops.argmax(logits, axis=-1)) == y[i : i + batch_size]))
    return hits / len(y)


def _adamw(lr: float, weight_decay: float):
    """AdamW with the book's epsilon (helpers.tuning), decoupled decay as in torch.optim.AdamW."""
    return keras.optimizers.AdamW(learning_rate=lr, weight_decay=weight_decay, epsilon=tuning.ADAM_EPSILON)


def run_trial(params, backbone, train, validation, seed=0, report=None, batch_size=64, max_epochs=None) -> dict:
    """Train one recipe of the search space (`hyperparameter_search.space`) on cached features; score it on validation.

    train, validation: (trial_features(...), labels). AdamW with the head's and the blocks' rates and decoupled
    weight decay; BatchNorm layers keep their ImageNet statistics. Each epoch is ceil(N / batch_size) batches in
    tuning.batch_order(N, batch_size, steps, seed), run as one graph call (eagerly where the profile says so);
    after each, report(epoch, validation_accuracy) if given (it may raise to stop the trial). max_epochs: the
    space's epoch limit (None: the profile's epochs). Returns {'val_accuracy' (last epoch), 'history', 'params'
    (completed with defaults), 'model'}.
    """
    space_ = hyperparameter_search.space(max_epochs if max_epochs is not None else config.profile().epochs)
    params, batch_size = hyperparameter_search.check_params(params, space_), checks.count("batch_size", batch_size)
    k = params["unfreeze"]
    x, y = _data(train, k, "train")
    val_x, val_y = _data(validation, k, "validation")
    keras.utils.set_random_seed(seed)
    model = top_model(backbone, k, int(max(y.max(), val_y.max())) + 1)
    head = model.get_layer("head").trainable_weights
    top = model.get_layer("blocks").trainable_weights if k else []
    head_opt = _adamw(params["head_lr"], params["weight_decay"])
    top_opt = _adamw(params["backbone_lr"], params["weight_decay"])
    head_opt.build(head)  # the optimizer's slots exist before the step is traced: one trace per trial, not two
    if top:
        top_opt.build(top)

    def step(xb, yb):
        with tf.GradientTape() as tape:
            logits = model(xb, training=False)  # no dropout in the head; BatchNorm uses its stored statistics
            loss = ops.mean(keras.losses.sparse_categorical_crossentropy(yb, logits, from_logits=True))
        grads = tape.gradient(loss, head + top)
        head_opt.apply_gradients(zip(grads[: len(head)], head))
        if top:
            top_opt.apply_gradients(zip(grads[len(head) :], top))
        return loss

    def one_epoch(batches_x, batches_y):  # one graph call per epoch: the steps loop inside it (tf.while_loop)
        for i in tf.range(tf.shape(batches_x)[0]):
            step(batches_x[i], batches_y[i])

    one_epoch = compiled(one_epoch)
    steps = math.ceil(len(y) / batch_size)
    order = tuning.batch_order(len(y), min(batch_size, len(y)), params["epochs"] * steps, seed)
    history = []
    for epoch in range(params["epochs"]):
        batches = np.stack(order[epoch * steps : (epoch + 1) * steps])
        one_epoch(x[batches], y[batches])
        history.append(_accuracy(model, val_x, val_y))
        if report is not None:
            report(epoch, history[-1])
    return {"val_accuracy": history[-1], "history": history, "params": params, "model": model}


def trial_accuracy(model, data) -> float:
    """Accuracy of a model from run_trial (or top_model) on (trial_features(...), labels)."""
    x, y = _data(data, model.unfreeze, "data")
    return _accuracy(model, x, y)

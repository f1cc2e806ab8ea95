"""Training (Keras): fit, evaluate and predict; optimizers, schedules, losses, L2-SP, early stopping,
augmentation and the learning-rate range test (chapters 02-06)."""

from __future__ import annotations

import functools
import time

import keras
import numpy as np
import tensorflow as tf

from helpers import checks, config, tuning
from helpers.keras.core import (
    block_rates,
    check_data,
    input_shape,
    precision_optimizer,
    precision_options,
    use_precision,
)
from helpers.metrics import accuracy, nll

__all__ = [
    "fit",
    "evaluate",
    "predict",
    "learning_rates",
    "augment_images",
    "lr_range_test",
]

OPTIMIZERS = {  # settings shared with helpers.torch through helpers.tuning
    "adam": functools.partial(keras.optimizers.Adam, epsilon=tuning.ADAM_EPSILON),
    "adamw": functools.partial(keras.optimizers.AdamW, epsilon=tuning.ADAM_EPSILON),
    "sgd": keras.optimizers.SGD,
    "momentum": functools.partial(keras.optimizers.SGD, momentum=tuning.MOMENTUM),
    "adagrad": functools.partial(  # Keras adds epsilon inside the square root, PyTorch outside: hence the square
        keras.optimizers.Adagrad, initial_accumulator_value=tuning.ADAGRAD_INITIAL, epsilon=tuning.ADAGRAD_EPSILON**2
    ),
    "rmsprop": functools.partial(keras.optimizers.RMSprop, rho=tuning.RMSPROP_RHO, epsilon=tuning.RMSPROP_EPSILON**2),
}


HISTORY_KEYS = ("loss", "cross_entropy", "accuracy", "epoch_seconds", "val_loss", "val_cross_entropy", "val_accuracy")


class EpochTimer(keras.callbacks.Callback):
    """Record the wall-clock seconds of every epoch."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


def fit(
    model,
    train,
    validation=None,
    epochs=1,
    lr=1e-3,
    batch_size=32,
    optimizer="adam",
    verbose=True,
    *,
    weight_decay=None,
    schedule=None,
    loss="cross_entropy",
    label_smoothing=0.0,
    l2_sp=0.0,
    early_stopping=None,
    augment=None,
    block_lr_decay=None,
    precision=None,
    channels_last=None,
    compile=None,
) -> dict:
    """Train on (inputs, labels); returns the per-epoch history.

    History: `loss` is the optimised objective (with label smoothing and the L2-SP penalty), `cross_entropy` the
    plain cross-entropy, both averaged over the epoch's batches; `val_loss`/`val_cross_entropy` are the same two on
    the validation data after the epoch. weight_decay: decoupled decay (None: 0.01 for adamw, else 0); schedule: a
    name in tuning.SCHEDULES; loss: a name in tuning.LOSSES, with label_smoothing; l2_sp: pull toward the starting
    weights outside `head`; early_stopping: patience in epochs on the validation cross-entropy, best weights
    restored; augment: Keras preprocessing layers applied to each training batch. block_lr_decay: discriminative
    rates, the head trains at lr and the feature block k levels below it at lr * block_lr_decay**k.
    Speed (chapter 16; None means off on every device, so a default fit is the plain float32 loop): precision
    'float32', 'bfloat16' or 'float16' (None: float32; float16 needs a GPU), a mixed dtype policy on every layer
    for the fit (variables stay float32), float16 with a LossScaleOptimizer; channels_last: accepted for parity,
    Keras images are NHWC already; compile: XLA (jit_compile; None: off, not Keras' 'auto').
    """
    epochs, batch_size = checks.count("epochs", epochs), checks.count("batch_size", batch_size)
    precision, _, jit_compile = precision_options(precision, channels_last, compile)
    checks.positive(lr=lr)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {optimizer!r}; known optimizers: {', '.join(OPTIMIZERS)}")
    tuning.check_options(schedule, loss, label_smoothing, weight_decay, l2_sp, early_stopping, validation is not None)
    x, y = check_data(model, train, "train")
    val = check_data(model, validation, "validation") if validation is not None else None
    if not model.trainable_weights:
        raise ValueError("model has no trainable parameters: unfreeze something before fit")
    rate = _make_schedule(schedule, lr, epochs * _steps(x, batch_size))
    loss_fn = _make_loss(model, loss, label_smoothing, l2_sp)
    plain = tuning.is_plain_cross_entropy(loss, label_smoothing, l2_sp)  # then the objective is the cross-entropy
    cross_entropy = keras.metrics.SparseCategoricalCrossentropy(from_logits=True, name="cross_entropy")
    restore = use_precision(model, precision)
    try:
        optimizer = block_rates(_make_optimizer(optimizer, rate, weight_decay), model, block_lr_decay)
        model.compile(
            optimizer=precision_optimizer(optimizer, precision),
            loss=loss_fn,
            metrics=["accuracy"] if plain else [cross_entropy, "accuracy"],
            run_eagerly=config.profile().keras_eager,
            jit_compile=jit_compile,
        )
        timer = EpochTimer()
        callbacks = [timer] if val is None else [timer, _Validation(val, loss_fn, early_stopping)]
        result = model.fit(
            **_train_inputs(x, y, batch_size, augment), epochs=epochs, verbose=2 if verbose else 0, callbacks=callbacks
        )
    finally:
        restore()
    history = {k: [float(v) for v in vals] for k, vals in result.history.items()}
    if plain:
        history["cross_entropy"] = list(history["loss"])
    history["epoch_seconds"] = timer.seconds
    return {key: history[key] for key in HISTORY_KEYS if key in history}  # the order helpers.torch reports


def evaluate(model, data, batch_size=256) -> dict[str, float]:
    """Cross-entropy loss and accuracy on (inputs, labels)."""
    batch_size = checks.count("batch_size", batch_size)
    x, y = check_data(model, data)
    logits = predict(model, x, batch_size=batch_size)
    return {"loss": nll(y, logits), "accuracy": accuracy(y, logits)}


def predict(model, x, batch_size=256) -> np.ndarray:
    """Model outputs (logits or features) for NumPy inputs, as a NumPy array."""
    batch_size = checks.count("batch_size", batch_size)
    return quiet_predict(model, checks.inputs(x, input_shape(model)), batch_size)


def quiet_predict(model, inputs, batch_size: int) -> np.ndarray:
    """model.predict (on an array or a dict of arrays) without TensorFlow's retracing warning; each new model
    traces its predict function once, which is expected here."""
    logger, level = tf.get_logger(), tf.get_logger().level
    logger.setLevel("ERROR")
    try:
        return np.asarray(model.predict(inputs, batch_size=batch_size, verbose=0))
    finally:
        logger.setLevel(level)


def _make_optimizer(name: str, learning_rate, weight_decay: float | None = None):
    """The named Keras optimizer; `learning_rate` a number or a schedule; weight decay is decoupled in Keras."""
    if name not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {name!r}; known optimizers: {', '.join(OPTIMIZERS)}")
    decay = tuning.weight_decay_for(name, weight_decay)
    return OPTIMIZERS[name](learning_rate=learning_rate, weight_decay=decay if name == "adamw" else decay or None)


def _make_schedule(schedule: str | None, lr: float, total_steps: int):
    """A keras.optimizers.schedules schedule (a plain number for 'constant'), read once per optimizer step."""
    name = tuning.check_schedule(schedule, lr, total_steps)
    S = keras.optimizers.schedules
    warmup = tuning.warmup_steps(total_steps)
    if name == "constant":
        return lr
    if name == "step":
        boundaries = [m - 1 for m in tuning.step_milestones(total_steps)]  # the rate drops after each boundary
        return S.PiecewiseConstantDecay(boundaries, [lr * tuning.STEP_FACTOR**i for i in range(len(boundaries) + 1)])
    if name == "exponential":
        return S.ExponentialDecay(lr, total_steps, tuning.EXPONENTIAL_FINAL)
    if name == "cosine":
        return S.CosineDecay(lr, total_steps)
    alpha = 1.0 if name == "warmup" else 0.0  # cosine decay to alpha * lr: alpha=1 keeps the rate after warmup
    return S.CosineDecay(
        lr * tuning.WARMUP_START, total_steps - warmup, alpha=alpha, warmup_target=lr, warmup_steps=warmup
    )


def learning_rates(schedule, lr, total_steps) -> np.ndarray:
    """The learning rate at every optimizer step, as keras.optimizers.schedules computes it for `schedule`."""
    rate = _make_schedule(schedule, lr, total_steps)
    if not callable(rate):
        return np.full(total_steps, float(rate))
    return np.array([float(rate(step)) for step in range(total_steps)])


def _make_loss(model, name: str, label_smoothing: float = 0.0, l2_sp: float = 0.0):
    """The training loss, plus the L2-SP penalty l2_sp/2 * sum((w - w_start)^2) over the weights outside `head`."""
    if name == "cross_entropy" and not label_smoothing and not l2_sp:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    classes = model.outputs[0].shape[-1]
    head = next((layer for layer in model.layers if layer.name == "head"), None)
    in_head = {id(w) for w in head.weights} if head is not None else set()
    anchors = [(w, tf.constant(w.numpy())) for w in model.trainable_weights if id(w) not in in_head] if l2_sp else []

    def loss(labels, logits):
        target = keras.ops.one_hot(keras.ops.cast(keras.ops.reshape(labels, (-1,)), "int32"), classes)
        target = target * (1 - label_smoothing) + label_smoothing / classes
        if name == "cross_entropy":
            per_example = keras.losses.categorical_crossentropy(target, logits, from_logits=True)
        elif name == "squared_error":
            per_example = keras.ops.mean(keras.ops.square(logits - target), axis=-1)
        else:
            per_example = keras.losses.huber(target, logits, delta=tuning.HUBER_DELTA)
        if anchors:
            per_example += 0.5 * l2_sp * sum(keras.ops.sum(keras.ops.square(w - start)) for w, start in anchors)
        return per_example

    return loss


class _Validation(keras.callbacks.Callback):
    """After each epoch: the training objective, plain cross-entropy and accuracy on the validation data;
    optional early stopping on the validation cross-entropy, with the best epoch's weights restored."""

    def __init__(self, data, loss_fn, patience: int | None = None):
        super().__init__()
        self.data, self.loss_fn, self.patience = data, loss_fn, patience
        self.best, self.best_weights, self.waited = float("inf"), None, 0

    def on_epoch_end(self, epoch, logs=None):
        x, y = self.data
        logits = predict(self.model, x)
        objective = keras.ops.convert_to_numpy(self.loss_fn(y, keras.ops.convert_to_tensor(logits)))
        cross_entropy = nll(y, logits)
        logs["val_loss"], logs["val_cross_entropy"] = float(np.mean(objective)), cross_entropy
        logs["val_accuracy"] = accuracy(y, logits)
        if self.patience is None:
            return
        if cross_entropy < self.best:
            self.best, self.waited, self.best_weights = cross_entropy, 0, self.model.get_weights()
        else:
            self.waited += 1
        self.model.stop_training = self.waited >= self.patience

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


def _train_inputs(x: np.ndarray, y: np.ndarray, batch_size: int, augment=None) -> dict:
    """Arguments for `model.fit`: arrays, or a tf.data pipeline applying `augment` (Keras layers) to each batch."""
    if augment is None:
        return {"x": x, "y": y, "batch_size": batch_size}
    if not callable(augment):
        raise ValueError(f"augment must be a Keras preprocessing layer or Sequential (a callable), got {augment!r}")
    batches = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x)).batch(batch_size)
    augmented = batches.map(lambda images, labels: (augment(images, training=True), labels)).prefetch(2)
    return {"x": augmented, "shuffle": False}  # the pipeline shuffles, afresh every epoch


def augment_images(images, augment) -> np.ndarray:
    """Apply an augmentation pipeline (Keras preprocessing layers) to each NHWC image independently."""
    return keras.ops.convert_to_numpy(augment(np.asarray(images, dtype=np.float32), training=True))


def lr_range_test(model, train, min_lr=1e-6, max_lr=1.0, steps=100, batch_size=32, optimizer="adam") -> dict:
    """Train with a rate rising exponentially from min_lr to max_lr; the loss at each step (weights restored after)."""
    batch_size = checks.count("batch_size", batch_size)
    rates = tuning.range_test_rates(min_lr, max_lr, steps)
    x, y = check_data(model, train, "train")
    saved = model.get_weights()
    model.compile(
        optimizer=_make_optimizer(optimizer, min_lr),
        loss=_make_loss(model, "cross_entropy"),
        run_eagerly=config.profile().keras_eager,
    )
    losses = []
    try:
        for rate, batch in zip(rates, tuning.batch_order(len(y), batch_size, len(rates))):
            model.optimizer.learning_rate = float(rate)
            losses.append(float(model.train_on_batch(x[batch], y[batch])))
            if tuning.diverged(losses):
                break
    finally:
        model.set_weights(saved)
    return {"lr": rates[: len(losses)], "loss": np.array(losses)}


def _steps(x, batch_size: int) -> int:
    """Optimizer steps in one epoch over x (the last, smaller batch included)."""
    return -(-len(x) // batch_size)

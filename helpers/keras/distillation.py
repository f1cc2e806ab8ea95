"""Chapter 11 (knowledge distillation and parameter sharing): soft targets, distillation training, shared backbones.

Mirrors the module of the same name in the other framework package (tests/test_parity.py).
"""

from __future__ import annotations

import collections
import math
import time

import keras
import numpy as np
import tensorflow as tf

from helpers import checks, distillation, tuning
from helpers.keras.core import compiled, input_shape, num_outputs
from helpers.keras.models import Model, new_head, small_cnn_backbone, tagged
from helpers.models import SMALL_CNN_BLOCKS

__all__ = ["distillation_loss", "fit_distilled", "multi_head_cnn", "task_model", "fit_multitask", "latency"]

ops = keras.ops


def _shape(tensor) -> tuple:
    return tuple(None if d is None else int(d) for d in tensor.shape)


def distillation_loss(student_logits, teacher_logits, labels=None, temperature=4.0, alpha=0.5):
    """Hinton et al.'s loss: alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE(labels).

    Both terms are batch means: the soft term over every row, the hard term over the labelled rows only (label
    distillation.UNLABELLED, -1, marks a row without a label; labels=None: no row has one). A batch without labels
    contributes only alpha times the soft term.
    """
    temperature, alpha = distillation.check_temperature(temperature), distillation.check_alpha(alpha)
    distillation.check_logit_shapes(_shape(student_logits), _shape(teacher_logits))
    student_logits = ops.convert_to_tensor(student_logits, "float32")
    teacher_logits = ops.convert_to_tensor(teacher_logits, "float32")
    log_student = ops.log_softmax(student_logits / temperature, axis=-1)
    log_teacher = ops.log_softmax(teacher_logits / temperature, axis=-1)
    kl_rows = ops.sum(ops.exp(log_teacher) * (log_teacher - log_student), axis=-1)
    soft = ops.mean(kl_rows) * temperature**2
    if labels is None:
        return alpha * soft
    labels = ops.cast(ops.convert_to_tensor(labels), "int32")
    labelled = ops.cast(ops.not_equal(labels, distillation.UNLABELLED), "float32")
    ce_rows = keras.losses.sparse_categorical_crossentropy(ops.maximum(labels, 0), student_logits, from_logits=True)
    hard = ops.sum(ce_rows * labelled) / ops.maximum(ops.sum(labelled), 1.0)  # 0 when no row is labelled
    return alpha * soft + (1 - alpha) * hard


def _adam(lr: float):
    """Adam with the book's epsilon (helpers.tuning), as book.fit builds it."""
    return keras.optimizers.Adam(learning_rate=lr, epsilon=tuning.ADAM_EPSILON)


def fit_distilled(
    student,
    x,
    teacher_logits,
    labels=None,
    temperature=4.0,
    alpha=0.5,
    epochs=1,
    lr=1e-3,
    batch_size=32,
    seed=0,
    verbose=False,
) -> dict:
    """Train `student` on images x against the teacher's logits on the same images (distillation_loss), with Adam.

    labels: class ids with -1 for unlabelled images, or None (all unlabelled). Each epoch is ceil(N / batch_size)
    full batches in the order tuning.batch_order(N, batch_size, steps, seed) gives. Returns {'loss', 'epoch_seconds'}.
    """
    epochs, batch_size = checks.count("epochs", epochs), checks.count("batch_size", batch_size)
    checks.positive(lr=lr)
    temperature, alpha = distillation.check_temperature(temperature), distillation.check_alpha(alpha)
    x = checks.inputs(x, input_shape(student))
    teacher, labels = distillation.check_teacher_logits(teacher_logits, len(x), num_outputs(student, x), labels)
    steps = math.ceil(len(x) / batch_size)
    order = tuning.batch_order(len(x), min(batch_size, len(x)), epochs * steps, seed)
    opt = _adam(lr)

    def step(xb, tb, yb):
        with tf.GradientTape() as tape:
            loss = distillation_loss(student(xb, training=True), tb, yb, temperature, alpha)
        grads = tape.gradient(loss, student.trainable_weights)
        opt.apply_gradients(zip(grads, student.trainable_weights))
        return loss

    step = compiled(step)
    history = collections.defaultdict(list)
    for epoch in range(epochs):
        start, total = time.perf_counter(), 0.0
        for batch in order[epoch * steps : (epoch + 1) * steps]:
            total += float(step(x[batch], teacher[batch], labels[batch]))
        distillation.record_epoch(history, total / steps, time.perf_counter() - start, epoch, epochs, verbose)
    return dict(history)


def _check_num_classes(num_classes) -> list[int]:
    """One class count (>= 2) per task, at least two tasks."""
    if isinstance(num_classes, int | np.integer) or len(num_classes) < 2:
        raise ValueError(
            f"num_classes must list one class count per task, two or more, e.g. (10, 10); got {num_classes!r}"
        )
    return [checks.classes(n) for n in num_classes]


def multi_head_cnn(num_classes, channels=1) -> Model:
    """The small CNN's backbone shared by several tasks, one linear head per task (num_classes: one count per task)."""
    counts, channels = _check_num_classes(num_classes), checks.count("channels", channels)
    backbone = tagged(small_cnn_backbone(channels), "small_cnn")
    width = SMALL_CNN_BLOCKS[-1][0]
    images = keras.Input((None, None, channels), name="images")
    features = backbone(images)
    heads = [keras.Sequential(new_head(width, n).layers, name=f"head_{i}") for i, n in enumerate(counts)]
    return keras.Model(images, [head(features) for head in heads], name="multi_head_cnn")


def task_model(model, task) -> Model:
    """One task's network inside a multi_head_cnn: the shared backbone and that task's head (weights shared)."""
    task = checks.index("task", task, len(model.outputs))
    # model.input, not model.inputs: a one-element list would make Keras warn on every plain-tensor call
    return keras.Model(model.input, model.outputs[task], name=f"task_{task}")


def _check_tasks(model, tasks) -> list[tuple[np.ndarray, np.ndarray]]:
    """One (images, labels) pair per head of the model, checked against that head."""
    if not isinstance(tasks, list | tuple) or len(tasks) != len(model.outputs):
        raise ValueError(f"tasks must be a list of {len(model.outputs)} (images, labels) pairs, one per head")
    found = []
    for i, task in enumerate(tasks):
        x, y = checks.pair(task, f"tasks[{i}]")
        x = checks.inputs(x, input_shape(model))
        found.append((x, checks.labels(y, len(x), int(model.outputs[i].shape[-1]))))
    return found


def fit_multitask(model, tasks, epochs=1, lr=1e-3, batch_size=32, seed=0, verbose=False) -> dict:
    """Train a multi_head_cnn on several tasks at once with Adam: each step takes one batch of every task, runs them
    through the backbone together and adds the tasks' mean cross-entropies. An epoch is one pass over the largest
    task (smaller ones are cycled). Returns {'loss', 'epoch_seconds'}."""
    epochs, batch_size = checks.count("epochs", epochs), checks.count("batch_size", batch_size)
    checks.positive(lr=lr)
    tasks = _check_tasks(model, tasks)
    steps = math.ceil(max(len(y) for _, y in tasks) / batch_size)
    orders = [
        tuning.batch_order(len(y), min(batch_size, len(y)), epochs * steps, seed + i) for i, (_, y) in enumerate(tasks)
    ]
    opt = _adam(lr)

    def step(xs, ys):
        sizes = [ops.shape(x)[0] for x in xs]
        with tf.GradientTape() as tape:
            outputs = model(ops.concatenate(xs, axis=0), training=True)
            loss, begin = 0.0, 0
            for i, (size, y) in enumerate(zip(sizes, ys)):
                logits = outputs[i][begin : begin + size]
                loss += ops.mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
                begin += size
        grads = tape.gradient(loss, model.trainable_weights)
        opt.apply_gradients(zip(grads, model.trainable_weights))
        return loss

    step = compiled(step)
    history = collections.defaultdict(list)
    for epoch in range(epochs):
        start, total = time.perf_counter(), 0.0
        for s in range(epoch * steps, (epoch + 1) * steps):
            batches = [order[s] for order in orders]
            xs = [x[b] for (x, _), b in zip(tasks, batches)]
            ys = [y[b] for (_, y), b in zip(tasks, batches)]
            total += float(step(xs, ys))
        distillation.record_epoch(history, total / steps, time.perf_counter() - start, epoch, epochs, verbose)
    return dict(history)


def latency(model, x, repeats=20) -> dict:
    """Measured inference time of one forward pass on the batch x (in inference mode, as a compiled graph): the
    median over `repeats` calls in milliseconds per batch and per image."""
    repeats = checks.count("repeats", repeats)
    x = checks.inputs(x, input_shape(model))
    inputs = tf.constant(x)
    forward = tf.function(lambda images: model(images, training=False))
    seconds = distillation.time_call(lambda: forward(inputs).numpy(), repeats=repeats)
    return {"batch": len(x), "ms per batch": 1e3 * seconds, "ms per image": 1e3 * seconds / len(x)}

"""Knowledge distillation and small models (chapter 11): argument checks, soft targets, "gap recovered", timing.

Framework-neutral: imports neither PyTorch nor TensorFlow. `helpers.torch.distillation` and
`helpers.keras.distillation` use these checks, so both frameworks refuse the same bad input with the same message.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable

import numpy as np

from helpers import checks
from helpers.stats import mean_spread  # noqa: F401  (re-exported: the book's one "±" convention)

UNLABELLED = -1  # the label of a transfer-set image that has no label: only the teacher's soft target trains on it


def check_temperature(temperature) -> float:
    """A softmax temperature: a finite number > 0 (1 is the plain softmax, larger is softer)."""
    if isinstance(temperature, bool | np.bool_) or not isinstance(temperature, numbers.Real):
        raise ValueError(f"temperature must be a positive number, got {temperature!r} ({type(temperature).__name__})")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(
            f"temperature must be a finite number > 0 (1: the plain softmax, 2-10: softer targets), got {temperature!r}"
        )
    return float(temperature)


def check_alpha(alpha) -> float:
    """The weight of the soft-target term: a number in [0, 1] (1 - alpha weighs the hard-label term)."""
    if isinstance(alpha, bool | np.bool_) or not isinstance(alpha, numbers.Real) or not 0 <= alpha <= 1:
        raise ValueError(
            "alpha, the weight of the soft-target term, must be a number in [0, 1] (the hard-label term gets "
            f"1 - alpha; 1.0 uses the teacher only), got {alpha!r}"
        )
    return float(alpha)


def check_logit_shapes(student_shape, teacher_shape) -> None:
    """Student and teacher logits must both be (N, classes) with the same N and the same classes."""
    student_shape, teacher_shape = tuple(student_shape), tuple(teacher_shape)
    if len(student_shape) != 2 or student_shape != teacher_shape:
        raise ValueError(
            f"teacher logits {teacher_shape} do not match the student's outputs {student_shape}: both must be "
            "(N, classes), one row per image in the same order, over the same classes"
        )


def check_teacher_logits(teacher_logits, num_examples: int, num_outputs: int, labels=None) -> tuple:
    """Teacher logits (N, num_outputs) for N training images and a student with num_outputs outputs, and labels
    (class ids, or UNLABELLED) or None (all unlabelled); returned as float32 logits and int64 labels."""
    teacher_logits = np.asarray(teacher_logits)
    if teacher_logits.ndim != 2 or teacher_logits.dtype.kind != "f":
        raise ValueError(
            f"teacher_logits must be a float array (N, classes), got {teacher_logits.dtype} "
            f"{teacher_logits.shape}; compute them with predict on the training images"
        )
    if teacher_logits.shape != (num_examples, num_outputs):
        raise ValueError(
            f"teacher logits {teacher_logits.shape} do not match the student's outputs and the data: want "
            f"({num_examples}, {num_outputs}), one row per training image, in the same order, over the student's "
            f"{num_outputs} classes"
        )
    if not np.isfinite(teacher_logits).all():
        raise ValueError("teacher_logits contain NaN or infinite values")
    if labels is None:
        return teacher_logits.astype(np.float32), np.full(num_examples, UNLABELLED, dtype=np.int64)
    labels = np.asarray(labels)
    if labels.shape != (num_examples,) or labels.dtype.kind not in "iu":
        raise ValueError(
            f"labels must be integer class ids, one per training image ({num_examples}), with {UNLABELLED} for an "
            f"unlabelled image; got {labels.dtype} {labels.shape}"
        )
    if labels.min() < UNLABELLED or labels.max() >= num_outputs:
        raise ValueError(
            f"labels must be in 0..{num_outputs - 1} or {UNLABELLED} (unlabelled), got {labels.min()}..{labels.max()}"
        )
    return teacher_logits.astype(np.float32), labels.astype(np.int64)


def soft_targets(logits, temperature: float = 1.0) -> np.ndarray:
    """softmax(logits / temperature), row by row: the teacher's soft targets at that temperature."""
    temperature = check_temperature(temperature)
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def gap_recovered(distilled, student, teacher) -> np.ndarray:
    """(distilled - student) / (teacher - student), element by element (e.g. one value per seed): 0 means the
    distilled student is no better than the student alone, 1 that it matches the teacher, below 0 that it is worse."""
    distilled, student, teacher = (np.asarray(v, dtype=np.float64) for v in (distilled, student, teacher))
    gap = teacher - student
    if np.any(np.abs(gap) < 1e-9):
        raise ValueError(
            "the teacher and the student alone score the same, so there is no gap to recover; compare the accuracies"
        )
    return (distilled - student) / gap


def time_call(run: Callable[[], object], repeats: int = 20, warmup: int = 3) -> float:
    """Median wall-clock seconds of `run()` over `repeats` calls, after `warmup` calls that are not timed."""
    repeats, warmup = checks.count("repeats", repeats), checks.count("warmup", warmup, minimum=0)
    for _ in range(warmup):
        run()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds))


def record_epoch(history: dict, mean_loss: float, seconds: float, epoch: int, epochs: int, verbose: bool) -> None:
    """Append one epoch's mean loss and seconds to a training history; print them when verbose (both frameworks)."""
    history["loss"].append(mean_loss)
    history["epoch_seconds"].append(seconds)
    if verbose:
        print(f"  epoch {epoch + 1}/{epochs}  {seconds:.1f}s  loss {mean_loss:.4f}")

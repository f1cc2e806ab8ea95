"""Metrics on NumPy arrays, computed with scikit-learn. Framework-neutral."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits (N, C), numerically stable."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def accuracy(labels: np.ndarray, logits: np.ndarray) -> float:
    """Fraction of rows whose arg-max logit is the label."""
    return float(skm.accuracy_score(labels, np.asarray(logits).argmax(axis=-1)))


def top_k(logits: np.ndarray, class_names, k: int = 3) -> list[list[tuple[str, float]]]:
    """For each row, the k most probable classes as (name, probability) pairs."""
    probs = softmax(np.asarray(logits, dtype=np.float64))
    order = np.argsort(-probs, axis=-1)[:, :k]
    return [[(class_names[j], float(p[j])) for j in row] for p, row in zip(probs, order)]


def report(labels: np.ndarray, logits: np.ndarray, class_names) -> str:
    """scikit-learn's per-class precision/recall/F1 report."""
    predictions = np.asarray(logits).argmax(axis=-1)
    return skm.classification_report(labels, predictions, target_names=list(class_names), digits=3, zero_division=0)

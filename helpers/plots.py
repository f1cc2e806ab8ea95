"""Plots with matplotlib: image grids, learning curves, confusion matrices. Framework-neutral."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import ConfusionMatrixDisplay


def show_images(images, titles=None, ncols: int = 8, size: float = 1.6, cmap="gray"):
    """A grid of images (N, H, W[, C]) with optional titles; returns the figure."""
    images = np.asarray(images)
    nrows = math.ceil(len(images) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * size * 1.15), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            image = images[i].squeeze(-1) if images[i].ndim == 3 and images[i].shape[-1] == 1 else images[i]
            ax.imshow(image, cmap=cmap if image.ndim == 2 else None)
            if titles is not None:
                ax.set_title(str(titles[i]), fontsize=8)
    fig.tight_layout()
    return fig


def plot_history(histories: dict, metrics=("loss", "accuracy")):
    """Learning curves of several runs, {name: history}, one panel per metric; returns the figure."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        for name, history in histories.items():
            for prefix, style in (("", "-"), ("val_", "--")):
                values = history.get(prefix + metric)
                if values:
                    label = f"{name} ({'validation' if prefix else 'train'})"
                    ax.plot(range(1, len(values) + 1), values, style, marker="o", label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_confusion(labels, predictions, class_names):
    """Confusion matrix of integer labels and predictions; returns the figure."""
    fig, ax = plt.subplots(figsize=(6.5, 6.5))
    ConfusionMatrixDisplay.from_predictions(
        labels, predictions, display_labels=list(class_names), ax=ax, colorbar=False, xticks_rotation=45
    )
    fig.tight_layout()
    return fig


def show_filters(filters: np.ndarray, ncols: int = 8):
    """First-layer convolution filters (N, kh, kw, 3), each scaled to [0, 1] for display."""
    filters = np.asarray(filters, dtype=np.float32)
    low = filters.min(axis=(1, 2, 3), keepdims=True)
    high = filters.max(axis=(1, 2, 3), keepdims=True)
    return show_images((filters - low) / (high - low + 1e-8), ncols=ncols, size=0.9)


def show_feature_maps(maps: np.ndarray, count: int = 8, title: str = ""):
    """The first `count` channels of one feature map (H, W, C) as grey images."""
    fig = show_images(np.moveaxis(maps[..., :count], -1, 0), ncols=count, size=1.3, cmap="viridis")
    fig.suptitle(title, fontsize=9, y=1.02)
    return fig


def bar(values: dict, ylabel: str, title: str = ""):
    """A bar chart of {name: value}; returns the figure."""
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(values), 3.4))
    bars = ax.bar(list(values), list(values.values()), color="tab:blue")
    ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig

"""Plots with matplotlib: image grids, learning curves, confusion matrices. Framework-neutral."""

from __future__ import annotations

import itertools
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


# ---- chapters 07-08 (evaluation, interpretation): reliability, runs over seeds, heat maps, embeddings ----


def plot_reliability(curves: dict, num_bins: int = 10):
    """Reliability diagrams, one panel per {name: (labels, probabilities)}, titled with the ECE; returns the figure."""
    from helpers import metrics

    fig, axes = plt.subplots(1, len(curves), figsize=(3.4 * len(curves), 3.7), squeeze=False, sharey=True)
    for ax, (name, (labels, probs)) in zip(axes.flat, curves.items()):
        bins = metrics.reliability(labels, probs, num_bins)
        centres = (bins["edges"][:-1] + bins["edges"][1:]) / 2
        accuracy, confidence = np.nan_to_num(bins["accuracy"]), np.nan_to_num(bins["confidence"])
        ax.bar(centres, accuracy, width=0.9 / num_bins, color="tab:blue", label="accuracy in bin")
        gap = confidence - accuracy  # drawn from the accuracy up (over-confident) or down (under-confident)
        ax.bar(centres, gap, bottom=accuracy, width=0.9 / num_bins, fill=False, hatch="///", edgecolor="tab:red",
               label="gap to mean confidence")  # fmt: skip
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfectly calibrated")
        ece = metrics.expected_calibration_error(labels, probs, num_bins)
        ax.set_title(f"{name}\nECE {ece:.3f}", fontsize=9)
        ax.set_xlabel("confidence (top-class probability)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    axes.flat[0].set_ylabel("accuracy")
    axes.flat[0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def plot_runs(runs: dict, ylabel: str):
    """Scores of repeated runs, {name: values}: every run as a dot, mean ± standard deviation as a bar."""
    fig, ax = plt.subplots(figsize=(1.6 + 1.6 * len(runs), 3.6))
    for i, values in enumerate(runs.values()):
        values = np.asarray(values, dtype=float)
        offsets = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else np.zeros(1)
        ax.plot(i + offsets, values, "o", color="tab:gray", alpha=0.7)
        spread = values.std(ddof=1) if len(values) > 1 else 0.0
        ax.errorbar(i + 0.3, values.mean(), yerr=spread, fmt="s", color="tab:blue", capsize=5)
    ax.set_xticks(range(len(runs)), list(runs), fontsize=8)
    ax.set_xlim(-0.5, len(runs) - 0.3)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def show_heatmaps(images, maps: dict, labels: dict | None = None, size: float = 2.0):
    """One column per image: the image, then each {name: (N, h, w) maps in [0, 1]} laid over it, stretched to fit."""
    images = np.asarray(images)
    rows = [None, *maps]
    fig, axes = plt.subplots(len(rows), len(images), figsize=(len(images) * size, len(rows) * size * 1.15),
                             squeeze=False)  # fmt: skip
    for col, image in enumerate(images):
        image = image.squeeze(-1) if image.ndim == 3 and image.shape[-1] == 1 else image
        height, width = image.shape[:2]
        for row, name in enumerate(rows):
            ax = axes[row, col]
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.spines[:].set_visible(False)
            if name is None:
                continue
            extent = (-0.5, width - 0.5, height - 0.5, -0.5)
            ax.imshow(maps[name][col], cmap="jet", alpha=0.45, extent=extent, interpolation="bilinear", vmin=0, vmax=1)
            if labels and name in labels:
                ax.set_title(labels[name][col], fontsize=7)
            if col == 0:
                ax.set_ylabel(name, fontsize=9)
    fig.tight_layout()
    return fig


def plot_embedding(embeddings: dict, labels, class_names):
    """2-D embeddings side by side, {name: (N, 2) points}, coloured by class; returns the figure."""
    labels = np.asarray(labels)
    fig, axes = plt.subplots(1, len(embeddings), figsize=(4.4 * len(embeddings) + 1.6, 4.4), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, (name, points) in zip(axes.flat, embeddings.items()):
        for c, class_name in enumerate(class_names):
            chosen = labels == c
            ax.scatter(points[chosen, 0], points[chosen, 1], s=7, color=colours(c % 10), label=class_name)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes.flat[-1].legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig


def plot_block_change(changes: dict, log: bool = True):
    """Relative weight change per block for several runs, {name: values per block}; returns the figure."""
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    for name, values in changes.items():
        ax.plot(range(len(values)), values, marker="o", label=name)
    ax.set_xlabel("block (input → output)")
    ax.set_ylabel("‖W_after − W_before‖ / ‖W_before‖")
    if log:
        ax.set_yscale("log")
    ax.set_xticks(range(max(len(v) for v in changes.values())))
    return _finish(fig, ax)


# ---- chapters 03-04 (strategies): accuracy against a setting (unfrozen blocks, copied layers, labels) ----


def plot_curves(x, curves: dict, xlabel: str, ylabel: str, title: str = "", log_x: bool = False, log_y: bool = False):
    """Several lines over the same x values, {name: y values}, with markers; returns the figure."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for (name, values), marker in zip(curves.items(), itertools.cycle("osD^vP*X")):
        ax.plot(list(x), list(values), marker=marker, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if log_x:
        ax.set_xscale("log")
        ax.set_xticks(list(x), [str(v) for v in x])
        ax.minorticks_off()
    if log_y:
        ax.set_yscale("log")
    return _finish(fig, ax)


# ---- chapter 09 (text): token lengths, the precision-recall trade-off over thresholds ----


def plot_token_lengths(lengths, max_length: int, limit: int = 512):
    """Histogram of text lengths in tokens (log scale), with the chosen max_length and the model's limit."""
    lengths = np.asarray(lengths)
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    bins = np.geomspace(max(1, lengths.min()), max(lengths.max(), limit) + 1, 40)
    ax.hist(lengths, bins=bins, color="tab:blue", alpha=0.8)
    ax.set_xscale("log")
    truncated = (lengths > max_length).mean()
    ax.axvline(max_length, color="tab:red", label=f"max_length = {max_length} ({truncated:.0%} truncated)")
    ax.axvline(limit, color="black", linestyle="--", label=f"model limit = {limit} positions")
    ax.set_xlabel("length in tokens, [CLS] and [SEP] included")
    ax.set_ylabel("texts")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_threshold_tradeoff(labels, positive_probs):
    """Precision, recall and F1 of the positive class against the decision threshold (scikit-learn's curve)."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(labels, positive_probs)
    precision, recall = precision[:-1], recall[:-1]
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for values, name in ((precision, "precision"), (recall, "recall"), (f1, "F1")):
        ax.plot(thresholds, values, label=name)
    ax.axvline(0.5, color="gray", linestyle=":", label="threshold 0.5")
    ax.set_xlabel("decision threshold on the predicted probability")
    ax.set_ylabel("score of the positive class")
    return _finish(fig, ax)


# ---- chapters 05-06 (craft): learning-rate schedules, the range test ----


def plot_schedules(rates: dict, title: str = ""):
    """Learning rate against optimizer step for several schedules, {name: rates}; returns the figure."""
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for name, values in rates.items():
        ax.plot(np.arange(len(values)), values, label=name)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    ax.set_title(title, fontsize=10)
    return _finish(fig, ax)


def plot_lr_range(result: dict, suggestion: float, smoothed=None):
    """A learning-rate range test: loss against rate (log scale), smoothed loss and the suggested rate."""
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    ax.plot(result["lr"], result["loss"], color="tab:blue", alpha=0.35, label="loss per step")
    if smoothed is not None:
        ax.plot(result["lr"], smoothed, color="tab:blue", label="smoothed loss")
    ax.axvline(suggestion, color="tab:red", linestyle="--", label=f"suggested rate {suggestion:.1e}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    return _finish(fig, ax)


def _finish(fig, ax):
    """The common ending of a one-axes line plot: light grid, small legend, tight layout; returns the figure."""
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig

"""Looking inside networks with NumPy: Grad-CAM arithmetic and per-block weight change. Framework-neutral.

`helpers.torch.grad_cam` and `helpers.keras.grad_cam` compute a block's activations and the gradient of
a class score with respect to them; the Grad-CAM map itself is computed here, once, for both frameworks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Grad-CAM maps of the shipped photos, one per framework, written by scripts/make_grad_cam_reference.py
REFERENCE_GRAD_CAM = Path(__file__).resolve().parent / "reference_grad_cam.npz"


def target_classes(logits: np.ndarray, class_index=None) -> np.ndarray:
    """The class to explain for each row: `class_index` (one int or one per row), or each row's top class."""
    logits = np.asarray(logits)
    num_rows, num_classes = logits.shape
    if class_index is None:
        return logits.argmax(axis=1)
    targets = np.asarray(class_index)
    if targets.ndim == 0:
        targets = np.full(num_rows, int(targets))
    if targets.shape != (num_rows,) or not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"class_index must be None, one integer or {num_rows} integers, got {class_index!r}")
    if targets.min() < 0 or targets.max() >= num_classes:
        raise ValueError(f"class_index must be in 0..{num_classes - 1}, got {targets.min()}..{targets.max()}")
    return targets.astype(np.int64)


def grad_cam_maps(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """Grad-CAM from NHWC activations and score gradients: ReLU of the gradient-weighted channel sum, in [0, 1]."""
    if activations.shape != gradients.shape or activations.ndim != 4:
        raise ValueError(f"expected two NHWC arrays of one shape, got {activations.shape} and {gradients.shape}")
    channel_weights = gradients.mean(axis=(1, 2), keepdims=True)  # how much each channel raises the score
    maps = np.maximum((channel_weights * activations).sum(axis=-1), 0.0)
    peak = maps.max(axis=(1, 2), keepdims=True)
    return np.divide(maps, peak, out=np.zeros_like(maps), where=peak > 0).astype(np.float32)


def relative_change(before: list[np.ndarray], after: list[np.ndarray]) -> np.ndarray:
    """Per block, ||after - before|| / ||before|| of its weights (lists from `book.block_weights`)."""
    if len(before) != len(after):
        raise ValueError(f"before and after must list the same blocks, got {len(before)} and {len(after)}")
    change = []
    for i, (old, new) in enumerate(zip(before, after)):
        if old.shape != new.shape:
            raise ValueError(f"block {i} has {old.shape} weights before and {new.shape} after")
        change.append(np.linalg.norm(new - old) / max(np.linalg.norm(old), 1e-12))
    return np.array(change)

"""Chapter 10 (few labels, many unlabelled images): pseudo-labelling and consistency training.

Mirrors the module of the same name in the other framework package (tests/test_parity.py). The rounds of
self-training and co-training are written once, framework-neutral, in `helpers.few_labels`; this module gives them
PyTorch's training and prediction, and writes FixMatch's consistency loss and training loop in PyTorch.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from helpers import checks, few_labels
from helpers.metrics import softmax
from helpers.torch.models import Model, device
from helpers.torch.training import OPTIMIZERS, _as_tensor, _input_shape, fit, predict

__all__ = ["fit_steps", "pseudo_labels", "self_train", "co_train", "consistency_loss", "fit_consistency"]


def fit_steps(model, train, steps=200, lr=1e-3, batch_size=64, seed=0) -> dict:
    """`fit` for exactly `steps` optimizer steps (Adam), whatever the number of examples: the same training budget
    for a labelled set of 10 images and for one of 10,000 (few_labels.fixed_steps repeats and cuts the data)."""
    x, y = checks.pair(train, "train")
    x, y = few_labels.fixed_steps(np.asarray(x), np.asarray(y), steps, batch_size, seed)
    return fit(model, (x, y), epochs=1, lr=lr, batch_size=batch_size, verbose=False)


def _probabilities(model: Model, x: np.ndarray) -> np.ndarray:
    return softmax(predict(model, x))


def pseudo_labels(model, unlabelled, threshold=0.95, batch_size=256) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the unlabelled inputs that `model` classifies with softmax confidence >= threshold, and its labels."""
    threshold, unlabelled = few_labels.check_threshold(threshold), few_labels.check_unlabelled(unlabelled)
    return few_labels.confident(softmax(predict(model, unlabelled, batch_size=batch_size)), threshold)


def _trainer(make_model, steps: int, lr: float, batch_size: int, seed: int):
    """train(x, y) -> a fresh model from make_model(input width), trained for `steps` steps."""

    def train(x: np.ndarray, y: np.ndarray) -> Model:
        model = make_model(x.shape[1])
        fit_steps(model, (x, y), steps=steps, lr=lr, batch_size=batch_size, seed=seed)
        return model

    return train


def self_train(
    make_model,
    labelled,
    unlabelled,
    rounds=3,
    threshold=0.95,
    steps=200,
    lr=1e-3,
    batch_size=64,
    validation=None,
    seed=0,
) -> list[dict]:
    """Self-training (few_labels.self_training): each round a fresh `make_model(num_features)` is trained for `steps`
    steps on the labelled data plus the previous round's confident pseudo-labels. One record per round."""
    train = _trainer(make_model, steps, lr, batch_size, seed)
    return few_labels.self_training(train, _probabilities, labelled, unlabelled, rounds, threshold, validation)


def co_train(
    make_model,
    labelled,
    unlabelled,
    views,
    rounds=3,
    threshold=0.95,
    steps=200,
    lr=1e-3,
    batch_size=64,
    validation=None,
    seed=0,
) -> list[dict]:
    """Co-training (few_labels.co_training) on two views, column groups of the features: each view's model labels
    the pool for the other's. One record per round."""
    train = _trainer(make_model, steps, lr, batch_size, seed)
    return few_labels.co_training(train, _probabilities, labelled, unlabelled, views, rounds, threshold, validation)


def consistency_loss(logits_weak, logits_strong, threshold=0.95) -> tuple:
    """FixMatch's unlabelled loss and its mask: the weak view's hard pseudo-label (no gradient) is the target of
    the strong view's cross-entropy, counted only where the weak view's confidence >= threshold; averaged over
    the whole batch (masked examples count as zeros)."""
    threshold = few_labels.check_threshold(threshold)
    confidence, hard = torch.softmax(logits_weak.detach(), dim=-1).max(dim=-1)
    mask = (confidence >= threshold).float()
    return (nn.functional.cross_entropy(logits_strong, hard, reduction="none") * mask).mean(), mask


def _views(strong, weak: np.ndarray) -> np.ndarray:
    """Strong views as (views, N, ...): one array like `weak`, or several stacked on a leading axis."""
    strong = few_labels.check_unlabelled(strong, "strong")
    strong = strong[None] if strong.ndim == weak.ndim else strong
    if strong.shape[1:] != weak.shape:
        raise ValueError(
            f"strong views must match the weak view's shape {weak.shape} (one view) or add a leading axis of views, "
            f"(views, {', '.join(map(str, weak.shape))}); got {strong.shape}"
        )
    return strong


def _consistency_data(model: Model, labelled, weak, strong) -> tuple:
    """Checked (x, y), weak views (N, ...) and strong views (views, N, ...) for fit_consistency."""
    x, y = checks.pair(labelled, "labelled")
    x = checks.inputs(x, _input_shape(model))
    y = checks.labels(y, len(x), None)
    weak = checks.inputs(few_labels.check_unlabelled(weak, "weak"), _input_shape(model))
    return x, y, weak, _views(strong, weak).astype(np.float32)


def fit_consistency(
    model, labelled, weak, strong, steps=200, threshold=0.95, weight=1.0, ratio=3, lr=1e-3, batch_size=64, seed=0
) -> dict:
    """FixMatch-style training: each step, cross-entropy on `batch_size` labelled examples plus `weight` times
    consistency_loss on `ratio * batch_size` unlabelled examples (their weak view and one of their strong views,
    `strong` shaped like `weak` or (views, *weak.shape)). Adam; examples drawn with replacement from `seed`.
    History per step: loss, supervised, unsupervised, mask_rate (share of unlabelled examples above threshold)."""
    x, y, weak, strong = _consistency_data(model, labelled, weak, strong)
    steps, ratio, batch_size = (
        checks.count("steps", steps),
        checks.count("ratio", ratio),
        checks.count("batch_size", batch_size),
    )
    threshold = few_labels.check_threshold(threshold)
    checks.positive(lr=lr, weight=weight)
    dev = torch.device(device())
    model.to(dev).train()
    optimizer = OPTIMIZERS["adam"]([p for p in model.parameters() if p.requires_grad], lr=lr)
    rng = np.random.default_rng(seed)
    history = {"loss": [], "supervised": [], "unsupervised": [], "mask_rate": []}
    for _ in range(steps):
        labelled_batch, unlabelled_batch = (
            rng.integers(0, len(y), batch_size),
            rng.integers(0, len(weak), ratio * batch_size),
        )
        view = rng.integers(0, len(strong), len(unlabelled_batch))
        xb, yb = _as_tensor(x[labelled_batch]).to(dev), torch.as_tensor(y[labelled_batch]).to(dev)
        weak_b, strong_b = (_as_tensor(a).to(dev) for a in (weak[unlabelled_batch], strong[view, unlabelled_batch]))
        supervised = nn.functional.cross_entropy(model(xb), yb)
        with torch.no_grad():
            logits_weak = model(weak_b)
        unsupervised, mask = consistency_loss(logits_weak, model(strong_b), threshold)
        loss = supervised + weight * unsupervised
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for key, value in zip(history, (loss, supervised, unsupervised, mask.mean())):
            history[key].append(value.item())
    model.eval()
    return history

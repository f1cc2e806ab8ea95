"""Chapter 10 (few labels, many unlabelled images): pseudo-labelling and consistency training.

Mirrors the module of the same name in the other framework package (tests/test_parity.py). The rounds of
self-training and co-training are written once, framework-neutral, in `helpers.few_labels`; this module gives them
PyTorch's training and prediction, and writes FixMatch's consistency loss and training loop in PyTorch.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torchvision.transforms import v2

from helpers import few_labels
from helpers.torch.core import as_tensor, input_shape
from helpers.torch.models import device
from helpers.torch.training import OPTIMIZERS, fit, predict

__all__ = [
    "fit_steps",
    "pseudo_labels",
    "self_train",
    "co_train",
    "strong_augment",
    "consistency_loss",
    "fit_consistency",
]


# fit_steps, pseudo_labels, self_train and co_train need no framework beyond this wing's fit and predict: they are
# written once, in helpers/few_labels.py (wing_functions), and built here with PyTorch's.
fit_steps, pseudo_labels, self_train, co_train = few_labels.wing_functions(fit, predict, __name__)


def strong_augment(images, seed: int = 0) -> np.ndarray:
    """FixMatch's strong view with torchvision: `v2.RandAugment` (two operations per image, torchvision's default
    magnitude 9 of 31) and then `v2.RandomErasing` on every image (a rectangle of 2-33 % of the image set to black,
    as FixMatch's Cutout). uint8 (N, H, W) in and out; each image draws its own operations; `seed` makes it repeatable
    and leaves torch's global random state as it was."""
    images = few_labels.grey_images(images)
    augment = v2.Compose([v2.RandAugment(num_ops=2), v2.RandomErasing(p=1.0, value=0)])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        views = [augment(torch.from_numpy(image)[None]) for image in images]  # (1, H, W) uint8 each
    return torch.stack(views)[:, 0].numpy()


def consistency_loss(logits_weak, logits_strong, threshold=0.95) -> tuple:
    """FixMatch's unlabelled loss and its mask: the weak view's hard pseudo-label (no gradient) is the target of
    the strong view's cross-entropy, counted only where the weak view's confidence >= threshold; averaged over
    the whole batch (masked examples count as zeros)."""
    threshold = few_labels.check_threshold(threshold)
    confidence, hard = torch.softmax(logits_weak.detach(), dim=-1).max(dim=-1)
    mask = (confidence >= threshold).float()
    return (nn.functional.cross_entropy(logits_strong, hard, reduction="none") * mask).mean(), mask


def fit_consistency(
    model, labelled, weak, strong, steps=200, threshold=0.95, weight=1.0, ratio=3, lr=1e-3, batch_size=64, seed=0
) -> dict:
    """FixMatch-style training: each step, cross-entropy on `batch_size` labelled examples plus `weight` times
    consistency_loss on `ratio * batch_size` unlabelled examples (their weak view and one of their strong views,
    `strong` shaped like `weak` or (views, *weak.shape)). Adam; examples drawn with replacement from `seed`. The
    labelled, weak and strong batches go through the model in one train-mode forward pass (concatenated).
    History per step: loss, supervised, unsupervised, mask_rate (share of unlabelled examples above threshold)."""
    x, y, weak, strong = few_labels.consistency_data(input_shape(model), labelled, weak, strong)
    steps, threshold, ratio, batch_size = few_labels.consistency_options(
        steps, threshold, weight, ratio, lr, batch_size
    )
    dev = torch.device(device())
    model.to(dev).train()
    optimizer = OPTIMIZERS["adam"]([p for p in model.parameters() if p.requires_grad], lr=lr)
    history = {"loss": [], "supervised": [], "unsupervised": [], "mask_rate": []}
    for x_np, y_np, weak_np, strong_np in few_labels.consistency_batches(
        x, y, weak, strong, steps, ratio, batch_size, seed
    ):
        xb, yb = as_tensor(x_np).to(dev), torch.as_tensor(y_np).to(dev)
        weak_b, strong_b = as_tensor(weak_np).to(dev), as_tensor(strong_np).to(dev)
        # one forward pass on the three batches together, as FixMatch implementations do: a BatchNorm layer then
        # updates its statistics once per step, on the mixture, not three times on three distributions
        logits = model(torch.cat([xb, weak_b, strong_b]))
        logits_lab, logits_weak, logits_strong = logits.split([len(xb), len(weak_b), len(strong_b)])
        supervised = nn.functional.cross_entropy(logits_lab, yb)
        unsupervised, mask = consistency_loss(logits_weak, logits_strong, threshold)  # no gradient via the weak view
        loss = supervised + weight * unsupervised
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for key, value in zip(history, (loss, supervised, unsupervised, mask.mean())):
            history[key].append(value.item())
    model.eval()
    return history

"""Chapter 12 (domain adaptation): AdaBN, CORAL, DANN's gradient reversal.

Mirrors the module of the same name in the other framework package (tests/test_parity.py). The data recipes, the
argument checks and the NumPy reference formulas are framework-neutral, in `helpers.domain_adaptation`.
"""

from __future__ import annotations

import collections
import math
import time

import numpy as np
import torch
from torch import nn

from helpers import checks, domain_adaptation, tuning
from helpers.torch.core import as_tensor, check_data, input_shape
from helpers.torch.models import Model, device
from helpers.torch.training import predict

__all__ = [
    "batchnorm_statistics",
    "adapt_batchnorm",
    "coral_loss",
    "gradient_reversal",
    "backbone_features",
    "fit_adapted",
]

_BATCHNORM = nn.modules.batchnorm._BatchNorm


def _batchnorms(model: nn.Module) -> list[nn.Module]:
    return [module for module in model.modules() if isinstance(module, _BATCHNORM)]


def batchnorm_statistics(model) -> list[tuple[np.ndarray, np.ndarray]]:
    """The running (mean, variance) of every BatchNorm layer, input to output, as NumPy copies."""
    return [(m.running_mean.cpu().numpy().copy(), m.running_var.cpu().numpy().copy()) for m in _batchnorms(model)]


def _unlabelled_images(model: nn.Module, target_x) -> np.ndarray:
    return checks.inputs(domain_adaptation.check_unlabelled(target_x), input_shape(model))


def adapt_batchnorm(model, target_x, batch_size=256) -> Model:
    """AdaBN (Li et al. 2016): replace every BatchNorm layer's running statistics by the target images' statistics.

    One pass over the unlabelled target images in training mode without gradients; each layer's new mean and
    variance are the batch statistics averaged over the pass (weighted by batch size). Weights do not change.
    Works in place and returns the model.
    """
    batch_size = checks.count("batch_size", batch_size)
    layers = _batchnorms(model)
    if not layers:
        raise ValueError(
            "the model has no BatchNorm layer: AdaBN re-estimates BatchNorm statistics on the target domain, so it "
            "needs a network with BatchNorm (e.g. book.small_cnn); without it, try CORAL or DANN"
        )
    x = _unlabelled_images(model, target_x)
    dev = torch.device(device())
    model.to(dev)
    momenta, was_training = [m.momentum for m in layers], model.training
    for layer in layers:
        layer.reset_running_stats()
    model.train()
    seen = 0
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            batch = as_tensor(x[start : start + batch_size]).to(dev)
            seen += len(batch)
            for layer in layers:
                layer.momentum = len(batch) / seen  # running = (1 - m) old + m batch: a running mean over batches
            model(batch)
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum
    model.train(was_training)
    return model


def coral_loss(source_features, target_features):
    """Deep CORAL (Sun & Saenko 2016): ||C_s - C_t||_F^2 / (4 d^2), C the unbiased covariance of a (N, d) batch."""
    domain_adaptation.check_feature_pair(tuple(source_features.shape), tuple(target_features.shape))
    difference = torch.cov(source_features.T) - torch.cov(target_features.T)
    return (difference**2).sum() / (4 * source_features.shape[1] ** 2)


class _GradientReversal(torch.autograd.Function):
    """Identity forward; the gradient times -weight backward (no gradient for the weight)."""

    @staticmethod
    def forward(ctx, x, weight):
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.weight * grad, None


def gradient_reversal(x, weight=1.0):
    """DANN's gradient reversal layer (Ganin & Lempitsky 2015): x unchanged forward, gradient * -weight backward."""
    return _GradientReversal.apply(x, domain_adaptation.check_weight(weight))


def _parts(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The backbone and head of a model built by add_head or small_cnn."""
    if not (hasattr(model, "backbone") and hasattr(model, "head")):
        raise ValueError("expected a model with a backbone and a head, as book.small_cnn or book.add_head build it")
    return model.backbone, model.head


def backbone_features(model, x, batch_size=256) -> np.ndarray:
    """The pooled features (N, d) that the model's backbone gives images x (in inference mode)."""
    return predict(_parts(model)[0], x, batch_size=batch_size)


def _discriminator(num_features: int) -> nn.Module:
    """DANN's domain classifier: features -> 64 ReLU units -> one logit (target = 1)."""
    return nn.Sequential(nn.Linear(num_features, 64), nn.ReLU(), nn.Linear(64, 1))


def _check_adaptation(model, source, target_x, method: str, weight) -> tuple:
    """Checked (xs, ys, xt, method, weight) for fit_adapted."""
    method, weight = domain_adaptation.check_method(method), domain_adaptation.check_weight(weight)
    xs, ys = check_data(model, source, "source")
    xt = _unlabelled_images(model, target_x)
    domain_adaptation.check_same_images(xs.shape, xt.shape)
    return xs, ys, xt, method, weight


def fit_adapted(
    model, source, target_x, method="dann", weight=1.0, epochs=1, lr=1e-3, batch_size=32, seed=0, verbose=False
) -> dict:
    """Train on labelled source data (xs, ys) while aligning the backbone's features with unlabelled target images.

    method: 'source' (cross-entropy only, target unused: the control), 'coral' (+ weight * coral_loss of the source
    and target features) or 'dann' (+ a domain classifier's binary cross-entropy behind a gradient reversal whose
    weight rises from 0 to `weight` by domain_adaptation.dann_ramp). Each step takes one source and one target batch of
    batch_size (tuning.batch_order with seeds seed and seed + 1; one epoch is ceil(N_source / batch_size) steps);
    'coral' and 'dann' run both batches through the backbone together. Adam at lr for every trained weight.
    Returns {'loss', 'cross_entropy', 'alignment', 'epoch_seconds'} per epoch.
    """
    epochs, batch_size = checks.count("epochs", epochs), checks.count("batch_size", batch_size)
    checks.positive(lr=lr)
    xs, ys, xt, method, weight = _check_adaptation(model, source, target_x, method, weight)
    dev = torch.device(device())
    backbone, head = _parts(model.to(dev))
    discriminator = _discriminator(predict(backbone, xs[:1]).shape[1]).to(dev) if method == "dann" else nn.Sequential()
    params = [p for p in [*model.parameters(), *discriminator.parameters()] if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr, eps=tuning.ADAM_EPSILON)
    steps = math.ceil(len(xs) / batch_size)
    source_order = tuning.batch_order(len(xs), min(batch_size, len(xs)), epochs * steps, seed)
    target_order = tuning.batch_order(len(xt), min(batch_size, len(xt)), epochs * steps, seed + 1)
    images_s, labels_s, images_t = as_tensor(xs), torch.from_numpy(ys), as_tensor(xt)
    history = collections.defaultdict(list)
    for epoch in range(epochs):
        start, totals = time.perf_counter(), np.zeros(3)
        model.train()
        discriminator.train()
        for k in range(epoch * steps, (epoch + 1) * steps):
            xb = images_s[torch.from_numpy(source_order[k])].to(dev)
            yb = labels_s[torch.from_numpy(source_order[k])].to(dev)
            if method != "source":
                xb = torch.cat([xb, images_t[torch.from_numpy(target_order[k])].to(dev)])
            features = backbone(xb)
            n = len(yb)
            cross_entropy = nn.functional.cross_entropy(head(features[:n]), yb)
            if method == "source":
                alignment = torch.zeros((), device=dev)
                loss = cross_entropy
            elif method == "coral":
                alignment = coral_loss(features[:n], features[n:])
                loss = cross_entropy + weight * alignment
            else:
                reversal = weight * domain_adaptation.dann_ramp(k / (epochs * steps))
                domain_logits = discriminator(gradient_reversal(features, reversal)).squeeze(1)
                domain_labels = torch.cat([torch.zeros(n), torch.ones(len(features) - n)]).to(dev)
                alignment = nn.functional.binary_cross_entropy_with_logits(domain_logits, domain_labels)
                loss = cross_entropy + alignment
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            totals += [loss.item(), cross_entropy.item(), alignment.item()]
        for key, total in zip(("loss", "cross_entropy", "alignment"), totals):
            history[key].append(total / steps)
        history["epoch_seconds"].append(time.perf_counter() - start)
        if verbose:
            print(
                f"  epoch {epoch + 1}/{epochs}  {history['epoch_seconds'][-1]:.1f}s  "
                + domain_adaptation.history_line(history)
            )
    return dict(history)

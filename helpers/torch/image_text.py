"""Image and text together (chapter 20), PyTorch: two frozen towers joined by trained projections, a contrastive loss,
zero-shot classification and retrieval.

Mirrors the module of the same name in the other framework package (tests/test_parity.py). The towers themselves are
the book's MobileNetV2 (models) and MiniLM (language); their features are computed once and passed in as arrays.
"""

from __future__ import annotations

import collections
import math
import time

import numpy as np
import torch
from torch import nn

from helpers import checks, image_text, tuning
from helpers.torch.models import Model, device

__all__ = ["contrastive_loss", "contrastive_heads", "fit_contrastive", "embed_images", "embed_texts", "temperature_of"]


def contrastive_loss(image_embeddings, text_embeddings, logit_scale):
    """Symmetric InfoNCE (CLIP's loss): row i of each is a matching pair, every other row of the batch a negative.

    Both inputs are L2-normalised; the similarity matrix is scaled by exp(logit_scale), clamped at 100, and the loss
    is the mean of the image-to-text and text-to-image cross-entropies with the diagonal as the targets.
    """
    if image_embeddings.ndim != 2 or image_embeddings.shape != text_embeddings.shape:
        raise ValueError(
            f"image and text embeddings must both be (N, width), one matching pair per row, got "
            f"{tuple(image_embeddings.shape)} and {tuple(text_embeddings.shape)}"
        )
    images = nn.functional.normalize(image_embeddings, dim=1)
    texts = nn.functional.normalize(text_embeddings, dim=1)
    logits = logit_scale.clamp(max=image_text.MAX_LOGIT_SCALE).exp() * images @ texts.T
    targets = torch.arange(len(logits), device=logits.device)
    return (nn.functional.cross_entropy(logits, targets) + nn.functional.cross_entropy(logits.T, targets)) / 2


class ContrastiveHeads(nn.Module):
    """Two linear projections into one shared space and a learnable log inverse temperature (CLIP's logit_scale)."""

    def __init__(self, image_dim: int, text_dim: int, embed_dim: int, temperature: float):
        super().__init__()
        self.image_projection = nn.Linear(image_dim, embed_dim, bias=False)
        self.text_projection = nn.Linear(text_dim, embed_dim, bias=False)
        for projection, width in ((self.image_projection, image_dim), (self.text_projection, text_dim)):
            nn.init.normal_(projection.weight, std=width**-0.5)  # CLIP's initialisation of its projections
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    def forward(self, image_features, text_features):
        return self.image_projection(image_features), self.text_projection(text_features)


def contrastive_heads(image_dim, text_dim, embed_dim=64, temperature=image_text.INITIAL_TEMPERATURE) -> Model:
    """Trainable projections of frozen image and text features into a shared embedding space, and a learnable
    temperature (starting at CLIP's 0.07): forward(image_features, text_features) gives both embeddings."""
    return ContrastiveHeads(*image_text.check_dims(image_dim, text_dim, embed_dim, temperature))


def _check_heads(model) -> ContrastiveHeads:
    if not isinstance(model, ContrastiveHeads):
        raise ValueError(f"expected the model from book.contrastive_heads, got {type(model).__name__}")
    return model


def _dims(model: ContrastiveHeads) -> tuple[int, int]:
    return model.image_projection.in_features, model.text_projection.in_features


def fit_contrastive(
    model, image_features, text_features, epochs=1, lr=1e-3, weight_decay=0.0, batch_size=64, seed=0, verbose=False
) -> dict:
    """Train the projections and the temperature on matching (image, caption) feature rows with contrastive_loss
    and Adam; weight_decay > 0 makes it AdamW, decaying the projections but not the temperature. Each epoch is
    ceil(N / batch_size) batches in the order tuning.batch_order(N, batch_size, steps, seed) gives.
    Returns {'loss', 'temperature', 'epoch_seconds'}, one entry per epoch."""
    model = _check_heads(model)
    epochs, batch_size = checks.count("epochs", epochs), checks.count("batch_size", batch_size)
    checks.positive(lr=lr)
    weight_decay = image_text.check_weight_decay(weight_decay)
    images, texts = image_text.check_pairs(image_features, text_features, *_dims(model))
    dev = torch.device(device())
    model.to(dev).train()
    images, texts = torch.from_numpy(images).to(dev), torch.from_numpy(texts).to(dev)
    steps = math.ceil(len(images) / batch_size)
    order = tuning.batch_order(len(images), min(batch_size, len(images)), epochs * steps, seed)
    projections = [p for name, p in model.named_parameters() if name != "logit_scale"]
    groups = [
        {"params": projections, "weight_decay": weight_decay},
        {"params": [model.logit_scale], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=lr, eps=tuning.ADAM_EPSILON)
    history = collections.defaultdict(list)
    for epoch in range(epochs):
        start, total = time.perf_counter(), 0.0
        for batch in order[epoch * steps : (epoch + 1) * steps]:
            index = torch.from_numpy(batch).to(dev)
            loss = contrastive_loss(*model(images[index], texts[index]), model.logit_scale)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
        seconds = time.perf_counter() - start
        image_text.record_epoch(history, total / steps, temperature_of(model), seconds, epoch, epochs, verbose)
    return dict(history)


def _embed(projection: nn.Module, features: np.ndarray, batch_size: int) -> np.ndarray:
    dev = torch.device(device())
    projection.to(dev)
    parts = []
    with torch.inference_mode():
        for start in range(0, len(features), batch_size):
            batch = torch.from_numpy(features[start : start + batch_size]).to(dev)
            parts.append(nn.functional.normalize(projection(batch), dim=1).cpu().numpy())
    return np.concatenate(parts)


def embed_images(model, image_features, batch_size=256) -> np.ndarray:
    """Unit-length embeddings (N, embed_dim) of frozen image features in the shared space."""
    model, batch_size = _check_heads(model), checks.count("batch_size", batch_size)
    features = image_text.check_features(image_features, _dims(model)[0], "image features")
    return _embed(model.image_projection, features, batch_size)


def embed_texts(model, text_features, batch_size=256) -> np.ndarray:
    """Unit-length embeddings (N, embed_dim) of frozen text features in the shared space."""
    model, batch_size = _check_heads(model), checks.count("batch_size", batch_size)
    features = image_text.check_features(text_features, _dims(model)[1], "text features")
    return _embed(model.text_projection, features, batch_size)


def temperature_of(model) -> float:
    """The model's current softmax temperature, 1 / exp(logit_scale) (logit_scale clamped as in the loss)."""
    scale = float(_check_heads(model).logit_scale.detach().clamp(max=image_text.MAX_LOGIT_SCALE))
    return math.exp(-scale)

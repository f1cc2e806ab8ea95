"""Image and text together (chapter 20), PyTorch: two frozen towers joined by trained projections, a contrastive loss,
zero-shot classification and retrieval.

Mirrors the module of the same name in the other framework package (tests/test_parity.py). The towers themselves are
the book's MobileNetV2 (models) and MiniLM (language); their features are computed once and passed in as arrays.
"""

from __future__ import annotations

import collections
import copy
import math
import time

import numpy as np
import torch
from torch import nn

from helpers import checks, image_text, text, tuning
from helpers.torch.models import Model, device
from helpers.torch.text_classification import encoder_layers, text_backbone, token_tensors

__all__ = [
    "contrastive_loss",
    "contrastive_heads",
    "text_states",
    "lit_heads",
    "fit_contrastive",
    "embed_images",
    "embed_texts",
    "temperature_of",
]


def contrastive_loss(image_embeddings, text_embeddings, logit_scale, classes=None):
    """Symmetric InfoNCE (CLIP's loss): row i of each is a matching pair, every other row of the batch a negative.

    Both inputs are L2-normalised; the similarity matrix is scaled by exp(logit_scale), clamped at 100, and the loss
    is the mean of the image-to-text and text-to-image cross-entropies with the diagonal as the targets. With
    `classes` (one class id per pair), the entries (i, j), j != i, of pairs of the same class leave both softmax
    denominators (class-aware masking: neither positive nor negative).
    """
    if image_embeddings.ndim != 2 or image_embeddings.shape != text_embeddings.shape:
        raise ValueError(
            f"image and text embeddings must both be (N, width), one matching pair per row, got "
            f"{tuple(image_embeddings.shape)} and {tuple(text_embeddings.shape)}"
        )
    images = nn.functional.normalize(image_embeddings, dim=1)
    texts = nn.functional.normalize(text_embeddings, dim=1)
    logits = logit_scale.clamp(max=image_text.MAX_LOGIT_SCALE).exp() * images @ texts.T
    if classes is not None:
        classes = torch.as_tensor(image_text.check_classes(classes, len(logits)), device=logits.device)
        same = (classes[:, None] == classes[None, :]).fill_diagonal_(False)
        logits = logits.masked_fill(same, float("-inf"))
    targets = torch.arange(len(logits), device=logits.device)
    return (nn.functional.cross_entropy(logits, targets) + nn.functional.cross_entropy(logits.T, targets)) / 2


class ContrastiveHeads(nn.Module):
    """Two linear projections into one shared space and a learnable log inverse temperature (CLIP's logit_scale)."""

    takes_rows = False  # its text input: frozen text features per pair

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


def text_states(encoder, tokens, num_layers=1, batch_size=64) -> dict:
    """What the locked lower layers of a text encoder give the top `num_layers` transformer layers, computed once:
    {'hidden': (N, T, width) float32, 'mask': (N, T) attention mask} for tokenized texts."""
    layers = encoder_layers(encoder)
    num_layers = checks.up_to("num_layers", num_layers, len(layers) - 1)
    tokens, batch_size = text.check_tokens(tokens), checks.count("batch_size", batch_size)
    backbone = text_backbone(encoder).eval()
    parts = []
    with torch.inference_mode():
        for start in range(0, len(tokens["input_ids"]), batch_size):
            batch = token_tensors(tokens, slice(start, start + batch_size))
            parts.append(backbone(**batch, output_hidden_states=True).hidden_states[-1 - num_layers].numpy())
    return {"hidden": np.concatenate(parts).astype(np.float32), "mask": np.asarray(tokens["attention_mask"], np.int64)}


class LiTHeads(ContrastiveHeads):
    """LiT's text side on top of locked image features: trainable copies of a text encoder's top transformer layers
    over the locked lower layers' states, mean-pooled and L2-normalised, then projected. Text input: row ids."""

    takes_rows = True  # its text input: the row of each text in its states

    def __init__(self, layers, states, image_dim: int, embed_dim: int, temperature: float):
        hidden, mask = image_text.check_states(states)
        super().__init__(image_dim, hidden.shape[2], embed_dim, temperature)
        self.top = nn.ModuleList(copy.deepcopy(layer) for layer in layers)
        self.top.requires_grad_(True)
        self.register_buffer("hidden", torch.from_numpy(hidden), persistent=False)
        self.register_buffer("mask", torch.from_numpy(mask), persistent=False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.top.eval()  # no dropout in the unlocked layers: the same computation as the Keras twin
        return self

    def text_features(self, rows):
        """Mean-pooled, L2-normalised output of the top layers for texts `rows`, each distinct text encoded once."""
        distinct, inverse = torch.unique(rows, return_inverse=True)
        hidden, mask = self.hidden[distinct], self.mask[distinct]
        additive = (1.0 - mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
        for layer in self.top:
            hidden = layer(hidden, additive)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1)  # sentence_embeddings' mean pooling
        return nn.functional.normalize(pooled, dim=1)[inverse]

    def forward(self, image_features, text_rows):
        return self.image_projection(image_features), self.text_projection(self.text_features(text_rows))


def lit_heads(
    encoder, states, image_dim, num_layers=1, embed_dim=64, temperature=image_text.INITIAL_TEMPERATURE
) -> Model:
    """LiT (locked image, text tuned): a projection of locked image features, and on the text side trainable copies
    of the encoder's top `num_layers` transformer layers over `states` (text_states with the same num_layers),
    pooled as sentence_embeddings and projected. Its text input is the row of each text in `states`; at the start it
    embeds like contrastive_heads on sentence_embeddings with the same seed."""
    layers = encoder_layers(encoder)
    num_layers = checks.up_to("num_layers", num_layers, len(layers) - 1)
    image_dim, _, embed_dim, temperature = image_text.check_dims(image_dim, 1, embed_dim, temperature)
    return LiTHeads(layers[len(layers) - num_layers :], states, image_dim, embed_dim, temperature)


def _check_heads(model) -> ContrastiveHeads:
    if not isinstance(model, ContrastiveHeads):
        raise ValueError(f"expected the model from book.contrastive_heads, got {type(model).__name__}")
    return model


def _dims(model: ContrastiveHeads) -> tuple[int, int]:
    return model.image_projection.in_features, model.text_projection.in_features


def _check_inputs(model, image_features, text_input) -> tuple[np.ndarray, np.ndarray]:
    """Image features and, per pair, text features (contrastive_heads) or text rows (lit_heads)."""
    if not isinstance(model, LiTHeads):
        return image_text.check_pairs(image_features, text_input, *_dims(model))
    images = image_text.check_features(image_features, _dims(model)[0], "image features")
    rows = image_text.check_rows(text_input, len(model.hidden))
    if len(images) != len(rows):
        raise ValueError(f"image features and text rows must pair row by row, got {len(images)} and {len(rows)}")
    return images, rows


def fit_contrastive(
    model,
    image_features,
    text_features,
    epochs=1,
    lr=1e-3,
    weight_decay=0.0,
    batch_size=64,
    seed=0,
    verbose=False,
    classes=None,
) -> dict:
    """Train the projections and the temperature on matching (image, caption) feature rows with contrastive_loss
    and Adam (a lit_heads model takes caption rows and trains its top text layers too); weight_decay > 0 makes it
    AdamW, decaying all but the temperature. Each epoch is
    ceil(N / batch_size) batches in the order tuning.batch_order(N, batch_size, steps, seed) gives. `classes`, one
    class id per pair, masks same-class pairs out of the loss (contrastive_loss); None keeps the plain loss.
    Returns {'loss', 'temperature', 'epoch_seconds'}, one entry per epoch."""
    model = _check_heads(model)
    epochs, batch_size = checks.count("epochs", epochs), checks.count("batch_size", batch_size)
    checks.positive(lr=lr)
    weight_decay = image_text.check_weight_decay(weight_decay)
    images, texts = _check_inputs(model, image_features, text_features)
    classes = image_text.check_classes(classes, len(images))
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
            batch_classes = None if classes is None else classes[batch]
            loss = contrastive_loss(*model(images[index], texts[index]), model.logit_scale, batch_classes)
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
    """Unit-length embeddings (N, embed_dim) of frozen text features (for lit_heads: text rows) in the shared space."""
    model, batch_size = _check_heads(model), checks.count("batch_size", batch_size)
    if isinstance(model, LiTHeads):
        rows = torch.from_numpy(image_text.check_rows(text_features, len(model.hidden)))
        model.to(torch.device(device())).eval()
        with torch.inference_mode():
            parts = [
                model.text_projection(model.text_features(rows[i : i + batch_size].to(model.hidden.device)))
                for i in range(0, len(rows), batch_size)
            ]
        return nn.functional.normalize(torch.cat(parts), dim=1).cpu().numpy()
    features = image_text.check_features(text_features, _dims(model)[1], "text features")
    return _embed(model.text_projection, features, batch_size)


def temperature_of(model) -> float:
    """The model's current softmax temperature, 1 / exp(logit_scale) (logit_scale clamped as in the loss)."""
    scale = float(_check_heads(model).logit_scale.detach().clamp(max=image_text.MAX_LOGIT_SCALE))
    return math.exp(-scale)

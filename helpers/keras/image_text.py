"""Image and text together (chapter 20), Keras: two frozen towers joined by trained projections, a contrastive loss,
zero-shot classification and retrieval.

Mirrors the module of the same name in the other framework package (tests/test_parity.py). The towers themselves are
the book's MobileNetV2 (models) and MiniLM (language); their features are computed once and passed in as arrays.
"""

from __future__ import annotations

import collections
import math
import time

import keras
import numpy as np
import tensorflow as tf

from helpers import checks, image_text, tuning
from helpers.keras.core import compiled
from helpers.keras.models import Model

__all__ = ["contrastive_loss", "contrastive_heads", "fit_contrastive", "embed_images", "embed_texts", "temperature_of"]

ops = keras.ops


def contrastive_loss(image_embeddings, text_embeddings, logit_scale):
    """Symmetric InfoNCE (CLIP's loss): row i of each is a matching pair, every other row of the batch a negative.

    Both inputs are L2-normalised; the similarity matrix is scaled by exp(logit_scale), clamped at 100, and the loss
    is the mean of the image-to-text and text-to-image cross-entropies with the diagonal as the targets.
    """
    image_shape, text_shape = tuple(image_embeddings.shape), tuple(text_embeddings.shape)
    if len(image_shape) != 2 or image_shape != text_shape:
        raise ValueError(
            f"image and text embeddings must both be (N, width), one matching pair per row, got "
            f"{image_shape} and {text_shape}"
        )
    images = ops.normalize(ops.convert_to_tensor(image_embeddings, "float32"), axis=1)
    texts = ops.normalize(ops.convert_to_tensor(text_embeddings, "float32"), axis=1)
    scale = ops.exp(ops.minimum(ops.convert_to_tensor(logit_scale, "float32"), image_text.MAX_LOGIT_SCALE))
    logits = scale * ops.matmul(images, ops.transpose(texts))
    image_to_text = -ops.mean(ops.diagonal(ops.log_softmax(logits, axis=1)))
    text_to_image = -ops.mean(ops.diagonal(ops.log_softmax(logits, axis=0)))
    return (image_to_text + text_to_image) / 2


class ContrastiveHeads(keras.Model):
    """Two linear projections into one shared space and a learnable log inverse temperature (CLIP's logit_scale)."""

    def __init__(self, image_dim: int, text_dim: int, embed_dim: int, temperature: float, **kwargs):
        super().__init__(**kwargs)
        self.image_dim, self.text_dim = image_dim, text_dim
        self.image_projection, self.text_projection = (
            keras.layers.Dense(
                embed_dim,
                use_bias=False,
                kernel_initializer=keras.initializers.RandomNormal(stddev=width**-0.5),  # CLIP's initialisation
                name=name,
            )
            for name, width in (("image_projection", image_dim), ("text_projection", text_dim))
        )
        self.image_projection.build((None, image_dim))
        self.text_projection.build((None, text_dim))
        self.logit_scale = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(math.log(1.0 / temperature)), name="logit_scale"
        )
        self.built = True

    def call(self, image_features, text_features):
        return self.image_projection(image_features), self.text_projection(text_features)


def contrastive_heads(image_dim, text_dim, embed_dim=64, temperature=image_text.INITIAL_TEMPERATURE) -> Model:
    """Trainable projections of frozen image and text features into a shared embedding space, and a learnable
    temperature (starting at CLIP's 0.07): model(image_features, text_features) gives both embeddings."""
    return ContrastiveHeads(*image_text.check_dims(image_dim, text_dim, embed_dim, temperature))


def _check_heads(model) -> ContrastiveHeads:
    if not isinstance(model, ContrastiveHeads):
        raise ValueError(f"expected the model from book.contrastive_heads, got {type(model).__name__}")
    return model


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
    images, texts = image_text.check_pairs(image_features, text_features, model.image_dim, model.text_dim)
    steps = math.ceil(len(images) / batch_size)
    order = tuning.batch_order(len(images), min(batch_size, len(images)), epochs * steps, seed)
    opt = keras.optimizers.AdamW(learning_rate=lr, weight_decay=weight_decay, epsilon=tuning.ADAM_EPSILON)
    opt.exclude_from_weight_decay(var_list=[model.logit_scale])
    weights = model.trainable_weights

    def step(image_batch, text_batch):
        with tf.GradientTape() as tape:
            loss = contrastive_loss(*model(image_batch, text_batch), model.logit_scale)
        opt.apply_gradients(zip(tape.gradient(loss, weights), weights))
        return loss

    step = compiled(step)
    history = collections.defaultdict(list)
    for epoch in range(epochs):
        start, total = time.perf_counter(), 0.0
        for batch in order[epoch * steps : (epoch + 1) * steps]:
            total += float(step(images[batch], texts[batch]))
        seconds = time.perf_counter() - start
        image_text.record_epoch(history, total / steps, temperature_of(model), seconds, epoch, epochs, verbose)
    return dict(history)


def _embed(projection, features: np.ndarray, batch_size: int) -> np.ndarray:
    parts = [
        ops.convert_to_numpy(ops.normalize(projection(features[start : start + batch_size]), axis=1))
        for start in range(0, len(features), batch_size)
    ]
    return np.concatenate(parts)


def embed_images(model, image_features, batch_size=256) -> np.ndarray:
    """Unit-length embeddings (N, embed_dim) of frozen image features in the shared space."""
    model, batch_size = _check_heads(model), checks.count("batch_size", batch_size)
    features = image_text.check_features(image_features, model.image_dim, "image features")
    return _embed(model.image_projection, features, batch_size)


def embed_texts(model, text_features, batch_size=256) -> np.ndarray:
    """Unit-length embeddings (N, embed_dim) of frozen text features in the shared space."""
    model, batch_size = _check_heads(model), checks.count("batch_size", batch_size)
    features = image_text.check_features(text_features, model.text_dim, "text features")
    return _embed(model.text_projection, features, batch_size)


def temperature_of(model) -> float:
    """The model's current softmax temperature, 1 / exp(logit_scale) (logit_scale clamped as in the loss)."""
    scale = float(ops.convert_to_numpy(_check_heads(model).logit_scale))
    return math.exp(-min(scale, image_text.MAX_LOGIT_SCALE))

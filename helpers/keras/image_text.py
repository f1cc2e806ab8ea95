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

from helpers import checks, config, image_text, text, tuning
from helpers.keras.models import Model
from helpers.keras.text_classification import backbone_inputs, encoder_layers, text_backbone, token_arrays
from helpers.keras.training import quiet_predict

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

ops = keras.ops


def contrastive_loss(image_embeddings, text_embeddings, logit_scale, classes=None):
    """Symmetric InfoNCE (CLIP's loss): row i of each is a matching pair, every other row of the batch a negative.

    Both inputs are L2-normalised; the similarity matrix is scaled by exp(logit_scale), clamped at 100, and the loss
    is the mean of the image-to-text and text-to-image cross-entropies with the diagonal as the targets. With
    `classes` (one class id per pair), the entries (i, j), j != i, of pairs of the same class leave both softmax
    denominators (class-aware masking: neither positive nor negative).
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
    if classes is not None:
        if not tf.is_tensor(classes):  # inside fit's train_step they arrive as a tensor, checked by fit_contrastive
            classes = image_text.check_classes(classes, image_shape[0])
        classes, positions = ops.convert_to_tensor(classes), ops.arange(ops.shape(logits)[0])
        same = ops.equal(classes[:, None], classes[None, :]) & ops.not_equal(positions[:, None], positions[None, :])
        logits = ops.where(same, float("-inf"), logits)
    image_to_text = -ops.mean(ops.diagonal(ops.log_softmax(logits, axis=1)))
    text_to_image = -ops.mean(ops.diagonal(ops.log_softmax(logits, axis=0)))
    return (image_to_text + text_to_image) / 2


class ContrastiveHeads(keras.Model):
    """Two linear projections into one shared space and a learnable log inverse temperature (CLIP's logit_scale).

    A dual encoder in the Keras idiom: `train_step` computes contrastive_loss on a batch {'images', 'texts'} (and
    'classes' where same-class pairs are masked), and
    `fit` trains it (keras.io's "Natural language image search with a Dual Encoder" does the same)."""

    takes_rows = False  # its text input: frozen text features per pair

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
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.built = True

    def text_features(self, text_input):
        """What the text projection reads: the frozen text features themselves."""
        return text_input

    def call(self, image_features, text_input):
        return self.image_projection(image_features), self.text_projection(self.text_features(text_input))

    def train_step(self, data):
        with tf.GradientTape() as tape:
            embeddings = self(data["images"], data["texts"], training=True)
            loss = contrastive_loss(*embeddings, self.logit_scale, data.get("classes"))
        gradients = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_weights))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    @property
    def metrics(self):
        return [self.loss_tracker]  # reset by fit at the start of every epoch


def contrastive_heads(image_dim, text_dim, embed_dim=64, temperature=image_text.INITIAL_TEMPERATURE) -> Model:
    """Trainable projections of frozen image and text features into a shared embedding space, and a learnable
    temperature (starting at CLIP's 0.07): model(image_features, text_features) gives both embeddings."""
    return ContrastiveHeads(*image_text.check_dims(image_dim, text_dim, embed_dim, temperature))


def _lower_layers(encoder, num_layers: int):
    """A model from the encoder's inputs to the output of its transformer layer below the top `num_layers`."""
    layers = encoder_layers(encoder)
    num_layers = checks.up_to("num_layers", num_layers, len(layers) - 1)
    backbone = text_backbone(encoder)
    return keras.Model(backbone.inputs, layers[len(layers) - 1 - num_layers].output), layers[len(layers) - num_layers :]


def text_states(encoder, tokens, num_layers=1, batch_size=64) -> dict:
    """What the locked lower layers of a text encoder give the top `num_layers` transformer layers, computed once:
    {'hidden': (N, T, width) float32, 'mask': (N, T) attention mask} for tokenized texts."""
    tokens, batch_size = text.check_tokens(tokens), checks.count("batch_size", batch_size)
    lower, _ = _lower_layers(encoder, num_layers)
    hidden = quiet_predict(lower, backbone_inputs(token_arrays(tokens)), batch_size)
    return {"hidden": hidden.astype(np.float32), "mask": np.asarray(tokens["attention_mask"], np.int64)}


class LiTHeads(ContrastiveHeads):
    """LiT's text side on top of locked image features: trainable copies of a text encoder's top transformer layers
    over the locked lower layers' states, mean-pooled and L2-normalised, then projected. Text input: row ids."""

    takes_rows = True  # its text input: the row of each text in its states

    def __init__(self, layers, states, image_dim: int, embed_dim: int, temperature: float, **kwargs):
        hidden, mask = image_text.check_states(states)
        super().__init__(image_dim, hidden.shape[2], embed_dim, temperature, **kwargs)
        self.top = []
        for layer in layers:  # copies without dropout: the same computation as the PyTorch twin
            copied = layer.__class__.from_config({**layer.get_config(), "dropout": 0.0, "name": f"top_{layer.name}"})
            copied.build(hidden.shape)
            copied.set_weights(layer.get_weights())
            copied.trainable = True
            self.top.append(copied)
        self.num_texts = len(hidden)
        self.hidden, self.mask = ops.convert_to_tensor(hidden), ops.convert_to_tensor(mask.astype(bool))

    def text_features(self, text_input):
        """Mean-pooled, L2-normalised output of the top layers for texts `rows`, each distinct text encoded once."""
        distinct, inverse = tf.unique(ops.reshape(ops.cast(text_input, "int32"), (-1,)))
        hidden, mask = ops.take(self.hidden, distinct, axis=0), ops.take(self.mask, distinct, axis=0)
        for layer in self.top:
            hidden = layer(hidden, padding_mask=mask)
        weights = ops.expand_dims(ops.cast(mask, hidden.dtype), -1)
        pooled = ops.sum(hidden * weights, axis=1) / ops.sum(weights, axis=1)  # sentence_embeddings' mean pooling
        return ops.take(ops.normalize(pooled, axis=1), inverse, axis=0)


def lit_heads(
    encoder, states, image_dim, num_layers=1, embed_dim=64, temperature=image_text.INITIAL_TEMPERATURE
) -> Model:
    """LiT (locked image, text tuned): a projection of locked image features, and on the text side trainable copies
    of the encoder's top `num_layers` transformer layers over `states` (text_states with the same num_layers),
    pooled as sentence_embeddings and projected. Its text input is the row of each text in `states`; at the start it
    embeds like contrastive_heads on sentence_embeddings with the same seed."""
    _, layers = _lower_layers(encoder, num_layers)
    image_dim, _, embed_dim, temperature = image_text.check_dims(image_dim, 1, embed_dim, temperature)
    return LiTHeads(layers, states, image_dim, embed_dim, temperature)


def _check_heads(model) -> ContrastiveHeads:
    if not isinstance(model, ContrastiveHeads):
        raise ValueError(f"expected the model from book.contrastive_heads, got {type(model).__name__}")
    return model


def _check_inputs(model, image_features, text_input) -> tuple[np.ndarray, np.ndarray]:
    """Image features and, per pair, text features (contrastive_heads) or text rows (lit_heads)."""
    if not isinstance(model, LiTHeads):
        return image_text.check_pairs(image_features, text_input, model.image_dim, model.text_dim)
    images = image_text.check_features(image_features, model.image_dim, "image features")
    rows = image_text.check_rows(text_input, model.num_texts)
    if len(images) != len(rows):
        raise ValueError(f"image features and text rows must pair row by row, got {len(images)} and {len(rows)}")
    return images, rows


class _BookOrder(keras.utils.PyDataset):
    """Batches {'images', 'texts'} (and 'classes', if given) in the order tuning.batch_order gives, all epochs in
    one pass."""

    def __init__(self, images, texts, order, classes=None):
        super().__init__()
        self.images, self.texts, self.order, self.classes = images, texts, order, classes

    def __len__(self):
        return len(self.order)

    def __getitem__(self, index):
        batch = self.order[index]
        found = {"images": self.images[batch], "texts": self.texts[batch]}
        return found if self.classes is None else found | {"classes": self.classes[batch]}


class _Temperature(keras.callbacks.Callback):
    """Record the learned temperature and the seconds of every epoch."""

    def __init__(self):
        super().__init__()
        self.temperature, self.seconds = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)
        self.temperature.append(temperature_of(self.model))


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
    AdamW, decaying all but the temperature. Each epoch is ceil(N / batch_size) batches in the order
    tuning.batch_order(N, batch_size, steps, seed) gives; compile and fit run the model's train_step. `classes`, one
    class id per pair, masks same-class pairs out of the loss (contrastive_loss); None keeps the plain loss.
    Returns {'loss', 'temperature', 'epoch_seconds'}, one entry per epoch."""
    model = _check_heads(model)
    epochs, batch_size = checks.count("epochs", epochs), checks.count("batch_size", batch_size)
    checks.positive(lr=lr)
    weight_decay = image_text.check_weight_decay(weight_decay)
    images, texts = _check_inputs(model, image_features, text_features)
    classes = image_text.check_classes(classes, len(images))
    steps = math.ceil(len(images) / batch_size)
    order = tuning.batch_order(len(images), min(batch_size, len(images)), epochs * steps, seed)
    optimizer = keras.optimizers.AdamW(learning_rate=lr, weight_decay=weight_decay, epsilon=tuning.ADAM_EPSILON)
    optimizer.exclude_from_weight_decay(var_list=[model.logit_scale])
    model.compile(optimizer=optimizer, run_eagerly=config.profile().keras_eager, jit_compile=False)
    recorder = _Temperature()
    batches = _BookOrder(images, texts, order, classes)
    fitted = model.fit(batches, epochs=epochs, steps_per_epoch=steps, shuffle=False, verbose=0, callbacks=[recorder])
    history = collections.defaultdict(list)
    for epoch, loss in enumerate(fitted.history["loss"]):
        seconds, temperature = recorder.seconds[epoch], recorder.temperature[epoch]
        image_text.record_epoch(history, float(loss), temperature, seconds, epoch, epochs, verbose)
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
    """Unit-length embeddings (N, embed_dim) of frozen text features (for lit_heads: text rows) in the shared space."""
    model, batch_size = _check_heads(model), checks.count("batch_size", batch_size)
    if isinstance(model, LiTHeads):
        rows = image_text.check_rows(text_features, model.num_texts)
        chunks = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
        parts = [model.text_projection(model.text_features(chunk)) for chunk in chunks]
        return ops.convert_to_numpy(ops.normalize(ops.concatenate(parts, axis=0), axis=1))
    features = image_text.check_features(text_features, model.text_dim, "text features")
    return _embed(model.text_projection, features, batch_size)


def temperature_of(model) -> float:
    """The model's current softmax temperature, 1 / exp(logit_scale) (logit_scale clamped as in the loss)."""
    scale = float(ops.convert_to_numpy(_check_heads(model).logit_scale))
    return math.exp(-min(scale, image_text.MAX_LOGIT_SCALE))

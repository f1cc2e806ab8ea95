"""Language models (Keras): the pretrained MiniLM encoder through keras-hub, tokenized with the same
`tokenizers` tokenizer as the PyTorch half (chapter 09).

keras-hub's own WordPiece tokenizer needs tensorflow-text, which needs the full `tensorflow` wheel beside
tensorflow-cpu; the book tokenizes with Hugging Face `tokenizers` instead (helpers.text) and feeds the ids.
"""

from __future__ import annotations

import time
import weakref

import keras
import numpy as np

from helpers import checks, config, text, tuning
from helpers.keras.models import Model, unfreeze
from helpers.keras.training import EpochTimer, quiet_predict

__all__ = [
    "text_tokenizer",
    "tokenize",
    "text_encoder",
    "text_classifier",
    "encoder_layers",
    "train_top_layers",
    "sentence_embeddings",
    "predict_text",
    "fit_text",
]


def _keras_hub():
    """keras_hub, imported on first use (its import takes seconds)."""
    import warnings

    with warnings.catch_warnings():  # tqdm.auto's "IProgress not found" in notebooks without ipywidgets
        warnings.filterwarnings("ignore", message="IProgress not found")
        import keras_hub

    return keras_hub


def text_tokenizer():
    """The model's WordPiece tokenizer: Hugging Face `tokenizers` reading the model's tokenizer.json."""
    return text.tokenizer()


def tokenize(texts, max_length) -> dict[str, np.ndarray]:
    """Token ids, segment ids and attention masks (N, max_length); longer texts truncated, shorter ones padded."""
    return text.encode(texts, max_length)


def text_encoder() -> Model:
    """The pretrained MiniLM encoder without a head (keras-hub's BertBackbone, converted from the same files)."""
    return _keras_hub().models.BertBackbone.from_preset(str(text.model_dir()))


def text_inputs() -> dict:
    return {name: keras.Input((None,), dtype="int32", name=name) for name in text.TEXT_INPUTS}


def backbone_inputs(inputs: dict) -> dict:
    """keras-hub's names for the three token arrays."""
    return {
        "token_ids": inputs["input_ids"],
        "segment_ids": inputs["token_type_ids"],
        "padding_mask": inputs["attention_mask"],
    }


def text_classifier(num_classes, dropout=0.1) -> Model:
    """MiniLM with a new classification head on its pooled [CLS] output: dropout, then one dense layer."""
    num_classes = checks.classes(num_classes)
    backbone = text_encoder()
    inputs = text_inputs()
    pooled = backbone(backbone_inputs(inputs))["pooled_output"]
    pooled = keras.layers.Dropout(dropout, name="dropout")(pooled)
    init = keras.initializers.TruncatedNormal(stddev=0.02)  # BERT's initialisation, as transformers uses
    logits = keras.layers.Dense(num_classes, kernel_initializer=init, name="classifier")(pooled)
    return keras.Model(inputs, logits, name="minilm_classifier")


def text_backbone(model):
    """The BertBackbone inside an encoder or a classifier."""
    if isinstance(model, _keras_hub().models.BertBackbone):
        return model
    found = [layer for layer in model.layers if isinstance(layer, _keras_hub().models.BertBackbone)]
    if not found:
        raise ValueError("model has no transformer layers; pass a model from text_encoder or text_classifier")
    return found[0]


def encoder_layers(model) -> list:
    """The transformer layers of a text encoder or classifier, from input to output."""
    return list(text_backbone(model).transformer_layers)


def train_top_layers(model, num_layers):
    """Freeze the embeddings and all but the top `num_layers` transformer layers; pooler and head stay trainable."""
    layers = encoder_layers(model)
    num_layers = checks.up_to("num_layers", num_layers, len(layers))
    backbone = text_backbone(model)
    unfreeze(model)
    for layer in backbone.layers:
        layer.trainable = layer.name == "pooled_dense"
    for layer in layers[len(layers) - num_layers :]:
        layer.trainable = True
    return model


_EMBEDDERS = weakref.WeakKeyDictionary()  # one mean-pooling model per backbone, so predict is traced once


def _embedder(backbone, normalize: bool):
    key = (normalize,)
    cached = _EMBEDDERS.setdefault(backbone, {})
    if key not in cached:
        inputs = text_inputs()
        hidden = backbone(backbone_inputs(inputs))["sequence_output"]
        mask = keras.ops.expand_dims(keras.ops.cast(inputs["attention_mask"], hidden.dtype), -1)
        mean = keras.ops.sum(hidden * mask, axis=1) / keras.ops.maximum(keras.ops.sum(mask, axis=1), 1e-9)
        if normalize:
            mean = mean / keras.ops.maximum(keras.ops.norm(mean, axis=-1, keepdims=True), 1e-12)
        cached[key] = keras.Model(inputs, mean, name="mean_pooling")
    return cached[key]


def token_arrays(tokens: dict) -> dict[str, np.ndarray]:
    """The model's three inputs as int32 arrays (keras-hub's BERT takes int32 token ids)."""
    return {k: np.asarray(tokens[k], dtype=np.int32) for k in text.TEXT_INPUTS}


def sentence_embeddings(model, tokens, batch_size=64, normalize=True) -> np.ndarray:
    """Mean of the last layer's token vectors over the attention mask (N, hidden), L2-normalised by default."""
    batch_size = checks.count("batch_size", batch_size)
    tokens = text.check_tokens(tokens)
    embedder = _embedder(text_backbone(model), bool(normalize))
    return quiet_predict(embedder, token_arrays(tokens), batch_size)


def predict_text(model, tokens, batch_size=64) -> np.ndarray:
    """Class logits (N, classes) of a text classifier for tokenized texts."""
    batch_size = checks.count("batch_size", batch_size)
    tokens = text.check_tokens(tokens)
    return quiet_predict(model, token_arrays(tokens), batch_size)


def _check_text_data(model, data) -> tuple[dict, np.ndarray]:
    tokens, labels = checks.pair(data)
    tokens = text.check_tokens(tokens)
    return token_arrays(tokens), checks.labels(labels, len(tokens["input_ids"]), int(model.outputs[0].shape[-1]))


class _WarmupLinear(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to `peak` over `warmup_steps`, then linear decay to 0 at `total_steps`."""

    def __init__(self, peak: float, warmup_steps: int, total_steps: int):
        self.peak, self.warmup_steps, self.total_steps = float(peak), int(warmup_steps), int(total_steps)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        rise = step / max(1, self.warmup_steps)
        fall = (self.total_steps - step) / max(1, self.total_steps - self.warmup_steps)
        return self.peak * keras.ops.maximum(0.0, keras.ops.where(step < self.warmup_steps, rise, fall))

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps}


class _RateRecorder(keras.callbacks.Callback):
    """Record the learning rate each optimizer step uses."""

    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_batch_begin(self, batch, logs=None):
        self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


class _StepTimer(keras.callbacks.Callback):
    """Record the seconds each optimizer step takes (from batch begin to batch end)."""

    def __init__(self):
        super().__init__()
        self.seconds, self._start = [], 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def fit_text(model, train, validation=None, epochs=1, lr=5e-5, batch_size=16, warmup=0.1, verbose=True) -> dict:
    """Fine-tune on (tokens, labels): AdamW (no decay on biases and LayerNorm weights), linear warmup then linear
    decay, gradients clipped to norm 1."""
    epochs, batch_size = checks.count("epochs", epochs), checks.count("batch_size", batch_size)
    checks.positive(lr=lr)
    tokens, labels = _check_text_data(model, train)
    if not model.trainable_weights:
        raise ValueError("model has no trainable parameters: unfreeze something before fit_text")
    steps = epochs * -(-len(labels) // batch_size)
    schedule = _WarmupLinear(lr, text.warmup_steps(steps, warmup), steps)
    optimizer = keras.optimizers.AdamW(
        learning_rate=schedule,
        weight_decay=text.WEIGHT_DECAY,
        epsilon=tuning.ADAM_EPSILON,
        global_clipnorm=text.CLIP_NORM,
    )
    # decay the weight matrices; biases and LayerNorm weights are excluded
    optimizer.exclude_from_weight_decay(var_list=[w for w in model.trainable_weights if not text.decays(w.shape)])
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=False,
        run_eagerly=config.profile().keras_eager,
    )
    timer, rates, steps_timer = EpochTimer(), _RateRecorder(), _StepTimer()
    val = _check_text_data(model, validation) if validation is not None else None
    result = model.fit(
        tokens,
        labels,
        batch_size=batch_size,
        epochs=epochs,
        validation_data=val,
        shuffle=True,
        verbose=2 if verbose else 0,
        callbacks=[timer, rates, steps_timer],
    )
    history = {k: [float(v) for v in vals] for k, vals in result.history.items()}
    history["epoch_seconds"] = timer.seconds
    history["lr"] = rates.rates
    history["step_seconds"] = steps_timer.seconds
    return history

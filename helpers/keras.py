"""Keras half of the book's helper API: `from helpers import keras as book`.

Every public name here exists in `helpers.torch` with the same signature (a test holds
this). Images come in as NumPy NHWC arrays from `helpers.data`, which is Keras' own layout.
"""

from __future__ import annotations

import functools
import os
import platform
import time
import weakref
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

from helpers import keras_mobilenet, registry, seed, strategies, text, tuning  # noqa: E402
from helpers.interpret import grad_cam_maps, target_classes  # noqa: E402
from helpers.metrics import accuracy, softmax  # noqa: E402

__all__ = [
    "seed",
    "device",
    "versions",
    "prepare_weights",
    "pretrained_model",
    "pretrained_backbone",
    "blocks",
    "feature_dim",
    "new_head",
    "add_head",
    "freeze",
    "unfreeze",
    "count_params",
    "fit",
    "evaluate",
    "predict",
    "block_outputs",
    "first_layer_filters",
    "save_weights",
    "load_weights",
    "split_model",
    "grad_cam",
    "block_weights",
    "freeze_batchnorm",
    "learning_rates",
    "lr_range_test",
    "augment_images",
    "text_tokenizer",
    "tokenize",
    "text_encoder",
    "text_classifier",
    "encoder_layers",
    "train_top_layers",
    "sentence_embeddings",
    "predict_text",
    "fit_text",
    "unfreeze_top",
    "block_learning_rates",
    "small_cnn",
    "copy_blocks",
]

MODELS = {"mobilenet_v2": "mobilenet_v2-keras"}
OPTIMIZERS = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW, "sgd": keras.optimizers.SGD}
OPTIMIZERS.update(  # chapters 05-06; settings shared with helpers.torch through helpers.tuning
    momentum=functools.partial(keras.optimizers.SGD, momentum=tuning.MOMENTUM),
    adagrad=functools.partial(keras.optimizers.Adagrad, initial_accumulator_value=tuning.ADAGRAD_INITIAL),
    rmsprop=functools.partial(keras.optimizers.RMSprop, rho=tuning.RMSPROP_RHO, epsilon=tuning.RMSPROP_EPSILON**2),
)


def device() -> str:
    """'cuda' when TensorFlow sees a GPU, else 'cpu'."""
    return "cuda" if tf.config.list_physical_devices("GPU") else "cpu"


def versions() -> dict[str, str]:
    """Versions of Python, the framework and the libraries this module uses."""
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "device": device(),
    }


def prepare_weights(name: str = "mobilenet_v2") -> Path:
    """The checksummed ImageNet weights, ported from torchvision's file, as a local path."""
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; known models: {', '.join(MODELS)}")
    return registry.fetch(MODELS[name])


def pretrained_model(name: str = "mobilenet_v2") -> keras.Model:
    """The whole ImageNet classifier (1,000 classes) with torchvision's weights."""
    model = keras_mobilenet.classifier(1000)
    keras_mobilenet.load_torch_state(model, load_file(prepare_weights(name)))
    return model


def pretrained_backbone(name: str = "mobilenet_v2", weights: str | None = "imagenet") -> keras.Model:
    """The network without its classifier: images in, pooled features out; weights 'imagenet' or None."""
    if weights not in ("imagenet", None):
        raise ValueError(f"weights must be 'imagenet' or None (random initialisation), got {weights!r}")
    model = keras_mobilenet.backbone()
    if weights:
        keras_mobilenet.load_torch_state(model, load_file(prepare_weights(name)))
    return model


def blocks(model) -> list:
    """The feature blocks of a network, backbone or backbone-plus-head, from input to output."""
    found = [layer for layer in model.layers if layer.name.startswith("features_")]
    if found:
        return found
    for layer in model.layers:
        if isinstance(layer, keras.Model) and any(sub.name.startswith("features_") for sub in layer.layers):
            return blocks(layer)
    raise ValueError("model has no `features_*` blocks; pass a model from pretrained_model/pretrained_backbone")


def feature_dim(backbone) -> int:
    """Length of the feature vector the backbone produces."""
    return int(backbone.outputs[0].shape[-1])


def new_head(num_features: int, num_classes: int, dropout: float = 0.0) -> keras.Model:
    """A fresh classifier: dropout then one dense layer from features to class logits.

    Weights and biases start uniform in +-1/sqrt(num_features), PyTorch's default for nn.Linear, so that both
    frameworks start alike: Keras' own default (Glorot) is about 2.5 times larger here, and a larger random head
    sends larger gradients into the pretrained layers when everything is fine-tuned at once.
    """
    _check_classes(num_classes)
    _check_positive(num_features=num_features)
    limit = 1 / np.sqrt(num_features)
    init = {"minval": -limit, "maxval": limit}
    dense = keras.layers.Dense(
        num_classes,
        kernel_initializer=keras.initializers.RandomUniform(**init),
        bias_initializer=keras.initializers.RandomUniform(**init),
    )
    return keras.Sequential([keras.Input((num_features,)), keras.layers.Dropout(dropout), dense], name="head")


def add_head(backbone, head) -> keras.Model:
    """Stack a head on a backbone: images in, class logits out."""
    inputs = keras.Input(backbone.input.shape[1:], name="images")
    return keras.Model(inputs, head(backbone(inputs)), name=f"{backbone.name}_with_head")


def freeze(model):
    """Stop training every weight of `model`; its BatchNorm layers then run in inference mode."""
    return _set_trainable(model, False)


def unfreeze(model):
    """Make every weight of `model` trainable again."""
    return _set_trainable(model, True)


def _set_trainable(model, value: bool):
    """Set `trainable` on the model and on every layer inside it.

    Keras ignores `layer.trainable = value` when the layer already has that value, without visiting its
    sublayers, so `model.trainable = True` alone leaves blocks frozen inside a trainable model frozen.
    """
    for layer in model._flatten_layers(include_self=True, recursive=True):
        keras.layers.Layer.trainable.fset(layer, value)
    return model


def count_params(model) -> dict[str, int]:
    """Numbers of trainable and total parameters (BatchNorm running statistics are not parameters)."""
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    total = sum(int(np.prod(w.shape)) for w in model.weights if "moving_" not in w.path)
    return {"trainable": trainable, "total": total}


def _check_classes(num_classes: int) -> None:
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")


def _check_positive(**values) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value!r}")


def _check_data(model, data) -> tuple[np.ndarray, np.ndarray]:
    """Validate an (inputs, labels) pair against the model's output size."""
    x, y = data
    if len(x) != len(y):
        raise ValueError(f"inputs and labels differ in length: {len(x)} vs {len(y)}")
    outputs = model.outputs[0].shape[-1]
    if np.max(y) >= outputs or np.min(y) < 0:
        raise ValueError(f"labels must be in 0..{outputs - 1} for this model, got {np.min(y)}..{np.max(y)}")
    return np.asarray(x, dtype=np.float32), np.asarray(y)


class _EpochTimer(keras.callbacks.Callback):
    """Record the wall-clock seconds of every epoch."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


def fit(
    model,
    train,
    validation=None,
    epochs=1,
    lr=1e-3,
    batch_size=32,
    optimizer="adam",
    verbose=True,
    *,
    weight_decay=None,
    schedule=None,
    loss="cross_entropy",
    label_smoothing=0.0,
    l2_sp=0.0,
    early_stopping=None,
    augment=None,
    block_lr_decay=None,
) -> dict:
    """Train on (inputs, labels); returns the per-epoch history.

    weight_decay: decoupled decay (None: 0.01 for adamw, else 0); schedule: a name in tuning.SCHEDULES;
    loss: a name in tuning.LOSSES, with label_smoothing; l2_sp: pull toward the starting weights outside `head`;
    early_stopping: patience in epochs on the validation loss, best weights restored; augment: Keras
    preprocessing layers applied to each training batch. block_lr_decay: discriminative rates, the head trains
    at lr and the feature block k levels below it at lr * block_lr_decay**k (see block_learning_rates).
    """
    _check_positive(epochs=epochs, lr=lr, batch_size=batch_size)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {optimizer!r}; known optimizers: {', '.join(OPTIMIZERS)}")
    tuning.check_options(schedule, loss, label_smoothing, weight_decay, l2_sp, early_stopping, validation is not None)
    x, y = _check_data(model, train)
    if not model.trainable_weights:
        raise ValueError("model has no trainable parameters: unfreeze something before fit")
    rate = _make_schedule(schedule, lr, epochs * _steps(x, batch_size))
    model.compile(
        optimizer=_block_rates(_make_optimizer(optimizer, rate, weight_decay), model, block_lr_decay),
        loss=_make_loss(model, loss, label_smoothing, l2_sp),
        metrics=["accuracy"],
    )
    timer = _EpochTimer()
    val = _check_data(model, validation) if validation is not None else None
    callbacks = [timer] if val is None else [timer, _Validation(val, early_stopping)]
    result = model.fit(
        **_train_inputs(x, y, batch_size, augment), epochs=epochs, verbose=2 if verbose else 0, callbacks=callbacks
    )
    history = {k: [float(v) for v in vals] for k, vals in result.history.items()}
    history["epoch_seconds"] = timer.seconds
    return history


def evaluate(model, data, batch_size=256) -> dict[str, float]:
    """Cross-entropy loss and accuracy on (inputs, labels)."""
    x, y = _check_data(model, data)
    logits = predict(model, x, batch_size=batch_size)
    probs = softmax(logits.astype(np.float64))
    loss = float(-np.log(probs[np.arange(len(y)), y] + 1e-12).mean())
    return {"loss": loss, "accuracy": accuracy(y, logits)}


def predict(model, x, batch_size=256) -> np.ndarray:
    """Model outputs (logits or features) for NumPy inputs, as a NumPy array."""
    _check_positive(batch_size=batch_size)
    return _quiet_predict(model, np.asarray(x, dtype=np.float32), batch_size)


def block_outputs(backbone, x, indices) -> list[np.ndarray]:
    """Activations of the chosen feature blocks for inputs x, as NHWC NumPy arrays."""
    indices = list(indices)
    captured = {i: [] for i in indices}
    for start in range(0, len(x), 64):
        h = keras.ops.convert_to_tensor(np.asarray(x[start : start + 64], dtype=np.float32))
        for i, block in enumerate(blocks(backbone)[: max(indices) + 1]):
            h = block(h, training=False)
            if i in captured:
                captured[i].append(keras.ops.convert_to_numpy(h))
    return [np.concatenate(captured[i]) for i in indices]


def first_layer_filters(backbone) -> np.ndarray:
    """The first convolution's kernels as (filters, height, width, channels)."""
    conv = next(
        layer for layer in keras_mobilenet._layers(blocks(backbone)[0]) if isinstance(layer, keras.layers.Conv2D)
    )
    return np.transpose(conv.kernel.numpy(), (3, 0, 1, 2))


def save_weights(model, path, overwrite=False) -> Path:
    """Save the model's weights (`.weights.h5`); refuses to replace an existing file unless overwrite=True."""
    path = Path(path)
    if not path.name.endswith(".weights.h5"):
        raise ValueError(f"Keras weight files must end in '.weights.h5', got {path.name!r}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it or choose another path")
    model.save_weights(path, overwrite=True)
    return path


def load_weights(model, path):
    """Load weights saved by save_weights into a model of the same architecture."""
    model.load_weights(Path(path))
    return model


# ---- chapters 07-08 (evaluation, interpretation): split a network at a block, Grad-CAM, per-block weights ----


def _chain(model) -> tuple[list, list]:
    """The model as layers applied one after another (its feature blocks one by one), and its blocks."""
    found = blocks(model)
    ids = {id(b) for b in found}

    def expand(layer):
        if isinstance(layer, keras.layers.InputLayer):
            return []
        if id(layer) not in ids and isinstance(layer, keras.Model) and any(id(s) in ids for s in layer.layers):
            return [part for sub in layer.layers for part in expand(sub)]
        return [layer]

    return [part for layer in model.layers for part in expand(layer)], found


def _block_position(model, block_index: int) -> tuple[list, int]:
    """The model's chain of layers and the position of feature block `block_index` in it."""
    chain, found = _chain(model)
    if not isinstance(block_index, int) or not -len(found) <= block_index < len(found):
        raise ValueError(f"block_index must be an integer in {-len(found)}..{len(found) - 1}, got {block_index!r}")
    block = found[block_index]
    return chain, next(i for i, layer in enumerate(chain) if layer is block)


def _apply(layers, inputs, training=None):
    for layer in layers:
        inputs = layer(inputs, training=training) if training is not None else layer(inputs)
    return inputs


def split_model(model, block_index):
    """(lower, upper): images to the input of block `block_index`, and that input to the outputs; weights shared."""
    chain, position = _block_position(model, block_index)
    images = keras.Input(model.inputs[0].shape[1:], name="images")
    entering = _apply(chain[:position], images)
    lower = keras.Model(images, entering, name=f"{model.name}_lower")
    activations = keras.Input(entering.shape[1:], name="activations")
    upper = keras.Model(activations, _apply(chain[position:], activations), name=f"{model.name}_upper")
    return lower, upper


def grad_cam(model, x, class_index=None, block_index=-1) -> np.ndarray:
    """Grad-CAM maps (N, h, w) in [0, 1] at a block's output for `class_index` (default: each image's top class)."""
    chain, position = _block_position(model, block_index)
    activations = _apply(chain[: position + 1], tf.convert_to_tensor(np.asarray(x, dtype=np.float32)), False)
    with tf.GradientTape() as tape:
        tape.watch(activations)
        logits = _apply(chain[position + 1 :], activations, False)
        targets = target_classes(logits.numpy(), class_index)
        score = tf.reduce_sum(tf.gather(logits, targets, batch_dims=1))
    gradients = tape.gradient(score, activations)
    return grad_cam_maps(activations.numpy(), gradients.numpy())


def block_weights(model) -> list[np.ndarray]:
    """Each feature block's parameters (not BatchNorm statistics) as one flat vector, from input to output."""
    flat = lambda block: [np.ravel(w.numpy()) for w in block.weights if "moving_" not in w.path]
    return [np.concatenate(flat(block)) for block in blocks(model)]


def freeze_batchnorm(model):
    """Freeze every BatchNorm layer: scale and shift stop training, and `fit` normalises with the stored statistics."""
    for layer in keras_mobilenet._layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            freeze(layer)
    return model


# ---- chapters 05-06 (craft): optimizers, schedules, losses, L2-SP, early stopping, augmentation, range test ----


def _make_optimizer(name: str, learning_rate, weight_decay: float | None = None):
    """The named Keras optimizer; `learning_rate` a number or a schedule; weight decay is decoupled in Keras."""
    if name not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {name!r}; known optimizers: {', '.join(OPTIMIZERS)}")
    decay = tuning.weight_decay_for(name, weight_decay)
    return OPTIMIZERS[name](learning_rate=learning_rate, weight_decay=decay if name == "adamw" else decay or None)


def _make_schedule(schedule: str | None, lr: float, total_steps: int):
    """A keras.optimizers.schedules schedule (a plain number for 'constant'), read once per optimizer step."""
    name = tuning.check_schedule(schedule, lr, total_steps)
    S = keras.optimizers.schedules
    warmup = tuning.warmup_steps(total_steps)
    if name == "constant":
        return lr
    if name == "step":
        boundaries = [m - 1 for m in tuning.step_milestones(total_steps)]  # the rate drops after each boundary
        return S.PiecewiseConstantDecay(boundaries, [lr * tuning.STEP_FACTOR**i for i in range(len(boundaries) + 1)])
    if name == "exponential":
        return S.ExponentialDecay(lr, total_steps, tuning.EXPONENTIAL_FINAL)
    if name == "cosine":
        return S.CosineDecay(lr, total_steps)
    alpha = 1.0 if name == "warmup" else 0.0  # cosine decay to alpha * lr: alpha=1 keeps the rate after warmup
    return S.CosineDecay(
        lr * tuning.WARMUP_START, total_steps - warmup, alpha=alpha, warmup_target=lr, warmup_steps=warmup
    )


def learning_rates(schedule, lr, total_steps) -> np.ndarray:
    """The learning rate at every optimizer step, as keras.optimizers.schedules computes it for `schedule`."""
    rate = _make_schedule(schedule, lr, total_steps)
    if not callable(rate):
        return np.full(total_steps, float(rate))
    return np.array([float(rate(step)) for step in range(total_steps)])


def _make_loss(model, name: str, label_smoothing: float = 0.0, l2_sp: float = 0.0):
    """The training loss, plus the L2-SP penalty l2_sp/2 * sum((w - w_start)^2) over the weights outside `head`."""
    if name == "cross_entropy" and not label_smoothing and not l2_sp:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    classes = model.outputs[0].shape[-1]
    head = next((layer for layer in model.layers if layer.name == "head"), None)
    in_head = {id(w) for w in head.weights} if head is not None else set()
    anchors = [(w, tf.constant(w.numpy())) for w in model.trainable_weights if id(w) not in in_head] if l2_sp else []

    def loss(labels, logits):
        target = keras.ops.one_hot(keras.ops.cast(keras.ops.reshape(labels, (-1,)), "int32"), classes)
        target = target * (1 - label_smoothing) + label_smoothing / classes
        if name == "cross_entropy":
            per_example = keras.losses.categorical_crossentropy(target, logits, from_logits=True)
        elif name == "squared_error":
            per_example = keras.ops.mean(keras.ops.square(logits - target), axis=-1)
        else:
            per_example = keras.losses.huber(target, logits, delta=tuning.HUBER_DELTA)
        if anchors:
            per_example += 0.5 * l2_sp * sum(keras.ops.sum(keras.ops.square(w - start)) for w, start in anchors)
        return per_example

    return loss


class _Validation(keras.callbacks.Callback):
    """Validation loss (cross-entropy) and accuracy after each epoch; optional early stopping with best weights."""

    def __init__(self, data, patience: int | None = None):
        super().__init__()
        self.data, self.patience = data, patience
        self.best, self.best_weights, self.waited = float("inf"), None, 0

    def on_epoch_end(self, epoch, logs=None):
        scores = evaluate(self.model, self.data)
        logs["val_loss"], logs["val_accuracy"] = scores["loss"], scores["accuracy"]
        if self.patience is None:
            return
        if scores["loss"] < self.best:
            self.best, self.waited, self.best_weights = scores["loss"], 0, self.model.get_weights()
        else:
            self.waited += 1
        self.model.stop_training = self.waited >= self.patience

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


def _train_inputs(x: np.ndarray, y: np.ndarray, batch_size: int, augment=None) -> dict:
    """Arguments for `model.fit`: arrays, or a tf.data pipeline applying `augment` (Keras layers) to each batch."""
    if augment is None:
        return {"x": x, "y": y, "batch_size": batch_size}
    if not callable(augment):
        raise ValueError(f"augment must be a Keras preprocessing layer or Sequential (a callable), got {augment!r}")
    batches = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x)).batch(batch_size)
    augmented = batches.map(lambda images, labels: (augment(images, training=True), labels)).prefetch(2)
    return {"x": augmented, "shuffle": False}  # the pipeline shuffles, afresh every epoch


def augment_images(images, augment) -> np.ndarray:
    """Apply an augmentation pipeline (Keras preprocessing layers) to each NHWC image independently."""
    return keras.ops.convert_to_numpy(augment(np.asarray(images, dtype=np.float32), training=True))


def lr_range_test(model, train, min_lr=1e-6, max_lr=1.0, steps=100, batch_size=32, optimizer="adam") -> dict:
    """Train with a rate rising exponentially from min_lr to max_lr; the loss at each step (weights restored after)."""
    _check_positive(batch_size=batch_size)
    rates = tuning.range_test_rates(min_lr, max_lr, steps)
    x, y = _check_data(model, train)
    saved = model.get_weights()
    model.compile(optimizer=_make_optimizer(optimizer, min_lr), loss=_make_loss(model, "cross_entropy"))
    losses = []
    try:
        for rate, batch in zip(rates, tuning.batch_order(len(y), batch_size, steps)):
            model.optimizer.learning_rate = float(rate)
            losses.append(float(model.train_on_batch(x[batch], y[batch])))
            if tuning.diverged(losses):
                break
    finally:
        model.set_weights(saved)
    return {"lr": rates[: len(losses)], "loss": np.array(losses)}


def _steps(x, batch_size: int) -> int:
    """Optimizer steps in one epoch over x (the last, smaller batch included)."""
    return -(-len(x) // batch_size)


# ---- chapter 09 (text): a pretrained transformer (MiniLM) through keras-hub ----
# keras-hub's own WordPiece tokenizer needs tensorflow-text, which needs the full `tensorflow` wheel beside
# tensorflow-cpu; the book tokenizes with Hugging Face `tokenizers` instead (helpers.text) and feeds the ids.


def _keras_hub():
    """keras_hub, imported on first use (its import takes seconds)."""
    import warnings

    with warnings.catch_warnings():  # tqdm.auto's "IProgress not found" in notebooks without ipywidgets
        warnings.filterwarnings("ignore", message="IProgress not found")
        import keras_hub

    return keras_hub


def _quiet_predict(model, inputs, batch_size: int) -> np.ndarray:
    """model.predict (on an array or a dict of arrays) without TensorFlow's retracing warning; each new model
    traces its predict function once, which is expected here."""
    logger, level = tf.get_logger(), tf.get_logger().level
    logger.setLevel("ERROR")
    try:
        return np.asarray(model.predict(inputs, batch_size=batch_size, verbose=0))
    finally:
        logger.setLevel(level)


def text_tokenizer():
    """The model's WordPiece tokenizer: Hugging Face `tokenizers` reading the model's tokenizer.json."""
    return text.tokenizer()


def tokenize(texts, max_length) -> dict[str, np.ndarray]:
    """Token ids, segment ids and attention masks (N, max_length); longer texts truncated, shorter ones padded."""
    return text.encode(texts, max_length)


def text_encoder():
    """The pretrained MiniLM encoder without a head (keras-hub's BertBackbone, converted from the same files)."""
    return _keras_hub().models.BertBackbone.from_preset(str(text.model_dir()))


def _text_inputs() -> dict:
    return {name: keras.Input((None,), dtype="int32", name=name) for name in text.TEXT_INPUTS}


def _backbone_inputs(inputs: dict) -> dict:
    """keras-hub's names for the three token arrays."""
    return {
        "token_ids": inputs["input_ids"],
        "segment_ids": inputs["token_type_ids"],
        "padding_mask": inputs["attention_mask"],
    }


def text_classifier(num_classes, dropout=0.1):
    """MiniLM with a new classification head on its pooled [CLS] output: dropout, then one dense layer."""
    _check_classes(num_classes)
    backbone = text_encoder()
    inputs = _text_inputs()
    pooled = backbone(_backbone_inputs(inputs))["pooled_output"]
    pooled = keras.layers.Dropout(dropout, name="dropout")(pooled)
    init = keras.initializers.TruncatedNormal(stddev=0.02)  # BERT's initialisation, as transformers uses
    logits = keras.layers.Dense(num_classes, kernel_initializer=init, name="classifier")(pooled)
    return keras.Model(inputs, logits, name="minilm_classifier")


def _text_backbone(model):
    """The BertBackbone inside an encoder or a classifier."""
    if isinstance(model, _keras_hub().models.BertBackbone):
        return model
    found = [layer for layer in model.layers if isinstance(layer, _keras_hub().models.BertBackbone)]
    if not found:
        raise ValueError("model has no transformer layers; pass a model from text_encoder or text_classifier")
    return found[0]


def encoder_layers(model) -> list:
    """The transformer layers of a text encoder or classifier, from input to output."""
    return list(_text_backbone(model).transformer_layers)


def train_top_layers(model, num_layers):
    """Freeze the embeddings and all but the top `num_layers` transformer layers; pooler and head stay trainable."""
    layers = encoder_layers(model)
    if not isinstance(num_layers, int) or not 0 <= num_layers <= len(layers):
        raise ValueError(f"num_layers must be an integer from 0 to {len(layers)}, got {num_layers!r}")
    backbone = _text_backbone(model)
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
        inputs = _text_inputs()
        hidden = backbone(_backbone_inputs(inputs))["sequence_output"]
        mask = keras.ops.expand_dims(keras.ops.cast(inputs["attention_mask"], hidden.dtype), -1)
        mean = keras.ops.sum(hidden * mask, axis=1) / keras.ops.maximum(keras.ops.sum(mask, axis=1), 1e-9)
        if normalize:
            mean = mean / keras.ops.maximum(keras.ops.norm(mean, axis=-1, keepdims=True), 1e-12)
        cached[key] = keras.Model(inputs, mean, name="mean_pooling")
    return cached[key]


def _int32(tokens: dict) -> dict[str, np.ndarray]:
    return {k: np.asarray(tokens[k], dtype=np.int32) for k in text.TEXT_INPUTS}


def sentence_embeddings(model, tokens, batch_size=64, normalize=True) -> np.ndarray:
    """Mean of the last layer's token vectors over the attention mask (N, hidden), L2-normalised by default."""
    _check_positive(batch_size=batch_size)
    tokens = text.check_tokens(tokens)
    embedder = _embedder(_text_backbone(model), bool(normalize))
    return _quiet_predict(embedder, _int32(tokens), batch_size)


def predict_text(model, tokens, batch_size=64) -> np.ndarray:
    """Class logits (N, classes) of a text classifier for tokenized texts."""
    _check_positive(batch_size=batch_size)
    tokens = text.check_tokens(tokens)
    return _quiet_predict(model, _int32(tokens), batch_size)


def _check_text_data(model, data) -> tuple[dict, np.ndarray]:
    tokens, labels = data
    labels = np.asarray(labels)
    tokens = text.check_tokens(tokens, labels)
    classes = model.outputs[0].shape[-1]
    if labels.min() < 0 or labels.max() >= classes:
        raise ValueError(f"labels must be in 0..{classes - 1} for this model, got {labels.min()}..{labels.max()}")
    return _int32(tokens), labels


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


def fit_text(model, train, validation=None, epochs=1, lr=5e-5, batch_size=16, warmup=0.1, verbose=True) -> dict:
    """Fine-tune on (tokens, labels): AdamW, linear warmup then linear decay, gradients clipped to norm 1."""
    _check_positive(epochs=epochs, lr=lr, batch_size=batch_size)
    tokens, labels = _check_text_data(model, train)
    if not model.trainable_weights:
        raise ValueError("model has no trainable parameters: unfreeze something before fit_text")
    steps = epochs * -(-len(labels) // batch_size)
    schedule = _WarmupLinear(lr, text.warmup_steps(steps, warmup), steps)
    optimizer = keras.optimizers.AdamW(
        learning_rate=schedule, weight_decay=text.WEIGHT_DECAY, epsilon=1e-8, global_clipnorm=text.CLIP_NORM
    )
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=False,
    )
    timer, rates = _EpochTimer(), _RateRecorder()
    val = _check_text_data(model, validation) if validation is not None else None
    result = model.fit(
        tokens,
        labels,
        batch_size=batch_size,
        epochs=epochs,
        validation_data=val,
        shuffle=True,
        verbose=2 if verbose else 0,
        callbacks=[timer, rates],
    )
    history = {k: [float(v) for v in vals] for k, vals in result.history.items()}
    history["epoch_seconds"] = timer.seconds
    history["lr"] = rates.rates
    return history


# ---- chapters 03-04 (strategies): partial unfreezing, discriminative rates, a small CNN, layer transfer ----


def unfreeze_top(model, num_blocks):
    """Train the top `num_blocks` feature blocks and everything above them (the head); freeze the blocks below."""
    found = blocks(model)
    strategies.check_num_blocks(num_blocks, len(found))
    unfreeze(model)
    for block in found[: len(found) - num_blocks]:
        freeze(block)
    return model


def block_learning_rates(model, lr, block_lr_decay) -> list[float]:
    """The rate of each feature block, input to output, under fit(..., lr=lr, block_lr_decay=...); the head gets lr."""
    _check_positive(lr=lr)
    return [lr * factor for factor in strategies.block_factors(len(blocks(model)), block_lr_decay)]


class _BlockRates:
    """Mixed into a Keras optimizer class: every variable steps at the current rate times its block's factor.

    Keras has no per-variable learning rate, and scaling gradients instead would do nothing for Adam-like
    optimizers, whose steps ignore the gradient's scale. So the factor multiplies the rate the optimizer (and
    its schedule) computes at each step, which is what PyTorch's param groups do.
    """

    def _rate_factor(self, variable) -> float:
        return self._block_factors.get(self._var_key(variable), 1.0)

    def update_step(self, gradient, variable, learning_rate):
        factor = self._rate_factor(variable)
        return super().update_step(gradient, variable, learning_rate if factor == 1.0 else learning_rate * factor)

    def _apply_weight_decay(self, variables):
        """Decoupled weight decay at each variable's own rate, as PyTorch applies it per param group."""
        if self.weight_decay is None:
            return
        for variable in variables:
            if self._use_weight_decay(variable):
                rate = keras.ops.cast(self.learning_rate, variable.dtype) * self._rate_factor(variable)
                variable.assign(variable - variable * keras.ops.cast(self.weight_decay, variable.dtype) * rate)


_BLOCK_RATE_CLASSES: dict[type, type] = {}


def _block_rates(optimizer, model, block_lr_decay):
    """`optimizer` unchanged, or with block_lr_decay a copy whose feature blocks step at their own rates."""
    if block_lr_decay is None:
        return optimizer
    factors = strategies.block_factors(len(blocks(model)), block_lr_decay)
    base = type(optimizer)
    cls = _BLOCK_RATE_CLASSES.setdefault(base, type(f"BlockRate{base.__name__}", (_BlockRates, base), {}))
    wrapped = cls.from_config(optimizer.get_config())
    by_key = {wrapped._var_key(w): f for block, f in zip(blocks(model), factors) for w in block.trainable_weights}
    object.__setattr__(wrapped, "_block_factors", by_key)  # a plain dict, kept out of Keras' variable tracking
    return wrapped


def _small_block(width_in: int, width: int, pool: bool, index: int) -> keras.Model:
    """One block of the small CNN, a nested model named `features_{index}` like MobileNetV2's blocks."""
    inputs = keras.Input((None, None, width_in))
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"features_{index}_0")(inputs)
    bn = {"epsilon": strategies.BN_EPSILON, "momentum": strategies.BN_MOMENTUM}
    x = keras.layers.BatchNormalization(**bn, name=f"features_{index}_1")(x)
    x = keras.layers.ReLU(name=f"features_{index}_2")(x)
    if pool:
        x = keras.layers.MaxPooling2D(2, name=f"features_{index}_3")(x)
    return keras.Model(inputs, x, name=f"features_{index}")


def small_cnn(num_classes, channels=1) -> keras.Model:
    """A small CNN for 28x28 images: conv-BatchNorm-ReLU(-max-pool) blocks, global average pooling, a linear head."""
    _check_classes(num_classes)
    images = keras.Input((None, None, channels), name="images")
    x, width_in = images, channels
    for index, (width, pool) in enumerate(strategies.SMALL_CNN_BLOCKS):
        x = _small_block(width_in, width, pool, index)(x)
        width_in = width
    backbone = keras.Model(images, keras.layers.GlobalAveragePooling2D(name="pool")(x), name="small_cnn")
    return add_head(backbone, new_head(width_in, num_classes))


def copy_blocks(source, target, num_blocks):
    """Copy the first `num_blocks` feature blocks (weights and BatchNorm statistics) of `source` into `target`."""
    pairs = list(zip(blocks(source), blocks(target)))
    strategies.check_num_blocks(num_blocks, len(pairs))
    for i, (a, b) in enumerate(pairs[:num_blocks]):
        weights = a.get_weights()
        shapes_a, shapes_b = [w.shape for w in weights], [tuple(w.shape) for w in b.weights]
        if shapes_a != shapes_b:
            raise ValueError(f"block {i} differs between source and target: {shapes_a} vs {shapes_b}")
        b.set_weights(weights)
    return target

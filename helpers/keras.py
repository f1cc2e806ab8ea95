"""Keras half of the book's helper API: `from helpers import keras as book`.

Every public name here exists in `helpers.torch` with the same signature (a test holds
this). Images come in as NumPy NHWC arrays from `helpers.data`, which is Keras' own layout.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

from helpers import keras_mobilenet, registry, seed  # noqa: E402
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
]

MODELS = {"mobilenet_v2": "mobilenet_v2-keras"}
OPTIMIZERS = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW, "sgd": keras.optimizers.SGD}


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
    """A fresh classifier: dropout then one dense layer from features to class logits."""
    _check_classes(num_classes)
    return keras.Sequential(
        [keras.Input((num_features,)), keras.layers.Dropout(dropout), keras.layers.Dense(num_classes)], name="head"
    )


def add_head(backbone, head) -> keras.Model:
    """Stack a head on a backbone: images in, class logits out."""
    inputs = keras.Input(backbone.input.shape[1:], name="images")
    return keras.Model(inputs, head(backbone(inputs)), name=f"{backbone.name}_with_head")


def freeze(model):
    """Stop training every weight of `model`; its BatchNorm layers then run in inference mode."""
    model.trainable = False
    return model


def unfreeze(model):
    """Make every weight of `model` trainable again."""
    model.trainable = True
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


def fit(model, train, validation=None, epochs=1, lr=1e-3, batch_size=32, optimizer="adam", verbose=True) -> dict:
    """Train on (inputs, labels) with cross-entropy; returns the per-epoch history."""
    _check_positive(epochs=epochs, lr=lr, batch_size=batch_size)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {optimizer!r}; known optimizers: {', '.join(OPTIMIZERS)}")
    x, y = _check_data(model, train)
    if not model.trainable_weights:
        raise ValueError("model has no trainable parameters: unfreeze something before fit")
    model.compile(
        optimizer=OPTIMIZERS[optimizer](learning_rate=lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    timer = _EpochTimer()
    val = _check_data(model, validation) if validation is not None else None
    result = model.fit(
        x, y, batch_size=batch_size, epochs=epochs, validation_data=val, verbose=2 if verbose else 0, callbacks=[timer]
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
    return np.asarray(model.predict(np.asarray(x, dtype=np.float32), batch_size=batch_size, verbose=0))


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

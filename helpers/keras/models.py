"""Networks (Keras): the backbone table, pretrained models, new heads, freezing, parameter counts, saving."""

from __future__ import annotations

import dataclasses
import platform
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from safetensors.numpy import load_file

from helpers import checks, registry
from helpers.keras import efficientnet_port, mobilenet_port
from helpers.keras.internals import flatten_layers
from helpers.models import BN_EPSILON, BN_MOMENTUM, SMALL_CNN_BLOCKS

__all__ = [
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
    "small_cnn",
    "save_weights",
    "load_weights",
]

Model = keras.Model  # the framework's network type: annotations read alike in both halves
TAG = "book_backbone"  # attribute naming the BACKBONES entry of a network built here; `blocks` reads it


@dataclasses.dataclass(frozen=True)
class Backbone:
    """One architecture: how to build it, where its pretrained weights come from, where its feature blocks are."""

    backbone: Callable[[], keras.Model]  # images in, pooled features out; randomly initialised
    blocks: Callable[[keras.Model], list]  # the feature blocks, input to output, of a network built here
    classifier: Callable[[], keras.Model] | None = None  # the whole ImageNet classifier, randomly initialised
    weights: str | None = None  # registry entry of the pretrained weights
    load: Callable[[keras.Model, Path], None] | None = None  # puts the weight file's tensors into a network


def _named_blocks(network) -> list:
    """Blocks that are nested models named `features_<i>`, in order (the MobileNetV2 port and the small CNN)."""
    return [layer for layer in network.layers if layer.name.startswith("features_")]


def _small_block(width_in: int, width: int, pool: bool, index: int) -> Model:
    """One block of the small CNN, a nested model named `features_{index}` like MobileNetV2's blocks."""
    inputs = keras.Input((None, None, width_in))
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"features_{index}_0")(inputs)
    bn = {"epsilon": BN_EPSILON, "momentum": BN_MOMENTUM}
    x = keras.layers.BatchNormalization(**bn, name=f"features_{index}_1")(x)
    x = keras.layers.ReLU(name=f"features_{index}_2")(x)
    if pool:
        x = keras.layers.MaxPooling2D(2, name=f"features_{index}_3")(x)
    return keras.Model(inputs, x, name=f"features_{index}")


def small_cnn_backbone(channels: int = 1) -> Model:
    """The small CNN of chapter 04 without its head (SMALL_CNN_BLOCKS)."""
    images = keras.Input((None, None, channels), name="images")
    x, width_in = images, channels
    for index, (width, pool) in enumerate(SMALL_CNN_BLOCKS):
        x = _small_block(width_in, width, pool, index)(x)
        width_in = width
    return keras.Model(images, keras.layers.GlobalAveragePooling2D(name="pool")(x), name="small_cnn")


BACKBONES = {
    "mobilenet_v2": Backbone(
        backbone=mobilenet_port.backbone,
        blocks=_named_blocks,
        classifier=lambda: mobilenet_port.classifier(1000),
        weights="mobilenet_v2-keras",
        load=lambda network, path: mobilenet_port.load_torch_state(network, load_file(path)),
    ),
    "efficientnet_lite0": Backbone(
        backbone=efficientnet_port.backbone,
        blocks=_named_blocks,
        classifier=lambda: efficientnet_port.classifier(1000),
        weights="efficientnet_lite0-keras",
        load=lambda network, path: efficientnet_port.load_torch_state(network, load_file(path)),
    ),
    "small_cnn": Backbone(backbone=small_cnn_backbone, blocks=_named_blocks),
}


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


def _entry(name: str, pretrained: bool = False) -> Backbone:
    return checks.backbone(BACKBONES, name, pretrained)


def tagged(model, name: str):
    setattr(model, TAG, name)
    return model


def prepare_weights(name: str = "mobilenet_v2") -> Path:
    """The checksummed pretrained weights of a model (for MobileNetV2: torchvision's, ported) as a local path."""
    return registry.fetch(_entry(name, pretrained=True).weights)


def pretrained_model(name: str = "mobilenet_v2") -> Model:
    """The whole ImageNet classifier (1,000 classes) with torchvision's weights."""
    entry = _entry(name, pretrained=True)
    model = entry.classifier()
    entry.load(model, prepare_weights(name))
    return tagged(model, name)


def pretrained_backbone(name: str = "mobilenet_v2", weights: str | None = "imagenet") -> Model:
    """The network without its classifier: images in, pooled features out; weights 'imagenet' or None."""
    if weights not in ("imagenet", None):
        raise ValueError(f"weights must be 'imagenet' or None (random initialisation), got {weights!r}")
    entry = _entry(name, pretrained=weights is not None)
    model = entry.backbone()
    if weights:
        entry.load(model, prepare_weights(name))
    return tagged(model, name)


def _tagged_parts(model):
    """(layer, BACKBONES entry) for every network built here inside `model`, outermost first."""
    for layer in flatten_layers(model, include_self=True, recursive=True):
        name = getattr(layer, TAG, None)
        if name in BACKBONES:
            yield layer, BACKBONES[name]


def blocks(model: Model) -> list:
    """The feature blocks of a network, backbone or backbone-plus-head, from input to output."""
    for layer, entry in _tagged_parts(model):
        return entry.blocks(layer)
    raise ValueError(
        f"found no feature blocks in this {type(model).__name__}: pass a network built by pretrained_model, "
        f"pretrained_backbone or small_cnn (known architectures: {', '.join(BACKBONES)})"
    )


def feature_dim(backbone: Model) -> int:
    """Length of the feature vector the backbone produces (of the backbone inside a model with a head)."""
    return int(blocks(backbone)[-1].outputs[0].shape[-1])


def new_head(num_features: int, num_classes: int, dropout: float = 0.0) -> Model:
    """A fresh classifier: dropout then one dense layer from features to class logits.

    Weights and biases start uniform in +-1/sqrt(num_features), PyTorch's default for nn.Linear, so that both
    frameworks start alike: Keras' own default (Glorot) is about 2.5 times larger here, and a larger random head
    sends larger gradients into the pretrained layers when everything is fine-tuned at once.
    """
    num_classes, num_features = checks.classes(num_classes), checks.count("num_features", num_features)
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be a rate in [0, 1), got {dropout!r}")
    limit = 1 / np.sqrt(num_features)
    init = {"minval": -limit, "maxval": limit}
    dense = keras.layers.Dense(
        num_classes,
        kernel_initializer=keras.initializers.RandomUniform(**init),
        bias_initializer=keras.initializers.RandomUniform(**init),
    )
    return keras.Sequential([keras.Input((num_features,)), keras.layers.Dropout(dropout), dense], name="head")


def add_head(backbone: Model, head: Model) -> Model:
    """Stack a head on a backbone: images in, class logits out."""
    inputs = keras.Input(backbone.input.shape[1:], name="images")
    return keras.Model(inputs, head(backbone(inputs)), name=f"{backbone.name}_with_head")


def freeze(model: Model) -> Model:
    """Stop training every weight of `model`; its BatchNorm layers then run in inference mode."""
    return _set_trainable(model, False)


def unfreeze(model: Model) -> Model:
    """Make every weight of `model` trainable again."""
    return _set_trainable(model, True)


def _set_trainable(model, value: bool):
    """Set `trainable` on the model and on every layer inside it.

    Keras ignores `layer.trainable = value` when the layer already has that value, without visiting its
    sublayers, so `model.trainable = True` alone leaves blocks frozen inside a trainable model frozen.
    """
    for layer in flatten_layers(model, include_self=True, recursive=True):
        keras.layers.Layer.trainable.fset(layer, value)
    return model


def count_params(model: Model) -> dict[str, int]:
    """Numbers of trainable and total parameters (BatchNorm running statistics are not parameters)."""
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    total = sum(int(np.prod(w.shape)) for w in model.weights if "moving_" not in w.path)
    return {"trainable": trainable, "total": total}


def small_cnn(num_classes, channels=1) -> Model:
    """A small CNN for 28x28 images: conv-BatchNorm-ReLU(-max-pool) blocks, global average pooling, a linear head."""
    num_classes, channels = checks.classes(num_classes), checks.count("channels", channels)
    backbone = tagged(small_cnn_backbone(channels), "small_cnn")
    return add_head(backbone, new_head(SMALL_CNN_BLOCKS[-1][0], num_classes))


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

"""Keras: parameter-efficient fine-tuning (BitFit, LoRA) (chapter 14). Mirrors `helpers.torch.peft`.

The classifier here mean-pools MiniLM's token vectors (the attention mask skips padding) instead of reading the
pooled [CLS] vector: the MiniLM checkpoint holds pooler weights, but sentence-transformers never trained them (its
objective reads the mean; the pooler's bias is all zeros), so a frozen encoder gives a poor [CLS] feature there.
LoRA is Keras' own `layer.enable_lora(rank, lora_alpha)` on the EinsumDense projections of keras-hub's BertBackbone.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from helpers import checks
from helpers import peft as peft_helpers
from helpers.keras.internals import flatten_layers
from helpers.keras.models import Model, unfreeze
from helpers.keras.text_classification import backbone_inputs, text_backbone, text_encoder, text_inputs

__all__ = [
    "pooled_text_classifier",
    "train_head_only",
    "train_biases",
    "lora_targets",
    "add_lora",
    "merge_lora",
    "pointwise_convs",
    "add_conv_lora",
    "save_adapter",
    "load_adapter",
]


_POOLER = "pooled_dense"


def pooled_text_classifier(num_classes, dropout=0.1) -> Model:
    """MiniLM with a new linear head on the masked mean of its token vectors; all trainable but the unused pooler."""
    num_classes = checks.classes(num_classes)
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout is a probability in [0, 1), got {dropout!r}")
    backbone = text_encoder()
    backbone.get_layer(_POOLER).trainable = False  # the [CLS] pooler feeds nothing here: frozen, as in PyTorch
    inputs = text_inputs()
    hidden = backbone(backbone_inputs(inputs))["sequence_output"]
    mask = keras.ops.expand_dims(keras.ops.cast(inputs["attention_mask"], hidden.dtype), -1)
    mean = keras.ops.sum(hidden * mask, axis=1) / keras.ops.maximum(keras.ops.sum(mask, axis=1), 1e-9)
    mean = keras.layers.Dropout(float(dropout), name="dropout")(mean)
    init = keras.initializers.TruncatedNormal(stddev=0.02)  # BERT's initialisation, as the torch half uses
    logits = keras.layers.Dense(num_classes, kernel_initializer=init, name="classifier")(mean)
    return keras.Model(inputs, logits, name="minilm_mean_classifier")


def _head(model: Model):
    try:
        return model.get_layer("classifier")
    except ValueError:
        raise ValueError("model has no `classifier` head; build it with pooled_text_classifier") from None


def train_head_only(model) -> Model:
    """Freeze everything but the head: the baseline that trains the fewest parameters."""
    head = _head(model)
    unfreeze(model)
    for layer in model.layers:
        layer.trainable = layer is head
    return model


def _is_bias(variable) -> bool:
    return variable.path.rsplit("/", 1)[-1] in ("bias", "beta")  # LayerNormalization's bias is called beta


def train_biases(model) -> Model:
    """BitFit: freeze every weight matrix, train only the bias vectors (LayerNorm's included) and the head."""
    head = _head(model)
    unfreeze(model)
    head_weights = {id(v) for v in head.weights}
    for variable in model.weights:
        is_bias = _is_bias(variable) and _POOLER not in variable.path.split("/")
        variable.trainable = is_bias or id(variable) in head_weights
    return model


def lora_targets(model, targets=peft_helpers.LORA_TARGETS) -> dict:
    """The layers LoRA would adapt, {path: layer}: the dense layers whose names are in `targets`, the unused pooler
    (`pooled_dense`, which the mean-pooling head never reads) left out."""
    backbone = text_backbone(model)
    found = {
        layer.path: layer
        for layer in flatten_layers(backbone, include_self=False)
        if layer.name in targets and hasattr(layer, "enable_lora") and layer.name != _POOLER
    }
    if not found:
        raise ValueError(f"no dense layer named {', '.join(targets)} in the model; pass other targets")
    return found


def _factor_sizes(layer) -> tuple[int, int]:
    """Sizes of the two sides of Keras' LoRA factorization: all kernel axes but the last, and the last."""
    shape = tuple(layer.kernel.shape)
    return int(np.prod(shape[:-1])), int(shape[-1])


def _record_lora_layers(backbone, layers, rank: int) -> None:
    """Note the adapted layers where keras-hub's `backbone.enable_lora` would, so that the backbone's own
    `save_lora_weights` / `load_lora_weights` work: indices among its layers with weights, and the rank."""
    adapted = {id(layer) for layer in layers}
    weighted = [layer for layer in flatten_layers(backbone, include_self=False) if layer.weights]
    backbone._lora_enabled_layers = [i for i, layer in enumerate(weighted) if id(layer) in adapted]
    backbone._lora_rank = rank


def add_lora(model, rank, alpha=None, targets=peft_helpers.LORA_TARGETS) -> Model:
    """LoRA (layer.enable_lora) of `rank` on the `targets` projections; encoder frozen, adapters and head trainable."""
    layers = lora_targets(model, targets)
    smallest = min(min(_factor_sizes(layer)) for layer in layers.values())
    rank = peft_helpers.check_rank(rank, smallest, f"the {', '.join(targets)} projections")
    head = _head(model)
    train_head_only(model)
    for layer in layers.values():
        layer.trainable = True
        layer.enable_lora(rank, lora_alpha=peft_helpers.lora_alpha(rank, alpha))
        if layer.bias is not None:
            layer.bias.trainable = False  # only the low-rank factors train, as peft's bias="none"
    assert head.trainable
    _record_lora_layers(text_backbone(model), layers.values(), rank)
    for name in ("train_function", "test_function", "predict_function"):  # traced before LoRA existed: retrace
        if hasattr(model, name):
            setattr(model, name, None)
    return model


def pointwise_convs(model) -> dict:
    """The 1x1 convolutions of an image model, {path: layer}: a linear layer applied at every pixel (depthwise
    convolutions, a layer class without LoRA, left out)."""
    found = {
        layer.path: layer
        for layer in flatten_layers(model, include_self=False)
        if isinstance(layer, keras.layers.Conv2D) and tuple(layer.kernel_size) == (1, 1) and layer.groups == 1
    }
    if not found:
        raise ValueError("the model has no 1x1 convolution to adapt")
    return found


def add_conv_lora(model, rank, alpha=None) -> Model:
    """LoRA (Conv2D.enable_lora) of `rank` on every 1x1 convolution of an `add_head` image model; the backbone
    frozen (BatchNorm in inference mode), adapters and the head trainable."""
    layers = pointwise_convs(model)
    smallest = min(min(_factor_sizes(layer)) for layer in layers.values())
    rank = peft_helpers.check_rank(rank, smallest, "the 1x1 convolutions")
    head = model.layers[-1]
    unfreeze(model)
    for layer in model.layers:  # the backbone frozen as a whole (BatchNorm in inference mode), then the 1x1 convs
        layer.trainable = layer is head
    for layer in layers.values():
        layer.trainable = True
        layer.enable_lora(rank, lora_alpha=peft_helpers.lora_alpha(rank, alpha))
        if layer.bias is not None:
            layer.bias.trainable = False
    return model


def merge_lora(model) -> Model:
    """A plain model whose weights absorb the LoRA updates, W + (alpha/r) B A: same outputs, no adapter layers."""
    if not any(getattr(layer, "lora_enabled", False) for layer in flatten_layers(model)):
        raise ValueError("model has no LoRA adapters to merge; pass the model that add_lora returned")
    merged = pooled_text_classifier(int(model.outputs[0].shape[-1]), model.get_layer("dropout").rate)
    pairs = list(zip(flatten_layers(model), flatten_layers(merged), strict=True))
    for source, target in pairs:
        store = {}
        source.save_own_variables(store)  # a LoRA layer saves its merged kernel W + (alpha/r) A B
        if store:
            target.load_own_variables(store)
    return merged


def save_adapter(model, path) -> Path:
    """Write only the trainable weights (adapters, biases, head) to a new safetensors file; returns its path."""
    from safetensors.numpy import save_file

    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists: save_adapter never overwrites a file; choose a new path or delete it")
    tensors = {f"{i:04d}:{v.path}": keras.ops.convert_to_numpy(v) for i, v in enumerate(model.trainable_weights)}
    if not tensors:
        raise ValueError("model has no trainable weights to save")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


def _same_variable(saved_path: str, path: str) -> bool:
    """One variable path is the other, or ends with it after a '/' (a model or backbone prefix left out)."""
    return saved_path == path or saved_path.endswith("/" + path) or path.endswith("/" + saved_path)


def _match_by_path(saved: dict, variables: list) -> dict:
    """{file key: variable}, matched by variable path (the file key is 'index:path'), one to one, never by order."""
    matches = {}
    for key in saved:
        saved_path = key.split(":", 1)[-1]
        found = [v for v in variables if _same_variable(saved_path, v.path)]
        if len(found) != 1:
            what = "no trainable variable" if not found else f"{len(found)} trainable variables"
            raise ValueError(
                f"{key}: {what} of the model has this path; "
                "build the model with the same method, rank and targets before load_adapter"
            )
        matches[key] = found[0]
    if len({id(v) for v in matches.values()}) != len(matches):
        raise ValueError("two tensors of the file match the same variable; the file was not written by save_adapter")
    return matches


def load_adapter(model, path) -> Model:
    """Load a `save_adapter` file into a model built the same way (safetensors: tensors only, no pickled code).

    Each tensor goes to the trainable variable with the same path (a leading model prefix may differ), never by
    position: query and value factors have the same shapes, so an order mismatch would otherwise load silently."""
    from safetensors.numpy import load_file

    saved = load_file(str(path))
    variables = model.trainable_weights
    if len(saved) != len(variables):
        raise ValueError(
            f"{path} holds {len(saved)} tensors, the model trains {len(variables)}; "
            "build the model with the same method, rank and targets before load_adapter"
        )
    matches = _match_by_path(saved, variables)
    for key, variable in matches.items():
        if tuple(saved[key].shape) != tuple(variable.shape):
            raise ValueError(f"{key}: file shape {saved[key].shape}, model shape {tuple(variable.shape)}")
    for key, variable in matches.items():
        variable.assign(saved[key])
    return model

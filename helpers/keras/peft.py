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
    """The layers LoRA would adapt, {path: layer}: the attention projections whose names are in `targets`."""
    backbone = text_backbone(model)
    found = {
        layer.path: layer
        for layer in flatten_layers(backbone, include_self=False)
        if layer.name in targets and hasattr(layer, "enable_lora")
    }
    if not found:
        raise ValueError(f"no dense layer named {', '.join(targets)} in the model; pass other targets")
    return found


def _factor_sizes(layer) -> tuple[int, int]:
    """Sizes of the two sides of Keras' LoRA factorization: all kernel axes but the last, and the last."""
    shape = tuple(layer.kernel.shape)
    return int(np.prod(shape[:-1])), int(shape[-1])


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
    for name in ("train_function", "test_function", "predict_function"):  # traced before LoRA existed: retrace
        if hasattr(model, name):
            setattr(model, name, None)
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


def load_adapter(model, path) -> Model:
    """Load a `save_adapter` file into a model built the same way (safetensors: tensors only, no pickled code)."""
    from safetensors.numpy import load_file

    saved = load_file(str(path))
    variables = model.trainable_weights
    if len(saved) != len(variables):
        raise ValueError(
            f"{path} holds {len(saved)} tensors, the model trains {len(variables)}; "
            "build the model with the same method, rank and targets before load_adapter"
        )
    for key, variable in zip(sorted(saved), variables, strict=True):
        if tuple(saved[key].shape) != tuple(variable.shape):
            raise ValueError(f"{key}: file shape {saved[key].shape}, model shape {tuple(variable.shape)}")
        variable.assign(saved[key])
    return model

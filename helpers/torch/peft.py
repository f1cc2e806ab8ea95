"""PyTorch: parameter-efficient fine-tuning (BitFit, LoRA) (chapter 14). Mirrors `helpers.keras.peft`.

The classifier here mean-pools MiniLM's token vectors (the attention mask skips padding) instead of reading the
pooled [CLS] vector: the MiniLM checkpoint holds pooler weights, but sentence-transformers never trained them (its
objective reads the mean; the pooler's bias is all zeros), so a frozen encoder gives a poor [CLS] feature there.
LoRA comes from `peft`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from helpers import checks
from helpers import peft as peft_helpers
from helpers.torch.models import Model, freeze
from helpers.torch.text_classification import text_encoder

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


class _MeanPooledClassifier(nn.Module):
    """MiniLM, the masked mean of its last layer's token vectors, dropout and a linear head (`classifier`)."""

    def __init__(self, encoder: nn.Module, num_classes: int, dropout: float):
        super().__init__()
        self.bert = encoder
        self.config = encoder.config
        self.config.num_labels = num_classes
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(encoder.config.hidden_size, num_classes)
        nn.init.trunc_normal_(self.classifier.weight, std=0.02)  # BERT's initialisation, as keras uses
        nn.init.zeros_(self.classifier.bias)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, **kwargs):
        from transformers.modeling_outputs import SequenceClassifierOutput

        hidden = self.bert(
            input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return SequenceClassifierOutput(logits=self.classifier(self.dropout(mean)))


def pooled_text_classifier(num_classes, dropout=0.1) -> Model:
    """MiniLM with a new linear head on the masked mean of its token vectors; all trainable but the unused pooler."""
    num_classes = checks.classes(num_classes)
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout is a probability in [0, 1), got {dropout!r}")
    model = _MeanPooledClassifier(text_encoder().train(), num_classes, float(dropout))
    for p in model.bert.pooler.parameters():  # the [CLS] pooler feeds nothing here: frozen, as in Keras
        p.requires_grad_(False)
    return model


def _head(model: Model) -> nn.Module:
    if not isinstance(getattr(model, "classifier", None), nn.Module):
        raise ValueError("model has no `classifier` head; build it with pooled_text_classifier")
    return model.classifier


def train_head_only(model) -> Model:
    """Freeze everything but the head: the baseline that trains the fewest parameters."""
    head = _head(model)
    freeze(model)
    for p in head.parameters():
        p.requires_grad_(True)
    return model


def train_biases(model) -> Model:
    """BitFit: freeze every weight matrix, train only the bias vectors (LayerNorm's included) and the head."""
    head = _head(model)
    freeze(model)
    for name, p in model.named_parameters():
        if name.endswith("bias") and ".pooler." not in name:
            p.requires_grad_(True)
    for p in head.parameters():
        p.requires_grad_(True)
    return model


def lora_targets(model, targets=peft_helpers.LORA_TARGETS) -> dict:
    """The layers LoRA would adapt, {path: layer}: the linear layers whose names are in `targets`, the unused pooler
    (`bert.pooler.dense`, which the mean-pooling head never reads) left out."""
    found = {
        name: module
        for name, module in model.named_modules()
        if name.rsplit(".", 1)[-1] in targets and hasattr(module, "in_features") and "pooler" not in name.split(".")
    }
    if not found:
        raise ValueError(f"no linear layer named {', '.join(targets)} in the model; pass other targets")
    return found


def add_lora(model, rank, alpha=None, targets=peft_helpers.LORA_TARGETS) -> Model:
    """LoRA (peft) of `rank` on the `targets` projections; the encoder frozen, adapters and head trainable."""
    import peft

    layers = lora_targets(model, targets)
    smallest = min(min(layer.in_features, layer.out_features) for layer in layers.values())
    rank = peft_helpers.check_rank(rank, smallest, f"the {', '.join(targets)} projections")
    _head(model)
    config = peft.LoraConfig(
        r=rank,
        lora_alpha=peft_helpers.lora_alpha(rank, alpha),
        lora_dropout=0.0,
        target_modules=list(layers),  # full paths: a bare "dense" would also match the pooler
        bias="none",
        modules_to_save=["classifier"],
    )
    return peft.get_peft_model(model, config)


def pointwise_convs(model) -> dict:
    """The 1x1 convolutions of an image model, {path: layer}: a linear layer applied at every pixel (depthwise
    convolutions, with groups > 1, left out)."""
    found = {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1) and module.groups == 1
    }
    if not found:
        raise ValueError("the model has no 1x1 convolution to adapt")
    return found


def add_conv_lora(model, rank, alpha=None) -> Model:
    """LoRA (peft) of `rank` on every 1x1 convolution of an `add_head` image model; the backbone frozen (its
    BatchNorm statistics too), adapters and `head` trainable."""
    import peft

    layers = pointwise_convs(model)
    smallest = min(min(layer.in_channels, layer.out_channels) for layer in layers.values())
    rank = peft_helpers.check_rank(rank, smallest, "the 1x1 convolutions")
    if not isinstance(getattr(model, "head", None), nn.Module):
        raise ValueError("model has no `head`; build it with add_head(backbone, head)")
    config = peft.LoraConfig(
        r=rank,
        lora_alpha=peft_helpers.lora_alpha(rank, alpha),
        lora_dropout=0.0,
        target_modules=list(layers),
        bias="none",
        modules_to_save=["head"],
    )
    return peft.get_peft_model(model, config)


def merge_lora(model) -> Model:
    """A plain model whose weights absorb the LoRA updates, W + (alpha/r) B A: same outputs, no adapter layers."""
    if not hasattr(model, "merge_and_unload"):
        raise ValueError("model has no LoRA adapters to merge; pass the model that add_lora returned")
    return model.merge_and_unload()


def save_adapter(model, path) -> Path:
    """Write only the trainable weights (adapters, biases, head) to a new safetensors file; returns its path."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists: save_adapter never overwrites a file; choose a new path or delete it")
    tensors = {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}
    if not tensors:
        raise ValueError("model has no trainable weights to save")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


def load_adapter(model, path) -> Model:
    """Load a `save_adapter` file into a model built the same way (safetensors: tensors only, no pickled code)."""
    from safetensors.torch import load_file

    saved = load_file(str(path))
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if set(saved) != set(params):
        raise ValueError(
            f"{path} holds {len(saved)} tensors, the model trains {len(params)} that differ in name; "
            "build the model with the same method, rank and targets before load_adapter"
        )
    with torch.no_grad():
        for name, p in params.items():
            if saved[name].shape != p.shape:
                raise ValueError(f"{name}: file shape {tuple(saved[name].shape)}, model shape {tuple(p.shape)}")
            p.copy_(saved[name])
    return model

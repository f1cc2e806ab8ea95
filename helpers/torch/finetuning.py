"""Fine-tuning strategies (PyTorch): partial unfreezing, frozen BatchNorm, discriminative learning rates and
copying blocks between networks (chapters 03-04)."""

from __future__ import annotations

from torch import nn

from helpers import checks, strategies
from helpers.torch.models import blocks, freeze, unfreeze

__all__ = [
    "freeze_batchnorm",
    "unfreeze_top",
    "block_learning_rates",
    "copy_blocks",
]


def freeze_batchnorm(model):
    """Freeze every BatchNorm layer: scale and shift stop training, and `fit` normalises with the stored statistics."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            freeze(module)
    return model


def unfreeze_top(model, num_blocks):
    """Train the top `num_blocks` feature blocks and everything above them (the head); freeze the blocks below."""
    found = blocks(model)
    num_blocks = strategies.check_num_blocks(num_blocks, len(found))
    unfreeze(model)
    for block in found[: len(found) - num_blocks]:
        freeze(block)
    return model


def block_learning_rates(model, lr, block_lr_decay) -> list[float]:
    """The rate of each feature block, input to output, under fit(..., lr=lr, block_lr_decay=...); the head gets lr."""
    checks.positive(lr=lr)
    return [lr * factor for factor in strategies.block_factors(len(blocks(model)), block_lr_decay)]


def _param_groups(model: nn.Module, params: list, lr: float, block_lr_decay: float | None) -> list:
    """`params` unchanged, or with block_lr_decay one param group per feature block at its rate, the rest at lr."""
    if block_lr_decay is None:
        return params
    trainable, grouped, groups = {id(p) for p in params}, set(), []
    for block, rate in zip(blocks(model), block_learning_rates(model, lr, block_lr_decay)):
        members = [p for p in block.parameters() if id(p) in trainable]
        grouped.update(id(p) for p in members)
        groups += [{"params": members, "lr": rate}] if members else []
    rest = [p for p in params if id(p) not in grouped]
    return ([{"params": rest, "lr": lr}] if rest else []) + groups


def copy_blocks(source, target, num_blocks):
    """Copy the first `num_blocks` feature blocks (weights and BatchNorm statistics) of `source` into `target`."""
    pairs = list(zip(blocks(source), blocks(target)))
    num_blocks = strategies.check_num_blocks(num_blocks, len(pairs))
    for i, (a, b) in enumerate(pairs[:num_blocks]):
        shapes_a = [tuple(v.shape) for v in a.state_dict().values()]
        shapes_b = [tuple(v.shape) for v in b.state_dict().values()]
        if shapes_a != shapes_b:
            raise ValueError(f"block {i} differs between source and target: {shapes_a} vs {shapes_b}")
        b.load_state_dict(a.state_dict())
    return target

"""Fine-tuning strategies (PyTorch): partial unfreezing, frozen BatchNorm, discriminative learning rates and
copying blocks between networks (chapters 03-04).
`fit(..., block_lr_decay=)` builds its param groups in `helpers.torch.core`."""

from __future__ import annotations

from torch import nn

from helpers import checks, finetuning_strategies, tuning
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
    num_blocks = finetuning_strategies.check_num_blocks(num_blocks, len(found))
    unfreeze(model)
    for block in found[: len(found) - num_blocks]:
        freeze(block)
    return model


def block_learning_rates(model, lr, block_lr_decay) -> list[float]:
    """The rate of each feature block, input to output, under fit(..., lr=lr, block_lr_decay=...); the head gets lr."""
    checks.positive(lr=lr)
    return [lr * factor for factor in tuning.block_factors(len(blocks(model)), block_lr_decay)]


def copy_blocks(source, target, num_blocks):
    """Copy the first `num_blocks` feature blocks (weights and BatchNorm statistics) of `source` into `target`."""
    pairs = list(zip(blocks(source), blocks(target)))
    num_blocks = finetuning_strategies.check_num_blocks(num_blocks, len(pairs))
    for i, (a, b) in enumerate(pairs[:num_blocks]):
        shapes_a = [tuple(v.shape) for v in a.state_dict().values()]
        shapes_b = [tuple(v.shape) for v in b.state_dict().values()]
        if shapes_a != shapes_b:
            raise ValueError(f"block {i} differs between source and target: {shapes_a} vs {shapes_b}")
        b.load_state_dict(a.state_dict())
    return target

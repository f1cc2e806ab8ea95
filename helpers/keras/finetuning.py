"""Fine-tuning strategies (Keras): partial unfreezing, frozen BatchNorm, discriminative learning rates and
copying blocks between networks (chapters 03-04)."""

from __future__ import annotations

import keras

from helpers import checks, strategies
from helpers.keras.mobilenet_port import _layers
from helpers.keras.models import blocks, freeze, unfreeze

__all__ = [
    "freeze_batchnorm",
    "unfreeze_top",
    "block_learning_rates",
    "copy_blocks",
]


def freeze_batchnorm(model):
    """Freeze every BatchNorm layer: scale and shift stop training, and `fit` normalises with the stored statistics."""
    for layer in _layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            freeze(layer)
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


def copy_blocks(source, target, num_blocks):
    """Copy the first `num_blocks` feature blocks (weights and BatchNorm statistics) of `source` into `target`."""
    pairs = list(zip(blocks(source), blocks(target)))
    num_blocks = strategies.check_num_blocks(num_blocks, len(pairs))
    for i, (a, b) in enumerate(pairs[:num_blocks]):
        weights = a.get_weights()
        shapes_a, shapes_b = [w.shape for w in weights], [tuple(w.shape) for w in b.weights]
        if shapes_a != shapes_b:
            raise ValueError(f"block {i} differs between source and target: {shapes_a} vs {shapes_b}")
        b.set_weights(weights)
    return target

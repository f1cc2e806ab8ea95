"""Every use of Keras' and TensorFlow's private API in the book, in one place (a base layer, Keras only).

Keras 3 has no public way to list a model's layers recursively, to give each variable its own learning rate, or to
switch TensorFlow's op determinism off again. The helpers need all three, so they go through the functions here and
nowhere else (tests/test_imports.py rejects a private import across modules, and tests/test_frameworks.py checks
each private name below against the installed versions; it names the Keras version they were checked on):
- `Layer._flatten_layers` (flatten_layers);
- `Optimizer._var_key`, `Optimizer._use_weight_decay` and the overridable `update_step`/`_apply_weight_decay`,
  in an optimizer subclass built at run time (with_block_rates);
- `tensorflow.python.framework.config.disable_op_determinism` and `is_op_determinism_enabled` (set_op_determinism,
  op_determinism_enabled); `tf.config.experimental.enable_op_determinism` is public, its inverse is not.
"""

from __future__ import annotations

import keras

__all__: list[str] = []

CHECKED_KERAS = "3.15.1"  # the Keras version these private names were last checked on (tests/test_frameworks.py)


def flatten_layers(model, include_self: bool = True, recursive: bool = True) -> list:
    """Every layer of `model`, nested models entered when `recursive` (Keras' private `_flatten_layers`)."""
    return list(model._flatten_layers(include_self=include_self, recursive=recursive))


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


def with_block_rates(optimizer, factors: list[tuple[list, float]]):
    """A copy of `optimizer` in which each variable of a (variables, factor) pair steps at the optimizer's rate
    times `factor` (weight decay too); every other variable steps at the rate itself."""
    base = type(optimizer)
    cls = _BLOCK_RATE_CLASSES.setdefault(base, type(f"BlockRate{base.__name__}", (_BlockRates, base), {}))
    wrapped = cls.from_config(optimizer.get_config())
    by_key = {wrapped._var_key(v): factor for variables, factor in factors for v in variables}
    object.__setattr__(wrapped, "_block_factors", by_key)  # a plain dict, kept out of Keras' variable tracking
    return wrapped


def set_op_determinism(enabled: bool) -> None:
    """Switch TensorFlow's deterministic ops on or off (only `enable_op_determinism` is public)."""
    from tensorflow.python.framework import config as tf_config

    (tf_config.enable_op_determinism if enabled else tf_config.disable_op_determinism)()


def op_determinism_enabled() -> bool:
    """Whether TensorFlow's deterministic ops are on."""
    from tensorflow.python.framework import config as tf_config

    return bool(tf_config.is_op_determinism_enabled())

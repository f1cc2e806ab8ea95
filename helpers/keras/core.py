"""The Keras wing's core, a base layer: graph compilation, input and label checks, precision, and per-block
learning rates. `training` builds `fit` on it and the chapter modules use it; it imports no chapter module. Nothing
here is part of the book's API (`__all__` is empty): a notebook calls `book.fit`, which uses these.
`helpers.torch.core` holds the same for PyTorch; the private Keras API these need is in `helpers.keras.internals`."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from helpers import checks, config, tuning
from helpers.keras.internals import flatten_layers, with_block_rates
from helpers.keras.models import blocks, device

__all__: list[str] = []

POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def bfloat16_supported() -> bool:
    """bfloat16 arithmetic on the GPU: NVIDIA compute capability 8.0 (Ampere) or newer."""
    gpus = tf.config.list_physical_devices("GPU")
    details = tf.config.experimental.get_device_details(gpus[0]) if gpus else {}
    return tuple(details.get("compute_capability", (0, 0))) >= (8, 0)


def resolve_precision(precision=None) -> str:
    """`fit`'s `precision=` for this device (tuning.choose_precision): None is float32; one ValueError when the
    precision cannot run here."""
    return tuning.choose_precision(precision, device(), bfloat16_supported())


def precision_options(precision, channels_last, compile) -> tuple[str, bool, bool | str]:
    """`fit`'s speed options resolved: (precision, channels_last, jit_compile). None is off on every device, as in
    PyTorch: float32 and no XLA (not Keras' own 'auto', which picks XLA on a GPU). Keras images are NHWC already,
    so channels_last is checked and has nothing to change."""
    name = resolve_precision(precision)
    channels_last = tuning.check_flag("channels_last", channels_last)
    compile = tuning.check_flag("compile", compile)
    return name, True if channels_last is None else channels_last, bool(compile)


def use_precision(model, name: str):
    """Give every layer of `model` the dtype policy of precision `name` (variables stay float32, the
    computation runs in `name`); returns a function that puts the old policies back."""
    layers = flatten_layers(model)
    old = [layer.dtype_policy for layer in layers]
    if name != "float32":
        for layer in layers:
            layer.dtype_policy = POLICIES[name]

    def restore():
        if name != "float32":
            for layer, policy in zip(layers, old):
                layer.dtype_policy = policy
            model.train_function = model.test_function = model.predict_function = None  # traced in `name`

    return restore


def precision_optimizer(optimizer, name: str):
    """float16 gradients underflow: scale the loss up before backward and the gradients down after."""
    return keras.optimizers.LossScaleOptimizer(optimizer) if name == "float16" else optimizer


def block_rates(optimizer, model, block_lr_decay):
    """`optimizer` unchanged, or with block_lr_decay a copy whose feature blocks step at their own rates
    (tuning.block_factors), as PyTorch's param groups do."""
    if block_lr_decay is None:
        return optimizer
    found = blocks(model)
    factors = tuning.block_factors(len(found), block_lr_decay)
    return with_block_rates(optimizer, [(block.trainable_weights, f) for block, f in zip(found, factors)])


def compiled(step, **options):
    """A training step as a TensorFlow graph (`tf.function(step, **options)`), or eager in profiles that say so
    (config.Profile.keras_eager). Shared by the hand-written training loops of the chapter modules."""
    return step if config.profile().keras_eager else tf.function(step, **options)


def input_shape(model) -> tuple | None:
    """The model's input shape without the batch axis, e.g. (None, None, 3), or None when it has no single input."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    return tuple(inputs[0].shape[1:]) if inputs and len(inputs) == 1 else None


def num_outputs(model, x: np.ndarray) -> int:
    """The model's real output size: its symbolic output, or one forward pass on one example."""
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        outputs = None
    if outputs and len(outputs) == 1 and outputs[0].shape[-1] is not None:
        return int(outputs[0].shape[-1])
    return int(keras.ops.shape(model(x[:1], training=False))[-1])


def check_data(model, data, what: str = "data") -> tuple[np.ndarray, np.ndarray]:
    """Validate an (inputs, labels) pair against the model's input layout and its real output size."""
    x, y = checks.pair(data, what)
    x = checks.inputs(x, input_shape(model))
    return x, checks.labels(y, len(x), num_outputs(model, x))

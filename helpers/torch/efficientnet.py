"""EfficientNet-Lite0 in PyTorch, for the backbone table of `helpers.torch.models` (chapter 17 teaches it).

It comes from the pinned `efficientnet_lite_pytorch` package (`EfficientNet.from_name`); its modules are regrouped
into 18 feature blocks (stem, 16 MBConv blocks, head) so that `blocks`, freezing and the rest of the book work on it
as on MobileNetV2. Two changes to the package's own forward pass, both shared with the Keras port
(`helpers.keras.efficientnet_port`): the stem first rescales ImageNet-normalised input to [-1, 1], and no
drop-connect (stochastic depth) runs in training. Its own module so that `models` can build it without importing
chapter 17's measurements (which import `models`).
"""

from __future__ import annotations

import collections

import torch
from torch import nn

from helpers import models


class SymmetricInput(nn.Module):
    """ImageNet-normalised images to [-1, 1] (the range EfficientNet-Lite was trained on), per channel."""

    def __init__(self):
        super().__init__()
        scale, offset = models.symmetric_scaling()
        self.register_buffer("scale", torch.from_numpy(scale).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("offset", torch.from_numpy(offset).view(1, 3, 1, 1), persistent=False)

    def forward(self, x):
        return x * self.scale + self.offset


def lite0_features() -> nn.Sequential:
    """EfficientNet-Lite0's convolutional part as 18 blocks; TensorFlow-style 'same' padding computed for any size."""
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0", image_size=None)  # None: padding from each input's size
    stem = [("scale", SymmetricInput()), ("conv", net._conv_stem), ("bn", net._bn0), ("act", nn.ReLU6())]
    head = [("conv", net._conv_head), ("bn", net._bn1), ("act", nn.ReLU6())]
    parts = [nn.Sequential(collections.OrderedDict(stem)), *net._blocks, nn.Sequential(collections.OrderedDict(head))]
    return nn.Sequential(*parts)


def lite0_classifier() -> nn.Module:
    """The whole EfficientNet-Lite0 ImageNet classifier (dropout 0.2, 1,000 classes), randomly initialised."""
    parts = [
        ("features", lite0_features()),
        ("pool", nn.AdaptiveAvgPool2d(1)),
        ("flatten", nn.Flatten(1)),
        ("classifier", nn.Sequential(nn.Dropout(0.2), nn.Linear(models.LITE0_FEATURES, 1000))),
    ]
    return nn.Sequential(collections.OrderedDict(parts))

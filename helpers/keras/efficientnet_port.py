"""A Keras 3 EfficientNet-Lite0 that mirrors the PyTorch package `efficientnet_lite_pytorch`, so its weights port
exactly (chapter 17).

EfficientNet-Lite is EfficientNet-B0 made friendly to mobile accelerators: ReLU6 instead of swish, no
squeeze-excitation, a stem and head that do not scale. The package pads every convolution TensorFlow-style
('same': the odd pixel at the bottom/right), BatchNorm epsilon is 1e-3 and momentum 0.99. The 18 feature blocks are
nested models `features_0` (stem) ... `features_17` (head), as in `helpers.torch.efficientnet`; `features_0` starts with
a rescaling of ImageNet-normalised images to [-1, 1]. Layers are named after the book's tensor names
(`helpers.models.lite0_tensor_name`): `features_3_depthwise_conv` holds `features.3._depthwise_conv.weight`.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from helpers import models
from helpers.keras import mobilenet_port

# (repeats, kernel, first stride, expansion, input channels, output channels): efficientnet_lite_builder's stages
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
BN = {"epsilon": 1e-3, "momentum": 0.99}  # the package's torch momentum 0.01
HEAD = models.LITE0_BLOCKS + 1


def _conv_bn(x, filters, kernel, stride, prefix, conv_name, bn_name, depthwise=False, activation=True):
    if depthwise:
        conv = layers.DepthwiseConv2D(kernel, stride, "same", use_bias=False, name=f"{prefix}_{conv_name}")
    else:
        conv = layers.Conv2D(filters, kernel, stride, "same", use_bias=False, name=f"{prefix}_{conv_name}")
    x = layers.BatchNormalization(**BN, name=f"{prefix}_{bn_name}")(conv(x))
    return layers.ReLU(6.0, name=f"{prefix}_{bn_name}_relu6")(x) if activation else x


def _stem() -> keras.Model:
    inputs = keras.Input((None, None, 3))
    scale, offset = models.symmetric_scaling()
    x = layers.Rescaling(scale.tolist(), offset.tolist(), name="features_0_scale")(inputs)
    outputs = _conv_bn(x, 32, 3, 2, "features_0", "conv", "bn")
    return keras.Model(inputs, outputs, name="features_0")


def _mbconv(index, kernel, stride, expansion, in_channels, out_channels) -> keras.Model:
    """One MBConv block (expand 1x1, depthwise kxk, project 1x1, residual when shapes allow), `features_{index}`."""
    prefix = f"features_{index}"
    inputs = keras.Input((None, None, in_channels))
    x = inputs
    if expansion != 1:
        x = _conv_bn(x, in_channels * expansion, 1, 1, prefix, "expand_conv", "bn0")
    x = _conv_bn(x, None, kernel, stride, prefix, "depthwise_conv", "bn1", depthwise=True)
    x = _conv_bn(x, out_channels, 1, 1, prefix, "project_conv", "bn2", activation=False)
    if stride == 1 and in_channels == out_channels:
        x = layers.Add(name=f"{prefix}_add")([inputs, x])
    return keras.Model(inputs, x, name=prefix)


def _head(in_channels: int) -> keras.Model:
    inputs = keras.Input((None, None, in_channels))
    outputs = _conv_bn(inputs, models.LITE0_FEATURES, 1, 1, f"features_{HEAD}", "conv", "bn")
    return keras.Model(inputs, outputs, name=f"features_{HEAD}")


def feature_blocks() -> list[keras.Model]:
    """The 18 blocks of EfficientNet-Lite0's feature extractor, `features_0` ... `features_17`."""
    found = [_stem()]
    for repeats, kernel, stride, expansion, in_channels, out_channels in STAGES:
        for r in range(repeats):
            channels = in_channels if r == 0 else out_channels
            found.append(_mbconv(len(found), kernel, stride if r == 0 else 1, expansion, channels, out_channels))
    return [*found, _head(STAGES[-1][-1])]


def backbone(name: str = "efficientnet_lite0_backbone") -> keras.Model:
    """Images (any size, 3 channels, ImageNet-normalised) in, 1,280 pooled features out."""
    inputs = keras.Input((None, None, 3), name="images")
    x = inputs
    for block in feature_blocks():
        x = block(x)
    return keras.Model(inputs, layers.GlobalAveragePooling2D(name="pool")(x), name=name)


def classifier(num_classes: int = 1000) -> keras.Model:
    """The whole network: backbone, dropout 0.2 and a dense layer, like the package's."""
    base = backbone()
    x = layers.Dropout(0.2, name="classifier_0")(base.output)
    outputs = layers.Dense(num_classes, name="classifier_1")(x)
    return keras.Model(base.input, outputs, name="efficientnet_lite0")


def tensor_key(layer_name: str) -> str:
    """The book's tensor name (without `.weight`) a layer reads: `features_3_bn1` -> `features.3._bn1`."""
    index, _, part = layer_name.removeprefix("features_").partition("_")
    if layer_name.startswith("classifier_"):
        return layer_name.replace("_", ".")
    return f"features.{index}.{part}" if int(index) in (0, HEAD) else f"features.{index}._{part}"


def load_torch_state(model: keras.Model, state: dict[str, np.ndarray]) -> int:
    """Copy the package's state dict (NumPy arrays, its own tensor names) into the model; returns tensors used."""
    state = {models.lite0_tensor_name(k): v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    return mobilenet_port.load_torch_state(model, state, key=tensor_key)

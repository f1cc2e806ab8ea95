"""A Keras 3 MobileNetV2 that mirrors torchvision's layer for layer, so its weights port exactly.

`keras.applications.MobileNetV2` pads stride-2 convolutions asymmetrically ('same'), while
torchvision pads symmetrically; BatchNorm epsilon is 1e-3 there and 1e-5 here. Layers are
named after torchvision's state-dict keys with '.' replaced by '_' (`features_3_conv_1_0`),
and every torchvision block `features[i]` is a nested Keras model `features_i`.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

# (expansion t, output channels c, repeats n, first stride s), as in the paper and torchvision
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9  # torch momentum 0.1


def _he_fan_out(channels_per_filter: int = 1):
    """torchvision's random initialisation of a convolution, kaiming_normal_(mode='fan_out'): std sqrt(2 / fan_out)
    with torch's fan_out = output channels * kernel area. Keras counts a depthwise kernel's fan_out without its
    channels, so for one the scale is divided by them (`channels_per_filter`)."""
    return keras.initializers.VarianceScaling(2.0 / channels_per_filter, "fan_out", "untruncated_normal")


def _conv_bn(x, filters, kernel, stride, name, depthwise=False, activation=True):
    """Conv (or depthwise conv) + BatchNorm (+ ReLU6), padded the way torchvision pads."""
    if stride == 2:
        x = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    if depthwise:
        init = _he_fan_out(x.shape[-1])
        conv = layers.DepthwiseConv2D(
            kernel, stride, padding, use_bias=False, depthwise_initializer=init, name=f"{name}_0"
        )
    else:
        init = _he_fan_out()
        conv = layers.Conv2D(
            filters, kernel, stride, padding, use_bias=False, kernel_initializer=init, name=f"{name}_0"
        )
    x = conv(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_1")(x)
    return layers.ReLU(6.0, name=f"{name}_2")(x) if activation else x


def _inverted_residual(in_channels, out_channels, stride, expansion, index):
    """torchvision's InvertedResidual as a nested functional model named `features_{index}`."""
    name = f"features_{index}_conv"
    inputs = keras.Input((None, None, in_channels))
    x, part = inputs, 0
    if expansion != 1:
        x = _conv_bn(x, in_channels * expansion, 1, 1, f"{name}_{part}")
        part += 1
    x = _conv_bn(x, None, 3, stride, f"{name}_{part}", depthwise=True)
    x = layers.Conv2D(out_channels, 1, use_bias=False, kernel_initializer=_he_fan_out(), name=f"{name}_{part + 1}")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_{part + 2}")(x)
    if stride == 1 and in_channels == out_channels:
        x = layers.Add(name=f"features_{index}_add")([inputs, x])
    return keras.Model(inputs, x, name=f"features_{index}")


def _stem_or_last(in_channels, out_channels, kernel, stride, index):
    inputs = keras.Input((None, None, in_channels))
    outputs = _conv_bn(inputs, out_channels, kernel, stride, f"features_{index}")
    return keras.Model(inputs, outputs, name=f"features_{index}")


def feature_blocks() -> list[keras.Model]:
    """The 19 blocks of MobileNetV2's feature extractor, `features_0` ... `features_18`."""
    found = [_stem_or_last(3, 32, 3, 2, 0)]
    channels = 32
    for expansion, out_channels, repeats, first_stride in SETTINGS:
        for r in range(repeats):
            stride = first_stride if r == 0 else 1
            found.append(_inverted_residual(channels, out_channels, stride, expansion, len(found)))
            channels = out_channels
    found.append(_stem_or_last(channels, 1280, 1, 1, len(found)))
    return found


def backbone(name: str = "mobilenet_v2_backbone") -> keras.Model:
    """Images (any size, 3 channels, ImageNet-normalised) in, 1,280 pooled features out."""
    inputs = keras.Input((None, None, 3), name="images")
    x = inputs
    for block in feature_blocks():
        x = block(x)
    outputs = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, outputs, name=name)


def classifier(num_classes: int = 1000) -> keras.Model:
    """The whole network: backbone, dropout 0.2 and a dense layer, like torchvision's."""
    base = backbone()
    x = layers.Dropout(0.2, name="classifier_0")(base.output)
    init = keras.initializers.RandomNormal(stddev=0.01)  # torchvision's, like the convolutions' above
    outputs = layers.Dense(num_classes, kernel_initializer=init, name="classifier_1")(x)
    return keras.Model(base.input, outputs, name="mobilenet_v2")


def _torch_key(layer_name: str) -> str:
    return layer_name.replace("_", ".")


def leaf_layers(model):
    """All leaf layers, entering nested models."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from leaf_layers(layer)
        else:
            yield layer


WEIGHTED = (layers.Conv2D, layers.DepthwiseConv2D, layers.BatchNormalization, layers.Dense)


def load_torch_state(model: keras.Model, state: dict[str, np.ndarray], key=_torch_key) -> int:
    """Copy a PyTorch state dict (NumPy arrays) into the model; returns the number of tensors used.

    `key` maps a Keras layer name to the tensor-name prefix in `state` (torchvision's names by default; the
    EfficientNet-Lite0 port passes its own). Kernels are transposed from PyTorch's layout to Keras'.
    """
    used = 0
    for layer in leaf_layers(model):
        if not isinstance(layer, WEIGHTED):
            continue
        prefix = key(layer.name)
        if isinstance(layer, layers.DepthwiseConv2D):
            values = [state[f"{prefix}.weight"].transpose(2, 3, 0, 1)]
        elif isinstance(layer, layers.Conv2D):
            values = [state[f"{prefix}.weight"].transpose(2, 3, 1, 0)]
        elif isinstance(layer, layers.BatchNormalization):
            values = [state[f"{prefix}.{part}"] for part in ("weight", "bias", "running_mean", "running_var")]
        elif f"{prefix}.weight" in state:
            values = [state[f"{prefix}.weight"].T, state[f"{prefix}.bias"]]
        else:
            continue
        layer.set_weights(values)
        used += len(values)
    return used

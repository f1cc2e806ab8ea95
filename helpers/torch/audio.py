"""Audio (chapter 19), PyTorch: the pretrained speech-embedding model, frozen or fine-tuned, and small heads for spoken
words.

The model is Google's speech-embedding network (Apache-2.0) as shipped in ONNX by openWakeWord. `onnx2torch`
converts the graph into a trainable torch.fx GraphModule; `speech_embedding` regroups its convolutions into five
blocks (nn.Sequential), so that blocks can be frozen or split off like MobileNetV2's. Inputs are the log-mel windows
of `helpers.audio.model_input`, NHWC NumPy arrays (clips, 76, 32, 1), made NCHW by `fit`/`predict` as for images.
"""

from __future__ import annotations

import collections

import torch
from torch import nn

from helpers import audio, registry
from helpers.torch.models import Model

__all__ = ["speech_embedding", "split_embedding", "speech_classifier"]

EMBEDDING_BLOCKS = 5  # four blocks that each end in max pooling, then the last block with the 96-d projection


class ClippedLeakyReLU(nn.Module):
    """max(leaky_relu(x, slope), floor): the activation of the speech-embedding model (slope 0.2, floor -0.4)."""

    def __init__(self, slope: float, floor: float):
        super().__init__()
        self.slope, self.floor = float(slope), float(floor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp_min(nn.functional.leaky_relu(x, self.slope), self.floor)

    def extra_repr(self) -> str:
        return f"slope={self.slope:g}, floor={self.floor:g}"


class ToNHWC(nn.Module):
    """NCHW activations to NHWC, so that a split-off lower part's outputs read like images for `fit`/`predict`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1)


def _activation_floor(path) -> float:
    """The constant of the graph's Max nodes (the floor of the clipped leaky ReLU), read with the `onnx` package."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    floors = {float(constants[n.input[1]].item()) for n in graph.node if n.op_type == "Max"}
    if len(floors) != 1:
        raise ValueError(f"expected one activation floor in {path}, found {sorted(floors)}")
    return floors.pop()


def _is_max_pool(module: nn.Module) -> bool:
    """Whether an onnx2torch module is a max pooling as it converts one, every ONNX attribute kept (strides, pads,
    dilations, ceil_mode): an nn.MaxPool2d, or nn.Sequential(pad with -inf, nn.MaxPool2d) for uneven pads."""
    if isinstance(module, nn.MaxPool2d):
        return True
    parts = list(module.children()) if isinstance(module, nn.Sequential) else []
    return len(parts) == 2 and type(parts[0]).__name__ == "OnnxPadStatic" and isinstance(parts[1], nn.MaxPool2d)


def speech_embedding() -> Model:
    """Google's pretrained speech-embedding model: log-mel windows (clips, 76, 32, 1) in, 96 features out.

    Converted from the registry's ONNX file by onnx2torch; the converted layers (and their weights) are regrouped
    into five blocks and a flatten, nn.Sequential(block_1, ..., block_5, flatten). All parameters are trainable."""
    import onnx
    import onnx2torch

    path = registry.fetch("speech-embedding_model")
    return _regroup(onnx2torch.convert(onnx.load(str(path))), _activation_floor(path), path)


def _regroup(graph: nn.Module, floor: float, path="the ONNX file") -> Model:
    """onnx2torch's converted graph as nn.Sequential(block_1, ..., flatten): its convolutions and poolings as
    converted (weights and attributes kept), one ClippedLeakyReLU per activation; each pooling closes a block, up
    to EMBEDDING_BLOCKS blocks."""
    blocks, layers, slope = [], [], None
    for name, module in graph.named_children():
        if isinstance(module, nn.Conv2d):
            layers.append(module)
        elif isinstance(module, nn.LeakyReLU):
            slope = module.negative_slope
        elif type(module).__name__ == "OnnxMinMax":  # max(leaky_relu(x), floor)
            layers.append(ClippedLeakyReLU(slope, floor))
        elif _is_max_pool(module):
            layers.append(module)
            if len(blocks) < EMBEDDING_BLOCKS - 1:
                blocks.append(nn.Sequential(*layers))
                layers = []
        elif name != "initializers" and "Reshape" not in type(module).__name__:
            raise ValueError(f"unexpected layer {name} ({type(module).__name__}) in {path}")
    blocks.append(nn.Sequential(*layers))
    named = [(f"block_{i + 1}", block) for i, block in enumerate(blocks)]
    return nn.Sequential(collections.OrderedDict([*named, ("flatten", nn.Flatten())]))


def split_embedding(embedding: Model, trainable_blocks: int = 1) -> tuple[Model, Model]:
    """The embedding cut into a lower part (frozen: run it once and cache its outputs, NHWC) and an upper part of
    the last `trainable_blocks` blocks plus the flatten (trainable). Both share the embedding's parameters."""
    trainable_blocks = audio.check_trainable_blocks(trainable_blocks)
    children = list(embedding.children())
    if len(children) != EMBEDDING_BLOCKS + 1:
        raise ValueError("split_embedding takes the model from speech_embedding() (five blocks and a flatten)")
    cut = EMBEDDING_BLOCKS - trainable_blocks
    lower = nn.Sequential(*children[:cut], ToNHWC())
    upper = nn.Sequential(*children[cut:])
    for parameter in lower.parameters():
        parameter.requires_grad_(False)
    for parameter in upper.parameters():
        parameter.requires_grad_(True)
    return lower, upper


class Standardize(nn.Module):
    """(x - mean) / std with fixed statistics (buffers, never trained)."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def speech_classifier(embedding: Model, head: Model, mean, std) -> Model:
    """Log-mel windows in, class logits out: the embedding (or its upper part), the fixed standardisation of its
    96 features with the training set's `mean` and `std`, and the head trained on standardised features."""
    mean, std = audio.check_statistics(mean, std)
    parts = [("embedding", embedding), ("standardize", Standardize(mean, std)), ("head", head)]
    return nn.Sequential(collections.OrderedDict(parts))

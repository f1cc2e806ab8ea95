"""Networks (PyTorch): the backbone table, pretrained models, new heads, freezing, parameter counts, saving."""

from __future__ import annotations

import collections
import dataclasses
import platform
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

from helpers import checks, registry
from helpers.models import SMALL_CNN_BLOCKS, lite0_tensor_name
from helpers.torch import efficientnet

__all__ = [
    "device",
    "versions",
    "prepare_weights",
    "pretrained_model",
    "pretrained_backbone",
    "blocks",
    "feature_dim",
    "new_head",
    "add_head",
    "freeze",
    "unfreeze",
    "count_params",
    "small_cnn",
    "save_weights",
    "load_weights",
]

Model = nn.Module  # the framework's network type: annotations read alike in both halves
TAG = "book_backbone"  # attribute naming the BACKBONES entry of a network built here; `blocks` reads it


@dataclasses.dataclass(frozen=True)
class Backbone:
    """One architecture: how to build it, where its pretrained weights come from, where its feature blocks are."""

    backbone: Callable[[], nn.Module]  # images in, pooled features out; randomly initialised
    blocks: Callable[[nn.Module], list[nn.Module]]  # the feature blocks, input to output, of a network built here
    classifier: Callable[[], nn.Module] | None = None  # the whole ImageNet classifier, randomly initialised
    weights: str | None = None  # registry entry of the pretrained weights (a state dict of `classifier`)
    chain: Callable[[nn.Module], list[nn.Module]] | None = None  # a classifier as modules applied one after another
    instance_of: type | None = None  # networks of this class are recognised without a tag (built outside helpers)
    rename: Callable[[str], str] | None = None  # the weight file's tensor names -> this table's networks' names


def _pooled(features: nn.Module) -> Model:
    """Feature blocks, global average pooling and flattening: images in, a feature vector out."""
    parts = [("features", features), ("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten())]
    return nn.Sequential(collections.OrderedDict(parts))


def small_cnn_backbone(channels: int = 1) -> Model:
    """The small CNN of chapter 04 without its head (SMALL_CNN_BLOCKS)."""
    found, width_in = [], channels
    for width, pool in SMALL_CNN_BLOCKS:
        layers = [nn.Conv2d(width_in, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        found.append(nn.Sequential(*layers, *([nn.MaxPool2d(2)] if pool else [])))
        width_in = width
    return _pooled(nn.Sequential(*found))


def _mobilenet_chain(network: nn.Module) -> list[nn.Module]:
    """torchvision's MobileNetV2.forward written as a chain: blocks, pooling, flattening, classifier."""
    return [*network.features, nn.AdaptiveAvgPool2d(1), nn.Flatten(1), network.classifier]


BACKBONES = {
    "mobilenet_v2": Backbone(
        backbone=lambda: _pooled(torchvision.models.mobilenet_v2(weights=None).features),
        blocks=lambda network: list(network.features),
        classifier=lambda: torchvision.models.mobilenet_v2(weights=None),
        weights="mobilenet_v2-torch",
        chain=_mobilenet_chain,
        instance_of=torchvision.models.MobileNetV2,
    ),
    "efficientnet_lite0": Backbone(
        backbone=lambda: _pooled(efficientnet.lite0_features()),
        blocks=lambda network: list(network.features),
        classifier=efficientnet.lite0_classifier,
        weights="efficientnet_lite0-torch",
        rename=lite0_tensor_name,
    ),
    "small_cnn": Backbone(backbone=small_cnn_backbone, blocks=lambda network: list(network.features)),
}


def device() -> str:
    """'cuda' when a GPU is visible to PyTorch, else 'cpu'."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def versions() -> dict[str, str]:
    """Versions of Python, the framework and the libraries this module uses."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "device": device(),
    }


def _entry(name: str, pretrained: bool = False) -> Backbone:
    return checks.backbone(BACKBONES, name, pretrained)


def tagged(model: Model, name: str) -> Model:
    setattr(model, TAG, name)
    return model


def prepare_weights(name: str = "mobilenet_v2") -> Path:
    """The checksummed pretrained weights of a model (a state dict) in the book's cache, as a local path."""
    return registry.fetch(_entry(name, pretrained=True).weights)


def _load_pretrained(model: Model, name: str) -> Model:
    """Load the verified weight file (weights_only=True: tensors only, no code) into `model` or its backbone."""
    state = torch.load(prepare_weights(name), map_location="cpu", weights_only=True)
    if BACKBONES[name].rename is not None:
        state = {BACKBONES[name].rename(k): v for k, v in state.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise ValueError(f"the weights of {name!r} lack {len(missing)} tensors of this network, e.g. {missing[:3]}")
    model.load_state_dict({k: v for k, v in state.items() if k in own})
    return model


def pretrained_model(name: str = "mobilenet_v2") -> Model:
    """The whole ImageNet classifier (1,000 classes), in eval mode."""
    entry = _entry(name, pretrained=True)
    return tagged(_load_pretrained(entry.classifier(), name), name).eval()


def pretrained_backbone(name: str = "mobilenet_v2", weights: str | None = "imagenet") -> Model:
    """The network without its classifier: images in, pooled features out; weights 'imagenet' or None."""
    if weights not in ("imagenet", None):
        raise ValueError(f"weights must be 'imagenet' or None (random initialisation), got {weights!r}")
    backbone = _entry(name, pretrained=weights is not None).backbone()
    return tagged(_load_pretrained(backbone, name) if weights else backbone, name)


def tagged_parts(model: Model):
    """(module, BACKBONES entry) for every network built here inside `model`, outermost first."""
    for module in model.modules():
        name = getattr(module, TAG, None)
        if name in BACKBONES:
            yield module, BACKBONES[name]
            continue
        for entry in BACKBONES.values():
            if entry.instance_of is not None and isinstance(module, entry.instance_of):
                yield module, entry
                break


def blocks(model: Model) -> list:
    """The feature blocks of a network, backbone or backbone-plus-head, from input to output."""
    for module, entry in tagged_parts(model):
        return entry.blocks(module)
    raise ValueError(
        f"found no feature blocks in this {type(model).__name__}: pass a network built by pretrained_model, "
        f"pretrained_backbone or small_cnn (known architectures: {', '.join(BACKBONES)})"
    )


def feature_dim(backbone: Model) -> int:
    """Length of the feature vector the backbone produces (of the backbone inside a model with a head)."""
    convs = [m for m in blocks(backbone)[-1].modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


def new_head(num_features: int, num_classes: int, dropout: float = 0.0) -> Model:
    """A fresh classifier: dropout then one linear layer from features to class logits."""
    num_classes, num_features = checks.classes(num_classes), checks.count("num_features", num_features)
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be a rate in [0, 1), got {dropout!r}")
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(num_features, num_classes))


def add_head(backbone: Model, head: Model) -> Model:
    """Stack a head on a backbone: images in, class logits out."""
    return nn.Sequential(collections.OrderedDict([("backbone", backbone), ("head", head)]))


def freeze(model: Model) -> Model:
    """Stop training every parameter of `model`; its BatchNorm statistics stay fixed in `fit`."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def unfreeze(model: Model) -> Model:
    """Make every parameter of `model` trainable again."""
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model


def count_params(model: Model) -> dict[str, int]:
    """Numbers of trainable and total parameters."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": total}


def small_cnn(num_classes, channels=1) -> Model:
    """A small CNN for 28x28 images: conv-BatchNorm-ReLU(-max-pool) blocks, global average pooling, a linear head."""
    num_classes, channels = checks.classes(num_classes), checks.count("channels", channels)
    backbone = tagged(small_cnn_backbone(channels), "small_cnn")
    return add_head(backbone, new_head(SMALL_CNN_BLOCKS[-1][0], num_classes))


def save_weights(model, path, overwrite=False) -> Path:
    """Save the model's state dict; refuses to replace an existing file unless overwrite=True."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it or choose another path")
    torch.save(model.state_dict(), path)
    return path


def load_weights(model, path):
    """Load a state dict saved by save_weights (weights_only=True: no code runs from the file)."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model

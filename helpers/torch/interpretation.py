"""Looking inside a network (PyTorch): block activations, first-layer filters, splitting a network at a block,
Grad-CAM and per-block weights (chapters 01, 07-08)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from helpers import checks
from helpers.interpretation import grad_cam_maps, target_classes
from helpers.torch.core import as_tensor, input_shape
from helpers.torch.models import blocks, device, tagged_parts
from helpers.torch.training import predict

__all__ = [
    "block_outputs",
    "first_layer_filters",
    "split_model",
    "grad_cam",
    "block_weights",
]


def block_outputs(backbone, x, indices) -> list[np.ndarray]:
    """Activations of the chosen feature blocks for inputs x, as NHWC NumPy arrays (negative indices count back)."""
    found = blocks(backbone)
    chosen = [found[checks.index("block index", i, len(found))] for i in indices]
    captured = {k: [] for k in range(len(chosen))}  # one entry per batch that predict runs
    hooks = [b.register_forward_hook(lambda m, i, o, k=k: captured[k].append(o)) for k, b in enumerate(chosen)]
    try:
        predict(backbone, x)
    finally:
        for hook in hooks:
            hook.remove()
    return [torch.cat(captured[k]).permute(0, 2, 3, 1).cpu().numpy() for k in range(len(chosen))]


def first_layer_filters(backbone) -> np.ndarray:
    """The first convolution's kernels as (filters, height, width, channels)."""
    conv = next(m for m in blocks(backbone)[0].modules() if isinstance(m, nn.Conv2d))
    return conv.weight.detach().permute(0, 2, 3, 1).cpu().numpy()


def _chain(model: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    """The model as modules applied one after another (its feature blocks one by one), and its blocks."""
    found = blocks(model)
    ids = {id(b) for b in found}
    unrolls = {id(m): entry.chain for m, entry in tagged_parts(model) if entry.chain is not None}

    def expand(module):
        if id(module) in unrolls and not isinstance(module, nn.Sequential):
            return [part for child in unrolls[id(module)](module) for part in expand(child)]
        if id(module) not in ids and isinstance(module, nn.Sequential) and any(id(m) in ids for m in module.modules()):
            return [part for child in module for part in expand(child)]
        return [module]

    return expand(model), found


def _block_position(model: nn.Module, block_index: int) -> tuple[list[nn.Module], int]:
    """The model's chain of modules and the position of feature block `block_index` in it."""
    chain, found = _chain(model)
    block = found[checks.index("block_index", block_index, len(found))]
    return chain, next(i for i, m in enumerate(chain) if m is block)


class _ToNHWC(nn.Module):
    """Permute NCHW activations to NHWC, the layout of every array the helpers return."""

    def forward(self, x):
        return x.permute(0, 2, 3, 1)


def split_model(model, block_index):
    """(lower, upper): images to the input of block `block_index`, and that input to the outputs; weights shared."""
    chain, position = _block_position(model, block_index)
    return nn.Sequential(*chain[:position], _ToNHWC()), nn.Sequential(*chain[position:])


def grad_cam(model, x, class_index=None, block_index=-1) -> np.ndarray:
    """Grad-CAM maps (N, h, w) in [0, 1] at a block's output for `class_index` (default: each image's top class)."""
    chain, position = _block_position(model, block_index)
    x = checks.inputs(x, input_shape(model))
    dev = torch.device(device())
    model.to(dev).eval()
    with torch.enable_grad():
        activations = nn.Sequential(*chain[: position + 1])(as_tensor(x).to(dev)).detach()
        activations.requires_grad_(True)
        logits = nn.Sequential(*chain[position + 1 :])(activations)
        targets = target_classes(logits.detach().cpu().numpy(), class_index)
        score = logits.gather(1, torch.as_tensor(targets, device=dev)[:, None]).sum()
        (gradients,) = torch.autograd.grad(score, activations)
    as_nhwc = lambda t: t.detach().permute(0, 2, 3, 1).cpu().numpy()
    return grad_cam_maps(as_nhwc(activations), as_nhwc(gradients))


def block_weights(model) -> list[np.ndarray]:
    """Each feature block's parameters (not BatchNorm statistics) as one flat vector, from input to output."""
    return [torch.cat([p.detach().reshape(-1) for p in b.parameters()]).cpu().numpy() for b in blocks(model)]

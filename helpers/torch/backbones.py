"""Choosing a pretrained backbone (chapter 17), PyTorch: EfficientNet-Lite0 beside MobileNetV2, and the cost of each
backbone (time per image, peak memory of a training step).

EfficientNet-Lite0 itself is built in `helpers.torch.efficientnet` (the backbone table of `helpers.torch.models`
uses it); this module measures what each backbone costs.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from helpers import backbones, checks, fast_training
from helpers.torch.models import Model, device

__all__ = ["inference_seconds", "step_memory", "snapshot", "restore"]


def _batch(x: np.ndarray, dev: torch.device) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(dev)
    return tensor.permute(0, 3, 1, 2) if tensor.ndim == 4 else tensor


def _synchronise(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()  # GPU work is asynchronous: wait for it before reading the clock


def inference_seconds(model: Model, x, batch_size: int = 64, repeats: int = 3) -> float:
    """Seconds per image of a forward pass in eval mode over batches of `x` (median of `repeats` after a warm-up)."""
    batch_size, repeats = checks.count("batch_size", batch_size), checks.count("repeats", repeats)
    x = checks.inputs(x, None)
    dev = torch.device(device())
    model.to(dev).eval()
    batches = [_batch(x[i : i + batch_size], dev) for i in range(0, len(x), batch_size)]

    def run():
        with torch.inference_mode():
            for batch in batches:
                model(batch)
        _synchronise(dev)

    return fast_training.median_seconds(run, repeats=repeats, warmup=1) / len(x)


def step_memory(model: Model, train, batch_size: int = 32) -> float:
    """Peak memory (MB) of one training step (forward, cross-entropy, backward, Adam) on one batch, after a warm-up
    step. On a GPU: the peak of PyTorch's allocator; on a CPU: the rise of the process's peak resident memory
    (`helpers.backbones.peak_memory_growth`). The model's weights are restored afterwards."""
    batch_size = checks.count("batch_size", batch_size)
    x, y = checks.pair(train, "train")
    dev = torch.device(device())
    xb = _batch(checks.inputs(np.asarray(x[:batch_size]), None), dev)
    yb = torch.as_tensor(np.asarray(y[:batch_size]), dtype=torch.long, device=dev)
    saved = copy.deepcopy(model.state_dict())
    model.to(dev).train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step():
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(xb), yb).backward()
        opt.step()
        _synchronise(dev)

    try:
        step()  # warm-up: Adam's state and the allocator's first growth are not the step's working memory
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
            base = torch.cuda.memory_allocated(dev)
            step()
            return (torch.cuda.max_memory_allocated(dev) - base) / 2**20
        return backbones.peak_memory_growth(step)
    finally:
        model.load_state_dict(saved)


def snapshot(model: Model):
    """A copy of every weight and buffer of `model` (BatchNorm statistics included), for `restore`."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def restore(model: Model, saved) -> Model:
    """Put the weights and buffers of a `snapshot` back into `model`."""
    model.load_state_dict(saved)
    return model

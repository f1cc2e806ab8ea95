"""PyTorch: hyperparameter search (Optuna trials, pruning) (chapter 13). Mirrors `helpers.keras.hyperparameter_search`.

A trial fine-tunes the top `unfreeze` feature blocks of the ImageNet MobileNetV2 and a new head on features that
the frozen lower blocks computed once (`trial_features`): the space, the samplers, the pruners and the budget
live in `helpers.hyperparameter_search`, the same for both frameworks.
"""

from __future__ import annotations

import collections
import copy
import math

import numpy as np
import torch
from torch import nn

from helpers import checks, config, hyperparameter_search, tuning
from helpers.torch.models import Model, blocks, feature_dim, new_head

__all__ = ["trial_features", "top_model", "run_trial", "trial_accuracy"]


def _nchw(x: np.ndarray) -> torch.Tensor:
    """NHWC features (or flat vectors) to a float tensor, NCHW for feature maps."""
    tensor = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32)
    return tensor.permute(0, 3, 1, 2).contiguous() if tensor.ndim == 4 else tensor


@torch.no_grad()
def trial_features(
    backbone, images, max_unfreeze=hyperparameter_search.MAX_UNFREEZE, batch_size=256
) -> dict[int, np.ndarray]:
    """The frozen part's output once for every unfreeze depth k = 0..max_unfreeze: {k: input of the top k blocks}
    (NHWC float32 feature maps; k = 0 is the pooled feature vector), computed in inference mode."""
    parts = blocks(backbone)
    max_unfreeze = checks.up_to("max_unfreeze", max_unfreeze, len(parts) - 1, f" (the network has {len(parts)} blocks)")
    images = checks.inputs(images, (None, None, 3))
    backbone.eval()
    found = {k: [] for k in range(max_unfreeze + 1)}
    for begin in range(0, len(images), batch_size):
        x = _nchw(images[begin : begin + batch_size])
        for block in parts[: len(parts) - max_unfreeze]:
            x = block(x)
        for k in range(max_unfreeze, -1, -1):
            found[k].append((x.mean(dim=(2, 3)) if k == 0 else x.permute(0, 2, 3, 1)).numpy())
            if k:
                x = parts[len(parts) - k](x)
    return {k: np.concatenate(v) for k, v in found.items()}


def top_model(backbone, unfreeze, num_classes) -> Model:
    """Copies of the top `unfreeze` feature blocks of `backbone`, global average pooling and a new head: cached
    features of depth `unfreeze` in, logits out (unfreeze=0: the head alone, a linear probe)."""
    parts = blocks(backbone)
    unfreeze = checks.up_to("unfreeze", unfreeze, len(parts) - 1, f" (the network has {len(parts)} blocks)")
    head = new_head(feature_dim(backbone), num_classes)
    if unfreeze == 0:
        layers = [("head", head)]
    else:
        top = nn.Sequential(*[copy.deepcopy(block) for block in parts[len(parts) - unfreeze :]])
        layers = [("blocks", top), ("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()), ("head", head)]
    model = nn.Sequential(collections.OrderedDict(layers))
    model.unfreeze = unfreeze
    return model.requires_grad_(True)


def _data(pair, unfreeze: int, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    features, labels = checks.pair(pair, what)
    if not isinstance(features, dict) or unfreeze not in features:
        raise ValueError(f"{what} must be (trial_features(...), labels) with features of depth {unfreeze}")
    x = features[unfreeze]
    return _nchw(x), torch.as_tensor(checks.labels(labels, len(x), None), dtype=torch.long)


@torch.no_grad()
def _accuracy(model: Model, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    model.eval()
    hits = sum(
        (model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum().item()
        for i in range(0, len(y), batch_size)
    )
    return hits / len(y)


def run_trial(params, backbone, train, validation, seed=0, report=None, batch_size=64, max_epochs=None) -> dict:
    """Train one recipe of the search space (`hyperparameter_search.space`) on cached features; score it on validation.

    train, validation: (trial_features(...), labels). AdamW with the head's and the blocks' rates and decoupled
    weight decay; BatchNorm layers keep their ImageNet statistics. Each epoch is ceil(N / batch_size) batches in
    tuning.batch_order(N, batch_size, steps, seed); after each, report(epoch, validation_accuracy) if given (it may
    raise to stop the trial). max_epochs: the space's epoch limit (None: the profile's epochs). Returns
    {'val_accuracy' (last epoch), 'history', 'params' (completed with defaults), 'model'}.
    """
    space_ = hyperparameter_search.space(max_epochs if max_epochs is not None else config.profile().epochs)
    params, batch_size = hyperparameter_search.check_params(params, space_), checks.count("batch_size", batch_size)
    k = params["unfreeze"]
    x, y = _data(train, k, "train")
    val_x, val_y = _data(validation, k, "validation")
    torch.manual_seed(seed)
    model = top_model(backbone, k, int(max(y.max(), val_y.max())) + 1)
    groups = [{"params": list(model.head.parameters()), "lr": params["head_lr"]}]
    if k:
        groups.append({"params": list(model.blocks.parameters()), "lr": params["backbone_lr"]})
    opt = torch.optim.AdamW(groups, weight_decay=params["weight_decay"], eps=tuning.ADAM_EPSILON)
    steps = math.ceil(len(y) / batch_size)
    order = tuning.batch_order(len(y), min(batch_size, len(y)), params["epochs"] * steps, seed)
    history = []
    for epoch in range(params["epochs"]):
        model.eval()  # no dropout in the head; BatchNorm normalises with its stored statistics
        for batch in order[epoch * steps : (epoch + 1) * steps]:
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        history.append(_accuracy(model, val_x, val_y))
        if report is not None:
            report(epoch, history[-1])
    return {"val_accuracy": history[-1], "history": history, "params": params, "model": model}


def trial_accuracy(model, data) -> float:
    """Accuracy of a model from run_trial (or top_model) on (trial_features(...), labels)."""
    x, y = _data(data, model.unfreeze, "data")
    return _accuracy(model, x, y)

"""PyTorch half of the book's helper API: `from helpers import torch as book`.

Every public name here exists in `helpers.keras` with the same signature (a test holds
this). Images come in as NumPy NHWC arrays from `helpers.data`; they are moved to
NCHW tensors on the model's device only when a batch is needed.
"""

from __future__ import annotations

import collections
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn
from tqdm import tqdm

from helpers import registry, seed
from helpers.metrics import accuracy, softmax

__all__ = [
    "seed",
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
    "fit",
    "evaluate",
    "predict",
    "block_outputs",
    "first_layer_filters",
    "save_weights",
    "load_weights",
]

MODELS = {"mobilenet_v2": ("mobilenet_v2-torch", torchvision.models.mobilenet_v2)}
OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


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


def _model_entry(name: str):
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; known models: {', '.join(MODELS)}")
    return MODELS[name]


def prepare_weights(name: str = "mobilenet_v2") -> Path:
    """Put the checksummed ImageNet weights where torchvision looks, so `weights=...` works offline."""
    verified = registry.fetch(_model_entry(name)[0])
    target = Path(torch.hub.get_dir()) / "checkpoints" / verified.name
    if target.is_file() and registry.sha256_of(target) == registry.sha256_of(verified):
        return target
    if target.exists():
        registry._set_aside(target, "differs from the registered weights")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(verified.read_bytes())
    return target


def pretrained_model(name: str = "mobilenet_v2") -> nn.Module:
    """The whole ImageNet classifier (1,000 classes), in eval mode."""
    prepare_weights(name)
    return _model_entry(name)[1](weights="IMAGENET1K_V1").eval()


def pretrained_backbone(name: str = "mobilenet_v2", weights: str | None = "imagenet") -> nn.Module:
    """The network without its classifier: images in, pooled features out; weights 'imagenet' or None."""
    if weights not in ("imagenet", None):
        raise ValueError(f"weights must be 'imagenet' or None (random initialisation), got {weights!r}")
    network = pretrained_model(name) if weights else _model_entry(name)[1](weights=None)
    parts = [("features", network.features), ("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten())]
    return nn.Sequential(collections.OrderedDict(parts))


def blocks(model: nn.Module) -> list[nn.Module]:
    """The feature blocks of a network, backbone or backbone-plus-head, from input to output."""
    for module in model.modules():
        if isinstance(getattr(module, "features", None), nn.Sequential):
            return list(module.features)
    raise ValueError("model has no `features` blocks; pass a model from pretrained_model/pretrained_backbone")


def feature_dim(backbone: nn.Module) -> int:
    """Length of the feature vector the backbone produces."""
    convs = [m for m in blocks(backbone)[-1].modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


def new_head(num_features: int, num_classes: int, dropout: float = 0.0) -> nn.Module:
    """A fresh classifier: dropout then one linear layer from features to class logits."""
    _check_classes(num_classes)
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(num_features, num_classes))


def add_head(backbone: nn.Module, head: nn.Module) -> nn.Module:
    """Stack a head on a backbone: images in, class logits out."""
    return nn.Sequential(collections.OrderedDict([("backbone", backbone), ("head", head)]))


def freeze(model: nn.Module) -> nn.Module:
    """Stop training every parameter of `model`; its BatchNorm statistics stay fixed in `fit`."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def unfreeze(model: nn.Module) -> nn.Module:
    """Make every parameter of `model` trainable again."""
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model


def count_params(model: nn.Module) -> dict[str, int]:
    """Numbers of trainable and total parameters."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": total}


def _check_classes(num_classes: int) -> None:
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")


def _check_positive(**values) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value!r}")


def _as_tensor(x: np.ndarray) -> torch.Tensor:
    """NumPy NHWC images (or 2-D features) to a float tensor, NCHW for images."""
    x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return x.permute(0, 3, 1, 2).contiguous() if x.ndim == 4 else x


def _check_data(model: nn.Module, data) -> tuple[np.ndarray, np.ndarray]:
    """Validate an (inputs, labels) pair against the model's output size."""
    x, y = data
    if len(x) != len(y):
        raise ValueError(f"inputs and labels differ in length: {len(x)} vs {len(y)}")
    outputs = [m.out_features for m in model.modules() if isinstance(m, nn.Linear)][-1:]
    if outputs and (np.max(y) >= outputs[0] or np.min(y) < 0):
        raise ValueError(f"labels must be in 0..{outputs[0] - 1} for this model, got {np.min(y)}..{np.max(y)}")
    return x, y


def _freeze_frozen_batchnorm(model: nn.Module) -> None:
    """Put BatchNorm layers whose parameters are all frozen into eval mode (as Keras does)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if not any(p.requires_grad for p in module.parameters()):
                module.eval()


def fit(model, train, validation=None, epochs=1, lr=1e-3, batch_size=32, optimizer="adam", verbose=True) -> dict:
    """Train on (inputs, labels) with cross-entropy; returns the per-epoch history."""
    _check_positive(epochs=epochs, lr=lr, batch_size=batch_size)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {optimizer!r}; known optimizers: {', '.join(OPTIMIZERS)}")
    x, y = _check_data(model, train)
    dev = torch.device(device())
    model.to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters: unfreeze something before fit")
    opt = OPTIMIZERS[optimizer](params, lr=lr)
    dataset = torch.utils.data.TensorDataset(_as_tensor(x), torch.as_tensor(y, dtype=torch.long))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True)
    loss_fn = nn.CrossEntropyLoss()
    history = collections.defaultdict(list)
    for epoch in range(epochs):
        start = time.perf_counter()
        model.train()
        _freeze_frozen_batchnorm(model)
        total_loss = correct = seen = 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", disable=not verbose, file=sys.stdout, mininterval=5)
        for xb, yb in bar:
            xb, yb = xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True)
            logits = model(xb)
            loss = loss_fn(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total_loss += loss.detach() * len(yb)
            correct += (logits.detach().argmax(1) == yb).sum()
            seen += len(yb)
        history["loss"].append(float(total_loss) / seen)
        history["accuracy"].append(float(correct) / seen)
        history["epoch_seconds"].append(time.perf_counter() - start)
        if validation is not None:
            scores = evaluate(model, validation, batch_size=max(256, batch_size))
            history["val_loss"].append(scores["loss"])
            history["val_accuracy"].append(scores["accuracy"])
        if verbose:
            print(_epoch_line(history))
    return dict(history)


def _epoch_line(history: dict) -> str:
    parts = [f"{k} {v[-1]:.4f}" for k, v in history.items() if k != "epoch_seconds"]
    return f"  {history['epoch_seconds'][-1]:.1f}s  " + "  ".join(parts)


def evaluate(model, data, batch_size=256) -> dict[str, float]:
    """Cross-entropy loss and accuracy on (inputs, labels)."""
    x, y = _check_data(model, data)
    logits = predict(model, x, batch_size=batch_size)
    probs = softmax(logits.astype(np.float64))
    loss = float(-np.log(probs[np.arange(len(y)), y] + 1e-12).mean())
    return {"loss": loss, "accuracy": accuracy(y, logits)}


def predict(model, x, batch_size=256) -> np.ndarray:
    """Model outputs (logits or features) for NumPy inputs, as a NumPy array."""
    _check_positive(batch_size=batch_size)
    dev = torch.device(device())
    model.to(dev).eval()
    inputs = _as_tensor(np.asarray(x))
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(inputs), batch_size):
            outputs.append(model(inputs[start : start + batch_size].to(dev)).cpu().numpy())
    return np.concatenate(outputs)


def block_outputs(backbone, x, indices) -> list[np.ndarray]:
    """Activations of the chosen feature blocks for inputs x, as NHWC NumPy arrays."""
    chosen = [blocks(backbone)[i] for i in indices]
    captured = {}
    hooks = [b.register_forward_hook(lambda m, i, o, k=k: captured.__setitem__(k, o)) for k, b in enumerate(chosen)]
    try:
        predict(backbone, x)
    finally:
        for hook in hooks:
            hook.remove()
    return [captured[k].permute(0, 2, 3, 1).cpu().numpy() for k in range(len(chosen))]


def first_layer_filters(backbone) -> np.ndarray:
    """The first convolution's kernels as (filters, height, width, channels)."""
    conv = next(m for m in blocks(backbone)[0].modules() if isinstance(m, nn.Conv2d))
    return conv.weight.detach().permute(0, 2, 3, 1).cpu().numpy()


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

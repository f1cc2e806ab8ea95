"""PyTorch half of the book's helper API: `from helpers import torch as book`.

Every public name here exists in `helpers.keras` with the same signature (a test holds
this). Images come in as NumPy NHWC arrays from `helpers.data`; they are moved to
NCHW tensors on the model's device only when a batch is needed.
"""

from __future__ import annotations

import collections
import functools
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn
from tqdm import tqdm

from helpers import registry, seed, strategies, text, tuning
from helpers.interpret import grad_cam_maps, target_classes
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
    "split_model",
    "grad_cam",
    "block_weights",
    "freeze_batchnorm",
    "learning_rates",
    "lr_range_test",
    "augment_images",
    "text_tokenizer",
    "tokenize",
    "text_encoder",
    "text_classifier",
    "encoder_layers",
    "train_top_layers",
    "sentence_embeddings",
    "predict_text",
    "fit_text",
    "unfreeze_top",
    "block_learning_rates",
    "small_cnn",
    "copy_blocks",
]

MODELS = {"mobilenet_v2": ("mobilenet_v2-torch", torchvision.models.mobilenet_v2)}
OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
OPTIMIZERS.update(  # chapters 05-06; settings shared with helpers.keras through helpers.tuning
    momentum=functools.partial(torch.optim.SGD, momentum=tuning.MOMENTUM),
    adagrad=functools.partial(torch.optim.Adagrad, initial_accumulator_value=tuning.ADAGRAD_INITIAL),
    rmsprop=functools.partial(torch.optim.RMSprop, alpha=tuning.RMSPROP_RHO, eps=tuning.RMSPROP_EPSILON),
)


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
    _check_positive(num_features=num_features)
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


def fit(
    model,
    train,
    validation=None,
    epochs=1,
    lr=1e-3,
    batch_size=32,
    optimizer="adam",
    verbose=True,
    *,
    weight_decay=None,
    schedule=None,
    loss="cross_entropy",
    label_smoothing=0.0,
    l2_sp=0.0,
    early_stopping=None,
    augment=None,
    block_lr_decay=None,
) -> dict:
    """Train on (inputs, labels); returns the per-epoch history.

    weight_decay: decoupled decay (None: 0.01 for adamw, else 0); schedule: a name in tuning.SCHEDULES;
    loss: a name in tuning.LOSSES, with label_smoothing; l2_sp: pull toward the starting weights outside `head`;
    early_stopping: patience in epochs on the validation loss, best weights restored; augment: a
    torchvision.transforms.v2 pipeline applied to each training image. block_lr_decay: discriminative rates,
    the head trains at lr and the feature block k levels below it at lr * block_lr_decay**k (see block_learning_rates).
    """
    _check_positive(epochs=epochs, lr=lr, batch_size=batch_size)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {optimizer!r}; known optimizers: {', '.join(OPTIMIZERS)}")
    tuning.check_options(schedule, loss, label_smoothing, weight_decay, l2_sp, early_stopping, validation is not None)
    x, y = _check_data(model, train)
    dev = torch.device(device())
    model.to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters: unfreeze something before fit")
    opt = _make_optimizer(optimizer, _param_groups(model, params, lr, block_lr_decay), lr, weight_decay)
    dataset = _train_dataset(x, y, augment)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True)
    loss_fn = _make_loss(model, loss, label_smoothing, l2_sp)
    scheduler = _make_scheduler(opt, schedule, lr, epochs * len(loader))
    stopper = _EarlyStopping(model, early_stopping)
    history = collections.defaultdict(list)
    for epoch in range(epochs):
        start = time.perf_counter()
        model.train()
        _freeze_frozen_batchnorm(model)
        total_loss = correct = seen = 0
        bar = tqdm(
            loader, desc=f"epoch {epoch + 1}/{epochs}", disable=not verbose, file=sys.stdout, delay=2, mininterval=30
        )
        for xb, yb in bar:
            xb, yb = xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True)
            logits = model(xb)
            loss = loss_fn(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            scheduler.step()
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
        if stopper.stop(history):
            break
    stopper.restore()
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


# ---- chapters 07-08 (evaluation, interpretation): split a network at a block, Grad-CAM, per-block weights ----


def _chain(model: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    """The model as modules applied one after another (its feature blocks one by one), and its blocks."""
    found = blocks(model)
    ids = {id(b) for b in found}

    def expand(module):
        if isinstance(module, torchvision.models.MobileNetV2):
            return [*expand(module.features), nn.AdaptiveAvgPool2d(1), nn.Flatten(1), module.classifier]
        if id(module) not in ids and isinstance(module, nn.Sequential) and any(id(m) in ids for m in module.modules()):
            return [part for child in module for part in expand(child)]
        return [module]

    return expand(model), found


def _block_position(model: nn.Module, block_index: int) -> tuple[list[nn.Module], int]:
    """The model's chain of modules and the position of feature block `block_index` in it."""
    chain, found = _chain(model)
    if not isinstance(block_index, int) or not -len(found) <= block_index < len(found):
        raise ValueError(f"block_index must be an integer in {-len(found)}..{len(found) - 1}, got {block_index!r}")
    block = found[block_index]
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
    dev = torch.device(device())
    model.to(dev).eval()
    with torch.enable_grad():
        activations = nn.Sequential(*chain[: position + 1])(_as_tensor(np.asarray(x)).to(dev)).detach()
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


def freeze_batchnorm(model):
    """Freeze every BatchNorm layer: scale and shift stop training, and `fit` normalises with the stored statistics."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            freeze(module)
    return model


# ---- chapters 05-06 (craft): optimizers, schedules, losses, L2-SP, early stopping, augmentation, range test ----


def _make_optimizer(name: str, params, lr: float, weight_decay: float | None = None) -> torch.optim.Optimizer:
    """The named optimizer over `params` (tensors or param groups) with decoupled weight decay."""
    if name not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {name!r}; known optimizers: {', '.join(OPTIMIZERS)}")
    decay = tuning.weight_decay_for(name, weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=decay)
    opt = OPTIMIZERS[name](params, lr=lr)
    if decay:
        opt.register_step_pre_hook(lambda o, args, kwargs: _decay_weights(o, decay))
    return opt


@torch.no_grad()
def _decay_weights(opt: torch.optim.Optimizer, decay: float) -> None:
    """Decoupled weight decay (as AdamW and every Keras optimizer do): w <- w - lr * decay * w, per group's lr."""
    for group in opt.param_groups:
        for p in group["params"]:
            if p.grad is not None:
                p.mul_(1 - group["lr"] * decay)


def _make_scheduler(opt: torch.optim.Optimizer, schedule: str | None, lr: float, total_steps: int):
    """A torch.optim.lr_scheduler stepped once per optimizer step; `lr` is only validated here."""
    name = tuning.check_schedule(schedule, lr, total_steps)
    S = torch.optim.lr_scheduler
    warmup = tuning.warmup_steps(total_steps)
    if name == "constant":
        return S.LambdaLR(opt, lambda step: 1.0)
    if name == "step":
        return S.MultiStepLR(opt, milestones=tuning.step_milestones(total_steps), gamma=tuning.STEP_FACTOR)
    if name == "exponential":
        return S.ExponentialLR(opt, gamma=tuning.EXPONENTIAL_FINAL ** (1 / total_steps))
    if name == "cosine":
        return S.CosineAnnealingLR(opt, T_max=total_steps)
    rise = S.LinearLR(opt, start_factor=tuning.WARMUP_START, end_factor=1.0, total_iters=warmup)
    if name == "warmup":
        return rise
    return S.SequentialLR(opt, [rise, S.CosineAnnealingLR(opt, T_max=total_steps - warmup)], milestones=[warmup])


def learning_rates(schedule, lr, total_steps) -> np.ndarray:
    """The learning rate at every optimizer step, as torch.optim.lr_scheduler computes it for `schedule`."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = _make_scheduler(opt, schedule, lr, total_steps)
    rates = []
    for _ in range(total_steps):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return np.array(rates)


def _base_loss(name: str, label_smoothing: float):
    """Loss of (logits, integer labels): cross-entropy, or squared error / Huber of the outputs to one-hot targets."""
    if name == "cross_entropy":
        return nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def regression(logits, labels):
        classes = logits.shape[1]
        target = nn.functional.one_hot(labels, classes).float() * (1 - label_smoothing) + label_smoothing / classes
        if name == "squared_error":
            return nn.functional.mse_loss(logits, target)
        return nn.functional.huber_loss(logits, target, delta=tuning.HUBER_DELTA)

    return regression


def _make_loss(model: nn.Module, name: str, label_smoothing: float = 0.0, l2_sp: float = 0.0):
    """The training loss, plus the L2-SP penalty l2_sp/2 * sum((w - w_start)^2) over the weights outside `head`."""
    base = _base_loss(name, label_smoothing)
    if not l2_sp:
        return base
    head = getattr(model, "head", None)
    in_head = {id(p) for p in head.parameters()} if head is not None else set()
    anchors = [(p, p.detach().clone()) for p in model.parameters() if p.requires_grad and id(p) not in in_head]

    def regularized(logits, labels):
        penalty = sum(((p - start) ** 2).sum() for p, start in anchors)
        return base(logits, labels) + 0.5 * l2_sp * penalty

    return regularized


class _EarlyStopping:
    """Stop when the validation loss has not improved for `patience` epochs; restore the best epoch's weights."""

    def __init__(self, model: nn.Module, patience: int | None):
        self.model, self.patience = model, patience
        self.best, self.best_state, self.waited = float("inf"), None, 0

    def stop(self, history) -> bool:
        if self.patience is None:
            return False
        if history["val_loss"][-1] < self.best:
            self.best, self.waited = history["val_loss"][-1], 0
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        else:
            self.waited += 1
        return self.waited >= self.patience

    def restore(self) -> None:
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)


class _Augmented(torch.utils.data.Dataset):
    """Images (NCHW tensor) and labels; `transform` is applied to each image afresh every time it is drawn."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(self.images[i]), self.labels[i]


def _train_dataset(x: np.ndarray, y: np.ndarray, augment=None) -> torch.utils.data.Dataset:
    """The training set, with `augment` (a torchvision.transforms.v2 pipeline) applied per image when given."""
    images, labels = _as_tensor(x), torch.as_tensor(y, dtype=torch.long)
    if augment is None:
        return torch.utils.data.TensorDataset(images, labels)
    if not callable(augment):
        raise ValueError(f"augment must be a torchvision.transforms.v2 transform (a callable), got {augment!r}")
    return _Augmented(images, labels, augment)


def augment_images(images, augment) -> np.ndarray:
    """Apply an augmentation pipeline (torchvision.transforms.v2) to each NHWC image independently."""
    tensors = _as_tensor(np.asarray(images))
    return np.stack([augment(t).permute(1, 2, 0).numpy() for t in tensors])


def lr_range_test(model, train, min_lr=1e-6, max_lr=1.0, steps=100, batch_size=32, optimizer="adam") -> dict:
    """Train with a rate rising exponentially from min_lr to max_lr; the loss at each step (weights restored after)."""
    _check_positive(batch_size=batch_size)
    rates = tuning.range_test_rates(min_lr, max_lr, steps)
    x, y = _check_data(model, train)
    dev = torch.device(device())
    model.to(dev)
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = _make_optimizer(optimizer, [p for p in model.parameters() if p.requires_grad], min_lr)
    loss_fn, losses = nn.CrossEntropyLoss(), []
    inputs, labels = _as_tensor(x), torch.as_tensor(y, dtype=torch.long)
    model.train()
    _freeze_frozen_batchnorm(model)
    try:
        for rate, batch in zip(rates, tuning.batch_order(len(y), batch_size, steps)):
            for group in opt.param_groups:
                group["lr"] = float(rate)
            loss = loss_fn(model(inputs[batch].to(dev)), labels[batch].to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if tuning.diverged(losses):
                break
    finally:
        model.load_state_dict(saved)
    return {"lr": rates[: len(losses)], "loss": np.array(losses)}


# ---- chapter 09 (text): a pretrained transformer (MiniLM) through Hugging Face transformers ----


def _transformers():
    """transformers, imported on first use, offline (the model comes from the registry) and quiet."""
    import os
    import warnings

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with warnings.catch_warnings():  # tqdm.auto's "IProgress not found" in notebooks without ipywidgets
        warnings.filterwarnings("ignore", message="IProgress not found")
        import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


@functools.cache
def _auto_tokenizer():
    return _transformers().AutoTokenizer.from_pretrained(text.model_dir())


def text_tokenizer():
    """The model's WordPiece tokenizer: transformers' AutoTokenizer read from the checksummed model folder."""
    return _auto_tokenizer()


def tokenize(texts, max_length) -> dict[str, np.ndarray]:
    """Token ids, segment ids and attention masks (N, max_length); longer texts truncated, shorter ones padded."""
    texts, max_length = text.check_texts(texts), text.check_max_length(max_length)
    encoded = _auto_tokenizer()(texts, padding="max_length", truncation=True, max_length=max_length)
    return {name: np.asarray(encoded[name], dtype=np.int64) for name in text.TEXT_INPUTS}


def text_encoder() -> nn.Module:
    """The pretrained MiniLM encoder without a head (transformers' AutoModel), in eval mode."""
    return _transformers().AutoModel.from_pretrained(text.model_dir()).eval()


def text_classifier(num_classes, dropout=0.1) -> nn.Module:
    """MiniLM with a new classification head on its pooled [CLS] output: dropout, then one linear layer."""
    _check_classes(num_classes)
    return _transformers().AutoModelForSequenceClassification.from_pretrained(
        text.model_dir(), num_labels=num_classes, classifier_dropout=dropout
    )


def _text_backbone(model: nn.Module) -> nn.Module:
    """The BERT encoder inside an encoder or a classifier."""
    return getattr(model, "bert", model)


def encoder_layers(model) -> list:
    """The transformer layers of a text encoder or classifier, from input to output."""
    backbone = _text_backbone(model)
    if not hasattr(backbone, "encoder"):
        raise ValueError("model has no transformer layers; pass a model from text_encoder or text_classifier")
    return list(backbone.encoder.layer)


def train_top_layers(model, num_layers):
    """Freeze the embeddings and all but the top `num_layers` transformer layers; pooler and head stay trainable."""
    layers = encoder_layers(model)
    if not isinstance(num_layers, int) or not 0 <= num_layers <= len(layers):
        raise ValueError(f"num_layers must be an integer from 0 to {len(layers)}, got {num_layers!r}")
    freeze(model)
    for module in layers[len(layers) - num_layers :]:
        unfreeze(module)
    for name, module in model.named_children():
        if name != "bert":  # the head
            unfreeze(module)
    if _text_backbone(model).pooler is not None:
        unfreeze(_text_backbone(model).pooler)
    return model


def _token_tensors(tokens: dict, rows=slice(None), dev="cpu") -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(np.asarray(tokens[k][rows]), dtype=torch.long).to(dev) for k in text.TEXT_INPUTS}


def sentence_embeddings(model, tokens, batch_size=64, normalize=True) -> np.ndarray:
    """Mean of the last layer's token vectors over the attention mask (N, hidden), L2-normalised by default."""
    _check_positive(batch_size=batch_size)
    tokens = text.check_tokens(tokens)
    dev = torch.device(device())
    backbone = _text_backbone(model).to(dev).eval()
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(tokens["input_ids"]), batch_size):
            batch = _token_tensors(tokens, slice(start, start + batch_size), dev)
            hidden = backbone(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            outputs.append((nn.functional.normalize(mean, dim=-1) if normalize else mean).cpu().numpy())
    return np.concatenate(outputs)


def predict_text(model, tokens, batch_size=64) -> np.ndarray:
    """Class logits (N, classes) of a text classifier for tokenized texts."""
    _check_positive(batch_size=batch_size)
    tokens = text.check_tokens(tokens)
    dev = torch.device(device())
    model.to(dev).eval()
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(tokens["input_ids"]), batch_size):
            outputs.append(model(**_token_tensors(tokens, slice(start, start + batch_size), dev)).logits.cpu().numpy())
    return np.concatenate(outputs)


def _check_text_data(model, data) -> tuple[dict, np.ndarray]:
    tokens, labels = data
    labels = np.asarray(labels)
    tokens = text.check_tokens(tokens, labels)
    classes = model.config.num_labels
    if labels.min() < 0 or labels.max() >= classes:
        raise ValueError(f"labels must be in 0..{classes - 1} for this model, got {labels.min()}..{labels.max()}")
    return tokens, labels


def fit_text(model, train, validation=None, epochs=1, lr=5e-5, batch_size=16, warmup=0.1, verbose=True) -> dict:
    """Fine-tune on (tokens, labels): AdamW, linear warmup then linear decay, gradients clipped to norm 1."""
    _check_positive(epochs=epochs, lr=lr, batch_size=batch_size)
    tokens, labels = _check_text_data(model, train)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters: unfreeze something before fit_text")
    steps = epochs * -(-len(labels) // batch_size)
    dev = torch.device(device())
    model.to(dev)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=text.WEIGHT_DECAY)
    scheduler = _transformers().get_linear_schedule_with_warmup(opt, text.warmup_steps(steps, warmup), steps)
    history = collections.defaultdict(list)
    for epoch in range(epochs):
        start = time.perf_counter()
        model.train()
        total_loss = correct = 0.0
        order = torch.randperm(len(labels)).numpy()
        for first in range(0, len(labels), batch_size):
            rows = order[first : first + batch_size]
            yb = torch.as_tensor(labels[rows], dtype=torch.long, device=dev)
            logits = model(**_token_tensors(tokens, rows, dev)).logits
            loss = nn.functional.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, text.CLIP_NORM)
            history["lr"].append(scheduler.get_last_lr()[0])
            opt.step()
            scheduler.step()
            total_loss += float(loss.detach()) * len(rows)
            correct += float((logits.argmax(1) == yb).sum())
        history["loss"].append(total_loss / len(labels))
        history["accuracy"].append(correct / len(labels))
        history["epoch_seconds"].append(time.perf_counter() - start)
        if validation is not None:
            val_tokens, val_labels = _check_text_data(model, validation)
            logits = predict_text(model, val_tokens, batch_size=max(64, batch_size))
            history["val_loss"].append(
                float(nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(val_labels)))
            )
            history["val_accuracy"].append(accuracy(val_labels, logits))
        if verbose:
            print(f"epoch {epoch + 1}/{epochs}" + _epoch_line({k: v for k, v in history.items() if k != "lr"}))
    return dict(history)


# ---- chapters 03-04 (strategies): partial unfreezing, discriminative rates, a small CNN, layer transfer ----


def unfreeze_top(model, num_blocks):
    """Train the top `num_blocks` feature blocks and everything above them (the head); freeze the blocks below."""
    found = blocks(model)
    strategies.check_num_blocks(num_blocks, len(found))
    unfreeze(model)
    for block in found[: len(found) - num_blocks]:
        freeze(block)
    return model


def block_learning_rates(model, lr, block_lr_decay) -> list[float]:
    """The rate of each feature block, input to output, under fit(..., lr=lr, block_lr_decay=...); the head gets lr."""
    _check_positive(lr=lr)
    return [lr * factor for factor in strategies.block_factors(len(blocks(model)), block_lr_decay)]


def _param_groups(model: nn.Module, params: list, lr: float, block_lr_decay: float | None) -> list:
    """`params` unchanged, or with block_lr_decay one param group per feature block at its rate, the rest at lr."""
    if block_lr_decay is None:
        return params
    trainable, grouped, groups = {id(p) for p in params}, set(), []
    for block, rate in zip(blocks(model), block_learning_rates(model, lr, block_lr_decay)):
        members = [p for p in block.parameters() if id(p) in trainable]
        grouped.update(id(p) for p in members)
        groups += [{"params": members, "lr": rate}] if members else []
    rest = [p for p in params if id(p) not in grouped]
    return ([{"params": rest, "lr": lr}] if rest else []) + groups


def small_cnn(num_classes, channels=1) -> nn.Module:
    """A small CNN for 28x28 images: conv-BatchNorm-ReLU(-max-pool) blocks, global average pooling, a linear head."""
    _check_classes(num_classes)
    found, width_in = [], channels
    for width, pool in strategies.SMALL_CNN_BLOCKS:
        layers = [nn.Conv2d(width_in, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        found.append(nn.Sequential(*layers, *([nn.MaxPool2d(2)] if pool else [])))
        width_in = width
    parts = [("features", nn.Sequential(*found)), ("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten())]
    return add_head(nn.Sequential(collections.OrderedDict(parts)), new_head(width_in, num_classes))


def copy_blocks(source, target, num_blocks):
    """Copy the first `num_blocks` feature blocks (weights and BatchNorm statistics) of `source` into `target`."""
    pairs = list(zip(blocks(source), blocks(target)))
    strategies.check_num_blocks(num_blocks, len(pairs))
    for i, (a, b) in enumerate(pairs[:num_blocks]):
        shapes_a = [tuple(v.shape) for v in a.state_dict().values()]
        shapes_b = [tuple(v.shape) for v in b.state_dict().values()]
        if shapes_a != shapes_b:
            raise ValueError(f"block {i} differs between source and target: {shapes_a} vs {shapes_b}")
        b.load_state_dict(a.state_dict())
    return target

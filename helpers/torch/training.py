"""Training (PyTorch): fit, evaluate and predict; optimizers, schedules, losses, L2-SP, early stopping,
augmentation and the learning-rate range test (chapters 02-06)."""

from __future__ import annotations

import collections
import functools
import sys
import time

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from helpers import checks, tuning
from helpers.metrics import accuracy, nll
from helpers.torch.core import (
    DTYPES,
    as_tensor,
    check_data,
    freeze_frozen_batchnorm,
    input_shape,
    param_groups,
    precision_options,
)
from helpers.torch.models import device

__all__ = [
    "fit",
    "evaluate",
    "predict",
    "learning_rates",
    "augment_images",
    "lr_range_test",
]

OPTIMIZERS = {  # settings shared with helpers.keras through helpers.tuning
    "adam": functools.partial(torch.optim.Adam, eps=tuning.ADAM_EPSILON),
    "adamw": functools.partial(torch.optim.AdamW, eps=tuning.ADAM_EPSILON),
    "sgd": torch.optim.SGD,
    "momentum": functools.partial(torch.optim.SGD, momentum=tuning.MOMENTUM),
    "adagrad": functools.partial(
        torch.optim.Adagrad, initial_accumulator_value=tuning.ADAGRAD_INITIAL, eps=tuning.ADAGRAD_EPSILON
    ),
    "rmsprop": functools.partial(torch.optim.RMSprop, alpha=tuning.RMSPROP_RHO, eps=tuning.RMSPROP_EPSILON),
}


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
    precision=None,
    channels_last=None,
    compile=None,
) -> dict:
    """Train on (inputs, labels); returns the per-epoch history.

    History: `loss` is the optimised objective (with label smoothing and the L2-SP penalty), `cross_entropy` the
    plain cross-entropy, both averaged over the epoch's batches; `val_loss`/`val_cross_entropy` are the same two on
    the validation data after the epoch. weight_decay: decoupled decay (None: 0.01 for adamw, else 0); schedule: a
    name in tuning.SCHEDULES; loss: a name in tuning.LOSSES, with label_smoothing; l2_sp: pull toward the starting
    weights outside `head`; early_stopping: patience in epochs on the validation cross-entropy, best weights
    restored; augment: a torchvision.transforms.v2 pipeline applied to each training image. block_lr_decay:
    discriminative rates, the head trains at lr and the feature block k levels below it at lr * block_lr_decay**k.
    Speed (chapter 16; None means off on every device, so a default fit is the plain float32 loop): precision
    'float32', 'bfloat16' or 'float16' (None: float32; float16 needs a GPU): forward pass, loss and validation
    under torch.autocast, weights kept in float32, float16 with a GradScaler; channels_last: NHWC memory layout
    for the convolutions (None: off); compile: train through torch.compile (None: off).
    """
    epochs, batch_size = checks.count("epochs", epochs), checks.count("batch_size", batch_size)
    precision, channels_last, compile = precision_options(precision, channels_last, compile)
    checks.positive(lr=lr)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {optimizer!r}; known optimizers: {', '.join(OPTIMIZERS)}")
    tuning.check_options(schedule, loss, label_smoothing, weight_decay, l2_sp, early_stopping, validation is not None)
    dev = torch.device(device())
    model.to(dev)
    x, y = check_data(model, train, "train")
    val = check_data(model, validation, "validation") if validation is not None else None
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters: unfreeze something before fit")
    opt = _make_optimizer(optimizer, param_groups(model, params, lr, block_lr_decay), lr, weight_decay)
    loader = _batches(x, y, augment, batch_size, dev)
    loss_fn = _make_loss(model, loss, label_smoothing, l2_sp)
    plain = tuning.is_plain_cross_entropy(loss, label_smoothing, l2_sp)  # then the objective is the cross-entropy
    scheduler = _make_scheduler(opt, schedule, lr, epochs * len(loader))
    stopper = _EarlyStopping(model, early_stopping)
    history = collections.defaultdict(list)
    if channels_last:
        model.to(memory_format=torch.channels_last)  # NHWC in memory: what GPU convolution kernels read fastest
    step_model = torch.compile(model) if compile else model  # the same parameters, a compiled forward pass
    autocast = functools.partial(torch.autocast, dev.type, dtype=DTYPES[precision], enabled=precision != "float32")
    scaler = torch.amp.GradScaler(dev.type, enabled=precision == "float16")
    for epoch in range(epochs):
        start = time.perf_counter()
        model.train()
        freeze_frozen_batchnorm(model)
        total_loss = total_ce = correct = seen = 0
        bar = tqdm(
            loader, desc=f"epoch {epoch + 1}/{epochs}", disable=not verbose, file=sys.stdout, delay=2, mininterval=30
        )
        for xb, yb in bar:
            xb, yb = xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True)
            if channels_last and xb.ndim == 4:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with autocast():
                logits = step_model(xb)
                objective = loss_fn(logits, yb)
            logits = logits.float()  # no copy in float32
            opt.zero_grad(set_to_none=True)
            scaler.scale(objective).backward()  # without float16: the objective itself, then opt.step()
            scaler.step(opt)
            scaler.update()
            scheduler.step()
            total_loss += objective.detach() * len(yb)
            if not plain:
                total_ce += nn.functional.cross_entropy(logits.detach(), yb, reduction="sum")
            correct += (logits.detach().argmax(1) == yb).sum()
            seen += len(yb)
        history["loss"].append(float(total_loss) / seen)
        history["cross_entropy"].append(history["loss"][-1] if plain else float(total_ce) / seen)
        history["accuracy"].append(float(correct) / seen)
        history["epoch_seconds"].append(time.perf_counter() - start)
        if val is not None:
            with autocast():  # validation at the training precision, as Keras' policy does
                scores = _validation_scores(model, val, loss_fn, max(256, batch_size))
            for key, value in scores.items():
                history[key].append(value)
        if verbose:
            print(epoch_line(history))
        if stopper.stop(history):
            break
    stopper.restore()
    if channels_last:
        model.to(memory_format=torch.contiguous_format)
    return dict(history)


def _validation_scores(model: nn.Module, data: tuple, loss_fn, batch_size: int) -> dict[str, float]:
    """The training objective, the plain cross-entropy and the accuracy on validation data."""
    x, y = data
    logits = predict(model, x, batch_size=batch_size)
    dev = next(model.parameters()).device
    with torch.no_grad():
        objective = float(loss_fn(torch.from_numpy(logits).to(dev), torch.from_numpy(y).to(dev)))
    return {"val_loss": objective, "val_cross_entropy": nll(y, logits), "val_accuracy": accuracy(y, logits)}


def epoch_line(history: dict) -> str:
    parts = [f"{k} {v[-1]:.4f}" for k, v in history.items() if k != "epoch_seconds"]
    return f"  {history['epoch_seconds'][-1]:.1f}s  " + "  ".join(parts)


def evaluate(model, data, batch_size=256) -> dict[str, float]:
    """Cross-entropy loss and accuracy on (inputs, labels)."""
    batch_size = checks.count("batch_size", batch_size)
    model.to(torch.device(device()))
    x, y = check_data(model, data)
    logits = predict(model, x, batch_size=batch_size)
    return {"loss": nll(y, logits), "accuracy": accuracy(y, logits)}


def predict(model, x, batch_size=256) -> np.ndarray:
    """Model outputs (logits or features) for NumPy inputs, as a NumPy array."""
    batch_size = checks.count("batch_size", batch_size)
    x = checks.inputs(x, input_shape(model))
    dev = torch.device(device())
    model.to(dev).eval()
    inputs = as_tensor(x)
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(inputs), batch_size):
            outputs.append(model(inputs[start : start + batch_size].to(dev)).float().cpu().numpy())
    return np.concatenate(outputs)


def _make_optimizer(name: str, params, lr: float, weight_decay: float | None = None) -> torch.optim.Optimizer:
    """The named optimizer over `params` (tensors or param groups) with decoupled weight decay."""
    if name not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {name!r}; known optimizers: {', '.join(OPTIMIZERS)}")
    decay = tuning.weight_decay_for(name, weight_decay)
    if name == "adamw":
        return OPTIMIZERS[name](params, lr=lr, weight_decay=decay)
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
    """Stop when the validation cross-entropy has not improved for `patience` epochs; restore the best weights."""

    def __init__(self, model: nn.Module, patience: int | None):
        self.model, self.patience = model, patience
        self.best, self.best_state, self.waited = float("inf"), None, 0

    def stop(self, history) -> bool:
        if self.patience is None:
            return False
        if history["val_cross_entropy"][-1] < self.best:
            self.best, self.waited = history["val_cross_entropy"][-1], 0
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


class _DeviceBatches:
    """Shuffled batches of tensors already on the GPU: no per-image collation and no copy per batch."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int):
        self.images, self.labels, self.batch_size = images, labels, batch_size

    def __len__(self):
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self):
        order = torch.randperm(len(self.labels), device=self.labels.device)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            yield self.images[batch], self.labels[batch]


def _batches(x: np.ndarray, y: np.ndarray, augment, batch_size: int, dev: torch.device):
    """Training batches: on a GPU, data without augmentation that takes at most a quarter of the free GPU memory
    lives on the device; otherwise a DataLoader (pinned memory on a GPU, so the copies overlap with compute)."""
    if dev.type == "cuda" and augment is None and x.nbytes <= torch.cuda.mem_get_info(dev)[0] // 4:
        images, labels = as_tensor(x).to(dev), torch.as_tensor(y, dtype=torch.long, device=dev)
        return _DeviceBatches(images, labels, batch_size)
    dataset = _train_dataset(x, y, augment)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, pin_memory=dev.type == "cuda")


def _train_dataset(x: np.ndarray, y: np.ndarray, augment=None) -> torch.utils.data.Dataset:
    """The training set, with `augment` (a torchvision.transforms.v2 pipeline) applied per image when given."""
    images, labels = as_tensor(x), torch.as_tensor(y, dtype=torch.long)
    if augment is None:
        return torch.utils.data.TensorDataset(images, labels)
    if not callable(augment):
        raise ValueError(f"augment must be a torchvision.transforms.v2 transform (a callable), got {augment!r}")
    return _Augmented(images, labels, augment)


def augment_images(images, augment) -> np.ndarray:
    """Apply an augmentation pipeline (torchvision.transforms.v2) to each NHWC image independently."""
    tensors = as_tensor(np.asarray(images))
    return np.stack([augment(t).permute(1, 2, 0).numpy() for t in tensors])


def lr_range_test(model, train, min_lr=1e-6, max_lr=1.0, steps=100, batch_size=32, optimizer="adam") -> dict:
    """Train with a rate rising exponentially from min_lr to max_lr; the loss at each step (weights restored after)."""
    batch_size = checks.count("batch_size", batch_size)
    rates = tuning.range_test_rates(min_lr, max_lr, steps)
    dev = torch.device(device())
    model.to(dev)
    x, y = check_data(model, train, "train")
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = _make_optimizer(optimizer, [p for p in model.parameters() if p.requires_grad], min_lr)
    loss_fn, losses = nn.CrossEntropyLoss(), []
    inputs, labels = as_tensor(x), torch.as_tensor(y, dtype=torch.long)
    model.train()
    freeze_frozen_batchnorm(model)
    try:
        for rate, batch in zip(rates, tuning.batch_order(len(y), batch_size, len(rates))):
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

"""Chapter 11 (knowledge distillation and parameter sharing): soft targets, distillation training, shared backbones.

Mirrors the module of the same name in the other framework package (tests/test_parity.py).
"""

from __future__ import annotations

import collections
import math
import time

import numpy as np
import torch
from torch import nn

from helpers import checks, distillation, tuning
from helpers.models import SMALL_CNN_BLOCKS
from helpers.torch.core import as_tensor, freeze_frozen_batchnorm, input_shape, num_outputs
from helpers.torch.models import Model, device, new_head, small_cnn_backbone, tagged

__all__ = ["distillation_loss", "fit_distilled", "multi_head_cnn", "task_model", "fit_multitask", "latency"]


def distillation_loss(student_logits, teacher_logits, labels=None, temperature=4.0, alpha=0.5):
    """Hinton et al.'s loss: alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE(labels).

    Both terms are batch means: the soft term over every row, the hard term over the labelled rows only (label
    distillation.UNLABELLED, -1, marks a row without a label; labels=None: no row has one). A batch without labels
    contributes only alpha times the soft term.
    """
    temperature, alpha = distillation.check_temperature(temperature), distillation.check_alpha(alpha)
    distillation.check_logit_shapes(student_logits.shape, teacher_logits.shape)
    log_student = nn.functional.log_softmax(student_logits / temperature, dim=1)
    log_teacher = nn.functional.log_softmax(teacher_logits / temperature, dim=1)
    soft = nn.functional.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True) * temperature**2
    if labels is None:
        return alpha * soft
    labelled = labels != distillation.UNLABELLED
    hard = nn.functional.cross_entropy(student_logits[labelled], labels[labelled]) if labelled.any() else 0.0 * soft
    return alpha * soft + (1 - alpha) * hard


def _adam(parameters, lr: float) -> torch.optim.Optimizer:
    """Adam with the book's epsilon (helpers.tuning), as book.fit builds it."""
    return torch.optim.Adam(parameters, lr=lr, eps=tuning.ADAM_EPSILON)


def fit_distilled(
    student,
    x,
    teacher_logits,
    labels=None,
    temperature=4.0,
    alpha=0.5,
    epochs=1,
    lr=1e-3,
    batch_size=32,
    seed=0,
    verbose=False,
) -> dict:
    """Train `student` on images x against the teacher's logits on the same images (distillation_loss), with Adam.

    labels: class ids with -1 for unlabelled images, or None (all unlabelled). Each epoch is ceil(N / batch_size)
    full batches in the order tuning.batch_order(N, batch_size, steps, seed) gives. Returns {'loss', 'epoch_seconds'}.
    """
    epochs, batch_size = checks.count("epochs", epochs), checks.count("batch_size", batch_size)
    checks.positive(lr=lr)
    temperature, alpha = distillation.check_temperature(temperature), distillation.check_alpha(alpha)
    dev = torch.device(device())
    student.to(dev)
    x = checks.inputs(x, input_shape(student))
    teacher, labels = distillation.check_teacher_logits(teacher_logits, len(x), num_outputs(student, x), labels)
    images, teacher, labels = as_tensor(x), torch.from_numpy(teacher), torch.from_numpy(labels)
    steps = math.ceil(len(x) / batch_size)
    order = tuning.batch_order(len(x), min(batch_size, len(x)), epochs * steps, seed)
    opt = _adam([p for p in student.parameters() if p.requires_grad], lr)
    history = collections.defaultdict(list)
    for epoch in range(epochs):
        start, total = time.perf_counter(), 0.0
        student.train()
        freeze_frozen_batchnorm(student)
        for batch in order[epoch * steps : (epoch + 1) * steps]:
            index = torch.from_numpy(batch)
            loss = distillation_loss(
                student(images[index].to(dev)), teacher[index].to(dev), labels[index].to(dev), temperature, alpha
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
        distillation.record_epoch(history, total / steps, time.perf_counter() - start, epoch, epochs, verbose)
    return dict(history)


class MultiHead(nn.Module):
    """One backbone, one head per task: forward returns a tuple of logits, one per head."""

    def __init__(self, backbone: nn.Module, heads: list[nn.Module]):
        super().__init__()
        self.backbone, self.heads = backbone, nn.ModuleList(heads)

    def forward(self, x):
        features = self.backbone(x)
        return tuple(head(features) for head in self.heads)


def _check_num_classes(num_classes) -> list[int]:
    """One class count (>= 2) per task, at least two tasks."""
    if isinstance(num_classes, int | np.integer) or len(num_classes) < 2:
        raise ValueError(
            f"num_classes must list one class count per task, two or more, e.g. (10, 10); got {num_classes!r}"
        )
    return [checks.classes(n) for n in num_classes]


def multi_head_cnn(num_classes, channels=1) -> Model:
    """The small CNN's backbone shared by several tasks, one linear head per task (num_classes: one count per task)."""
    counts, channels = _check_num_classes(num_classes), checks.count("channels", channels)
    backbone = tagged(small_cnn_backbone(channels), "small_cnn")
    width = SMALL_CNN_BLOCKS[-1][0]
    return MultiHead(backbone, [new_head(width, n) for n in counts])


def task_model(model, task) -> Model:
    """One task's network inside a multi_head_cnn: the shared backbone and that task's head (weights shared)."""
    task = checks.index("task", task, len(model.heads))
    return nn.Sequential(collections.OrderedDict([("backbone", model.backbone), ("head", model.heads[task])]))


def _check_tasks(model, tasks) -> list[tuple[np.ndarray, np.ndarray]]:
    """One (images, labels) pair per head of the model, checked against that head."""
    if not isinstance(tasks, list | tuple) or len(tasks) != len(model.heads):
        raise ValueError(f"tasks must be a list of {len(model.heads)} (images, labels) pairs, one per head")
    found = []
    for i, task in enumerate(tasks):
        x, y = checks.pair(task, f"tasks[{i}]")
        x = checks.inputs(x, input_shape(model))
        found.append((x, checks.labels(y, len(x), model.heads[i][-1].out_features)))
    return found


def fit_multitask(model, tasks, epochs=1, lr=1e-3, batch_size=32, seed=0, verbose=False) -> dict:
    """Train a multi_head_cnn on several tasks at once with Adam: each step takes one batch of every task, runs them
    through the backbone together and adds the tasks' mean cross-entropies. An epoch is one pass over the largest
    task (smaller ones are cycled). Returns {'loss', 'epoch_seconds'}."""
    epochs, batch_size = checks.count("epochs", epochs), checks.count("batch_size", batch_size)
    checks.positive(lr=lr)
    dev = torch.device(device())
    model.to(dev)
    tasks = _check_tasks(model, tasks)
    steps = math.ceil(max(len(y) for _, y in tasks) / batch_size)
    orders = [
        tuning.batch_order(len(y), min(batch_size, len(y)), epochs * steps, seed + i) for i, (_, y) in enumerate(tasks)
    ]
    tensors = [(as_tensor(x), torch.from_numpy(y)) for x, y in tasks]
    opt = _adam([p for p in model.parameters() if p.requires_grad], lr)
    history = collections.defaultdict(list)
    for epoch in range(epochs):
        start, total = time.perf_counter(), 0.0
        model.train()
        freeze_frozen_batchnorm(model)
        for step in range(epoch * steps, (epoch + 1) * steps):
            batches = [order[step] for order in orders]
            xb = torch.cat([x[torch.from_numpy(b)] for (x, _), b in zip(tensors, batches)]).to(dev)
            features, loss, begin = model.backbone(xb), 0.0, 0
            for head, (_, y), b in zip(model.heads, tensors, batches):
                loss = loss + nn.functional.cross_entropy(head(features[begin : begin + len(b)]), y[b].to(dev))
                begin += len(b)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
        distillation.record_epoch(history, total / steps, time.perf_counter() - start, epoch, epochs, verbose)
    return dict(history)


def latency(model, x, repeats=20) -> dict:
    """Measured inference time of one forward pass on the batch x (in eval mode, no gradients): the median over
    `repeats` calls in milliseconds per batch and per image."""
    repeats = checks.count("repeats", repeats)
    x = checks.inputs(x, input_shape(model))
    dev = torch.device(device())
    model.to(dev).eval()
    inputs = as_tensor(x).to(dev)

    def run():
        with torch.inference_mode():
            model(inputs)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    seconds = distillation.time_call(run, repeats=repeats)
    return {"batch": len(x), "ms per batch": 1e3 * seconds, "ms per image": 1e3 * seconds / len(x)}

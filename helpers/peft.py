"""Parameter-efficient fine-tuning, the framework-neutral part (chapter 14): rank checks, the bytes that training
state takes, step times and the summary table.

Framework-neutral: imports neither PyTorch nor TensorFlow.
"""

from __future__ import annotations

import numpy as np

from helpers import checks
from helpers.stats import mean_spread  # noqa: F401  (re-exported: the book's one "±" convention)

METHODS = ("head only", "BitFit", "LoRA", "full fine-tuning")
LORA_TARGETS = ("query", "value")  # the attention projections LoRA adapts, as in the LoRA paper (Hu et al., 2021)
BYTES_PER_VALUE = 4  # float32 weights, gradients and optimizer moments
ADAMW_MOMENTS = 2  # AdamW keeps a first and a second moment for every trainable value


def check_rank(rank, max_rank: int, layer: str = "the adapted layer") -> int:
    """A LoRA rank: an integer from 1 to `max_rank` (the smaller side of the layer's low-rank factorization)."""
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 1 <= rank <= max_rank:
        raise ValueError(
            f"LoRA rank must be an integer from 1 to {max_rank} (the smaller dimension of {layer}), got {rank!r}; "
            "typical ranks are 1 to 16"
        )
    return int(rank)


def lora_alpha(rank: int, alpha=None) -> float:
    """LoRA's alpha: the update B A x is scaled by alpha / rank; alpha=None means alpha = rank (scale 1)."""
    if alpha is None:
        return float(rank)
    checks.positive(alpha=alpha)
    return float(alpha)


def training_state_bytes(total_params: int, trainable_params: int) -> dict[str, int]:
    """Bytes of float32 weights (all), gradients (trainable) and AdamW's two moments (trainable); no activations."""
    total, trainable = int(total_params), int(trainable_params)
    if not 0 <= trainable <= total:
        raise ValueError(f"need 0 <= trainable <= total parameters, got {trainable} and {total}")
    state = {
        "weights": BYTES_PER_VALUE * total,
        "gradients": BYTES_PER_VALUE * trainable,
        "optimizer state": ADAMW_MOMENTS * BYTES_PER_VALUE * trainable,
    }
    return {**state, "total": sum(state.values())}


def median_step_seconds(step_seconds, warmup: int = 3) -> float:
    """Median time of an optimizer step, the first `warmup` steps (tracing, allocation) left out."""
    steps = np.asarray(step_seconds, dtype=float)
    warmup = checks.count("warmup", warmup, minimum=0)
    if len(steps) <= warmup:
        raise ValueError(f"need more than warmup={warmup} timed steps, got {len(steps)}; train longer or lower warmup")
    return float(np.median(steps[warmup:]))


def peft_table(runs: dict, total_params: int) -> list[dict]:
    """One row per method from {method: {"trainable", "accuracy", "macro F1", "step seconds", "adapter bytes",
    "lr"}} where the scores may be lists over seeds: counts, shares, state memory and mean ± spread."""
    rows = []
    for method, run in runs.items():
        memory = training_state_bytes(total_params, run["trainable"])
        rows.append(
            {
                "method": method,
                "trainable params": int(run["trainable"]),
                "trainable %": 100 * run["trainable"] / total_params,
                "accuracy": mean_spread(np.atleast_1d(run["accuracy"])),
                "macro F1": mean_spread(np.atleast_1d(run["macro F1"])),
                "lr": run["lr"],
                "grads + AdamW state (MB)": (memory["gradients"] + memory["optimizer state"]) / 1e6,
                "training state (MB)": memory["total"] / 1e6,
                "step ms (median)": 1000 * float(np.median(run["step seconds"])),
                "adapter file (MB)": run["adapter bytes"] / 1e6,
            }
        )
    return rows

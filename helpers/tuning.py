"""Settings and NumPy helpers for losses, optimizers, schedules and the learning-rate range test.

Framework-neutral: imports neither PyTorch nor TensorFlow. `helpers.torch` and `helpers.keras`
read their settings from here, so both frameworks build the same optimizers, schedules and
losses from one definition (chapters 05 and 06).
"""

from __future__ import annotations

import numpy as np

from helpers import checks

LOSSES = ("cross_entropy", "squared_error", "huber")
HUBER_DELTA = 1.0  # squared error below this difference, absolute error above it

# The learning-rate schedules, each built from the framework's own scheduler classes.
SCHEDULES = ("constant", "step", "exponential", "cosine", "warmup", "warmup_cosine")
STEP_AT = (1 / 3, 2 / 3)  # step decay: the rate drops by STEP_FACTOR at these fractions of all steps
STEP_FACTOR = 0.1
EXPONENTIAL_FINAL = 0.01  # exponential decay ends at this fraction of the initial rate
WARMUP_FRACTION = 0.1  # warmup lasts this fraction of all steps (at least one step) ...
WARMUP_START = 0.01  # ... rising linearly from this fraction of the rate

ADAMW_WEIGHT_DECAY = 0.01  # `weight_decay=None` means this for "adamw" and no decay for every other optimizer
MOMENTUM = 0.9  # "momentum" is SGD with this momentum
RMSPROP_RHO = 0.9  # decay of RMSProp's average of squared gradients
RMSPROP_EPSILON = 1e-8  # PyTorch adds it to sqrt(v); Keras adds its square inside the root: nearly the same
ADAM_EPSILON = 1e-8  # Adam and AdamW in both frameworks (PyTorch's default; Keras' own default is 1e-7)
ADAGRAD_EPSILON = 1e-10  # PyTorch adds it to sqrt(accumulator); Keras adds its square inside the root
ADAGRAD_INITIAL = 0.1  # AdaGrad's initial accumulator value

DIVERGENCE = 4.0  # the range test stops once the smoothed loss exceeds this multiple of its minimum


def check_options(schedule, loss, label_smoothing, weight_decay, l2_sp, early_stopping, has_validation) -> None:
    """Reject unknown names and out-of-range values of `fit`'s keyword options, with one clear message each."""
    if schedule is not None and schedule not in SCHEDULES:
        raise ValueError(f"Unknown schedule {schedule!r}; known schedules: {', '.join(SCHEDULES)}")
    if loss not in LOSSES:
        raise ValueError(f"Unknown loss {loss!r}; known losses: {', '.join(LOSSES)}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
    if weight_decay is not None and not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0 (or None for the optimizer's default), got {weight_decay!r}")
    if not l2_sp >= 0:
        raise ValueError(f"l2_sp must be >= 0, got {l2_sp!r}")
    if early_stopping is not None:
        checks.count("early_stopping (a patience in epochs)", early_stopping)
        if not has_validation:
            raise ValueError("early_stopping watches the validation loss: pass validation=(inputs, labels)")


def is_plain_cross_entropy(loss: str, label_smoothing: float, l2_sp: float) -> bool:
    """True when `fit`'s objective is the plain cross-entropy, which then need not be computed a second time."""
    return loss == "cross_entropy" and not label_smoothing and not l2_sp


def weight_decay_for(optimizer: str, weight_decay: float | None) -> float:
    """The decoupled weight decay an optimizer gets: the given value, else ADAMW_WEIGHT_DECAY for adamw, else 0."""
    if weight_decay is not None:
        return float(weight_decay)
    return ADAMW_WEIGHT_DECAY if optimizer == "adamw" else 0.0


def warmup_steps(total_steps: int) -> int:
    """Number of warmup steps for a run of `total_steps` optimizer steps."""
    return max(1, int(total_steps * WARMUP_FRACTION))


def step_milestones(total_steps: int) -> list[int]:
    """The steps at which step decay drops the rate (increasing, at least one step apart)."""
    milestones = []
    for fraction in STEP_AT:
        milestones.append(max(round(total_steps * fraction), milestones[-1] + 1 if milestones else 1))
    return milestones


def check_schedule(schedule: str | None, lr: float, total_steps: int) -> str:
    """Validate a schedule request; returns the schedule's name ('constant' for None)."""
    name = "constant" if schedule is None else schedule
    if name not in SCHEDULES:
        raise ValueError(f"Unknown schedule {schedule!r}; known schedules: {', '.join(SCHEDULES)}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    if not isinstance(total_steps, int | np.integer) or total_steps < 1:
        raise ValueError(f"total_steps must be an integer >= 1, got {total_steps!r}")
    if name.startswith("warmup") and total_steps < 2:
        raise ValueError(f"schedule {name!r} needs total_steps >= 2 (warmup, then the rest), got {total_steps}")
    return name


def smooth(values, beta: float = 0.9) -> np.ndarray:
    """Exponential moving average with bias correction, as the range test reads its noisy losses."""
    values = np.asarray(values, dtype=np.float64)
    out, average = np.empty_like(values), 0.0
    for i, value in enumerate(values):
        average = beta * average + (1 - beta) * value
        out[i] = average / (1 - beta ** (i + 1))
    return out


def diverged(losses) -> bool:
    """True once the latest smoothed loss is not finite or exceeds DIVERGENCE times the lowest so far."""
    smoothed = smooth(losses)
    return not np.isfinite(smoothed[-1]) or smoothed[-1] > DIVERGENCE * smoothed.min()


def range_test_rates(min_lr: float, max_lr: float, steps: int) -> np.ndarray:
    """The exponentially rising learning rates of a range test, one per step."""
    steps = checks.count("steps", steps, minimum=2)
    checks.positive(min_lr=min_lr, max_lr=max_lr)
    if not 0 < min_lr < max_lr:
        raise ValueError(f"need 0 < min_lr < max_lr, got min_lr={min_lr!r}, max_lr={max_lr!r}")
    return np.geomspace(min_lr, max_lr, steps)


def batch_order(num_examples: int, batch_size: int, steps: int, seed: int = 0) -> list[np.ndarray]:
    """Indices of `steps` mini-batches drawn by passing over shuffled data, reshuffled after each pass."""
    rng = np.random.default_rng(seed)
    batches, order = [], np.array([], dtype=np.int64)
    while len(batches) < steps:
        if len(order) < batch_size:
            order = np.concatenate([order, rng.permutation(num_examples)])
        batches.append(order[:batch_size])
        order = order[batch_size:]
    return batches


def suggest_lr(result: dict) -> float:
    """A learning rate from a range test: where the smoothed loss is lowest, divided by ten."""
    losses = smooth(result["loss"])
    return float(np.asarray(result["lr"])[int(np.nanargmin(losses))] / 10)


# Discriminative learning rates (chapter 03): `fit(..., block_lr_decay=)` in both wings.


def check_decay(block_lr_decay) -> None:
    """`block_lr_decay` is None (one rate for all) or a factor in (0, 1]."""
    if block_lr_decay is None:
        return
    if isinstance(block_lr_decay, bool) or not isinstance(block_lr_decay, int | float) or not 0 < block_lr_decay <= 1:
        raise ValueError(
            "block_lr_decay must be a number in (0, 1] (each block below the head trains at that factor times "
            f"the rate of the block above it) or None, got {block_lr_decay!r}"
        )


def block_factors(depth: int, block_lr_decay: float | None) -> list[float]:
    """Rate factor of each of `depth` blocks, input to output: decay**k for the block k levels below the head."""
    check_decay(block_lr_decay)
    decay = 1.0 if block_lr_decay is None else float(block_lr_decay)
    return [decay ** (depth - i) for i in range(depth)]


# Precision, memory layout and compilation (chapter 16): `fit(..., precision=, channels_last=, compile=)`.

PRECISIONS = ("float32", "bfloat16", "float16")  # what `precision=` accepts; None is float32
GPU_ONLY_PRECISIONS = ("float16",)  # no fast float16 arithmetic on a CPU, and no loss scaling needed there


def check_precision(precision: str | None) -> str | None:
    """Validate a `precision=` argument: None (automatic) or one of PRECISIONS."""
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision must be None (automatic) or one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def choose_precision(precision: str | None, device: str, bfloat16_supported: bool) -> str:
    """The compute precision to train in on `device` ('cuda' or 'cpu'); one ValueError when it cannot run there.

    None is float32 on every device: lower precision is a speed option the caller asks for (chapter 16), so that a
    default `fit` is the plain float32 loop everywhere. float16 needs a GPU; bfloat16 on a CPU is allowed (it runs,
    usually slower than float32 unless the CPU has bfloat16 instructions: measure it).
    """
    check_precision(precision)
    if precision is None:
        return "float32"
    if precision in GPU_ONLY_PRECISIONS and device != "cuda":
        raise ValueError(
            f"precision={precision!r} needs a CUDA GPU, and this process runs on {device!r}: "
            "use precision='bfloat16' or 'float32' (or None for the device's default) on a CPU"
        )
    if precision == "bfloat16" and device == "cuda" and not bfloat16_supported:
        raise ValueError("this GPU has no bfloat16 support: use precision='float16' (with loss scaling) or 'float32'")
    return precision


def check_flag(name: str, value) -> bool | None:
    """Validate an on/off option that may also be None (automatic)."""
    if value is not None and not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True, False or None (automatic), got {value!r}")
    return None if value is None else bool(value)

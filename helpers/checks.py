"""Argument checks shared by `helpers.torch` and `helpers.keras`: one rule, one message, in both frameworks.

Framework-neutral: imports neither PyTorch nor TensorFlow. Each check returns the cleaned value (a plain
`int`, a float32 array, ...) or raises one `ValueError` that names what was expected and the fix.
"""

from __future__ import annotations

import math
import numbers
import operator

import numpy as np

# Inputs normalised by `data.imagenet_input` lie within about [-2.2, 2.7], `data.grey_input` within [0, 1] and
# pooled MobileNetV2 features within [0, 6]; values beyond this are raw pixels (0-255) or a missing normalisation.
MAX_INPUT_MAGNITUDE = 32.0
PIXEL_FIX = (
    "use data.imagenet_input(images, size) for an ImageNet network (it resizes, scales to [0, 1] and normalises) "
    "or data.grey_input(images) for the small CNN"
)


def _integer(value, wanted: str) -> int:
    """A Python or NumPy integer (not a bool, not a float) as a plain int, else ValueError(wanted)."""
    if isinstance(value, bool | np.bool_):
        raise ValueError(wanted)
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(wanted) from None


def count(name: str, value, minimum: int = 1) -> int:
    """An integer >= minimum (Python or NumPy integers; bools and floats are refused) as a plain int."""
    wanted = f"{name} must be an integer >= {minimum}, got {value!r} ({type(value).__name__})"
    value = _integer(value, wanted)
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return value


def up_to(name: str, value, maximum: int, detail: str = "") -> int:
    """An integer from 0 to maximum (how many blocks or layers to train, say); `detail` explains the maximum."""
    wanted = f"{name} must be an integer from 0 to {maximum}{detail}, got {value!r}"
    value = _integer(value, wanted)
    if not 0 <= value <= maximum:
        raise ValueError(wanted)
    return value


def classes(num_classes) -> int:
    """A number of classes: an integer >= 2."""
    return count("num_classes", num_classes, minimum=2)


def positive(**values) -> None:
    """Each value is a finite real number > 0 (learning rates, factors)."""
    for name, value in values.items():
        if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
            raise ValueError(f"{name} must be a positive number, got {value!r} ({type(value).__name__})")
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive, finite number, got {value!r}")


def index(name: str, value, length: int) -> int:
    """A position in a list of `length` items, negative positions counted from the end; returned non-negative."""
    wanted = f"{name} must be an integer in {-length}..{length - 1} (there are {length}), got {value!r}"
    value = _integer(value, wanted)
    if not -length <= value < length:
        raise ValueError(wanted)
    return value % length


def inputs(x, expected: tuple | None) -> np.ndarray:
    """Network inputs as float32: `expected` is the model's input shape without the batch axis, e.g.
    (None, None, 3) for RGB images or (1280,) for features (None: unknown, only the batch is checked)."""
    if isinstance(x, list | tuple):
        x = np.asarray(x)
    if not isinstance(x, np.ndarray):
        raise ValueError(f"inputs must be a NumPy array (N, ...), got {type(x).__name__}")
    if x.ndim == 0 or len(x) == 0:
        raise ValueError(f"no examples: the inputs are empty (shape {x.shape}); pass at least one example")
    if expected is not None:
        _check_layout(x.shape, tuple(expected))
    if x.dtype.kind in "biu":
        raise ValueError(f"inputs are {x.dtype} (raw pixels?), but the network expects normalised floats; {PIXEL_FIX}")
    if x.dtype.kind != "f":
        raise ValueError(f"inputs must be a float array, got dtype {x.dtype}")
    x = np.asarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError("inputs contain NaN or infinite values; check the preprocessing")
    if np.abs(x).max() > MAX_INPUT_MAGNITUDE:
        raise ValueError(
            f"inputs range over {x.min():.4g}..{x.max():.4g}: they look like raw pixels (0-255), not normalised "
            f"input; {PIXEL_FIX}"
        )
    return x


def _check_layout(shape: tuple, expected: tuple) -> None:
    """The shape of a batch against the model's input shape (without the batch axis)."""
    if len(expected) == 3:  # images, NHWC
        channels = expected[-1]
        if len(shape) == 3 and channels is not None:
            raise ValueError(
                f"images must be NHWC, (N, height, width, {channels}), got {shape} without a channel axis: "
                f"add one with x[..., None]" + (" and repeat it to 3 channels" if channels == 3 else "")
            )
        if len(shape) != 4:
            raise ValueError(f"images must be NHWC, (N, height, width, channels), got shape {shape}")
        if channels is not None and shape[-1] != channels:
            hint = {
                (1, 3): "greyscale images into an RGB network: repeat the channel (data.imagenet_input does this, or "
                "np.repeat(x, 3, axis=-1))",
                (3, 1): "RGB images into a greyscale network: average the channels (x.mean(-1, keepdims=True))",
            }.get((shape[-1], channels), "convert the images")
            raise ValueError(f"the network expects {channels} channel(s), got {shape[-1]} (shape {shape}); {hint}")
        return
    if len(shape) != len(expected) + 1 or any(e is not None and e != s for e, s in zip(expected, shape[1:])):
        wanted = "(N, " + ", ".join("any" if e is None else str(e) for e in expected) + ")"
        raise ValueError(f"the model expects inputs shaped {wanted}, got {shape}")


def labels(y, num_examples: int, num_outputs: int | None) -> np.ndarray:
    """Integer class labels, one per example, each in 0..num_outputs-1 (num_outputs: the model's output size)."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(
            f"labels must be a 1-D array of class ids, got shape {y.shape}; for one-hot labels use y.argmax(-1)"
        )
    if len(y) != num_examples:
        raise ValueError(f"inputs and labels differ in length: {num_examples} vs {len(y)}")
    if y.dtype.kind not in "iu":
        raise ValueError(f"labels must be integer class ids, got dtype {y.dtype}; convert with y.astype(int)")
    if num_outputs is not None and (y.min() < 0 or y.max() >= num_outputs):
        raise ValueError(f"labels must be in 0..{num_outputs - 1} for this model, got {y.min()}..{y.max()}")
    return y.astype(np.int64)


def pair(data, what: str = "data") -> tuple:
    """An (inputs, labels) pair."""
    if not isinstance(data, list | tuple) or len(data) != 2:
        raise ValueError(f"{what} must be a pair (inputs, labels), got {type(data).__name__}")
    return tuple(data)


def unlabelled(x, what: str, why: str) -> np.ndarray:
    """Unlabelled inputs: one array shaped (N, ...), never an (inputs, labels) pair or any other list, tuple or dict,
    whose labels would be used by mistake. The one rule for every unlabelled argument (chapters 10 and 12); `why`
    finishes the message with the chapter's reason."""
    if isinstance(x, list | tuple | dict):
        raise ValueError(
            f"{what} must be the inputs only, one array shaped (N, ...), got a {type(x).__name__} of {len(x)}: pass "
            f"x, not (x, y); {why}"
        )
    x = np.asarray(x)
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"{what} must be a non-empty array of inputs shaped (N, ...), got shape {x.shape}")
    return x


def backbone(table: dict, name: str, pretrained: bool = False):
    """The entry `name` of a framework's BACKBONES table; with pretrained=True it must have weights to load."""
    if name not in table:
        raise ValueError(f"Unknown model {name!r}; known models: {', '.join(table)}")
    if pretrained and table[name].weights is None:
        with_weights = [n for n, entry in table.items() if entry.weights]
        raise ValueError(f"{name!r} has no pretrained weights; models with weights: {', '.join(with_weights)}")
    return table[name]

"""`claim`: how a chapter states a result it measured, so that a machine checks it and the reader sees it checked.

    from helpers.claims import claim
    claim(probe_acc > scratch_acc, "the linear probe beats training from scratch", probe=probe_acc, scratch=scratch_acc)

A claim is a statement about what the chapter's experiment shows (a method helps, a gap is small, a curve falls).
In the `cpu` and `full` profiles it is asserted: the values are printed, the result is recorded and a failed claim
raises `ClaimFailed`. In the `smoke` profile (a few images, one epoch: sizes at which no effect can show) it is
printed with the values it saw, marked as checked in the cpu profile, and not asserted. With `in_smoke=True` the
claim is asserted in every profile: use it for statements that hold on any data (the written-out loop equals the
helper, a frozen weight did not move).

`make claims` (scripts/claims.py) runs every notebook in the cpu profile with `$BOOK_CLAIMS_LOG` set; each claim
appends one JSON line there, and the script writes them into book/claims.json, the claims ledger.

Framework-neutral: imports neither PyTorch nor TensorFlow.
"""

from __future__ import annotations

import json
import math
import numbers
import os

from helpers import config

LOG_VARIABLE = "BOOK_CLAIMS_LOG"

__all__ = ["ClaimFailed", "claim"]


class ClaimFailed(AssertionError):
    """A claim the chapter makes did not hold on this run."""


def _plain(value):
    """A JSON-friendly copy of a value: numbers (NumPy included) as Python numbers, short text for the rest."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple) and len(value) <= 20 and all(isinstance(v, numbers.Number) for v in value):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist") and getattr(value, "size", 99) <= 20:
        return _plain(value.tolist())
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def _shown(value) -> str:
    """How a value is printed next to a claim: floats to 4 significant digits, the rest as they are."""
    value = _plain(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    return str(value)


def claim(condition, message: str, *, in_smoke: bool = False, **values) -> bool:
    """State a measured result: asserted in the cpu and full profiles (and in smoke with `in_smoke=True`),
    printed with `values` in every profile, and recorded in the claims ledger when `make claims` runs.

    Returns whether the condition held (in smoke, a claim that is not asserted may not hold on tiny data)."""
    if not isinstance(message, str) or not message.strip():
        raise ValueError(
            "claim needs a message: one sentence saying what the chapter claims, e.g. 'LoRA matches "
            "full fine-tuning within 2 points'"
        )
    try:
        held = bool(condition)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"claim {message!r}: the condition must be one True/False value, got {type(condition).__name__} "
            f"({exc}); reduce an array with .all() or .any()"
        ) from None
    profile = config.profile_name()
    checked = in_smoke or profile != "smoke"
    shown = ", ".join(f"{name} = {_shown(value)}" for name, value in values.items())
    _record(message, held, checked, profile, values)
    if not checked:
        verdict = "holds" if held else "does not hold"
        print(
            f"claim, checked in the cpu profile: {message}\n  here ({profile}): {shown or 'no values'}; {verdict} "
            f"on these smoke-sized data, which are too small to show the effect"
        )
        return held
    print(
        f"claim {'held' if held else 'FAILED'} ({profile}): {message}\n  {shown}"
        if shown
        else f"claim {'held' if held else 'FAILED'} ({profile}): {message}"
    )
    if not held:
        raise ClaimFailed(f"{message} ({shown})" if shown else message)
    return True


def _record(message: str, held: bool, checked: bool, profile: str, values: dict) -> None:
    """Append the claim to `$BOOK_CLAIMS_LOG` (one JSON line) when `make claims` set it; otherwise do nothing."""
    path = os.environ.get(LOG_VARIABLE, "").strip()
    if not path:
        return
    row = {
        "claim": message,
        "held": held,
        "asserted": checked,
        "profile": profile,
        "values": {name: _plain(value) for name, value in values.items()},
    }
    with open(path, "a", encoding="utf-8") as log:
        log.write(json.dumps(row, ensure_ascii=False) + "\n")

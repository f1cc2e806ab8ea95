"""Summaries of repeated runs, one convention for the whole book.

"mean ± spread" is the mean and the sample standard deviation (ddof 1) over runs (seeds); a single run has no spread
and prints "n=1" instead of a misleading "± 0.000". Chapters that repeat runs over seeds print their rows with
`mean_spread`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["mean_spread", "sample_sd"]


def sample_sd(values) -> float:
    """The sample standard deviation (ddof 1) of repeated results; NaN for a single one."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("need at least one value; got none")
    return float(values.std(ddof=1)) if values.size > 1 else float("nan")


def mean_spread(values) -> str:
    """'mean ± sd (n=runs)' of repeated runs, sd with ddof 1; a single run prints its value and n=1, no spread."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("need at least one value; got none")
    if values.size == 1:
        return f"{values[0]:.3f} (n=1)"
    return f"{values.mean():.3f} ± {sample_sd(values):.3f} (n={values.size})"

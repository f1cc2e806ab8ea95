"""Fast training (chapter 16), framework-neutral: timing, images per second, ratios against a baseline, and the
checks shared by both wings' data-parallel helpers. The precision rules that `fit` applies are in the base layer
`helpers.tuning`.

Framework-neutral: imports neither PyTorch nor TensorFlow. A timed callable synchronises its own device.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import pandas as pd


def median_seconds(run: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    """The median wall-clock seconds of `repeats` calls of `run`, after `warmup` untimed calls.

    The first calls pay one-off costs (graph tracing, compilation, allocator growth) that are not throughput;
    the median of the rest is robust to one call that another process slowed down.
    """
    if int(repeats) < 1 or int(warmup) < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats!r}, warmup={warmup!r}")
    for _ in range(int(warmup)):
        run()
    seconds = []
    for _ in range(int(repeats)):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def images_per_second(images: int, seconds: float) -> float:
    """Throughput: images processed divided by the seconds it took."""
    if images < 0 or not seconds > 0:
        raise ValueError(f"need images >= 0 and seconds > 0, got images={images!r}, seconds={seconds!r}")
    return images / seconds


def ratios(rates: dict[str, float], baseline: str) -> dict[str, float]:
    """Each rate divided by the baseline's rate (> 1: faster than the baseline)."""
    if baseline not in rates:
        raise ValueError(f"baseline {baseline!r} is not one of the measured variants: {', '.join(rates)}")
    return {name: rate / rates[baseline] for name, rate in rates.items()}


def speed_table(rates: dict[str, float], baseline: str) -> pd.DataFrame:
    """A table of images/second and the ratio to `baseline`, one row per variant, in the order measured."""
    table = pd.DataFrame({"images/s": rates, f"ratio to {baseline}": ratios(rates, baseline)})
    table.index.name = "variant"
    return table


def available_cpus() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def check_processes(processes, devices: int, kind: str) -> int:
    """A number of data-parallel processes (or replicas): at least 1 and at most the `devices` of `kind`."""
    if isinstance(processes, bool) or not isinstance(processes, (int, np.integer)) or processes < 1:
        raise ValueError(f"processes must be a positive integer, got {processes!r}")
    if processes > devices:
        raise ValueError(
            f"{processes} data-parallel processes asked for, but this machine has only {devices} {kind}: "
            f"each process (replica) needs a device of its own; launch at most {devices}"
        )
    return int(processes)


def max_difference(a, b) -> float:
    """The largest absolute difference between two equally long sequences of numbers (e.g. per-step losses)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"the two sequences differ in length: {a.shape} vs {b.shape}")
    return float(np.max(np.abs(a - b))) if a.size else 0.0

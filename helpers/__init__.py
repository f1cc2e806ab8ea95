"""Shared helpers for the course-book *Transfer Learning & Fine-Tuning*.

Import a framework module in a notebook, `from helpers import torch as book` or
`from helpers import keras as book`: both export the same names with the same
signatures. Framework-neutral modules: `config`, `registry`, `data`, `metrics`, `plots`.

Importing `helpers` has one side effect, on purpose: it quiets TensorFlow's C++ logs by
setting `TF_CPP_MIN_LOG_LEVEL=3` and `TF_ENABLE_ONEDNN_OPTS=0` (unless already set),
which must happen before TensorFlow is imported.
"""

import os
import random
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

__all__ = ["seed"]


def seed(n: int) -> None:
    """Seed Python, NumPy and every framework already imported, so runs repeat."""
    import numpy as np

    random.seed(n)
    np.random.seed(n)  # noqa: NPY002  (seeds code that still uses the legacy global RNG)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(n)
    if "keras" in sys.modules:
        sys.modules["keras"].utils.set_random_seed(n)

"""Shared fixtures for the unit tests.

The tests exercise both frameworks in one process (the notebooks never do). Importing
TensorFlow 2.21 before torch 2.14.1 makes a later lazy import of triton (pulled in by
torchvision) segfault, while torch first is fine; so torch and torchvision are imported here, before any
test module can import TensorFlow.
"""

import numpy as np
import pytest

import helpers  # noqa: F401  (sets the TensorFlow log variables first)
import helpers.torch  # noqa: F401  (torch and torchvision must precede TensorFlow, see above)


@pytest.fixture
def images():
    """Eight small normalised RGB images and labels in 0..2 (NHWC, float32)."""
    rng = np.random.default_rng(0)
    return rng.normal(size=(8, 32, 32, 3)).astype(np.float32), np.arange(8) % 3

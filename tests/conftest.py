"""Shared fixtures for the unit tests.

The tests exercise both frameworks in one process (the notebooks never do). Importing
TensorFlow 2.21 before torch 2.14.1 makes a later lazy import of triton (pulled in by
torchvision) segfault, while torch first is fine; so torch and torchvision are imported here, before any
test module can import TensorFlow.
"""

import importlib

import numpy as np
import pytest

import helpers  # noqa: F401  (sets the TensorFlow log variables first)
import helpers.torch

keras_half = importlib.import_module("helpers.keras")  # after torch and torchvision, see above

# The tests compare numbers across frameworks and with stored references to 1e-4. On an Ampere-or-newer GPU both
# frameworks would otherwise run convolutions and matrix products in TF32 (10-bit mantissa, ~1e-3 relative):
# exact comparisons need full float32. No effect on the CPU.
helpers.torch.models.torch.backends.cudnn.allow_tf32 = False
helpers.torch.models.torch.backends.cuda.matmul.allow_tf32 = False
keras_half.models.tf.config.experimental.enable_tensor_float_32_execution(False)


@pytest.fixture
def images():
    """Eight small normalised RGB images and labels in 0..2 (NHWC, float32)."""
    rng = np.random.default_rng(0)
    return rng.normal(size=(8, 32, 32, 3)).astype(np.float32), np.arange(8) % 3


@pytest.fixture(scope="module")
def clothes():
    """40 Fashion-MNIST images of the five target classes, as small-CNN input, and their labels 0..4 (chapters 3-4)."""
    from helpers import data

    task = data.class_task("fashion", data.TARGET_CLASSES, train_per_class=8, test_per_class=2)
    return data.grey_input(task["train_x"]), task["train_y"]


@pytest.fixture
def features():
    """Chapters 5 and 6: two separable clusters of 16-dimensional features per class, three classes."""
    rng = np.random.default_rng(0)
    labels = np.arange(48) % 3
    centres = rng.normal(size=(3, 16)).astype(np.float32)
    return (centres[labels] + 0.5 * rng.normal(size=(48, 16))).astype(np.float32), labels

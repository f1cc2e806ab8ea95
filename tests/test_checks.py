"""The neutral argument checks that both framework halves share (helpers.checks)."""

import numpy as np
import pytest

from helpers import checks


def test_counts_take_python_and_numpy_integers_only():
    assert checks.count("epochs", np.int64(3)) == 3 and type(checks.count("epochs", np.int32(3))) is int
    for bad in (2.0, 2.5, True, np.bool_(True), "3", None):
        with pytest.raises(ValueError, match="epochs must be an integer >= 1"):
            checks.count("epochs", bad)
    with pytest.raises(ValueError, match="got 0"):
        checks.count("epochs", 0)
    assert checks.classes(np.int64(2)) == 2
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        checks.classes(1)


def test_up_to_and_index():
    assert checks.up_to("num_layers", np.int64(6), 6) == 6
    with pytest.raises(ValueError, match=r"from 0 to 6 \(six\), got 7"):
        checks.up_to("num_layers", 7, 6, " (six)")
    assert [checks.index("i", i, 4) for i in (-4, -1, 0, 3)] == [0, 3, 0, 3]
    for bad in (4, -5, 1.0, False):
        with pytest.raises(ValueError, match=r"i must be an integer in -4\.\.3"):
            checks.index("i", bad, 4)


def test_positive_numbers():
    checks.positive(lr=1e-3, factor=np.float32(0.5))
    for bad in (0, -1.0, float("nan"), float("inf"), True, "0.1"):
        with pytest.raises(ValueError, match="lr must be a positive"):
            checks.positive(lr=bad)


def test_inputs_name_the_fix():
    images = np.zeros((2, 8, 8, 3), np.float32)
    assert checks.inputs(images, (None, None, 3)).dtype == np.float32
    assert checks.inputs([[0.5, 1.0]], (2,)).shape == (1, 2)
    cases = [
        (np.zeros((2, 8, 8, 1), np.float32), "np.repeat"),
        (np.zeros((2, 8, 8), np.float32), "without a channel axis"),
        (np.zeros((0, 8, 8, 3), np.float32), "no examples"),
        (np.zeros((2, 8, 8, 3), np.uint8), "data.imagenet_input"),
        (np.full((2, 8, 8, 3), 255.0, np.float32), "raw pixels"),
        (np.full((2, 8, 8, 3), np.nan, np.float32), "NaN"),
        (np.zeros((2, 8, 3), np.float32), "NHWC"),
    ]
    for x, message in cases:
        with pytest.raises(ValueError, match=message):
            checks.inputs(x, (None, None, 3))
    with pytest.raises(ValueError, match="average the channels"):
        checks.inputs(images, (None, None, 1))
    with pytest.raises(ValueError, match="NumPy array"):
        checks.inputs("images", None)


def test_labels():
    assert checks.labels([0, 2, 1], 3, 3).dtype == np.int64
    with pytest.raises(ValueError, match="differ in length: 2 vs 3"):
        checks.labels([0, 1, 2], 2, 3)
    with pytest.raises(ValueError, match=r"labels must be in 0\.\.1 for this model, got 0\.\.2"):
        checks.labels([0, 1, 2], 3, 2)
    with pytest.raises(ValueError, match="integer class ids"):
        checks.labels(np.array([0.0, 1.0]), 2, 2)
    with pytest.raises(ValueError, match="one-hot"):
        checks.labels(np.eye(2, dtype=int), 2, 2)
    assert checks.pair((1, 2)) == (1, 2)
    with pytest.raises(ValueError, match="train must be a pair"):
        checks.pair([1, 2, 3], "train")

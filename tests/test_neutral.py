"""Importing helpers sets the TensorFlow variables first; metrics and plots behave (that neutral modules import
neither framework is tested in tests/test_parity.py, over every module found on disk)."""

import subprocess
import sys

import matplotlib
import numpy as np

from helpers import metrics, plots

matplotlib.use("Agg")


def test_importing_helpers_quiets_tensorflow_before_it_loads():
    names = ("TF_CPP_MIN_LOG_LEVEL", "TF_FORCE_GPU_ALLOW_GROWTH")
    code = f"import os, helpers; print(*(os.environ[n] for n in {names!r}), 'TF_ENABLE_ONEDNN_OPTS' in os.environ)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env={})
    assert out.stdout.split() == ["3", "true", "False"]  # oneDNN stays on: it is faster (benchmarks/onednn-*.md)


def test_helpers_keras_imports_tensorflow_without_the_onednn_notice():
    """The notice is held back by redirecting file descriptor 2 around the first import; other stderr output and
    the descriptor itself come back."""
    code = (
        "import os, sys\n"
        "from helpers import keras\n"
        "from tensorflow.python.framework import config\n"
        "os.write(2, b'stderr still works\\n')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env={})
    assert "oneDNN custom operations" not in out.stderr and "absl" not in out.stderr, out.stderr
    assert "stderr still works" in out.stderr


def test_softmax_and_top_k():
    logits = np.array([[1.0, 3.0, 2.0], [10.0, 0.0, 0.0]])
    probs = metrics.softmax(logits)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    top = metrics.top_k(logits, ["a", "b", "c"], k=2)
    assert [name for name, _ in top[0]] == ["b", "c"] and top[1][0][0] == "a"
    assert metrics.accuracy(np.array([1, 1]), logits) == 0.5


def test_plots_return_figures():
    history = {"loss": [1.0, 0.5], "accuracy": [0.5, 0.8], "val_loss": [1.1, 0.7], "val_accuracy": [0.4, 0.7]}
    assert plots.plot_history({"run": history}).axes
    assert plots.plot_confusion([0, 1, 1], [0, 1, 0], ["x", "y"]).axes
    assert plots.show_images(np.zeros((3, 8, 8)), titles=["a", "b", "c"], ncols=2).axes


def test_mean_spread_is_one_convention():
    from helpers import stats

    assert stats.mean_spread([0.5, 0.7]) == f"0.600 ± {np.std([0.5, 0.7], ddof=1):.3f} (n=2)"
    assert stats.mean_spread([0.25]) == "0.250 (n=1)"  # never "± 0.000"
    assert np.isnan(stats.sample_sd([0.25]))
    for empty in ([], np.zeros((0,))):
        try:
            stats.mean_spread(empty)
        except ValueError as error:
            assert "at least one value" in str(error)
        else:
            raise AssertionError("an empty list must be refused")

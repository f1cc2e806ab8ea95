"""Chapter 07: scores, confident errors, calibration, imbalance, paired comparisons, frozen BatchNorm."""

import importlib

import matplotlib
import numpy as np
import pytest
from sklearn import metrics as skm

from helpers import data, interpretation, metrics, plots

matplotlib.use("Agg")


@pytest.fixture(params=["torch", "keras"], scope="module")
def book(request):
    return importlib.import_module(f"helpers.{request.param}")


def _framework(book):
    return book.__name__.split(".")[-1]


# ---- scores, confident errors, calibration (neutral) ----


def test_summary_and_per_class_scores_agree_with_scikit_learn():
    rng = np.random.default_rng(0)
    labels, logits = rng.integers(0, 3, 200), rng.normal(size=(200, 3))
    scores = metrics.summary_scores(labels, logits)
    predictions = logits.argmax(1)
    assert scores["accuracy"] == pytest.approx(skm.accuracy_score(labels, predictions))
    assert scores["macro F1"] == pytest.approx(skm.f1_score(labels, predictions, average="macro"))
    assert scores["weighted recall"] == pytest.approx(skm.recall_score(labels, predictions, average="weighted"))
    table = metrics.per_class_scores(labels, logits, ["a", "b", "c"])
    assert table["b"]["recall"] == pytest.approx(skm.recall_score(labels, predictions, average=None)[1])


def test_accuracy_misleads_on_imbalanced_labels_where_macro_f1_does_not():
    labels = np.array([0] * 90 + [1] * 5 + [2] * 5)
    always_majority = np.tile([5.0, 0.0, 0.0], (100, 1))
    scores = metrics.summary_scores(labels, always_majority)
    assert scores["accuracy"] == pytest.approx(0.9) and scores["macro F1"] < 0.35


def test_confident_errors_are_wrong_and_sorted_by_confidence():
    labels = np.array([0, 0, 1, 1])
    logits = np.array([[0.0, 1.0], [0.0, 5.0], [9.0, 0.0], [0.0, 1.0]])
    assert metrics.confident_errors(labels, logits).tolist() == [2, 1, 0]
    assert metrics.confident_errors(labels, logits, k=1).tolist() == [2]


def test_expected_calibration_error():
    # 10 predictions at confidence 0.8, 8 of them right: calibrated; at 0.9 with 5 right: gap 0.4
    probs = np.tile([0.8, 0.2], (10, 1))
    labels = np.array([0] * 8 + [1] * 2)
    assert metrics.expected_calibration_error(labels, probs) == pytest.approx(0.0, abs=1e-12)
    probs = np.tile([0.9, 0.1], (10, 1))
    labels = np.array([0] * 5 + [1] * 5)
    assert metrics.expected_calibration_error(labels, probs) == pytest.approx(0.4)
    bins = metrics.reliability(labels, probs, num_bins=10)
    assert bins["count"].sum() == 10 and bins["count"][8] == 10 and np.isnan(bins["accuracy"][0])
    with pytest.raises(ValueError, match="metrics.softmax"):
        metrics.expected_calibration_error(labels, np.ones((10, 2)))


def test_temperature_scaling_recovers_the_temperature_and_lowers_the_nll():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(scale=2.0, size=(4000, 5))
    labels = np.array([rng.choice(5, p=p) for p in metrics.softmax(true_logits)])
    overconfident = 3.0 * true_logits
    temperature = metrics.fit_temperature(labels, overconfident)
    assert temperature == pytest.approx(3.0, rel=0.1)
    assert metrics.nll(labels, overconfident, temperature) < metrics.nll(labels, overconfident)
    probs_before, probs_after = metrics.softmax(overconfident), metrics.softmax(overconfident / temperature)
    before = metrics.expected_calibration_error(labels, probs_before)
    assert metrics.expected_calibration_error(labels, probs_after) < before / 2


def test_imbalanced_indices_shrink_geometrically_and_repeat():
    labels = np.repeat(np.arange(10), 100)
    chosen = data.imbalanced_indices(labels, ratio=0.05, seed=1)
    counts = np.sort(np.bincount(labels[chosen], minlength=10))[::-1]
    assert counts[0] == 100 and counts[-1] == 5 and (np.diff(counts) <= 0).all()
    assert (data.imbalanced_indices(labels, ratio=0.05, seed=1) == chosen).all()
    with pytest.raises(ValueError, match=r"ratio must be in \(0, 1\]"):
        data.imbalanced_indices(labels, ratio=0)


def test_evaluation_plots_return_figures():
    rng = np.random.default_rng(0)
    labels, probs = rng.integers(0, 3, 50), metrics.softmax(rng.normal(size=(50, 3)))
    assert plots.plot_reliability({"a": (labels, probs), "b": (labels, probs)}).axes
    assert plots.plot_runs({"x": [0.8, 0.82, 0.81], "y": [0.85, 0.8, 0.84]}, ylabel="accuracy").axes
    images, maps = np.zeros((2, 16, 16, 3)), {"m": rng.random((2, 4, 4))}
    assert len(plots.show_heatmaps(images, maps, labels={"m": ["a", "b"]}).axes) == 4  # 2 rows, 2 images
    assert plots.plot_embedding({"p": rng.normal(size=(50, 2))}, labels, ["a", "b", "c"]).axes
    assert plots.plot_block_change({"r": np.linspace(0.01, 0.1, 19)}).axes


def test_freeze_batchnorm_keeps_statistics_and_scales_while_convolutions_train(book, images):
    x, y = images
    backbone = book.pretrained_backbone("mobilenet_v2")
    model = book.freeze_batchnorm(book.add_head(backbone, book.new_head(book.feature_dim(backbone), num_classes=3)))
    before = _batchnorm_state(book, backbone)
    weights_before = book.block_weights(model)
    book.fit(model, (x, y), epochs=1, lr=0.01, batch_size=8, verbose=False)
    after = _batchnorm_state(book, backbone)
    assert before.keys() == after.keys() and len(before) == 4 * 52
    moved = [k for k in before if not np.array_equal(before[k], after[k])]
    assert not moved, f"BatchNorm values changed: {moved[:3]}"
    assert (interpretation.relative_change(weights_before, book.block_weights(model)) > 0).all(), (
        "convolutions must train"
    )


def _batchnorm_state(book, model):
    """Scale, shift and running statistics of every BatchNorm layer, as NumPy arrays."""
    if _framework(book) == "torch":
        names = ("weight", "bias", "running_mean", "running_var")
        modules = [m for m in model.modules() if m.__class__.__name__ == "BatchNorm2d"]
        return {(i, n): getattr(m, n).detach().cpu().numpy().copy() for i, m in enumerate(modules) for n in names}
    from helpers.keras import mobilenet_port as keras_mobilenet

    layers = [lay for lay in keras_mobilenet.leaf_layers(model) if lay.__class__.__name__ == "BatchNormalization"]
    return {(i, w.path): np.array(w.numpy()) for i, layer in enumerate(layers) for w in layer.weights}


def test_paired_comparison_counts_disagreements_and_brackets_the_difference():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=400)
    better = np.where(rng.random(400) < 0.9, labels, (labels + 1) % 3)  # about 90 % right
    worse = np.where(rng.random(400) < 0.6, labels, (labels + 1) % 3)  # about 60 % right
    result = metrics.paired_comparison(labels, better, worse)
    right_a, right_b = better == labels, worse == labels
    assert result["only_a"] == int((right_a & ~right_b).sum()) and result["only_b"] == int((~right_a & right_b).sum())
    assert np.isclose(result["difference"], right_a.mean() - right_b.mean())
    assert result["low"] < result["difference"] < result["high"] and result["low"] > 0  # a clear win
    assert result["mcnemar_p"] < 1e-6
    same = metrics.paired_comparison(labels, better, better)
    assert same["difference"] == same["low"] == same["high"] == 0 and same["mcnemar_p"] == 1.0
    logits = np.eye(3)[better]  # logits give the same answer as labels
    assert metrics.paired_comparison(labels, logits, worse) == result


def test_paired_interval_is_narrower_than_two_separate_intervals_when_models_agree():
    """The point of pairing: two models that err on mostly the same images differ by less than their own noise."""
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, size=300)
    a = np.where(rng.random(300) < 0.8, labels, 1 - labels)
    b = a.copy()
    flip = rng.choice(300, size=6, replace=False)
    b[flip] = 1 - b[flip]  # b differs from a on six images only
    paired = metrics.paired_comparison(labels, a, b)
    single_width = 2 * 1.96 * np.sqrt(0.8 * 0.2 / 300)  # one model's own 95 % interval
    assert paired["high"] - paired["low"] < single_width / 2


def test_paired_comparison_rejects_mismatched_predictions():
    with pytest.raises(ValueError, match="one prediction"):
        metrics.paired_comparison(np.zeros(5), np.zeros(4), np.zeros(5))

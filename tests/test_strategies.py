"""Fine-tuning strategies (chapters 03-04): partial unfreezing, discriminative learning rates, the small CNN,
layer transfer and class splits, run once per framework with the same test code."""

import importlib
import subprocess
import sys

import matplotlib
import numpy as np
import pytest

from helpers import data, plots, strategies

matplotlib.use("Agg")


@pytest.fixture(params=["torch", "keras"], scope="module")
def book(request):
    return importlib.import_module(f"helpers.{request.param}")


@pytest.fixture(scope="module")
def clothes():
    """40 Fashion-MNIST images of the five target classes, as small-CNN input, and their labels 0..4."""
    task = data.class_task("fashion", data.TARGET_CLASSES, train_per_class=8, test_per_class=2)
    return data.grey_input(task["train_x"]), task["train_y"]


def _is_torch(book):
    return book.__name__ == "helpers.torch"


def _state(book, layer, statistics=True):
    """Weights (and, with statistics=True, BatchNorm running statistics) of a model or block, as NumPy arrays."""
    if _is_torch(book):
        items = layer.state_dict().items() if statistics else layer.named_parameters()
        return {k: v.detach().cpu().numpy().copy() for k, v in items if "num_batches" not in k}
    return {w.path: np.array(w.numpy()) for w in layer.weights if statistics or "moving_" not in w.path}


def _moved(before, after):
    return [k for k in before if not np.array_equal(before[k], after[k])]


def _expected_small_cnn_params(num_classes):
    total, width_in = 0, 1
    for width, _ in strategies.SMALL_CNN_BLOCKS:
        total += 9 * width_in * width + 2 * width  # bias-free 3x3 convolution, BatchNorm scale and shift
        width_in = width
    return total + width_in * num_classes + num_classes


def test_small_cnn_has_the_same_blocks_and_parameters_in_both_frameworks(book, clothes):
    x, _ = clothes
    model = book.small_cnn(5)
    assert len(book.blocks(model)) == len(strategies.SMALL_CNN_BLOCKS)
    assert book.predict(model, x).shape == (len(x), 5)
    expected = _expected_small_cnn_params(5)
    assert book.count_params(model) == {"trainable": expected, "total": expected}
    shapes = [a.shape for a in book.block_outputs(model, x[:2], range(4))]
    assert shapes == [(2, 14, 14, 16), (2, 7, 7, 32), (2, 3, 3, 64), (2, 3, 3, 128)]


def test_unfreeze_top_trains_only_the_top_blocks_and_the_head(book, clothes):
    book.seed(0)
    model = book.unfreeze_top(book.small_cnn(5), 1)
    found = book.blocks(model)
    top_and_head = book.count_params(model)["total"] - sum(book.count_params(b)["total"] for b in found[:-1])
    assert book.count_params(model)["trainable"] == top_and_head
    before = [_state(book, b) for b in found]
    book.fit(model, clothes, epochs=2, lr=0.05, batch_size=20, optimizer="sgd", verbose=False)
    after = [_state(book, b) for b in found]
    for i in range(len(found) - 1):
        assert not _moved(before[i], after[i]), f"frozen block {i} changed (weights or BatchNorm statistics)"
    moved = _moved(before[-1], after[-1])
    assert any("mean" in k for k in moved), "the unfrozen block's BatchNorm statistics should update"
    assert len(moved) == len(before[-1]), "every weight of the unfrozen block should train"


def test_unfreeze_top_on_mobilenet_counts_the_unfrozen_blocks(book):
    backbone = book.pretrained_backbone("mobilenet_v2")
    model = book.add_head(backbone, book.new_head(book.feature_dim(backbone), 3))
    head = 1280 * 3 + 3
    found = book.blocks(model)
    assert book.count_params(book.unfreeze_top(model, 0))["trainable"] == head
    top_two = sum(book.count_params(b)["total"] for b in found[-2:])
    assert book.count_params(book.unfreeze_top(model, 2))["trainable"] == head + top_two
    assert book.count_params(book.unfreeze_top(model, len(found)))["trainable"] == book.count_params(model)["total"]


def test_unfreeze_top_rejects_a_depth_beyond_the_network(book):
    model = book.small_cnn(3)
    for bad in (5, -1, 2.5, True):
        with pytest.raises(ValueError, match=r"from 0 to 4 \(this network has 4 blocks\)"):
            book.unfreeze_top(model, bad)


def test_block_learning_rates_decay_from_the_head_down(book):
    model = book.small_cnn(3)
    assert book.block_learning_rates(model, 1.0, 0.5) == [1 / 16, 1 / 8, 1 / 4, 1 / 2]
    assert book.block_learning_rates(model, 0.01, None) == [0.01] * 4


def _head(book, model):
    return model.head if _is_torch(book) else model.get_layer("head")


@pytest.mark.parametrize("optimizer, weight_decay", [("adam", None), ("adam", 0.5), ("adamw", 0.5)])
def test_each_block_steps_at_its_own_rate(book, clothes, optimizer, weight_decay):
    """Adam's first step moves every weight by about its rate whatever the gradient's size, so the largest step
    in each block measures the rate that block trained at (scaling gradients instead would not change it).
    Decoupled weight decay shrinks each block's weights at that block's rate too: w <- w (1 - rate * decay)."""
    book.seed(0)
    model = book.small_cnn(5)
    lr, decay, wd = 1e-3, 0.5, weight_decay or 0.0
    layers = [*book.blocks(model), _head(book, model)]
    before = [_state(book, layer, statistics=False) for layer in layers]
    book.fit(
        model,
        clothes,
        epochs=1,
        lr=lr,
        batch_size=len(clothes[1]),
        optimizer=optimizer,
        weight_decay=weight_decay,
        block_lr_decay=decay,
        verbose=False,
    )
    rates = [*book.block_learning_rates(model, lr, decay), lr]
    steps = []
    for layer, old, rate in zip(layers, before, rates):
        new = _state(book, layer, statistics=False)
        steps.append(max(np.abs(new[k] - old[k] * (1 - rate * wd)).max() for k in old))
    np.testing.assert_allclose(steps, rates, rtol=0.02)


def test_discriminative_rates_reject_nonsense(book, clothes):
    model = book.small_cnn(5)
    for bad in (0, -0.5, 1.5, "0.5"):
        with pytest.raises(ValueError, match=r"block_lr_decay must be a number in \(0, 1\]"):
            book.fit(model, clothes, block_lr_decay=bad, verbose=False)
    features = np.zeros((4, 16), dtype=np.float32)
    with pytest.raises(ValueError, match="found no feature blocks"):
        book.fit(book.new_head(16, 3), (features, np.zeros(4, int)), block_lr_decay=0.5, verbose=False)


def test_copy_blocks_transfers_the_first_blocks_only(book, clothes):
    x, _ = clothes
    book.seed(1)
    source = book.small_cnn(5)
    book.seed(2)
    target = book.copy_blocks(source, book.small_cnn(5), 2)
    for i in range(2):
        np.testing.assert_array_equal(*(book.block_outputs(m, x[:4], [i])[0] for m in (source, target)))
    outputs = [book.block_outputs(m, x[:4], [2])[0] for m in (source, target)]
    assert not np.allclose(*outputs), "block 2 was not copied and should differ"
    with pytest.raises(ValueError, match="from 0 to 4"):
        book.copy_blocks(source, target, 5)
    with pytest.raises(ValueError, match="block 0 differs"):
        book.copy_blocks(source, book.pretrained_backbone("mobilenet_v2", weights=None), 1)


def test_a_trained_small_cnn_reloads_with_identical_predictions(book, clothes, tmp_path):
    x, _ = clothes
    book.seed(0)
    model = book.small_cnn(5)
    book.fit(model, clothes, epochs=1, batch_size=20, verbose=False)
    path = book.save_weights(model, tmp_path / ("cnn.pt" if _is_torch(book) else "cnn.weights.h5"))
    reloaded = book.load_weights(book.small_cnn(5), path)
    np.testing.assert_array_equal(book.predict(model, x), book.predict(reloaded, x))


def test_select_classes_relabels_in_the_given_order():
    images, labels = np.arange(12), np.arange(12) % 6
    x, y = data.select_classes(images, labels, [4, 1])
    assert sorted(x.tolist()) == [1, 4, 7, 10] and (y == np.where(x % 6 == 4, 0, 1)).all()
    for bad in ([1, 1], [7, 1], [3]):
        with pytest.raises(ValueError, match="two or more distinct labels"):
            data.select_classes(images, labels, bad)


def test_class_task_is_balanced_disjoint_and_capped():
    task = data.class_task("mnist", data.SOURCE_CLASSES, train_per_class=1000, test_per_class=7)
    assert np.bincount(task["train_y"]).tolist() == [400] * 5  # the MNIST subset's training part has 400 per class
    assert np.bincount(task["test_y"]).tolist() == [7] * 5
    other = data.class_task("mnist", data.SOURCE_CLASSES, train_per_class=3, test_per_class=7, seed=5)
    assert np.array_equal(other["test_x"], task["test_x"]), "the test examples do not depend on the seed"
    assert not np.array_equal(other["train_x"], task["train_x"][: len(other["train_x"])])
    with pytest.raises(ValueError, match="known data sets: fashion, mnist"):
        data.class_task("cifar", data.SOURCE_CLASSES, 1, 1)


def test_grey_input_scales_to_the_unit_interval():
    x = data.grey_input(np.array([[[0, 255]]], dtype=np.uint8))
    assert x.shape == (1, 1, 2, 1) and x.dtype == np.float32 and x.min() == 0.0 and x.max() == 1.0
    with pytest.raises(ValueError, match="uint8 greyscale"):
        data.grey_input(np.zeros((1, 4, 4, 3), dtype=np.uint8))


def test_plot_curves_returns_a_figure():
    fig = plots.plot_curves([1, 2, 5], {"a": [0.1, 0.2, 0.3], "b": [0.3, 0.2, 0.1]}, "labels", "accuracy", log_x=True)
    assert len(fig.axes[0].lines) == 2


def test_block_outputs_cover_every_input_beyond_one_batch(book):
    x = np.random.default_rng(0).random((300, 28, 28, 1), dtype=np.float32)
    (outputs,) = book.block_outputs(book.small_cnn(3), x, [3])
    assert outputs.shape == (300, 3, 3, 128)


def test_strategies_module_imports_no_framework():
    code = (
        "import sys, helpers.strategies;"
        "bad = [m for m in ('torch', 'tensorflow', 'keras') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

"""Source pretraining (chapter 04): the small CNN, layer transfer, saving and reloading, class splits, run once per
framework with the same test code."""

import importlib

import matplotlib
import numpy as np
import pytest

from helpers import data, plots
from helpers.models import SMALL_CNN_BLOCKS

matplotlib.use("Agg")


@pytest.fixture(params=["torch", "keras"], scope="module")
def book(request):
    return importlib.import_module(f"helpers.{request.param}")


def _is_torch(book):
    return book.__name__ == "helpers.torch"


def _expected_small_cnn_params(num_classes):
    total, width_in = 0, 1
    for width, _ in SMALL_CNN_BLOCKS:
        total += 9 * width_in * width + 2 * width  # bias-free 3x3 convolution, BatchNorm scale and shift
        width_in = width
    return total + width_in * num_classes + num_classes


def test_small_cnn_has_the_same_blocks_and_parameters_in_both_frameworks(book, clothes):
    x, _ = clothes
    model = book.small_cnn(5)
    assert len(book.blocks(model)) == len(SMALL_CNN_BLOCKS)
    assert book.predict(model, x).shape == (len(x), 5)
    expected = _expected_small_cnn_params(5)
    assert book.count_params(model) == {"trainable": expected, "total": expected}
    shapes = [a.shape for a in book.block_outputs(model, x[:2], range(4))]
    assert shapes == [(2, 14, 14, 16), (2, 7, 7, 32), (2, 3, 3, 64), (2, 3, 3, 128)]


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

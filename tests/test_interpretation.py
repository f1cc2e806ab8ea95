"""Chapter 08: Grad-CAM in both frameworks and in NumPy, split networks, per-block weight change."""

import importlib
import subprocess
import sys

import matplotlib
import numpy as np
import pytest

from helpers import data, interpretation

matplotlib.use("Agg")


@pytest.fixture(params=["torch", "keras"], scope="module")
def book(request):
    return importlib.import_module(f"helpers.{request.param}")


@pytest.fixture(scope="module")
def photos():
    return data.photo_batch(size=224)[1]


def _framework(book):
    return book.__name__.split(".")[-1]


# ---- Grad-CAM ----


@pytest.mark.parametrize("block", [-1, 13])
def test_grad_cam_matches_both_frameworks_stored_maps(book, photos, block):
    maps = book.grad_cam(book.pretrained_model("mobilenet_v2"), photos, block_index=block)
    reference = np.load(interpretation.REFERENCE_GRAD_CAM)
    other = "keras" if _framework(book) == "torch" else "torch"
    for framework in (_framework(book), other):
        np.testing.assert_allclose(maps, reference[f"{framework}_block{block}"], atol=2e-3)


def test_grad_cam_shape_range_and_target_class(book, photos):
    model = book.pretrained_model("mobilenet_v2")
    maps = book.grad_cam(model, photos[:2])
    assert maps.shape == (2, 7, 7) and maps.min() >= 0 and np.allclose(maps.max(axis=(1, 2)), 1.0)
    top = book.predict(model, photos[:2]).argmax(axis=1)
    np.testing.assert_allclose(book.grad_cam(model, photos[:2], class_index=top), maps, atol=1e-6)
    other = book.grad_cam(model, photos[:2], class_index=3)
    assert not np.allclose(other, maps), "explaining another class should give another map"


def test_grad_cam_works_on_a_backbone_with_a_new_head(book, photos):
    backbone = book.freeze(book.pretrained_backbone("mobilenet_v2"))
    model = book.add_head(backbone, book.new_head(book.feature_dim(backbone), num_classes=4))
    maps = book.grad_cam(model, photos[:2, :64, :64], class_index=[0, 3], block_index=13)
    assert maps.shape == (2, 4, 4) and np.isfinite(maps).all()


def test_grad_cam_rejects_bad_blocks_and_classes(book, photos):
    model = book.pretrained_model("mobilenet_v2")
    with pytest.raises(ValueError, match=r"block_index must be an integer in -19\.\.18"):
        book.grad_cam(model, photos[:1], block_index=19)
    with pytest.raises(ValueError, match=r"class_index must be in 0\.\.999"):
        book.grad_cam(model, photos[:1], class_index=1000)
    with pytest.raises(ValueError, match="one integer or 1 integers"):
        book.grad_cam(model, photos[:1], class_index=[1, 2])


# ---- splitting a network at a block ----


def test_split_model_reproduces_the_model_and_shares_its_weights(book, images):
    x, y = images
    backbone = book.pretrained_backbone("mobilenet_v2")
    model = book.add_head(backbone, book.new_head(book.feature_dim(backbone), num_classes=3))
    lower, upper = book.split_model(model, 17)
    entering = book.predict(lower, x)
    assert entering.shape[1:] == (1, 1, 160)
    np.testing.assert_allclose(book.predict(upper, entering), book.predict(model, x), atol=1e-4)
    full = book.pretrained_model("mobilenet_v2")
    low, up = book.split_model(full, -1)
    np.testing.assert_allclose(book.predict(up, book.predict(low, x)), book.predict(full, x), atol=1e-4)

    book.freeze(lower)
    before = book.block_weights(model)
    book.fit(upper, (entering, y), epochs=1, lr=0.01, batch_size=4, verbose=False)
    change = interpretation.relative_change(before, book.block_weights(model))
    assert (change[:17] == 0).all() and (change[17:] > 0).all(), "training the upper part must train the model"


def test_split_model_rejects_a_block_outside_the_network(book):
    with pytest.raises(ValueError, match=r"in -19\.\.18"):
        book.split_model(book.pretrained_backbone("mobilenet_v2"), -20)


# ---- per-block weights ----


def test_block_weights_cover_every_parameter_and_match_across_frameworks():
    import helpers.keras as hk
    import helpers.torch as ht

    sizes = {}
    for book in (ht, hk):
        backbone = book.pretrained_backbone("mobilenet_v2")
        weights = book.block_weights(backbone)
        assert len(weights) == 19 and sum(w.size for w in weights) == book.count_params(backbone)["total"]
        sizes[book] = [w.size for w in weights]
        np.testing.assert_array_equal(interpretation.relative_change(weights, weights), np.zeros(19))
    assert sizes[ht] == sizes[hk]


def test_relative_change_values_and_errors():
    before = [np.array([3.0, 4.0]), np.ones(3)]
    after = [np.array([3.0, 4.5]), np.ones(3)]
    np.testing.assert_allclose(interpretation.relative_change(before, after), [0.1, 0.0])
    with pytest.raises(ValueError, match="same blocks"):
        interpretation.relative_change(before, after[:1])
    with pytest.raises(ValueError, match="block 1"):
        interpretation.relative_change(before, [after[0], np.ones(2)])


# ---- neutral Grad-CAM arithmetic ----


def test_grad_cam_maps_weight_channels_by_mean_gradient():
    activations = np.zeros((1, 2, 2, 2), dtype=np.float32)
    activations[0, 0, 0, 0] = 2.0  # channel 0 fires top-left, channel 1 bottom-right
    activations[0, 1, 1, 1] = 1.0
    gradients = np.zeros_like(activations)
    gradients[..., 0], gradients[..., 1] = 1.0, -1.0  # channel 1 lowers the score
    np.testing.assert_allclose(interpretation.grad_cam_maps(activations, gradients)[0], [[1, 0], [0, 0]])
    np.testing.assert_array_equal(interpretation.grad_cam_maps(activations, -gradients * 0), np.zeros((1, 2, 2)))
    with pytest.raises(ValueError, match="NHWC"):
        interpretation.grad_cam_maps(activations, gradients[..., :1])


def test_target_classes():
    logits = np.array([[0.0, 2.0, 1.0], [3.0, 0.0, 0.0]])
    assert interpretation.target_classes(logits).tolist() == [1, 0]
    assert interpretation.target_classes(logits, 2).tolist() == [2, 2]
    assert interpretation.target_classes(logits, np.array([0, 1])).tolist() == [0, 1]
    with pytest.raises(ValueError, match="0..2"):
        interpretation.target_classes(logits, 3)
    with pytest.raises(ValueError, match="one integer or 2 integers"):
        interpretation.target_classes(logits, [0.5, 1.0])


def test_interpret_imports_no_framework():
    code = (
        "import sys, helpers.interpretation; bad = [m for m in ('torch', 'tensorflow', 'keras') if m in sys.modules]; "
    )
    subprocess.run([sys.executable, "-c", code + "assert not bad, bad"], check=True)

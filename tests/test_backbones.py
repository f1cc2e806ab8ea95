"""Chapter 17: EfficientNet-Lite0 in both frameworks (the package's network regrouped into blocks, the Keras port,
the stored reference logits), the cost helpers (time per image, peak memory of a step), the result table and the
clear error for an unknown backbone."""

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from helpers import backbones, data, models, registry
from helpers import keras as hk  # conftest.py has imported torch first, as it must be
from helpers import torch as ht
from helpers.keras import efficientnet_port
from helpers.torch import efficientnet as torch_efficientnet

FRAMEWORKS = {"torch": ht, "keras": hk}
REFERENCE = backbones.Path(__file__).resolve().parent.parent / "helpers" / "reference_logits_efficientnet.npz"


@pytest.fixture(scope="module")
def photos():
    """The shipped photos at 224 px: (uint8 crops, ImageNet-normalised input)."""
    return data.photo_batch(size=224)


def test_every_checkpoint_tensor_gets_a_name_of_the_book_network():
    state = torch.load(registry.fetch("efficientnet_lite0-torch"), map_location="cpu", weights_only=True)
    renamed = {models.lite0_tensor_name(k) for k in state}
    assert renamed == set(torch_efficientnet.lite0_classifier().state_dict()) and len(renamed) == len(state)
    assert models.lite0_tensor_name("_blocks.15._project_conv.weight") == "features.16._project_conv.weight"
    with pytest.raises(ValueError, match="not a tensor of the EfficientNet-Lite0 checkpoint"):
        models.lite0_tensor_name("classifier.weight")


def test_symmetric_scaling_gives_the_range_the_network_was_trained_on(photos):
    crops, inputs = photos
    wanted = crops.astype(np.float32) / 127.5 - 1  # the package's preprocessing of raw pixels
    scaled = torch_efficientnet.SymmetricInput()(torch.from_numpy(inputs).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    np.testing.assert_allclose(scaled.numpy(), wanted, atol=1e-2)  # 1/255 rounding of data.resize vs 1/127.5
    stem = efficientnet_port.feature_blocks()[0]
    keras_scaled = np.asarray(stem.get_layer("features_0_scale")(inputs))
    np.testing.assert_allclose(keras_scaled, scaled.numpy(), atol=1e-6)


def test_torch_blocks_compute_what_the_package_computes(photos):
    """The regrouped network on ImageNet-normalised input = the package's own EfficientNet on [-1, 1] input."""
    from efficientnet_lite_pytorch import EfficientNet

    crops, inputs = photos
    package = EfficientNet.from_name("efficientnet-lite0")
    package.load_state_dict(torch.load(registry.fetch("efficientnet_lite0-torch"), weights_only=True))
    with torch.no_grad():
        expected = package.eval()(torch.from_numpy(crops / np.float32(127.5) - 1).permute(0, 3, 1, 2)).numpy()
    got = ht.predict(ht.pretrained_model("efficientnet_lite0"), inputs)
    assert np.abs(got - expected).max() < 1e-4  # 127.5 vs ImageNet std round trip: ~6e-6 measured


@pytest.mark.parametrize("name", FRAMEWORKS)
def test_pretrained_logits_match_the_stored_reference_in_both_frameworks(name, photos):
    book = FRAMEWORKS[name]
    logits = book.predict(book.pretrained_model("efficientnet_lite0"), photos[1])
    reference = np.load(REFERENCE)
    assert np.abs(logits - reference[name]).max() < 1e-4
    assert np.abs(logits - reference["keras" if name == "torch" else "torch"]).max() < 1e-4
    names = [data.imagenet_classes()[i] for i in logits.argmax(1)]
    assert names[:2] == ["Egyptian cat", "espresso"], names


def test_the_keras_port_reads_every_tensor_of_the_file():
    model = efficientnet_port.classifier(1000)
    state = load_file(registry.fetch("efficientnet_lite0-keras"))
    assert efficientnet_port.load_torch_state(model, state) == len(state)
    assert efficientnet_port.tensor_key("features_3_bn1") == "features.3._bn1"
    assert efficientnet_port.tensor_key("features_17_conv") == "features.17.conv"


@pytest.mark.parametrize("name", FRAMEWORKS)
def test_lite0_structure_blocks_freezing(name):
    book = FRAMEWORKS[name]
    backbone = book.pretrained_backbone("efficientnet_lite0")
    assert len(book.blocks(backbone)) == models.LITE0_BLOCKS + 2 and book.feature_dim(backbone) == 1280
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
    early, late = book.block_outputs(backbone, x, [1, -1])
    assert early.shape == (2, 32, 32, 16) and late.shape == (2, 2, 2, 1280)
    total = book.count_params(backbone)["total"]
    assert book.count_params(book.freeze(backbone)) == {"trainable": 0, "total": total}
    assert book.count_params(book.pretrained_model("efficientnet_lite0"))["total"] == 4_652_008
    random = book.pretrained_backbone("efficientnet_lite0", weights=None)
    assert not np.allclose(book.predict(random, x), book.predict(backbone, x))


@pytest.mark.parametrize("name", FRAMEWORKS)
def test_an_unknown_backbone_name_lists_the_known_ones(name):
    book = FRAMEWORKS[name]
    with pytest.raises(ValueError, match="known models: mobilenet_v2, efficientnet_lite0, small_cnn"):
        book.pretrained_backbone("efficientnet_lite1")
    with pytest.raises(ValueError, match="models with weights: mobilenet_v2, efficientnet_lite0"):
        book.pretrained_model("small_cnn")


def test_peak_memory_growth_sees_an_allocation():
    assert backbones.peak_memory_growth(lambda: np.ones(10_000_000)) > 70  # 80 MB
    assert backbones.peak_memory_growth(lambda: None) < 20


@pytest.mark.parametrize("name", FRAMEWORKS)
def test_step_memory_grows_with_the_batch_and_leaves_the_weights(name):
    book = FRAMEWORKS[name]
    book.seed(0)
    model = book.small_cnn(10)
    x = np.random.default_rng(0).random((256, 28, 28, 1)).astype(np.float32)
    y = np.arange(256) % 10
    before = book.predict(model, x[:4])
    # A larger step first: its freed buffers stay in the process (TensorFlow's CPU pool keeps them), as they do after
    # earlier cells of a notebook or earlier tests in a pytest worker. The measurement must still see the step.
    book.step_memory(model, (np.concatenate([x, x]), np.concatenate([y, y])), batch_size=512)
    small, large = book.step_memory(model, (x, y), batch_size=2), book.step_memory(model, (x, y), batch_size=256)
    assert large > small + 20, (small, large)
    np.testing.assert_array_equal(book.predict(model, x[:4]), before)
    seconds = book.inference_seconds(model, x[:32], batch_size=16, repeats=1)
    assert 0 < seconds < 1
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        book.inference_seconds(model, x, batch_size=0)


def test_summarise_gives_mean_spread_and_runs():
    rows = [{"target": "t", "backbone": "b", "method": "probe", "test_accuracy": a} for a in (0.5, 0.7)] + [
        {"target": "t", "backbone": "c", "method": "probe", "test_accuracy": 0.9}
    ]
    table = backbones.summarise(rows)
    assert table["mean"].tolist() == pytest.approx([0.6, 0.9])
    assert table["std"].tolist() == pytest.approx([np.std([0.5, 0.7], ddof=1), 0.0])
    assert table["runs"].tolist() == [2, 1]
    with pytest.raises(ValueError, match="lack the columns"):
        backbones.summarise([{"target": "t"}])


def _batchnorm_statistics(name, model):
    """Every BatchNorm layer's running mean and variance, as NumPy arrays in layer order."""
    if name == "torch":
        modules = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        return [getattr(m, s).detach().cpu().numpy().copy() for m in modules for s in ("running_mean", "running_var")]
    from helpers.keras.mobilenet_port import leaf_layers

    layers = [lay for lay in leaf_layers(model) if lay.__class__.__name__ == "BatchNormalization"]
    return [np.array(v) for lay in layers for v in (lay.moving_mean, lay.moving_variance)]


@pytest.mark.parametrize("name", FRAMEWORKS)
def test_lp_ft_keeps_imagenet_batchnorm_and_restore_undoes_a_fine_tune(name):
    """The chapter's LP-FT: BatchNorm frozen in inference mode through `fit`; `restore(snapshot)` undoes the fit."""
    book = FRAMEWORKS[name]
    book.seed(0)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 32, 32, 3)).astype(np.float32), np.arange(16) % 4
    backbone = book.pretrained_backbone("efficientnet_lite0")
    model = book.freeze_batchnorm(book.add_head(backbone, book.new_head(1280, 4)))
    statistics, start, logits = _batchnorm_statistics(name, model), book.snapshot(model), book.predict(model, x)
    assert len(statistics) == 2 * 49
    book.fit(model, (x, y), epochs=1, lr=1e-3, batch_size=8, verbose=False)
    assert all(np.array_equal(a, b) for a, b in zip(statistics, _batchnorm_statistics(name, model)))
    assert not np.allclose(book.predict(model, x), logits), "the convolutions must train"
    np.testing.assert_allclose(book.predict(book.restore(model, start), x), logits, atol=1e-5)  # Keras: ~3e-7


def test_knn_accuracy_votes_among_the_nearest_training_features():
    train = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    labels = np.array([0, 0, 1, 1])
    query = np.array([[2.0, 0.1], [0.2, 3.0], [1.0, 0.0]])  # cosine: the scale does not matter
    assert backbones.knn_accuracy(train, labels, query, np.array([0, 1, 0]), k=1) == 1.0
    assert backbones.knn_accuracy(train, labels, query, np.array([1, 1, 0]), k=2) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="differ in length"):
        backbones.knn_accuracy(train, labels[:3], query, np.array([0, 1, 0]))

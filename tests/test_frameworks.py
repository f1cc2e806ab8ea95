"""Behaviour of the helper API, run once per framework with the same test code."""

import importlib

import numpy as np
import pytest

from helpers import config, data


@pytest.fixture(params=["torch", "keras"], scope="module")
def book(request):
    return importlib.import_module(f"helpers.{request.param}")


@pytest.fixture(scope="module")
def photos():
    return data.photo_batch(size=64)[1]


def _snapshot(book, model):
    """Every weight and BatchNorm statistic of a model, as NumPy arrays."""
    if book.__name__ == "helpers.torch":
        return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}
    return {w.path: np.array(w.numpy()) for w in model.weights}


def test_new_head_has_the_requested_number_of_classes(book, images):
    backbone = book.pretrained_backbone("mobilenet_v2")
    model = book.add_head(backbone, book.new_head(book.feature_dim(backbone), num_classes=3))
    assert book.predict(model, images[0]).shape == (8, 3)
    assert book.count_params(book.new_head(1280, 3))["trainable"] == 1280 * 3 + 3


def test_new_head_starts_like_pytorchs_linear_layer(book):
    """Both frameworks initialise a new head uniformly in +-1/sqrt(features) (weights and biases), so a
    fine-tuning run starts alike in both; Keras' Glorot default would be about 2.5 times larger."""
    book.seed(0)
    head = book.new_head(1280, 10)
    if book.__name__ == "helpers.torch":
        weights = [p.detach().numpy() for p in head.parameters()]
    else:
        weights = head.get_weights()
    limit = 1 / np.sqrt(1280)
    assert all(np.abs(w).max() <= limit for w in weights)  # the kernel and the bias
    assert np.abs(weights[0]).max() > 0.99 * limit  # uniform over the whole range, not a narrower one
    assert np.std(weights[0]) == pytest.approx(limit / np.sqrt(3), rel=0.05)
    with pytest.raises(ValueError, match="num_features must be an integer >= 1"):
        book.new_head(0, 10)


def test_loss_decreases_on_a_tiny_batch(book):
    book.seed(0)
    rng = np.random.default_rng(0)
    features, labels = rng.normal(size=(32, 16)).astype(np.float32), np.arange(32) % 4
    history = book.fit(book.new_head(16, 4), (features, labels), epochs=40, lr=0.05, batch_size=32, verbose=False)
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert len(history["loss"]) == len(history["epoch_seconds"]) == 40


def test_frozen_parameters_and_batchnorm_statistics_do_not_move(book, images):
    x, y = images
    backbone = book.freeze(book.pretrained_backbone("mobilenet_v2"))
    head = book.new_head(book.feature_dim(backbone), num_classes=3)
    model = book.add_head(backbone, head)
    before, head_before = _snapshot(book, backbone), _snapshot(book, head)
    book.fit(model, (x, y), epochs=1, lr=0.1, batch_size=4, verbose=False)
    after, head_after = _snapshot(book, backbone), _snapshot(book, head)
    assert before.keys() == after.keys()
    moved = [k for k in before if not np.array_equal(before[k], after[k])]
    assert not moved, f"frozen weights or statistics changed: {moved[:3]}"
    assert any(not np.array_equal(head_before[k], head_after[k]) for k in head_before), "the head did not train"


def test_freeze_and_unfreeze_change_the_trainable_count(book):
    backbone = book.pretrained_backbone("mobilenet_v2")
    total = book.count_params(backbone)["total"]
    assert book.count_params(book.freeze(backbone)) == {"trainable": 0, "total": total}
    assert book.count_params(book.unfreeze(backbone)) == {"trainable": total, "total": total}


def test_mobilenet_structure(book, photos):
    backbone = book.pretrained_backbone("mobilenet_v2")
    assert len(book.blocks(backbone)) == 19 and book.feature_dim(backbone) == 1280
    assert book.first_layer_filters(backbone).shape == (32, 3, 3, 3)
    early, late = book.block_outputs(backbone, photos[:2], [1, 18])
    assert early.shape == (2, 32, 32, 16) and late.shape == (2, 2, 2, 1280)
    assert book.count_params(book.pretrained_model("mobilenet_v2"))["total"] == 3_504_872


def test_pretrained_logits_match_the_stored_reference(book):
    _, inputs = data.photo_batch(size=224)
    logits = book.predict(book.pretrained_model("mobilenet_v2"), inputs)
    reference = np.load(config.REFERENCE_LOGITS)
    framework = book.__name__.split(".")[-1]
    assert np.abs(logits - reference[framework]).max() < 1e-4
    assert np.abs(logits - reference["keras" if framework == "torch" else "torch"]).max() < 1e-4


def test_save_refuses_to_overwrite_and_reload_gives_identical_predictions(book, tmp_path):
    rng = np.random.default_rng(1)
    features = rng.normal(size=(5, 16)).astype(np.float32)
    head = book.new_head(16, 3)
    suffix = ".pt" if book.__name__.endswith("torch") else ".weights.h5"
    path = book.save_weights(head, tmp_path / f"head{suffix}")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        book.save_weights(head, path)
    reloaded = book.load_weights(book.new_head(16, 3), path)
    np.testing.assert_array_equal(book.predict(head, features), book.predict(reloaded, features))


def test_seed_makes_initialisation_repeatable(book):
    features = np.ones((2, 16), dtype=np.float32)
    book.seed(7)
    first = book.predict(book.new_head(16, 3), features)
    book.seed(7)
    np.testing.assert_array_equal(first, book.predict(book.new_head(16, 3), features))


def test_bad_input_gets_a_clear_error(book):
    head = book.new_head(16, 3)
    features = np.zeros((4, 16), dtype=np.float32)
    with pytest.raises(ValueError, match="known optimizers: adam"):
        book.fit(head, (features, np.zeros(4, int)), optimizer="adamm", verbose=False)
    with pytest.raises(ValueError, match="lr must be a positive, finite number"):
        book.fit(head, (features, np.zeros(4, int)), lr=0, verbose=False)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        book.fit(head, (features, np.zeros(4, int)), batch_size=0, verbose=False)
    with pytest.raises(ValueError, match=r"labels must be in 0\.\.2"):
        book.fit(head, (features, np.array([0, 1, 2, 3])), verbose=False)
    with pytest.raises(ValueError, match="differ in length"):
        book.evaluate(head, (features, np.zeros(3, int)))
    with pytest.raises(ValueError, match="integer >= 2"):
        book.new_head(16, 1)
    with pytest.raises(ValueError, match="known models: mobilenet_v2"):
        book.pretrained_model("resnet50")
    with pytest.raises(ValueError, match="'imagenet' or None"):
        book.pretrained_backbone("mobilenet_v2", weights="imagenet21k")
    with pytest.raises(ValueError, match="no trainable parameters"):
        book.fit(book.freeze(head), (features, np.zeros(4, int)), verbose=False)


# ----------------------------------------------------------------------------- Keras' private API, in one module


def test_the_private_keras_api_behaves_as_the_helpers_expect():
    """helpers.keras.internals holds every use of Keras' and TensorFlow's private API (tests/test_imports.py keeps it
    there). Each is exercised here on the installed versions; they were checked on Keras internals.CHECKED_KERAS."""
    import keras

    from helpers.keras import internals

    assert keras.__version__ == internals.CHECKED_KERAS, (
        f"Keras {keras.__version__} is installed, the private API in helpers/keras/internals.py was checked on "
        f"{internals.CHECKED_KERAS}: run this test, read the Keras changes to the names it lists, then update "
        "CHECKED_KERAS"
    )
    inner = keras.Sequential([keras.layers.Dense(2, name="inner_dense")], name="inner")
    model = keras.Sequential([keras.Input((3,)), inner, keras.layers.Dense(1, name="outer_dense")], name="outer")
    names = [layer.name for layer in internals.flatten_layers(model) if not layer.name.startswith("input_layer")]
    assert names == ["outer", "inner", "inner_dense", "outer_dense"]  # self first, nested models entered
    flat = [layer.name for layer in internals.flatten_layers(model, include_self=False, recursive=False)]
    assert [name for name in flat if not name.startswith("input_layer")] == ["inner", "outer_dense"]

    # per-variable rates: `slow` steps at half the rate, plain SGD and AdamW's decoupled decay alike
    for optimizer, expected_fast, expected_slow in (
        (keras.optimizers.SGD(0.1), 1 - 0.1, 1 - 0.05),
        (keras.optimizers.AdamW(0.1, weight_decay=0.5), None, None),
    ):
        fast, slow = keras.Variable(np.ones(2, "float32")), keras.Variable(np.ones(2, "float32"))
        wrapped = internals.with_block_rates(optimizer, [([slow], 0.5)])
        assert type(wrapped).__name__ == f"BlockRate{type(optimizer).__name__}"
        wrapped.apply_gradients([(np.ones(2, "float32"), fast), (np.ones(2, "float32"), slow)])
        step_fast, step_slow = 1 - fast.numpy(), 1 - slow.numpy()
        if expected_fast is not None:
            np.testing.assert_allclose(fast.numpy(), expected_fast, rtol=1e-6)
            np.testing.assert_allclose(slow.numpy(), expected_slow, rtol=1e-6)
        else:  # AdamW's first step is lr * (1 + weight_decay) whatever the gradient: both halve for `slow`
            np.testing.assert_allclose(step_slow, step_fast / 2, rtol=1e-4)
            np.testing.assert_allclose(step_fast, 0.1 + 0.1 * 0.5, rtol=1e-4)

    was = internals.op_determinism_enabled()
    try:
        internals.set_op_determinism(True)
        assert internals.op_determinism_enabled()
        internals.set_op_determinism(False)
        assert not internals.op_determinism_enabled()
    finally:
        internals.set_op_determinism(was)


def test_the_two_frameworks_give_the_same_gradients_from_the_same_weights():
    """Chapter 3 says its Keras-PyTorch gap is the optimizer, not the network: from the same ImageNet weights and
    batch, the cross-entropy and its gradients agree across frameworks (BatchNorm and dropout in inference mode, as
    in the probe's features; here at the first convolution, the last 1x1 convolution and the classifier)."""
    import tensorflow as tf
    import torch

    from helpers import keras as kb
    from helpers import torch as tb

    _, inputs = data.photo_batch(size=96)
    labels = np.arange(len(inputs)) * 97 % 1000
    tm, km = tb.pretrained_model("mobilenet_v2").eval(), kb.pretrained_model("mobilenet_v2")
    x = torch.from_numpy(np.ascontiguousarray(inputs.transpose(0, 3, 1, 2)))
    loss = torch.nn.functional.cross_entropy(tm(x), torch.from_numpy(labels))
    loss.backward()
    torch_grads = {name: p.grad.numpy() for name, p in tm.named_parameters()}
    with tf.GradientTape() as tape:
        logits = km(tf.constant(inputs), training=False)
        keras_loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.constant(labels), logits=logits)
        )
    keras_grads = dict(zip([w.path for w in km.trainable_weights], tape.gradient(keras_loss, km.trainable_weights)))
    # both lists follow the layers from input to output, so the same index is the same layer
    assert abs(loss.item() - float(keras_loss)) < 1e-4 * abs(loss.item())
    # torch keeps (out, in, kh, kw) and (out, in); Keras (kh, kw, in, out) and (in, out): same numbers, transposed
    torch_kernels = [g for name, g in torch_grads.items() if name.endswith("weight") and g.ndim in (2, 4)]
    keras_kernels = [np.asarray(g) for g in keras_grads.values() if len(g.shape) in (2, 4)]
    assert len(torch_kernels) == len(keras_kernels) == 53
    for i in (0, -2, -1):  # the first convolution, the last 1x1 convolution, the classifier (none is depthwise)
        t = torch_kernels[i]
        t = t.transpose(2, 3, 1, 0) if t.ndim == 4 else t.T
        k = keras_kernels[i]
        assert t.shape == k.shape, (i, t.shape, k.shape)
        scale = np.abs(t).max()
        assert scale > 0 and np.abs(t - k).max() < 1e-3 * scale, (i, np.abs(t - k).max(), scale)

"""Chapter 12's framework helpers (AdaBN, CORAL, gradient reversal, fit_adapted), the same checks in both frameworks."""

import numpy as np
import pytest
import torch

import helpers.torch as torch_half
from conftest import keras_half
from helpers import domain_adaptation, tuning

tf = keras_half.models.tf
BOTH = [torch_half, keras_half]
IDS = ["torch", "keras"]


def _images(n=16, shift=0.0, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(rng.uniform(size=(n, 28, 28, 3)) * 0.5 + shift, 0, 1).astype(np.float32)


def _weights(book, model):
    if book is torch_half:
        return [p.detach().numpy().copy() for p in model.parameters()]
    return [keras_half.models.keras.ops.convert_to_numpy(w) for w in model.trainable_weights]


def _first_conv_outputs(book, model, x):
    """What the first BatchNorm layer sees: the first convolution's outputs, per channel (N*H*W, C)."""
    if book is torch_half:
        conv = model.backbone.features[0][0]
        with torch.no_grad():
            out = conv(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    else:
        conv = model.layers[1].layers[1].layers[1]
        out = np.array(conv(x))
    return out.reshape(-1, out.shape[-1])


@pytest.mark.parametrize("book", BOTH, ids=IDS)
def test_adapt_batchnorm_takes_the_target_statistics_and_keeps_the_weights(book):
    book.seed(0)
    model = book.small_cnn(10, channels=3)
    target = _images(24, shift=0.4)
    weights = _weights(book, model)
    before = book.batchnorm_statistics(model)
    book.adapt_batchnorm(model, target, batch_size=8)
    after = book.batchnorm_statistics(model)
    assert len(after) == 4 and not np.allclose(before[0][0], after[0][0])
    outputs = _first_conv_outputs(book, model, target)
    np.testing.assert_allclose(after[0][0], outputs.mean(0), atol=1e-5)  # equal batches: the population mean
    batch_vars = [_first_conv_outputs(book, model, target[i : i + 8]).var(0) for i in (0, 8, 16)]
    np.testing.assert_allclose(after[0][1], np.mean(batch_vars, 0), rtol=1e-3)  # the mean of the batch variances
    for old, new in zip(weights, _weights(book, model)):
        np.testing.assert_array_equal(old, new)


@pytest.mark.parametrize("book", BOTH, ids=IDS)
def test_coral_loss_equals_the_numpy_hand_computation(book):
    rng = np.random.default_rng(1)
    source, target = rng.normal(size=(12, 5)).astype(np.float32), (rng.normal(size=(9, 5)) * 1.7).astype(np.float32)
    as_tensor = torch.from_numpy if book is torch_half else tf.convert_to_tensor
    loss = float(book.coral_loss(as_tensor(source), as_tensor(target)))
    assert loss == pytest.approx(domain_adaptation.coral_distance(source, target), rel=1e-4)
    assert loss > 0


def test_gradient_reversal_forward_identity_backward_negated_and_scaled():
    x = np.array([[1.0, -2.0, 3.0]], dtype=np.float32)
    upstream = np.array([[0.5, 1.0, -4.0]], dtype=np.float32)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch_half.gradient_reversal(xt, 0.3)
    (yt * torch.from_numpy(upstream)).sum().backward()
    xk = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xk)
        yk = keras_half.gradient_reversal(xk, 0.3)
        total = tf.reduce_sum(yk * upstream)
    for forward, grad in [(yt.detach().numpy(), xt.grad.numpy()), (np.array(yk), np.array(tape.gradient(total, xk)))]:
        np.testing.assert_array_equal(forward, x)
        np.testing.assert_allclose(grad, -0.3 * upstream, rtol=1e-6)


def _dense_model(book):
    if book is torch_half:
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28 * 3, 10))
    keras = keras_half.models.keras
    return keras.Sequential([keras.Input((28, 28, 3)), keras.layers.Flatten(), keras.layers.Dense(10)])


@pytest.mark.parametrize("book", BOTH, ids=IDS)
def test_bad_input_raises_one_clear_value_error(book):
    book.seed(0)
    model = book.small_cnn(10, channels=3)
    xs, ys, xt = _images(8), np.arange(8) % 10, _images(8, shift=0.3)
    grey = _images(8)[..., :1]
    with pytest.raises(ValueError, match="differ in shape"):
        book.fit_adapted(book.small_cnn(10, channels=1), (grey, ys), xt[:, :14, :14, :1], method="coral")
    with pytest.raises(ValueError, match=r"target_x must be the inputs only.*never uses target labels"):
        book.fit_adapted(model, (xs, ys), (xt, ys))
    with pytest.raises(ValueError, match=r"target_x must be the inputs only.*never uses target labels"):
        book.adapt_batchnorm(model, (xt, ys))
    with pytest.raises(ValueError, match=">= 0"):
        book.gradient_reversal(np.ones((2, 3), np.float32), -1.0)
    with pytest.raises(ValueError, match=">= 0"):
        book.fit_adapted(model, (xs, ys), xt, method="dann", weight=-0.5)
    with pytest.raises(ValueError, match="no BatchNorm layer"):
        book.adapt_batchnorm(_dense_model(book), xt)


@pytest.mark.parametrize("book", BOTH, ids=IDS)
@pytest.mark.parametrize("method", domain_adaptation.METHODS)
def test_fit_adapted_trains_and_reports_its_losses(book, method):
    book.seed(0)
    model = book.small_cnn(10, channels=3)
    xs, ys, xt = _images(32), np.arange(32) % 10, _images(32, shift=0.4, seed=1)
    history = book.fit_adapted(model, (xs, ys), xt, method=method, weight=1.0, epochs=2, batch_size=16, lr=3e-3)
    assert set(history) == {"loss", "cross_entropy", "alignment", "epoch_seconds"} and len(history["loss"]) == 2
    assert history["cross_entropy"][1] < history["cross_entropy"][0]
    if method == "source":
        assert history["alignment"] == [0.0, 0.0]
    elif method == "coral":
        assert history["loss"][0] > history["cross_entropy"][0]
    else:
        assert 0.3 < history["alignment"][0] < 1.0  # a binary cross-entropy near log 2 while the domains mix


@pytest.mark.parametrize("book", BOTH, ids=IDS)
def test_backbone_features_are_the_pooled_width(book):
    book.seed(0)
    model = book.small_cnn(10, channels=3)
    assert book.backbone_features(model, _images(5)).shape == (5, 128)


@pytest.mark.parametrize("method", ["coral", "dann"])
def test_keras_fit_adapted_with_fit_equals_a_hand_written_gradient_tape_loop(method):
    """The Keras helper trains an AlignedTraining model with compile/fit (DANN's weight set by a callback); from the
    same start, a plain GradientTape loop over the same batches, with the ramp computed per step, ends at the same
    weights."""
    keras, da = keras_half.models.keras, keras_half.domain_adaptation
    xs, ys, xt = _images(40), np.arange(40) % 10, _images(24, shift=0.4, seed=1)
    epochs, batch, lr, seed = 2, 16, 3e-3, 5
    keras_half.seed(0)
    fitted = keras_half.small_cnn(10, channels=3)
    history = keras_half.fit_adapted(
        fitted, (xs, ys), xt, method=method, weight=0.7, epochs=epochs, batch_size=batch, lr=lr, seed=seed
    )
    keras_half.seed(0)
    model = keras_half.small_cnn(10, channels=3)
    backbone, head = model.layers[1], model.layers[2]
    discriminator = da._discriminator(128) if method == "dann" else None  # drawn where the helper draws it
    variables = model.trainable_weights + (discriminator.trainable_weights if discriminator else [])
    optimizer = keras.optimizers.Adam(learning_rate=lr, epsilon=tuning.ADAM_EPSILON)
    steps = 3  # ceil(40 / 16)
    source_order = tuning.batch_order(40, batch, epochs * steps, seed)
    target_order = tuning.batch_order(24, batch, epochs * steps, seed + 1)
    losses = []
    for k in range(epochs * steps):
        xb, yb, tb = xs[source_order[k]], ys[source_order[k]], xt[target_order[k]]
        with tf.GradientTape() as tape:
            features = backbone(np.concatenate([xb, tb]), training=True)
            logits = head(features[: len(xb)], training=True)
            loss = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(yb, logits, from_logits=True))
            if method == "coral":
                loss += 0.7 * keras_half.coral_loss(features[: len(xb)], features[len(xb) :])
            else:
                reversal = 0.7 * domain_adaptation.dann_ramp(k / (epochs * steps))
                domain_logits = discriminator(keras_half.gradient_reversal(features, reversal), training=True)
                domain_labels = np.concatenate([np.zeros((len(xb), 1)), np.ones((len(tb), 1))]).astype(np.float32)
                loss += keras.ops.mean(keras.losses.binary_crossentropy(domain_labels, domain_logits, from_logits=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        losses.append(float(loss))
    np.testing.assert_allclose(history["loss"], [np.mean(losses[:steps]), np.mean(losses[steps:])], rtol=1e-4)
    for a, b in zip(fitted.get_weights(), model.get_weights()):  # BatchNorm's moving statistics included
        np.testing.assert_allclose(a, b, atol=1e-4)

"""The two halves behave the same for the same call, and refuse bad input the same way.

Every test here runs once per framework with the same code; each one failed on the helpers before the
foundation rework (issue 9, sections 2 and 3), where the two halves differed or a framework error leaked out.
"""

import importlib

import numpy as np
import pytest

from helpers import text, tuning


@pytest.fixture(params=["torch", "keras"], scope="module")
def book(request):
    return importlib.import_module(f"helpers.{request.param}")


@pytest.fixture(scope="module")
def backbone(book):
    return book.pretrained_backbone("mobilenet_v2")


@pytest.fixture
def photos():
    rng = np.random.default_rng(0)
    return rng.normal(size=(2, 32, 32, 3)).astype(np.float32)


# ---- the same call gives the same behaviour ----


def test_train_top_layers_on_a_bare_encoder_trains_only_the_top_layers_and_the_pooler(book):
    encoder = book.train_top_layers(book.text_encoder(), 2)
    layers = book.encoder_layers(encoder)
    per_layer = book.count_params(layers[0])["total"]
    pooler = 384 * 384 + 384
    assert book.count_params(encoder)["trainable"] == 2 * per_layer + pooler
    assert [book.count_params(layer)["trainable"] for layer in layers] == [0, 0, 0, 0, per_layer, per_layer]


def test_block_outputs_counts_negative_indices_from_the_end(book, backbone, photos):
    last, same, first = book.block_outputs(backbone, photos, [-1, 18, -19])
    assert last.shape == (2, 1, 1, 1280)
    np.testing.assert_array_equal(last, same)
    assert first.shape == (2, 16, 16, 32)
    with pytest.raises(ValueError, match=r"-19\.\.18"):
        book.block_outputs(backbone, photos, [19])


def test_feature_dim_of_a_model_with_a_head_is_its_backbones(book, backbone):
    model = book.add_head(backbone, book.new_head(1280, 5))
    assert book.feature_dim(backbone) == book.feature_dim(model) == 1280


def test_one_tokenizer_for_both_frameworks(book):
    from tokenizers import Tokenizer

    assert isinstance(book.text_tokenizer(), Tokenizer)
    tokens = book.tokenize(["Fine-tuning in two frameworks."], 12)
    for name, values in text.encode(["Fine-tuning in two frameworks."], 12).items():
        np.testing.assert_array_equal(tokens[name], values)


@pytest.mark.parametrize(
    ("name", "epsilon"),
    [("adam", tuning.ADAM_EPSILON), ("adamw", tuning.ADAM_EPSILON), ("adagrad", tuning.ADAGRAD_EPSILON)],
)
def test_optimizer_epsilons_come_from_tuning(book, name, epsilon):
    model = book.new_head(4, 2)
    if book.__name__ == "helpers.torch":
        assert book.training._make_optimizer(name, list(model.parameters()), 0.1).defaults["eps"] == epsilon
    else:  # Keras' Adagrad adds epsilon inside the square root, PyTorch's outside
        expected = epsilon**2 if name == "adagrad" else epsilon
        assert book.training._make_optimizer(name, 0.1).epsilon == pytest.approx(expected)


def _features(n=32, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.normal(size=(n, 8)).astype(np.float32) + y[:, None].astype(np.float32)
    return x, y


def test_history_reports_the_objective_and_the_plain_cross_entropy_on_both_splits(book):
    train, validation = _features(), _features(seed=1)
    book.seed(0)
    plain = book.fit(book.new_head(8, 3), train, validation, epochs=2, lr=0.05, verbose=False)
    assert {"loss", "cross_entropy", "val_loss", "val_cross_entropy"} <= set(plain)
    np.testing.assert_allclose(plain["val_loss"], plain["val_cross_entropy"], rtol=1e-4)

    book.seed(0)
    head = book.new_head(8, 3)
    smoothing = 0.3
    smoothed = book.fit(head, train, validation, epochs=2, lr=0.05, label_smoothing=smoothing, verbose=False)
    logits = book.predict(head, validation[0]).astype(np.float64)
    log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    target = np.eye(3)[validation[1]] * (1 - smoothing) + smoothing / 3
    assert smoothed["val_loss"][-1] == pytest.approx(-(target * log_probs).sum(1).mean(), rel=1e-4)
    assert smoothed["val_cross_entropy"][-1] == pytest.approx(book.evaluate(head, validation)["loss"], rel=1e-4)
    assert smoothed["val_loss"][-1] > smoothed["val_cross_entropy"][-1]  # smoothing adds to a confident loss here
    assert smoothed["loss"][-1] > smoothed["cross_entropy"][-1]  # the training cross-entropy is measured apart


# ---- bad input: one clear error from the helpers, the same in both frameworks ----


def test_greyscale_images_into_an_rgb_network(book, backbone):
    grey = np.zeros((2, 32, 32, 1), dtype=np.float32)
    with pytest.raises(ValueError, match=r"expects 3 channel\(s\), got 1.*np\.repeat"):
        book.predict(backbone, grey)


def test_images_without_a_channel_axis(book, backbone):
    with pytest.raises(ValueError, match="without a channel axis"):
        book.predict(backbone, np.zeros((2, 32, 32), dtype=np.float32))
    with pytest.raises(ValueError, match="without a channel axis"):
        book.evaluate(book.small_cnn(3), (np.zeros((2, 28, 28), dtype=np.float32), np.zeros(2, int)))


def test_empty_training_data(book):
    with pytest.raises(ValueError, match="no examples"):
        book.fit(book.new_head(8, 3), (np.zeros((0, 8), np.float32), np.zeros(0, int)), verbose=False)


def test_raw_pixels_are_refused_with_the_fix(book, backbone):
    pixels = np.full((2, 32, 32, 3), 200, dtype=np.uint8)
    with pytest.raises(ValueError, match="data.imagenet_input"):
        book.predict(backbone, pixels)
    with pytest.raises(ValueError, match="raw pixels"):
        book.predict(backbone, pixels.astype(np.float32))
    model = book.add_head(backbone, book.new_head(1280, 3))
    with pytest.raises(ValueError, match="data.imagenet_input"):
        book.fit(model, (pixels, np.zeros(2, int)), verbose=False)
    with pytest.raises(ValueError, match="data.imagenet_input"):
        book.evaluate(model, (pixels, np.zeros(2, int)))


def test_numpy_integers_are_accepted_as_counts(book):
    model = book.small_cnn(np.int64(3), channels=np.int32(1))
    book.unfreeze_top(model, np.int64(2))
    assert book.count_params(book.new_head(np.int64(8), np.int64(3)))["total"] == 8 * 3 + 3
    x, y = np.zeros((4, 28, 28, 1), np.float32), np.arange(4) % 3
    history = book.fit(model, (x, y), epochs=np.int64(1), batch_size=np.int64(2), verbose=False)
    assert len(history["loss"]) == 1


@pytest.mark.parametrize("option", ["epochs", "batch_size"])
@pytest.mark.parametrize("value", [1.0, 2.5, True, "4"])
def test_counts_must_be_integers(book, option, value):
    x, y = _features()
    with pytest.raises(ValueError, match=f"{option} must be an integer"):
        book.fit(book.new_head(8, 3), (x, y), verbose=False, **{option: value})


def test_labels_are_checked_against_the_real_output_size(book):
    """A model with no final linear/dense layer (a 1x1 convolution classifier; a subclassed Keras model) still
    has its labels checked against what it really outputs."""
    model = _conv_classifier(book)
    x = np.zeros((4, 8, 8, 3), np.float32)
    with pytest.raises(ValueError, match=r"labels must be in 0\.\.2"):
        book.evaluate(model, (x, np.array([0, 1, 2, 5])))
    assert book.evaluate(model, (x, np.array([0, 1, 2, 2])))["accuracy"] >= 0


def _conv_classifier(book):
    if book.__name__ == "helpers.torch":
        from torch import nn

        return nn.Sequential(nn.Conv2d(3, 3, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    import keras

    class Classifier(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv, self.pool = keras.layers.Conv2D(3, 1), keras.layers.GlobalAveragePooling2D()

        def call(self, x):
            return self.pool(self.conv(x))

    return Classifier()


def test_labels_must_be_integer_class_ids(book):
    x, y = _features()
    with pytest.raises(ValueError, match="integer class ids"):
        book.evaluate(book.new_head(8, 3), (x, y.astype(np.float32)))
    with pytest.raises(ValueError, match="one-hot labels"):
        book.evaluate(book.new_head(8, 3), (x, np.eye(3)[y]))
    with pytest.raises(ValueError, match="pair"):
        book.evaluate(book.new_head(8, 3), x)


def test_nonfinite_inputs_and_wrong_feature_sizes(book):
    x, y = _features()
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        book.fit(book.new_head(8, 3), (x, y), verbose=False)
    with pytest.raises(ValueError, match=r"\(N, 8\)"):
        book.predict(book.new_head(8, 3), np.zeros((2, 5), np.float32))


def test_index_checks_refuse_floats_and_bools(book, backbone):
    with pytest.raises(ValueError, match="block_index"):
        book.grad_cam(book.add_head(backbone, book.new_head(1280, 3)), np.zeros((1, 32, 32, 3), np.float32), None, 1.0)
    with pytest.raises(ValueError, match="block index"):
        book.block_outputs(backbone, np.zeros((1, 32, 32, 3), np.float32), [True])


def test_keras_smoke_runs_eagerly_and_the_graph_gives_the_same_training(monkeypatch):
    """The smoke profile skips Keras' graph tracing (config.Profile.keras_eager); the graph the other profiles
    compile must train exactly alike."""
    from helpers import keras as hk

    x, y = _features()
    histories = {}
    for profile in ("smoke", "cpu"):
        monkeypatch.setenv("BOOK_PROFILE", profile)
        hk.seed(0)
        head = hk.new_head(8, 3)
        histories[profile] = hk.fit(head, (x, y), epochs=3, lr=0.05, batch_size=8, verbose=False)
        assert head.run_eagerly is (profile == "smoke")
    assert histories["cpu"]["loss"][-1] < histories["cpu"]["loss"][0]
    np.testing.assert_allclose(histories["smoke"]["loss"], histories["cpu"]["loss"], rtol=1e-4)

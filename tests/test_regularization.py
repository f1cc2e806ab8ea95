"""Chapter 06: L2-SP, early stopping and data augmentation, in both frameworks.

The `features` (three separable clusters) and `images` fixtures are in tests/conftest.py.
"""

import importlib

import numpy as np
import pytest


@pytest.fixture(params=["torch", "keras"], scope="module")
def book(request):
    return importlib.import_module(f"helpers.{request.param}")


# ---- L2-SP, early stopping ----


def _small_network(book):
    """The top block of MobileNetV2 (split off with split_model) with a new head: a quick network with a `head`."""
    book.seed(0)
    backbone = book.pretrained_backbone("mobilenet_v2")
    _, upper = book.split_model(backbone, 18)
    return book.add_head(upper, book.new_head(book.feature_dim(backbone), num_classes=3)), backbone


def test_l2_sp_keeps_the_pretrained_weights_near_their_start_but_not_the_head(book):
    rng = np.random.default_rng(0)
    activations, labels = rng.normal(size=(24, 2, 2, 320)).astype(np.float32), np.arange(24) % 3
    moved = {}
    for l2_sp in (0.0, 10.0):
        model, backbone = _small_network(book)
        start = book.block_weights(backbone)[18]
        book.fit(model, (activations, labels), epochs=3, lr=1e-3, batch_size=8, l2_sp=l2_sp, verbose=False)
        moved[l2_sp] = np.linalg.norm(book.block_weights(backbone)[18] - start)
    assert 0 < moved[10.0] < 0.5 * moved[0.0]


def test_early_stopping_stops_and_restores_the_best_weights(book, features):
    x, y = features
    rng = np.random.default_rng(1)
    noisy_validation = (x[:24], rng.permutation(y[:24]))  # labels unrelated to inputs: validation loss rises
    book.seed(0)
    head = book.new_head(16, 3)
    history = book.fit(head, (x, y), validation=noisy_validation, epochs=40, lr=0.05, early_stopping=3, verbose=False)
    assert len(history["loss"]) < 40, "training should have stopped early"
    best = int(np.argmin(history["val_loss"]))
    assert len(history["loss"]) == best + 1 + 3
    assert book.evaluate(head, noisy_validation)["loss"] == pytest.approx(history["val_loss"][best], rel=1e-5)


# ---- augmentation ----


def _flip(book):
    if book.__name__ == "helpers.torch":
        from torchvision.transforms import v2

        return v2.RandomHorizontalFlip(p=0.5)
    import keras

    return keras.layers.RandomFlip("horizontal", seed=0)


def _zero(book):
    """An 'augmentation' that blanks every input, to see that fit really feeds augmented data."""
    return (lambda t: t * 0) if book.__name__ == "helpers.torch" else (lambda t, training=True: t * 0)


def test_augment_images_transforms_each_image_independently(book, images):
    book.seed(0)
    x = np.repeat(images[0][:1], 16, axis=0)
    out = book.augment_images(x, _flip(book))
    assert out.shape == x.shape
    flipped = [np.allclose(o, x[0][:, ::-1]) for o in out]
    same = [np.allclose(o, x[0]) for o in out]
    assert all(f or s for f, s in zip(flipped, same)) and any(flipped) and any(same)


def test_fit_trains_on_the_augmented_images(book, features):
    book.seed(0)
    plain = book.fit(book.new_head(16, 3), features, epochs=20, lr=0.05, verbose=False)
    blanked = book.fit(book.new_head(16, 3), features, epochs=20, lr=0.05, augment=_zero(book), verbose=False)
    assert plain["accuracy"][-1] > 0.9 and blanked["accuracy"][-1] < 0.5


# ---- bad input ----


def test_bad_regularization_options_get_a_clear_error(book, features):
    head = book.new_head(16, 3)
    fit = lambda **options: book.fit(head, features, verbose=False, **options)
    with pytest.raises(ValueError, match="l2_sp must be >= 0"):
        fit(l2_sp=-1.0)
    with pytest.raises(ValueError, match="pass validation="):
        fit(early_stopping=3)
    with pytest.raises(ValueError, match="integer >= 1"):
        fit(early_stopping=0, validation=features)
    with pytest.raises(ValueError, match="augment must be"):
        fit(augment="flip")

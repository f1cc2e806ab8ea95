import numpy as np
import pytest

from helpers import config, data


def test_fashion_mnist_has_the_documented_shape():
    x, y = data.load_fashion_mnist("test")
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [1000] * 10


def test_mnist_subset_has_500_digits_per_class():
    x, y = data.load_mnist_subset()
    assert x.shape == (5000, 28, 28) and np.bincount(y).tolist() == [500] * 10


def test_unknown_split_and_photo_are_rejected():
    with pytest.raises(ValueError, match="'train' or 'test'"):
        data.load_fashion_mnist("validation")
    with pytest.raises(ValueError, match="chelsea"):
        data.load_photo("lena")


def test_imagenet_input_resizes_replicates_and_normalises():
    grey = np.full((2, 28, 28), 255, dtype=np.uint8)
    x = data.imagenet_input(grey, 64)
    assert x.shape == (2, 64, 64, 3) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, 0, 0], (1 - data.IMAGENET_MEAN) / data.IMAGENET_STD, rtol=1e-6)
    np.testing.assert_allclose(data.unnormalize(x), 1.0, atol=1e-6)


def test_bad_image_shapes_say_what_was_expected():
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        data.imagenet_input(np.zeros((2, 28, 28, 5), dtype=np.uint8), 32)
    with pytest.raises(ValueError, match="uint8"):
        data.resize(np.zeros((1, 28, 28), dtype=np.float32), 32)


def test_balanced_subset_is_balanced_and_repeatable():
    x, y = np.arange(100), np.arange(100) % 4
    sx, sy = data.balanced_subset(x, y, per_class=5, seed=3)
    assert np.bincount(sy).tolist() == [5] * 4 and (sx % 4 == sy).all()
    assert (data.balanced_subset(x, y, per_class=5, seed=3)[0] == sx).all()
    with pytest.raises(ValueError, match="fewer than per_class"):
        data.balanced_subset(x, y, per_class=26)


def test_target_task_is_sized_by_the_profile():
    smoke = config.PROFILES["smoke"]
    for source in ("fashion", "mnist"):
        task = data.target_task(smoke, source=source)
        assert len(task["train_y"]) == 10 * smoke.train_per_class
        assert len(task["test_y"]) == 10 * smoke.test_per_class


def test_photos_and_class_names():
    crops, x = data.photo_batch(size=96)
    assert crops.shape == (4, 96, 96, 3) and x.shape == (4, 96, 96, 3)
    names = data.imagenet_classes()
    assert len(names) == 1000 and names[285] == "Egyptian cat"

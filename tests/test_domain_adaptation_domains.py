"""Chapter 12's data recipes (helpers.domain_adaptation, the MNIST-M blend in helpers.data): deterministic,
checksummed, shaped alike; the neutral formulas."""

import numpy as np
import pytest

from helpers import data, domain_adaptation

# sha256 of (train_x, train_y, test_x, test_y) of each domain, as domain_adaptation.checksum computes it. A change
# here means the recipe (or a library it renders with: PIL's resizing, FreeType's glyphs) changed: re-check the
# chapter's runs.
CHECKSUMS = {
    "mnist": "9c9a9872fd2b354b",
    "mnist_m": "66a08fe1a944c802",
    "optdigits": "9eddd6ba6ff27b03",
    "syndigits": "59bc63ebd34bd953",
}


@pytest.mark.parametrize("name", domain_adaptation.DOMAINS)
def test_each_domain_is_deterministic_and_checksummed(name):
    whole = domain_adaptation.domain(name)
    assert domain_adaptation.checksum(whole.values()).startswith(CHECKSUMS[name])
    domain_adaptation._build.cache_clear()  # build it again from the registry files: the same bytes
    assert domain_adaptation.checksum(domain_adaptation.domain(name).values()).startswith(CHECKSUMS[name])


@pytest.mark.parametrize("name", domain_adaptation.DOMAINS)
def test_domains_share_one_layout_and_all_ten_classes(name):
    whole = domain_adaptation.domain(name)
    for split in ("train", "test"):
        x, y = whole[f"{split}_x"], whole[f"{split}_y"]
        assert x.shape[1:] == (28, 28, 3) and x.dtype == np.uint8 and len(x) == len(y)
        assert set(np.unique(y)) == set(range(10))
    assert not whole["train_x"].flags.writeable  # shared between calls: read-only


def test_optdigits_recipe_scales_and_centres():
    images, labels = domain_adaptation.load_optdigits()
    assert images.shape == (1797, 8, 8) and images.max() == 16 and len(labels) == 1797
    big = domain_adaptation.optdigits_to_28(images[:5])
    assert big.shape == (5, 28, 28) and big.max() > 200
    assert big[:, :4].max() == 0 and big[:, 24:].max() == 0 and big[:, :, :4].max() == 0  # a 4-pixel empty border


def test_mnist_m_blend_is_the_absolute_difference():
    digits = np.zeros((3, 28, 28), dtype=np.uint8)
    digits[:, 10:18, 10:18] = 255
    blended = data.blend_with_photos(digits, seed=5)
    crops = data.photo_crops(3, seed=5)
    np.testing.assert_array_equal(blended[:, 0, 0], crops[:, 0, 0])  # background: the photo
    np.testing.assert_array_equal(blended[:, 12, 12], 255 - crops[:, 12, 12])  # stroke: |photo - 255|


def test_domain_task_is_balanced_and_its_test_set_fixed():
    a = domain_adaptation.domain_task("optdigits", 20, 5, seed=0)
    b = domain_adaptation.domain_task("optdigits", 20, 5, seed=1)
    assert np.bincount(a["train_y"]).tolist() == [20] * 10 and len(a["test_y"]) == 50
    np.testing.assert_array_equal(a["test_x"], b["test_x"])
    assert not np.array_equal(a["train_x"], b["train_x"])
    x = domain_adaptation.rgb_input(a["train_x"])
    assert x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1


def test_domain_task_validation_is_apart_from_training_and_leaves_training_unchanged():
    plain = domain_adaptation.domain_task("optdigits", 20, 5, seed=3)
    with_val = domain_adaptation.domain_task("optdigits", 20, 5, seed=3, validation_per_class=15)
    for key in ("train_x", "train_y", "test_x", "test_y"):
        np.testing.assert_array_equal(plain[key], with_val[key])
    assert np.bincount(with_val["val_y"]).tolist() == [15] * 10
    training = {image.tobytes() for image in with_val["train_x"]}
    assert not any(image.tobytes() in training for image in with_val["val_x"])
    other = domain_adaptation.domain_task("optdigits", 20, 5, seed=4, validation_per_class=15)
    assert not np.array_equal(other["val_x"], with_val["val_x"])
    with pytest.raises(ValueError, match="validation_per_class"):
        domain_adaptation.domain_task("optdigits", 150, 5, validation_per_class=100)


def test_coral_distance_by_hand():
    rng = np.random.default_rng(0)
    source, target = rng.normal(size=(6, 3)), 2 * rng.normal(size=(5, 3))
    cs = (source - source.mean(0)).T @ (source - source.mean(0)) / 5
    ct = (target - target.mean(0)).T @ (target - target.mean(0)) / 4
    assert domain_adaptation.coral_distance(source, target) == pytest.approx(((cs - ct) ** 2).sum() / 36)
    assert domain_adaptation.coral_distance(source, source) == 0


def test_domain_classifier_tells_shifted_features_apart():
    rng = np.random.default_rng(0)
    same = domain_adaptation.domain_classifier_accuracy(rng.normal(size=(200, 4)), rng.normal(size=(200, 4)))
    shifted = domain_adaptation.domain_classifier_accuracy(rng.normal(size=(200, 4)), rng.normal(size=(200, 4)) + 1.5)
    assert same < 0.65 < 0.85 < shifted


def test_dann_ramp_runs_from_zero_towards_one():
    assert domain_adaptation.dann_ramp(0.0) == 0 and 0.99 < domain_adaptation.dann_ramp(1.0) < 1
    assert domain_adaptation.dann_ramp(0.1) < domain_adaptation.dann_ramp(0.5)


def test_bad_input_names_the_fix():
    images = np.zeros((2, 28, 28, 3))
    # one rule with chapter 10 (checks.unlabelled): any pair is refused, one-hot labels included
    for labelled in ((images, np.array([0, 1])), (images, np.eye(2)), [images, np.array([0, 1])], {"x": images}):
        with pytest.raises(ValueError, match=r"inputs only.*not \(x, y\).*never uses target labels"):
            domain_adaptation.check_unlabelled(labelled)
    with pytest.raises(ValueError, match="differ in shape"):
        domain_adaptation.check_same_images((4, 28, 28, 1), (4, 28, 28, 3))
    with pytest.raises(ValueError, match=">= 0"):
        domain_adaptation.check_weight(-0.1)
    with pytest.raises(ValueError, match="Unknown domain"):
        domain_adaptation.domain("svhn")
    with pytest.raises(ValueError, match="Unknown method"):
        domain_adaptation.check_method("mmd")

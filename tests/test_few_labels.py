"""Chapter 10: prototypes, splits, pseudo-labels, self-/co-training and the FixMatch loss, in both frameworks.

The framework tests run once per framework with the same code: the two halves must compute the same loss and
refuse the same bad input with the same message.
"""

import importlib

import numpy as np
import pytest

from helpers import few_labels


@pytest.fixture(params=["torch", "keras"], scope="module")
def book(request):
    return importlib.import_module(f"helpers.{request.param}")


def _blobs(per_class=30, classes=3, dim=8, spread=0.3, seed=0):
    """Well separated Gaussian blobs: features (N, dim) float32 and labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(classes, dim))
    labels = np.repeat(np.arange(classes), per_class)
    return (centres[labels] + rng.normal(scale=spread, size=(len(labels), dim))).astype(np.float32), labels


# ---- framework-neutral: prototypes, CL2N, splits ----


def test_prototypes_are_class_means_and_the_nearest_one_wins():
    x = np.array([[0, 0], [2, 0], [10, 10], [12, 10]], dtype=np.float32)
    protos = few_labels.prototypes(x, np.array([0, 0, 1, 1]))
    np.testing.assert_allclose(protos, [[1, 0], [11, 10]])
    scores = few_labels.prototype_scores(np.array([[1, 1], [9, 9]], dtype=np.float32), protos)
    np.testing.assert_allclose(scores[0], [-1.0, -(100 + 81)])  # minus squared distances, by hand
    assert scores.argmax(1).tolist() == [0, 1]


def test_centre_normalise_gives_unit_vectors_around_the_mean():
    x, _ = _blobs()
    out = few_labels.centre_normalise(x, x.mean(0))
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(out[0], (x[0] - x.mean(0)) / np.linalg.norm(x[0] - x.mean(0)), rtol=1e-5)


def test_centring_helps_prototypes_when_a_shared_offset_dominates():
    """A large offset common to every class makes Euclidean prototypes compare norms; CL2N removes it."""
    x, y = _blobs(per_class=40, spread=1.0)
    x = x + 50.0 * np.abs(np.random.default_rng(1).normal(size=(len(x), 1))).astype(np.float32)  # a random scale
    pool, query = np.arange(len(y)) % 2 == 0, np.arange(len(y)) % 2 == 1
    args = (x[pool], y[pool], x[query], y[query], 1)
    raw = few_labels.episode_accuracies(*args, episodes=10).mean()
    cl2n = few_labels.episode_accuracies(*args, episodes=10, mean=x[pool].mean(0)).mean()
    assert cl2n > raw + 0.1


def test_labelled_split_is_deterministic_balanced_and_disjoint():
    labels = np.repeat(np.arange(4), 10)
    picked, rest = few_labels.labelled_split(labels, 3, seed=5)
    again, _ = few_labels.labelled_split(labels, 3, seed=5)
    np.testing.assert_array_equal(picked, again)
    assert np.bincount(labels[picked]).tolist() == [3, 3, 3, 3]
    assert not set(picked) & set(rest) and len(picked) + len(rest) == len(labels)
    assert not np.array_equal(picked, few_labels.labelled_split(labels, 3, seed=6)[0])


def test_fixed_steps_gives_the_same_number_of_examples_for_any_data_size():
    x, y = _blobs(per_class=2)
    fx, fy = few_labels.fixed_steps(x, y, steps=7, batch_size=5)
    assert len(fx) == len(fy) == 35 and set(fy.tolist()) == {0, 1, 2}


def test_confident_keeps_rows_at_or_above_the_threshold():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    kept, labels = few_labels.confident(probs, 0.8)
    assert kept.tolist() == [0, 2] and labels.tolist() == [0, 1]
    assert few_labels.precision(labels, np.array([0, 0])) == 0.5


def test_augmentations_keep_shape_and_type_and_change_pixels(book):
    images = np.random.default_rng(0).integers(0, 255, size=(6, 28, 28), dtype=np.uint8)
    weak, strong = few_labels.weak_augment(images, seed=0), book.strong_augment(images, seed=0)
    assert weak.shape == strong.shape == images.shape and weak.dtype == strong.dtype == np.uint8
    assert np.abs(strong.astype(int) - images).mean() > np.abs(weak.astype(int) - images).mean() > 0
    np.testing.assert_array_equal(strong, book.strong_augment(images, seed=0))
    assert (strong != book.strong_augment(images, seed=1)).any()


def test_strong_augment_draws_per_image_and_always_erases(book):
    """RandAugment draws its operations per call: applied to a batch at once, every image would get the same ones.
    Identical images must come out different, and each must carry an erased (black) rectangle of >= 2 % of it."""
    same = np.repeat(np.random.default_rng(0).integers(0, 255, size=(1, 28, 28), dtype=np.uint8), 40, axis=0)
    assert len({view.tobytes() for view in book.strong_augment(same, seed=0)}) == len(same)
    white = book.strong_augment(np.full((40, 28, 28), 255, dtype=np.uint8), seed=0)
    assert ((white == 0).mean(axis=(1, 2)) >= 0.02).all()


def test_strong_augment_refuses_images_that_are_not_raw_grey(book):
    with pytest.raises(ValueError, match="uint8"):
        book.strong_augment(np.zeros((2, 28, 28), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        book.strong_augment(np.zeros((2, 28, 28, 3), dtype=np.uint8))


def test_feature_views_are_disjoint_and_cover_everything():
    a, b = few_labels.feature_views(10, seed=0)
    assert sorted([*a, *b]) == list(range(10)) and len(a) == len(b) == 5


# ---- bad input: one clear ValueError each ----


@pytest.mark.parametrize("threshold", [0, 1, 1.5, -0.1, True, "0.9"])
def test_threshold_outside_zero_one_is_refused(threshold):
    with pytest.raises(ValueError, match=r"strictly between 0 and 1"):
        few_labels.confident(np.array([[0.5, 0.5]]), threshold)


def test_labelled_budget_larger_than_the_pool_is_refused():
    with pytest.raises(ValueError, match=r"budget of 11 per class is larger than the pool: class \d has only 10"):
        few_labels.labelled_split(np.repeat(np.arange(3), 10), 11)


@pytest.mark.parametrize("shots", [0, -1, 1.5])
def test_shots_must_be_positive(shots):
    x, y = _blobs()
    with pytest.raises(ValueError, match=r"shots must be an integer >= 1"):
        few_labels.episode_accuracies(x, y, x, y, shots)


def test_unlabelled_data_with_labels_is_refused(book):
    x, y = _blobs()
    head = book.new_head(8, 3)
    refused = r"unlabelled data must be the inputs only, one array.*pass x, not \(x, y\).*never used for training"
    with pytest.raises(ValueError, match=refused):
        book.pseudo_labels(head, (x, y))
    with pytest.raises(ValueError, match=r"pass x, not \(x, y\)"):
        book.self_train(lambda width: book.new_head(width, 3), (x, y), (x, y), rounds=1, steps=2)
    with pytest.raises(ValueError, match=r"pass x, not \(x, y\)"):
        book.fit_consistency(head, (x, y), (x, y), x, steps=1)


def test_framework_helpers_refuse_a_bad_threshold(book):
    x, y = _blobs()
    head = book.new_head(8, 3)
    with pytest.raises(ValueError, match=r"strictly between 0 and 1"):
        book.pseudo_labels(head, x, threshold=1.0)
    with pytest.raises(ValueError, match=r"strictly between 0 and 1"):
        book.fit_consistency(head, (x, y), x, x, threshold=0.0, steps=1)


# ---- framework behaviour ----


def test_consistency_loss_equals_a_hand_computation(book):
    logits_weak = np.array([[4.0, 0.0, 0.0], [0.2, 0.1, 0.0], [0.0, 0.0, 5.0]], dtype=np.float32)
    logits_strong = np.array([[1.0, 2.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.0, 1.0]], dtype=np.float32)
    convert = (lambda a: book.training.torch.from_numpy(a)) if book.__name__.endswith("torch") else (lambda a: a)
    loss, mask = book.consistency_loss(convert(logits_weak), convert(logits_strong), threshold=0.9)
    probs_weak = np.exp(logits_weak) / np.exp(logits_weak).sum(1, keepdims=True)
    expected_mask = (probs_weak.max(1) >= 0.9).astype(np.float32)
    log_probs = logits_strong - np.log(np.exp(logits_strong).sum(1, keepdims=True))
    expected = np.mean(-log_probs[np.arange(3), probs_weak.argmax(1)] * expected_mask)
    assert expected_mask.tolist() == [1.0, 0.0, 1.0]
    np.testing.assert_allclose(np.asarray(mask), expected_mask)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_consistency_loss_sends_no_gradient_into_the_weak_view():
    import torch

    from helpers import torch as ht

    weak = torch.tensor([[3.0, 0.0]], requires_grad=True)
    strong = torch.tensor([[0.0, 1.0]], requires_grad=True)
    loss, _ = ht.consistency_loss(weak, strong, 0.5)
    loss.backward()
    assert weak.grad is None and float(strong.grad.abs().sum()) > 0


def test_pseudo_labels_keep_only_confident_predictions(book):
    x, y = _blobs()
    head = book.new_head(8, 3)
    book.fit_steps(head, (x, y), steps=60, lr=0.05, batch_size=16)
    kept, labels = book.pseudo_labels(head, x, threshold=0.9)
    assert len(kept) > len(y) // 2 and np.mean(labels == y[kept]) > 0.95
    kept_strict, _ = book.pseudo_labels(head, x, threshold=0.999)
    assert set(kept_strict) <= set(kept)


def test_self_training_adds_pseudo_labels_and_records_each_round(book):
    x, y = _blobs(per_class=40)
    picked, rest = few_labels.labelled_split(y, 2, seed=0)
    records = book.self_train(
        lambda width: book.new_head(width, 3),
        (x[picked], y[picked]),
        x[rest],
        rounds=1,
        threshold=0.8,
        steps=30,
        lr=0.05,
        batch_size=16,
        validation=(x, y),
    )
    assert [r["round"] for r in records] == [0, 1] and len(records[0]["indices"]) == 0
    assert (
        len(records[1]["indices"]) > 0
        and few_labels.precision(records[1]["pseudo_labels"], y[rest][records[1]["indices"]]) > 0.9
    )
    assert few_labels.best_round(records)["val_accuracy"] == max(r["val_accuracy"] for r in records)


def test_co_training_each_view_learns_from_the_other(book):
    x, y = _blobs(per_class=40)
    picked, rest = few_labels.labelled_split(y, 2, seed=0)
    views = few_labels.feature_views(8, seed=0)
    records = book.co_train(
        lambda width: book.new_head(width, 3),
        (x[picked], y[picked]),
        x[rest],
        views,
        rounds=1,
        threshold=0.8,
        steps=30,
        lr=0.05,
        batch_size=16,
        validation=(x, y),
    )
    assert len(records) == 2 and all(len(i) > 0 for i in records[1]["indices"])
    assert records[1]["val_accuracy"] > 0.9


def test_fit_consistency_learns_and_the_mask_rate_rises(book):
    x, y = _blobs(per_class=40, spread=0.5)
    picked, rest = few_labels.labelled_split(y, 2, seed=0)
    noisy = x[rest] + np.random.default_rng(0).normal(scale=0.3, size=x[rest].shape).astype(np.float32)
    book.seed(0)
    head = book.new_head(8, 3)
    history = book.fit_consistency(
        head, (x[picked], y[picked]), x[rest], noisy, steps=60, threshold=0.9, lr=0.05, batch_size=8, seed=0
    )
    assert set(history) == {"loss", "supervised", "unsupervised", "mask_rate"} and len(history["loss"]) == 60
    assert np.mean(history["mask_rate"][-10:]) > np.mean(history["mask_rate"][:3])
    assert np.mean(book.predict(head, x).argmax(1) == y) > 0.9


def test_semi_supervised_task_is_balanced_and_repeats_from_its_seed():
    task = few_labels.semi_supervised_task(6, 3, 2, seed=4)
    assert [np.bincount(task[f"{s}_y"]).tolist() for s in ("pool", "val", "test")] == [[6] * 10, [3] * 10, [2] * 10]
    again = few_labels.semi_supervised_task(6, 3, 2, seed=4)
    assert all(np.array_equal(task[k], again[k]) for k in task)
    flat = lambda images: {image.tobytes() for image in images}
    assert not flat(task["pool_x"]) & flat(task["val_x"])  # the validation images are not in the pool


def test_fit_consistency_history_holds_each_steps_own_values(book):
    """Per-step values, not running means: each mask rate is a whole number of unlabelled examples out of 24, and
    each loss is that step's supervised term plus weight times its unsupervised term."""
    x, y = _blobs(per_class=40, spread=0.5)
    picked, rest = few_labels.labelled_split(y, 2, seed=0)
    book.seed(0)
    history = book.fit_consistency(
        book.new_head(8, 3),
        (x[picked], y[picked]),
        x[rest],
        x[rest],
        steps=40,
        threshold=0.9,
        weight=0.5,
        ratio=3,
        lr=0.05,
        batch_size=8,
        seed=0,
    )
    kept = np.array(history["mask_rate"]) * 24
    assert len(kept) == 40 and 0 < kept.max() and np.allclose(kept, np.round(kept), atol=1e-4)
    expected = np.array(history["supervised"]) + 0.5 * np.array(history["unsupervised"])
    np.testing.assert_allclose(history["loss"], expected, rtol=1e-5)


def test_fit_consistency_is_the_same_training_in_both_frameworks():
    """From the same start, on the same batches, the PyTorch loop and Keras' fit reach the same head."""
    from helpers import keras as hk
    from helpers import torch as ht

    x, y = _blobs(per_class=40, spread=0.5)
    picked, rest = few_labels.labelled_split(y, 2, seed=0)
    ht.seed(0)
    torch_head, keras_head = ht.new_head(8, 3), hk.new_head(8, 3)
    linear = torch_head[-1]
    keras_head.set_weights([linear.weight.detach().numpy().T, linear.bias.detach().numpy()])
    settings = dict(steps=30, threshold=0.9, lr=0.05, batch_size=8, seed=0)
    histories = [
        wing.fit_consistency(head, (x[picked], y[picked]), x[rest], x[rest] + 0.1, **settings)
        for wing, head in ((ht, torch_head), (hk, keras_head))
    ]
    np.testing.assert_allclose(histories[0]["mask_rate"], histories[1]["mask_rate"])
    np.testing.assert_allclose(ht.predict(torch_head, x), hk.predict(keras_head, x), atol=1e-3)
    assert max(histories[0]["mask_rate"]) > 0  # the unlabelled term took part


def test_fit_consistency_updates_batchnorm_once_per_step_on_the_mixed_batch(book):
    """The labelled, weak and strong batches go through one forward pass: after one step, BatchNorm's running mean
    has moved once, toward the mean of the three batches together (three passes would give another value)."""
    x, y = _blobs(per_class=20)
    picked, rest = few_labels.labelled_split(y, 2, seed=0)
    strong = x[rest] + 1.0
    book.seed(0)
    if book.__name__ == "helpers.torch":
        from torch import nn

        model, rate = nn.Sequential(nn.BatchNorm1d(8), nn.Linear(8, 3)), 0.1
        running_mean = lambda: model[0].running_mean.numpy()
    else:
        import keras

        model = keras.Sequential([keras.Input((8,)), keras.layers.BatchNormalization(), keras.layers.Dense(3)])
        rate, running_mean = 0.01, lambda: model.layers[0].moving_mean.numpy()
    book.fit_consistency(model, (x[picked], y[picked]), x[rest], strong, steps=1, batch_size=4, seed=0)
    batch = next(few_labels.consistency_batches(x[picked], y[picked], x[rest], strong[None], 1, 3, 4, 0))
    mixed = np.concatenate([batch[0], batch[2], batch[3]])
    np.testing.assert_allclose(running_mean(), rate * mixed.mean(0), rtol=1e-4, atol=1e-5)
    if book.__name__ == "helpers.torch":
        assert int(model[0].num_batches_tracked) == 1

"""Chapter 20: the symmetric InfoNCE loss (plain and with class-aware masking) against NumPy in both frameworks, the
two frameworks training the same projections to the same weights, prompt ensembles and zero-shot scores, recall@k on
hand-made cases, and the bad input (empty captions, templates without a slot, unknown class names, class ids that do
not pair up) both frameworks refuse with one ValueError."""

import math

import numpy as np
import pytest
import tensorflow as tf
import torch

from helpers import image_text
from helpers import keras as hk  # conftest.py has imported torch first, as it must be
from helpers import torch as ht

RNG = np.random.default_rng(0)
IMAGES = RNG.normal(size=(6, 4)).astype(np.float32)
TEXTS = RNG.normal(size=(6, 4)).astype(np.float32)
FRAMEWORKS = {"torch": ht, "keras": hk}


def framework_loss(framework, images, texts, logit_scale, classes=None):
    if framework == "torch":
        scale = torch.tensor(logit_scale, dtype=torch.float32)
        return float(ht.contrastive_loss(torch.from_numpy(images), torch.from_numpy(texts), scale, classes))
    return float(hk.contrastive_loss(images, texts, np.float32(logit_scale), classes))


def by_hand(images, texts, logit_scale, classes=None):
    """The loss from its definition, one pair at a time: -log of each matching pair's softmax share, both ways;
    with classes, the denominators sum over the pair itself and the pairs of other classes only."""
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    sim = math.exp(min(logit_scale, math.log(100))) * unit(images) @ unit(texts).T
    n = len(sim)
    kept = [[j for j in range(n) if j == i or classes is None or classes[j] != classes[i]] for i in range(n)]
    rows = [-math.log(math.exp(sim[i, i]) / sum(math.exp(sim[i, j]) for j in kept[i])) for i in range(n)]
    cols = [-math.log(math.exp(sim[i, i]) / sum(math.exp(sim[j, i]) for j in kept[i])) for i in range(n)]
    return (np.mean(rows) + np.mean(cols)) / 2


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("logit_scale", [0.0, math.log(1 / 0.07), 2.0, 7.0])  # 7.0: clamped at log(100)
def test_contrastive_loss_equals_numpy_and_a_hand_computation(framework, logit_scale):
    expected = by_hand(IMAGES.astype(np.float64), TEXTS.astype(np.float64), logit_scale)
    assert image_text.info_nce(IMAGES, TEXTS, logit_scale) == pytest.approx(expected, rel=1e-9)
    assert framework_loss(framework, IMAGES, TEXTS, logit_scale) == pytest.approx(expected, rel=1e-5)


def test_the_loss_is_symmetric_small_for_matching_pairs_and_log_n_for_identical_rows():
    for framework in FRAMEWORKS:
        swapped = framework_loss(framework, TEXTS, IMAGES, 2.0)
        assert swapped == pytest.approx(framework_loss(framework, IMAGES, TEXTS, 2.0), rel=1e-5)
        assert framework_loss(framework, IMAGES, 3 * IMAGES, math.log(100)) < 0.05  # scale-free: normalised
        same = np.ones((6, 4), np.float32)
        assert framework_loss(framework, same, same, 2.0) == pytest.approx(math.log(6), rel=1e-5)


CLASSES = np.array([0, 1, 0, 2, 1, 0])  # pairs 0, 2, 5 share a class, and pairs 1, 4


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("logit_scale", [0.0, 2.0, 7.0])
def test_class_aware_masking_equals_numpy_and_a_hand_computation(framework, logit_scale):
    expected = by_hand(IMAGES.astype(np.float64), TEXTS.astype(np.float64), logit_scale, CLASSES)
    plain = by_hand(IMAGES.astype(np.float64), TEXTS.astype(np.float64), logit_scale)
    assert abs(expected - plain) > 0.05  # the mask changes the loss on this batch: the test can tell them apart
    assert image_text.info_nce(IMAGES, TEXTS, logit_scale, CLASSES) == pytest.approx(expected, rel=1e-9)
    assert framework_loss(framework, IMAGES, TEXTS, logit_scale, CLASSES) == pytest.approx(expected, rel=1e-5)


def test_the_mask_is_the_plain_loss_when_all_classes_differ_and_zero_within_one_class():
    distinct = np.array([5, 3, 0, 1, 4, 2])
    for framework in FRAMEWORKS:
        plain = framework_loss(framework, IMAGES, TEXTS, 2.0)
        assert framework_loss(framework, IMAGES, TEXTS, 2.0, distinct) == pytest.approx(plain, rel=1e-6)
        # one class for the whole batch: each softmax keeps only its own pair, so -log 1
        assert framework_loss(framework, IMAGES, TEXTS, 2.0, np.zeros(6, np.int64)) == pytest.approx(0.0, abs=1e-6)
    assert image_text.info_nce(IMAGES, TEXTS, 2.0, distinct) == pytest.approx(image_text.info_nce(IMAGES, TEXTS, 2.0))
    mask = image_text.same_class_mask(CLASSES)
    assert mask.sum() == 8 and not mask.diagonal().any() and (mask == mask.T).all()


def _masked_gradients(framework):
    if framework == "torch":
        images, scale = torch.tensor(IMAGES, requires_grad=True), torch.tensor(2.0, requires_grad=True)
        ht.contrastive_loss(images, torch.from_numpy(TEXTS), scale, CLASSES).backward()
        return images.grad.numpy(), float(scale.grad)
    images, scale = tf.Variable(IMAGES), tf.Variable(2.0)
    with tf.GradientTape() as tape:
        loss = hk.contrastive_loss(images, TEXTS, scale, CLASSES)
    grad_images, grad_scale = tape.gradient(loss, [images, scale])
    return grad_images.numpy(), float(grad_scale)


def test_both_frameworks_give_the_masked_loss_the_same_finite_gradients():
    (torch_images, torch_scale), (keras_images, keras_scale) = (_masked_gradients(fw) for fw in FRAMEWORKS)
    assert np.isfinite(torch_images).all() and np.abs(torch_images).max() > 1e-3
    np.testing.assert_allclose(torch_images, keras_images, rtol=1e-4, atol=1e-6)
    assert torch_scale == pytest.approx(keras_scale, rel=1e-4)


def _gradient_of_scale(framework, logit_scale):
    if framework == "torch":
        scale = torch.tensor(logit_scale, requires_grad=True)
        ht.contrastive_loss(torch.from_numpy(IMAGES), torch.from_numpy(TEXTS), scale).backward()
        return float(scale.grad)
    scale = tf.Variable(logit_scale)
    with tf.GradientTape() as tape:
        loss = hk.contrastive_loss(IMAGES, TEXTS, scale)
    return float(tape.gradient(loss, scale))


def test_the_temperature_gets_a_gradient_below_the_clamp_and_none_above():
    below = {fw: _gradient_of_scale(fw, 1.0) for fw in FRAMEWORKS}
    assert abs(below["torch"]) > 1e-3 and below["torch"] == pytest.approx(below["keras"], rel=1e-4)
    assert all(_gradient_of_scale(fw, 6.0) == 0.0 for fw in FRAMEWORKS)


def _copy_torch_weights_into_keras(torch_model, keras_model):
    keras_model.image_projection.kernel.assign(torch_model.image_projection.weight.detach().numpy().T)
    keras_model.text_projection.kernel.assign(torch_model.text_projection.weight.detach().numpy().T)
    keras_model.logit_scale.assign(float(torch_model.logit_scale.detach()))


@pytest.mark.parametrize("classes", [None, np.arange(40) % 4], ids=["plain", "masked"])
def test_both_frameworks_train_the_same_projections_from_the_same_start(classes):
    image_features, text_features = RNG.random((40, 12)).astype(np.float32), RNG.normal(size=(40, 8)).astype(np.float32)
    ht.seed(0)
    torch_model, keras_model = ht.contrastive_heads(12, 8, 5), hk.contrastive_heads(12, 8, 5)
    _copy_torch_weights_into_keras(torch_model, keras_model)
    arguments = {"epochs": 3, "lr": 1e-2, "weight_decay": 0.1, "batch_size": 16, "seed": 3, "classes": classes}
    torch_history = ht.fit_contrastive(torch_model, image_features, text_features, **arguments)
    keras_history = hk.fit_contrastive(keras_model, image_features, text_features, **arguments)
    np.testing.assert_allclose(torch_history["loss"], keras_history["loss"], rtol=1e-4)
    assert torch_history["loss"][-1] < torch_history["loss"][0]
    np.testing.assert_allclose(
        ht.embed_images(torch_model, image_features), hk.embed_images(keras_model, image_features), atol=1e-4
    )
    np.testing.assert_allclose(
        ht.embed_texts(torch_model, text_features), hk.embed_texts(keras_model, text_features), atol=1e-4
    )
    assert ht.temperature_of(torch_model) == pytest.approx(hk.temperature_of(keras_model), rel=1e-4)
    assert ht.temperature_of(torch_model) != pytest.approx(image_text.INITIAL_TEMPERATURE, rel=1e-3)  # it learned


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_fit_contrastive_passes_the_classes_to_the_loss(framework):
    """One class for all pairs leaves every softmax with its own pair only: loss 0, no gradient, no step."""
    book = FRAMEWORKS[framework]
    book.seed(0)
    model = book.contrastive_heads(6, 4, 3)
    images, texts = RNG.random((12, 6)).astype(np.float32), RNG.random((12, 4)).astype(np.float32)
    before = book.embed_images(model, images)
    history = book.fit_contrastive(model, images, texts, epochs=2, lr=1e-2, batch_size=4, classes=np.zeros(12, int))
    assert history["loss"] == [0.0, 0.0]
    np.testing.assert_allclose(book.embed_images(model, images), before, atol=1e-7)
    plain = book.fit_contrastive(model, images, texts, epochs=1, lr=1e-2, batch_size=4)
    assert plain["loss"][0] > 0.5  # the default keeps every other pair of the batch a negative


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_training_aligns_matching_pairs(framework):
    """After training on class-level pairs, each image's nearest caption embedding is its own class's."""
    book = FRAMEWORKS[framework]
    book.seed(0)
    labels = np.arange(60) % 3
    centres_image, centres_text = RNG.normal(size=(3, 16)), RNG.normal(size=(3, 10))
    image_features = (centres_image[labels] + 0.3 * RNG.normal(size=(60, 16))).astype(np.float32)
    text_features = (centres_text[labels] + 0.1 * RNG.normal(size=(60, 10))).astype(np.float32)
    model = book.contrastive_heads(16, 10, 8)
    book.fit_contrastive(model, image_features, text_features, epochs=8, lr=3e-2, batch_size=20)
    scores = image_text.zero_shot_scores(
        book.embed_images(model, image_features), book.embed_texts(model, centres_text.astype(np.float32))
    )
    assert (scores.argmax(1) == labels).mean() > 0.9
    assert np.allclose(np.linalg.norm(book.embed_images(model, image_features), axis=1), 1, atol=1e-5)


def test_captions_prompts_and_ensembles():
    table = image_text.caption_table(["coat", "ankle boot"], ["a photo of a {}.", "this is a {}."])
    assert table == ["a photo of a coat.", "this is a coat.", "a photo of an ankle boot.", "this is an ankle boot."]
    rows = image_text.pair_captions(np.array([1, 0, 1]), 2, seed=0)
    assert [table[r].endswith("boot.") for r in rows] == [True, False, True]
    text = np.array([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0], [0.0, -3.0]])
    ensemble = image_text.class_embeddings(text, 2, 2)
    np.testing.assert_allclose(ensemble, [[np.sqrt(0.5), np.sqrt(0.5)], [-np.sqrt(0.5), -np.sqrt(0.5)]])
    scores = image_text.zero_shot_scores(np.array([[2.0, 2.0], [0.0, -1.0]]), ensemble)
    np.testing.assert_allclose(scores, [[1.0, -1.0], [-np.sqrt(0.5), np.sqrt(0.5)]], atol=1e-12)
    assert set(image_text.SEEN_CLASSES) | set(image_text.UNSEEN_CLASSES) == set(range(10))


def test_recall_at_k_on_hand_made_rankings():
    similarity = np.array([[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.7, 0.1], [0.0, 0.1, 0.2, 0.3]])
    relevant = np.array([[False, False, True, False], [True, False, False, False], [False, False, True, True]])
    # query 0: relevant item ranked 2nd; query 1: ranked 3rd; query 2: ranked 1st
    assert image_text.recall_at_k(similarity, relevant, 1) == pytest.approx(1 / 3)
    assert image_text.recall_at_k(similarity, relevant, 2) == pytest.approx(2 / 3)
    assert image_text.recall_at_k(similarity, relevant, 3) == pytest.approx(1.0)
    assert image_text.chance_recall_at_k(1, 4, 1) == pytest.approx(0.25)
    assert image_text.chance_recall_at_k(2, 4, 2) == pytest.approx(1 - 1 / 6)
    assert image_text.chance_recall_at_k(4, 4, 1) == 1.0
    random = np.random.default_rng(1).random((4000, 20))
    hits = image_text.recall_at_k(random, np.tile(np.arange(20) < 3, (4000, 1)), 4)
    assert hits == pytest.approx(image_text.chance_recall_at_k(3, 20, 4), abs=0.03)


def test_linear_probe_separates_separable_features():
    features = np.concatenate([RNG.normal(size=(10, 5)) - 3, RNG.normal(size=(10, 5)) + 3])
    labels = np.repeat([0, 1], 10)
    probs = image_text.linear_probe(features, labels, features)
    assert probs.shape == (20, 2) and (probs.argmax(1) == labels).all()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: image_text.check_captions(["a coat.", "", "a bag."]), r"captions \[1\] are empty"),
        (lambda: image_text.check_captions(["a coat.", "   "]), "empty, only whitespace"),
        (lambda: image_text.check_captions([]), "at least one caption"),
        (lambda: image_text.check_captions("a coat."), "list of strings"),
        (lambda: image_text.check_captions(["a coat.", None]), "not strings"),
        (lambda: image_text.caption_table(["coat"], ["a photo of clothing."]), r"exactly one \{\} slot"),
        (lambda: image_text.caption_table(["coat", ""], ["a photo of a {}."]), "class names"),
        (lambda: image_text.caption_table(["coat", "coat"], ["a {}."]), "distinct"),
        (lambda: image_text.class_indices(["coat", "hat"]), r"\['hat'\] are not among the caption names"),
        (lambda: image_text.pair_captions(np.array([0, -1]), 3), "class ids >= 0"),
        (lambda: image_text.class_embeddings(np.ones((5, 3)), 2, 2), "2 classes x 2 templates"),
        (lambda: image_text.zero_shot_scores(np.ones((2, 3)), np.ones((2, 4))), "one common width"),
        (lambda: image_text.recall_at_k(np.ones((2, 3)), np.ones((2, 3), bool), 4), "k must be an integer from 1"),
        (lambda: image_text.recall_at_k(np.ones((2, 3)), np.zeros((2, 3), bool), 1), "at least one relevant"),
    ],
)
def test_bad_captions_templates_and_metric_input_get_one_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_both_frameworks_refuse_the_same_bad_input(framework):
    book = FRAMEWORKS[framework]
    model = book.contrastive_heads(6, 4, 3)
    images, texts = RNG.random((8, 6)).astype(np.float32), RNG.random((8, 4)).astype(np.float32)
    bad = {
        "pair row by row": lambda: book.fit_contrastive(model, images, texts[:5]),
        r"text features must be a float array \(N, 4\)": lambda: book.fit_contrastive(model, images, images),
        "weight_decay must be": lambda: book.fit_contrastive(model, images, texts, weight_decay=-1.0),
        r"temperature must be in \(0, 1\]": lambda: book.contrastive_heads(6, 4, 3, temperature=2.0),
        "embed_dim must be an integer": lambda: book.contrastive_heads(6, 4, 0),
        "expected the model from book.contrastive_heads": lambda: book.embed_images(book.small_cnn(3), images),
        "contain NaN": lambda: book.embed_texts(model, np.full((2, 4), np.nan, np.float32)),
        "one class id per pair": lambda: book.fit_contrastive(model, images, texts, classes=np.zeros(5, np.int64)),
        r"classes must be a 1-D integer array": lambda: book.fit_contrastive(model, images, texts, classes=[0.5] * 8),
    }
    for message, call in bad.items():
        with pytest.raises(ValueError, match=message):
            call()
    with pytest.raises(ValueError, match="one matching pair per row"):
        framework_loss(framework, IMAGES, TEXTS[:4], 1.0)
    with pytest.raises(ValueError, match="one class id per pair"):
        framework_loss(framework, IMAGES, TEXTS, 1.0, CLASSES[:4])


LIT_TEXTS = ["a photo of a low open shoe.", "a high closed shoe.", "this is a bag.", "a top with long sleeves."]


@pytest.fixture(scope="module")
def lit_setup():
    """Both frameworks' MiniLM, the states below their top layer for LIT_TEXTS, and sentence embeddings."""
    out = {}
    for name, book in FRAMEWORKS.items():
        encoder = book.text_encoder()
        tokens = book.tokenize(LIT_TEXTS, 12)
        out[name] = (
            encoder,
            book.text_states(encoder, tokens, num_layers=1),
            book.sentence_embeddings(encoder, tokens),
        )
    return out


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_lit_heads_start_as_the_locked_heads_and_train_only_their_own_copy(framework, lit_setup):
    book = FRAMEWORKS[framework]
    encoder, states, sentences = lit_setup[framework]
    book.seed(0)
    locked = book.contrastive_heads(5, sentences.shape[1], 4)
    book.seed(0)
    lit = book.lit_heads(encoder, states, 5, num_layers=1, embed_dim=4)
    rows = np.array([3, 0, 2, 1, 0])
    np.testing.assert_allclose(book.embed_texts(lit, rows), book.embed_texts(locked, sentences[rows]), atol=1e-5)
    before = book.sentence_embeddings(encoder, book.tokenize(LIT_TEXTS, 12))
    images = RNG.normal(size=(8, 5)).astype(np.float32)
    book.fit_contrastive(lit, images, np.array([0, 1, 2, 3, 0, 1, 2, 3]), epochs=2, lr=1e-3, batch_size=4)
    np.testing.assert_allclose(book.sentence_embeddings(encoder, book.tokenize(LIT_TEXTS, 12)), before, atol=1e-6)
    moved = np.abs(book.embed_texts(lit, np.arange(4)) - book.embed_texts(locked, sentences)).max()
    assert moved > 1e-3  # the copied top layer and the projection trained, the encoder itself did not
    with pytest.raises(ValueError, match="text rows must be a 1-D integer array"):
        book.fit_contrastive(lit, images, np.arange(8))


def test_both_frameworks_train_the_same_lit_model(lit_setup):
    rng = np.random.default_rng(5)
    rows = np.arange(12) % 4
    images = (rng.normal(size=(4, 5))[rows] + 0.1 * rng.normal(size=(12, 5))).astype(np.float32)  # one cluster a text
    ht.seed(0)
    torch_model = ht.lit_heads(lit_setup["torch"][0], lit_setup["torch"][1], 5, embed_dim=4)
    keras_model = hk.lit_heads(lit_setup["keras"][0], lit_setup["keras"][1], 5, embed_dim=4)
    _copy_torch_weights_into_keras(torch_model, keras_model)
    arguments = {"epochs": 3, "lr": 1e-3, "batch_size": 4, "seed": 1}
    torch_history = ht.fit_contrastive(torch_model, images, rows, **arguments)
    keras_history = hk.fit_contrastive(keras_model, images, rows, **arguments)
    # the two MiniLM ports agree to about 1e-6; training a transformer layer at this rate lets that grow a little
    np.testing.assert_allclose(torch_history["loss"], keras_history["loss"], rtol=5e-3)
    assert torch_history["loss"][-1] < torch_history["loss"][0]
    np.testing.assert_allclose(ht.embed_texts(torch_model, rows), hk.embed_texts(keras_model, rows), atol=1e-2)


def test_attribute_names_build_two_held_out_classes_from_seen_words():
    new = image_text.new_words(image_text.ATTRIBUTE_NAMES, image_text.SEEN_CLASSES, image_text.UNSEEN_CLASSES)
    assert new == {"top with long sleeves and no collar": [], "low closed shoe": [], "bag": ["bag"]}
    assert len(set(image_text.ATTRIBUTE_NAMES)) == len(image_text.CAPTION_NAMES)

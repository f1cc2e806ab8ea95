"""The text chapter's helpers: data, tokenization, MiniLM in both frameworks, fine-tuning, bad input.

The cross-framework tolerance: keras-hub's BertBackbone computes GELU with the tanh approximation, while
transformers' BERT uses the exact erf form, so the two encoders agree to about 1e-3, not to float precision.
"""

import importlib
import subprocess
import sys

import matplotlib
import numpy as np
import pytest

from helpers import config, metrics, plots, text

SENTENCES = [
    "Win a FREE iPhone now!!! Click here to claim your prize",
    "The meeting is moved to 3pm tomorrow; the agenda is attached.",
    "Re: patch for the build script - works for me, thanks",
    "ok",
    "Unsubscribe from this list by replying with REMOVE in the subject line. " * 20,
]
EMBEDDING_ATOL = 2e-3  # largest difference between the two frameworks' normalised sentence embeddings
MINILM_PARAMS = 22_713_216  # embeddings, 6 transformer layers and the pooler
EMBEDDING_PARAMS = 30522 * 384 + 512 * 384 + 2 * 384 + 2 * 384  # word, position, segment embeddings, LayerNorm


@pytest.fixture(params=["torch", "keras"], scope="module")
def book(request):
    return importlib.import_module(f"helpers.{request.param}")


@pytest.fixture(scope="module")
def both():
    return importlib.import_module("helpers.torch"), importlib.import_module("helpers.keras")


def _weights(book, module) -> list[np.ndarray]:
    if book.__name__ == "helpers.torch":
        return [p.detach().cpu().numpy().copy() for p in module.parameters()]
    return [np.array(w.numpy()) for w in module.weights]


# ----------------------------------------------------------------------------- neutral: data and tokens


def test_text_module_imports_no_framework():
    code = "import sys, helpers.text; assert not {'torch', 'tensorflow', 'keras'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_spam_assassin_has_ham_and_spam_texts_without_headers():
    texts, labels = text.load_spam_assassin()
    counts = np.bincount(labels)
    assert len(texts) == len(labels) and len(counts) == 2
    assert 5800 < len(texts) <= 6046 and 4000 < counts[0] <= 4150 and 1800 < counts[1] <= 1896
    assert len(set(texts)) == len(texts), "exact duplicates are dropped"
    assert all(t.strip() for t in texts)
    assert not [t for t in texts if t.startswith(("Return-Path:", "Received:", "Delivered-To:", "Message-Id:"))]


def test_email_text_decodes_mime_and_reduces_html():
    raw = (
        "From: a@b.c\nSubject: =?utf-8?q?Caf=C3=A9_offer?=\nMIME-Version: 1.0\n"
        'Content-Type: multipart/alternative; boundary="XX"\n\n--XX\nContent-Type: text/html; charset=utf-8\n'
        "Content-Transfer-Encoding: quoted-printable\n\n<html><style>p{}</style><p>Buy  now =E2=82=AC5</p>"
        "<script>x()</script></html>\n--XX--\n"
    )
    assert text.email_text(raw) == "Café offer . Buy now €5"


def test_tweets_have_three_classes():
    texts, labels = text.load_tweets()
    assert len(texts) == len(labels) > 38000 and np.bincount(labels).size == 3
    assert all(isinstance(t, str) and t.strip() for t in texts[:1000])


def test_text_task_is_stratified_and_sized_by_the_profile():
    smoke = config.PROFILES["smoke"]
    task = text.text_task(smoke, source="spam", seed=0)
    assert len(task["train_texts"]) == len(task["train_y"]) == smoke.text_train_size
    assert len(task["test_texts"]) == smoke.text_test_size and task["classes"] == ("ham", "spam")
    assert abs(task["train_y"].mean() - task["test_y"].mean()) < 0.05, "both splits keep the spam fraction"
    assert not set(task["train_texts"]) & set(task["test_texts"])
    with pytest.raises(ValueError, match="known sources: spam, tweets"):
        text.text_task(smoke, source="imdb")


def test_validation_texts_come_from_outside_both_samples_and_leave_them_unchanged():
    smoke = config.PROFILES["smoke"]
    plain = text.text_task(smoke, source="spam", seed=0)
    task = text.text_task(smoke, source="spam", seed=0, validation_size=40)
    assert task["train_texts"] == plain["train_texts"] and task["test_texts"] == plain["test_texts"]
    assert len(task["val_texts"]) == len(task["val_y"]) == 40
    assert not set(task["val_texts"]) & (set(task["train_texts"]) | set(task["test_texts"]))
    assert abs(task["val_y"].mean() - plain["test_y"].mean()) < 0.06, "stratified like the other two"
    assert "val_texts" not in plain
    with pytest.raises(ValueError, match="outside the training and test samples"):
        text.text_task(smoke, source="spam", seed=0, validation_size=10**6)
    with pytest.raises(ValueError, match="validation_size must be an integer >= 0"):
        text.text_task(smoke, source="spam", validation_size=-1)


def test_profiles_size_the_text_runs():
    smoke, cpu, full = (config.PROFILES[n] for n in ("smoke", "cpu", "full"))
    for field in ("text_train_size", "text_test_size", "text_max_length", "text_epochs"):
        assert getattr(smoke, field) <= getattr(cpu, field) <= getattr(full, field)
    assert full.text_max_length <= text.MAX_POSITIONS


def test_token_lengths_and_the_chosen_max_length():
    lengths = text.token_lengths(["hello world", "a b c d e f g h"])
    assert lengths.tolist() == [4, 10], "[CLS] and [SEP] are counted"
    assert text.choose_max_length(np.arange(1, 101), quantile=0.5) == 56
    assert text.choose_max_length(np.full(10, 5000), limit=64) == 64
    assert text.choose_max_length(np.full(10, 5000)) == text.MAX_POSITIONS


def test_bad_text_input_gets_one_clear_error():
    with pytest.raises(TypeError, match="wrap it"):
        text.check_texts("a single string")
    with pytest.raises(TypeError, match=r"texts\[1\] is NoneType"):
        text.check_texts(["fine", None])
    with pytest.raises(TypeError, match=r"texts\[0\] is int"):
        text.check_texts([42])
    with pytest.raises(ValueError, match=r"texts \[1, 2\] are empty"):
        text.check_texts(["fine", "", "   "])
    with pytest.raises(ValueError, match="between 2 and 512"):
        text.check_max_length(600)
    with pytest.raises(TypeError, match="integer"):
        text.check_max_length(64.0)
    with pytest.raises(ValueError, match="known classes: ham, spam"):
        text.label_ids(["spam", "eggs"], text.SPAM_CLASSES)
    assert text.label_ids(["spam", "ham"], text.SPAM_CLASSES).tolist() == [1, 0]
    with pytest.raises(ValueError, match="warmup"):
        text.warmup_steps(100, 1.5)


def test_binary_scores_and_the_threshold_table():
    labels = np.array([0, 0, 0, 1, 1])
    logits = np.array([[2, 0], [2, 0], [0, 2], [0, 2], [2, 0]], dtype=float)
    scores = metrics.binary_scores(labels, logits)
    assert scores["accuracy"] == 0.6 and scores["precision"] == 0.5 and scores["recall"] == 0.5
    assert np.isclose(scores["macro F1"], (2 / 3 + 0.5) / 2)
    rows = metrics.threshold_table(labels, np.array([0.1, 0.2, 0.6, 0.9, 0.4]), thresholds=(0.5, 0.95))
    assert (rows[0]["false positives"], rows[0]["false negatives"]) == (1, 1)
    assert np.isnan(rows[1]["precision"]) and rows[1]["false negatives"] == 2, "nothing flagged: precision undefined"


def test_text_plots_return_figures():
    matplotlib.use("Agg")
    assert plots.plot_token_lengths(np.array([5, 50, 500, 5000]), 64).axes
    assert plots.plot_threshold_tradeoff(np.array([0, 1, 1, 0]), np.array([0.2, 0.8, 0.4, 0.6])).axes


# ----------------------------------------------------------------------------- both frameworks


def test_tokenize_gives_the_same_ids_in_both_frameworks(both):
    torch_tokens, keras_tokens = (b.tokenize(SENTENCES, 24) for b in both)
    for name in text.TEXT_INPUTS:
        np.testing.assert_array_equal(torch_tokens[name], keras_tokens[name])
    ids, mask = torch_tokens["input_ids"], torch_tokens["attention_mask"]
    assert ids.shape == (len(SENTENCES), 24) and (ids[:, 0] == 101).all(), "every text starts with [CLS]"
    assert ids[3].tolist()[:4] == [101, 7929, 102, 0] and mask[3].sum() == 3, "short texts are padded, mask 0"
    assert mask[4].all() and ids[4, -1] == 102, "a long text is truncated to max_length and still ends with [SEP]"


def test_sentence_embeddings_agree_across_frameworks(both):
    torch_book, keras_book = both
    tokens = torch_book.tokenize(SENTENCES, 32)
    torch_emb = torch_book.sentence_embeddings(torch_book.text_encoder(), tokens)
    keras_emb = keras_book.sentence_embeddings(keras_book.text_encoder(), tokens)
    assert torch_emb.shape == keras_emb.shape == (len(SENTENCES), 384)
    np.testing.assert_allclose(np.linalg.norm(torch_emb, axis=1), 1.0, atol=1e-5)
    assert np.abs(torch_emb - keras_emb).max() < EMBEDDING_ATOL
    assert (np.sum(torch_emb * keras_emb, axis=1) > 0.9999).all(), "cosine similarity of the same sentence"
    similarity = torch_emb @ torch_emb.T
    assert similarity[0, 1] < similarity[0, 0] - 0.2, "different sentences get different embeddings"


def test_classifiers_agree_across_frameworks_given_the_same_head(both):
    torch_book, keras_book = both
    torch_model, keras_model = torch_book.text_classifier(2), keras_book.text_classifier(2)
    head = torch_model.classifier
    keras_model.get_layer("classifier").set_weights(
        [head.weight.detach().numpy().T.copy(), head.bias.detach().numpy().copy()]
    )
    tokens = torch_book.tokenize(SENTENCES, 32)
    torch_logits = torch_book.predict_text(torch_model, tokens)
    keras_logits = keras_book.predict_text(keras_model, tokens)
    assert np.abs(torch_logits - keras_logits).max() < EMBEDDING_ATOL


def test_train_top_layers_sets_the_trainable_parameters(book):
    model = book.text_classifier(3)
    head = 384 * 3 + 3
    pooler = 384 * 384 + 384
    assert book.count_params(model) == {"trainable": MINILM_PARAMS + head, "total": MINILM_PARAMS + head}
    layers = book.encoder_layers(model)
    per_layer = book.count_params(layers[0])["total"]
    assert len(layers) == 6 and per_layer == 1_774_464
    for k in (0, 2, 6):
        counts = book.count_params(book.train_top_layers(model, k))
        assert counts["trainable"] == head + pooler + k * per_layer, k
    assert book.count_params(model)["trainable"] == MINILM_PARAMS + head - EMBEDDING_PARAMS
    for bad in (7, -1, 2.0):
        with pytest.raises(ValueError, match="from 0 to 6"):
            book.train_top_layers(model, bad)


def test_fit_text_learns_moves_only_the_top_layers_and_follows_the_schedule(book):
    book.seed(0)
    texts = ["win cash now", "free prize inside", "lunch at noon?", "notes from the meeting"] * 2
    labels = np.array([1, 1, 0, 0] * 2)
    tokens = book.tokenize(texts, 12)
    model = book.train_top_layers(book.text_classifier(2), 1)
    layers = book.encoder_layers(model)
    lower, top = _weights(book, layers[0]), _weights(book, layers[-1])
    history = book.fit_text(model, (tokens, labels), epochs=4, lr=2e-4, batch_size=4, warmup=0.25, verbose=False)
    assert history["loss"][-1] < history["loss"][0]
    assert all(np.array_equal(a, b) for a, b in zip(lower, _weights(book, layers[0]))), "a frozen layer moved"
    assert any(not np.array_equal(a, b) for a, b in zip(top, _weights(book, layers[-1]))), "the top layer did not train"
    expected = [0.0, 1e-4, 2e-4, 2e-4 * 5 / 6, 2e-4 * 4 / 6, 2e-4 * 3 / 6, 2e-4 * 2 / 6, 2e-4 / 6]
    np.testing.assert_allclose(history["lr"], expected, rtol=1e-5, atol=1e-12)
    assert len(history["epoch_seconds"]) == 4
    assert book.predict_text(model, tokens).shape == (8, 2)


def test_bad_input_to_the_text_helpers(book):
    with pytest.raises(ValueError, match="empty"):
        book.tokenize(["fine", ""], 16)
    with pytest.raises(TypeError, match=r"texts\[0\] is float"):
        book.tokenize([3.5], 16)
    with pytest.raises(ValueError, match="512"):
        book.tokenize(["fine"], 1000)
    model = book.text_classifier(2)
    tokens = book.tokenize(["one", "two"], 8)
    with pytest.raises(ValueError, match=r"labels must be in 0\.\.1"):
        book.fit_text(model, (tokens, np.array([0, 2])), verbose=False)
    with pytest.raises(ValueError, match="differ in length"):
        book.fit_text(model, (tokens, np.array([0, 1, 1])), verbose=False)
    with pytest.raises(TypeError, match="book.tokenize"):
        book.predict_text(model, tokens["input_ids"])
    with pytest.raises(ValueError, match="no transformer layers"):
        book.encoder_layers(book.new_head(4, 2))


def test_fit_text_decays_weight_matrices_but_not_biases_or_layernorm(book, monkeypatch):
    """BERT's recipe: decoupled weight decay on the weight matrices only. With a huge decay and a tiny rate, one step
    shrinks every matrix of the trained layer by about lr * decay, while a 1-D weight moves by Adam's step alone."""
    monkeypatch.setattr(text, "WEIGHT_DECAY", 2e4)  # lr * decay = 0.2: one step shrinks a decayed weight by 20 %
    book.seed(0)
    tokens = book.tokenize(["win cash now", "lunch at noon?"] * 4, 12)
    model = book.train_top_layers(book.text_classifier(2), 1)
    top = book.encoder_layers(model)[-1]
    before = _weights(book, top)
    book.fit_text(model, (tokens, np.array([1, 0] * 4)), epochs=1, lr=1e-5, batch_size=8, warmup=0.0, verbose=False)
    after = _weights(book, top)
    matrices = [(a, b) for a, b in zip(before, after) if a.ndim >= 2]
    vectors = [(a, b) for a, b in zip(before, after) if a.ndim < 2]
    assert matrices and vectors
    for old, new in matrices:
        assert np.linalg.norm(new) < 0.85 * np.linalg.norm(old), "a weight matrix was not decayed"
    for old, new in vectors:
        assert np.abs(new - old).max() < 1e-4, "a bias or LayerNorm weight was decayed"

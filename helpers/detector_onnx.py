"""Convert the TF Object Detection API's SSD-MobileNetV2-COCO frozen graph to ONNX with tf2onnx (chapter 18).

Run as `python -m helpers.detector_onnx IN.pb OUT.onnx` (the registry does this in a subprocess, so the PyTorch
notebook runs the COCO detector with ONNX Runtime and never imports TensorFlow). The ONNX model takes the graph's
`image_tensor:0` (uint8, (N, H, W, 3)) and returns its four outputs under their TensorFlow names.

Two conversions of the same graph are not byte-identical: tf2onnx's optimiser merges equal constants and keeps
a different one's name from run to run, and on another CPU it folds float constants differently in their last bits
(measured: a digest of the initializers' bytes differed between two machines). The registry therefore checks what
the model computes (`check`) against helpers/reference_detections.json (`python scripts/make_derived_references.py
detector` writes it): its input and outputs exactly, its weights name-blind within a relative 1e-6, and its
detections on the scikit-image photos within SCORE_TOLERANCE and BOX_TOLERANCE.

Framework-neutral at import: TensorFlow, tf2onnx and onnx load only inside the functions.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

INPUTS = ["image_tensor:0"]
OUTPUTS = ["detection_boxes:0", "detection_scores:0", "detection_classes:0", "num_detections:0"]
OPSET = 17
PHOTOS = ("astronaut", "chelsea", "coffee")  # the chapter's photos with detections (rocket has none above 0.3)
MIN_SCORE = 0.3  # reference detections at least this confident are checked
# Tolerances. Measured (scripts/make_derived_references.py detector, 2 cores, 2026-12-06): this ONNX model in ONNX
# Runtime and the TF frozen graph it came from differ by at most 6.3e-6 in scores and 4.8e-6 in box coordinates on
# these photos; constants folded in other last bits, or other CPU kernels, move outputs by as little. 1e-3 is about
# 150x that spread, and half a pixel of a 512-pixel photo; a changed weight that moves a detection more is refused.
SCORE_TOLERANCE = 1e-3
BOX_TOLERANCE = 1e-3  # box coordinates are fractions of the image side
# One changed weight seldom moves the top detections (measured: +0.1 or +0.5 on one class-predictor weight left them
# within 1e-3), so the weights are checked too, name-blind, within helpers.registry.TENSOR_TOLERANCE. Tensors of
# fewer numbers (biases, shapes, small folded constants that tf2onnx may arrange differently; 0.2% of the numbers)
# are covered by the detections only.
MIN_WEIGHT_SIZE = 1024


def convert(src: str, dst: str) -> None:
    """Convert the frozen graph at `src` to an ONNX file at `dst` (opset 17)."""
    import tensorflow as tf
    import tf2onnx

    graph_def = tf.compat.v1.GraphDef()
    with open(src, "rb") as file:
        graph_def.ParseFromString(file.read())
    tf2onnx.convert.from_graph_def(graph_def, input_names=INPUTS, output_names=OUTPUTS, opset=OPSET, output_path=dst)


def session(path: Path):
    """An ONNX Runtime session for the model at `path`, on one CPU thread (loading it takes most of a check)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def detections(model, images: dict[str, np.ndarray]) -> dict[str, dict[str, list]]:
    """Per image: the boxes, scores and COCO ids with a score of at least MIN_SCORE / 2 of `model` (a path or a
    `session`)."""
    model = session(model) if isinstance(model, (str, Path)) else model
    found = {}
    for name, image in images.items():
        boxes, scores, classes, num = model.run(OUTPUTS, {INPUTS[0]: image[None]})
        keep = scores[0] >= MIN_SCORE / 2
        found[name] = {
            "boxes": boxes[0][keep].round(5).tolist(),
            "scores": scores[0][keep].round(5).tolist(),
            "classes": np.rint(classes[0][keep]).astype(int).tolist(),
        }
    return found


def structure(model) -> dict[str, list]:
    """The inputs and outputs of `model` (a path or a `session`): names, element types, ranks (what a byte-level
    change to the graph breaks)."""
    model = session(model) if isinstance(model, (str, Path)) else model
    return {
        "inputs": [[i.name, i.type, len(i.shape)] for i in model.get_inputs()],
        "outputs": [[o.name, o.type, len(o.shape)] for o in model.get_outputs()],
    }


def photos(names=PHOTOS) -> dict[str, np.ndarray]:
    """The scikit-image photos from the registry, uint8 (H, W, 3)."""
    from helpers import data

    return {name: data.load_photo(name) for name in names}


def compare(found: dict, expected: dict) -> str | None:
    """None when every reference detection (score >= MIN_SCORE) has a match of the same class within the
    tolerances and nothing new passes MIN_SCORE + SCORE_TOLERANCE; else the first difference."""
    for name, want in expected.items():
        have = found.get(name, {"boxes": [], "scores": [], "classes": []})
        used = set()
        for box, score, label in zip(want["boxes"], want["scores"], want["classes"]):
            if score < MIN_SCORE:
                continue
            match = _match(have, box, score, label)
            if match is None:
                return f"{name}: no detection of COCO id {label} with score {score:.3f} near box {box}"
            used.add(match)
        for i, score in enumerate(have["scores"]):
            if i not in used and score >= MIN_SCORE + SCORE_TOLERANCE:
                return f"{name}: unexpected detection of COCO id {have['classes'][i]} with score {score:.3f}"
    return None


def _match(have: dict, box: list, score: float, label: int) -> int | None:
    """The index of a detection of `label` within the tolerances of (box, score), or None."""
    for i, (other_box, other_score, other_label) in enumerate(zip(have["boxes"], have["scores"], have["classes"])):
        box_gap = np.abs(np.subtract(other_box, box)).max()
        if other_label == label and abs(other_score - score) <= SCORE_TOLERANCE and box_gap <= BOX_TOLERANCE:
            return i
    return None


def weight_fingerprint(path: Path) -> list[list]:
    """Name-blind fingerprints of the model's weights (initializers of at least MIN_WEIGHT_SIZE numbers): [dtype,
    shape, projections, scale] per tensor (helpers.registry.tensor_fingerprint), sorted by dtype, shape and value."""
    import onnx
    from onnx import numpy_helper

    from helpers import registry

    graph = onnx.load(str(path)).graph
    arrays = {str(i): numpy_helper.to_array(t) for i, t in enumerate(graph.initializer) if _size(t) >= MIN_WEIGHT_SIZE}
    rows = [
        [p["dtype"], p["shape"], p["projections"], max(p["scales"])]
        for p in registry.tensor_fingerprint(arrays).values()
    ]
    return sorted(rows, key=lambda row: (row[0], row[1], row[2][0]))


def _size(tensor) -> int:
    return int(np.prod(tensor.dims)) if len(tensor.dims) else 1


def compare_weights(found: list[list], expected: list[list]) -> str | None:
    """None when both lists hold tensors of the same dtypes and shapes whose values agree within
    helpers.registry.TENSOR_TOLERANCE; else the first difference."""
    from helpers.registry import TENSOR_TOLERANCE

    if [row[:2] for row in found] != [row[:2] for row in expected]:
        return f"other weight tensors ({len(found)} of at least {MIN_WEIGHT_SIZE} numbers, expected {len(expected)})"
    for (dtype, shape, projections, _), (_, _, reference, scale) in zip(found, expected):
        if max(abs(a - b) for a, b in zip(projections, reference)) > TENSOR_TOLERANCE * scale + 1e-30:
            return (
                f"a {dtype} weight tensor of shape {shape} has other values (beyond {TENSOR_TOLERANCE:g} of its scale)"
            )
    return None


def check(path: Path, reference: Path) -> str | None:
    """None when the ONNX model at `path` has the reference's inputs and outputs, its weights (within
    helpers.registry.TENSOR_TOLERANCE) and finds its detections on the photos within the tolerances; else what
    differs (the registry's `Computes` check)."""
    expected = json.loads(Path(reference).read_text())
    problem = compare_weights(weight_fingerprint(path), expected["weights"])
    if problem:
        return problem
    model = session(path)
    if structure(model) != expected["structure"]:
        return f"other inputs or outputs: {structure(model)}, expected {expected['structure']}"
    return compare(detections(model, photos(tuple(expected["detections"]))), expected["detections"])


if __name__ == "__main__":
    convert(*sys.argv[1:3])

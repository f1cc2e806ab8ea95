"""Convert the TF Object Detection API's SSD-MobileNetV2-COCO frozen graph to ONNX with tf2onnx (chapter 18).

Run as `python -m helpers.detector_onnx IN.pb OUT.onnx` (the registry does this in a subprocess, so the PyTorch
notebook runs the COCO detector with ONNX Runtime and never imports TensorFlow). The ONNX model takes the graph's
`image_tensor:0` (uint8, (N, H, W, 3)) and returns its four outputs under their TensorFlow names.

Two conversions of the same graph are not byte-identical: tf2onnx's optimiser merges equal constants and keeps
a different one's name from run to run (measured: same tensors, same operations, other names, file sizes a few
hundred bytes apart). The registry therefore checks `onnx_digest`, a sha256 of what the model computes with
(every initializer's type, shape and values; the operations; inputs, outputs and opsets), blind to names.

Framework-neutral at import: TensorFlow, tf2onnx and onnx load only inside the functions.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import Counter
from pathlib import Path

INPUTS = ["image_tensor:0"]
OUTPUTS = ["detection_boxes:0", "detection_scores:0", "detection_classes:0", "num_detections:0"]
OPSET = 17


def convert(src: str, dst: str) -> None:
    """Convert the frozen graph at `src` to an ONNX file at `dst` (opset 17)."""
    import tensorflow as tf
    import tf2onnx

    graph_def = tf.compat.v1.GraphDef()
    with open(src, "rb") as file:
        graph_def.ParseFromString(file.read())
    tf2onnx.convert.from_graph_def(graph_def, input_names=INPUTS, output_names=OUTPUTS, opset=OPSET, output_path=dst)


def onnx_digest(path: Path) -> str:
    """A sha256 of an ONNX model's initializers (type, shape, values, as a sorted multiset), its operation counts,
    its inputs, outputs and opsets; blind to the names of nodes and constants."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    tensors = sorted(
        hashlib.sha256(f"{t.data_type}{list(t.dims)}".encode() + numpy_helper.to_array(t).tobytes()).hexdigest()
        for t in graph.initializer
    )
    summary = {
        "initializers": tensors,
        "operations": sorted(Counter(node.op_type for node in graph.node).items()),
        "inputs": [(i.name, i.type.tensor_type.elem_type) for i in graph.input],
        "outputs": [o.name for o in graph.output],
        "opsets": sorted((o.domain, o.version) for o in model.opset_import),
    }
    return hashlib.sha256(json.dumps(summary).encode()).hexdigest()


if __name__ == "__main__":
    convert(*sys.argv[1:3])

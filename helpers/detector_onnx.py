"""Convert the TF Object Detection API's SSD-MobileNetV2-COCO frozen graph to ONNX with tf2onnx (chapter 18).

Run as `python -m helpers.detector_onnx IN.pb OUT.onnx` (the registry does this in a subprocess, so the PyTorch
notebook runs the COCO detector with ONNX Runtime and never imports TensorFlow). The ONNX model takes the graph's
`image_tensor:0` (uint8, (N, H, W, 3)) and returns its four outputs under their TensorFlow names.

Framework-neutral at import: TensorFlow and tf2onnx load only inside `convert`.

tf2onnx's optimiser keeps one of several equal constants, chosen in the order of a Python set of names, so with
Python's per-process string hashing two conversions name the constants differently and the bytes differ. Run as
a script, the module restarts itself with `PYTHONHASHSEED=0` (unless it is already set), which makes the file
byte-identical from run to run, so the registry can check its plain sha256.
"""

from __future__ import annotations

import os
import sys

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


if __name__ == "__main__":
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.execve(
            sys.executable,
            [sys.executable, "-m", "helpers.detector_onnx", *sys.argv[1:]],
            {**os.environ, "PYTHONHASHSEED": "0"},
        )
    convert(*sys.argv[1:3])

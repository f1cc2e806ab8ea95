"""Export (Keras): SavedModels, ONNX files and TFLite/LiteRT float and int8 flatbuffers, all written by Keras'
`model.export`, loaded back as NumPy predict functions and checked against the framework model on a whole data set
(chapter 15).

Every exported model takes what `book.predict` takes, a float32 NHWC batch with any number of images, and returns
logits, as the PyTorch exports do. Statistics, runtimes and the HTTP app are framework-neutral, in `helpers.export`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from helpers import checks, export
from helpers.keras.core import input_shape
from helpers.keras.models import Model
from helpers.keras.training import predict

__all__ = ["export_formats", "export_model", "load_exported", "verify_export"]

FORMATS = {  # format: (file or directory name, what it is)
    "saved_model": ("saved_model", "TensorFlow SavedModel directory (model.export)"),
    "onnx": ("model.onnx", "ONNX (model.export, tf2onnx underneath), float32"),
    "tflite": ("model.tflite", "TFLite/LiteRT flatbuffer, float32"),
    "tflite_int8": ("model_int8.tflite", "TFLite/LiteRT, int8 weights and activations, float input and output"),
}
OPSET = 18


def export_formats() -> tuple[str, ...]:
    """The formats `export_model` writes with this framework."""
    return tuple(FORMATS)


def _check_format(format: str) -> str:
    if format not in FORMATS:
        known = "; ".join(f"{name!r} ({what})" for name, (_, what) in FORMATS.items())
        raise ValueError(f"Unknown export format {format!r} for Keras; supported formats: {known}")
    return format


def _input_spec(model, image_size: int) -> tuple:
    """The input shape with a dynamic batch axis, NHWC images of image_size pixels (or feature vectors)."""
    shape = input_shape(model)
    if shape is None:
        raise ValueError("the model has no single input to read the shape from; pass a network built by book")
    size = checks.count("image_size", image_size)
    return (None, size, size, shape[-1]) if len(shape) == 3 else (None, *shape)


def export_model(
    model: Model, directory, format: str = "onnx", image_size: int = 224, calibration: np.ndarray | None = None
) -> Path:
    """Write `model` in `format` (see export_formats) into `directory`, inputs NHWC of image_size pixels with a
    dynamic batch axis; returns the written path. int8 formats calibrate on `calibration` (model inputs); an ONNX file
    becomes int8 with export.quantize_onnx, in either framework."""
    format = _check_format(format)
    if format.endswith("_int8") and calibration is None:
        raise ValueError(f"format {format!r} needs calibration: a few hundred model inputs (float32 NHWC) to measure")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FORMATS[format][0]
    shape = _input_spec(model, image_size)
    logger, level = tf.get_logger(), tf.get_logger().level
    logger.setLevel("ERROR")  # no "Assets written to" lines from model.export
    try:
        _write(model, format, shape, path, calibration)
    finally:
        logger.setLevel(level)
    return path


def _write(model, format: str, shape: tuple, path: Path, calibration) -> None:
    """Write one format with Keras' own `model.export` (TensorFlow's logger already quieted)."""
    spec = [keras.InputSpec(shape=shape, dtype="float32", name="images")]
    if format == "saved_model":
        model.export(path, format="tf_saved_model", input_signature=spec, verbose=False)
    elif format == "onnx":  # tf2onnx underneath, on the TensorFlow backend
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # Keras' tf2onnx patch probes np.object
            model.export(str(path), format="onnx", input_signature=spec, opset_version=OPSET, verbose=False)
    else:  # TFLiteConverter underneath, from a SavedModel; options are passed on to the converter
        options = {} if format == "tflite" else _litert_int8_options(checks.inputs(calibration, None))
        model.export(str(path), format="litert", input_signature=spec, verbose=False, **options)


def _litert_int8_options(calibration: np.ndarray) -> dict:
    """The `model.export(..., format="litert")` options for post-training int8: weights and activations in int8,
    activation ranges measured on `calibration` (model inputs, never test data), float32 input and output kept."""
    return {
        "optimizations": [tf.lite.Optimize.DEFAULT],
        "representative_dataset": lambda: ([row[None]] for row in calibration),
        "target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
    }


def load_exported(path, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """A predict function (float32 NHWC NumPy batch in, NumPy outputs out) for what export_model wrote: a
    SavedModel directory (tf.saved_model.load), .onnx (ONNX Runtime) or .tflite (LiteRT); `threads` sets the CPU
    threads of ONNX Runtime and LiteRT (None: their default; TensorFlow keeps its process-wide setting)."""
    path = Path(path)
    threads = None if threads is None else checks.count("threads", threads)
    if path.suffix == ".onnx":
        return export.onnx_predictor(path, threads)
    if path.suffix == ".tflite":
        return export.tflite_predictor(path, threads)
    if not (path / "saved_model.pb").is_file():
        raise ValueError(
            f"cannot load {path.name!r} with Keras: expected a SavedModel directory, an .onnx or a .tflite file "
            "(a .pt2 ExportedProgram needs PyTorch: load it with helpers.torch)"
        )
    loaded = tf.saved_model.load(str(path))  # the function below must keep the loaded object (its variables) alive

    def run(x: np.ndarray) -> np.ndarray:
        return loaded.serve(tf.constant(np.asarray(x, dtype=np.float32))).numpy()

    return run


def verify_export(
    model: Model,
    path,
    inputs: np.ndarray,
    labels: np.ndarray | None = None,
    max_abs_diff: float | None = 1e-4,
    min_agreement: float = 1.0,
    batch_size: int = 256,
) -> dict:
    """Parity of an exported model with `model` on every input: export.parity's report (max |Δlogit|, top-1
    agreement, accuracies with labels); raises export.ParityError beyond max_abs_diff or below min_agreement."""
    inputs = checks.inputs(inputs, input_shape(model))
    reference = predict(model, inputs, batch_size=batch_size)
    exported = export.batched(load_exported(path), inputs, batch_size)
    return export.check_parity(export.parity(reference, exported, labels), max_abs_diff, min_agreement)

"""Export (Keras): SavedModels (`model.export`), ONNX files (tf2onnx), TFLite/LiteRT float and int8
flatbuffers, loaded back as NumPy predict functions and checked against the framework model on a whole data set
(chapter 15).

Every exported model takes what `book.predict` takes, a float32 NHWC batch with any number of images, and returns
logits, as the PyTorch exports do. Statistics, runtimes and the HTTP app are framework-neutral, in `helpers.export`.
"""

from __future__ import annotations

import tempfile
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
    "onnx": ("model.onnx", "ONNX (tf2onnx), float32"),
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
    """Write one format (TensorFlow's logger already quieted)."""
    if format == "saved_model":
        spec = keras.InputSpec(shape=shape, dtype="float32", name="images")
        model.export(path, format="tf_saved_model", input_signature=[spec], verbose=False)
    elif format == "onnx":
        _onnx(model, shape, path)
    else:
        _tflite(model, shape, path, None if format == "tflite" else checks.inputs(calibration, None))


def _onnx(model, shape: tuple, path: Path) -> None:
    """tf2onnx on a tf.function with an input signature (the model in inference mode), one file."""
    import tf2onnx

    function = tf.function(lambda images: model(images, training=False))
    signature = (tf.TensorSpec(shape, tf.float32, name="images"),)
    tf2onnx.convert.from_function(function, input_signature=signature, opset=OPSET, output_path=str(path))


def _tflite(model, shape: tuple, path: Path, calibration: np.ndarray | None) -> None:
    """TFLiteConverter from a SavedModel; with calibration, post-training int8 quantization of weights and
    activations (a representative dataset measures the activation ranges), float32 input and output kept."""
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "saved_model"
        model.export(
            source,
            format="tf_saved_model",
            input_signature=[keras.InputSpec(shape=shape, dtype="float32")],
            verbose=False,
        )
        converter = tf.lite.TFLiteConverter.from_saved_model(str(source))
        if calibration is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([row[None]] for row in calibration)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        path.write_bytes(converter.convert())


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

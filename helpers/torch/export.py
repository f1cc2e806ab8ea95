"""Export (PyTorch): `torch.export` ExportedPrograms and ONNX files, loaded back as NumPy predict functions
and checked against the framework model on a whole data set (chapter 15).

Every exported model takes what `book.predict` takes, a float32 NHWC batch with any number of images, and returns
logits: a channels-last wrapper moves the NHWC→NCHW transpose into the exported graph, so the PyTorch and the Keras
exports have the same interface. Statistics, runtimes and the HTTP app are framework-neutral, in `helpers.export`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from helpers import checks, export
from helpers.torch.core import input_shape
from helpers.torch.models import Model
from helpers.torch.training import predict

__all__ = ["export_formats", "export_model", "load_exported", "verify_export"]

FORMATS = {  # format: (file name, what it is)
    "exported_program": ("model.pt2", "torch.export ExportedProgram, saved with torch.export.save"),
    "onnx": ("model.onnx", "ONNX (torch.onnx.export, dynamo exporter), float32"),
}
OPSET = 18


class _ChannelsLast(nn.Module):
    """NHWC images in (as `book.predict` takes them), the wrapped network's outputs out."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images.permute(0, 3, 1, 2) if images.ndim == 4 else images)


def export_formats() -> tuple[str, ...]:
    """The formats `export_model` writes with this framework."""
    return tuple(FORMATS)


def _check_format(format: str) -> str:
    if format not in FORMATS:
        known = "; ".join(f"{name!r} ({what})" for name, (_, what) in FORMATS.items())
        raise ValueError(f"Unknown export format {format!r} for PyTorch; supported formats: {known}")
    return format


def _example(model: nn.Module, image_size: int) -> torch.Tensor:
    """Two example inputs of the model's shape, NHWC for images; the batch axis stays dynamic in the export."""
    shape = input_shape(model)
    if shape is None:
        raise ValueError("found no Conv2d or Linear layer to read the input shape from; pass a network built by book")
    size = checks.count("image_size", image_size)
    wanted = (size, size, shape[-1]) if len(shape) == 3 else shape
    return torch.zeros((2, *wanted), dtype=torch.float32)


def export_model(
    model: Model, directory, format: str = "onnx", image_size: int = 224, calibration: np.ndarray | None = None
) -> Path:
    """Write `model` in `format` (see export_formats) into `directory`, inputs NHWC of image_size pixels with a
    dynamic batch axis; returns the written path. PyTorch's formats are float32, so `calibration` (for Keras'
    tflite_int8) is not used; an ONNX file becomes int8 with export.quantize_onnx, in either framework."""
    format = _check_format(format)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FORMATS[format][0]
    was_training, device = model.training, _device(model)
    example = _example(model, image_size)
    batch = {"images": {0: torch.export.Dim("batch", min=1, max=65536)}}
    try:  # exported on the CPU in eval mode; the caller's model goes back to its device and mode afterwards
        network = _ChannelsLast(model.to("cpu").eval()).eval()
        if format == "exported_program":
            torch.export.save(torch.export.export(network, (example,), dynamic_shapes=batch), path)
        else:
            _onnx(network, example, batch, path)
    finally:
        model.to(device).train(was_training)
    return path


def _device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (the CPU for a model with neither)."""
    tensor = next(iter(model.parameters()), None)
    if tensor is None:
        tensor = next(iter(model.buffers()), None)
    return torch.device("cpu") if tensor is None else tensor.device


def _onnx(network: nn.Module, example: torch.Tensor, batch: dict, path: Path) -> None:
    """torch.onnx.export with the dynamo exporter (torch's default), one self-contained file."""
    torch.onnx.export(
        network,
        (example,),
        path,
        input_names=["images"],
        output_names=["logits"],
        dynamic_shapes=batch,
        opset_version=OPSET,
        external_data=False,
        verbose=False,
    )


def load_exported(path, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """A predict function (float32 NHWC NumPy batch in, NumPy outputs out) for a file written by export_model:
    .pt2 (torch.export.load), .onnx (ONNX Runtime) or .tflite (LiteRT); `threads` sets the runtime's CPU threads
    (None: its default)."""
    path = Path(path)
    threads = None if threads is None else checks.count("threads", threads)
    if path.suffix == ".onnx":
        return export.onnx_predictor(path, threads)
    if path.suffix == ".tflite":
        return export.tflite_predictor(path, threads)
    if path.suffix != ".pt2":
        raise ValueError(
            f"cannot load {path.name!r} with PyTorch: expected a .pt2 ExportedProgram, an .onnx or a .tflite file "
            "(a SavedModel directory needs TensorFlow: load it with helpers.keras)"
        )
    module = torch.export.load(path).module()

    def run(x: np.ndarray) -> np.ndarray:
        before = torch.get_num_threads()
        torch.set_num_threads(threads or before)  # the process-wide setting, for this call only
        try:
            with torch.no_grad():
                return module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()
        finally:
            torch.set_num_threads(before)

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

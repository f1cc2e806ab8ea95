"""Exported models, framework-neutral: parity statistics, latency percentiles, sizes on disk, ONNX Runtime and LiteRT
predictors, ONNX int8 quantization, and a small HTTP app that serves any predict function (chapter 15).

Imports neither PyTorch nor TensorFlow. Optional libraries (onnxruntime, onnx, ai_edge_litert, starlette, uvicorn)
are imported inside the functions that use them. Every predict function here takes a float32 NHWC NumPy batch and
returns a NumPy array of logits, whatever produced the model.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np

from helpers import checks

Predict = Callable[[np.ndarray], np.ndarray]
NPY_MAGIC = b"\x93NUMPY"
IMAGE_MAGIC = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG"}
MAX_BODY_BYTES = 4 * 1024 * 1024


class ParityError(AssertionError):
    """An exported model's outputs disagree with the framework model's beyond the tolerance."""


# ---- parity, latency, size ----


def parity(reference: np.ndarray, exported: np.ndarray, labels: np.ndarray | None = None) -> dict[str, float]:
    """How far exported logits are from the framework's on the same inputs: max and mean |Δlogit|, top-1 agreement,
    and with labels the accuracy of each and its change (exported minus reference)."""
    reference, exported = np.asarray(reference, dtype=np.float64), np.asarray(exported, dtype=np.float64)
    if reference.shape != exported.shape or reference.ndim != 2:
        raise ValueError(
            f"reference and exported logits must be (N, classes) arrays of one shape, got {reference.shape} and "
            f"{exported.shape}"
        )
    diff = np.abs(reference - exported)
    report = {
        "examples": len(reference),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "top1_agreement": float(np.mean(reference.argmax(1) == exported.argmax(1))),
    }
    if labels is not None:
        labels = checks.labels(labels, len(reference), reference.shape[1])
        report["accuracy_reference"] = float(np.mean(reference.argmax(1) == labels))
        report["accuracy_exported"] = float(np.mean(exported.argmax(1) == labels))
        report["accuracy_change"] = report["accuracy_exported"] - report["accuracy_reference"]
    return report


def check_parity(report: dict, max_abs_diff: float | None = 1e-4, min_agreement: float = 1.0) -> dict:
    """Raise ParityError unless max |Δlogit| <= max_abs_diff (None: not checked, e.g. int8) and top-1 agreement >=
    min_agreement; returns the report."""
    problems = []
    if max_abs_diff is not None and not report["max_abs_diff"] <= max_abs_diff:
        problems.append(f"max |Δlogit| {report['max_abs_diff']:.3g} > {max_abs_diff:.3g}")
    if not report["top1_agreement"] >= min_agreement:
        problems.append(f"top-1 agreement {report['top1_agreement']:.4f} < {min_agreement:.4f}")
    if problems:
        raise ParityError(
            f"the exported model disagrees with the framework model on {report['examples']} inputs: "
            + "; ".join(problems)
        )
    return report


def latency(predict: Predict, inputs: np.ndarray, repeats: int = 50, warmup: int = 5) -> dict[str, float]:
    """Milliseconds per call of `predict` on one image at a time (batch 1), cycling through `inputs`: the median
    (p50), the 95th percentile (p95) and the mean, after `warmup` untimed calls."""
    repeats, warmup = checks.count("repeats", repeats), checks.count("warmup", warmup, minimum=0)
    inputs = np.asarray(inputs, dtype=np.float32)
    for i in range(warmup):
        predict(inputs[i % len(inputs)][None])
    times = []
    for i in range(repeats):
        one = inputs[i % len(inputs)][None]
        start = time.perf_counter()
        predict(one)
        times.append(1000 * (time.perf_counter() - start))
    return {
        "p50_ms": float(np.percentile(times, 50)),
        "p95_ms": float(np.percentile(times, 95)),
        "mean_ms": float(np.mean(times)),
    }


def size_on_disk(path) -> int:
    """Bytes of a file, or of every file under a directory (a SavedModel is a directory)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path} does not exist")
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def batched(predict: Predict, inputs: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Run `predict` over `inputs` in batches and join the outputs."""
    batch_size = checks.count("batch_size", batch_size)
    inputs = np.asarray(inputs, dtype=np.float32)
    return np.concatenate([predict(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)])


# ---- runtimes that need no training framework ----


def onnx_predictor(path, threads: int | None = None) -> Predict:
    """A predict function running an ONNX file with ONNX Runtime on the CPU (first input in, first output out)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = checks.count("threads", threads)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name, output = session.get_inputs()[0].name, session.get_outputs()[0].name

    def predict(x: np.ndarray) -> np.ndarray:
        return session.run([output], {name: np.ascontiguousarray(x, dtype=np.float32)})[0]

    predict.session = session
    return predict


def tflite_predictor(path, threads: int | None = None) -> Predict:
    """A predict function running a .tflite file with LiteRT's interpreter (`ai_edge_litert`); the batch axis is
    resized to each call's batch."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    current = [int(source["shape"][0])]

    def predict(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if len(x) != current[0]:
            interpreter.resize_tensor_input(source["index"], [len(x), *x.shape[1:]])
            interpreter.allocate_tensors()
            current[0] = len(x)
        interpreter.set_tensor(source["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(target["index"]).copy()

    predict.interpreter = interpreter
    return predict


def quantize_onnx(path, calibration: np.ndarray, output_path) -> Path:
    """Post-training static int8 quantization of an ONNX model with ONNX Runtime: the graph is first optimised
    (quant_pre_process folds BatchNorm-like Mul/Add into convolutions, so fewer tensors are rounded), then weights
    (per channel) and activations are stored in int8 (QDQ format), the activation ranges calibrated on `calibration`
    (float32 model inputs, a few hundred at most, never test data)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    calibration = np.asarray(calibration, dtype=np.float32)
    if calibration.ndim < 2 or len(calibration) == 0:
        raise ValueError(f"calibration must be a non-empty batch of model inputs, got shape {calibration.shape}")
    name = onnx_predictor(path).session.get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.rows = iter(calibration)

        def get_next(self):
            row = next(self.rows, None)
            return None if row is None else {name: row[None]}

    root, level = logging.getLogger(), logging.getLogger().level
    root.setLevel(logging.ERROR)  # ONNX Runtime's quantizer logs advice on the root logger
    try:
        with tempfile.TemporaryDirectory() as scratch:
            prepared = Path(scratch) / "prepared.onnx"
            quant_pre_process(str(path), str(prepared))
            quantize_static(
                str(prepared),
                str(output_path),
                Reader(),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
            )
    finally:
        root.setLevel(level)
    return Path(output_path)


# ---- an HTTP endpoint: any predict function behind POST /predict ----


class BadRequest(Exception):
    """A request the app refuses with a 4xx status and a JSON error message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def decode_images(
    body: bytes, image_shape: tuple[int, int], max_batch: int = 64, max_bytes: int = MAX_BODY_BYTES
) -> np.ndarray:
    """The uint8 images (N, H, W) of a request body: a .npy array (uint8, (H, W) or (N, H, W)) or a PNG/JPEG image
    (converted to 8-bit grey). Raises BadRequest (4xx) with the reason for anything else."""
    if not body:
        raise BadRequest(400, "empty body: send a .npy array of uint8 pixels or a PNG/JPEG image")
    if len(body) > max_bytes:
        raise BadRequest(413, f"body of {len(body)} bytes is larger than the limit of {max_bytes}")
    if body.startswith(NPY_MAGIC):
        images = _decode_npy(body)
    elif any(body.startswith(magic) for magic in IMAGE_MAGIC):
        images = _decode_picture(body, image_shape)
    else:
        raise BadRequest(
            415, "the body is neither a .npy array nor a PNG/JPEG image; send np.save output or an image file"
        )
    if images.dtype != np.uint8:
        raise BadRequest(422, f"pixels must be uint8 (0-255), got {images.dtype}; send the raw image, not floats")
    shape = images.shape
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3 or images.shape[1:] != tuple(image_shape):
        height, width = image_shape
        raise BadRequest(
            422,
            f"images must be {height}x{width} greyscale pixels, shaped ({height}, {width}) or (N, {height}, "
            f"{width}), got shape {shape}",
        )
    if not 1 <= len(images) <= max_batch:
        raise BadRequest(422, f"send between 1 and {max_batch} images per request, got {len(images)}")
    return images


def _decode_npy(body: bytes) -> np.ndarray:
    try:
        return np.load(io.BytesIO(body), allow_pickle=False)
    except (ValueError, EOFError, OSError) as error:
        raise BadRequest(400, f"the .npy array could not be read: {error}") from None


def _decode_picture(body: bytes, image_shape: tuple[int, int]) -> np.ndarray:
    """A PNG/JPEG body as (H, W) grey pixels; its size is read from the header and checked before any pixel is
    decoded, so a small file that would decode to a huge image (a decompression bomb) costs nothing."""
    from PIL import Image, UnidentifiedImageError

    height, width = image_shape
    try:
        with Image.open(io.BytesIO(body)) as image:  # reads the header only
            if image.size != (width, height):
                raise BadRequest(422, f"images must be {height}x{width} pixels, got {image.size[1]}x{image.size[0]}")
            if image.mode not in ("L", "RGB", "RGBA", "P"):
                raise BadRequest(422, f"images must have 8-bit channels, got PIL mode {image.mode!r}")
            image.load()
            return np.asarray(image.convert("L"))
    except Image.DecompressionBombError as error:  # raised by Image.open; not an OSError
        raise BadRequest(422, f"the image is too large to decode: {error}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise BadRequest(400, f"the image could not be decoded: {error}") from None


async def read_body(request, max_bytes: int = MAX_BODY_BYTES) -> bytes:
    """The request body, refused with a 413 before it is read when its Content-Length exceeds `max_bytes`, and
    while it streams in when a body without that header (chunked transfer) grows past `max_bytes`."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest(400, f"Content-Length must be a number of bytes, got {declared!r}")
        if int(declared) > max_bytes:
            raise BadRequest(413, f"body of {declared} bytes is larger than the limit of {max_bytes}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise BadRequest(413, f"body larger than the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def make_app(
    predict: Predict,
    preprocess: Callable[[np.ndarray], np.ndarray],
    class_names,
    image_shape: tuple[int, int] = (28, 28),
    max_batch: int = 64,
    max_bytes: int = MAX_BODY_BYTES,
):
    """A Starlette app: POST /predict takes a .npy array of uint8 images or a PNG/JPEG image, runs
    `predict(preprocess(images))` and answers with the top class and its probability per image; GET /health.
    Decoding and the model run in Starlette's thread pool, so the event loop stays free for other requests while
    they compute. Bad requests get a 4xx status and a JSON `error`; nothing a client sends makes it answer 500."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    class_names = list(class_names)

    def answer(body: bytes) -> dict:
        """Blocking work, run in a worker thread: decode, preprocess, predict, top class per image."""
        images = decode_images(body, image_shape, max_batch, max_bytes)
        start = time.perf_counter()
        logits = np.asarray(predict(preprocess(images)), dtype=np.float64)
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        found = [
            {"class_id": int(k), "class": class_names[k], "probability": round(float(p[k]), 4)}
            for k, p in zip(probs.argmax(1), probs)
        ]
        return {"predictions": found, "model_ms": round(1000 * (time.perf_counter() - start), 2)}

    async def predict_route(request):
        try:
            return JSONResponse(await run_in_threadpool(answer, await read_body(request, max_bytes)))
        except BadRequest as bad:
            return JSONResponse({"error": bad.message}, status_code=bad.status)

    async def health(request):
        return JSONResponse({"status": "ok", "classes": len(class_names)})

    async def not_allowed(request, exc):
        return JSONResponse(
            {"error": f"{request.method} {request.url.path}: {exc.detail}"}, status_code=exc.status_code
        )

    routes = [Route("/predict", predict_route, methods=["POST"]), Route("/health", health, methods=["GET"])]
    return Starlette(routes=routes, exception_handlers={HTTPException: not_allowed})


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(app, port: int | None = None, timeout: float = 10.0):
    """Run `app` with uvicorn on 127.0.0.1 in a background thread; returns (server, thread, base URL). Stop it with
    stop_server(server, thread)."""
    import uvicorn

    port = free_port() if port is None else checks.count("port", port)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start on port {port}")
        time.sleep(0.02)
    return server, thread, f"http://127.0.0.1:{port}"


def stop_server(server, thread, timeout: float = 10.0) -> None:
    """Ask a server started by start_server to finish and wait for its thread."""
    server.should_exit = True
    thread.join(timeout)


def post(url: str, body: bytes, content_type: str = "application/octet-stream", timeout: float = 30.0):
    """POST `body` to `url`; returns (HTTP status, decoded JSON answer), for 4xx/5xx answers too; an answer that
    is not JSON (a proxy's error page, a plain-text 500) comes back as its text."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, _json_or_text(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, _json_or_text(error.read())


def _json_or_text(raw: bytes):
    """A response body as JSON when it is JSON, else as text."""
    try:
        return json.loads(raw or b"{}")
    except ValueError:  # json.JSONDecodeError and UnicodeDecodeError are both ValueErrors
        return raw.decode("utf-8", errors="replace")


def npy_bytes(array: np.ndarray) -> bytes:
    """An array as the bytes of a .npy file (what np.save writes)."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


def png_bytes(image: np.ndarray) -> bytes:
    """A (H, W) uint8 image as PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()

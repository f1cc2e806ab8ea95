"""Chapter 15: every export format of both frameworks loads back and matches the framework model; a perturbed export
fails the parity check; a fine-tuned PyTorch network ported to Keras gives the same ONNX predictions from both
frameworks; parity and latency statistics; the HTTP app answers bad requests with a 4xx and a JSON error."""

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from helpers import export
from helpers import keras as hk  # conftest.py has imported torch first, as it must be
from helpers import torch as ht
from helpers.keras import mobilenet_port

FRAMEWORKS = {"torch": ht, "keras": hk}
RNG = np.random.default_rng(0)
GREY = RNG.random((12, 28, 28, 1)).astype(np.float32)  # small-CNN inputs


def small_cnn(book):
    book.seed(0)
    return book.small_cnn(10)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Each framework's small CNN exported in every format it supports, and its ONNX file quantized to int8."""
    found = {}
    for name, book in FRAMEWORKS.items():
        model, directory = small_cnn(book), tmp_path_factory.mktemp(name)
        paths = {
            f: book.export_model(model, directory, f, image_size=28, calibration=GREY) for f in book.export_formats()
        }
        paths["onnx_int8"] = export.quantize_onnx(paths["onnx"], GREY, directory / "model_int8.onnx")
        found[name] = (model, paths)
    return found


@pytest.mark.parametrize("name", FRAMEWORKS)
def test_every_format_loads_back_and_matches_the_framework_model(name, exports):
    book = FRAMEWORKS[name]
    model, paths = exports[name]
    assert set(paths) == {*book.export_formats(), "onnx_int8"} and "onnx" in paths
    for fmt, path in paths.items():
        assert export.size_on_disk(path) > 0
        if fmt.endswith("_int8"):  # int8: close, not equal
            report = book.verify_export(model, path, GREY, max_abs_diff=None, min_agreement=0.5)
            assert report["max_abs_diff"] > 0
        else:
            report = book.verify_export(model, path, GREY, labels=np.arange(12) % 10)
            assert report["max_abs_diff"] < 1e-4 and report["accuracy_change"] == 0
        assert report["examples"] == len(GREY)
        outputs = book.load_exported(path)(GREY[:1])  # dynamic batch axis: one image and five images
        assert outputs.shape == (1, 10) and book.load_exported(path, threads=1)(GREY[:5]).shape == (5, 10)


@pytest.mark.parametrize("name", FRAMEWORKS)
def test_a_perturbed_onnx_weight_fails_the_parity_check(name, exports, tmp_path):
    book = FRAMEWORKS[name]
    model, paths = exports[name]
    graph = onnx.load(paths["onnx"])
    weights = max(graph.graph.initializer, key=lambda t: np.prod(t.dims))  # the largest weight tensor
    changed = numpy_helper.to_array(weights) * 1.5
    weights.CopyFrom(numpy_helper.from_array(changed.astype(np.float32), weights.name))
    onnx.save(graph, tmp_path / "perturbed.onnx")
    with pytest.raises(export.ParityError, match="disagrees"):
        book.verify_export(model, tmp_path / "perturbed.onnx", GREY)
    book.verify_export(model, paths["onnx"], GREY)  # the untouched export still passes


@pytest.mark.parametrize("name", FRAMEWORKS)
def test_a_model_changed_after_export_fails_the_parity_check(name, tmp_path):
    book = FRAMEWORKS[name]
    model = small_cnn(book)
    native = {"torch": "exported_program", "keras": "saved_model"}[name]
    path = book.export_model(model, tmp_path, native, image_size=28)
    book.verify_export(model, path, GREY)
    head = model.head if name == "torch" else model.layers[-1]
    if name == "torch":
        with torch.no_grad():
            head[-1].bias += 5 * torch.arange(10.0)
    else:
        dense = head.layers[-1]
        dense.bias.assign(dense.bias.numpy() + 5 * np.arange(10.0, dtype=np.float32))
    with pytest.raises(export.ParityError):
        book.verify_export(model, path, GREY)


@pytest.mark.parametrize("name", FRAMEWORKS)
def test_bad_formats_and_paths_are_refused_with_one_clear_message(name, tmp_path):
    book = FRAMEWORKS[name]
    model = small_cnn(book)
    with pytest.raises(ValueError, match="Unknown export format 'coreml'.*supported formats:") as error:
        book.export_model(model, tmp_path, "coreml", image_size=28)
    assert all(repr(f) in str(error.value) for f in book.export_formats())
    if name == "keras":
        with pytest.raises(ValueError, match="needs calibration"):
            book.export_model(model, tmp_path, "tflite_int8", image_size=28)
    with pytest.raises(ValueError, match="cannot load"):
        book.load_exported(tmp_path / ("model.pt2" if name == "keras" else "saved_model"))


def test_the_same_fine_tuned_weights_give_the_same_onnx_predictions_from_both_frameworks(tmp_path):
    """A MobileNetV2 + head whose weights and BatchNorm statistics have moved away from ImageNet (as fine-tuning
    moves them; here by a seeded perturbation and a training-mode pass, which is cheaper than training), copied
    tensor by tensor into the Keras port and exported to ONNX by both frameworks: the two ONNX models agree."""
    ht.seed(0)
    model = ht.add_head(ht.pretrained_backbone("mobilenet_v2"), ht.new_head(1280, 10))
    images = RNG.normal(size=(32, 32, 32, 3)).astype(np.float32)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(1 + 0.05 * torch.randn(parameter.shape, generator=generator))
        model.train()(torch.from_numpy(images[:16]).permute(0, 3, 1, 2))  # BatchNorm running statistics move
    model.eval()
    state = {k: v.numpy() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    imagenet = torch.load(ht.prepare_weights(), weights_only=True)
    for key in ("features.18.1.running_mean", "features.0.0.weight"):  # BatchNorm statistics and weights moved
        assert not np.allclose(state[f"backbone.{key}"], imagenet[key].numpy())

    backbone = hk.pretrained_backbone("mobilenet_v2", weights=None)
    used = mobilenet_port.load_torch_state(backbone, {k.removeprefix("backbone."): v for k, v in state.items()})
    assert used == sum(1 for k in state if k.startswith("backbone."))
    head = hk.new_head(1280, 10)
    head.layers[-1].set_weights([state["head.1.weight"].T, state["head.1.bias"]])
    twin = hk.add_head(backbone, head)

    torch_onnx = ht.export_model(model, tmp_path / "torch", "onnx", image_size=32)
    keras_onnx = hk.export_model(twin, tmp_path / "keras", "onnx", image_size=32)
    from_torch = export.batched(export.onnx_predictor(torch_onnx), images[16:])
    from_keras = export.batched(export.onnx_predictor(keras_onnx), images[16:])
    report = export.check_parity(export.parity(from_torch, from_keras), max_abs_diff=1e-4, min_agreement=1.0)
    assert report["examples"] == 16
    np.testing.assert_allclose(from_torch, ht.predict(model, images[16:]), atol=1e-4)


# ---- framework-neutral statistics ----


def test_parity_statistics_against_a_hand_computation():
    reference = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 0.5]])
    exported = reference + np.array([[0.0, 0.0, 0.1], [0.0, -2.5, 0.0], [0.0, 0.0, 0.0]])
    report = export.parity(reference, exported, labels=np.array([0, 1, 2]))
    assert report["max_abs_diff"] == pytest.approx(2.5) and report["mean_abs_diff"] == pytest.approx(2.6 / 9)
    assert report["top1_agreement"] == pytest.approx(2 / 3)  # row 1 now predicts class 2
    assert report["accuracy_reference"] == pytest.approx(2 / 3) and report["accuracy_exported"] == pytest.approx(1 / 3)
    assert report["accuracy_change"] == pytest.approx(-1 / 3)
    export.check_parity(report, max_abs_diff=None, min_agreement=0.6)
    with pytest.raises(export.ParityError, match="max"):
        export.check_parity(report, max_abs_diff=1.0, min_agreement=0.0)
    with pytest.raises(ValueError, match="one shape"):
        export.parity(reference, exported[:2])


def test_latency_percentiles_and_sizes(tmp_path):
    calls = []
    result = export.latency(lambda x: calls.append(x.shape), np.zeros((3, 4, 4, 1)), repeats=7, warmup=2)
    assert calls == [(1, 4, 4, 1)] * 9 and 0 <= result["p50_ms"] <= result["p95_ms"]
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_bytes(b"x" * 10)
    (tmp_path / "d" / "b").write_bytes(b"x" * 5)
    assert export.size_on_disk(tmp_path / "d") == 15 and export.size_on_disk(tmp_path / "d" / "b") == 5


# ---- the HTTP app ----


def pickled_npy() -> bytes:
    """A .npy file holding Python objects: loading it would unpickle, which the app refuses."""
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return buffer.getvalue()


def png_header(width: int, height: int) -> bytes:
    """The first bytes of a greyscale PNG claiming width x height pixels: tiny, yet PIL would allocate the whole
    image to decode it; above twice PIL's MAX_IMAGE_PIXELS, Image.open raises DecompressionBombError."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey, no interlace
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def server():
    """The app serving a NumPy 'model' (mean brightness decides the class) on a free port; stopped afterwards."""

    def predict(x):
        bright = x.reshape(len(x), -1).mean(1)
        return np.stack([-bright, bright], axis=1)

    app = export.make_app(predict, lambda images: images.astype(np.float32) / 255, ["dark", "bright"], (28, 28))
    running, thread, url = export.start_server(app)
    yield url
    export.stop_server(running, thread)
    assert not thread.is_alive()


def test_the_app_answers_good_requests(server):
    images = np.zeros((3, 28, 28), np.uint8)
    images[1] = 255
    status, answer = export.post(server + "/predict", export.npy_bytes(images))
    assert status == 200 and [p["class"] for p in answer["predictions"]] == ["dark", "bright", "dark"]
    status, answer = export.post(server + "/predict", export.png_bytes(images[1]), "image/png")
    assert status == 200 and answer["predictions"][0]["class_id"] == 1


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (export.npy_bytes(np.zeros((2, 32, 32), np.uint8)), 422, "28x28"),
        (export.npy_bytes(np.zeros((28, 28, 3), np.uint8)), 422, "28x28"),
        (export.npy_bytes(np.zeros((28, 28), np.float32)), 422, "uint8"),
        (export.npy_bytes(np.zeros((0, 28, 28), np.uint8)), 422, "between 1 and"),
        (b'{"image": "a cat"}', 415, "neither"),
        (b"", 400, "empty"),
        (export.npy_bytes(np.zeros((28, 28), np.uint8))[:60], 400, "could not be read"),
        (export.png_bytes(np.zeros((28, 28), np.uint8))[:30], 400, "could not be decoded"),
        (pickled_npy(), 400, "could not be read"),
        (export.png_bytes(np.zeros((32, 32), np.uint8)), 422, "28x28"),
        (png_header(30_000, 30_000), 422, "too large to decode"),
        (png_header(5_000, 5_000), 422, "28x28"),
    ],
    ids=[
        "wrong size",
        "colour",
        "floats",
        "no images",
        "json",
        "empty",
        "cut npy",
        "cut png",
        "pickle",
        "png size",
        "png bomb",
        "big png",
    ],
)
def test_the_app_refuses_bad_requests_with_a_4xx_and_a_json_error(server, body, status, message):
    got, answer = export.post(server + "/predict", body)
    assert got == status and message in answer["error"], answer


def test_the_app_refuses_wrong_methods_and_stays_up(server):
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(server + "/predict")
    assert error.value.code == 405 and "error" in error.value.read().decode()
    status, _ = export.post(server + "/predict", export.npy_bytes(np.zeros((28, 28), np.uint8)))
    assert status == 200


def test_a_body_over_the_limit_is_refused_from_its_header_before_it_is_read():
    """Content-Length over the limit: a 413 at once, although the body never arrives (were the app waiting to read
    it, the client would time out); a chunked body without Content-Length: a 413 once it grows past the limit."""
    import http.client

    app = export.make_app(lambda x: np.zeros((len(x), 2)), lambda images: images, ["a", "b"], (28, 28), max_bytes=1000)
    running, thread, url = export.start_server(app)
    port = int(url.rsplit(":", 1)[1])
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.putrequest("POST", "/predict")
        connection.putheader("Content-Length", str(10**9))
        connection.endheaders()  # headers only: the body is never sent
        answer = connection.getresponse()
        assert answer.status == 413 and "limit of 1000" in answer.read().decode()
        connection.close()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        chunks = (b"x" * 400 for _ in range(5))
        connection.request("POST", "/predict", body=chunks, encode_chunked=True)
        answer = connection.getresponse()
        assert answer.status == 413 and "limit of 1000" in answer.read().decode()
        connection.close()
        status, _ = export.post(url + "/predict", export.npy_bytes(np.zeros((28, 28), np.uint8)))  # 912 bytes
        assert status == 200
    finally:
        export.stop_server(running, thread)


def test_health_answers_while_a_slow_prediction_runs():
    """The model runs in a worker thread, not on the event loop: GET /health answers while predict is blocked."""
    import threading
    import urllib.request

    started, release = threading.Event(), threading.Event()

    def slow_predict(x):
        started.set()
        release.wait(timeout=20)
        return np.zeros((len(x), 2))

    app = export.make_app(slow_predict, lambda images: images, ["a", "b"], (28, 28))
    running, thread, url = export.start_server(app)
    results = []
    client = threading.Thread(
        target=lambda: results.append(export.post(url + "/predict", export.npy_bytes(np.zeros((28, 28), np.uint8))))
    )
    try:
        client.start()
        assert started.wait(timeout=10), "the prediction did not start"
        with urllib.request.urlopen(url + "/health", timeout=3) as answer:  # on the event loop: would time out
            assert answer.status == 200
        assert not release.is_set() and client.is_alive(), "health answered while the prediction was still running"
    finally:
        release.set()
        client.join(timeout=20)
        export.stop_server(running, thread)
    assert results and results[0][0] == 200


def test_post_returns_the_text_of_an_answer_that_is_not_json():
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def broken(request):
        return PlainTextResponse("Internal Server Error", status_code=500)

    running, thread, url = export.start_server(Starlette(routes=[Route("/predict", broken, methods=["POST"])]))
    try:
        assert export.post(url + "/predict", b"x") == (500, "Internal Server Error")
    finally:
        export.stop_server(running, thread)


def test_torch_export_model_gives_the_model_back_on_its_device_and_in_its_mode(tmp_path, monkeypatch):
    """export_model runs on the CPU in eval mode; the caller's model goes back to the device it was on (here a model
    that reports the "meta" device, its moves recorded) and to training mode, also when the export fails."""
    import helpers.torch.export as torch_export

    model = small_cnn(ht)
    moves = []
    original_to = model.to

    def recording_to(device):
        moves.append(torch.device(device))
        return model if moves[-1].type == "meta" else original_to(device)

    monkeypatch.setattr(model, "to", recording_to)
    monkeypatch.setattr(torch_export, "_device", lambda model: torch.device("meta"))  # as if it lived elsewhere
    path = ht.export_model(model.train(), tmp_path, "onnx", image_size=28)
    assert path.is_file() and model.training and moves == [torch.device("cpu"), torch.device("meta")]

    def failing_export(*args, **kwargs):
        assert not model.training, "exported in eval mode"
        raise RuntimeError("export failed")

    monkeypatch.setattr(torch_export, "_onnx", failing_export)
    moves.clear()
    with pytest.raises(RuntimeError, match="export failed"):
        ht.export_model(model.train(), tmp_path, "onnx", image_size=28)
    assert model.training and moves == [torch.device("cpu"), torch.device("meta")]
    monkeypatch.undo()
    assert torch_export._device(small_cnn(ht)) == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_torch_export_model_leaves_a_gpu_model_on_the_gpu(tmp_path):
    model = small_cnn(ht).cuda().train()
    ht.export_model(model, tmp_path, "onnx", image_size=28)
    assert model.training and all(p.is_cuda for p in model.parameters())

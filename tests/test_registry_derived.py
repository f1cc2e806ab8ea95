"""Files the registry derives (converted weights, the ONNX detector, synthesised speech) are verified by what they
compute: a copy whose floats differ in their last bits is accepted, a real change is refused with the usual error."""

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import audio, detector_onnx, registry, speech_synthesis


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BOOK_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _fetch_from(tmp_path, candidates: dict, check, filename="derived/file.bin"):
    """Fetch an entry whose sources are `candidates` (label -> path), in order, verified by `check`."""
    sources = tuple(registry.SystemFile(str(path)) for path in candidates.values())
    item = registry.Entry(filename, "", "a derived toy file", "CC0", sources, check=check)
    return registry.fetch("toy", {"toy": item})


def _last_bits(values: np.ndarray) -> np.ndarray:
    """Every float one ulp away, in alternating directions (what another CPU's constant folding may give)."""
    signs = np.where(np.arange(values.size).reshape(values.shape) % 2 == 0, np.inf, -np.inf).astype(values.dtype)
    moved = np.nextafter(values, signs)
    assert moved.dtype == values.dtype and np.all(moved != values)
    return moved


def _real_file(name: str) -> Path:
    path = registry.cache_dir() / registry.REGISTRY[name].filename
    if not path.is_file():
        pytest.skip(f"{name} is not in the cache {registry.cache_dir()} (`make data` fills it)")
    return path


# ----------------------------------------------------------------------------- weights: tensor fingerprints


def _tensors(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "features.0.weight": (rng.standard_normal((32, 3, 3, 3)) * 0.1).astype(np.float32),
        "features.0.bias": np.zeros(32, dtype=np.float32),
        "classifier.weight": (rng.standard_normal((1000, 64)) * 0.03).astype(np.float32),
    }


@pytest.fixture
def tensor_reference(tmp_path):
    reference = tmp_path / "reference_tensors.json"
    reference.write_text(json.dumps(registry.tensor_fingerprint(_tensors())))
    return registry.Computes("helpers.registry:check_tensors", str(reference))


def _save(path, tensors):
    from safetensors.numpy import save_file

    save_file(tensors, str(path))
    return path


def test_weights_rounded_in_their_last_bits_are_accepted_and_a_changed_weight_is_refused(tmp_path, tensor_reference):
    ulp = _save(tmp_path / "ulp.safetensors", {k: _last_bits(v) for k, v in _tensors().items()})
    assert tensor_reference(ulp) is None
    changed = _tensors()
    changed["classifier.weight"][123, 45] += 0.01  # a third of one weight's typical size, among 64,000
    problem = tensor_reference(_save(tmp_path / "changed.safetensors", changed))
    assert problem and "classifier.weight has other values" in problem
    missing = {k: v for k, v in _tensors().items() if k != "features.0.bias"}
    assert "missing ['features.0.bias']" in tensor_reference(_save(tmp_path / "missing.safetensors", missing))


def test_the_registry_takes_the_first_copy_that_computes_the_same(tmp_path, cache, tensor_reference):
    changed = _tensors()
    changed["features.0.bias"][3] = 1e-3  # a zero bias that moved
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    candidates = {
        "garbage": garbage,
        "changed": _save(tmp_path / "changed.safetensors", changed),
        "ulp": _save(tmp_path / "ulp.safetensors", {k: _last_bits(v) for k, v in _tensors().items()}),
    }
    path = _fetch_from(tmp_path, candidates, tensor_reference)
    assert path.read_bytes() == candidates["ulp"].read_bytes()
    path.unlink()
    del candidates["ulp"]
    with pytest.raises(registry.DataUnavailableError) as error:
        _fetch_from(tmp_path, candidates, tensor_reference)
    message = str(error.value)
    assert "'toy'" in message and "garbage.safetensors: unreadable" in message
    assert "features.0.bias has other values" in message and "check_tensors" in message


@pytest.mark.parametrize("name", ["mobilenet_v2-keras", "efficientnet_lite0-keras"])
def test_the_real_keras_weights_pass_and_one_changed_weight_fails(tmp_path, name):
    path = _real_file(name)
    item = registry.REGISTRY[name]
    assert isinstance(item.check, registry.Computes) and item.problem(path) is None
    tensors = registry.read_safetensors(path)
    key = max(tensors, key=lambda k: tensors[k].size)  # the classifier: its scale is the largest, the check weakest
    tensors[key].flat[1000] += 0.05
    assert f"{key} has other values" in item.problem(_save(tmp_path / "changed.safetensors", tensors))


# ----------------------------------------------------------------------------- the ONNX detector


def _toy_detector(path, num_boxes=5, seed=0, drop=None, change=None, last_bits=False):
    """A tiny stand-in with the SSD graph's input and outputs: mean colour -> sigmoid boxes and scores."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = {
        "wb": rng.standard_normal((3, num_boxes * 4)).astype(np.float32),
        "bb": rng.standard_normal(num_boxes * 4).astype(np.float32),
        "ws": rng.standard_normal((3, num_boxes)).astype(np.float32),
        "bs": np.linspace(-1.0, 2.0, num_boxes).astype(np.float32),
        "ids": np.arange(1, num_boxes + 1, dtype=np.float32),
        "zero": np.zeros(1, dtype=np.float32),
        "shape": np.array([-1, num_boxes, 4], dtype=np.int64),
        "half": np.array(0.5, dtype=np.float32),
        "scale": np.array(1 / 255, dtype=np.float32),
    }
    if change:
        weights[change[0]].flat[change[1]] += change[2]
    if last_bits:
        weights = {k: _last_bits(v) if v.dtype == np.float32 else v for k, v in weights.items()}
    nodes = [
        helper.make_node("Cast", ["image_tensor:0"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["x"], ["m"], axes=[1, 2], keepdims=0),  # opset 17: axes an attribute
        helper.make_node("Mul", ["m", "scale"], ["f"]),
        helper.make_node("MatMul", ["f", "wb"], ["b0"]),
        helper.make_node("Add", ["b0", "bb"], ["b1"]),
        helper.make_node("Sigmoid", ["b1"], ["b2"]),
        helper.make_node("Reshape", ["b2", "shape"], ["detection_boxes:0"]),
        helper.make_node("MatMul", ["f", "ws"], ["s0"]),
        helper.make_node("Add", ["s0", "bs"], ["s1"]),
        helper.make_node("Sigmoid", ["s1"], ["detection_scores:0"]),
        helper.make_node("Mul", ["detection_scores:0", "zero"], ["c0"]),
        helper.make_node("Add", ["c0", "ids"], ["detection_classes:0"]),
        helper.make_node("Greater", ["detection_scores:0", "half"], ["n0"]),
        helper.make_node("Cast", ["n0"], ["n1"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["n1", "axes_n"], ["num_detections:0"], keepdims=0),
    ]
    weights["axes_n"] = np.array([1], dtype=np.int64)
    nodes = [node for node in nodes if drop not in node.output]
    outputs = [
        helper.make_tensor_value_info("detection_boxes:0", TensorProto.FLOAT, ["n", num_boxes, 4]),
        helper.make_tensor_value_info("detection_scores:0", TensorProto.FLOAT, ["n", num_boxes]),
        helper.make_tensor_value_info("detection_classes:0", TensorProto.FLOAT, ["n", num_boxes]),
        helper.make_tensor_value_info("num_detections:0", TensorProto.FLOAT, ["n"]),
    ]
    image = helper.make_tensor_value_info("image_tensor:0", TensorProto.UINT8, ["n", "h", "w", 3])
    inits = [numpy_helper.from_array(v, k) for k, v in weights.items()]
    graph = helper.make_graph(nodes, "toy", [image], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _photos(names=("a", "b")):
    rng = np.random.default_rng(1)
    return {name: rng.integers(0, 256, (40 + 8 * i, 48, 3), dtype=np.uint8) for i, name in enumerate(names)}


@pytest.fixture
def detector_reference(tmp_path, monkeypatch):
    """A reference written the way scripts/make_derived_references.py writes it, for the toy detector."""
    monkeypatch.setattr(detector_onnx, "photos", lambda names=None: _photos())
    monkeypatch.setattr(detector_onnx, "MIN_WEIGHT_SIZE", 15)  # checks the toy's wb, bb and ws, not bs and ids
    original = _toy_detector(tmp_path / "original.onnx")
    found = detector_onnx.detections(original, _photos())
    assert sum(s >= detector_onnx.MIN_SCORE for v in found.values() for s in v["scores"]) >= 4, "too few to check"
    reference = tmp_path / "reference_detections.json"
    weights = detector_onnx.weight_fingerprint(original)
    document = {"structure": detector_onnx.structure(original), "weights": weights, "detections": found}
    reference.write_text(json.dumps(document))
    return registry.Computes("helpers.detector_onnx:check", str(reference))


def test_a_detector_with_constants_folded_in_other_last_bits_is_accepted(tmp_path, detector_reference):
    copy = _toy_detector(tmp_path / "ulp.onnx", last_bits=True)
    assert copy.read_bytes() != (tmp_path / "original.onnx").read_bytes()
    assert detector_reference(copy) is None


def test_a_detector_with_one_changed_weight_or_a_missing_node_is_refused(tmp_path, cache, detector_reference):
    weight = _toy_detector(tmp_path / "weight.onnx", change=("ws", 4, 1e-3))
    assert "float32 weight tensor of shape [3, 5] has other values" in detector_reference(weight)
    changed = _toy_detector(tmp_path / "changed.onnx", change=("bs", 4, 0.05))  # too small for the weight check
    assert "no detection of COCO id" in detector_reference(changed)
    missing = _toy_detector(tmp_path / "missing.onnx", drop="num_detections:0")
    with pytest.raises(registry.DataUnavailableError) as error:
        _fetch_from(tmp_path, {"changed": changed, "missing": missing}, detector_reference, "w/detector.onnx")
    message = str(error.value)
    assert "'toy'" in message and "changed.onnx: a.onnx" not in message
    assert "changed.onnx: " in message and "no detection of COCO id" in message
    assert "missing.onnx: unreadable" in message or "missing.onnx: other inputs or outputs" in message


def test_the_real_detector_computes_the_reference_detections():
    path = _real_file("ssd-mobilenet-v2-coco-onnx")
    assert registry.REGISTRY["ssd-mobilenet-v2-coco-onnx"].problem(path) is None


# ----------------------------------------------------------------------------- spoken digits


def _toy_word(label: int, rate: int, variant: int) -> np.ndarray:
    """A stand-in for a spoken digit at `rate` Hz: two tones whose pitches and timing depend on the digit."""
    t = np.arange(int(0.5 * rate)) / rate
    first, second = 300 + 150 * label, 2400 - 120 * label
    cut = 0.1 + 0.03 * label + 0.01 * variant
    wave = np.where(t < cut, np.sin(2 * np.pi * first * t), 0.6 * np.sin(2 * np.pi * second * t))
    return (0.5 * wave * np.hanning(len(t))).astype(np.float32)


def _toy_set(resampler="soxr_hq", swap=None) -> dict:
    """A set with the real grid: each toy word made at 8 kHz and resampled to 16 kHz with `resampler`."""
    import librosa

    rows = speech_synthesis.combinations()
    clips = []
    for i, (label, *_rest) in enumerate(rows):
        label = swap[1] if swap and i == swap[0] else label
        word = librosa.resample(_toy_word(label, 8000, i % 12), orig_sr=8000, target_sr=16000, res_type=resampler)
        clips.append(audio.fit_clip(word.astype(np.float32)))
    return {"audio": np.round(np.stack(clips) * 32767).astype(np.int16), **speech_synthesis.grid(rows)}


@pytest.fixture(scope="module")
def toy_digits(tmp_path_factory):
    folder = tmp_path_factory.mktemp("digits")
    built = _toy_set()
    reference = folder / "reference_spoken_digits.npz"
    np.savez_compressed(reference, fingerprints=speech_synthesis.fingerprints(built["audio"]))
    return folder, registry.Computes("helpers.speech_synthesis:check", str(reference))


def test_digits_resampled_another_way_pass_and_a_wrong_digit_fails(toy_digits):
    folder, check = toy_digits
    other = folder / "polyphase.npz"
    speech_synthesis.save_npz(_toy_set("polyphase"), other)
    assert check(other) is None
    wrong = folder / "wrong.npz"
    speech_synthesis.save_npz(_toy_set(swap=(123, 8)), wrong)  # clip 123 is a 'zero' of voice kal16
    assert "clip 123 ('zero', voice kal16" in check(wrong)


def test_digits_with_a_wrong_label_or_shape_fail(toy_digits):
    folder, check = toy_digits
    built = _toy_set()
    built["label"] = built["label"].copy()
    built["label"][5] = 3
    speech_synthesis.save_npz(built, folder / "label.npz")
    assert "label differs" in check(folder / "label.npz")
    built = _toy_set()
    built["audio"] = built["audio"][:, :-1]
    speech_synthesis.save_npz(built, folder / "short.npz")
    assert "audio is int16 (600, 12511)" in check(folder / "short.npz")


def test_the_real_spoken_digits_resynthesised_with_another_resampler_pass_and_a_wrong_digit_fails(tmp_path):
    import shutil

    import librosa
    import soundfile

    path = _real_file("spoken-digits")
    if shutil.which("flite") is None:
        pytest.skip("flite is not installed (`make system-packages` installs it)")
    item = registry.REGISTRY["spoken-digits"]
    with np.load(path) as stored:
        built = {key: stored[key] for key in stored.files}
    rows = speech_synthesis.combinations()
    kal = [i for i, (_, voice, stretch, pitch) in enumerate(rows) if voice == "kal" and (stretch, pitch) == (1.0, 110)]
    for i in kal:  # flite's kal voice speaks at 8 kHz: resample with librosa's polyphase instead of soxr_hq
        out = tmp_path / "word.wav"
        speech_synthesis.run_flite(audio.DIGITS[rows[i][0]], "kal", 1.0, 110, out)
        waveform, rate = soundfile.read(str(out), dtype="float32")
        resampled = librosa.resample(waveform, orig_sr=rate, target_sr=16000, res_type="polyphase")
        built["audio"][i] = np.round(audio.fit_clip(resampled.astype(np.float32)) * 32767).astype(np.int16)
    speech_synthesis.save_npz(built, tmp_path / "resampled.npz")
    assert item.problem(tmp_path / "resampled.npz") is None
    built["audio"][kal[3]] = built["audio"][kal[8]]  # 'three' now says 'eight'
    speech_synthesis.save_npz(built, tmp_path / "wrong.npz")
    assert f"clip {kal[3]} ('three', voice kal" in item.problem(tmp_path / "wrong.npz")


def test_a_cached_derived_file_that_changes_is_checked_again_and_moved_aside(tmp_path, cache, tensor_reference):
    good = _save(tmp_path / "ulp.safetensors", {k: _last_bits(v) for k, v in _tensors().items()})
    path = _fetch_from(tmp_path, {"ulp": good}, tensor_reference)
    assert _fetch_from(tmp_path, {"ulp": good}, tensor_reference) == path  # verified once in this process
    changed = _tensors()
    changed["classifier.weight"][0, 0] += 0.01
    _save(path, changed)  # the same size, another content
    with pytest.warns(UserWarning, match="does not match"):
        assert _fetch_from(tmp_path, {"ulp": good}, tensor_reference).read_bytes() == good.read_bytes()
    assert len(list(path.parent.glob("file.bin.mismatch-*"))) == 1

"""Chapter 19: the NumPy log-mel front end matches the shipped melspectrogram.onnx; the speech-embedding model in
PyTorch (onnx2torch, regrouped) and in Keras (hand-written port) matches onnxruntime and each other; the split
model gives the same features and trains only its upper part; the data set is split by speaker; noise has the
asked SNR; the synthesis archive is byte-repeatable; wrong sample rates, channels and sample types get one clear
error; a file at 48 kHz is resampled on reading; both conversions honour (or, in Keras, refuse) the attributes of
an ONNX MaxPool, checked on one-node graphs against onnxruntime; DTW matches a hand-computed case and librosa."""

import numpy as np
import onnxruntime as ort
import pytest
import soundfile

from helpers import audio, registry, speech_synthesis
from helpers import keras as hk  # conftest.py has imported torch first, as it must be
from helpers import torch as ht

FRAMEWORKS = {"torch": ht, "keras": hk}
RNG = np.random.default_rng(0)


def tone(seconds=audio.CLIP_SAMPLES / audio.SAMPLE_RATE, rate=audio.SAMPLE_RATE, hz=440.0) -> np.ndarray:
    """A sine tone with a little noise, float32 in [-1, 1]."""
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * hz * t) + 0.01 * RNG.normal(size=t.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def windows():
    """Log-mel windows of six clips (tones and noise), the embedding's input."""
    clips = np.stack([tone(hz=h) for h in (200, 440, 900)] + [audio.add_noise(tone(), 0, seed=s) for s in range(3)])
    return audio.model_input(clips)


@pytest.fixture(scope="module")
def reference(windows):
    """onnxruntime's output of the shipped embedding model."""
    session = ort.InferenceSession(str(registry.fetch("speech-embedding_model")), providers=["CPUExecutionProvider"])
    return session.run(None, {"input_1": windows})[0].reshape(len(windows), -1)


@pytest.fixture(scope="module")
def embeddings():
    return {name: book.speech_embedding() for name, book in FRAMEWORKS.items()}


def test_log_mel_matches_the_shipped_onnx_front_end():
    session = ort.InferenceSession(str(registry.fetch("speech-melspectrogram")), providers=["CPUExecutionProvider"])
    for clip in (tone(), tone(1.3, hz=1234.0)):
        shipped = session.run(None, {"input": (clip * 32768)[None]})[0].squeeze() / 10 + 2  # openWakeWord's scaling
        mine = audio.log_mel(clip)
        assert mine.shape == shipped.shape == (1 + (len(clip) - audio.N_FFT) // audio.HOP, audio.N_MELS)
        np.testing.assert_allclose(mine, shipped, atol=2e-4)
    assert audio.model_input(tone()[None]).shape == (1, audio.WINDOW_FRAMES, audio.N_MELS, 1)


@pytest.mark.parametrize("name", FRAMEWORKS)
def test_the_embedding_matches_onnxruntime(name, embeddings, windows, reference):
    book = FRAMEWORKS[name]
    features = book.predict(embeddings[name], windows)
    assert features.shape == (len(windows), 96)
    assert np.abs(features - reference).max() < 2e-4 * np.abs(reference).max()
    assert book.count_params(embeddings[name]) == {"trainable": 328_128, "total": 328_128}


def test_the_two_frameworks_agree(embeddings, windows):
    torch_features, keras_features = (FRAMEWORKS[n].predict(embeddings[n], windows) for n in FRAMEWORKS)
    np.testing.assert_allclose(torch_features, keras_features, atol=1e-3)


@pytest.mark.parametrize("name", FRAMEWORKS)
def test_the_split_model_gives_the_same_features_and_trains_only_its_upper_part(name, windows):
    book = FRAMEWORKS[name]
    embedding = book.speech_embedding()
    whole = book.predict(embedding, windows)
    lower, upper = book.split_embedding(embedding, trainable_blocks=2)
    cached = book.predict(lower, windows)
    assert cached.shape == (len(windows), 14, 4, 72)  # NHWC activations after block 3
    np.testing.assert_allclose(book.predict(upper, cached), whole, atol=1e-4)
    assert book.count_params(lower)["trainable"] == 0 < book.count_params(upper)["trainable"]
    mean, std = audio.standardization(whole)
    book.seed(0)
    model = book.speech_classifier(upper, book.new_head(96, 3), mean, std)
    labels = np.arange(len(windows)) % 3
    before = book.predict(lower, windows)
    history = book.fit(model, (cached, labels), epochs=3, lr=1e-3, batch_size=6, verbose=False)
    assert history["loss"][-1] < history["loss"][0]
    np.testing.assert_array_equal(book.predict(lower, windows), before)  # the lower part did not move
    assert np.abs(book.predict(upper, cached) - whole).max() > 1e-4  # the upper part did


@pytest.mark.parametrize("name", FRAMEWORKS)
def test_the_classifier_standardises_with_the_given_statistics(name, windows):
    book = FRAMEWORKS[name]
    embedding = book.speech_embedding()
    features = book.predict(embedding, windows)
    mean, std = audio.standardization(features)
    book.seed(0)
    head = book.new_head(96, 4)
    model = book.speech_classifier(embedding, head, mean, std)
    expected = book.predict(head, (features - mean) / std)
    np.testing.assert_allclose(book.predict(model, windows), expected, atol=1e-4)


@pytest.mark.parametrize("name", FRAMEWORKS)
def test_bad_arguments_of_the_framework_helpers(name, embeddings):
    book = FRAMEWORKS[name]
    for blocks in (0, 4, 1.0, True):
        with pytest.raises(ValueError, match="trainable_blocks must be an integer from 1 to 3"):
            book.split_embedding(embeddings[name], blocks)
    with pytest.raises(ValueError, match="std must be finite and > 0"):
        book.speech_classifier(embeddings[name], book.new_head(96, 2), np.zeros(96), np.zeros(96))


def test_wrong_sample_rate_channels_and_sample_types_get_one_clear_error():
    clip = tone()
    with pytest.raises(ValueError, match="expected audio at 16000 Hz, got 48000 Hz: resample it first"):
        audio.log_mel(clip, sample_rate=48_000)
    with pytest.raises(ValueError, match=r"\(samples, channels\) with 2 channels"):
        audio.log_mel(np.stack([clip, clip], axis=1))
    with pytest.raises(ValueError, match="divide int16 audio by 32768"):
        audio.log_mel((clip * 32767).astype(np.int16))
    with pytest.raises(ValueError, match=r"in \[-1, 1\]"):
        audio.log_mel(clip * 40000)
    with pytest.raises(ValueError, match="cut or pad each clip with audio.fit_clip"):
        audio.model_input(np.stack([tone(1.0)]))


def test_files_are_resampled_on_reading_and_stereo_files_refused(tmp_path):
    clip48 = tone(0.5, rate=48_000, hz=500.0)
    soundfile.write(tmp_path / "mono48.wav", clip48, 48_000)
    loaded = audio.load(tmp_path / "mono48.wav")
    assert abs(len(loaded) - 8_000) <= 1 and loaded.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(loaded))
    assert abs(np.argmax(spectrum) * audio.SAMPLE_RATE / len(loaded) - 500.0) < 5  # the tone kept its pitch
    soundfile.write(tmp_path / "stereo.wav", np.stack([clip48, clip48], axis=1), 48_000)
    with pytest.raises(ValueError, match="has 2 channels, but the speech models take one"):
        audio.load(tmp_path / "stereo.wav")


def test_the_voice_split_never_shares_a_speaker():
    voices = np.repeat(np.array(audio.VOICES), 4)
    split = audio.voice_split(voices, val_voices="rms", test_voices=["slt"])
    assert set(voices[split["train"]]) == {"kal", "kal16", "awb"}
    assert set(voices[split["test"]]) == {"slt"} and set(voices[split["val"]]) == {"rms"}
    held_kal = audio.voice_split(voices, val_voices="rms", test_voices="kal16")
    assert set(voices[held_kal["test"]]) == {"kal", "kal16"}  # one speaker, two voices: both held out
    with pytest.raises(ValueError, match="a speaker is in both"):
        audio.voice_split(voices, val_voices="kal", test_voices="kal16")
    with pytest.raises(ValueError, match="must name flite voices"):
        audio.voice_split(voices, val_voices="rms", test_voices="alice")


def test_noise_has_the_asked_signal_to_noise_ratio():
    clip = tone() * 0.5
    noisy = audio.add_noise(clip, 10.0, seed=3)
    snr = 10 * np.log10(np.mean(clip**2) / np.mean((noisy - clip) ** 2))
    assert abs(snr - 10.0) < 0.3
    np.testing.assert_array_equal(noisy, audio.add_noise(clip, 10.0, seed=3))
    assert not np.array_equal(noisy, audio.add_noise(clip, 10.0, seed=4))


def test_fit_clip_centres_the_word_and_keeps_the_length():
    word = tone(0.3)
    clip = audio.fit_clip(np.concatenate([np.zeros(3000, np.float32), word, np.zeros(500, np.float32)]))
    assert len(clip) == audio.CLIP_SAMPLES
    loud = np.flatnonzero(np.abs(clip) > 0.05)
    assert abs((loud[0] + loud[-1]) / 2 - audio.CLIP_SAMPLES / 2) < 600  # trim works in frames of 512 samples
    assert len(audio.fit_clip(tone(1.5))) == audio.CLIP_SAMPLES  # a longer word: its central part


def test_the_archive_is_byte_repeatable(tmp_path):
    arrays = {"audio": (RNG.normal(size=(3, 5)) * 1000).astype(np.int16), "voice": np.array(["kal", "slt", "awb"])}
    speech_synthesis.save_npz(arrays, tmp_path / "a.npz")
    speech_synthesis.save_npz(arrays, tmp_path / "b.npz")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with np.load(tmp_path / "a.npz") as stored:
        np.testing.assert_array_equal(stored["audio"], arrays["audio"])


def test_the_registered_data_set_is_split_by_voice_and_balanced():
    data = audio.spoken_digits()
    assert data["audio"].shape == (600, audio.CLIP_SAMPLES) and np.abs(data["audio"]).max() <= 1
    split = audio.voice_split(data["voice"], val_voices="rms", test_voices="slt")
    for indices in split.values():
        counts = np.bincount(data["label"][indices], minlength=10)
        assert counts.min() == counts.max() > 0


# ---- ONNX MaxPool attributes: both conversions honour strides and pads (the shipped file pools with strides equal
# to the window and no padding, so only a synthetic graph can tell) ----

POOLS = {  # ONNX MaxPool attributes; inputs are (2, 3, 9, 8), NCHW
    "strides unlike the window": {"kernel_shape": [3, 2], "strides": [2, 1]},
    "no strides: ONNX's default of 1": {"kernel_shape": [2, 2]},
    "even pads": {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
    "uneven pads": {"kernel_shape": [2, 3], "strides": [1, 2], "pads": [1, 0, 0, 2]},
}


def max_pool_model(**attributes):
    """A one-node ONNX model, x (2, 3, 9, 8) -> MaxPool -> y, opset 12."""
    from onnx import TensorProto, helper

    node = helper.make_node("MaxPool", ["x"], ["y"], name="pool", **attributes)
    graph = helper.make_graph(
        [node],
        "pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 9, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)], ir_version=8)


def onnxruntime_pool(model, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("case", POOLS)
def test_the_keras_port_pools_with_the_graphs_strides_and_pads(case, tmp_path):
    import onnx

    from helpers.keras import speech_port

    model = max_pool_model(**POOLS[case])
    onnx.save(model, tmp_path / "pool.onnx")
    x = RNG.normal(size=(2, 3, 9, 8)).astype(np.float32) - 1.0  # mostly negative: zero padding would win
    (spec,) = speech_port.read_onnx(tmp_path / "pool.onnx")
    y = x.transpose(0, 2, 3, 1)  # NHWC
    for layer in speech_port._layers_of(spec, "pool"):
        y = layer(y)
    expected = onnxruntime_pool(model, x)
    np.testing.assert_array_equal(np.asarray(y).transpose(0, 3, 1, 2), expected)


@pytest.mark.parametrize("case", [*POOLS, "ceil_mode"])
def test_the_torch_conversion_pools_with_the_graphs_strides_pads_and_ceil_mode(case):
    import onnx2torch
    import torch

    from helpers.torch import audio as torch_audio

    attributes = POOLS.get(case, {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1})
    model = max_pool_model(**attributes)
    x = RNG.normal(size=(2, 3, 9, 8)).astype(np.float32) - 1.0
    regrouped = torch_audio._regroup(onnx2torch.convert(model), floor=-0.4)
    with torch.no_grad():
        found = regrouped(torch.from_numpy(x)).numpy()
    expected = onnxruntime_pool(model, x)
    np.testing.assert_array_equal(found, expected.reshape(len(x), -1))


def test_the_keras_port_refuses_pool_attributes_it_cannot_honour():
    from helpers.keras import speech_port

    assert speech_port.pool_spec({"kernel_shape": [2, 2]})["strides"] == (1, 1)  # ONNX's default, not the window's
    assert speech_port.pool_spec({"kernel_shape": [2, 2], "auto_pad": b"VALID"})["pads"] == (0, 0, 0, 0)
    for attribute, value in [("ceil_mode", 1), ("dilations", [2, 1]), ("auto_pad", b"SAME_UPPER")]:
        with pytest.raises(ValueError, match=rf"pool: the Keras port takes .*ceil_mode=0.*{attribute}="):
            speech_port.pool_spec({"kernel_shape": [3, 3], attribute: value}, "pool")
    with pytest.raises(ValueError, match=r"2-D MaxPool .* got kernel_shape=\[3\]"):
        speech_port.pool_spec({"kernel_shape": [3]}, "pool")


def test_dtw_distances_match_a_hand_computed_case_and_librosa():
    query, template = np.array([[[0.0], [1.0]]]), np.array([[[1.0], [3.0]]])
    # Costs |q_i - t_j|: rows (1, 3), (0, 2). Entering the first cell and every step in both sequences count twice:
    # the diagonal path (0,0) (1,1) costs 2*1 + 2*2 = 6, the path (0,0) (1,0) (1,1) costs 2*1 + 0 + 2 = 4, and
    # (0,0) (0,1) (1,1) costs 2*1 + 3 + 2 = 7. Every path weighs 2 + 2 = 4: distance 4 / 4.
    np.testing.assert_allclose(audio.dtw_distances(query, template), [[1.0]])
    np.testing.assert_allclose(audio.dtw_distances(template, query), [[1.0]])  # the symmetric form
    queries, templates = RNG.normal(size=(4, 9, 3)), RNG.normal(size=(3, 7, 3))
    queries[:, 0] = templates[:, 0] = 0.0  # one first frame: librosa counts the first cell once, Sakoe & Chiba twice
    found = audio.dtw_distances(queries, templates)
    assert found.shape == (4, 3)
    librosa = pytest.importorskip("librosa")
    weights = np.array([2, 1, 1])  # librosa's steps: both sequences, the template, the query
    for i, j in np.ndindex(found.shape):
        cumulative = librosa.sequence.dtw(queries[i].T, templates[j].T, weights_mul=weights, backtrack=False)
        assert found[i, j] == pytest.approx(cumulative[-1, -1] / (9 + 7))
    stretched = np.repeat(queries[:1], 2, axis=1)  # every frame said twice as long: no cost to warp it back
    np.testing.assert_allclose(audio.dtw_distances(stretched, queries[:1]), [[0.0]], atol=1e-6)
    with pytest.raises(ValueError, match=r"must be finite frames shaped \(sequences, frames, bands\)"):
        audio.dtw_distances(queries[0], templates)
    with pytest.raises(ValueError, match="queries have 3 bands per frame, templates 2"):
        audio.dtw_distances(queries, templates[..., :2])

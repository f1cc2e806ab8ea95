"""Chapter 19: the NumPy log-mel front end matches the shipped melspectrogram.onnx; the speech-embedding model in
PyTorch (onnx2torch, regrouped) and in Keras (hand-written port) matches onnxruntime and each other; the split
model gives the same features and trains only its upper part; the data set is split by speaker; noise has the
asked SNR; the synthesis archive is byte-repeatable; wrong sample rates, channels and sample types get one clear
error; a file at 48 kHz is resampled on reading."""

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

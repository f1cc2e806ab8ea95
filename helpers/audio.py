"""Audio (chapter 19): reading and resampling speech, the log-mel front end of Google's speech-embedding model,
dynamic time warping for template matching, the spoken-digit data set split by voice, noise augmentation and a tiny
real-speech check.

Framework-neutral: imports neither PyTorch nor TensorFlow (NumPy, soundfile and librosa, imported where needed).

Conventions: a waveform is a 1-D float array in [-1, 1] at `SAMPLE_RATE` (16 kHz), one channel. Reading a file
(`load`) resamples any other rate to 16 kHz (a documented conversion) and refuses more than one channel (one clear
error: mixing channels is the caller's choice). `log_mel` refuses any rate but 16 kHz and any multi-channel array.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from helpers import checks

SAMPLE_RATE = 16_000  # the speech-embedding model was trained on 16 kHz audio
N_FFT, HOP, WINDOW = 512, 160, 400  # 32 ms FFT, 10 ms hop, 25 ms Hann window centred in the FFT frame
N_MELS, FMIN, FMAX = 32, 60.0, 3800.0  # librosa's Slaney mel filters, as in the shipped melspectrogram.onnx
TOP_DB = 80.0  # decibels kept below the loudest value of a clip
WINDOW_FRAMES = 76  # log-mel frames per embedding window (the model's input height)
CLIP_SAMPLES = N_FFT + (WINDOW_FRAMES - 1) * HOP  # 12,512 samples (0.78 s): exactly one embedding window
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
VOICES = ("kal", "kal16", "awb", "rms", "slt")  # flite's voices; kal and kal16 are one speaker (Kal)
SPEAKERS = {"kal": "kal", "kal16": "kal", "awb": "awb", "rms": "rms", "slt": "slt"}
MAX_CHANNELS = 8  # a 2-D array with at most this many columns is read as (samples, channels), not a batch


# ---- reading and checking waveforms ----


def load(path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A mono audio file as float32 in [-1, 1] at `sample_rate`: other rates are resampled (soxr, high quality);
    files with more than one channel are refused."""
    import soundfile

    waveform, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    if waveform.shape[1] != 1:
        raise ValueError(
            f"{Path(path).name} has {waveform.shape[1]} channels, but the speech models take one (mono): choose a "
            "channel (soundfile.read(path)[0][:, 0]) or average them (.mean(axis=1)), then audio.resample(x, rate)"
        )
    return resample(waveform[:, 0], rate, sample_rate)


def resample(waveform, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """A mono waveform at `rate` Hz resampled to `target` Hz (librosa's soxr_hq); unchanged when the rates agree."""
    rate, target = checks.count("rate", rate), checks.count("target", target)
    waveform = check_waveform(waveform, rate)
    if rate == target:
        return waveform
    import librosa

    return librosa.resample(waveform, orig_sr=rate, target_sr=target, res_type="soxr_hq").astype(np.float32)


def check_waveform(waveform, sample_rate=SAMPLE_RATE, expected_rate: int | None = None) -> np.ndarray:
    """One mono clip (1-D) or a batch of clips (clips, samples) as float32 in [-1, 1]; else one ValueError saying
    what was expected and how to fix it. `expected_rate`: the only sample rate accepted (None: any)."""
    if expected_rate is not None and sample_rate != expected_rate:
        raise ValueError(
            f"expected audio at {expected_rate} Hz, got {sample_rate} Hz: resample it first with "
            f"audio.resample(waveform, {sample_rate}) (audio.load resamples files for you)"
        )
    waveform = np.asarray(waveform)
    if waveform.ndim == 2 and 1 < waveform.shape[1] <= MAX_CHANNELS < waveform.shape[0]:
        raise ValueError(
            f"got an array shaped {waveform.shape}: that is (samples, channels) with {waveform.shape[1]} channels, "
            "but the speech models take one channel: choose one (x[:, 0]) or average them (x.mean(axis=1))"
        )
    if waveform.ndim not in (1, 2) or waveform.size == 0:
        raise ValueError(f"a waveform must be 1-D (samples,) or a batch (clips, samples), got shape {waveform.shape}")
    if waveform.dtype.kind in "iu":
        raise ValueError(
            f"got integer samples ({waveform.dtype}); the front end takes floats in [-1, 1]: divide int16 audio by "
            "32768 (soundfile.read(..., dtype='float32') does this)"
        )
    waveform = waveform.astype(np.float32)
    if not np.isfinite(waveform).all() or np.abs(waveform).max() > 1.0 + 1e-6:
        raise ValueError(
            f"samples must be finite floats in [-1, 1], got {waveform.min():.4g}..{waveform.max():.4g}: "
            "scale int16 values by 1/32768 and clip"
        )
    return waveform


# ---- the log-mel front end of the speech-embedding model, reimplemented in NumPy ----


def mel_filters() -> np.ndarray:
    """The (N_FFT // 2 + 1, N_MELS) mel filter bank: librosa's Slaney filters from 60 to 3,800 Hz."""
    import librosa

    return librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=FMIN, fmax=FMAX).T


def stft_window() -> np.ndarray:
    """A periodic Hann window of WINDOW samples, zero-padded to N_FFT samples, centred."""
    window = np.zeros(N_FFT)
    start = (N_FFT - WINDOW) // 2
    window[start : start + WINDOW] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WINDOW) / WINDOW)
    return window


def log_mel(waveform, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Log-mel features as the speech-embedding model expects them, (frames, N_MELS) per clip, float32.

    The steps of the shipped `melspectrogram.onnx` plus openWakeWord's scaling: int16-scaled samples, frames of
    N_FFT samples every HOP samples (no padding), power spectrum, Slaney mel filters, 10·log10, values more than
    TOP_DB below the clip's maximum raised to that floor, then x / 10 + 2. A batch (clips, samples) gives
    (clips, frames, N_MELS); the floor is taken per clip (the ONNX graph takes it over the whole batch).
    """
    waveform = check_waveform(waveform, sample_rate, expected_rate=SAMPLE_RATE)
    if waveform.shape[-1] < N_FFT:
        raise ValueError(f"a clip needs at least {N_FFT} samples ({N_FFT / SAMPLE_RATE * 1000:.0f} ms)")
    batch = waveform[None] if waveform.ndim == 1 else waveform
    scaled = batch.astype(np.float64) * 32768.0  # the model was trained on int16-valued samples
    num_frames = 1 + (scaled.shape[1] - N_FFT) // HOP
    starts = HOP * np.arange(num_frames)
    frames = scaled[:, starts[:, None] + np.arange(N_FFT)] * stft_window()  # (clips, frames, N_FFT)
    power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2
    decibels = 10.0 * np.log10(np.maximum(power @ mel_filters(), 1e-10))
    floor = decibels.max(axis=(1, 2), keepdims=True) - TOP_DB
    features = (np.maximum(decibels, floor) / 10.0 + 2.0).astype(np.float32)
    return features[0] if waveform.ndim == 1 else features


def model_input(waveforms) -> np.ndarray:
    """Clips of CLIP_SAMPLES samples at 16 kHz (clips, samples) to the embedding's input, (clips, 76, 32, 1):
    one log-mel window per clip, NHWC with time as the height and mel bands as the width."""
    waveforms = check_waveform(waveforms)
    if waveforms.ndim != 2 or waveforms.shape[1] != CLIP_SAMPLES:
        raise ValueError(
            f"expected a batch of clips shaped (clips, {CLIP_SAMPLES}) ({CLIP_SAMPLES / SAMPLE_RATE:.2f} s at "
            f"16 kHz), got {waveforms.shape}: cut or pad each clip with audio.fit_clip"
        )
    return log_mel(waveforms)[..., None]


def fit_clip(waveform, length: int = CLIP_SAMPLES, top_db: float = 30.0) -> np.ndarray:
    """Trim leading and trailing silence (quieter than top_db below the peak) and centre the rest in `length`
    samples: zero padding on both sides, or the central part when the word is longer."""
    import librosa

    waveform = check_waveform(waveform)
    trimmed, _ = librosa.effects.trim(waveform, top_db=top_db)
    if len(trimmed) >= length:
        start = (len(trimmed) - length) // 2
        return trimmed[start : start + length]
    out = np.zeros(length, dtype=np.float32)
    start = (length - len(trimmed)) // 2
    out[start : start + len(trimmed)] = trimmed
    return out


def add_noise(waveforms, snr_db, seed: int = 0) -> np.ndarray:
    """Waveforms with white Gaussian noise added at a signal-to-noise ratio of `snr_db` decibels per clip (a
    number, or an array with one value per clip), clipped to [-1, 1]."""
    waveforms = check_waveform(waveforms)
    batch = waveforms[None] if waveforms.ndim == 1 else waveforms
    snr = np.broadcast_to(np.asarray(snr_db, dtype=np.float64), (len(batch),))
    signal_power = (batch.astype(np.float64) ** 2).mean(axis=1)
    noise_power = signal_power / 10.0 ** (snr / 10.0)
    noise = np.random.default_rng(seed).normal(size=batch.shape) * np.sqrt(noise_power)[:, None]
    noisy = np.clip(batch + noise, -1.0, 1.0).astype(np.float32)
    return noisy[0] if waveforms.ndim == 1 else noisy


def standardization(features) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation of (training) features, for a fixed standardisation."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"features must be shaped (examples >= 2, features), got {features.shape}")
    return features.mean(axis=0).astype(np.float32), features.std(axis=0).astype(np.float32)


def check_statistics(mean, std) -> tuple[np.ndarray, np.ndarray]:
    """A standardisation's mean and std: equal-length 1-D float arrays, std > 0 everywhere."""
    mean, std = np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32)
    if mean.ndim != 1 or mean.shape != std.shape:
        raise ValueError(f"mean and std must be 1-D and of one length, got shapes {mean.shape} and {std.shape}")
    if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
        raise ValueError("std must be finite and > 0 for every feature (and mean finite): use audio.standardization")
    return mean, std


MAX_TRAINABLE_BLOCKS = 3  # below block 3 the activations exceed what fit/predict accept as inputs (checks.inputs)


def check_trainable_blocks(trainable_blocks) -> int:
    """How many upper blocks of the speech embedding to train on cached activations: 1 to MAX_TRAINABLE_BLOCKS."""
    wanted = (
        f"trainable_blocks must be an integer from 1 to {MAX_TRAINABLE_BLOCKS}, got {trainable_blocks!r}: the "
        "outputs of the lowest blocks are too large to cache as inputs; to train more, fine-tune the whole model, "
        "speech_classifier(speech_embedding(), head, mean, std)"
    )
    try:
        value = checks.up_to("trainable_blocks", trainable_blocks, MAX_TRAINABLE_BLOCKS)
    except ValueError:
        raise ValueError(wanted) from None
    if value < 1:
        raise ValueError(wanted)
    return value


# ---- template matching: dynamic time warping on log-mel frames ----


def dtw_distances(queries, templates) -> np.ndarray:
    """Dynamic-time-warping distances (Sakoe & Chiba, 1978) between sequences of frames: queries (q, n, bands) and
    templates (t, m, bands) give (q, t).

    The frame cost is the Euclidean distance. A path runs from both first frames to both last frames, each step one
    frame ahead in either sequence or in both; in Sakoe & Chiba's symmetric form a step in both counts its cost
    twice, so every path weighs n + m, and the distance is the cheapest path's cost divided by n + m. No window
    limits the warping. Vectorised over all (query, template) pairs; a loop over the n x m frame pairs."""
    queries, templates = _frame_sequences(queries, "queries"), _frame_sequences(templates, "templates")
    if queries.shape[2] != templates.shape[2]:
        raise ValueError(f"queries have {queries.shape[2]} bands per frame, templates {templates.shape[2]}")
    num_frames, template_frames = queries.shape[1], templates.shape[1]
    previous = np.full((template_frames + 1, len(queries), len(templates)), np.inf)  # row i - 1, one cell to the left
    previous[0] = 0.0  # the start: the first cell is reached by one step in both sequences
    for i in range(num_frames):
        cost = _frame_costs(queries[:, i], templates)  # (m, q, t): query frame i against every template frame
        # from the row below (one frame ahead in the query) or diagonally (ahead in both, counted twice) ...
        reach = np.minimum(previous[1:] + cost, previous[:-1] + 2.0 * cost)
        current = np.full_like(previous, np.inf)
        for j in range(template_frames):  # ... or from the left (one frame ahead in the template)
            current[j + 1] = np.minimum(reach[j], current[j] + cost[j])
        previous = current
    return previous[-1] / (num_frames + template_frames)


def _frame_sequences(x, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3 or 0 in x.shape or not np.isfinite(x).all():
        raise ValueError(f"{what} must be finite frames shaped (sequences, frames, bands), got shape {x.shape}")
    return x


def _frame_costs(frames: np.ndarray, templates: np.ndarray) -> np.ndarray:
    """Euclidean distances between frames (q, bands) and every template frame (t, m, bands), as (m, q, t)."""
    products = frames @ templates.reshape(-1, templates.shape[2]).T  # (q, t * m), one matrix product
    products = products.reshape(len(frames), *templates.shape[:2]).transpose(2, 0, 1)  # (m, q, t)
    squared = (frames**2).sum(1)[None, :, None] + (templates**2).sum(2).T[:, None, :] - 2.0 * products
    return np.sqrt(np.maximum(squared, 0.0))


# ---- the spoken-digit data set, split by voice ----


def spoken_digits() -> dict:
    """The synthesised spoken digits (registry entry `spoken-digits`, built by helpers.speech_synthesis): audio
    (clips, CLIP_SAMPLES) float32 at 16 kHz, label (digit), voice, stretch and pitch of each clip."""
    from helpers import registry

    with np.load(registry.fetch("spoken-digits")) as stored:
        data = {key: stored[key] for key in stored.files}
    data["audio"] = data["audio"].astype(np.float32) / 32768.0
    return data


def voice_split(voices, val_voices, test_voices) -> dict:
    """Indices of the training, validation and test clips, split by speaker: no speaker in two splits.

    Voices of one speaker (kal and kal16) always go together; a voice named in two splits, an unknown voice or a
    split left empty raises one ValueError."""
    voices = np.asarray(voices)
    val_voices, test_voices = _voice_list(val_voices, "val_voices"), _voice_list(test_voices, "test_voices")
    held_out = {SPEAKERS[v] for v in (*val_voices, *test_voices)}
    if {SPEAKERS[v] for v in val_voices} & {SPEAKERS[v] for v in test_voices}:
        raise ValueError(f"a speaker is in both validation {val_voices} and test {test_voices}: choose different ones")
    speaker = np.array([SPEAKERS.get(str(v), str(v)) for v in voices])
    split = {
        "train": np.flatnonzero(~np.isin(speaker, list(held_out))),
        "val": np.flatnonzero(np.isin(speaker, [SPEAKERS[v] for v in val_voices])),
        "test": np.flatnonzero(np.isin(speaker, [SPEAKERS[v] for v in test_voices])),
    }
    empty = [name for name, indices in split.items() if len(indices) == 0]
    if empty:
        raise ValueError(f"the {', '.join(empty)} split has no clips: voices present are {sorted(set(speaker))}")
    return split


def _voice_list(names, what: str) -> tuple[str, ...]:
    names = (names,) if isinstance(names, str) else tuple(names)
    unknown = [n for n in names if n not in SPEAKERS]
    if unknown or not names:
        raise ValueError(f"{what} must name flite voices from {', '.join(VOICES)}, got {names!r}")
    return names


# ---- a tiny real-speech check: the first word of four pocketsphinx test recordings ----

REAL_WORDS = {"cards-002": 4, "cards-003": 7, "cards-004": 5, "cards-005": 8}  # "four queen...", "seven of..."


def first_word(waveform, top_db: float = 30.0, length: int = CLIP_SAMPLES) -> np.ndarray:
    """The first word of a recording, approximately: the clip of `length` samples that starts where the first
    non-silent stretch starts (librosa.effects.split), silence after the word's end zeroed; then fit_clip."""
    import librosa

    waveform = check_waveform(waveform)
    intervals = librosa.effects.split(waveform, top_db=top_db)
    start, end = intervals[0]
    return fit_clip(waveform[start : min(end, start + length)], length)


def real_digits() -> tuple[np.ndarray, np.ndarray]:
    """Real speech (one CMU speaker, pocketsphinx test data): the first word of four recordings, each a digit,
    as clips (4, CLIP_SAMPLES) and labels."""
    from helpers import registry

    clips = [first_word(load(registry.fetch(f"real-speech-{name}"))) for name in REAL_WORDS]
    return np.stack(clips), np.array(list(REAL_WORDS.values()))

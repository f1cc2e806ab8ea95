"""Build the spoken-digit data set of chapter 19 with Debian's `flite` speech synthesiser, deterministically.

`python -m helpers.speech_synthesis <out>` (run by the registry's `Derived` entry `spoken-digits`) speaks the ten
digits in each of flite's voices (kal, kal16, awb, rms, slt), at three speeds and four pitches, resamples every
utterance to 16 kHz, trims its silence, centres it in a clip of audio.CLIP_SAMPLES samples and writes one .npz
(int16 audio, labels, voices, speeds, pitches). The archive's members carry a fixed date, so two builds on one machine
give the same bytes; another flite or resampler moves samples, so the registry checks what the set holds (`check`):
its arrays, labels and grid exactly, and each clip's coarse log-mel picture (96 numbers) against
helpers/reference_spoken_digits.npz (`python scripts/make_derived_references.py digits` writes it): nearest its own
digit's reference, with a correlation of at least MIN_CORRELATION. Framework-neutral.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from helpers import audio

STRETCHES = (0.85, 1.0, 1.15)  # flite's duration_stretch: > 1 speaks more slowly
PITCHES = (85, 110, 140, 180)  # flite's int_f0_target_mean, Hz
FIXED_DATE = (1980, 1, 1, 0, 0, 0)  # zip members dated like this make the file's bytes repeatable
TIME_BLOCKS, MEL_BLOCKS = 12, 8  # a clip's fingerprint: its log-mel frames averaged into 12 x 8 blocks (int8 dB)
# A clip passes when its fingerprint correlates with its own reference at least MIN_CORRELATION and more than with
# the nine other digits' references of the same voice, speed and pitch. Measured on flite's 8 kHz voice (kal, the
# one that is resampled), 120 clips: librosa's polyphase, fft, soxr_vhq and soxr_lq resamplers instead of soxr_hq
# give at least 0.963 with the own reference, and still 0.014 more than with any other digit; two different digits
# of one voice, speed and pitch correlate 0.84 (median) to 0.98 (most alike), so a correlation floor alone
# cannot tell them apart, the nearest reference does.
MIN_CORRELATION = 0.9


def combinations() -> list[tuple[int, str, float, int]]:
    """Every (label, voice, stretch, pitch) of the set, in its order: voice, digit, stretch, pitch."""
    return [
        (label, voice, stretch, pitch)
        for voice in audio.VOICES
        for label in range(len(audio.DIGITS))
        for stretch in STRETCHES
        for pitch in PITCHES
    ]


def speak(word: str, voice: str, stretch: float, pitch: int, workdir: Path) -> np.ndarray:
    """One word spoken by flite, as float32 at 16 kHz, trimmed and centred in a clip of CLIP_SAMPLES samples."""
    out = run_flite(word, voice, stretch, pitch, workdir / "word.wav")
    return audio.fit_clip(audio.load(out))


def run_flite(word: str, voice: str, stretch: float, pitch: int, out: Path) -> Path:
    """Write `word` spoken by flite to the .wav file `out`, at the voice's own rate (kal: 8 kHz, the rest 16 kHz)."""
    settings = ["--setf", f"duration_stretch={stretch}", "--setf", f"int_f0_target_mean={pitch}"]
    subprocess.run(["flite", "-voice", voice, "-t", word, "-o", str(out), *settings], check=True, timeout=60)
    return out


def build() -> dict[str, np.ndarray]:
    """Every (voice, digit, stretch, pitch) combination, in that order."""
    rows = combinations()
    with tempfile.TemporaryDirectory(prefix="tl-book-flite-") as workdir:
        clips = [
            speak(audio.DIGITS[label], voice, stretch, pitch, Path(workdir)) for label, voice, stretch, pitch in rows
        ]
    return {"audio": np.round(np.stack(clips) * 32767).astype(np.int16), **grid(rows)}


def grid(rows) -> dict[str, np.ndarray]:
    """The label, voice, stretch and pitch arrays of the set."""
    labels, voices, stretches, pitches = zip(*rows)
    return {
        "label": np.array(labels, dtype=np.int64),
        "voice": np.array(voices, dtype="<U5"),
        "stretch": np.array(stretches, dtype=np.float32),
        "pitch": np.array(pitches, dtype=np.int64),
    }


def save_npz(arrays: dict[str, np.ndarray], path: Path) -> None:
    """np.savez without its timestamps: each member a .npy with a fixed date, so equal arrays give equal bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=FIXED_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, buffer.getvalue())


def fingerprints(clips: np.ndarray) -> np.ndarray:
    """Each int16 clip's log-mel frames averaged into TIME_BLOCKS x MEL_BLOCKS blocks, in dB below the clip's
    loudest block, as int8: (clips, TIME_BLOCKS * MEL_BLOCKS)."""
    waveforms = clips.astype(np.float32) / 32768.0
    chunks = [audio.log_mel(waveforms[i : i + 100]) for i in range(0, len(clips), 100)]  # 100 clips: ~60 MB each
    features = np.concatenate(chunks) * 10.0  # dB (+20), floored 80 dB below the clip's peak
    frames = features.shape[1] // TIME_BLOCKS * TIME_BLOCKS
    blocks = features[:, :frames].reshape(len(clips), TIME_BLOCKS, -1, MEL_BLOCKS, audio.N_MELS // MEL_BLOCKS)
    blocks = blocks.mean(axis=(2, 4)).reshape(len(clips), -1)
    return np.round(blocks - blocks.max(axis=1, keepdims=True)).clip(-128, 0).astype(np.int8)


def correlations(prints: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Pearson correlation of fingerprints (..., features) with references (..., features), over the last axis."""
    a = prints - prints.mean(axis=-1, keepdims=True)
    b = reference - reference.mean(axis=-1, keepdims=True)
    return (a * b).sum(axis=-1) / np.sqrt((a * a).sum(axis=-1) * (b * b).sum(axis=-1) + 1e-12)


def digit_similarity(prints: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(clips, 10): each clip's correlation with the references of all ten digits in its voice, speed and pitch."""
    shape = (len(audio.VOICES), len(audio.DIGITS), len(STRETCHES) * len(PITCHES), -1)
    fresh, ref = prints.astype(np.float64).reshape(shape), reference.astype(np.float64).reshape(shape)
    similarity = correlations(fresh[:, :, None], ref[:, None, :])  # (voices, digit, other digit, conditions)
    return similarity.transpose(0, 1, 3, 2).reshape(len(prints), len(audio.DIGITS))


def check(path: Path, reference: Path) -> str | None:
    """None when the set at `path` has the expected arrays, labels and grid exactly and every clip's fingerprint is
    nearest its own digit's reference, at least MIN_CORRELATION; else what differs (the registry's `Computes`
    check)."""
    with np.load(path) as stored, np.load(reference) as ref:
        arrays = {key: stored[key] for key in stored.files}
        expected = ref["fingerprints"]
    rows = combinations()
    expected_grid = grid(rows)
    if sorted(arrays) != sorted(["audio", *expected_grid]):
        return f"arrays {sorted(arrays)}, expected audio, {', '.join(expected_grid)}"
    shape = (len(rows), audio.CLIP_SAMPLES)
    if arrays["audio"].shape != shape or arrays["audio"].dtype != np.int16:
        return f"audio is {arrays['audio'].dtype} {arrays['audio'].shape}, expected int16 {shape}"
    for key, values in expected_grid.items():
        if arrays[key].dtype != values.dtype or not np.array_equal(arrays[key], values):
            return f"{key} differs from the grid of voices x digits x speeds x pitches"
    similarity = digit_similarity(fingerprints(arrays["audio"]), expected)
    labels = expected_grid["label"]
    own = similarity[np.arange(len(rows)), labels]
    for i in np.flatnonzero((own < MIN_CORRELATION) | (similarity.argmax(axis=1) != labels)):
        label, voice, stretch, pitch = rows[i]
        nearest = audio.DIGITS[similarity[i].argmax()]
        return (
            f"clip {i} ({audio.DIGITS[label]!r}, voice {voice}, stretch {stretch}, pitch {pitch}) correlates "
            f"{own[i]:.3f} with its reference (at least {MIN_CORRELATION} needed) and is nearest {nearest!r}"
        )
    return None


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m helpers.speech_synthesis <out.npz>", file=sys.stderr)
        return 2
    save_npz(build(), Path(argv[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

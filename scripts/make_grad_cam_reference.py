"""Write helpers/reference_grad_cam.npz: both frameworks' Grad-CAM maps of the shipped photos.

The ImageNet MobileNetV2 explains its top class for each photo at the blocks in BLOCKS. Each framework runs in
its own subprocess, so TensorFlow and PyTorch never share one process (see tests/conftest.py).
Usage: python scripts/make_grad_cam_reference.py [--check]   (--check compares fresh maps with the file)
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from helpers.interpretation import REFERENCE_GRAD_CAM

BLOCKS = (-1, 13)
TOLERANCE = 2e-3  # maps are in [0, 1]; measured gaps are ~1e-6 at the last block, ~6e-4 at block 13
CHILD = """
import sys, numpy as np
from helpers import data
from helpers import {fw} as book
_, inputs = data.photo_batch(data.PHOTOS, size=224)
model = book.pretrained_model("mobilenet_v2")
np.savez(sys.argv[1], **{{f"block{{b}}": book.grad_cam(model, inputs, block_index=b) for b in {blocks}}})
"""


def maps(framework: str) -> dict[str, np.ndarray]:
    """Grad-CAM maps of the photos, computed by `framework` in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "maps.npz"
        subprocess.run([sys.executable, "-c", CHILD.format(fw=framework, blocks=BLOCKS), str(out)], check=True)
        return dict(np.load(out))


def main(check: bool) -> int:
    fresh = {fw: maps(fw) for fw in ("torch", "keras")}
    gap = max(float(np.abs(fresh["torch"][k] - fresh["keras"][k]).max()) for k in fresh["torch"])
    print(f"max |torch - keras| Grad-CAM difference: {gap:.2e}")
    if check:
        stored = np.load(REFERENCE_GRAD_CAM)
        drift = max(float(np.abs(stored[f"{fw}_{k}"] - fresh[fw][k]).max()) for fw in fresh for k in fresh[fw])
        print(f"max drift from {REFERENCE_GRAD_CAM.name}: {drift:.2e}")
        return 0 if drift < TOLERANCE and gap < TOLERANCE else 1
    if gap >= TOLERANCE:
        print("the frameworks disagree; not writing the reference")
        return 1
    np.savez(REFERENCE_GRAD_CAM, **{f"{fw}_{k}": v for fw in fresh for k, v in fresh[fw].items()})
    print(f"wrote {REFERENCE_GRAD_CAM}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main("--check" in sys.argv))

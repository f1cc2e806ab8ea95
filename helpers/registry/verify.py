"""Checksums, and the checks that verify a derived file by what it computes (tensor fingerprints).

Part of `helpers.registry`; framework-neutral.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

# ----------------------------------------------------------------------------- checksums


def sha256_of(path: Path) -> str:
    """The sha256 hex digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


TENSOR_PROJECTIONS = 4  # random projections per tensor in a weight fingerprint
TENSOR_TOLERANCE = 1e-6  # relative to sum(|value| * |projection|): about 8 float32 ulps (2**-23 = 1.2e-7) per value


def read_safetensors(path: Path) -> dict:
    """Every tensor of a safetensors file as a NumPy array (safetensors' NumPy reader, no framework)."""
    from safetensors.numpy import load_file

    return load_file(str(path))


def tensor_fingerprint(tensors: dict) -> dict[str, dict]:
    """Per tensor: shape, dtype, TENSOR_PROJECTIONS projections on fixed random vectors (of 2**20 numbers, repeated
    for longer tensors) and their scales (sum of |value * projection|), in float64. Any value moving by more than
    TENSOR_TOLERANCE times its tensor's scale moves a projection; rounding every value in its last bits does not."""
    import numpy as np

    length = min(max((tensor.size for tensor in tensors.values()), default=1), 1 << 20)
    vectors = np.stack([np.random.default_rng(k).standard_normal(length) for k in range(TENSOR_PROJECTIONS)])
    prints = {}
    for name, tensor in tensors.items():
        values = np.asarray(tensor, dtype=np.float64).ravel()
        projections, scales = np.zeros(TENSOR_PROJECTIONS), np.zeros(TENSOR_PROJECTIONS)
        for start in range(0, values.size, length):
            weighted = vectors[:, : min(length, values.size - start)] * values[start : start + length]
            projections += weighted.sum(axis=1)
            scales += np.abs(weighted).sum(axis=1)
        prints[name] = {
            "shape": list(tensor.shape),
            "dtype": str(tensor.dtype),
            "projections": [float(f"{x:.10g}") for x in projections],  # 1e-10 of the scale, far below the tolerance
            "scales": [float(f"{x:.4g}") for x in scales],
        }
    return prints


def check_tensors(path: Path, reference: Path) -> str | None:
    """None when a safetensors file holds the reference's tensors (names, shapes, dtypes exactly; values within
    TENSOR_TOLERANCE), else what differs."""
    expected = json.loads(reference.read_text())
    got = tensor_fingerprint(read_safetensors(path))
    if sorted(got) != sorted(expected):
        missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        return f"other tensors (missing {missing[:3]}, unexpected {extra[:3]})"
    for name, want in expected.items():
        have = got[name]
        if (have["shape"], have["dtype"]) != (want["shape"], want["dtype"]):
            return f"tensor {name} is {have['dtype']} {have['shape']}, expected {want['dtype']} {want['shape']}"
        for projection, scale, ref in zip(have["projections"], want["scales"], want["projections"]):
            if abs(projection - ref) > TENSOR_TOLERANCE * scale + 1e-30:  # + 1e-30: a zero may become a denormal
                off = f"{abs(projection - ref) / scale:.1e} of its scale" if scale else "from all zeros"
                return f"tensor {name} has other values (off by {off}, tolerance {TENSOR_TOLERANCE:g})"
    return None

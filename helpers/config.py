"""Profiles: the one switch (`BOOK_PROFILE`) that sizes data, images, epochs and batches.

Framework-neutral: imports neither PyTorch nor TensorFlow.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

PROFILE_VARIABLE = "BOOK_PROFILE"


@dataclasses.dataclass(frozen=True)
class Profile:
    """Sizes that one profile sets for every chapter."""

    name: str
    train_per_class: int  # labelled target images per class
    test_per_class: int  # held-out images per class
    image_size: int  # side length fed to ImageNet networks
    epochs: int  # epochs for head training / short fine-tunes
    scratch_epochs: int  # epochs for training a network from scratch
    batch_size: int
    description: str
    # chapter 09 (text): examples, tokens per text, epochs and batch size of the transformer runs
    text_train_size: int = 160
    text_test_size: int = 96
    text_max_length: int = 32
    text_epochs: int = 1
    text_batch_size: int = 16


PROFILES = {
    "smoke": Profile(
        name="smoke",
        train_per_class=10,
        test_per_class=10,
        image_size=64,
        epochs=1,
        scratch_epochs=1,
        batch_size=32,
        description="CI: tiny data, one epoch; checks that every cell runs",
        text_train_size=160,
        text_test_size=96,
        text_max_length=32,
        text_epochs=1,
        text_batch_size=16,
    ),
    "cpu": Profile(
        name="cpu",
        train_per_class=100,
        test_per_class=50,
        image_size=96,
        epochs=8,
        scratch_epochs=6,
        batch_size=64,
        description="a laptop CPU: small data, effects visible",
        text_train_size=480,
        text_test_size=400,
        text_max_length=64,
        text_epochs=2,
        text_batch_size=16,
    ),
    "full": Profile(
        name="full",
        train_per_class=1000,
        test_per_class=300,
        image_size=160,
        epochs=15,
        scratch_epochs=15,
        batch_size=64,
        description="a GPU: the configuration the prose describes",
        text_train_size=4000,
        text_test_size=1200,
        text_max_length=256,
        text_epochs=3,
        text_batch_size=32,
    ),
}


def gpu_visible() -> bool:
    """True when an NVIDIA GPU is visible, checked without importing a framework."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


def profile_name() -> str:
    """The active profile's name: `$BOOK_PROFILE`, else `full` with a GPU and `cpu` without."""
    name = os.environ.get(PROFILE_VARIABLE, "").strip().lower()
    if not name:
        return "full" if gpu_visible() else "cpu"
    if name not in PROFILES:
        known = ", ".join(PROFILES)
        raise ValueError(f"{PROFILE_VARIABLE}={name!r} is not a profile; use one of: {known}.")
    return name


def profile() -> Profile:
    """The active profile (read from the environment on every call, never cached)."""
    return PROFILES[profile_name()]


REFERENCE_LOGITS = Path(__file__).resolve().parent / "reference_logits.npz"
RUNTIMES_FILE = Path(__file__).resolve().parent.parent / "book" / "runtimes.json"


def measured_runtimes(notebook: str) -> list[dict]:
    """Measured run times of one notebook per profile, from book/runtimes.json (`make record-runtimes`)."""
    import json

    table = json.loads(RUNTIMES_FILE.read_text()) if RUNTIMES_FILE.exists() else {}
    rows = table.get(notebook, {})
    return [{"profile": name, **rows[name]} for name in PROFILES if name in rows]


def record_runtimes(seconds_by_notebook: dict[str, float], profile_name_: str, machine: str) -> None:
    """Store measured run times (seconds per notebook stem) for one profile in book/runtimes.json."""
    import json
    import time

    table = json.loads(RUNTIMES_FILE.read_text()) if RUNTIMES_FILE.exists() else {}
    for notebook, seconds in sorted(seconds_by_notebook.items()):
        table.setdefault(notebook, {})[profile_name_] = {
            "seconds": round(seconds, 1),
            "machine": machine,
            "date": time.strftime("%Y-%m-%d"),
        }
    RUNTIMES_FILE.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")


def machine_description() -> str:
    """A short description of this machine for runtime records: architecture, cores, GPU or not."""
    import platform

    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {'GPU' if gpu_visible() else 'no GPU'}"


def header(notebook: str, versions: dict) -> None:
    """Print the active profile's settings, this notebook's measured run times and the versions in use."""
    active = profile()
    print(f"profile: {active.name} ({active.description})")
    print(
        "  " + ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(active).items() if k not in ("name", "description"))
    )
    print("measured run time of this notebook:")
    for row in measured_runtimes(notebook):
        print(f"  {row['profile']:6s} {row['seconds']:>7.1f} s   {row['machine']}, {row['date']}")
    if not measured_runtimes(notebook):
        print("  not measured yet (run `make record-runtimes`)")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))

"""Profiles: the one switch (`BOOK_PROFILE`) that sizes data, images, epochs and batches.

Framework-neutral: imports neither PyTorch nor TensorFlow.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import warnings
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
    # Keras only: run fit without compiling a graph. On smoke-sized data (a few batches) tracing the training step
    # of a MobileNetV2 costs several times what the steps do; the cpu and full profiles (and a unit test) run graphs.
    keras_eager: bool = False
    # repeated runs (seeds) behind a mean and spread, for experiments cheap enough to repeat (chapters 10-12)
    seeds: int = 3


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
        text_train_size=96,
        text_test_size=64,
        text_max_length=32,
        text_epochs=1,
        text_batch_size=16,
        keras_eager=True,
        seeds=1,
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
        description="a GPU: ten times the labels, larger images, more epochs",
        text_train_size=4000,
        text_test_size=1200,
        text_max_length=256,
        text_epochs=3,
        text_batch_size=32,
        seeds=5,
    ),
}


def gpu_visible() -> bool:
    """True when an NVIDIA GPU is visible, checked without importing a framework."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


def framework_gpus() -> dict[str, bool]:
    """For each helpers framework package this process has imported, whether that framework runs on a GPU.

    A GPU on the machine is not enough: `tensorflow-cpu` on a GPU machine still runs Keras on the CPU.
    Nothing is imported here; a framework not yet imported is not asked.
    """
    found = {}
    for framework in ("torch", "keras"):
        module = sys.modules.get(f"helpers.{framework}")
        if module is not None and hasattr(module, "device"):
            found[framework] = module.device() == "cuda"
    return found


def profile_name() -> str:
    """The active profile's name: `$BOOK_PROFILE`, else `full` where the framework in use has a GPU, else `cpu`.

    In a notebook (one framework imported) the default follows that framework's device; with no framework
    imported (the Makefile, the runtime table) it follows whether an NVIDIA GPU is visible at all.
    """
    name = os.environ.get(PROFILE_VARIABLE, "").strip().lower()
    if not name:
        gpus = framework_gpus()
        on_gpu = all(gpus.values()) if gpus else gpu_visible()
        return "full" if on_gpu else "cpu"
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


def record_runtimes(seconds_by_notebook: dict[str, float], profile_name_: str, machine: str, path=None) -> None:
    """Store measured run times (seconds per notebook stem) for one profile in `path` (book/runtimes.json)."""
    import json
    import time

    path = Path(path) if path is not None else RUNTIMES_FILE
    table = json.loads(path.read_text()) if path.exists() else {}
    for notebook, seconds in sorted(seconds_by_notebook.items()):
        table.setdefault(notebook, {})[profile_name_] = {
            "seconds": round(seconds, 1),
            "machine": machine,
            "date": time.strftime("%Y-%m-%d"),
        }
    path.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")


def machine_description() -> str:
    """A short description of this machine for runtime records: architecture, cores, GPU or not."""
    import platform

    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {'GPU' if gpu_visible() else 'no GPU'}"


def check_device(profile_name_: str, device: str) -> str | None:
    """A warning when the profile does not fit the device the notebook's framework runs on, else None."""
    if profile_name_ == "full" and device != "cuda":
        return (
            f"{PROFILE_VARIABLE}=full, but this framework runs on the {device.upper()}: the full profile is sized "
            f"for a GPU and takes hours here. Use {PROFILE_VARIABLE}=cpu (or unset it: the default follows the "
            "device). For Keras on a GPU, install tensorflow[and-cuda] instead of tensorflow-cpu (README, GPU)."
        )
    return None


def header(notebook: str, versions: dict) -> None:
    """Print the active profile's settings, the device, this notebook's measured run times and the versions."""
    active = profile()
    device = versions.get("device", "cpu")
    print(f"profile: {active.name} ({active.description})")
    explicit = bool(os.environ.get(PROFILE_VARIABLE, "").strip())
    print(f"device: {device} ({'set by ' + PROFILE_VARIABLE if explicit else 'the default profile for this device'})")
    mismatch = check_device(active.name, device)
    if mismatch:
        warnings.warn(mismatch, stacklevel=2)
    print(
        "  " + ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(active).items() if k not in ("name", "description"))
    )
    print("measured run time of this notebook:")
    for row in measured_runtimes(notebook):
        print(f"  {row['profile']:6s} {row['seconds']:>7.1f} s   {row['machine']}, {row['date']}")
    if not measured_runtimes(notebook):
        print("  not measured yet (run `make record-runtimes`)")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))

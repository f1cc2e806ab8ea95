"""PyTorch: fast and data-parallel fine-tuning (chapter 16). Mirrors `helpers.keras.fast_training`.

`training_precision` resolves `fit`'s `precision=` for this device, `step_rate` times whole training steps on
device-resident data, `data_parallel_script` is a DistributedDataParallel training script and
`launch_data_parallel` runs it under torchrun, one process per device. `gpu_math` sets the numerics that a GPU
timing depends on (TF32, deterministic kernels, cuDNN autotuning) explicitly and says what they are.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from helpers import checks, fast_training
from helpers.torch.core import DTYPES, precision_options, resolve_precision
from helpers.torch.models import device

__all__ = ["training_precision", "gpu_math", "step_rate", "data_parallel_script", "launch_data_parallel"]

# The data-parallel training script: a real, linted file beside this module, which `data_parallel_script` returns.
SCRIPT = Path(__file__).resolve().with_name("data_parallel_train.py")


def training_precision(precision=None) -> str:
    """The precision `fit` trains in here: None gives float32 on every device (bfloat16 and float16 are asked for);
    float16 on a CPU (or bfloat16 on an old GPU) raises one ValueError."""
    return resolve_precision(precision)


def gpu_math(tf32=False, deterministic=True, benchmark=False, verbose=True) -> dict:
    """Set, explicitly, the GPU numerics a timing depends on and return them (printed when `verbose`): tf32,
    TensorFloat-32 matrix products and convolutions (Ampere and later); deterministic, deterministic kernels
    (`use_deterministic_algorithms`, cuDNN's deterministic algorithms); benchmark, cuDNN autotuning
    (`cudnn.benchmark`), which picks kernels by timing them and so cannot be deterministic. `book.seed` sets
    tf32=False, deterministic=True, benchmark=False on a GPU; call this before each timed variant so that none
    inherits another's settings. The flags are set on a CPU too, where they change nothing."""
    if deterministic and benchmark:
        raise ValueError("deterministic=True needs benchmark=False: cuDNN autotuning picks kernels by timing them")
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts
    torch.backends.cuda.matmul.allow_tf32 = bool(tf32)
    torch.backends.cudnn.allow_tf32 = bool(tf32)
    torch.backends.cudnn.deterministic = bool(deterministic)
    torch.backends.cudnn.benchmark = bool(benchmark)
    torch.use_deterministic_algorithms(bool(deterministic), warn_only=True)
    settings = {
        "tf32": torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32,
        "deterministic": torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic,
        "benchmark": torch.backends.cudnn.benchmark,
    }
    if verbose:
        print("GPU math: " + ", ".join(f"{k}={'on' if v else 'off'}" for k, v in settings.items()))
    return settings


def step_rate(
    model, train, batch_size=32, steps=5, repeats=3, *, precision=None, channels_last=None, compile=None
) -> float:
    """Training images per second: whole steps (forward, loss, backward, Adam) on one batch already on the
    device, so the input pipeline is left out; median of `repeats` timings of `steps` steps after a warm-up.
    The model's weights are restored afterwards."""
    steps, repeats = checks.count("steps", steps), checks.count("repeats", repeats)
    batch_size = checks.count("batch_size", batch_size)
    name, to_channels_last, to_compile = precision_options(precision, channels_last, compile)
    dev = torch.device(device())
    x, y = checks.pair(train, "train")
    xb = torch.from_numpy(np.ascontiguousarray(x[:batch_size], dtype=np.float32)).to(dev)
    xb = xb.permute(0, 3, 1, 2) if xb.ndim == 4 else xb
    yb = torch.as_tensor(np.asarray(y[:batch_size]), dtype=torch.long, device=dev)
    saved = copy.deepcopy(model.state_dict())
    memory_format = torch.channels_last if to_channels_last else torch.contiguous_format
    model.to(dev, memory_format=memory_format).train()
    xb = xb.contiguous(memory_format=memory_format) if xb.ndim == 4 else xb.contiguous()
    step_model = torch.compile(model) if to_compile else model
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    scaler = torch.amp.GradScaler(dev.type, enabled=name == "float16")

    def run():
        for _ in range(steps):
            with torch.autocast(dev.type, dtype=DTYPES[name], enabled=name != "float32"):
                loss = nn.functional.cross_entropy(step_model(xb), yb)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        if dev.type == "cuda":
            torch.cuda.synchronize()  # GPU work is asynchronous: wait for it before reading the clock

    try:
        seconds = fast_training.median_seconds(run, repeats=repeats, warmup=1)
    finally:
        model.to(memory_format=torch.contiguous_format).load_state_dict(saved)
    return fast_training.images_per_second(steps * len(yb), seconds)


def data_parallel_script() -> str:
    """The source of a data-parallel training script (DistributedDataParallel, one process per device) that
    `launch_data_parallel` runs; it trains a small CNN and writes each step's loss and the seconds to a JSON."""
    return SCRIPT.read_text(encoding="utf-8")


def _devices() -> tuple[int, str]:
    """How many processes may run side by side: one per GPU, else one per CPU core."""
    if torch.cuda.is_available():
        return torch.cuda.device_count(), "GPUs"
    return fast_training.available_cpus(), "CPU cores"


def launch_data_parallel(script, processes=2, args=(), timeout=600) -> str:
    """Run a training script in `processes` data-parallel processes with torchrun (gloo on CPUs, NCCL on GPUs);
    returns what it printed. More processes than devices (GPUs, else CPU cores) is one ValueError."""
    processes = fast_training.check_processes(processes, *_devices())
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    command += [str(script), *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout

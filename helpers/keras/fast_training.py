"""Keras: fast and data-parallel fine-tuning (chapter 16). Mirrors `helpers.torch.fast_training`.

`training_precision` resolves `fit`'s `precision=` for this device, `step_rate` times whole training steps on
device-resident data, `data_parallel_script` is a tf.distribute.MirroredStrategy training script and
`launch_data_parallel` runs it in a process of its own with one replica per device. `gpu_math` sets the numerics
that a GPU timing depends on (TF32, op determinism, cuDNN autotuning) explicitly and says what they are.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from helpers import checks, fast_training
from helpers.keras.core import precision_optimizer, precision_options, resolve_precision, use_precision
from helpers.keras.internals import op_determinism_enabled, set_op_determinism

__all__ = ["training_precision", "gpu_math", "step_rate", "data_parallel_script", "launch_data_parallel"]

# The data-parallel training script: a real, linted file beside this module, which `data_parallel_script` returns.
SCRIPT = Path(__file__).resolve().with_name("data_parallel_train.py")


def training_precision(precision=None) -> str:
    """The precision `fit` trains in here: None gives float32 on every device (bfloat16 and float16 are asked for);
    float16 on a CPU (or bfloat16 on an old GPU) raises one ValueError."""
    return resolve_precision(precision)


def gpu_math(tf32=False, deterministic=True, benchmark=False, verbose=True) -> dict:
    """Set, explicitly, the GPU numerics a timing depends on and return them (printed when `verbose`): tf32,
    TensorFloat-32 matrix products and convolutions (`enable_tensor_float_32_execution`); deterministic, op
    determinism (`enable_op_determinism`; Keras then compiles no model with XLA, even with jit_compile=True);
    benchmark, cuDNN autotuning (`TF_CUDNN_USE_AUTOTUNE`, which TensorFlow reads once, at its first GPU
    convolution: set it before). `book.seed` turns TF32 off and op determinism on, on a GPU; call this before each
    timed variant so that none inherits another's settings. The flags are set on a CPU too, where they change
    nothing."""
    if deterministic and benchmark:
        raise ValueError("deterministic=True needs benchmark=False: cuDNN autotuning picks kernels by timing them")
    tf.config.experimental.enable_tensor_float_32_execution(bool(tf32))
    set_op_determinism(bool(deterministic))
    os.environ["TF_CUDNN_USE_AUTOTUNE"] = "1" if benchmark else "0"
    settings = {
        "tf32": tf.config.experimental.tensor_float_32_execution_enabled(),
        "deterministic": op_determinism_enabled(),
        "benchmark": os.environ["TF_CUDNN_USE_AUTOTUNE"] == "1",
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
    name, _, jit_compile = precision_options(precision, channels_last, compile)
    x, y = checks.pair(train, "train")
    xb = tf.constant(np.asarray(x[:batch_size], dtype=np.float32))
    yb = tf.constant(np.asarray(y[:batch_size], dtype=np.int64))
    saved = model.get_weights()
    restore = use_precision(model, name)
    try:
        model.compile(
            optimizer=precision_optimizer(keras.optimizers.Adam(1e-5), name),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=jit_compile,
        )

        def run():
            for _ in range(steps):
                loss = model.train_on_batch(xb, yb)
            np.asarray(loss, dtype=float)  # the last step's result: waits for it

        seconds = fast_training.median_seconds(run, repeats=repeats, warmup=1)
    finally:
        restore()
        model.set_weights(saved)
    return fast_training.images_per_second(steps * int(yb.shape[0]), seconds)


def data_parallel_script() -> str:
    """The source of a data-parallel training script (tf.distribute.MirroredStrategy, one replica per device)
    that `launch_data_parallel` runs; it trains a small CNN and writes each step's loss and the seconds to a JSON."""
    return SCRIPT.read_text(encoding="utf-8")


def _devices() -> tuple[int, str]:
    """How many replicas may run side by side: one per GPU, else one per CPU core."""
    gpus = tf.config.list_physical_devices("GPU")
    return (len(gpus), "GPUs") if gpus else (fast_training.available_cpus(), "CPU cores")


def launch_data_parallel(script, processes=2, args=(), timeout=600) -> str:
    """Run a training script with `processes` data-parallel replicas (passed as --processes; logical CPU
    devices on a CPU, GPUs otherwise) in a fresh Python process; returns what it printed. More replicas than
    devices (GPUs, else CPU cores) is one ValueError."""
    processes = fast_training.check_processes(processes, *_devices())
    command = [sys.executable, str(script), *map(str, args), f"--processes={processes}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout

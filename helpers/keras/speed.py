"""Keras: fast and data-parallel fine-tuning (chapter 16). Mirrors `helpers.torch.speed`.

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

from helpers import checks, throughput
from helpers.keras.models import device

__all__ = ["training_precision", "gpu_math", "step_rate", "data_parallel_script", "launch_data_parallel"]

# The data-parallel training script: a real, linted file beside this module, which `data_parallel_script` returns.
SCRIPT = Path(__file__).resolve().with_name("data_parallel_train.py")

POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def _bfloat16_supported() -> bool:
    """bfloat16 arithmetic on the GPU: NVIDIA compute capability 8.0 (Ampere) or newer."""
    gpus = tf.config.list_physical_devices("GPU")
    details = tf.config.experimental.get_device_details(gpus[0]) if gpus else {}
    return tuple(details.get("compute_capability", (0, 0))) >= (8, 0)


def training_precision(precision=None) -> str:
    """The precision `fit` trains in here: None gives float32 on every device (bfloat16 and float16 are asked for);
    float16 on a CPU (or bfloat16 on an old GPU) raises one ValueError."""
    return throughput.choose_precision(precision, device(), _bfloat16_supported())


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
    from tensorflow.python.framework import config as tf_config  # disable_op_determinism is not in tf.config

    tf.config.experimental.enable_tensor_float_32_execution(bool(tf32))
    (tf_config.enable_op_determinism if deterministic else tf_config.disable_op_determinism)()
    os.environ["TF_CUDNN_USE_AUTOTUNE"] = "1" if benchmark else "0"
    settings = {
        "tf32": tf.config.experimental.tensor_float_32_execution_enabled(),
        "deterministic": tf_config.is_op_determinism_enabled(),
        "benchmark": os.environ["TF_CUDNN_USE_AUTOTUNE"] == "1",
    }
    if verbose:
        print("GPU math: " + ", ".join(f"{k}={'on' if v else 'off'}" for k, v in settings.items()))
    return settings


def _options(precision, channels_last, compile) -> tuple[str, bool, bool | str]:
    """`fit`'s speed options resolved: (precision, channels_last, jit_compile). None is off on every device, as in
    PyTorch: float32 and no XLA (not Keras' own 'auto', which picks XLA on a GPU). Keras images are NHWC already,
    so channels_last is checked and has nothing to change."""
    name = training_precision(precision)
    channels_last = throughput.check_flag("channels_last", channels_last)
    compile = throughput.check_flag("compile", compile)
    return name, True if channels_last is None else channels_last, bool(compile)


def _use_precision(model, name: str):
    """Give every layer of `model` the dtype policy of precision `name` (variables stay float32, the
    computation runs in `name`); returns a function that puts the old policies back."""
    layers = list(model._flatten_layers(include_self=True, recursive=True))
    old = [layer.dtype_policy for layer in layers]
    if name != "float32":
        for layer in layers:
            layer.dtype_policy = POLICIES[name]

    def restore():
        if name != "float32":
            for layer, policy in zip(layers, old):
                layer.dtype_policy = policy
            model.train_function = model.test_function = model.predict_function = None  # traced in `name`

    return restore


def _optimizer(optimizer, name: str):
    """float16 gradients underflow: scale the loss up before backward and the gradients down after."""
    return keras.optimizers.LossScaleOptimizer(optimizer) if name == "float16" else optimizer


def step_rate(
    model, train, batch_size=32, steps=5, repeats=3, *, precision=None, channels_last=None, compile=None
) -> float:
    """Training images per second: whole steps (forward, loss, backward, Adam) on one batch already on the
    device, so the input pipeline is left out; median of `repeats` timings of `steps` steps after a warm-up.
    The model's weights are restored afterwards."""
    steps, repeats = checks.count("steps", steps), checks.count("repeats", repeats)
    batch_size = checks.count("batch_size", batch_size)
    name, _, jit_compile = _options(precision, channels_last, compile)
    x, y = checks.pair(train, "train")
    xb = tf.constant(np.asarray(x[:batch_size], dtype=np.float32))
    yb = tf.constant(np.asarray(y[:batch_size], dtype=np.int64))
    saved = model.get_weights()
    restore = _use_precision(model, name)
    try:
        model.compile(
            optimizer=_optimizer(keras.optimizers.Adam(1e-5), name),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=jit_compile,
        )

        def run():
            for _ in range(steps):
                loss = model.train_on_batch(xb, yb)
            np.asarray(loss, dtype=float)  # the last step's result: waits for it

        seconds = throughput.median_seconds(run, repeats=repeats, warmup=1)
    finally:
        restore()
        model.set_weights(saved)
    return throughput.images_per_second(steps * int(yb.shape[0]), seconds)


def data_parallel_script() -> str:
    """The source of a data-parallel training script (tf.distribute.MirroredStrategy, one replica per device)
    that `launch_data_parallel` runs; it trains a small CNN and writes each step's loss and the seconds to a JSON."""
    return SCRIPT.read_text(encoding="utf-8")


def _devices() -> tuple[int, str]:
    """How many replicas may run side by side: one per GPU, else one per CPU core."""
    gpus = tf.config.list_physical_devices("GPU")
    return (len(gpus), "GPUs") if gpus else (throughput.available_cpus(), "CPU cores")


def launch_data_parallel(script, processes=2, args=(), timeout=600) -> str:
    """Run a training script with `processes` data-parallel replicas (passed as --processes; logical CPU
    devices on a CPU, GPUs otherwise) in a fresh Python process; returns what it printed. More replicas than
    devices (GPUs, else CPU cores) is one ValueError."""
    processes = throughput.check_processes(processes, *_devices())
    command = [sys.executable, str(script), *map(str, args), f"--processes={processes}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout

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

import keras
import numpy as np
import tensorflow as tf

from helpers import checks, throughput
from helpers.keras.models import device

__all__ = ["training_precision", "gpu_math", "step_rate", "data_parallel_script", "launch_data_parallel"]

POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}

SCRIPT = r'''"""Data-parallel training with tf.distribute.MirroredStrategy: one replica per device, in one process.

python this.py data.npz out.json --processes N --steps S --batch-size B
On a CPU the N replicas are N logical CPU devices, which must be configured before TensorFlow initialises its
devices: hence a script of its own, not a notebook cell. Every replica holds the whole model; each global batch
is split over the replicas, and the optimizer sums their gradients (each replica's loss is divided by the global
batch size). With no dropout and no BatchNorm, N replicas take the same steps as one on the whole batch.
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf

import keras


def small_cnn(input_shape, classes):
    return keras.Sequential([
        keras.Input(input_shape),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"), keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"), keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(classes),
    ])


def make_strategy(replicas):
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return tf.distribute.MirroredStrategy([f"/gpu:{i}" for i in range(replicas)])  # NCCL all-reduce
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    args = parser.parse_args()
    strategy = make_strategy(args.processes)
    replicas = strategy.num_replicas_in_sync
    assert args.batch_size % replicas == 0, "the global batch must split evenly over the replicas"

    data = np.load(args.data)
    x, y = data["x"], data["y"].astype("int64")
    order = np.random.default_rng(0).permutation(np.resize(np.arange(len(y)), args.steps * args.batch_size))
    batches = tf.data.Dataset.from_tensor_slices((x[order], y[order])).batch(args.batch_size, drop_remainder=True)
    batches = strategy.experimental_distribute_dataset(batches)  # each global batch split over the replicas
    with strategy.scope():  # variables created here are mirrored: one copy per replica, kept in sync
        keras.utils.set_random_seed(0)
        model = small_cnn(x.shape[1:], int(y.max()) + 1)
        opt = keras.optimizers.SGD(args.lr, momentum=0.9)

    def replica_step(xb, yb):
        with tf.GradientTape() as tape:
            logits = model(xb, training=True)
            per_example = keras.losses.sparse_categorical_crossentropy(yb, logits, from_logits=True)
            loss = tf.reduce_sum(per_example) / args.batch_size  # divided by the GLOBAL batch size
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))  # all-reduces (sums) over the replicas
        return loss

    @tf.function
    def step(xb, yb):
        losses = strategy.run(replica_step, args=(xb, yb))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)  # the global batch's mean loss

    losses, start = [], None
    for i, (xb, yb) in enumerate(batches):
        if i == 1:  # step 0 is the warm-up: tracing the step function
            start = time.perf_counter()
        losses.append(float(step(xb, yb)))
    seconds = time.perf_counter() - start
    result = {"processes": replicas, "losses": losses, "seconds": seconds, "timed_steps": args.steps - 1}
    with open(args.out, "w") as f:
        json.dump(result, f)
    devices = ", ".join(strategy.extended.worker_devices)
    print(f"{replicas} replica(s) on {devices}: {seconds:.2f} s for {args.steps - 1} timed steps")


if __name__ == "__main__":
    main()
'''


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
    return SCRIPT


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

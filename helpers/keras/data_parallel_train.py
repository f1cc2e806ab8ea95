"""Data-parallel training with tf.distribute.MirroredStrategy: one replica per device, in one process.

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

import keras
import numpy as np
import tensorflow as tf


def small_cnn(input_shape, classes):
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(classes),
        ]
    )


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

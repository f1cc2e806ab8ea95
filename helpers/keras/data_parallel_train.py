"""Data-parallel training with tf.distribute.MirroredStrategy: one replica per device, in one process.

python this.py data.npz out.json --processes N --steps S --batch-size B
On a CPU the N replicas are N logical CPU devices, which must be configured before TensorFlow initialises its
devices: hence a script of its own, not a notebook cell. Every replica holds the whole model; each global batch
is split over the replicas, and the optimizer sums their gradients (each replica's loss is divided by the global
batch size). With no dropout and no BatchNorm, N replicas take the same steps as one on the whole batch.
The script trains twice from the same start: once with the step written out (`strategy.run`), once the everyday
Keras way, `compile` and `fit` inside `strategy.scope()`, which splits each batch and reduces the gradients itself.
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


class StepLosses(keras.callbacks.Callback):
    """Each training step's loss. `fit` logs the running mean over the epoch after each batch, so step k's own
    loss is k * mean_k - (k - 1) * mean_(k-1)."""

    def on_train_begin(self, logs=None):
        self.means = []

    def on_train_batch_end(self, batch, logs=None):
        self.means.append(float(logs["loss"]))

    def losses(self):
        means = np.array(self.means, dtype="float64")
        totals = means * np.arange(1, len(means) + 1)
        return np.diff(totals, prepend=0.0).tolist()


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
    result = written_out(strategy, args)
    result["fit_losses"] = with_fit(strategy, args)
    with open(args.out, "w") as f:
        json.dump(result, f)
    devices = ", ".join(strategy.extended.worker_devices)
    seconds, steps = result["seconds"], result["timed_steps"]
    print(f"{result['processes']} replica(s) on {devices}: {seconds:.2f} s for {steps} timed steps")


def global_batches(args):
    """The same global batches, in the same order, for both routes."""
    data = np.load(args.data)
    x, y = data["x"], data["y"].astype("int64")
    order = np.random.default_rng(0).permutation(np.resize(np.arange(len(y)), args.steps * args.batch_size))
    batches = tf.data.Dataset.from_tensor_slices((x[order], y[order])).batch(args.batch_size, drop_remainder=True)
    return batches, x.shape[1:], int(y.max()) + 1


def written_out(strategy, args):
    """The step written out: strategy.run on every replica, the loss divided by the global batch size."""
    replicas = strategy.num_replicas_in_sync
    assert args.batch_size % replicas == 0, "the global batch must split evenly over the replicas"

    batches, input_shape, classes = global_batches(args)
    batches = strategy.experimental_distribute_dataset(batches)  # each global batch split over the replicas
    with strategy.scope():  # variables created here are mirrored: one copy per replica, kept in sync
        keras.utils.set_random_seed(0)
        model = small_cnn(input_shape, classes)
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
    return {"processes": replicas, "losses": losses, "seconds": seconds, "timed_steps": args.steps - 1}


def with_fit(strategy, args):
    """The everyday route: model and optimizer built and compiled inside strategy.scope(), then fit, which
    distributes the dataset and reduces the gradients itself. Returns each step's loss."""
    batches, input_shape, classes = global_batches(args)
    with strategy.scope():
        keras.utils.set_random_seed(0)  # the same initial weights as the written-out route
        model = small_cnn(input_shape, classes)
        model.compile(
            optimizer=keras.optimizers.SGD(args.lr, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    steps = StepLosses()
    model.fit(batches, epochs=1, callbacks=[steps], shuffle=False, verbose=0)  # the batches as given
    return steps.losses()


if __name__ == "__main__":
    main()

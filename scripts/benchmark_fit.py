"""Throughput of helpers' `fit` against a plain and a tuned training loop on the same data, same process.

Usage: python scripts/benchmark_fit.py torch|keras [--images N] [--size S] [--epochs E] [--repeats R]
Prints images/second for the three and the ratios helpers/plain (target >= 0.97) and helpers/tuned. The tuned
loop is what a careful engineer writes for the device at hand: PyTorch with the data resident on the device,
`zero_grad(set_to_none=True)`, and on a GPU bfloat16 autocast and channels_last; Keras with a prefetching
`tf.data` pipeline and, on a GPU, the mixed_bfloat16 policy and XLA. `fit` runs with its defaults (float32,
no channels_last, no compilation, on every device): helpers/tuned measures what chapter 16's options buy.
Not a timed test: the ratios are what matter, and all loops run interleaved on the same machine, so they share
its noise.
"""

import argparse
import time

import numpy as np

from helpers import seed


def plain_torch(model, x, y, epochs, batch_size, lr):
    """The loop every PyTorch tutorial writes: DataLoader, forward, loss, backward, step."""
    import torch

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(dev).train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    data = torch.utils.data.TensorDataset(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y))
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True)
    loss_fn = torch.nn.CrossEntropyLoss()
    for _ in range(epochs):
        for xb, yb in loader:
            xb, yb = xb.to(dev), yb.to(dev)
            loss = loss_fn(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    if dev.type == "cuda":
        torch.cuda.synchronize()


def tuned_torch(model, x, y, epochs, batch_size, lr):
    """Data on the device, shuffled by index there; set_to_none; bfloat16 autocast and channels_last on a GPU."""
    import torch

    cuda = torch.cuda.is_available()
    dev = torch.device("cuda" if cuda else "cpu")
    memory_format = torch.channels_last if cuda else torch.contiguous_format
    model.to(dev, memory_format=memory_format).train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    images = torch.from_numpy(x).permute(0, 3, 1, 2).to(dev).contiguous(memory_format=memory_format)
    labels = torch.from_numpy(y).to(dev)
    loss_fn = torch.nn.CrossEntropyLoss()
    for _ in range(epochs):
        order = torch.randperm(len(labels), device=dev)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
                loss = loss_fn(model(images[batch]), labels[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    if cuda:
        torch.cuda.synchronize()


def tuned_keras(model, x, y, epochs, batch_size, lr):
    """A prefetching tf.data pipeline; on a GPU the mixed_bfloat16 policy and XLA."""
    import keras
    import tensorflow as tf

    gpu = bool(tf.config.list_physical_devices("GPU"))
    if gpu:
        for layer in model._flatten_layers(include_self=True, recursive=True):
            layer.dtype_policy = "mixed_bfloat16"
    data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(y)).batch(batch_size).prefetch(tf.data.AUTOTUNE)
    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=gpu,
    )
    model.fit(data, epochs=epochs, verbose=0)


def plain_keras(model, x, y, epochs, batch_size, lr):
    """Bare `model.compile` + `model.fit`."""
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("framework", choices=["torch", "keras"])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    if args.framework == "torch":
        from helpers import torch as book
    else:
        from helpers import keras as book
    plain = plain_torch if args.framework == "torch" else plain_keras
    tuned = tuned_torch if args.framework == "torch" else tuned_keras
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.images, args.size, args.size, 3)).astype(np.float32)
    y = (np.arange(args.images) % 10).astype(np.int64)

    def build():
        seed(0)
        backbone = book.pretrained_backbone("mobilenet_v2")
        return book.add_head(backbone, book.new_head(book.feature_dim(backbone), 10))

    runs = {
        "plain loop": lambda m: plain(m, x, y, args.epochs, args.batch_size, 1e-3),
        "tuned loop": lambda m: tuned(m, x, y, args.epochs, args.batch_size, 1e-3),
        "helpers fit": lambda m: book.fit(
            m, (x, y), epochs=args.epochs, lr=1e-3, batch_size=args.batch_size, verbose=False
        ),
    }
    for run in runs.values():  # warm-up: first-call costs (graph tracing, allocator) are not throughput
        run(build())
    best = {name: float("inf") for name in runs}
    for _ in range(args.repeats):  # interleaved, best of N: both sides see the same machine state
        for name, run in runs.items():
            model = build()
            start = time.perf_counter()
            run(model)
            best[name] = min(best[name], time.perf_counter() - start)
    total = args.images * args.epochs
    print(f"{args.framework}: {args.images} images at {args.size}px, {args.epochs} epochs, batch {args.batch_size}")
    for name in runs:
        print(f"  {name:12s} {total / best[name]:8.1f} images/s")
    print(f"  ratio helpers/plain: {best['plain loop'] / best['helpers fit']:.3f}  (target >= 0.97)")
    print(f"  ratio helpers/tuned: {best['tuned loop'] / best['helpers fit']:.3f}  (1.0: as fast as the tuned loop)")


if __name__ == "__main__":
    main()

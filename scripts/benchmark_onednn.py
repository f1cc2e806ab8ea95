"""Keras training speed and run-to-run reproducibility with TensorFlow's oneDNN CPU kernels on and off.

Usage: python scripts/benchmark_onednn.py [--runs 4] [--size 64] [--batch 32] [--steps 8] [--out FILE.json]

`TF_ENABLE_ONEDNN_OPTS` is read once, when TensorFlow is imported, so every measurement runs in a fresh Python
process of its own. The settings alternate (on, off, on, off, ...) so that load from other work on the machine falls
on both alike; the machine's load average is recorded before and after every run. Each run trains the same model
(Keras' MobileNetV2, random initial weights, a full training step: forward, loss, gradients, Adam) from the same
seed on the same synthetic batch: two warm-up steps (graph tracing), then `--steps` timed steps. Two runs of one
setting are reproducible when their per-step losses and final weights are bit-identical.
"""

import argparse
import json
import os
import subprocess
import sys
import time

CHILD = r"""
import hashlib, json, os, sys, time
import numpy as np
import keras

size, batch, steps = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
keras.utils.set_random_seed(0)
model = keras.applications.MobileNetV2(weights=None, input_shape=(size, size, 3), classes=10)
model.compile(optimizer=keras.optimizers.Adam(1e-3),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=False), jit_compile=False)
rng = np.random.default_rng(0)
x = rng.normal(size=(batch, size, size, 3)).astype("float32")
y = (np.arange(batch) % 10).astype("int64")
losses = [float(model.train_on_batch(x, y)) for _ in range(2)]  # warm-up: tracing the step
start = time.perf_counter()
for _ in range(steps):
    losses.append(float(model.train_on_batch(x, y)))  # float() waits for the step
seconds = time.perf_counter() - start
digest = hashlib.sha256(b"".join(np.ascontiguousarray(w).tobytes() for w in model.get_weights())).hexdigest()
print(json.dumps({"seconds": seconds, "losses": losses, "weights_sha256": digest}))
"""


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def run(onednn: bool, size: int, batch: int, steps: int) -> dict:
    """One training run in a fresh process with oneDNN on or off."""
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="1" if onednn else "0", TF_CPP_MIN_LOG_LEVEL="3")
    env["KERAS_BACKEND"] = "tensorflow"
    before = loadavg()
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(size), str(batch), str(steps)], capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(
        onednn=onednn,
        images_per_second=steps * batch / result["seconds"],
        process_seconds=time.perf_counter() - start,
        notice_printed="oneDNN custom operations are on" in done.stderr,  # TensorFlow's own word that it is on
        loadavg_before=before,
        loadavg_after=loadavg(),
    )
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=4, help="runs in all, alternating on/off")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    results = []
    for i in range(args.runs):
        r = run(i % 2 == 0, args.size, args.batch, args.steps)
        results.append(r)
        print(
            f"run {i + 1}: oneDNN {'on ' if r['onednn'] else 'off'} {r['images_per_second']:6.1f} images/s "
            f"({r['seconds']:.2f} s for {args.steps} steps), final loss {r['losses'][-1]:.6f}, "
            f"weights {r['weights_sha256'][:12]}, notice printed: {r['notice_printed']}, "
            f"load {r['loadavg_before']} -> {r['loadavg_after']}",
            flush=True,
        )
    for onednn in (True, False):
        mine = [r for r in results if r["onednn"] == onednn]
        rates = [r["images_per_second"] for r in mine]
        same = len({(tuple(r["losses"]), r["weights_sha256"]) for r in mine}) == 1
        print(
            f"oneDNN {'on ' if onednn else 'off'}: images/s {', '.join(f'{v:.1f}' for v in rates)}; "
            f"{len(mine)} runs bit-identical (losses and weights): {same}"
        )
    print(f"oneDNN on vs off, first runs: losses identical {results[0]['losses'] == results[1]['losses']}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "cpus": os.cpu_count(), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()

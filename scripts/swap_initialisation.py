"""Chapter 12: does the convolutions' initial-weight rule explain the two notebooks' different rows on optdigits?

Usage: BOOK_PROFILE=cpu python scripts/swap_initialisation.py [--seeds 10] [--out FILE.json]

The chapter's control, "mixed BN, no alignment" (`fit_adapted(..., method="coral", weight=0)` on MNIST with
unlabelled optdigits batches), is trained as the notebook trains it (same split, epochs, batch size, rate and seed),
once per seed in four ways: each framework with its own default rule for the convolution kernels, and each with the
other's. PyTorch's `nn.Conv2d` draws its kernels uniformly in +-1/sqrt(fan_in) (kaiming_uniform with a = sqrt(5));
Keras' `Conv2D` uses Glorot's uniform rule, +-sqrt(6 / (fan_in + fan_out)). The head is the same in both (the book's
`new_head`). Prints the mean and standard deviation over seeds of the optdigits test accuracy for each way.
About five minutes on two CPU cores in the cpu profile.
"""

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# PyTorch before TensorFlow (TensorFlow first crashed the process here), and helpers.keras before keras (it
# quiets TensorFlow's import-time notice).
# isort: off
import numpy as np  # noqa: E402
import torch  # noqa: E402

import helpers.torch as torch_book  # noqa: E402
import helpers.keras as keras_book  # noqa: E402
import keras  # noqa: E402
from helpers import config, domain_adaptation  # noqa: E402
from helpers.keras.internals import flatten_layers  # noqa: E402
# isort: on

LR = 2e-3  # chapter 12's rate


def split(name, seed, profile):
    """Chapter 12's `split`: a domain's training images for a seed, and its fixed test images."""
    pool = int(np.bincount(domain_adaptation.domain("mnist")["train_y"]).min())
    source_val = min(profile.test_per_class, pool // 5)
    per_class = min(profile.train_per_class, pool - source_val)
    held_out = source_val if name == "mnist" else 0
    picked = domain_adaptation.domain_task(
        name, per_class, profile.test_per_class, seed=seed, validation_per_class=held_out
    )
    return {key: domain_adaptation.rgb_input(v) if key.endswith("_x") else v for key, v in picked.items()}


def torch_model(seed, rule):
    torch_book.seed(seed)
    model = torch_book.small_cnn(10, channels=3)
    if rule == "glorot":
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.xavier_uniform_(module.weight)
    return model


def keras_model(seed, rule):
    keras_book.seed(seed)
    model = keras_book.small_cnn(10, channels=3)
    if rule == "torch":  # uniform in +-sqrt(3 * scale / fan_in) = +-1/sqrt(fan_in)
        init = keras.initializers.VarianceScaling(scale=1 / 3, mode="fan_in", distribution="uniform")
        for layer in flatten_layers(model):
            if isinstance(layer, keras.layers.Conv2D):
                layer.kernel.assign(init(layer.kernel.shape))
    return model


def control_accuracy(book, model, seed, profile):
    source = split("mnist", seed, profile)
    book.fit_adapted(
        model,
        (source["train_x"], source["train_y"]),
        split("optdigits", seed, profile)["train_x"],
        method="coral",
        weight=0.0,
        epochs=profile.scratch_epochs,
        lr=LR,
        batch_size=profile.batch_size,
        seed=seed,
    )
    test = split("optdigits", 0, profile)
    return float(book.evaluate(model, (test["test_x"], test["test_y"]))["accuracy"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    profile = config.profile()
    ways = {
        "PyTorch, its default (uniform +-1/sqrt(fan_in))": (torch_book, torch_model, "default"),
        "PyTorch, Glorot uniform": (torch_book, torch_model, "glorot"),
        "Keras, its default (Glorot uniform)": (keras_book, keras_model, "default"),
        "Keras, uniform +-1/sqrt(fan_in)": (keras_book, keras_model, "torch"),
    }
    results = {name: [] for name in ways}
    for seed in range(args.seeds):
        for name, (book, build, rule) in ways.items():
            results[name].append(control_accuracy(book, build(seed, rule), seed, profile))
        print(f"seed {seed}: " + ", ".join(f"{v[-1]:.3f}" for v in results.values()), flush=True)
    print(f"mixed BN, no alignment, optdigits test accuracy over {args.seeds} seeds ({profile.name} profile):")
    for name, values in results.items():
        print(f"  {name}: {domain_adaptation.mean_spread(values)}")
    if args.out:
        args.out.write_text(json.dumps({"profile": profile.name, "results": results}, indent=1))


if __name__ == "__main__":
    main()

"""Images per second of MobileNetV2 fine-tuning steps on one GPU: plain fp32 against bf16 autocast + channels_last.

Synthetic inputs already on the device (so the input pipeline is out of the measurement), full fine-tuning with
SGD momentum, 224 px, ImageNet-shaped 1000-way head. Each variant is warmed up, then timed over whole steps with
the device synchronised; the ratio against the plain fp32 loop is printed from the same process.

    python scripts/gpu_throughput.py --batch 256 --steps 30 --json out/throughput.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torchvision


def step_rate(batch: int, steps: int, size: int, bf16: bool, channels_last: bool) -> float:
    """Training images per second over `steps` timed steps (after 10 warm-up steps)."""
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(num_classes=1000).cuda()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, size, size, device="cuda").to(memory_format=memory_format)
    y = torch.randint(0, 1000, (batch,), device="cuda")

    def one_step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(10):
        one_step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        one_step()
    torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.backends.cudnn.benchmark = True
    variants = {"fp32": (False, False), "fp32 + channels_last": (False, True), "bf16 + channels_last": (True, True)}
    rates = {name: step_rate(args.batch, args.steps, args.size, *flags) for name, flags in variants.items()}
    result = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "batch": args.batch,
        "image_size": args.size,
        "images_per_second": {k: round(v, 1) for k, v in rates.items()},
        "ratio_to_fp32": {k: round(v / rates["fp32"], 3) for k, v in rates.items()},
    }
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()

"""Data-parallel training with DistributedDataParallel: one process per device, started by torchrun.

python -m torch.distributed.run --standalone --nproc_per_node=N this.py data.npz out.json --steps S --batch-size B
Every process holds the whole model and reads the same global batches; process r trains on rows r, r+N, ...
of each. DDP averages the gradients over the processes during backward(), so with no dropout and no BatchNorm
(whose statistics would be per process) N processes take the same steps as one process on the whole batch.
"""

import argparse
import json
import os
import time

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def small_cnn(channels, classes):
    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, classes),
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])  # set by torchrun
    assert args.batch_size % world == 0, "the global batch must split evenly over the processes"
    cuda = torch.cuda.is_available()
    dev = torch.device(f"cuda:{os.environ['LOCAL_RANK']}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(dev)  # before the process group, so that NCCL and barrier() use this process's GPU
    dist.init_process_group("nccl" if cuda else "gloo")
    torch.set_num_threads(max(1, args.threads // world))  # the processes share the cores

    data = np.load(args.data)
    x = torch.from_numpy(data["x"]).permute(0, 3, 1, 2).contiguous().to(dev)
    y = torch.from_numpy(data["y"]).long().to(dev)
    torch.manual_seed(0)  # the same start in every process (DDP also copies rank 0's weights to the others)
    model = small_cnn(x.shape[1], int(y.max()) + 1).to(dev)
    model = DistributedDataParallel(model, device_ids=[dev] if cuda else None)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    order = np.random.default_rng(0).permutation(np.resize(np.arange(len(y)), args.steps * args.batch_size))

    losses, start = [], None
    for step in range(args.steps):
        if step == 1:  # step 0 is the warm-up: buffers, DDP's gradient buckets
            dist.barrier()
            start = time.perf_counter()
        batch = torch.from_numpy(order[step * args.batch_size : (step + 1) * args.batch_size]).to(dev)
        mine = batch[rank::world]  # this process's share of the global batch
        loss = nn.functional.cross_entropy(model(x[mine]), y[mine])
        opt.zero_grad(set_to_none=True)
        loss.backward()  # DDP all-reduces (averages) the gradients here, overlapped with the backward pass
        opt.step()
        losses.append(loss.detach())  # this process's share; kept on the device, no synchronisation per step
    seconds = time.perf_counter() - start
    losses = torch.stack(losses)
    dist.all_reduce(losses)  # once, after training: each step's mean loss over the whole global batch
    losses = (losses / world).tolist()
    if rank == 0:
        result = {"processes": world, "losses": losses, "seconds": seconds, "timed_steps": args.steps - 1}
        with open(args.out, "w") as f:
            json.dump(result, f)
        print(f"{world} process(es), backend {dist.get_backend()}: {seconds:.2f} s for {args.steps - 1} timed steps")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

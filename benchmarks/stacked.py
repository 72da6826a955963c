"""Stacked training throughput: k CIFAR nets as one grouped net against k nets stepped in turn.

    python benchmarks/stacked.py \
                                 # CPU, ResNet-20, batch 128, k = 1 2 4 6
    python benchmarks/stacked.py --threads 2 --iters 5 \
           # the numbers stacking.MEASURED_SPEEDUP holds
    python benchmarks/stacked.py --device cuda --iters 100 --warmup 20 --precision bf16 \
--compile default  # trainer=fast on CUDA
    python benchmarks/stacked.py --device cuda --compile off --precision fp32

Both sides run the harness's own training step (``TrainStep`` on the fast path ``trainer.*``
resolves to on the device: precision, channels_last, torch.compile, CUDA graphs, the optimizer's
kernel) and its device-resident batches (gather, crop, flip, normalise):

- ``separate``: k ``CifarResNet``s, each with its own SGD and ``DeviceBatches``, stepped one after
  another (k = 1: one plain run), as k runs one after another on one device would train;
- ``stacked``: one ``StackedCifarResNet`` of the same k members (residual and plain alternating,
  so the gated shortcut is timed) with ``StackedSGD`` and ``StackedBatches``, as ``train_stack``
  trains it.

It prints training images/s per member and in aggregate (k x batch images per step) and the
stacked/separate ratio: the speed-up a sweep gets from ``trainer.stack=k`` (above 1: faster).
``--json FILE`` also writes the rows. The device is synchronised before every clock read.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch
from hydra import compose, initialize_config_dir

from resnet_repro.config import config_dir, to_config
from resnet_repro.data.pipeline import DeviceBatches, StackedBatches, pixel_mean
from resnet_repro.models import build_model
from resnet_repro.models.stacked import StackedCifarResNet, StackedSGD, stacked_cross_entropy
from resnet_repro.training.device import device_sync
from resnet_repro.training.step import FastPath, TrainStep


def config(args):
    ov = [
        f"trainer.device={args.device}",
        f"trainer.precision={args.precision}",
        f"trainer.compile={args.compile}",
        f"model.depth={args.depth}",
        f"trainer.batch_size={args.batch}",
        "dataset=synthetic",
        f"dataset.num_train={max(args.batch * 8, 1024) + 128}",
    ]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return to_config(compose("config", overrides=ov), ov)


def members(cfg, k: int) -> list[torch.nn.Module]:
    """k nets as k runs would build them (seed i), residual and plain alternating."""
    nets = []
    for i in range(k):
        torch.manual_seed(i)
        nets.append(build_model(dataclasses.replace(cfg.model, residual=i % 2 == 0)))
    return nets


def time_steps(step, iters: int, warmup: int, device) -> float:
    """Seconds per step (the mean of ``iters`` steps after ``warmup`` untimed ones)."""
    for _ in range(warmup):
        step()
    device_sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    device_sync(device)
    return (time.perf_counter() - t0) / iters


def separate(k, cfg, fast, device, data) -> float:
    x, y, mean = data
    nets = [n.to(device, memory_format=fast.memory_format) for n in members(cfg, k)]
    steps = [TrainStep(n, fast.optimizer(n.parameters(), cfg.optimizer), fast) for n in nets]
    batches = [DeviceBatches(x, y, cfg.trainer.batch_size, mean, device, seed=i) for i in range(k)]

    def step():
        for s, b in zip(steps, batches, strict=True):
            s(*b.next())

    return time_steps(step, ARGS.iters, ARGS.warmup, device)


def stacked(k, cfg, fast, device, data) -> float:
    x, y, mean = data
    model = StackedCifarResNet.from_members(members(cfg, k)).to(
        device, memory_format=fast.memory_format
    )
    o = cfg.optimizer
    opt = StackedSGD(
        model.parameters(), k, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay
    )
    step_ = TrainStep(
        model, opt, dataclasses.replace(fast, optimizer_impl="foreach"), loss=stacked_cross_entropy
    )
    batches = StackedBatches(x, y, cfg.trainer.batch_size, mean, device, seeds=list(range(k)))

    def step():
        step_(*batches.next())

    return time_steps(step, ARGS.iters, ARGS.warmup, device)


ARGS = argparse.Namespace()


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 6])
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--iters", type=int, default=3, help="timed steps per measurement")
    p.add_argument(
        "--warmup", type=int, default=1, help="untimed steps before each measurement (compiles)"
    )
    p.add_argument("--threads", type=int, default=1, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    p.add_argument("--compile", choices=("auto", "off", "default", "max-autotune"), default="auto")
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    vars(ARGS).update(vars(args))

    torch.set_num_threads(args.threads)
    cfg = config(args)
    device = torch.device(args.device)
    fast = FastPath.resolve(cfg.trainer, cfg.optimizer, device)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu, {args.threads} thread(s)"
    )
    print(
        f"ResNet-{args.depth}, batch {args.batch} per member; fast path {fast.describe()}; {name}; "
        f"torch {torch.__version__}; {args.iters} timed steps after {args.warmup} warm-up"
    )
    print(
        f"{'k':>2}  {'mode':<9}  {'ms/step':>9}  {'img/s/member':>12}  {'img/s total':>11}  "
        f"{'stacked/separate':>16}"
    )
    g = torch.Generator().manual_seed(0)
    n = max(args.batch * 8, 1024)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g).to(device)
    y = torch.randint(0, 10, (n,), generator=g).to(device)
    data = (x, y, pixel_mean(x))
    rows = []
    for k in args.ks:
        times = {}
        for mode, fn in (("separate", separate), ("stacked", stacked)):
            fast.new_job()  # as every job does: backend flags set, earlier compiled code dropped
            times[mode] = fn(k, cfg, fast, device, data)
        for mode, t in times.items():
            row = {
                "k": k,
                "mode": mode,
                "ms_per_step": t * 1e3,
                "img_per_s_member": args.batch / t,
                "img_per_s_total": k * args.batch / t,
                "device": name,
                "fast_path": fast.describe(),
                "depth": args.depth,
                "batch": args.batch,
            }
            ratio = ""
            if mode == "stacked":
                row["speedup"] = times["separate"] / t
                ratio = f"{row['speedup']:16.2f}"
            rows.append(row)
            print(
                f"{k:>2}  {mode:<9}  {t * 1e3:9.1f}  {args.batch / t:12.0f}  "
                f"{k * args.batch / t:11.0f}  {ratio}",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main()

"""Stacked training throughput: k CIFAR nets as one grouped net against k nets stepped in turn.

    python benchmarks/stacked.py                                  # CPU, ResNet-20, batch 128, k = 1 2 4 6
    python benchmarks/stacked.py --device cuda --iters 50 --warmup 10
    python benchmarks/stacked.py --device cuda --precision bf16 --channels-last

For every k it times training steps (forward, loss, backward, SGD update; the device is
synchronised before every clock read) of

- ``separate``: k ``CifarResNet``s, each with its own ``torch.optim.SGD`` (momentum 0.9, weight
  decay 1e-4; foreach), stepped one after another on their own batches (k = 1: one plain run);
- ``stacked``: one ``StackedCifarResNet`` of the same k members (residual and plain alternating,
  so the gated shortcut is timed) with ``StackedSGD``, on the channel-stacked batches (the
  stacking copy is inside the timed step).

It prints training images/s per member and in aggregate (k x batch images per step), and the
stacked/separate ratio. Eager mode (no torch.compile), fp32 unless ``--precision bf16``.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
import torch.nn.functional as F

from resnet_repro.models.cifar_resnet import CifarResNet
from resnet_repro.models.stacked import (
    StackedCifarResNet,
    StackedSGD,
    stack_inputs,
    stack_targets,
    stacked_cross_entropy,
)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(args, device):
    if args.precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build_members(k: int, depth: int, device, memory_format) -> list[CifarResNet]:
    nets = []
    for i in range(k):
        torch.manual_seed(i)
        nets.append(CifarResNet(depth, residual=i % 2 == 0).to(device, memory_format=memory_format))
    return nets


def time_steps(step, iters: int, warmup: int, device) -> float:
    """Seconds per step (the mean of ``iters`` steps after ``warmup`` untimed ones)."""
    for _ in range(warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    sync(device)
    return (time.perf_counter() - t0) / iters


def separate(k, args, device, memory_format, xs, ys) -> float:
    nets = build_members(k, args.depth, device, memory_format)
    opts = [torch.optim.SGD(n.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, foreach=True)
            for n in nets]

    def step():
        for net, opt, x, y in zip(nets, opts, xs, ys, strict=True):
            with autocast(args, device):
                loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return time_steps(step, args.iters, args.warmup, device)


def stacked(k, args, device, memory_format, xs, ys) -> float:
    stack = StackedCifarResNet.from_members(build_members(k, args.depth, device, memory_format))
    stack = stack.to(memory_format=memory_format)
    opt = StackedSGD(stack.parameters(), k=k, lr=torch.full((k,), 0.1), momentum=0.9, weight_decay=1e-4)
    y = stack_targets(ys)

    def step():
        x = stack_inputs(xs).contiguous(memory_format=memory_format)
        with autocast(args, device):
            total, _ = stacked_cross_entropy(stack(x).float(), y)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()

    return time_steps(step, args.iters, args.warmup, device)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 6])
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--iters", type=int, default=3, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps before each measurement")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--channels-last", action="store_true")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {args.threads} thread(s)"
    print(f"ResNet-{args.depth}, batch {args.batch} per member, {args.precision}"
          f"{', channels_last' if args.channels_last else ''}, eager; {name}; torch {torch.__version__}; "
          f"{args.iters} timed steps after {args.warmup} warm-up")
    print(f"{'k':>2}  {'mode':<9}  {'ms/step':>9}  {'img/s/member':>12}  {'img/s total':>11}  {'stacked/separate':>16}")
    g = torch.Generator().manual_seed(0)
    for k in args.ks:
        xs = [torch.randn(args.batch, 3, 32, 32, generator=g).to(device, memory_format=memory_format)
              for _ in range(k)]
        ys = [torch.randint(0, 10, (args.batch,), generator=g).to(device) for _ in range(k)]
        t_sep = separate(k, args, device, memory_format, xs, ys)
        t_st = stacked(k, args, device, memory_format, xs, ys)
        for mode, t in (("separate", t_sep), ("stacked", t_st)):
            ratio = f"{t_sep / t_st:16.2f}" if mode == "stacked" else ""
            print(f"{k:>2}  {mode:<9}  {t * 1e3:9.1f}  {args.batch / t:12.0f}  {k * args.batch / t:11.0f}  {ratio}",
                  flush=True)


if __name__ == "__main__":
    main()

"""Time one training iteration (forward, backward, SGD step, device augmentation) per depth.

    python benchmarks/time_per_iteration.py                      # CPU, ResNet-20/56/110, batch 128
    python benchmarks/time_per_iteration.py --device cuda --depths 20 56 110 --iters 50

Prints a table and writes JSON with --out. Uses the harness's own step on synthetic uint8 data.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from resnet_repro.data.pipeline import DeviceBatches, pixel_mean
from resnet_repro.data.synthetic import make_synthetic
from resnet_repro.models import count_params, resnet_cifar


def time_depth(depth: int, residual: bool, device: str, batch: int, warmup: int, iters: int, repeats: int) -> dict:
    torch.manual_seed(0)
    x, y = make_synthetic(batch * 4, seed=0)
    batches = DeviceBatches(x, y, batch, pixel_mean(x), device, seed=0)
    model = resnet_cifar(depth, residual).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    def step():
        xb, yb = batches.next()
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    sync()
    windows = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(iters):
            step()
        sync()
        windows.append((time.perf_counter() - t0) / iters)
    sec = statistics.median(windows)
    return {"depth": depth, "residual": residual, "params": count_params(model), "batch": batch,
            "device": device, "ms_per_iter": 1000 * sec, "img_per_s": batch / sec,
            "windows_ms": [1000 * w for w in windows]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--depths", type=int, nargs="+", default=[20, 56, 110])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--plain", action="store_true", help="time the plain nets instead")
    p.add_argument("--out", help="write the results as JSON here")
    a = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {a.device}, batch {a.batch}")
    print(f"{'model':>12} {'params':>10} {'ms/iter':>9} {'img/s':>8}   (median of {a.repeats} windows of {a.iters})")
    rows = []
    for d in a.depths:
        r = time_depth(d, not a.plain, a.device, a.batch, a.warmup, a.iters, a.repeats)
        rows.append(r)
        name = f"{'plain' if a.plain else 'ResNet'}-{d}"
        print(f"{name:>12} {r['params']:>10,} {r['ms_per_iter']:>9.1f} {r['img_per_s']:>8.0f}", flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()

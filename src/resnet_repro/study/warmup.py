"""Compile every net of a study once, and time it: the compile caches filled, and timings to plan with."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..device import pick_device
from ..errors import ResnetReproError
from ..speed import measure
from .jobs import Job


def warm(jobs: list[Job], json_path: Path, *, ends_only: bool = False, warmup: int = 5, iters: int = 20,
         windows: int = 3, say=print) -> dict:
    """Compile and time each distinct net of ``jobs`` at its own settings, in priority order.

    Compilation fills inductor's on-disk caches, so the jobs that follow compile from cache. The
    result has the benchmark's JSON form (``rows`` with ``ours``), which ``run --timings`` reads;
    it is rewritten after every net, so a warm-up cut short still leaves what it measured.
    ``ends_only``: per variant, only the shallowest and deepest net (the rest is interpolated).
    """
    nets: dict[tuple[str, int], Job] = {}
    for j in jobs:
        nets.setdefault((j.variant, j.depth), j)
    if ends_only:
        keep = set()
        for v in {v for v, _ in nets}:
            depths = sorted(d for vv, d in nets if vv == v)
            keep |= {(v, depths[0]), (v, depths[-1])}
        nets = {k: j for k, j in nets.items() if k in keep}
    res = {"kind": "resnet-study warm", "batch": None, "rows": [], "device_name": None}
    for (variant, depth), job in nets.items():
        device = pick_device(job.cfg.trainer.device)
        res["device"] = str(device)
        res["device_name"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        if res["batch"] not in (None, job.batch):
            raise ResnetReproError("The study's jobs use different batch sizes; warm them up one batch at a time.")
        res["batch"] = job.batch
        t = job.cfg.trainer
        setting = {"precision": t.precision, "channels_last": t.channels_last, "compile": t.compile,
                   "cuda_graphs": t.cuda_graphs, "deterministic": t.deterministic}
        d = job.cfg.dataset  # random images of the dataset's shape: the speed does not depend on what they show
        c, size = (1, 28) if d.name == "fashion_mnist" else (3, 32)
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (max(20, iters) * job.batch, c, size, size), dtype=torch.uint8, generator=g)
        y = torch.randint(0, job.cfg.model.num_classes, (len(x),), generator=g)
        m = measure(variant, depth, device, x, y, batch=job.batch, setting=setting, warmup=warmup, iters=iters,
                    windows=windows, model_cfg=job.cfg.model, optimizer=job.cfg.optimizer)  # the job's own step
        res["rows"].append({"model": job.net, "variant": variant, "depth": depth, "ours": m})
        compiled = " (compilation included)" if m["setting"]["compile"] != "off" else ""
        say(f"warm: {job.net}: warm-up {m['warmup_s']:.1f} s{compiled}, then {m['img_per_s']:,.0f} img/s "
            f"({m['setting']}; cudagraph_skips {m['cudagraph_skips']})")
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(res, indent=2) + "\n")
    return res

"""Stacked runs in fp32 on the real CIFAR-10: seeds trained alone against the same seeds as one \
stack.

    python benchmarks/stacked_realdata.py --data /path/to/data \
                # ResNet-20, seeds 0-4, 200 iterations, CPU
    python benchmarks/stacked_realdata.py --data /path/to/data --device cuda --iterations 2000

In float64 a stacked run is its separate run to 1e-10 (tests/test_train_stack.py); in fp32 grouped
convolutions round differently, and at lr 0.1 rounding differences grow. This measures what that
does to the record: each seed's training-loss windows and final errors alone and stacked, the
largest differences, and the mean and spread over seeds of the final validation error. It prints
one JSON object (``--json FILE`` also writes it). Runs go to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from hydra import compose, initialize_config_dir

from resnet_repro.config import config_dir, to_config
from resnet_repro.training.train import train
from resnet_repro.training.train_stack import train_stack


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", required=True, help="folder holding cifar-10-batches-py/")
    p.add_argument("--device", default="cpu")
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--json")
    args = p.parse_args(argv)
    ov = [
        f"dataset.root={args.data}",
        "dataset.download=false",
        f"trainer.device={args.device}",
        "trainer.progress=false",
        f"model.depth={args.depth}",
        f"schedule.iterations={args.iterations}",
        f"trainer.log_every={max(args.iterations // 4, 1)}",
        f"trainer.eval_every={args.iterations}",
    ]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfgs = [to_config(compose("config", overrides=[*ov, f"seed={s}"]), ov) for s in args.seeds]
    tmp = Path(tempfile.mkdtemp(prefix="stacked_realdata-"))
    t0 = time.perf_counter()
    alone = [train(c, tmp / f"alone{s}") for c, s in zip(cfgs, args.seeds, strict=True)]
    t_alone = time.perf_counter() - t0
    t0 = time.perf_counter()
    stacked = train_stack(cfgs, [tmp / f"stacked{s}" for s in args.seeds])
    t_stacked = time.perf_counter() - t0
    windows = []
    for s in args.seeds:
        a, b = (pd.read_csv(tmp / f"{kind}{s}" / "metrics.csv") for kind in ("alone", "stacked"))
        windows.append(
            {
                "seed": s,
                "train_loss_alone": a["train_loss"].round(4).tolist(),
                "train_loss_stacked": b["train_loss"].round(4).tolist(),
                "max_train_loss_diff": float((a["train_loss"] - b["train_loss"]).abs().max()),
                "max_train_err_diff": float((a["train_err"] - b["train_err"]).abs().max()),
            }
        )
    err = {
        k: [r["final_val_err"] for r in runs]
        for k, runs in (("alone", alone), ("stacked", stacked))
    }
    out = {
        "setup": (
            f"ResNet-{args.depth}, {args.iterations} iterations, fp32, {args.device}, seeds "
            f"{args.seeds}"
        ),
        "final_val_err": err,
        "mean": {k: statistics.mean(v) for k, v in err.items()},
        "sd": {k: statistics.stdev(v) if len(v) > 1 else None for k, v in err.items()},
        "max_final_val_err_diff": max(
            abs(x - y) for x, y in zip(err["alone"], err["stacked"], strict=True)
        ),
        "windows": windows,
        "max_train_loss_diff": max(w["max_train_loss_diff"] for w in windows),
        "max_train_err_diff": max(w["max_train_err_diff"] for w in windows),
        "seconds": {"alone, one after another": t_alone, "stacked": t_stacked},
    }
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    sys.exit(main() and 0)

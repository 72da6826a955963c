"""Training throughput: the harness's fast path against the seeds' training loop, side by side.

    python benchmarks/throughput.py --data ../shared/data              # ResNet-20/56/110, plain and residual, batch 128
    python benchmarks/throughput.py --data ../shared/data --share 3    # also 3 runs sharing the device
    python benchmarks/throughput.py --device cpu --depths 20 --iters 10 --windows 3 --data ../shared/data

For every model it measures training images/s (the median of ``--windows`` timed windows of
``--iters`` steps, after ``--warmup`` steps) for:

- ``ours``: the harness's own training step (``resnet_repro.fastpath.TrainStep`` on the
  device-resident ``DeviceBatches``) at its fastest setting: the config defaults for the device
  (on CUDA: bf16, channels_last, fused SGD, torch.compile replayed as CUDA graphs);
- ``ours_fp32``: the same step in plain fp32 with no compile and no channels_last;
- ``baseline``: the loop of the seed notebooks: torchvision ``CIFAR10`` with ``RandomCrop(32, 4)``,
  ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize`` on the CPU, a ``DataLoader`` with
  ``num_workers=4``, shuffle and ``pin_memory``, an fp32 ``model.train()`` loop with
  ``zero_grad``/``backward``/``step`` and ``loss.item()`` every step; same model, same batch.

It prints a table (model, variant, ours img/s, baseline img/s, ratio), peak device memory, and the
projected wall time of the nine-run degradation study (64k iterations each), sequential and with
``--share`` k runs on the device at once, and writes the same as JSON (``--json``).
``--numerics N`` also trains ResNet-20 for N steps from one seed at fp32 and at the fast setting
and prints both loss curves.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from pathlib import Path

import torch

from resnet_repro.config import ModelConfig, OptimizerConfig, TrainerConfig
from resnet_repro.data.cifar import BASE_FOLDER, load_cifar10
from resnet_repro.data.pipeline import DeviceBatches, pixel_mean
from resnet_repro.fastpath import FastPath, TrainStep
from resnet_repro.models import build_model

STUDY = [("plain", d) for d in (20, 32, 44, 56)] + [("residual", d) for d in (20, 32, 44, 56, 110)]
STUDY_ITERATIONS = 64_000
FP32 = {"precision": "fp32", "compile": "off", "channels_last": False}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_windows(step_fn, device, batch: int, warmup: int, iters: int, windows: int,
                  timing: dict | None = None) -> float:
    """Median images/s over ``windows`` windows of ``iters`` calls, after ``warmup`` calls.

    ``timing`` (optional) receives ``warmup_s``, the time of the warm-up calls (compilation happens
    there), and ``t0``/``t1``, the wall-clock start and end of the timed windows.
    """
    t = time.perf_counter()
    for _ in range(warmup):
        step_fn()
    sync(device)
    if timing is not None:
        timing["warmup_s"] = time.perf_counter() - t
        timing["t0"] = time.time()
    rates = []
    for _ in range(windows):
        t0 = time.perf_counter()
        for _ in range(iters):
            step_fn()
        sync(device)
        rates.append(iters * batch / (time.perf_counter() - t0))
    if timing is not None:
        timing["t1"] = time.time()
    return statistics.median(rates)


def peak_memory_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


# --- ours ------------------------------------------------------------------------------------
def ours_step(variant: str, depth: int, device, root: Path, batch: int, setting: dict, seed: int = 0):
    """The harness's step on its device-resident pipeline, as a no-argument callable."""
    x, y, _ = load_cifar10(root, download=False, verify=False)
    torch.manual_seed(seed)
    t = TrainerConfig(**setting)
    o = OptimizerConfig()
    fast = FastPath.resolve(t, o, device)
    model = build_model(ModelConfig(depth=depth, n=(depth - 2) // 6, residual=variant == "residual"))
    model = model.to(device, memory_format=fast.memory_format).train()
    step = TrainStep(model, fast.optimizer(model.parameters(), o), fast)
    batches = DeviceBatches(x, y, batch, pixel_mean(x), device, seed=seed)
    wrong = torch.zeros((), device=device, dtype=torch.long)  # metrics stay on the device, as in training

    def fn():
        nonlocal wrong
        xb, yb = batches.next()
        loss, out = step(xb, yb)
        wrong += (out.argmax(1) != yb).sum()
        return loss

    return fn, fast


def measure_ours(variant, depth, device, root, args, setting: dict) -> dict:
    reset_peak(device)
    fn, fast = ours_step(variant, depth, device, root, args.batch, setting)
    timing: dict = {}
    rate = timed_windows(fn, device, args.batch, args.warmup, args.iters, args.windows, timing)
    return {"img_per_s": rate, "peak_mem_mb": peak_memory_mb(device), "setting": fast.describe(),
            "warmup_s": timing["warmup_s"]}


# --- the seeds' loop -------------------------------------------------------------------------
def seed_loader(root: Path, batch: int, device):
    import torchvision
    from torchvision import transforms

    class CIFAR10(torchvision.datasets.CIFAR10):
        # The harness verifies these files by content digest; the offline copy's pickles lack the
        # per-image filenames, so torchvision's file md5 check would refuse them.
        def _check_integrity(self) -> bool:
            return True

        def _load_meta(self) -> None:  # the class names only (torchvision also md5-checks this file)
            self.classes = [f"class{i}" for i in range(10)]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    tf = transforms.Compose([
        transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
        transforms.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    ])
    ds = CIFAR10(str(root), train=True, download=False, transform=tf)
    return torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=4,
                                       pin_memory=device.type == "cuda")


def measure_baseline(variant, depth, device, root, args) -> dict:
    reset_peak(device)
    torch.manual_seed(0)
    model = build_model(ModelConfig(depth=depth, n=(depth - 2) // 6, residual=variant == "residual")).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    criterion = torch.nn.CrossEntropyLoss()
    loader = seed_loader(root, args.batch, device)

    def batches():
        while True:  # epoch after epoch, as the seed notebooks' `for epoch ...: for x, y in loader`
            yield from loader

    it = batches()
    model.train()
    running = {"loss": 0.0, "n": 0}

    def fn():  # note: a timed window may cross an epoch end, where the loader restarts its workers
        inputs, targets = next(it)
        inputs, targets = inputs.to(device), targets.to(device)
        optimizer.zero_grad()
        loss = criterion(model(inputs), targets)
        loss.backward()
        optimizer.step()
        running["loss"] += loss.item()  # the progress print's read-back, every step
        running["n"] += 1

    rate = timed_windows(fn, device, args.batch, args.warmup, args.iters, args.windows)
    return {"img_per_s": rate, "peak_mem_mb": peak_memory_mb(device)}


# --- several runs sharing the device -----------------------------------------------------------
def _shared_worker(variant, depth, device_name, root, args_dict, setting, barrier) -> float:
    args = argparse.Namespace(**args_dict)
    device = torch.device(device_name)
    if device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.share))
    fn, _ = ours_step(variant, depth, device, Path(root), args.batch, setting)
    for _ in range(args.warmup):
        fn()
    sync(device)
    barrier.wait()  # all runs start their windows together
    timing: dict = {}
    timed_windows(fn, device, args.batch, 0, args.iters, args.windows, timing)
    return {"images": args.iters * args.windows * args.batch, "t0": timing["t0"], "t1": timing["t1"]}


def measure_shared(variant, depth, device, root, args, setting) -> dict:
    """Aggregate images/s of ``args.share`` processes each training the same net on the device."""
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(args.share)
        with ProcessPoolExecutor(args.share, mp_context=ctx) as pool:
            futs = [pool.submit(_shared_worker, variant, depth, str(device), str(root), vars(args), setting, barrier)
                    for _ in range(args.share)]
            parts = [f.result() for f in futs]
    span = max(p["t1"] for p in parts) - min(p["t0"] for p in parts)
    return {"runs": args.share, "img_per_s_each": [p["images"] / (p["t1"] - p["t0"]) for p in parts],
            "img_per_s_total": sum(p["images"] for p in parts) / span, "cuda_mps": cuda_mps_active()}


def cuda_mps_active() -> bool:
    """Whether a CUDA MPS control daemon is reachable (its pipe directory exists)."""
    pipe = os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps")
    return Path(pipe, "control").exists()


# --- numerics --------------------------------------------------------------------------------
def loss_curve(device, root, args, setting: dict, steps: int, every: int) -> list[tuple[int, float]]:
    fn, _ = ours_step("residual", 20, device, root, args.batch, setting, seed=0)
    curve, acc = [], 0.0
    for i in range(1, steps + 1):
        acc += fn().float().item()
        if i % every == 0:
            curve.append((i, acc / every))
            acc = 0.0
    return curve


# --- projection ------------------------------------------------------------------------------
def seconds_per_iteration(rows: list[dict], variant: str, depth: int, batch: int) -> tuple[float, bool]:
    """Measured, or linear in depth between (or scaled from) the measured depths of the variant."""
    pts = sorted((r["depth"], batch / r["ours"]["img_per_s"]) for r in rows if r["variant"] == variant)
    if not pts:
        pts = sorted((r["depth"], batch / r["ours"]["img_per_s"]) for r in rows)
    exact = dict(pts)
    if depth in exact:
        return exact[depth], False
    if len(pts) == 1:
        return pts[0][1] * depth / pts[0][0], True
    if depth < pts[0][0]:
        lo, hi = pts[0], pts[1]
    elif depth > pts[-1][0]:
        lo, hi = pts[-2], pts[-1]
    else:
        lo = max((p for p in pts if p[0] < depth), key=lambda p: p[0])
        hi = min((p for p in pts if p[0] > depth), key=lambda p: p[0])
    return lo[1] + (hi[1] - lo[1]) * (depth - lo[0]) / (hi[0] - lo[0]), True


def project_study(rows, batch: int, shared: dict | None, single_rate: float | None) -> dict:
    """Minutes of the nine runs: training steps, plus each run's start-up cost (the largest
    measured warm-up, where compilation happens). Evaluation and checkpoints are not included."""
    per_run, estimated = {}, []
    setup_s = max((r["ours"].get("warmup_s", 0.0) for r in rows), default=0.0)
    for variant, depth in STUDY:
        s, est = seconds_per_iteration(rows, variant, depth, batch)
        per_run[f"{variant}-{depth}"] = (STUDY_ITERATIONS * s + setup_s) / 60
        if est:
            estimated.append(f"{variant}-{depth}")
    sequential = sum(per_run.values())
    out = {"iterations_per_run": STUDY_ITERATIONS, "minutes_per_run": per_run, "estimated_runs": estimated,
           "setup_s_per_run": setup_s, "sequential_min": sequential}
    if shared and single_rate:
        speedup = shared["img_per_s_total"] / single_rate
        out.update(shared_runs=shared["runs"], shared_speedup=speedup, shared_min=sequential / speedup)
    return out


# --- data --------------------------------------------------------------------------------------
def data_root(args) -> Path:
    if args.data:
        root = Path(args.data)
        if not (root / BASE_FOLDER / "data_batch_1").is_file():
            sys.exit(f"throughput: error: {root} has no {BASE_FOLDER}/data_batch_1. Point --data at a folder "
                     f"holding CIFAR-10 (e.g. ../shared/data), or leave it out to use synthetic files.")
        return root
    import pickle

    import numpy as np

    from resnet_repro.data.synthetic import make_synthetic

    root = Path(tempfile.mkdtemp(prefix="resnet_bench_"))
    (root / BASE_FOLDER).mkdir()
    for i in range(1, 6):
        xs, ys = make_synthetic(args.synthetic_per_batch, seed=i)
        data, labels = xs.reshape(len(xs), -1).numpy().astype(np.uint8), ys.tolist()
        # The official (Python 2) pickles' keys load as bytes or str depending on the reader's
        # encoding: the harness reads bytes keys, torchvision str keys. Give both (stored once).
        entry = {b"data": data, b"labels": labels, "data": data, "labels": labels}
        with open(root / BASE_FOLDER / f"data_batch_{i}", "wb") as f:
            pickle.dump(entry, f)
    return root


# --- main ------------------------------------------------------------------------------------
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda, cuda:N")
    ap.add_argument("--depths", type=int, nargs="+", default=[20, 56, 110])
    ap.add_argument("--variants", nargs="+", default=["residual", "plain"], choices=["residual", "plain"])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=30, help="untimed steps first (compile happens here)")
    ap.add_argument("--iters", type=int, default=50, help="steps per timed window")
    ap.add_argument("--windows", type=int, default=5, help="timed windows; the median is reported")
    ap.add_argument("--data", help="folder holding cifar-10-batches-py (default: synthetic files in CIFAR's layout)")
    ap.add_argument("--synthetic-per-batch", type=int, default=2000, help=argparse.SUPPRESS)
    ap.add_argument("--precision", default="auto", help="ours' fast setting: auto | fp32 | bf16 | fp16")
    ap.add_argument("--compile", default="auto", help="ours' fast setting: auto | off | default | max-autotune")
    ap.add_argument("--no-baseline", action="store_true", help="skip the seeds' loop")
    ap.add_argument("--share", type=int, default=1, help="also time k runs of ResNet-56 sharing the device")
    ap.add_argument("--numerics", type=int, default=0, help="also train ResNet-20 N steps at fp32 and fast")
    ap.add_argument("--numerics-every", type=int, default=50)
    ap.add_argument("--json", help="where to write the JSON (default runs/bench/throughput-<time>.json)")
    args = ap.parse_args(argv)
    # the seeds' 4 workers, whatever the core count: no warning about it on small machines
    warnings.filterwarnings("ignore", message="This DataLoader will create")

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    root = data_root(args)
    fast_setting = {"precision": args.precision, "compile": args.compile}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    print(f"device: {device} ({name}), torch {torch.__version__}, batch {args.batch}, "
          f"{args.windows} windows of {args.iters} steps after {args.warmup} warm-up steps", flush=True)

    rows = []
    for depth in args.depths:
        for variant in args.variants:
            row = {"model": f"ResNet-{depth}" if variant == "residual" else f"plain-{depth}",
                   "variant": variant, "depth": depth,
                   "ours": measure_ours(variant, depth, device, root, args, fast_setting),
                   "ours_fp32": measure_ours(variant, depth, device, root, args, FP32)}
            if not args.no_baseline:
                row["baseline"] = measure_baseline(variant, depth, device, root, args)
                row["ratio"] = row["ours"]["img_per_s"] / row["baseline"]["img_per_s"]
            rows.append(row)
            print(format_row(row), flush=True)

    shared = single = None
    if args.share > 1:
        shared = measure_shared("residual", 56, device, root, args, fast_setting)
        single = next((r["ours"]["img_per_s"] for r in rows if r["variant"] == "residual" and r["depth"] == 56), None)
        if single is None:
            single = measure_ours("residual", 56, device, root, args, fast_setting)["img_per_s"]
    result = {
        "device": str(device), "device_name": name, "torch": torch.__version__, "batch": args.batch,
        "warmup": args.warmup, "iters": args.iters, "windows": args.windows, "data": args.data or "synthetic",
        "cpu_count": os.cpu_count(), "rows": rows, "shared": shared,
        "projection": project_study(rows, args.batch, shared, single),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if args.numerics:
        every = min(args.numerics_every, args.numerics)
        result["numerics"] = {
            "fp32": loss_curve(device, root, args, FP32, args.numerics, every),
            "fast": loss_curve(device, root, args, fast_setting, args.numerics, every),
            "fast_setting": FastPath.resolve(TrainerConfig(**fast_setting), OptimizerConfig(), device).describe(),
        }
    print_report(result)
    out = Path(args.json) if args.json else Path("runs/bench") / f"throughput-{datetime.now():%Y-%m-%d_%H-%M-%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return result


def _fmt(v, spec=",.0f") -> str:
    return "—" if v is None else format(v, spec)


HEADER = (f"{'model':<12} {'ours img/s':>11} {'fp32 img/s':>11} {'baseline img/s':>15} {'ratio':>7} "
          f"{'peak MiB ours':>14} {'peak MiB base':>14}")


def format_row(r: dict) -> str:
    b = r.get("baseline", {})
    return (f"{r['model']:<12} {_fmt(r['ours']['img_per_s']):>11} {_fmt(r['ours_fp32']['img_per_s']):>11} "
            f"{_fmt(b.get('img_per_s')):>15} {_fmt(r.get('ratio'), '.2f'):>7} "
            f"{_fmt(r['ours']['peak_mem_mb']):>14} {_fmt(b.get('peak_mem_mb')):>14}")


def print_report(res: dict) -> None:
    rows = res["rows"]
    print()
    print(f"Training throughput on {res['device_name']} ({res['device']}), batch {res['batch']}; "
          f"ours = {rows[0]['ours']['setting'] if rows else '-'}")
    print(HEADER)
    for r in rows:
        print(format_row(r))
    p = res["projection"]
    est = f" (estimated from the measured depths: {', '.join(p['estimated_runs'])})" if p["estimated_runs"] else ""
    print(f"\nProjected nine-run degradation study, {p['iterations_per_run']:,} iterations per run, ours "
          f"(plus {p['setup_s_per_run']:.0f} s of warm-up/compilation per run; evals not included):")
    print(f"  sequential: {p['sequential_min']:,.1f} min{est}")
    if "shared_min" in p:
        s = res["shared"]
        print(f"  {s['runs']} runs sharing the device: {p['shared_min']:,.1f} min "
              f"(aggregate {s['img_per_s_total']:,.0f} img/s = {p['shared_speedup']:.2f}x one run; CUDA MPS "
              f"{'on' if s['cuda_mps'] else 'off'})")
    if "numerics" in res:
        n = res["numerics"]
        print(f"\nNumerics, ResNet-20 from seed 0: mean training loss per window, fp32 vs {n['fast_setting']}")
        print(f"{'iter':>6} {'fp32':>9} {'fast':>9} {'diff':>9}")
        for (i, a), (_, b) in zip(n["fp32"], n["fast"], strict=True):
            print(f"{i:>6} {a:>9.4f} {b:>9.4f} {b - a:>+9.4f}")


if __name__ == "__main__":
    main()

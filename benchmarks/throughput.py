"""Training throughput: the harness's fast path against a standard torchvision DataLoader \
training loop, side by side.

    python benchmarks/throughput.py --data /path/to/data              # ResNet-20/56/110, plain and
                                                                      # residual, batch 128
    python benchmarks/throughput.py --data /path/to/data --share 1 2 4  # also k ResNet-20 runs
                                                                        # sharing the device
    python benchmarks/throughput.py --device cpu --depths 20 --iters 10 --windows 3 \\
        --data /path/to/data

For every model it measures training images/s (the median of ``--windows`` timed windows of
``--iters`` steps, after ``--warmup`` steps; the device is synchronised before every clock read):

- ``ours``: the harness's own training step (``resnet_repro.training.step.TrainStep`` on the
  device-resident ``DeviceBatches``) on the fast path, ``trainer=fast``'s settings unless
  ``--precision``/``--compile``/``--channels-last`` say otherwise (bf16, channels_last,
  torch.compile; on CUDA also fused SGD and CUDA graphs);
- ``ours_eager``: the same precision and layout with no compile (what compile and graphs add);
- ``ours_fp32``: the same step in IEEE fp32 (no TF32) with no compile and no channels_last (a
  run's default, the paper's precision);
- ``baseline``: a standard torchvision DataLoader training loop (PIL transforms, fp32): torchvision
  ``CIFAR10`` with ``RandomCrop(32, 4)``, ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize`` on
  the CPU, a ``DataLoader`` with ``num_workers=4``, shuffle and ``pin_memory``, an fp32
  ``model.train()`` loop with ``zero_grad``/``backward``/``step`` and ``loss.item()`` every step;
  same model, same batch, torch's default numerics (TF32 convolutions on CUDA) and cuDNN autotuning.
  No timed window crosses an epoch end (where the loader restarts its workers): a window that would
  is started on a fresh epoch.

Each ``ours`` measurement also records its warm-up seconds (compilation) and ``cudagraph_skips``
(torch's count of CUDA-graph fallbacks; 0 when graphs are really used). It prints a table, peak
device memory and the projected wall time of the nine-run degradation study (64k iterations each),
sequential and with k runs sharing the device (``--share 1 2 4``: aggregate images/s of k
processes each training ResNet-20), and writes the same as JSON (``--json``). ``--numerics N`` also
trains ResNet-20 for N steps from one seed at fp32 and at the fast setting and prints both loss
curves.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
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
from resnet_repro.models import build_model
from resnet_repro.training.device import device_sync
from resnet_repro.training.speed import (
    Timings,
    harness_step,
    measure,
    peak_memory_mb,
    reset_peak_memory,
    timed_windows,
)
from resnet_repro.training.step import FastPath, cudagraph_skips

STUDY = [("plain", d) for d in (20, 32, 44, 56)] + [("residual", d) for d in (20, 32, 44, 56, 110)]
STUDY_ITERATIONS = 64_000
EAGER = {"compile": "off"}  # the fast setting's precision and layout, no compile
FP32 = {"precision": "fp32", "compile": "off", "channels_last": False}
SHARE_DEPTH = 20
REAL_PER_BATCH = 10_000  # CIFAR-10's five training batches: synthetic data of the real size


def load_train(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    x, y, _ = load_cifar10(root, download=False, verify=False)
    return x, y


def measure_ours(variant, depth, device, root, args, setting: dict) -> dict:
    x, y = load_train(root)
    return measure(
        variant,
        depth,
        device,
        x,
        y,
        batch=args.batch,
        setting=setting,
        warmup=args.warmup,
        iters=args.iters,
        windows=args.windows,
    )


# --- the DataLoader loop -------------------------------------------------------------------------
def seed_loader(root: Path, batch: int, device):
    import torchvision
    from torchvision import transforms

    class CIFAR10(torchvision.datasets.CIFAR10):
        # The harness verifies these files by content digest; torchvision's file md5 check would
        # refuse a pixel-exact folder whose pickles lack the per-image filenames.
        def _check_integrity(self) -> bool:
            return True

        def _load_meta(
            self,
        ) -> None:  # the class names only (torchvision also md5-checks this file)
            self.classes = [f"class{i}" for i in range(10)]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    tf = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
        ]
    )
    ds = CIFAR10(str(root), train=True, download=False, transform=tf)
    return torch.utils.data.DataLoader(
        ds, batch_size=batch, shuffle=True, num_workers=4, pin_memory=device.type == "cuda"
    )


class EpochBatches:
    """The DataLoader baseline, epoch after epoch (``for epoch ...: for x, y in loader``).

    ``fresh_epoch_if_short(n)`` starts a new epoch, and takes its first batch, when fewer than ``n``
    batches are left in this one: called before a timed window, it keeps the loader's worker
    restart at an epoch end out of the window.
    """

    def __init__(self, loader):
        self.loader, self.it, self.left, self.head = loader, None, 0, None

    def _new_epoch(self) -> None:
        self.it, self.left = iter(self.loader), len(self.loader)
        self.head = next(self.it)  # the workers are up once the first batch is here

    def fresh_epoch_if_short(self, n: int) -> None:
        if n > len(self.loader):
            sys.exit(
                f"throughput: error: --iters {n} is longer than an epoch of the DataLoader "
                f"baseline ({len(self.loader)} steps), so a timed window would cross an epoch end. "
                f"Use --iters <= {len(self.loader)} or more data."
            )
        if self.left < n:
            self._new_epoch()

    def next(self):
        if self.left == 0:
            self._new_epoch()
        batch = self.head if self.head is not None else next(self.it)
        self.head = None
        self.left -= 1
        return batch


def seeds_numerics() -> None:
    """torch's default backend flags, as a standard training script runs (plus cuDNN autotuning)."""
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = False


def measure_baseline(variant, depth, device, root, args) -> dict:
    reset_peak_memory(device)
    seeds_numerics()
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(depth=depth, n=(depth - 2) // 6, residual=variant == "residual")
    ).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    criterion = torch.nn.CrossEntropyLoss()
    batches = EpochBatches(seed_loader(root, args.batch, device))
    model.train()
    running = {"loss": 0.0, "n": 0}

    def fn():
        inputs, targets = batches.next()
        inputs, targets = inputs.to(device), targets.to(device)
        optimizer.zero_grad()
        loss = criterion(model(inputs), targets)
        loss.backward()
        optimizer.step()
        running["loss"] += loss.item()  # the progress print's read-back, every step
        running["n"] += 1

    rate = timed_windows(
        fn,
        device,
        args.batch,
        args.warmup,
        args.iters,
        args.windows,
        before_window=batches.fresh_epoch_if_short,
    )
    return {"img_per_s": rate, "peak_mem_mb": peak_memory_mb(device)}


# --- several runs sharing the device -----------------------------------------------------------
def _shared_worker(variant, depth, device_name, root, args_dict, setting, runs, barrier) -> dict:
    args = argparse.Namespace(**args_dict)
    device = torch.device(device_name)
    if device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // runs))
    x, y = load_train(Path(root))
    skips = cudagraph_skips()
    fn, _ = harness_step(
        variant, depth, device, x, y, args.batch, setting
    )  # sets this process's backend flags
    for _ in range(args.warmup):  # compilation, each run on its own
        fn()
    device_sync(device)
    barrier.wait()  # all runs start their windows together
    timing: dict = {}
    timed_windows(fn, device, args.batch, 0, args.iters, args.windows, timing)
    return {
        "images": args.iters * args.windows * args.batch,
        "t0": timing["t0"],
        "t1": timing["t1"],
        "cudagraph_skips": cudagraph_skips() - skips,
    }


def measure_shared(runs: int, variant, depth, device, root, args, setting) -> dict:
    """Aggregate images/s of ``runs`` processes, each training the same net on the device."""
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(runs)
        with ProcessPoolExecutor(runs, mp_context=ctx) as pool:
            futs = [
                pool.submit(
                    _shared_worker,
                    variant,
                    depth,
                    str(device),
                    str(root),
                    vars(args),
                    setting,
                    runs,
                    barrier,
                )
                for _ in range(runs)
            ]
            parts = [f.result() for f in futs]
    span = max(p["t1"] for p in parts) - min(p["t0"] for p in parts)
    return {
        "runs": runs,
        "model": f"ResNet-{depth}" if variant == "residual" else f"plain-{depth}",
        "img_per_s_each": [p["images"] / (p["t1"] - p["t0"]) for p in parts],
        "img_per_s_total": sum(p["images"] for p in parts) / span,
        "cuda_mps": cuda_mps_active(),
        "cudagraph_skips": sum(p["cudagraph_skips"] for p in parts),
    }


def measure_sharing(ks: list[int], device, root, args, setting) -> list[dict]:
    """k = each of ``ks`` ResNet-20 runs at once; each entry also holds the one-run rate measured
    the same way (``img_per_s_single``), so the speed-up compares like with like."""
    ks = sorted(set(ks) | {1})
    res = {k: measure_shared(k, "residual", SHARE_DEPTH, device, root, args, setting) for k in ks}
    single = res[1]["img_per_s_total"]
    for r in res.values():
        r["img_per_s_single"] = single
        r["speedup"] = r["img_per_s_total"] / single
    return [res[k] for k in ks]


def cuda_mps_active() -> bool:
    """Whether a CUDA MPS control daemon is reachable (its pipe directory exists)."""
    pipe = os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps")
    return Path(pipe, "control").exists()


# --- numerics --------------------------------------------------------------------------------
def loss_curve(
    device, root, args, setting: dict, steps: int, every: int
) -> list[tuple[int, float]]:
    x, y = load_train(root)
    fn, _ = harness_step("residual", 20, device, x, y, args.batch, setting, seed=0)
    curve, acc = [], 0.0
    for i in range(1, steps + 1):
        acc += fn().float().item()
        if i % every == 0:
            curve.append((i, acc / every))
            acc = 0.0
    return curve


# --- projection ------------------------------------------------------------------------------
def project_study(result: dict) -> dict:
    """Minutes of the nine runs: training steps, plus each run's start-up cost (its warm-up, where
    compilation happens, linear in depth between the measured nets). Evaluation and checkpoints are
    not included."""
    timings = Timings.from_result(result)
    per_run, estimated = {}, []
    for variant, depth in STUDY:
        s, est = timings.seconds_per_iteration(variant, depth)
        per_run[f"{variant}-{depth}"] = (
            STUDY_ITERATIONS * s + timings.setup_seconds(variant, depth)
        ) / 60
        if est:
            estimated.append(f"{variant}-{depth}")
    sequential = sum(per_run.values())
    out = {
        "iterations_per_run": STUDY_ITERATIONS,
        "minutes_per_run": per_run,
        "estimated_runs": estimated,
        "sequential_min": sequential,
    }
    k = timings.best_parallel()
    if k > 1:
        out.update(
            shared_runs=k,
            shared_speedup=timings.speedup(k),
            shared_min=sequential / timings.speedup(k),
        )
    return out


# --- data --------------------------------------------------------------------------------------
def data_root(args) -> Path:
    if args.data:
        root = Path(args.data)
        if not (root / BASE_FOLDER / "data_batch_1").is_file():
            sys.exit(
                f"throughput: error: {root} has no {BASE_FOLDER}/data_batch_1. Point --data at a "
                f"folder holding CIFAR-10 (e.g. /path/to/data), or leave it out to use synthetic "
                f"files."
            )
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
    ap.add_argument(
        "--variants", nargs="+", default=["residual", "plain"], choices=["residual", "plain"]
    )
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument(
        "--warmup", type=int, default=30, help="untimed steps first (compile happens here)"
    )
    ap.add_argument("--iters", type=int, default=50, help="steps per timed window")
    ap.add_argument("--windows", type=int, default=5, help="timed windows; the median is reported")
    ap.add_argument(
        "--data",
        help="folder holding cifar-10-batches-py (default: synthetic files of CIFAR-10's "
        "size and layout)",
    )
    ap.add_argument(
        "--synthetic-per-batch", type=int, default=REAL_PER_BATCH, help=argparse.SUPPRESS
    )
    ap.add_argument(
        "--precision",
        default="bf16",
        help=(
            "ours' precision: bf16 (trainer=fast's, default) | fp16 | fp32 | auto (a run's default)"
        ),
    )
    ap.add_argument(
        "--compile",
        default="default",
        help=(
            "ours' compile mode: default (trainer=fast's) | max-autotune | off | auto (a run's "
            "default)"
        ),
    )
    ap.add_argument(
        "--channels-last",
        default="on",
        choices=["auto", "on", "off"],
        help="ours' memory format: on (trainer=fast's, default) | off | auto (a run's default)",
    )
    ap.add_argument("--no-eager", action="store_true", help="skip ours without compile")
    ap.add_argument("--no-fp32", action="store_true", help="skip ours in plain fp32")
    ap.add_argument("--no-baseline", action="store_true", help="skip the DataLoader baseline")
    ap.add_argument(
        "--share",
        type=int,
        nargs="+",
        default=[1],
        help="also time k ResNet-20 runs sharing the device, for each k given (e.g. 1 2 4)",
    )
    ap.add_argument(
        "--numerics", type=int, default=0, help="also train ResNet-20 N steps at fp32 and fast"
    )
    ap.add_argument("--numerics-every", type=int, default=50)
    ap.add_argument(
        "--json", help="where to write the JSON (default runs/bench/throughput-<time>.json)"
    )
    args = ap.parse_args(argv)
    # the baseline's 4 workers, whatever the core count: no warning about it on small machines
    warnings.filterwarnings("ignore", message="This DataLoader will create")

    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else "cpu"
        if args.device == "auto"
        else args.device
    )
    root = data_root(args)
    fast_setting = {"precision": args.precision, "compile": args.compile}
    if args.channels_last != "auto":
        fast_setting["channels_last"] = args.channels_last == "on"
    settings = {"ours": fast_setting}
    if not args.no_eager:
        settings["ours_eager"] = {**fast_setting, **EAGER}
    if not args.no_fp32:
        settings["ours_fp32"] = FP32
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else (platform.processor() or platform.machine())
    )
    print(
        f"device: {device} ({name}), torch {torch.__version__}, batch {args.batch}, "
        f"{args.windows} windows of {args.iters} steps after {args.warmup} warm-up steps",
        flush=True,
    )
    print(HEADER, flush=True)

    out = (
        Path(args.json)
        if args.json
        else Path("runs/bench") / f"throughput-{datetime.now():%Y-%m-%d_%H-%M-%S}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result = {
        "device": str(device),
        "device_name": name,
        "torch": torch.__version__,
        "batch": args.batch,
        "warmup": args.warmup,
        "iters": args.iters,
        "windows": args.windows,
        "data": args.data or "synthetic",
        "cpu_count": os.cpu_count(),
        "partial": True,
        "rows": [],
        "shared": None,
    }
    rows = result["rows"]
    for depth in args.depths:
        for variant in args.variants:
            row = {
                "model": f"ResNet-{depth}" if variant == "residual" else f"plain-{depth}",
                "variant": variant,
                "depth": depth,
            }
            for key, setting in settings.items():
                row[key] = measure_ours(variant, depth, device, root, args, setting)
            if not args.no_baseline:
                row["baseline"] = measure_baseline(variant, depth, device, root, args)
                row["ratio"] = row["ours"]["img_per_s"] / row["baseline"]["img_per_s"]
            rows.append(row)
            print(format_row(row), flush=True)
            out.write_text(
                json.dumps(result, indent=2) + "\n"
            )  # a run cut short keeps what it measured

    if len(set(args.share) | {1}) > 1:
        result["shared"] = measure_sharing(args.share, device, root, args, fast_setting)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["projection"] = project_study(result)
    if args.numerics:
        every = min(args.numerics_every, args.numerics)
        result["numerics"] = {
            "fp32": loss_curve(device, root, args, FP32, args.numerics, every),
            "fast": loss_curve(device, root, args, fast_setting, args.numerics, every),
            "fast_setting": FastPath.resolve(
                TrainerConfig(**fast_setting), OptimizerConfig(), device
            ).describe(),
        }
    result["cudagraph_problems"] = cudagraph_problems(result)
    result["bench_s"] = time.perf_counter() - started
    result["partial"] = False
    print_report(result)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return result


def cudagraph_problems(res: dict) -> list[str]:
    """Measurements that claim CUDA graphs but fell back from them (torch's cudagraph_skips > 0)."""
    bad = [
        f"{r['model']} {k}: {r[k]['cudagraph_skips']} skips"
        for r in res["rows"]
        for k in r
        if isinstance(r[k], dict)
        and r[k].get("setting", {}).get("cuda_graphs")
        and r[k]["cudagraph_skips"]
    ]
    graphs = res["rows"] and res["rows"][0]["ours"]["setting"]["cuda_graphs"]
    bad += [
        f"{s['runs']} shared runs: {s['cudagraph_skips']} skips"
        for s in res["shared"] or []
        if graphs and s["cudagraph_skips"]
    ]
    return bad


def _fmt(v, spec=",.0f") -> str:
    return "—" if v is None else format(v, spec)


HEADER = (
    f"{'model':<12} {'ours img/s':>11} {'eager img/s':>12} {'fp32 img/s':>11} "
    f"{'baseline img/s':>15} {'ratio':>7} {'warm-up s':>10} {'peak MiB ours':>14} "
    f"{'peak MiB base':>14}"
)


def format_row(r: dict) -> str:
    b = r.get("baseline", {})
    return (
        f"{r['model']:<12} {_fmt(r['ours']['img_per_s']):>11} "
        f"{_fmt(r.get('ours_eager', {}).get('img_per_s')):>12} "
        f"{_fmt(r.get('ours_fp32', {}).get('img_per_s')):>11} {_fmt(b.get('img_per_s')):>15} "
        f"{_fmt(r.get('ratio'), '.2f'):>7} {_fmt(r['ours']['warmup_s'], '.1f'):>10} "
        f"{_fmt(r['ours']['peak_mem_mb']):>14} {_fmt(b.get('peak_mem_mb')):>14}"
    )


def print_report(res: dict) -> None:
    rows = res["rows"]
    print()
    print(
        f"Training throughput on {res['device_name']} ({res['device']}), batch {res['batch']}; "
        f"ours = {rows[0]['ours']['setting'] if rows else '-'}"
    )
    print(HEADER)
    for r in rows:
        print(format_row(r))
    if res["shared"]:
        print(
            f"\nResNet-20 runs sharing the device (aggregate images/s; CUDA MPS "
            f"{'on' if res['shared'][0]['cuda_mps'] else 'off'}):"
        )
        for s in res["shared"]:
            print(
                f"  k={s['runs']}: {s['img_per_s_total']:,.0f} img/s = {s['speedup']:.2f}x one run"
            )
    p = res["projection"]
    est = (
        f" (estimated from the measured depths: {', '.join(p['estimated_runs'])})"
        if p["estimated_runs"]
        else ""
    )
    print(
        f"\nProjected nine-run degradation study, {p['iterations_per_run']:,} iterations per run, "
        f"ours (plus each run's warm-up and compilation; evals not included):"
    )
    print(f"  sequential: {p['sequential_min']:,.1f} min{est}")
    if "shared_min" in p:
        print(
            f"  {p['shared_runs']} runs sharing the device: {p['shared_min']:,.1f} min "
            f"({p['shared_speedup']:.2f}x one run's throughput, measured on ResNet-20)"
        )
    skips = [r["ours"]["cudagraph_skips"] for r in rows]
    print(
        f"\nCUDA graphs: {'on' if rows and rows[0]['ours']['setting']['cuda_graphs'] else 'off'}; "
        f"cudagraph_skips per net: {skips}"
    )
    for problem in res["cudagraph_problems"]:
        print(
            f"WARNING: CUDA graphs were skipped: {problem} (torch logs why with "
            f"TORCH_LOGS=perf_hints)"
        )
    if "numerics" in res:
        n = res["numerics"]
        print(
            f"\nNumerics, ResNet-20 from seed 0: mean training loss per window, fp32 vs "
            f"{n['fast_setting']}"
        )
        print(f"{'iter':>6} {'fp32':>9} {'fast':>9} {'diff':>9}")
        for (i, a), (_, b) in zip(n["fp32"], n["fast"], strict=True):
            print(f"{i:>6} {a:>9.4f} {b:>9.4f} {b - a:>+9.4f}")


if __name__ == "__main__":
    try:
        main()
    except (
        KeyboardInterrupt
    ):  # e.g. a time limit's SIGINT: the JSON holds every net measured so far
        print("throughput: interrupted; the JSON keeps the nets measured before", file=sys.stderr)
        sys.exit(130)

"""Shared test helpers: plain functions and constants that several test modules import.

The fixtures live in conftest.py (pytest finds them there without an import); everything a test
module imports by name lives here, so that no test module imports another. conftest.py imports this
module, so the project's own modules (and torch, Hydra with them) are imported inside the helpers
that use them: a pytest run starts without them, as it did before.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
# The one wall-clock bound on a test's subprocess, 30 minutes: a slow or loaded machine makes the
# suite slower, never red; only a hang fails.
HANG_LIMIT_S = 1800


# --- the command line ----------------------------------------------------------------------------
def run_cli(
    *args: str, cwd: Path, timeout: int = HANG_LIMIT_S, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run ``python -m resnet_repro.cli`` (``resnet-train``) with Hydra overrides; progress bars
    off."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", "resnet_repro.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


# ResNet-20 for 200 iterations on the real data, on the CPU (with dataset.root): conftest.py's run
REAL_200_ARGS = (
    "dataset.download=false",
    "trainer.device=cpu",
    "trainer.progress=false",
    "schedule.iterations=200",
    "trainer.log_every=50",
    "trainer.eval_every=200",
)


# --- configs and training ------------------------------------------------------------------------
def cfg_of(*overrides):
    """The project's config composed with ``overrides``, as the command line would give it."""
    from hydra import compose, initialize_config_dir

    from resnet_repro.config import config_dir, to_config

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return to_config(compose("config", overrides=list(overrides)), overrides)


def smoke_cfg(*overrides):
    """The smoke preset (progress bars off) with ``overrides``."""
    from hydra import compose, initialize_config_dir

    from resnet_repro.config import config_dir, to_config

    ov = ["experiment=smoke", "trainer.progress=false", *overrides]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return to_config(compose("config", overrides=ov), ov)


def interrupt_after(monkeypatch, calls):
    """Raise KeyboardInterrupt when training asks for batch ``calls + 1`` (as Ctrl-C would)."""
    from resnet_repro.data.pipeline import DeviceBatches

    real = DeviceBatches.next
    count = {"n": 0}

    def next_(self):
        count["n"] += 1
        if count["n"] > calls:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(DeviceBatches, "next", next_)


# --- a training process to kill ------------------------------------------------------------------
RUN_ARGS = (
    "experiment=smoke",
    "trainer.progress=false",
    "trainer.deterministic=true",
    "schedule.iterations=60",
    "schedule.milestones=[30,45]",
    "trainer.log_every=5",
    "trainer.eval_every=5",
    "diagnostics.layer_stats=eval",
)
# The child: the real CLI, with checkpoint fsyncs slowed down so that a kill can land mid-write.
CHILD = """
import os, sys, time
real_fsync = os.fsync
def fsync(fd):
    if ".checkpoint.pt." in os.readlink(f"/proc/self/fd/{fd}"):
        time.sleep(0.15)
    return real_fsync(fd)
os.fsync = fsync
sys.argv = ["resnet-train", *sys.argv[1:]]
from resnet_repro.cli.train import main
main()
"""


def start(run: Path, *extra: str) -> subprocess.Popen:
    """Start the CLI child on RUN_ARGS (plus ``extra``) with its run directory at ``run``."""
    # its own W&B service: not one an in-process test started (a killed child's run would stay open)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_SERVICE")}
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, *RUN_ARGS, f"hydra.run.dir={run}", *extra],
        cwd=run.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(cond, timeout=HANG_LIMIT_S) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.005)
    return False


class Evil:
    """Unpickling this would write a file: a checkpoint must never run code."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (Path.write_text, (Path(self.target), "pwned"))


# --- dataset files in the official layouts -------------------------------------------------------
def write_cifar_pickles(
    root: Path, per_file: int = 20, *, test: bool = False, seed: int = 0, filenames: bool = True
) -> Path:
    """Write small batches in the official python-pickle layout under root/cifar-10-batches-py."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = [f"data_batch_{i}" for i in range(1, 6)] + (["test_batch"] if test else [])
    for name in names:
        entry = {
            b"batch_label": name.encode(),
            b"labels": rng.integers(0, 10, per_file).tolist(),
            b"data": rng.integers(0, 256, (per_file, 3072), dtype=np.uint8),
        }
        if filenames:
            entry[b"filenames"] = [f"img_{i}.png".encode() for i in range(per_file)]
        with open(base / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    return base


def write_idx(root, n_train=30, n_test=10, seed=0):
    """Fashion-MNIST-layout gzip'd IDX files under root/FashionMNIST/raw."""
    from resnet_repro.data.fashion_mnist import FILES, RAW_FOLDER

    raw = root / RAW_FOLDER
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        img, lbl = FILES[split]
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        header = (2051).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (n, 28, 28))
        (raw / img).write_bytes(gzip.compress(header + x.tobytes()))
        (raw / lbl).write_bytes(
            gzip.compress((2049).to_bytes(4, "big") + n.to_bytes(4, "big") + y.tobytes())
        )
    return raw


def write_cifar100(root, n=20, labels=None):
    """CIFAR-100 pickles (train, test) in the official layout under root/cifar-100-python."""
    from resnet_repro.data.cifar import CIFAR100_FOLDER

    base = root / CIFAR100_FOLDER
    base.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in ("train", "test"):
        fine = labels if labels is not None else rng.integers(0, 100, n)
        entry = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),  # labels as Python ints
            b"fine_labels": [int(v) for v in fine],
            b"coarse_labels": [int(v) for v in rng.integers(0, 20, n)],
        }
        with open(base / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    return base


# --- run records and sweeps written by hand -----------------------------------------------------
SWEEP_NAME = "2026-01-02_03-04-05-000006"


def run_name(depth: int, residual: bool, seed: int) -> str:
    return f"depth={depth},residual={str(residual).lower()},seed={seed}"


def overrides(depth: int, residual: bool, seed: int) -> str:
    return f"model.depth={depth} model.residual={str(residual).lower()} seed={seed}"


def make_config(
    depth: int,
    residual: bool,
    seed: int,
    *,
    lr: float = 0.1,
    iterations: int = 40,
    shortcut: str = "A",
) -> dict:
    """A run's config.yaml; at 64,000 iterations, the paper's whole schedule (milestones, batch,
    warm-up)."""
    n = (depth - 2) // 6
    paper = iterations == 64_000
    return {
        "model": {
            "name": "resnet_cifar",
            "n": n,
            "depth": depth,
            "residual": residual,
            "shortcut": shortcut,
            "num_classes": 10,
        },
        "dataset": {"name": "cifar10", "protocol": "paper", "val_size": 5000, "augment": True},
        "optimizer": {"name": "sgd", "lr": lr, "momentum": 0.9, "weight_decay": 1e-4},
        "schedule": {
            "name": "paper",
            "iterations": iterations,
            "gamma": 0.1,
            "milestones": [32000, 48000] if paper else [20, 30],
            "warmup": depth >= 110,
        },
        "trainer": {"device": "cpu", "batch_size": 128 if paper else 32},
        "logger": {"name": "local"},
        "diagnostics": {"layer_stats": "end", "grad_norms": [1, 10]},
        "seed": seed,
        "experiment_name": "degradation",
        "name": f"{'resnet' if residual else 'plain'}{depth}-seed{seed}",
    }


def metric_rows(
    iters=(10, 20, 30, 40), eval_every: int = 20, base: float = 50.0, test: bool = False
) -> list[dict]:
    """metrics.csv rows: training columns at every row, eval columns every ``eval_every``."""
    rows = []
    for i, it in enumerate(iters):
        row = {
            "iter": it,
            "epoch": 1 + it // 20,
            "lr": 0.1,
            "train_loss": 2.0 - 0.1 * i,
            "train_err": base - 2.5 * i,
            "time_s": 0.5 * (i + 1),
            "img_per_s": 640.0 + i,
        }
        if it % eval_every == 0:
            row.update(val_loss=2.1 - 0.1 * i, val_err=base + 5 - 2.0 * i)
            if test:
                row.update(test_loss=2.2 - 0.1 * i, test_err=base + 6 - 2.0 * i)
        rows.append(row)
    return rows


def write_run(
    run_dir: Path,
    *,
    depth: int,
    residual: bool,
    seed: int,
    status: str | None = "completed",
    reported_error: str = "validation",
    final_train_err: float | None = 10.0,
    final_val_err: float | None = 12.0,
    final_test_err: float | None = None,
    iterations: int = 40,
    iterations_total: int = 40,
    params: int = 270_000,
    error: str | None = None,
    lr: float = 0.1,
    shortcut: str = "A",
    metrics: list[dict] | None = None,
    partial_line: str | None = None,
    summary_text: str | None = None,
    config: bool = True,
    layer_stats: bool = False,
    grad_norms: tuple[int, ...] = (),
) -> Path:
    """A run directory as a run leaves it: config.yaml, summary.json, metrics.csv (and the
    diagnostics)."""
    from resnet_repro.record.files import METRIC_COLUMNS

    run_dir.mkdir(parents=True, exist_ok=True)
    if config:
        cfg = make_config(
            depth, residual, seed, lr=lr, iterations=iterations_total, shortcut=shortcut
        )
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    if summary_text is not None:
        (run_dir / "summary.json").write_text(summary_text)
    elif status is not None:
        summary = {
            "name": f"{'resnet' if residual else 'plain'}{depth}-seed{seed}",
            "run_dir": str(run_dir),
            "status": status,
            "model": "resnet_cifar",
            "depth": depth,
            "n": (depth - 2) // 6,
            "residual": residual,
            "shortcut": shortcut if residual else None,
            "params": params,
            "dataset": "cifar10",
            "protocol": "paper",
            "seed": seed,
            "reported_error": reported_error,
            "iterations": iterations,
            "iterations_total": iterations_total,
            "final_train_err": final_train_err,
            "final_val_err": final_val_err,
            "wall_time_s": 12.5,
            "started_at": "2026-01-02T03:04:05+00:00",
        }
        if final_test_err is not None:
            summary["final_test_err"] = final_test_err
        if error is not None:
            summary["error"] = error
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if metrics is not None:
        with open(run_dir / "metrics.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=METRIC_COLUMNS)
            w.writeheader()
            for row in metrics:
                w.writerow({k: row.get(k, "") for k in METRIC_COLUMNS})
            if partial_line is not None:
                f.write(partial_line)  # a row being written: no newline yet
    n_layers = 6 * ((depth - 2) // 6) + 1
    if layer_stats:
        with open(run_dir / "layer_stats.csv", "w", newline="") as f:
            f.write("iter,layer,module,std,channel_std\n")
            for i in range(1, n_layers + 1):
                f.write(f"{iterations},{i},m{i},{1.0 + i / 10},{0.9 + i / 10}\n")
    if grad_norms:
        with open(run_dir / "grad_norms.csv", "w", newline="") as f:
            f.write("iter,layer,module,grad_norm,weight_norm\n")
            for it in grad_norms:
                for i in range(1, n_layers + 1):
                    f.write(f"{it},{i},c{i},{0.01 * i * it},{1.0 + i}\n")
    return run_dir


def write_manifest(sweep: Path, jobs: list[dict]) -> Path:
    """manifest.csv with one row per job (name from depth/residual/seed unless given)."""
    from resnet_repro.sweeps.sweep import MANIFEST_COLUMNS

    sweep.mkdir(parents=True, exist_ok=True)
    with open(sweep / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS)
        w.writeheader()
        for i, j in enumerate(jobs):
            name = j.get("name") or run_name(j["depth"], j["residual"], j["seed"])
            w.writerow(
                {
                    "job": i,
                    "name": name,
                    "overrides": j.get("overrides")
                    or overrides(j["depth"], j["residual"], j["seed"]),
                    "status": j.get("status", "completed"),
                    "run_dir": j.get("run_dir", str(sweep / name)),
                    "started_at": "",
                    "finished_at": "",
                    "final_err": j.get("final_err", ""),
                    "error": j.get("error", ""),
                }
            )
    return sweep


# --- a sweep with a run in every state ------------------------------------------------------------
DONE_RESNET = run_name(20, True, 0)
DONE_PLAIN_TEST = run_name(20, False, 0)
FAILED = run_name(56, False, 0)
RUNNING = run_name(56, True, 0)
PENDING = run_name(56, False, 1)
CORRUPT = run_name(32, True, 0)
HALF_LINE = "30,2,0.1,1.23"


def make_mixed_sweep(sweep: Path) -> Path:
    """Runs completed (validation / test), failed, running (half a line), pending, corrupt
    summary."""
    write_manifest(
        sweep,
        [
            {"depth": 20, "residual": True, "seed": 0, "final_err": 8.5},
            {"depth": 20, "residual": False, "seed": 0, "final_err": 12.0},
            {
                "depth": 56,
                "residual": False,
                "seed": 0,
                "status": "failed",
                "error": "RuntimeError: boom",
            },
            {"depth": 56, "residual": True, "seed": 0, "status": "running"},
            {"depth": 56, "residual": False, "seed": 1, "status": "pending"},
            {"depth": 32, "residual": True, "seed": 0, "status": "running"},
        ],
    )
    write_run(
        sweep / DONE_RESNET,
        depth=20,
        residual=True,
        seed=0,
        final_train_err=3.0,
        final_val_err=8.5,
        metrics=metric_rows(),
        lr=0.05,
    )
    write_run(
        sweep / DONE_PLAIN_TEST,
        depth=20,
        residual=False,
        seed=0,
        reported_error="test",
        final_train_err=4.0,
        final_val_err=11.0,
        final_test_err=12.0,
        metrics=metric_rows(base=40.0, test=True),
    )
    write_run(
        sweep / FAILED,
        depth=56,
        residual=False,
        seed=0,
        status="failed",
        error="RuntimeError: boom",
        final_val_err=None,
        iterations=20,
        metrics=metric_rows(iters=(10, 20)),
    )
    write_run(
        sweep / RUNNING,
        depth=56,
        residual=True,
        seed=0,
        status="running",
        final_val_err=30.0,
        iterations=20,
        metrics=metric_rows(iters=(10, 20, 25)),
        partial_line=HALF_LINE,
    )
    write_run(
        sweep / CORRUPT,
        depth=32,
        residual=True,
        seed=0,
        summary_text='{"status": "compl',
        metrics=metric_rows(iters=(10,)),
    )
    return sweep

"""Train one CIFAR ResNet with the paper's recipe and record the run (``train``); the command
line that calls it is ``cli.py`` (``resnet-train``; ``python -m resnet_repro.train`` runs it too).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .config import (
    Config,
    config_dir,  # noqa: F401 - where it was first (tests and scripts import it from here)
    iteration_schedule,
    to_dict,
    unreachable,
    unreachable_message,
)
from .data import Splits, load_splits
from .data.pipeline import DeviceBatches, eval_batches, normalize, pixel_mean
from .diagnostics import GRAD_NORM_COLUMNS, LAYER_STATS_COLUMNS, conv_grad_norms, layer_response_std
from .errors import CheckpointError, Diverged, Preempted, ResnetReproError, RunDirError
from .fastpath import FastPath, TrainStep, device_sync, match_optimizer_strides
from .loggers import WandbMirror
from .models import build_model, count_params
from .record import (
    CHECKPOINT_FILE,
    GRAD_NORMS_FILE,
    LAYER_STATS_FILE,
    METRICS_FILE,
    PREVIOUS_CHECKPOINT_FILE,
    SUMMARY_FILE,
    RunRecord,
    git_commit,
    library_versions,
)
from .schedule import LRSchedule

log = logging.getLogger("resnet_repro")
CHECKPOINT_FORMAT = 1
MIRRORED_FILES = ("config.yaml", "summary.json", "metrics.csv", LAYER_STATS_FILE, GRAD_NORMS_FILE)  # to W&B at the end


def pick_device(name: str, job_num: int | None = None) -> torch.device:
    """``auto``: CUDA when present; a multirun's jobs spread over the GPUs by job number."""
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", (job_num or 0) % torch.cuda.device_count())
    check_device(name)
    return torch.device(name)


def check_device(name: str) -> None:
    """Refuse a ``trainer.device`` this machine does not have, naming the ones it has."""
    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ResnetReproError(f"trainer.device={name} but no CUDA device is available. Use trainer.device=cpu or auto.")
        index = int(name.partition(":")[2] or 0)
        if index >= count:
            have = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
            raise ResnetReproError(f"trainer.device={name} but this machine has {count} CUDA device(s) ({have}). "
                                   f"Use one of those, or auto.")
    elif name == "mps" and not torch.backends.mps.is_available():
        raise ResnetReproError("trainer.device=mps but no MPS device is available. Use trainer.device=cpu or auto.")


clock = time.perf_counter  # the loop's timer (a name of its own, so tests can watch when it is read)


def check_same_device_type(ckpt: dict, device: torch.device, path: Path) -> None:
    """Refuse to resume a checkpoint written on another device type, before any work.

    The sampler's random generator lives on the training device, and a CPU generator's state
    (5056 bytes) cannot become a CUDA one's (16 bytes); nor would a seed give the same data order
    there. Checkpoints from before ``device_type`` was recorded are told apart by that size.
    """
    saved = ckpt.get("device_type")
    if saved is None:
        state = (ckpt.get("batches") or {}).get("generator")
        saved = {5056: "cpu", 16: "cuda"}.get(state.numel()) if state is not None else None
    if saved is not None and saved != device.type:
        raise CheckpointError(
            f"{path} was written on {saved} and this run is on {device.type}: the data sampler's random "
            f"stream cannot move between device types. Resume with trainer.device={saved}, or start a new "
            f"run (name=<new name>)."
        )


@torch.no_grad()
def evaluate(model, x, y, batch_size: int, mean, fast: FastPath | None = None,
             size: int | None = None) -> tuple[float, float]:
    """(mean loss, error %) over a whole split, in eval mode (BN running statistics)."""
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    wrong = torch.zeros((), device=x.device, dtype=torch.long)
    for xb, yb in eval_batches(x, y, batch_size, mean, size):
        if fast is None:
            out = model(xb)
        else:
            with fast.autocast():
                out = model(xb.contiguous(memory_format=fast.memory_format))
        loss_sum += F.cross_entropy(out.float(), yb, reduction="sum")
        wrong += (out.argmax(1) != yb).sum()
    model.train()
    return loss_sum.item() / len(x), 100.0 * wrong.item() / len(x)


@dataclass
class Window:
    """Training loss and error summed on the device between log steps (read only at log steps)."""

    loss: torch.Tensor
    wrong: torch.Tensor
    seen: int = 0

    @classmethod
    def zeros(cls, device) -> Window:
        return cls(torch.zeros((), device=device), torch.zeros((), device=device, dtype=torch.long))

    def add(self, loss: torch.Tensor, out: torch.Tensor, y: torch.Tensor) -> None:
        self.loss += loss.detach() * len(y)
        self.wrong += (out.argmax(1) != y).sum()
        self.seen += len(y)

    def read(self) -> tuple[float, float]:
        return self.loss.item() / self.seen, 100.0 * self.wrong.item() / self.seen

    def state_dict(self) -> dict:
        return {"loss": self.loss.cpu(), "wrong": self.wrong.cpu(), "seen": self.seen}

    def load_state_dict(self, s: dict, device) -> None:
        self.loss, self.wrong, self.seen = s["loss"].to(device), s["wrong"].to(device), s["seen"]


def train(cfg: Config, run_dir: str | Path, *, group: str | None = None, job_num: int | None = None,
          sweep_dir: str | Path | None = None) -> dict:
    """Run (or resume) one training run in ``run_dir``; return its summary.

    ``group`` (the sweep id), ``job_num`` and ``sweep_dir`` come from a multirun: W&B groups the
    sweep's runs (and is not tried again once a job of the sweep could not start it), and on
    several GPUs the jobs spread over them by number.
    """
    rec = RunRecord(run_dir)
    rec.lock()  # one process per run directory
    try:
        with _stop_on_signals() as stop:
            return _train(cfg, rec, stop, group=group, job_num=job_num, sweep_dir=sweep_dir)
    finally:
        rec.unlock()


@contextmanager
def _stop_on_signals():
    """While training, SIGTERM (preemption) and SIGINT (Ctrl-C) ask the loop to finish its step,
    checkpoint and stop (``stop["signal"]`` is set). A second Ctrl-C stops at once, as usual."""
    stop: dict = {}
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signal handlers can only be set from the main thread
        return

    def handler(signum, _frame):
        if signum == signal.SIGINT and stop.get("signal") == signal.SIGINT:
            raise KeyboardInterrupt
        stop["signal"] = signum

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def check_record(rec: RunRecord, cfg_dict: dict, ckpt: dict | None, old: dict, *, checkpoint_known: bool = True) -> None:
    """Refuse a run directory whose record belongs to another config or cannot be resumed.

    The config is compared with ``config.yaml``, the checkpoint's copy and what ``summary.json``
    states, so deleting checkpoints (or the config) never lets another run overwrite a record. A
    record of trained iterations without a checkpoint is never retrained over. Before a start
    (``checkpoint_known=False``) the checkpoint is not loaded, only looked for.
    """
    rec.check_same_run(cfg_dict, ckpt.get("config") if ckpt else None, summary_config(old))
    done = old.get("iterations") or 0
    has_ckpt = ckpt is not None if checkpoint_known else any(
        rec.path(f).is_file() for f in (CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE))
    if not has_ckpt and done and old.get("status") != "completed":
        raise RunDirError(
            f"{rec.dir} holds {done} trained iterations ({SUMMARY_FILE}, {METRICS_FILE}) but no checkpoint to "
            f"resume from ({CHECKPOINT_FILE} is gone). Training again would overwrite that record: move the "
            f"directory aside first, or give this run its own directory (name=<new name>)."
        )


def summary_config(summary: dict) -> dict | None:
    """The config keys a summary states, as a nested config dict (None without a summary)."""
    if not summary:
        return None
    keys = {"model": {"name": "model", "depth": "depth", "residual": "residual"},
            "dataset": {"name": "dataset", "protocol": "protocol"}, "trainer": {"batch_size": "batch_size"}}
    out: dict = {"seed": summary["seed"]} if "seed" in summary else {}
    for group, fields in keys.items():
        out[group] = {k: summary[f] for k, f in fields.items() if f in summary}
    return out


def _train(cfg: Config, rec: RunRecord, stop: dict, *, group: str | None, job_num: int | None,
           sweep_dir: str | Path | None = None) -> dict:
    cfg_dict = to_dict(cfg)
    ckpt = rec.load_checkpoint()
    old = rec.read_summary() or {}
    check_record(rec, cfg_dict, ckpt, old)
    schedule = iteration_schedule(cfg)  # epochs, when the schedule counts them, as iterations
    done = ckpt["iteration"] if ckpt is not None else old.get("iterations") or 0
    if done >= schedule.iterations and old.get("status") == "completed":
        gone = "" if ckpt is not None else "; its checkpoint is gone, so it can be read but not extended"
        log.info("%s is already complete (%d iterations)%s. Nothing to do.", rec.dir, done, gone)
        return old
    for key, values in unreachable(cfg).items():
        log.warning("%s", unreachable_message(cfg, key, values, refused=False))

    t = cfg.trainer
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    if t.deterministic:
        # cuBLAS needs a fixed workspace to be deterministic (set before CUDA starts, in main())
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    device = pick_device(t.device, job_num)
    if ckpt is not None:
        check_same_device_type(ckpt, device, rec.path("checkpoint.pt"))
    fast = FastPath.resolve(t, cfg.optimizer, device)
    fast.new_job()  # this run's backend flags; compiled code of earlier jobs in the process dropped

    splits: Splits = load_splits(cfg.dataset, cfg.model.num_classes)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model).to(device, memory_format=fast.memory_format)
    n_params = count_params(model)
    mean = pixel_mean(splits.train[0])
    size = cfg.dataset.image_size
    batches = DeviceBatches(*splits.train, t.batch_size, mean, device, augment=cfg.dataset.augment, seed=cfg.seed,
                            size=size)
    evals = {s: tuple(v.to(device) for v in getattr(splits, s)) for s in splits.eval_splits}
    mean = mean.to(device)
    o = cfg.optimizer
    opt = fast.optimizer(model.parameters(), o)
    step = TrainStep(model, opt, fast)  # trains the compiled model when compiling; eval uses the eager one
    sched = LRSchedule(schedule, o.lr)
    window = Window.zeros(device)
    it, elapsed, train_time, best = 0, 0.0, 0.0, {}
    rec.write_config(cfg_dict)  # only once setup has succeeded, so a failed start locks nothing

    diag = cfg.diagnostics
    grad_iters = set(diag.grad_norms)
    # Fig. 7's fixed batch: the first held-out images (validation, else test, else training).
    probe_split = next(iter(evals), "train")
    probe = (evals[probe_split][0] if evals else splits.train[0].to(device))[: diag.layer_stats_images]

    def record_layer_stats() -> None:
        bs = t.eval_batch_size
        rows = layer_response_std(model, (normalize(probe[i : i + bs], mean, size) for i in range(0, len(probe), bs)))
        rec.append_rows(LAYER_STATS_FILE, LAYER_STATS_COLUMNS, [{"iter": it, **r} for r in rows])

    def record_grad_norms() -> None:  # a few early iterations only: one device read each
        rec.append_rows(GRAD_NORMS_FILE, GRAD_NORM_COLUMNS, [{"iter": it + 1, **r} for r in conv_grad_norms(model)])

    tables = ((LAYER_STATS_FILE, LAYER_STATS_COLUMNS), (GRAD_NORMS_FILE, GRAD_NORM_COLUMNS))
    if ckpt is None:
        rec.truncate_metrics(0)  # rows of an attempt that stopped before its first checkpoint
        for name, cols in tables:
            rec.truncate_rows(name, cols, 0)
    else:
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"Checkpoint {rec.path('checkpoint.pt')} has an unknown format. Move the run directory aside to start this run again; nothing was changed.")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        match_optimizer_strides(opt)
        if ckpt.get("scaler"):
            step.scaler.load_state_dict(ckpt["scaler"])
        sched.load_state_dict(ckpt["schedule"])
        batches.load_state_dict(ckpt["batches"])
        window.load_state_dict(ckpt["window"], device)
        torch.set_rng_state(ckpt["torch_rng"])
        it, elapsed, train_time, best = ckpt["iteration"], ckpt["elapsed_s"], ckpt["train_time_s"], ckpt["best"]
        rec.truncate_metrics(it)
        for name, cols in tables:
            rec.truncate_rows(name, cols, it)
        log.info("Resuming %s from iteration %d", rec.dir, it)

    summary = {
        "name": cfg.name,
        "run_dir": str(rec.dir),
        "status": "running",
        "model": cfg.model.name,
        "depth": cfg.model.depth,
        "n": cfg.model.n,
        "residual": cfg.model.residual,
        # ImageNet nets project where the shape changes (option B); pre-activation nets pad (A)
        "shortcut": None if not cfg.model.residual else {"resnet_cifar": cfg.model.shortcut, "preact_cifar": "A"}.get(
            cfg.model.name, "B"),
        "params": n_params,
        "dataset": cfg.dataset.name,
        "protocol": cfg.dataset.protocol,
        "seed": cfg.seed,
        "eval_splits": splits.eval_splits,
        "test_available": splits.test is not None,
        "reported_error": "test" if splits.test is not None else "validation",
        "note": splits.note,
        "iterations": it,
        "iterations_total": schedule.iterations,
        "milestones": list(schedule.milestones),
        "warmup": bool(cfg.schedule.warmup),
        "batch_size": t.batch_size,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform_cpu(),
        "fast_path": fast.describe(),
        "versions": library_versions(),
        "git_commit": git_commit(),
        "started_at": old.get("started_at") or _now(),
        "resumed_from": it or None,
        "layer_stats": diag.layer_stats,
        "layer_stats_split": probe_split if diag.layer_stats != "off" else None,
        "layer_stats_images": len(probe) if diag.layer_stats != "off" else None,
    }
    if ckpt is not None:  # the results as of the checkpoint (an older summary may lag behind it)
        summary.update(ckpt.get("results") or {k: v for k, v in old.items() if k.startswith(("final_", "best_"))
                                                or k in ("wall_time_s", "train_time_s", "images_per_s")})
    wandb = WandbMirror(cfg.logger, rec.dir, name=rec.dir.name, group=group,
                        job_type=cfg.experiment_name, config=cfg_dict, sweep_dir=sweep_dir)
    summary["wandb"] = wandb.record()
    rec.write_summary(summary)
    log.info("Fast path: %s", ", ".join(f"{k}={v}" for k, v in fast.describe().items()))
    log.info(
        "%s: %s %s-%d (n=%s, %s shortcuts), %s params, %s/%s, %d train images, eval on %s, device %s",
        cfg.name, cfg.model.name, "ResNet" if cfg.model.residual else "plain", cfg.model.depth, cfg.model.n,
        summary["shortcut"] or "no", f"{n_params:,}", cfg.dataset.name, cfg.dataset.protocol,
        len(splits.train[0]), "+".join(splits.eval_splits) or "nothing", device,
    )

    ckpt_iter = it if ckpt is not None else None

    def checkpoint() -> None:
        nonlocal ckpt_iter
        ckpt_iter = it
        rec.save_checkpoint({
            "format": CHECKPOINT_FORMAT,
            "config": cfg_dict,
            "device_type": device.type,
            "iteration": it,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scaler": step.scaler.state_dict(),
            "schedule": sched.state_dict(),
            "batches": batches.state_dict(),
            "window": window.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "elapsed_s": elapsed,
            "train_time_s": train_time,
            "best": best,
            "results": {k: v for k, v in summary.items() if k.startswith(("final_", "best_"))
                        or k in ("wall_time_s", "train_time_s", "images_per_s")},
        })

    total, lr = schedule.iterations, None
    bar = tqdm(total=total, initial=it, disable=not t.progress, dynamic_ncols=True, desc=cfg.name, file=sys.stderr)
    t0 = clock()
    t_window, it_window = t0, it
    try:
        model.train()
        while it < total:
            if stop:  # SIGTERM or Ctrl-C, checked between whole steps (their rows and evals done)
                if ckpt_iter != it:
                    checkpoint()
                name = "SIGINT (Ctrl-C)" if stop["signal"] == signal.SIGINT else signal.Signals(stop["signal"]).name
                raise Preempted(
                    f"stopped by {name} at iteration {it}; checkpoint written to {rec.path('checkpoint.pt')}. "
                    f"Rerun the same command to resume.", signum=stop["signal"]
                )
            if (new_lr := sched.lr(it)) != lr:
                lr = new_lr
                for g in opt.param_groups:
                    g["lr"] = lr
            x, y = batches.next()
            loss, out = step(x, y, record_grad_norms if it + 1 in grad_iters else None)
            window.add(loss, out, y)
            it += 1
            bar.update()

            is_log, is_eval = it % t.log_every == 0 or it == total, it % t.eval_every == 0 or it == total
            if not (is_log or is_eval):
                continue
            device_sync(device)  # the queued steps finish before the clock is read
            now = clock()
            train_time += now - t_window
            row = {"iter": it, "epoch": batches.epoch, "lr": lr}
            if is_log and window.seen:
                row["train_loss"], row["train_err"] = window.read()
                if not math.isfinite(row["train_loss"]):
                    rec.append_metrics(row)
                    wandb.log(row)
                    raise Diverged(
                        f"training diverged at iteration {it}: train loss {row['train_loss']}. Lower "
                        f"optimizer.lr, or warm up with schedule.warmup=true (the paper does for ResNet-110)."
                    )
                row["img_per_s"] = (it - it_window) * t.batch_size / max(now - t_window, 1e-9)
                window = Window.zeros(device)
                bar.set_postfix(loss=f"{row['train_loss']:.3f}", err=f"{row['train_err']:.1f}%", lr=f"{lr:g}")
                if sched.observe_train_error(row["train_err"] / 100, it):
                    log.info("Warm-up over at iteration %d (train error %.1f%%): lr %g from now on", it, row["train_err"], sched.lr(it))
            if is_eval:
                for split, (ex, ey) in evals.items():
                    row[f"{split}_loss"], row[f"{split}_err"] = evaluate(model, ex, ey, t.eval_batch_size, mean, fast, size)
                    if row[f"{split}_err"] < best.get(f"best_{split}_err", float("inf")):
                        best[f"best_{split}_err"], best[f"best_{split}_iter"] = row[f"{split}_err"], it
                if evals:
                    log.info("iter %d: %s", it, ", ".join(f"{s} err {row[f'{s}_err']:.2f}%" for s in evals))
                if diag.layer_stats == "eval" or (diag.layer_stats == "end" and it == total):
                    record_layer_stats()
            end = clock()  # evaluation read its results back: nothing is left queued
            elapsed += end - t0
            t0 = t_window = end
            it_window = it
            row["time_s"] = elapsed
            rec.append_metrics(row)
            wandb.log(row)
            if is_log and "train_err" in row:
                summary.update(final_train_loss=row["train_loss"], final_train_err=row["train_err"])
            if is_eval:
                for split in evals:
                    summary[f"final_{split}_loss"], summary[f"final_{split}_err"] = row[f"{split}_loss"], row[f"{split}_err"]
                summary.update(best, iterations=it, wall_time_s=elapsed, train_time_s=train_time,
                               images_per_s=it * t.batch_size / train_time)
                checkpoint()
                rec.write_summary(summary)
    except BaseException as ex:
        status = ("interrupted" if isinstance(ex, (KeyboardInterrupt, SystemExit))
                  else "diverged" if isinstance(ex, Diverged) else "failed")
        summary.update(status=status, error=f"{type(ex).__name__}: {ex}", iterations_done=it)
        try:
            rec.write_summary(summary)  # the local record first: W&B may hang or fail
        except (OSError, RunDirError) as wex:  # e.g. the disk is full: the original error is the one to report
            log.warning("Could not update %s: %s", rec.path("summary.json"), wex)
        wandb.finish(summary, exit_code=1, files=MIRRORED_FILES)
        summary["wandb"] = wandb.record()
        with contextlib.suppress(OSError, RunDirError):
            rec.write_summary(summary)
        raise
    finally:
        bar.close()

    summary.update(status="completed", finished_at=_now(), warmup_ended_at=sched.warmup_ended_at)
    rec.write_summary(summary)  # the local record first: W&B may hang or fail
    wandb.finish(summary, files=MIRRORED_FILES)
    summary["wandb"] = wandb.record()
    rec.write_summary(summary)
    log.info("Done: %s", ", ".join(f"{k}={summary[k]:.2f}" for k in summary if k.startswith("final_") and k.endswith("_err")))
    return summary


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def platform_cpu() -> str:
    import platform

    return platform.processor() or platform.machine()


if __name__ == "__main__":
    # the command line lives in cli.py (no torch before a run starts); run the imported module's
    # main, which parallel launchers (joblib, submitit) can pickle by reference
    from resnet_repro.cli import main

    main()

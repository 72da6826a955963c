"""Train one CIFAR ResNet with the paper's recipe and record the run (``train``); the command
line that calls it is ``cli.py`` (``resnet-train``; ``python -m resnet_repro.train`` runs it too).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from .config import (
    Config,
    config_dir,  # noqa: F401 - where it was first (tests and scripts import it from here)
    iteration_schedule,
    to_dict,
    unreachable,
    unreachable_message,
)
from .data import load_splits
from .data.pipeline import DeviceData, eval_batches
from .device import check_same_device_type, device_sync, pick_device, platform_cpu
from .diagnostics import conv_grad_norms, layer_response_std
from .errors import CheckpointError, Diverged, Preempted
from .files import (
    CHECKPOINT_FILE,
    GRAD_NORM_COLUMNS,
    GRAD_NORMS_FILE,
    LAYER_STATS_COLUMNS,
    LAYER_STATS_FILE,
)
from .models import build_model, count_params
from .record import RunRecord, git_commit, library_versions
from .schedule import LRSchedule
from .sinks import RESULT_KEYS, Sinks
from .state import Progress, TorchRNG
from .step import FastPath, TrainStep, match_optimizer_strides
from .wandb_mirror import WandbMirror

log = logging.getLogger("resnet_repro")
CHECKPOINT_FORMAT = 1


clock = time.perf_counter  # the loop's timer (a name of its own, so tests can watch when it is read)


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
        loss_sum += F.cross_entropy(out.to(loss_sum.dtype), yb, reduction="sum")  # autocast's logits in fp32
        wrong += (out.argmax(1) != yb).sum()
    model.train()
    return loss_sum.item() / len(x), 100.0 * wrong.item() / len(x)


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
        with stop_on_signals() as stop:
            return train_record(cfg, rec, stop, group=group, job_num=job_num, sweep_dir=sweep_dir)
    finally:
        rec.unlock()


@contextmanager
def stop_on_signals():
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


def train_record(cfg: Config, rec: RunRecord, stop: dict, *, group: str | None, job_num: int | None,
                 sweep_dir: str | Path | None = None) -> dict:
    """``train`` in a record this process has locked, stopping when ``stop`` is set."""
    cfg_dict = to_dict(cfg)
    ckpt, old, complete = resume_point(cfg, rec)
    if complete:
        return old
    for key, values in unreachable(cfg).items():
        log.warning("%s", unreachable_message(cfg, key, values, refused=False))
    run = Run.build(cfg, rec, ckpt, job_num)
    rec.write_config(cfg_dict)  # only once setup has succeeded, so a failed start locks nothing
    run.restore(ckpt)
    wandb = WandbMirror(cfg.logger, rec.dir, name=rec.dir.name, group=group,
                        job_type=cfg.experiment_name, config=cfg_dict, sweep_dir=sweep_dir)
    sinks = Sinks(rec, wandb, start_summary(run, old, ckpt))
    run.describe()
    with logging_redirect_tqdm():  # log lines print above the progress bar, not glued onto it
        return _loop(run, sinks, stop)


def checkpoint_state(cfg: Config, device: torch.device, progress: Progress, owners: dict, results: dict) -> dict:
    """A run's checkpoint: its config, device type, progress, its owners' states and its results so far."""
    return {"format": CHECKPOINT_FORMAT, "config": to_dict(cfg), "device_type": device.type,
            **progress.state_dict(), **owners, "results": results}


def check_format(ckpt: dict, rec: RunRecord) -> None:
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"Checkpoint {rec.path(CHECKPOINT_FILE)} has an unknown format. Move the run directory "
                              f"aside to start this run again; nothing was changed.")


def preempted(signum: int, it: int, recs: list[RunRecord]) -> Preempted:
    """The stop of runs whose checkpoints are written, and how to resume them."""
    name = "SIGINT (Ctrl-C)" if signum == signal.SIGINT else signal.Signals(signum).name
    paths = ", ".join(str(r.path(CHECKPOINT_FILE)) for r in recs)
    return Preempted(f"stopped by {name} at iteration {it}; checkpoint{'s' if len(recs) > 1 else ''} written to "
                     f"{paths}. Rerun the same command to resume.", signum=signum)


def start_job(cfg: Config, job_num: int | None, ckpts: dict[Path, dict | None]) -> tuple[torch.device, FastPath]:
    """The job's device and fast path, its process set up for it (threads, backend flags, no
    compiled code of an earlier job); ``ckpts`` (by path) must come from this device type."""
    t = cfg.trainer
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    if t.deterministic:  # cuBLAS needs a fixed workspace to be deterministic (before CUDA starts)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    device = pick_device(t.device, job_num)
    for path, ckpt in ckpts.items():
        if ckpt is not None:
            check_same_device_type(ckpt, device, path)
    fast = FastPath.resolve(t, cfg.optimizer, device)
    fast.new_job()  # this run's backend flags; compiled code of earlier jobs in the process dropped
    return device, fast


def resume_point(cfg: Config, rec: RunRecord) -> tuple[dict | None, dict, bool]:
    """(checkpoint, summary, complete) of the record a run continues (refused when not its own);
    a complete run is said so."""
    ckpt, old = rec.load_checkpoint(), rec.read_summary() or {}
    rec.check_resumable(to_dict(cfg), ckpt, old)
    done = ckpt["iteration"] if ckpt is not None else old.get("iterations") or 0
    complete = done >= iteration_schedule(cfg).iterations and old.get("status") == "completed"
    if complete:
        gone = "" if ckpt is not None else "; its checkpoint is gone, so it can be read but not extended"
        log.info("%s is already complete (%d iterations)%s. Nothing to do.", rec.dir, done, gone)
    return ckpt, old, complete


@dataclass
class Run:
    """What one run trains with, built from its config on its device."""

    cfg: Config
    rec: RunRecord
    device: torch.device
    fast: FastPath
    data: DeviceData
    model: nn.Module
    step: TrainStep
    sched: LRSchedule
    progress: Progress
    total: int  # the iterations to train, counted as the paper counts them
    note: str = ""  # the data's caveat, if any (no test batch)
    lr: float | None = None
    saved_at: int | None = None  # the iteration of the last checkpoint written or loaded
    grad_iters: frozenset = field(default_factory=frozenset)  # diagnostics.grad_norms

    @classmethod
    def build(cls, cfg: Config, rec: RunRecord, ckpt: dict | None, job_num: int | None) -> Run:
        t = cfg.trainer
        device, fast = start_job(cfg, job_num, {rec.path(CHECKPOINT_FILE): ckpt})
        splits = load_splits(cfg.dataset)
        data = DeviceData(splits, device, batch_size=t.batch_size, augment=cfg.dataset.augment, seed=cfg.seed,
                          size=cfg.dataset.image_size, probe_images=cfg.diagnostics.layer_stats_images)
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model).to(device, memory_format=fast.memory_format)
        step = TrainStep(model, fast.optimizer(model.parameters(), cfg.optimizer), fast)
        schedule = iteration_schedule(cfg)  # epochs, when the schedule counts them, as iterations
        return cls(cfg, rec, device, fast, data, model, step, LRSchedule(schedule, cfg.optimizer.lr),
                   Progress(device), schedule.iterations, splits.note,
                   grad_iters=frozenset(cfg.diagnostics.grad_norms))

    def owners(self) -> dict:
        """The checkpoint's keys and the objects whose state each holds (with ``progress``'s keys)."""
        return {"model": self.model, "optimizer": self.step.opt, "scaler": self.step.scaler,
                "schedule": self.sched, "batches": self.data.batches, "torch_rng": TorchRNG()}

    def checkpoint(self, results: dict) -> None:
        self.saved_at = self.progress.it
        self.rec.save_checkpoint(checkpoint_state(self.cfg, self.device, self.progress,
                                                  {k: o.state_dict() for k, o in self.owners().items()}, results))

    def restore(self, ckpt: dict | None) -> None:
        """Continue from ``ckpt`` (None: from the start); the record's rows past it are dropped."""
        if ckpt is not None:
            check_format(ckpt, self.rec)
            for key, owner in self.owners().items():
                if key != "scaler" or ckpt.get(key):  # an fp32 run's scaler has no state
                    owner.load_state_dict(ckpt[key])
            match_optimizer_strides(self.step.opt)
            self.progress.load_state_dict(ckpt)
            self.saved_at = self.progress.it
            log.info("Resuming %s from iteration %d", self.rec.dir, self.progress.it)
        self.rec.rewind(self.progress.it)

    def set_lr(self) -> None:
        if (lr := self.sched.lr(self.progress.it)) != self.lr:
            self.lr = lr
            for g in self.step.opt.param_groups:
                g["lr"] = lr

    def evaluate(self) -> dict:
        """Loss and error of every evaluation split, the best errors so far, and Fig. 7's statistics."""
        row, p, t, diag = {}, self.progress, self.cfg.trainer, self.cfg.diagnostics
        for split, (x, y) in self.data.evals.items():
            loss, err = evaluate(self.model, x, y, t.eval_batch_size, self.data.mean, self.fast, self.data.size)
            row[f"{split}_loss"], row[f"{split}_err"] = loss, err
            p.improve(split, err)
        if self.data.evals:
            log.info("iter %d: %s", p.it, ", ".join(f"{s} err {row[f'{s}_err']:.2f}%" for s in self.data.evals))
        if diag.layer_stats == "eval" or (diag.layer_stats == "end" and p.it == self.total):
            rows = layer_response_std(self.model, self.data.probe_batches(t.eval_batch_size))
            self.rec.append_rows(LAYER_STATS_FILE, LAYER_STATS_COLUMNS, [{"iter": p.it, **r} for r in rows])
        return row

    def grad_norms_hook(self):
        """At the iterations ``diagnostics.grad_norms`` names: a hook that records the gradients' norms."""
        it = self.progress.it + 1  # the step about to run
        if it not in self.grad_iters:
            return None
        return lambda: self.rec.append_rows(GRAD_NORMS_FILE, GRAD_NORM_COLUMNS,
                                            [{"iter": it, **r} for r in conv_grad_norms(self.model)])

    def preempted(self, signum: int, results: dict) -> Preempted:
        """Checkpoint (unless this iteration's is written) and say how to resume."""
        if self.saved_at != self.progress.it:
            self.checkpoint(results)
        return preempted(signum, self.progress.it, [self.rec])

    def describe(self) -> None:
        cfg, m = self.cfg, self.cfg.model
        log.info("Run directory: %s", self.rec.dir)
        log.info("Fast path: %s", ", ".join(f"{k}={v}" for k, v in self.fast.describe().items()))
        log.info(
            "%s: %s %s-%d (n=%s, %s shortcuts), %s params, %s/%s, %d train images, eval on %s, device %s",
            cfg.name, m.name, "ResNet" if m.residual else "plain", m.depth, m.n, shortcut_of(m) or "no",
            f"{count_params(self.model):,}", cfg.dataset.name, cfg.dataset.protocol, len(self.data.batches.x),
            "+".join(self.data.evals) or "nothing", self.device,
        )


def _loop(run: Run, sinks: Sinks, stop: dict) -> dict:
    """Set the lr, take a step, account; at the log/eval cadence read back, evaluate, record, checkpoint."""
    t, p, total = run.cfg.trainer, run.progress, run.total
    bar = tqdm(total=total, initial=p.it, disable=not t.progress, dynamic_ncols=True, desc=run.cfg.name, file=sys.stderr)
    try:
        run.model.train()
        p.mark(clock())
        while p.it < total:
            if stop:  # SIGTERM or Ctrl-C, checked between whole steps (their rows and evals done)
                raise run.preempted(stop["signal"], sinks.results())
            run.set_lr()
            x, y = run.data.batches.next()
            loss, out = run.step(x, y, run.grad_norms_hook())
            p.add(loss, out, y)  # device tensors: no sync
            bar.update()
            if not bar.disable and p.it < t.log_every and p.it & (p.it - 1) == 0:
                device_sync(run.device)  # sync point: the bar's first numbers, at iterations 1, 2, 4, ... before the first log
                show(bar, *p.peek(), run.lr)
            is_log, is_eval = p.it % t.log_every == 0 or p.it == total, p.it % t.eval_every == 0 or p.it == total
            if not (is_log or is_eval):
                continue
            device_sync(run.device)  # sync point: the queued steps finish before the clock is read
            img_per_s = p.steps_done(clock(), t.batch_size)
            row = {"iter": p.it, "epoch": run.data.batches.epoch, "lr": run.lr}
            if is_log and p.seen:
                row["train_loss"], row["train_err"] = p.read_window()  # reads the device window back
                check_finite(row, sinks)
                row["img_per_s"] = img_per_s
                show(bar, row["train_loss"], row["train_err"], run.lr)
                if run.sched.observe_train_error(row["train_err"] / 100, p.it):
                    log.info("Warm-up over at iteration %d (train error %.1f%%): lr %g from now on", p.it, row["train_err"], run.sched.lr(p.it))
            if is_eval:
                row.update(run.evaluate())  # reads its results back: nothing is left queued after it
            p.window_closed(clock())
            row["time_s"] = p.elapsed_s
            sinks.row(row)  # metrics.csv and W&B; the summary's final_* errors follow it
            if is_eval:
                sinks.summary.update(p.results(t.batch_size))
                run.checkpoint(sinks.results())
                sinks.update()  # written after the checkpoint: the summary never runs ahead of it
    except BaseException as ex:
        close_failed(sinks, ex, p.it, run.saved_at)
        raise
    finally:
        bar.close()
    return close_completed(sinks, run.sched, run.rec)


def close_failed(sinks: Sinks, ex: BaseException, done: int, saved_at: int | None) -> None:
    """End a run that ``ex`` stopped after ``done`` iterations: interrupted, diverged or failed."""
    status = ("interrupted" if isinstance(ex, (KeyboardInterrupt, SystemExit))
              else "diverged" if isinstance(ex, Diverged) else "failed")
    # iterations: those the record keeps (its last checkpoint); iterations_done: where this attempt stopped
    kept = {} if saved_at is None else {"iterations": saved_at}
    sinks.close(False, status=status, error=f"{type(ex).__name__}: {ex}", iterations_done=done, **kept)


def close_completed(sinks: Sinks, sched: LRSchedule, rec: RunRecord) -> dict:
    """End a run that trained all its iterations; its summary."""
    sinks.close(True, status="completed", finished_at=_now(), warmup_ended_at=sched.warmup_ended_at)
    s = sinks.summary
    log.info("Done: %s. Run directory: %s", ", ".join(f"{k}={s[k]:.2f}" for k in s if k.startswith("final_") and k.endswith("_err")),
             rec.dir)
    return s


def show(bar: tqdm, loss: float, err: float, lr: float) -> None:
    """The progress bar's numbers: training loss and error over the current window, the lr."""
    bar.set_postfix(loss=f"{loss:.3f}", err=f"{err:.1f}%", lr=f"{lr:g}")


def check_finite(row: dict, sinks: Sinks) -> None:
    """A non-finite training loss ends the run as diverged (its row recorded first)."""
    if not math.isfinite(row["train_loss"]):
        sinks.row(row, final=False)
        raise Diverged(
            f"training diverged at iteration {row['iter']}: train loss {row['train_loss']}. Lower "
            f"optimizer.lr, or warm up with schedule.warmup=true (the paper does for ResNet-110)."
        )


def shortcut_of(m) -> str | None:
    """The shortcut a net has: ImageNet nets project where the shape changes (option B),
    pre-activation nets pad (A); plain nets have none."""
    if not m.residual:
        return None
    return {"resnet_cifar": m.shortcut, "preact_cifar": "A"}.get(m.name, "B")


def start_summary(run: Run, old: dict, ckpt: dict | None) -> dict:
    """The summary a run starts (or resumes) with; the loop adds its results as they come."""
    cfg, p, data = run.cfg, run.progress, run.data
    stats = cfg.diagnostics.layer_stats != "off"
    test = "test" in data.evals
    summary = {
        "name": cfg.name, "run_dir": str(run.rec.dir), "status": "running",
        "model": cfg.model.name, "depth": cfg.model.depth, "n": cfg.model.n, "residual": cfg.model.residual,
        "shortcut": shortcut_of(cfg.model), "params": count_params(run.model),
        "dataset": cfg.dataset.name, "protocol": cfg.dataset.protocol, "seed": cfg.seed,
        "eval_splits": list(data.evals), "test_available": test,
        "reported_error": "test" if test else "validation", "note": run.note,
        "iterations": p.it, "iterations_total": run.total, "milestones": list(run.sched.cfg.milestones),
        "warmup": bool(cfg.schedule.warmup), "batch_size": cfg.trainer.batch_size,
        "device": str(run.device),
        "device_name": torch.cuda.get_device_name(run.device) if run.device.type == "cuda" else platform_cpu(),
        "fast_path": run.fast.describe(), "versions": library_versions(), "git_commit": git_commit(),
        # a resumed run keeps its first start; a fresh start (no checkpoint to resume) is a new one
        "started_at": (old.get("started_at") if ckpt is not None else None) or _now(), "resumed_from": p.it or None,
        "layer_stats": cfg.diagnostics.layer_stats,
        "layer_stats_split": data.probe_split if stats else None,
        "layer_stats_images": len(data.probe) if stats else None,
    }
    if ckpt is not None:  # the results as of the checkpoint (an older summary may lag behind it)
        summary.update(ckpt.get("results") or {k: v for k, v in old.items() if k.startswith(("final_", "best_"))
                                                or k in RESULT_KEYS})
    return summary


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


if __name__ == "__main__":
    # the command line lives in cli.py (no torch before a run starts); run the imported module's
    # main, which parallel launchers (joblib, submitit) can pickle by reference
    from resnet_repro.cli import main

    main()

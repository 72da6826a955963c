"""Train a run with the paper's recipe and record it (``train``), or several runs at once
(``train_runs``): one loop (``_loop``) trains a net of one run (:class:`SingleNet`) or of k
(``train_stack.StackedNet``), each run a :class:`Member` with its own record. The command line
that calls it is ``cli.py`` (``resnet-train``, or ``python -m resnet_repro.cli``).
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
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from ..config import (
    Config,
    iteration_schedule,
    to_dict,
    unreachable,
    unreachable_message,
)
from ..data import load_splits
from ..data.pipeline import DeviceData, eval_batches
from ..errors import RERUN_TO_RESUME, CheckpointError, Diverged, Preempted
from ..models import build_model, count_params
from ..models.registry import shortcut_of
from ..record import checkpoint
from ..record.checkpoint import check_same_device_type
from ..record.files import (
    GRAD_NORM_COLUMNS,
    GRAD_NORMS_FILE,
    LAYER_STATS_COLUMNS,
    LAYER_STATS_FILE,
    PREVIOUS_CHECKPOINT_FILE,
)
from ..record.lock import RunLock
from ..record.run_record import RunRecord, git_commit, library_versions
from .device import device_sync, pick_device, platform_cpu, set_threads
from .diagnostics import conv_grad_norms, layer_response_std
from .schedule import LRSchedule
from .sinks import RESULT_KEYS, Sinks
from .state import Progress, TorchRNG
from .step import FastPath, TrainStep, match_optimizer_strides
from .wandb_mirror import WandbMirror

log = logging.getLogger("resnet_repro")


clock = (
    time.perf_counter
)  # the loop's timer (a name of its own, so tests can watch when it is read)


@torch.no_grad()
def evaluate(
    model, x, y, batch_size: int, mean, fast: FastPath | None = None, size: int | None = None
) -> tuple[float, float]:
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
        loss_sum += F.cross_entropy(
            out.to(loss_sum.dtype), yb, reduction="sum"
        )  # autocast's logits in fp32
        wrong += (out.argmax(1) != yb).sum()
    model.train()
    return loss_sum.item() / len(x), 100.0 * wrong.item() / len(x)


def train(
    cfg: Config,
    run_dir: str | Path,
    *,
    group: str | None = None,
    job_num: int | None = None,
    sweep_dir: str | Path | None = None,
) -> dict:
    """Run (or resume) one training run in ``run_dir``; return its summary.

    ``group`` (the sweep id), ``job_num`` and ``sweep_dir`` come from a multirun: W&B groups the
    sweep's runs (and is not tried again once a job of the sweep could not start it), and on
    several GPUs the jobs spread over them by number.
    """
    return train_runs([cfg], [run_dir], group=group, job_num=job_num, sweep_dir=sweep_dir)[0]


def train_runs(cfgs: list[Config], run_dirs: list[str | Path], build=None, **sweep) -> list[dict]:
    """Run (or resume) these runs, each in its run directory, and return their summaries.

    ``build(cfgs, recs, ckpts, job_num)`` makes one net that trains several runs at once (a
    stack, ``train_stack.py``); it is used when more than one run is left to train and they all
    stand at the same iteration. Otherwise each run trains alone, one after another.
    """
    locks: list[RunLock] = []
    try:
        recs = [RunRecord(d) for d in run_dirs]
        for rec in recs:
            locks.append(RunLock(rec.dir))
            locks[-1].acquire()  # one process per run directory
        with stop_on_signals() as stop:
            return _train_runs(cfgs, recs, stop, build, **sweep)
    finally:
        for lock in locks:
            lock.release()


def _train_runs(
    cfgs: list[Config],
    recs: list[RunRecord],
    stop: dict,
    build,
    *,
    group: str | None = None,
    job_num: int | None = None,
    sweep_dir: str | Path | None = None,
) -> list[dict]:
    points = [resume_point(c, r) for c, r in zip(cfgs, recs, strict=True)]
    summaries = [old if complete else None for _, old, complete in points]
    todo = [i for i, s in enumerate(summaries) if s is None]
    if build is not None and len(todo) > 1:
        _align(points, recs, todo)
    starts = {points[i][0]["iteration"] if points[i][0] else 0 for i in todo}
    together = build is not None and len(todo) > 1 and len(starts) == 1
    if build is not None and len(todo) > 1 and not together:
        log.info(
            "The runs of this stack stand at different iterations (%s): they train one after "
            "another.",
            ", ".join(
                f"{recs[i].dir.name} at {points[i][0]['iteration'] if points[i][0] else 0}"
                for i in todo
            ),
        )
    batches = [todo] if together else [[i] for i in todo]
    diverged = []
    for idx in batches:
        try:
            found = _train_together(
                [cfgs[i] for i in idx],
                [recs[i] for i in idx],
                [points[i] for i in idx],
                stop,
                build if together else SingleNet.build,
                group,
                job_num,
                sweep_dir,
            )
        except Diverged as ex:
            if len(todo) == 1:
                raise
            found = [recs[i].read_summary() for i in idx]  # recorded in each run; the others go on
            diverged.append(ex)
        for i, summary in zip(idx, found, strict=True):
            summaries[i] = summary
    if diverged and len(diverged) == len(batches):
        raise diverged[0]
    return summaries


def _align(points: list, recs: list[RunRecord], todo: list[int]) -> None:
    """A stack killed between its members' checkpoint writes of one evaluation leaves some members
    one checkpoint ahead: those resume from their previous checkpoint, the one the others stand
    at, so the stack resumes as one net from the last iteration all members share."""
    at = {i: points[i][0]["iteration"] if points[i][0] else 0 for i in todo}
    behind = min(at.values())
    if len(set(at.values())) == 1:
        return
    previous = {}
    for i in todo:
        if at[i] == behind:
            continue
        prev = recs[i].checkpoints.previous
        try:
            ckpt = recs[i].checkpoints.read(prev) if prev.is_file() else None
        except CheckpointError:
            ckpt = None
        if ckpt is None or ckpt["iteration"] != behind:
            return  # not one evaluation apart: the members train one after another
        previous[i] = ckpt
    for i, ckpt in previous.items():
        log.info(
            "%s: resuming from %s (iteration %d), where the stack's other runs stand; its "
            "checkpoint of iteration %d was written when the stack stopped",
            recs[i].dir.name,
            PREVIOUS_CHECKPOINT_FILE,
            behind,
            at[i],
        )
        points[i] = (ckpt, *points[i][1:])


def _train_together(cfgs, recs, points, stop, build, group, job_num, sweep_dir) -> list[dict]:
    """Build the net that trains these runs, open their records, and train them."""
    for key, values in unreachable(cfgs[0]).items():
        log.warning("%s", unreachable_message(cfgs[0], key, values, refused=False))
    ckpts = [p[0] for p in points]
    net, members = build(cfgs, recs, ckpts, job_num)
    for m in members:  # only once setup has succeeded, so a failed start locks nothing
        m.rec.write_config(to_dict(m.cfg))
    net.restore(members, ckpts)
    for m, (ckpt, old, _) in zip(members, points, strict=True):
        cfg_dict = to_dict(m.cfg)
        wandb = WandbMirror(
            m.cfg.logger,
            m.rec.dir,
            name=m.rec.dir.name,
            group=group,
            job_type=m.cfg.experiment_name,
            config=cfg_dict,
            sweep_dir=sweep_dir,
            concurrent=net.k > 1,
        )
        summary = start_summary(m, net, old, ckpt)
        if net.k > 1:
            summary["stack"] = {
                "size": net.k,
                "member": m.index,
                "runs": [x.rec.dir.name for x in members],
            }
        m.sinks = Sinks(m.rec, wandb, summary)
    net.describe(members)
    with logging_redirect_tqdm():  # log lines print above the progress bar, not glued onto it
        return _loop(net, members, stop)


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


def preempted(signum: int, it: int, recs: list[RunRecord]) -> Preempted:
    """The stop of runs whose checkpoints are written, and how to resume them."""
    name = "SIGINT (Ctrl-C)" if signum == signal.SIGINT else signal.Signals(signum).name
    paths = ", ".join(str(r.checkpoints.path) for r in recs)
    return Preempted(
        f"stopped by {name} at iteration {it}; checkpoint{'s' if len(recs) > 1 else ''} written to "
        f"{paths}. {RERUN_TO_RESUME}",
        signum=signum,
    )


def start_job(
    cfg: Config, job_num: int | None, ckpts: dict[Path, dict | None]
) -> tuple[torch.device, FastPath]:
    """The job's device and fast path, its process set up for it (threads, backend flags, no
    compiled code of an earlier job); ``ckpts`` (by path) must come from this device type."""
    t = cfg.trainer
    log.info("%s", set_threads(t.num_threads))
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
    ckpt, old = rec.checkpoints.load(), rec.read_summary() or {}
    rec.check_resumable(to_dict(cfg), ckpt, old)
    done = ckpt["iteration"] if ckpt is not None else old.get("iterations") or 0
    complete = done >= iteration_schedule(cfg).iterations and old.get("status") == "completed"
    if complete:
        gone = (
            ""
            if ckpt is not None
            else "; its checkpoint is gone, so it can be read but not extended"
        )
        log.info("%s is already complete (%d iterations)%s. Nothing to do.", rec.dir, done, gone)
    return ckpt, old, complete


@dataclass
class Member:
    """One run a net trains: its config, record, schedule, progress and sinks (the names
    :func:`start_summary` reads), its own net as built (for its parameter count)."""

    index: int  # its place in the net (a stack's slice; 0 for a net of its own)
    cfg: Config
    rec: RunRecord
    sched: LRSchedule
    progress: Progress
    model: nn.Module
    total: int  # the iterations to train, counted as the paper counts them
    note: str = ""  # the data's caveat, if any (no test batch)
    sinks: Sinks | None = None
    lr: float | None = None
    saved_at: int | None = None  # the iteration of the last checkpoint written or loaded
    diverged: Diverged | None = None

    @property
    def alive(self) -> bool:
        return self.diverged is None


@dataclass
class SingleNet:
    """What one run trains with, built from its config on its device: the net, its step and
    batches. A stacked net (``train_stack.StackedNet``) has the same methods for k runs."""

    device: torch.device
    fast: FastPath
    data: DeviceData
    model: nn.Module
    step: TrainStep
    k = 1

    @classmethod
    def build(
        cls,
        cfgs: list[Config],
        recs: list[RunRecord],
        ckpts: list[dict | None],
        job_num: int | None,
    ) -> tuple[SingleNet, list[Member]]:
        (cfg,), (rec,) = cfgs, recs
        t = cfg.trainer
        device, fast = start_job(cfg, job_num, {rec.checkpoints.path: ckpts[0]})
        splits = load_splits(cfg.dataset)
        data = DeviceData(
            splits,
            device,
            batch_size=t.batch_size,
            augment=cfg.dataset.augment,
            seed=cfg.seed,
            size=cfg.dataset.image_size,
            probe_images=cfg.diagnostics.layer_stats_images,
        )
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model).to(device, memory_format=fast.memory_format)
        step = TrainStep(model, fast.optimizer(model.parameters(), cfg.optimizer), fast)
        schedule = iteration_schedule(cfg)  # epochs, when the schedule counts them, as iterations
        member = Member(
            0,
            cfg,
            rec,
            LRSchedule(schedule, cfg.optimizer.lr),
            Progress(device),
            model,
            schedule.iterations,
            splits.note,
        )
        return cls(device, fast, data, model, step), [member]

    def owners(self, m: Member) -> dict:
        """The checkpoint's keys and the objects whose state each holds (with ``progress``'s
        keys)."""
        return {
            "model": self.model,
            "optimizer": self.step.opt,
            "scaler": self.step.scaler,
            "schedule": m.sched,
            "batches": self.data.batches,
            "torch_rng": TorchRNG(),
        }

    def member_state(self, m: Member) -> dict:
        return {k: o.state_dict() for k, o in self.owners(m).items()}

    def restore(self, members: list[Member], ckpts: list[dict | None]) -> None:
        (m,), (ckpt,) = members, ckpts
        if ckpt is not None:
            checkpoint.check_format(ckpt, m.rec.checkpoints.path)
            for key, owner in self.owners(m).items():
                if key != "scaler" or ckpt.get(key):  # an fp32 run's scaler has no state
                    owner.load_state_dict(ckpt[key])
            match_optimizer_strides(self.step.opt)
            m.progress.load_state_dict(ckpt)
            m.saved_at = m.progress.it
            log.info("Resuming %s from iteration %d", m.rec.dir, m.progress.it)
        m.rec.rewind(m.progress.it)

    def set_lr(self, members: list[Member]) -> None:
        (m,) = members
        if (lr := m.sched.lr(m.progress.it)) != m.lr:
            m.lr = lr
            for g in self.step.opt.param_groups:
                g["lr"] = lr

    def add(
        self, loss: torch.Tensor, out: torch.Tensor, y: torch.Tensor, members: list[Member]
    ) -> None:
        members[0].progress.add(loss, out, y)  # device tensors: no sync

    def evaluate(self, x, y, batch_size: int) -> list[tuple[float, float]]:
        return [evaluate(self.model, x, y, batch_size, self.data.mean, self.fast, self.data.size)]

    def nets(self) -> list[nn.Module]:
        """Each member as a net of its own (Fig. 7's statistics are taken on it)."""
        return [self.model]

    def grad_norms(self) -> list[list[dict]]:
        return [conv_grad_norms(self.model)]

    def freeze(self, m: Member) -> None:
        pass  # a net of one run ends with it

    def describe(self, members: list[Member]) -> None:
        (mem,) = members
        cfg, m = mem.cfg, mem.cfg.model
        log.info("Run directory: %s", mem.rec.dir)
        log.info("Fast path: %s", ", ".join(f"{k}={v}" for k, v in self.fast.describe().items()))
        log.info(
            "%s: %s %s-%d (n=%s, %s shortcuts), %s params, %s/%s, %d train images, eval on %s, "
            "device %s",
            cfg.name,
            m.name,
            "ResNet" if m.residual else "plain",
            m.depth,
            m.n,
            shortcut_of(m) or "no",
            f"{count_params(self.model):,}",
            cfg.dataset.name,
            cfg.dataset.protocol,
            len(self.data.batches.x),
            "+".join(self.data.evals) or "nothing",
            self.device,
        )


def _checkpoint(net, m: Member) -> None:
    m.saved_at = m.progress.it
    m.rec.checkpoints.save(
        checkpoint.build_state(
            to_dict(m.cfg),
            net.device,
            m.progress.state_dict(),
            net.member_state(m),
            m.sinks.results(),
        )
    )


def _stop(net, alive: list[Member], batch_size: int) -> None:
    """Before a stop: the time since the last log row added to both clocks (in the checkpoint and
    the summary, so a resumed run's wall time and speed count every step), a checkpoint where
    needed."""
    device_sync(net.device)
    now = clock()
    for m in alive:
        m.progress.steps_done(now, batch_size)
        m.progress.window_closed(now)
        m.sinks.summary.update(m.progress.clocks(batch_size))
        if m.saved_at != m.progress.it:
            _checkpoint(net, m)


def _evaluate(net, members: list[Member]) -> dict[int, dict]:
    """Each living member's loss and error on every evaluation split, by its index; its best
    errors and Fig. 7's statistics updated."""
    alive = [m for m in members if m.alive]
    rows: dict[int, dict] = {m.index: {} for m in alive}
    t, diag, it = members[0].cfg.trainer, members[0].cfg.diagnostics, members[0].progress.it
    for split, (x, y) in net.data.evals.items():
        found = net.evaluate(x, y, t.eval_batch_size)
        for m in alive:
            rows[m.index][f"{split}_loss"], rows[m.index][f"{split}_err"] = found[m.index]
            m.progress.improve(split, rows[m.index][f"{split}_err"])
    for m in alive if net.data.evals else ():
        errs = ", ".join(f"{s} err {rows[m.index][f'{s}_err']:.2f}%" for s in net.data.evals)
        log.info("iter %d: %s", it, errs if net.k == 1 else f"{m.rec.dir.name}: {errs}")
    if diag.layer_stats == "eval" or (diag.layer_stats == "end" and it == members[0].total):
        nets = net.nets()
        for m in alive:
            stats = layer_response_std(nets[m.index], net.data.probe_batches(t.eval_batch_size))
            m.rec.append_rows(
                LAYER_STATS_FILE, LAYER_STATS_COLUMNS, [{"iter": it, **r} for r in stats]
            )
    return rows


def _grad_norms_hook(net, members: list[Member]):
    """At the iterations ``diagnostics.grad_norms`` names: a hook that records the gradients'
    norms."""
    it = members[0].progress.it + 1  # the step about to run
    if it not in members[0].cfg.diagnostics.grad_norms:
        return None

    def record():
        for m, rows in zip(members, net.grad_norms(), strict=True):
            if m.alive:
                m.rec.append_rows(
                    GRAD_NORMS_FILE, GRAD_NORM_COLUMNS, [{"iter": it, **r} for r in rows]
                )

    return record


def _train_row(net, m: Member, row: dict) -> None:
    """The member's training loss and error; a non-finite loss ends it as diverged (its row
    recorded first), and the other members of a stack go on."""
    row["train_loss"], row["train_err"] = m.progress.read_window()  # reads the device window back
    try:
        check_finite(row, m.sinks)
    except Diverged as ex:
        if net.k > 1:
            log.warning("%s: %s The other runs of the stack go on.", m.rec.dir.name, ex)
        close_failed(m.sinks, ex, m.progress.it, m.saved_at)
        m.diverged = ex
        net.freeze(m)
        return
    if m.sched.observe_train_error(row["train_err"] / 100, m.progress.it):
        log.info(
            "%sarm-up over at iteration %d (train error %.1f%%): lr %g from now on",
            "W" if net.k == 1 else f"{m.rec.dir.name}: w",
            m.progress.it,
            row["train_err"],
            m.sched.lr(m.progress.it),
        )


def _loop(net, members: list[Member], stop: dict) -> list[dict]:
    """Set the lr, take a step, account; at the log/eval cadence read back, evaluate, record,
    checkpoint. One step trains every member; each member's rows, evaluations, checkpoints and
    end are its own."""
    t, total, p = members[0].cfg.trainer, members[0].total, members[0].progress
    alive = list(members)
    bar = tqdm(
        total=total,
        initial=p.it,
        disable=not t.progress,
        dynamic_ncols=True,
        desc=members[0].cfg.name if net.k == 1 else f"stack of {net.k}",
        file=sys.stderr,
    )
    try:
        net.model.train()
        for m in members:
            m.progress.mark(clock())
        while p.it < total and alive:
            if stop:  # SIGTERM or Ctrl-C, checked between whole steps (their rows and evals done)
                _stop(net, alive, t.batch_size)
                raise preempted(stop["signal"], p.it, [m.rec for m in alive])
            net.set_lr(alive)
            x, y = net.data.batches.next()
            loss, out = net.step(x, y, _grad_norms_hook(net, members))
            net.add(loss, out, y, members)  # device tensors: no sync
            bar.update()
            it = p.it
            if not bar.disable and it < t.log_every and it & (it - 1) == 0:
                # sync point: the bar's first numbers, at iterations 1, 2, 4, ...
                # before the first log
                device_sync(net.device)
                show(bar, *alive[0].progress.peek(), alive[0].lr)
            is_log, is_eval = (
                it % t.log_every == 0 or it == total,
                it % t.eval_every == 0 or it == total,
            )
            if not (is_log or is_eval):
                continue
            device_sync(net.device)  # sync point: the queued steps finish before the clock is read
            now, rows = clock(), {}
            for m in alive:
                img_per_s = m.progress.steps_done(now, t.batch_size)
                row = rows[m.index] = {"iter": it, "epoch": net.data.batches.epoch, "lr": m.lr}
                if is_log and m.progress.seen:
                    _train_row(net, m, row)  # a diverged run ends here
                    row["img_per_s"] = img_per_s
            alive = [m for m in alive if m.alive]
            if is_eval and alive:
                for index, found in _evaluate(net, alive).items():
                    rows[index].update(
                        found
                    )  # reads its results back: nothing is left queued after it
            now = clock()
            for m in alive:
                m.progress.window_closed(now)
                rows[m.index]["time_s"] = m.progress.elapsed_s
                m.sinks.row(
                    rows[m.index]
                )  # metrics.csv and W&B; the summary's final_* errors follow it
                if is_eval:
                    m.sinks.summary.update(m.progress.results(t.batch_size))
                    _checkpoint(net, m)
                    # written after the checkpoint: the summary never runs ahead of it
                    m.sinks.update()
            logged = [rows[m.index] for m in alive if "train_loss" in rows[m.index]]
            if logged:
                show(
                    bar,
                    *(sum(r[k] for r in logged) / len(logged) for k in ("train_loss", "train_err")),
                    alive[0].lr,
                )
    except BaseException as ex:
        for m in alive:
            if m.alive:  # one that diverged in this window is closed already
                close_failed(m.sinks, ex, m.progress.it, m.saved_at)
        raise
    finally:
        bar.close()
    for m in alive:
        close_completed(m.sinks, m.sched, m.rec)
    if not alive:
        if net.k == 1:
            raise members[0].diverged
        raise Diverged(
            f"every run of the stack diverged: {', '.join(m.rec.dir.name for m in members)} "
            f"(each run's summary.json says where). Lower optimizer.lr, or warm up with "
            f"schedule.warmup=true."
        )
    return [m.sinks.summary for m in members]


def close_failed(sinks: Sinks, ex: BaseException, done: int, saved_at: int | None) -> None:
    """End a run that ``ex`` stopped after ``done`` iterations: interrupted, diverged or failed."""
    status = (
        "interrupted"
        if isinstance(ex, (KeyboardInterrupt, SystemExit))
        else "diverged"
        if isinstance(ex, Diverged)
        else "failed"
    )
    # iterations: those the record keeps (its last checkpoint);
    # iterations_done: where this attempt stopped
    kept = {} if saved_at is None else {"iterations": saved_at}
    sinks.close(
        False, status=status, error=f"{type(ex).__name__}: {ex}", iterations_done=done, **kept
    )


def close_completed(sinks: Sinks, sched: LRSchedule, rec: RunRecord) -> dict:
    """End a run that trained all its iterations; its summary."""
    sinks.close(True, status="completed", finished_at=_now(), warmup_ended_at=sched.warmup_ended_at)
    s = sinks.summary
    log.info(
        "Done: %s. Run directory: %s",
        ", ".join(f"{k}={s[k]:.2f}" for k in s if k.startswith("final_") and k.endswith("_err")),
        rec.dir,
    )
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


def start_summary(run: Member, net, old: dict, ckpt: dict | None) -> dict:
    """The summary a run starts (or resumes) with; the loop adds its results as they come."""
    cfg, p, data = run.cfg, run.progress, net.data
    stats = cfg.diagnostics.layer_stats != "off"
    test = "test" in data.evals
    summary = {
        "name": cfg.name,
        "run_dir": str(run.rec.dir),
        "status": "running",
        "model": cfg.model.name,
        "depth": cfg.model.depth,
        "n": cfg.model.n,
        "residual": cfg.model.residual,
        "shortcut": shortcut_of(cfg.model),
        "params": count_params(run.model),
        "dataset": cfg.dataset.name,
        "protocol": cfg.dataset.protocol,
        "seed": cfg.seed,
        "eval_splits": list(data.evals),
        "test_available": test,
        "reported_error": "test" if test else "validation",
        "note": run.note,
        "iterations": p.it,
        "iterations_total": run.total,
        "milestones": list(run.sched.cfg.milestones),
        "warmup": bool(cfg.schedule.warmup),
        "batch_size": cfg.trainer.batch_size,
        "device": str(net.device),
        "device_name": torch.cuda.get_device_name(net.device)
        if net.device.type == "cuda"
        else platform_cpu(),
        "fast_path": net.fast.describe(),
        "cpu_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "versions": library_versions(),
        "git_commit": git_commit(),
        # a resumed run keeps its first start; a fresh start (no checkpoint to resume) is a new one
        "started_at": (old.get("started_at") if ckpt is not None else None) or _now(),
        "resumed_from": p.it or None,
        "layer_stats": cfg.diagnostics.layer_stats,
        "layer_stats_split": data.probe_split if stats else None,
        "layer_stats_images": len(data.probe) if stats else None,
    }
    if ckpt is not None:  # the results as of the checkpoint (an older summary may lag behind it)
        summary.update(
            ckpt.get("results")
            or {
                k: v
                for k, v in old.items()
                if k.startswith(("final_", "best_")) or k in RESULT_KEYS
            }
        )
    return summary


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")

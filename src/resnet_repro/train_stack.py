"""Train k runs of one depth as one stacked net and record each as its own run (``train_stack``).

The members (``stacking.py`` says which runs may stack) differ only in ``model.residual`` and
``seed``. One :class:`~resnet_repro.models.stacked.StackedCifarResNet` holds them all; each member
keeps its own initialisation (its seed's, as its separate run draws it), data order and
augmentation (its own generator), BN statistics, momentum, learning rate and warm-up, best errors,
and its own record: run directory, ``config.yaml``, ``metrics.csv``, ``summary.json``, layer
statistics, gradient norms, W&B run and checkpoint, each what its separate run would write.

The checkpoint of a stack is its members' checkpoints, each in a separate run's format: a stack
resumes from them (bit-exact on the CPU), and so could each member alone. A member whose training
loss turns non-finite ends ``diverged``, as its separate run would; its slice of the stack is frozen
and the others go on. Members that stand at different iterations (one finished, one diverged
earlier) train one after another, as separate runs.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from . import train as single
from .config import Config, iteration_schedule, to_dict, unreachable, unreachable_message
from .data import load_splits
from .data.pipeline import DeviceData, eval_batches
from .device import device_sync
from .diagnostics import conv_grad_norms, layer_response_std
from .errors import Diverged, Preempted
from .files import (
    CHECKPOINT_FILE,
    GRAD_NORM_COLUMNS,
    GRAD_NORMS_FILE,
    LAYER_STATS_COLUMNS,
    LAYER_STATS_FILE,
)
from .models import build_model
from .models.stacked import StackedCifarResNet, StackedSGD, stacked_cross_entropy
from .record import RunRecord
from .schedule import LRSchedule
from .sinks import Sinks
from .stacking import check_members
from .state import Progress, TorchRNG
from .step import FastPath, TrainStep, match_optimizer_strides
from .wandb_mirror import WandbMirror

log = logging.getLogger("resnet_repro")


def train_stack(cfgs: list[Config], run_dirs: list[str | Path], *, group: str | None = None,
                job_num: int | None = None, sweep_dir: str | Path | None = None) -> list[dict]:
    """Run (or resume) these runs as one stack, each in its run directory; return their summaries."""
    check_members(cfgs)
    recs: list[RunRecord] = []
    try:
        for d in run_dirs:
            rec = RunRecord(d)
            rec.lock()  # one process per run directory
            recs.append(rec)
        with single.stop_on_signals() as stop:
            return _train_stack(cfgs, recs, stop, group=group, job_num=job_num, sweep_dir=sweep_dir)
    finally:
        for rec in recs:
            rec.unlock()


def _train_stack(cfgs: list[Config], recs: list[RunRecord], stop: dict, *, group, job_num, sweep_dir) -> list[dict]:
    points = [single.resume_point(c, r) for c, r in zip(cfgs, recs, strict=True)]
    summaries = [old if complete else None for _, old, complete in points]
    todo = [i for i, s in enumerate(summaries) if s is None]
    starts = {points[i][0]["iteration"] if points[i][0] else 0 for i in todo}
    if len(todo) > 1 and len(starts) == 1:
        for key, values in unreachable(cfgs[0]).items():
            log.warning("%s", unreachable_message(cfgs[0], key, values, refused=False))
        stack = Stack.build([cfgs[i] for i in todo], [recs[i] for i in todo], [points[i] for i in todo], job_num)
        stack.open_records(group, sweep_dir)
        with logging_redirect_tqdm():
            for i, s in zip(todo, _loop(stack, stop), strict=True):
                summaries[i] = s
        return summaries
    if len(todo) > 1:
        log.info("The runs of this stack stand at different iterations (%s): they train one after another.",
                 ", ".join(f"{recs[i].dir.name} at {points[i][0]['iteration'] if points[i][0] else 0}" for i in todo))
    diverged = []
    for i in todo:
        try:
            summaries[i] = single.train_record(cfgs[i], recs[i], stop, group=group, job_num=job_num, sweep_dir=sweep_dir)
        except Diverged as ex:  # recorded in its run; the others go on, as in a stack
            summaries[i] = recs[i].read_summary()
            diverged.append(ex)
    if diverged and len(diverged) == len(todo):
        raise diverged[0]
    return summaries


@dataclass
class Member:
    """One run of a stack: what a separate :class:`~resnet_repro.train.Run` holds of its own (the
    names :func:`~resnet_repro.train.start_summary` reads), and its sinks."""

    index: int  # its slice of the stack
    cfg: Config
    rec: RunRecord
    sched: LRSchedule
    progress: Progress
    model: nn.Module  # its own net as built (for its parameter count)
    device: torch.device
    fast: FastPath
    data: DeviceData
    total: int
    note: str = ""
    sinks: Sinks | None = None
    lr: float | None = None
    saved_at: int | None = None
    alive: bool = True


@dataclass
class Stack:
    """The stacked net, its optimizer, step and batches, and its members."""

    cfg: Config  # the first member's: everything but model.residual and seed is every member's
    members: list[Member]
    model: StackedCifarResNet
    opt: StackedSGD
    step: TrainStep
    data: DeviceData
    device: torch.device
    fast: FastPath
    separate_impl: str  # the optimizer kernel a separate run would use (its checkpoint says so)
    points: list[tuple]
    grad_iters: frozenset
    windows: tuple[torch.Tensor, torch.Tensor]  # every member's training loss and errors since the last log

    @classmethod
    def build(cls, cfgs: list[Config], recs: list[RunRecord], points: list[tuple], job_num: int | None) -> Stack:
        cfg, t = cfgs[0], cfgs[0].trainer
        device, fast = single.start_job(cfg, job_num, {r.path(CHECKPOINT_FILE): p[0] for r, p in zip(recs, points, strict=True)})
        separate_impl, fast = fast.optimizer_impl, dataclasses.replace(fast, optimizer_impl="foreach")  # StackedSGD's kernel
        splits = load_splits(cfg.dataset)
        data = DeviceData(splits, device, batch_size=t.batch_size, augment=cfg.dataset.augment,
                          seed=[c.seed for c in cfgs], size=cfg.dataset.image_size,
                          probe_images=cfg.diagnostics.layer_stats_images)
        nets = []
        for c in cfgs:  # each member's initialisation, drawn as its separate run draws it
            torch.manual_seed(c.seed)
            nets.append(build_model(c.model))
        model = StackedCifarResNet.from_members(nets).to(device, memory_format=fast.memory_format)
        o = cfg.optimizer
        opt = StackedSGD(model.parameters(), len(cfgs), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                         nesterov=o.nesterov)
        step = TrainStep(model, opt, fast, loss=stacked_cross_entropy)
        windows = (torch.zeros(len(cfgs), device=device), torch.zeros(len(cfgs), device=device, dtype=torch.long))
        schedule = iteration_schedule(cfg)
        members = [Member(i, c, r, LRSchedule(schedule, o.lr), Progress(device, window=(windows[0][i], windows[1][i])),
                          net, device, fast, data, schedule.iterations, splits.note)
                   for i, (c, r, net) in enumerate(zip(cfgs, recs, nets, strict=True))]
        stack = cls(cfg, members, model, opt, step, data, device, fast, separate_impl, points,
                    frozenset(cfg.diagnostics.grad_norms), windows)
        stack.restore()
        return stack

    @property
    def k(self) -> int:
        return len(self.members)

    @property
    def it(self) -> int:
        return self.members[0].progress.it

    @property
    def total(self) -> int:
        return self.members[0].total

    @property
    def alive(self) -> list[Member]:
        return [m for m in self.members if m.alive]

    def restore(self) -> None:
        """Continue from the members' checkpoints (all of one iteration), or start; rows past them dropped."""
        ckpts = [p[0] for p in self.points]
        if ckpts[0] is not None:
            for m, ck in zip(self.members, ckpts, strict=True):
                single.check_format(ck, m.rec)
                m.model.load_state_dict(ck["model"])
                m.sched.load_state_dict(ck["schedule"])
                m.progress.load_state_dict(ck)
                m.saved_at = m.progress.it
            self.model.load_members([m.model for m in self.members])
            self.opt.load_member_state_dicts([ck["optimizer"] for ck in ckpts])
            match_optimizer_strides(self.opt)
            self.data.batches.load_state_dict({"members": [ck["batches"] for ck in ckpts]})
            TorchRNG().load_state_dict(ckpts[0]["torch_rng"])
            log.info("Resuming the stack of %s from iteration %d", ", ".join(m.rec.dir.name for m in self.members), self.it)
        for m in self.members:
            m.rec.rewind(m.progress.it)

    def open_records(self, group: str | None, sweep_dir) -> None:
        """Each member's config, W&B run and summary, once setup has succeeded."""
        for m, (ckpt, old, _) in zip(self.members, self.points, strict=True):
            cfg_dict = to_dict(m.cfg)
            m.rec.write_config(cfg_dict)
            wandb = WandbMirror(m.cfg.logger, m.rec.dir, name=m.rec.dir.name, group=group, job_type=m.cfg.experiment_name,
                                config=cfg_dict, sweep_dir=sweep_dir, concurrent=True)
            summary = single.start_summary(m, old, ckpt)
            summary["stack"] = {"size": self.k, "member": m.index, "runs": [x.rec.dir.name for x in self.members]}
            m.sinks = Sinks(m.rec, wandb, summary)
        self.describe()

    def describe(self) -> None:
        m = self.cfg.model
        log.info("Stack of %d runs (depth %d, %s) as one grouped net: %s", self.k, m.depth,
                 ", ".join(f"{'ResNet' if x.cfg.model.residual else 'plain'} seed {x.cfg.seed}" for x in self.members),
                 ", ".join(str(x.rec.dir) for x in self.members))
        log.info("Fast path: %s, device %s", ", ".join(f"{k}={v}" for k, v in self.fast.describe().items()), self.device)

    def set_lr(self) -> None:
        for m in self.alive:
            m.lr = m.sched.lr(self.it)
        self.opt.set_lr([m.lr or 0.0 for m in self.members])  # a frozen member stays at 0

    def add(self, losses: torch.Tensor, out: torch.Tensor, y: torch.Tensor) -> None:
        """Account one step for every member at once (device tensors, no sync)."""
        loss_w, wrong_w = self.windows
        loss_w += losses.detach() * len(y)
        wrong_w += (out.argmax(-1) != y).sum(0)
        for m in self.members:
            m.progress.count(len(y))

    def grad_norms_hook(self):
        it = self.it + 1
        if it not in self.grad_iters:
            return None

        def record():
            for m, rows in zip(self.members, conv_grad_norms(self.model, members=self.k), strict=True):
                if m.alive:
                    m.rec.append_rows(GRAD_NORMS_FILE, GRAD_NORM_COLUMNS, [{"iter": it, **r} for r in rows])
        return record

    def train_row(self, m: Member, row: dict) -> None:
        """The member's training loss and error; a non-finite loss ends it as diverged, the others go on."""
        row["train_loss"], row["train_err"] = m.progress.read_window()
        try:
            single.check_finite(row, m.sinks)
        except Diverged as ex:
            log.warning("%s: %s The other runs of the stack go on.", m.rec.dir.name, ex)
            single.close_failed(m.sinks, ex, m.progress.it, m.saved_at)
            m.alive = False
            self.opt.freeze([m.index])
            return
        if m.sched.observe_train_error(row["train_err"] / 100, m.progress.it):
            log.info("%s: warm-up over at iteration %d (train error %.1f%%): lr %g from now on", m.rec.dir.name,
                     m.progress.it, row["train_err"], m.sched.lr(m.progress.it))

    def evaluate(self) -> dict[int, dict]:
        """Each living member's evaluation row (``Run.evaluate``'s keys), by its index; its best
        errors and Fig. 7's statistics updated."""
        rows = {m.index: {} for m in self.alive}
        t, diag = self.cfg.trainer, self.cfg.diagnostics
        for split, (x, y) in self.data.evals.items():
            found = evaluate_stack(self.model, x, y, t.eval_batch_size, self.data.mean, self.fast, self.data.size)
            for m in self.alive:
                row = rows[m.index]
                row[f"{split}_loss"], row[f"{split}_err"] = found[m.index]
                m.progress.improve(split, row[f"{split}_err"])
                if split == next(reversed(self.data.evals)):
                    log.info("iter %d: %s: %s", self.it, m.rec.dir.name,
                             ", ".join(f"{s} err {row[f'{s}_err']:.2f}%" for s in self.data.evals))
        if diag.layer_stats == "eval" or (diag.layer_stats == "end" and self.it == self.total):
            nets = self.model.to_members()  # each member as its own net: Fig. 7's statistics as it gives them
            for m in self.alive:
                stats = layer_response_std(nets[m.index], self.data.probe_batches(t.eval_batch_size))
                m.rec.append_rows(LAYER_STATS_FILE, LAYER_STATS_COLUMNS, [{"iter": self.it, **r} for r in stats])
        return rows

    def record(self, rows: dict[int, dict], is_eval: bool) -> None:
        """Close the window: each living member's row, and at an evaluation its results and checkpoint."""
        now = single.clock()
        for m in self.alive:
            m.progress.window_closed(now)
            rows[m.index]["time_s"] = m.progress.elapsed_s
            m.sinks.row(rows[m.index])
            if is_eval:
                m.sinks.summary.update(m.progress.results(self.cfg.trainer.batch_size))
                self.checkpoint(m)
                m.sinks.update()  # after the checkpoint: the summary never runs ahead of it

    def show(self, bar: tqdm, rows: dict[int, dict]) -> None:
        """The progress bar: the living members' mean training loss and error, when logged."""
        logged = [rows[m.index] for m in self.alive if "train_loss" in rows[m.index]]
        if logged:
            single.show(bar, *(sum(r[k] for r in logged) / len(logged) for k in ("train_loss", "train_err")),
                        self.alive[0].lr)

    def checkpoint(self, m: Member) -> None:
        """The member's checkpoint, in a separate run's format (a stack resumes from its members')."""
        m.saved_at = m.progress.it
        opt = self.opt.member_state_dict(m.index)
        opt["param_groups"][0].update(foreach=self.separate_impl == "foreach" or None,
                                      fused=self.separate_impl == "fused" or None)
        owners = {"model": self.model.member_state_dict(m.index), "optimizer": opt,
                  "scaler": self.step.scaler.state_dict(), "schedule": m.sched.state_dict(),
                  "batches": self.data.batches.members[m.index].state_dict(), "torch_rng": TorchRNG().state_dict()}
        m.rec.save_checkpoint(single.checkpoint_state(m.cfg, self.device, m.progress, owners, m.sinks.results()))

    def preempted(self, signum: int) -> Preempted:
        for m in self.alive:
            if m.saved_at != m.progress.it:
                self.checkpoint(m)
        return single.preempted(signum, self.it, [m.rec for m in self.alive])


def _loop(stack: Stack, stop: dict) -> list[dict]:
    """``train._loop`` for a stack: one step trains every member; each member's rows, evaluations,
    checkpoints and end are its own."""
    t, total = stack.cfg.trainer, stack.total
    bar = tqdm(total=total, initial=stack.it, disable=not t.progress, dynamic_ncols=True,
               desc=f"stack of {stack.k}", file=sys.stderr)
    try:
        stack.model.train()
        for m in stack.members:
            m.progress.mark(single.clock())
        while stack.it < total and stack.alive:
            if stop:  # SIGTERM or Ctrl-C, checked between whole steps
                raise stack.preempted(stop["signal"])
            stack.set_lr()
            x, y = stack.data.batches.next()
            losses, out = stack.step(x, y, stack.grad_norms_hook())
            stack.add(losses, out, y)
            bar.update()
            it = stack.it
            is_log, is_eval = it % t.log_every == 0 or it == total, it % t.eval_every == 0 or it == total
            if not (is_log or is_eval):
                continue
            device_sync(stack.device)  # sync point: the queued steps finish before the clock is read
            now, rows = single.clock(), {}
            for m in stack.alive:
                img_per_s = m.progress.steps_done(now, t.batch_size)
                row = rows[m.index] = {"iter": it, "epoch": stack.data.batches.epoch, "lr": m.lr}
                if is_log and m.progress.seen:
                    stack.train_row(m, row)  # reads the device window back; a diverged run ends here
                    row["img_per_s"] = img_per_s
            if is_eval and stack.alive:
                for index, found in stack.evaluate().items():
                    rows[index].update(found)  # reads its results back: nothing is left queued after it
            stack.record(rows, is_eval)
            stack.show(bar, rows)
    except BaseException as ex:
        for m in stack.alive:
            single.close_failed(m.sinks, ex, m.progress.it, m.saved_at)
        raise
    finally:
        bar.close()
    for m in stack.alive:
        single.close_completed(m.sinks, m.sched, m.rec)
    if not any(m.alive for m in stack.members):
        raise Diverged(f"every run of the stack diverged: {', '.join(m.rec.dir.name for m in stack.members)} "
                       f"(each run's summary.json says where). Lower optimizer.lr, or warm up with schedule.warmup=true.")
    return [m.sinks.summary for m in stack.members]


@torch.no_grad()
def evaluate_stack(model: StackedCifarResNet, x, y, batch_size: int, mean, fast: FastPath,
                   size: int | None = None) -> list[tuple[float, float]]:
    """Every member's (mean loss, error %) over a whole split, in eval mode (``train.evaluate`` per member)."""
    model.eval()
    k = model.k
    loss_sum = torch.zeros(k, device=x.device)
    wrong = torch.zeros(k, device=x.device, dtype=torch.long)
    for xb, yb in eval_batches(x, y, batch_size, mean, size):
        with fast.autocast():
            out = model(xb.repeat(1, k, 1, 1).contiguous(memory_format=fast.memory_format))  # (B, k, classes)
        per = F.cross_entropy(out.to(loss_sum.dtype).flatten(0, 1), yb.repeat_interleave(k), reduction="none").view(-1, k)
        loss_sum += per.sum(0)
        wrong += (out.argmax(-1) != yb[:, None]).sum(0)
    model.train()
    return [(loss / len(x), 100.0 * w / len(x)) for loss, w in zip(loss_sum.tolist(), wrong.tolist(), strict=True)]

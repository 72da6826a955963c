"""Train k runs of one depth as one stacked net and record each as its own run (``train_stack``):
the stacked net (:class:`StackedNet`) for the training loop of ``train.py``.

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
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..config import Config, iteration_schedule
from ..data import load_splits
from ..data.pipeline import DeviceData, eval_batches
from ..models import build_model
from ..models.stacked import StackedCifarResNet, StackedSGD, stacked_cross_entropy
from ..record.checkpoint import check_format
from ..record.run_record import RunRecord
from .diagnostics import conv_grad_norms
from .schedule import LRSchedule
from .stacking import check_members
from .state import Progress, TorchRNG
from .step import FastPath, TrainStep, match_optimizer_strides
from .train import Member, start_job, train_runs

log = logging.getLogger("resnet_repro")


def train_stack(
    cfgs: list[Config],
    run_dirs: list[str | Path],
    *,
    group: str | None = None,
    job_num: int | None = None,
    sweep_dir: str | Path | None = None,
) -> list[dict]:
    """Run (or resume) these runs as one stack, each in its run directory; return their
    summaries."""
    check_members(cfgs)
    return train_runs(
        cfgs, run_dirs, StackedNet.build, group=group, job_num=job_num, sweep_dir=sweep_dir
    )


@dataclass
class StackedNet:
    """The stacked net, its optimizer, step and batches, for the loop of ``train.py`` (the methods
    of :class:`~resnet_repro.training.train.SingleNet`, for k members)."""

    device: torch.device
    fast: FastPath
    data: DeviceData
    model: StackedCifarResNet
    opt: StackedSGD
    step: TrainStep
    members: list[Member]
    separate_impl: str  # the optimizer kernel a separate run would use (its checkpoint says so)
    windows: tuple[
        torch.Tensor, torch.Tensor
    ]  # every member's training loss and errors since the last log

    @classmethod
    def build(
        cls,
        cfgs: list[Config],
        recs: list[RunRecord],
        ckpts: list[dict | None],
        job_num: int | None,
    ) -> tuple[StackedNet, list[Member]]:
        cfg, t = (
            cfgs[0],
            cfgs[0].trainer,
        )  # everything but model.residual and seed is every member's
        device, fast = start_job(
            cfg, job_num, {r.checkpoints.path: c for r, c in zip(recs, ckpts, strict=True)}
        )
        separate_impl, fast = (
            fast.optimizer_impl,
            dataclasses.replace(fast, optimizer_impl="foreach"),
        )  # StackedSGD's kernel
        splits = load_splits(cfg.dataset)
        data = DeviceData(
            splits,
            device,
            batch_size=t.batch_size,
            augment=cfg.dataset.augment,
            seed=[c.seed for c in cfgs],
            size=cfg.dataset.image_size,
            probe_images=cfg.diagnostics.layer_stats_images,
        )
        nets = []
        for c in cfgs:  # each member's initialisation, drawn as its separate run draws it
            torch.manual_seed(c.seed)
            nets.append(build_model(c.model))
        model = StackedCifarResNet.from_members(nets).to(device, memory_format=fast.memory_format)
        o = cfg.optimizer
        opt = StackedSGD(
            model.parameters(),
            len(cfgs),
            lr=o.lr,
            momentum=o.momentum,
            weight_decay=o.weight_decay,
            nesterov=o.nesterov,
        )
        step = TrainStep(model, opt, fast, loss=stacked_cross_entropy)
        windows = (
            torch.zeros(len(cfgs), device=device),
            torch.zeros(len(cfgs), device=device, dtype=torch.long),
        )
        schedule = iteration_schedule(cfg)
        members = [
            Member(
                i,
                c,
                r,
                LRSchedule(schedule, o.lr),
                Progress(device, window=(windows[0][i], windows[1][i])),
                net,
                schedule.iterations,
                splits.note,
            )
            for i, (c, r, net) in enumerate(zip(cfgs, recs, nets, strict=True))
        ]
        return cls(device, fast, data, model, opt, step, members, separate_impl, windows), members

    @property
    def k(self) -> int:
        return len(self.members)

    def restore(self, members: list[Member], ckpts: list[dict | None]) -> None:
        """Continue from the members' checkpoints (all of one iteration), or start; rows past them
        dropped."""
        if ckpts[0] is not None:
            for m, ck in zip(members, ckpts, strict=True):
                check_format(ck, m.rec.checkpoints.path)
                m.model.load_state_dict(ck["model"])
                m.sched.load_state_dict(ck["schedule"])
                m.progress.load_state_dict(ck)
                m.saved_at = m.progress.it
            self.model.load_members([m.model for m in members])
            self.opt.load_member_state_dicts([ck["optimizer"] for ck in ckpts])
            match_optimizer_strides(self.opt)
            self.data.batches.load_state_dict({"members": [ck["batches"] for ck in ckpts]})
            TorchRNG().load_state_dict(ckpts[0]["torch_rng"])
            log.info(
                "Resuming the stack of %s from iteration %d",
                ", ".join(m.rec.dir.name for m in members),
                members[0].progress.it,
            )
        for m in members:
            m.rec.rewind(m.progress.it)

    def member_state(self, m: Member) -> dict:
        """The member's checkpoint states, in a separate run's format (a stack resumes from its
        members')."""
        opt = self.opt.member_state_dict(m.index)
        opt["param_groups"][0].update(
            foreach=self.separate_impl == "foreach" or None,
            fused=self.separate_impl == "fused" or None,
        )
        return {
            "model": self.model.member_state_dict(m.index),
            "optimizer": opt,
            "scaler": self.step.scaler.state_dict(),
            "schedule": m.sched.state_dict(),
            "batches": self.data.batches.members[m.index].state_dict(),
            "torch_rng": TorchRNG().state_dict(),
        }

    def set_lr(self, alive: list[Member]) -> None:
        for m in alive:
            m.lr = m.sched.lr(m.progress.it)
        self.opt.set_lr([m.lr or 0.0 for m in self.members])  # a frozen member stays at 0

    def add(
        self, losses: torch.Tensor, out: torch.Tensor, y: torch.Tensor, members: list[Member]
    ) -> None:
        """Account one step for every member at once (device tensors, no sync)."""
        loss_w, wrong_w = self.windows
        loss_w += losses.detach() * len(y)
        wrong_w += (out.argmax(-1) != y).sum(0)
        for m in members:
            m.progress.count(len(y))

    def evaluate(self, x, y, batch_size: int) -> list[tuple[float, float]]:
        return evaluate_stack(
            self.model, x, y, batch_size, self.data.mean, self.fast, self.data.size
        )

    def nets(self):
        return (
            self.model.to_members()
        )  # each member as its own net: Fig. 7's statistics as it gives them

    def grad_norms(self) -> list[list[dict]]:
        return conv_grad_norms(self.model, members=self.k)

    def freeze(self, m: Member) -> None:
        self.opt.freeze([m.index])

    def describe(self, members: list[Member]) -> None:
        m = members[0].cfg.model
        log.info(
            "Stack of %d runs (depth %d, %s) as one grouped net: %s",
            self.k,
            m.depth,
            ", ".join(
                f"{'ResNet' if x.cfg.model.residual else 'plain'} seed {x.cfg.seed}"
                for x in members
            ),
            ", ".join(str(x.rec.dir) for x in members),
        )
        log.info(
            "Fast path: %s, device %s",
            ", ".join(f"{k}={v}" for k, v in self.fast.describe().items()),
            self.device,
        )


@torch.no_grad()
def evaluate_stack(
    model: StackedCifarResNet, x, y, batch_size: int, mean, fast: FastPath, size: int | None = None
) -> list[tuple[float, float]]:
    """Every member's (mean loss, error %) over a whole split, in eval mode (``train.evaluate`` per
    member)."""
    model.eval()
    k = model.k
    loss_sum = torch.zeros(k, device=x.device)
    wrong = torch.zeros(k, device=x.device, dtype=torch.long)
    for xb, yb in eval_batches(x, y, batch_size, mean, size):
        with fast.autocast():
            out = model(
                xb.repeat(1, k, 1, 1).contiguous(memory_format=fast.memory_format)
            )  # (B, k, classes)
        per = F.cross_entropy(
            out.to(loss_sum.dtype).flatten(0, 1), yb.repeat_interleave(k), reduction="none"
        ).view(-1, k)
        loss_sum += per.sum(0)
        wrong += (out.argmax(-1) != yb[:, None]).sum(0)
    model.train()
    return [
        (loss / len(x), 100.0 * w / len(x))
        for loss, w in zip(loss_sum.tolist(), wrong.tolist(), strict=True)
    ]

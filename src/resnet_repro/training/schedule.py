"""Learning-rate schedule counted in iterations, as in the paper: lr 0.1, /10 at 32k and 48k.

Optional warm-up (the paper's ResNet-110): lr ``warmup_lr`` until the training error drops below
``warmup_until_error``, then back to the base lr; warm-up ends at the first milestone at the latest.
"""

from __future__ import annotations

from bisect import bisect_right

from ..config import ScheduleConfig


class LRSchedule:
    def __init__(self, cfg: ScheduleConfig, base_lr: float):
        self.cfg, self.base_lr = cfg, base_lr
        # config.validate resolves schedule.warmup=auto by depth; unresolved (a bare schedule, no
        # net to judge), "auto" means no warm-up
        self.warming = cfg.warmup is True
        self.warmup_ended_at: int | None = None

    def lr(self, iteration: int) -> float:
        """The lr of the step that starts at ``iteration`` (0-based count of finished steps)."""
        milestones = list(self.cfg.milestones)
        if self.warming and (not milestones or iteration < milestones[0]):
            return self.cfg.warmup_lr
        lr = self.base_lr * self.cfg.gamma ** bisect_right(milestones, iteration)
        return float(f"{lr:.12g}")  # 0.1 * 0.1 is 0.01, not 0.010000000000000002

    def observe_train_error(self, error: float, iteration: int) -> bool:
        """Feed the training error (fraction) seen up to ``iteration``; True when warm-up ends
        now."""
        if self.warming and error < self.cfg.warmup_until_error:
            self.warming = False
            self.warmup_ended_at = iteration
            return True
        return False

    def state_dict(self) -> dict:
        return {"warming": self.warming, "warmup_ended_at": self.warmup_ended_at}

    def load_state_dict(self, state: dict) -> None:
        self.warming, self.warmup_ended_at = state["warming"], state["warmup_ended_at"]

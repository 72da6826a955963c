"""A run's own state beside its model and optimizer: the counters, the clock and the device-side
metric window (``Progress``), and the CPU random stream (``TorchRNG``).

Every piece of run state has an owner with ``state_dict``/``load_state_dict``; a checkpoint is the
states of those owners, so saving and restoring cannot disagree about what a run holds.
"""

from __future__ import annotations

import torch


class Progress:
    """Iterations done, time spent and the training loss/error summed on the device since the last
    log step (read back only at log steps, where the loop has synced).

    Two clocks: ``elapsed_s`` is wall time including evaluation; ``train_time_s`` counts training
    steps only. A window of steps starts at a mark (``mark``) and closes at a log or eval step.
    """

    def __init__(
        self, device: torch.device, window: tuple[torch.Tensor, torch.Tensor] | None = None
    ):
        """``window``: the (loss, wrong) tensors to sum into; a stacked net's members get views into
        ``(k,)`` tensors that one step adds to for all of them (``stack.py``)."""
        self.device = device
        self.it, self.elapsed_s, self.train_time_s = 0, 0.0, 0.0
        self.best: dict[str, float | int] = {}  # best_<split>_err and best_<split>_iter
        self.loss, self.wrong = window or (
            torch.zeros((), device=device),
            torch.zeros((), device=device, dtype=torch.long),
        )
        self._zero_window()
        self._mark_time, self._mark_it = 0.0, 0

    def _zero_window(self) -> None:
        self.loss.zero_()  # in place: a member's window is a view into its stack's
        self.wrong.zero_()
        self.seen = 0

    def add(self, loss: torch.Tensor, out: torch.Tensor, y: torch.Tensor) -> None:
        """Account one finished step (no host sync: device tensors only)."""
        self.loss += loss.detach() * len(y)
        self.wrong += (out.argmax(1) != y).sum()
        self.count(len(y))

    def count(self, images: int) -> None:
        """One finished step of ``images`` images (its loss and errors summed into the window)."""
        self.seen += images
        self.it += 1

    def peek(self) -> tuple[float, float]:
        """(mean training loss, training error %) over the window so far, which goes on (a
        read-back)."""
        return self.loss.item() / self.seen, 100.0 * self.wrong.item() / self.seen

    def read_window(self) -> tuple[float, float]:
        """(mean training loss, training error %) over the window; the window starts afresh."""
        loss, err = self.peek()
        self._zero_window()
        return loss, err

    def mark(self, now: float) -> None:
        """Start a window of steps at clock time ``now`` (nothing is left queued on the device)."""
        self._mark_time, self._mark_it = now, self.it

    def steps_done(self, now: float, batch_size: int) -> float:
        """Add the window's steps (up to ``now``, after a sync) to the training time; its img/s."""
        seconds = now - self._mark_time
        self.train_time_s += seconds
        return (self.it - self._mark_it) * batch_size / max(seconds, 1e-9)

    def window_closed(self, now: float) -> None:
        """The window (and its evaluation) is over at ``now``: add it to the wall time, mark
        anew."""
        self.elapsed_s += now - self._mark_time
        self.mark(now)

    def improve(self, split: str, err: float) -> None:
        if err < self.best.get(f"best_{split}_err", float("inf")):
            self.best[f"best_{split}_err"], self.best[f"best_{split}_iter"] = err, self.it

    def results(self, batch_size: int) -> dict:
        """The summary's view at an evaluation: best errors, the iterations trained and kept (the
        checkpoint written with it), the iteration the final_* errors are from, both clocks, the
        speed."""
        return {
            **self.best,
            "iterations": self.it,
            "evaluated_at": self.it,
            **self.clocks(batch_size),
        }

    def clocks(self, batch_size: int) -> dict:
        """Both clocks and the training speed so far."""
        return {
            "wall_time_s": self.elapsed_s,
            "train_time_s": self.train_time_s,
            "images_per_s": self.it * batch_size / max(self.train_time_s, 1e-9),
        }

    # The checkpoint's keys for this state, as every checkpoint since the first has had them.
    def state_dict(self) -> dict:
        return {
            "iteration": self.it,
            "elapsed_s": self.elapsed_s,
            "train_time_s": self.train_time_s,
            "best": dict(self.best),
            "window": {
                "loss": self.loss.detach().cpu().clone(),
                "wrong": self.wrong.cpu().clone(),
                "seen": self.seen,
            },
        }

    def load_state_dict(self, state: dict) -> None:
        self.it, self.elapsed_s, self.train_time_s = (
            state["iteration"],
            state["elapsed_s"],
            state["train_time_s"],
        )
        self.best = dict(state["best"])
        w = state["window"]
        self.loss.copy_(w["loss"])
        self.wrong.copy_(w["wrong"])
        self.seen = w["seen"]


class TorchRNG:
    """torch's global CPU random stream as a state owner (model initialisation and dropout draw on
    it)."""

    def state_dict(self) -> torch.Tensor:
        return torch.get_rng_state()

    def load_state_dict(self, state: torch.Tensor) -> None:
        torch.set_rng_state(state)

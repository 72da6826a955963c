"""A run's checkpoint, in one place: what it holds, building it from the objects that own its
state, writing it atomically (keeping the one before), reading it back through the safe loader
(falling back to the one before when the last is torn), and refusing one of another format or
device type.

``checkpoint.pt`` holds ``format``, ``config``, ``device_type``, the progress (``iteration``,
``window``, ``elapsed_s``, ``train_time_s``, ``best``), each owner's ``state_dict()`` (model,
optimizer, scaler, schedule, batches, torch_rng) and the results logged so far.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from pathlib import Path

import torch

from ..errors import CheckpointError
from .files import (
    ANSI,
    CHECKPOINT_FILE,
    PREVIOUS_CHECKPOINT_FILE,
    atomic_write,
    clip,
    first_line,
    write_problem,
)

log = logging.getLogger("resnet_repro")
FORMAT = 1
# What every checkpoint holds: one without any of these is refused.
KEYS = (
    "format",
    "config",
    "iteration",
    "model",
    "optimizer",
    "schedule",
    "batches",
    "window",
    "torch_rng",
    "elapsed_s",
    "train_time_s",
    "best",
)
CORRUPT_FILE = "checkpoint.corrupt.pt"  # a torn checkpoint.pt, moved aside for inspection


def build_state(
    config: dict, device: torch.device, progress: dict, owners: dict, results: dict
) -> dict:
    """A run's checkpoint: its config, device type, progress, its owners' states (by key) and its
    results so far."""
    return {
        "format": FORMAT,
        "config": config,
        "device_type": device.type,
        **progress,
        **owners,
        "results": results,
    }


def check_format(ckpt: dict, path: Path) -> None:
    if ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"Checkpoint {path} has an unknown format. Move the run directory aside to "
            f"start this run again; nothing was changed."
        )


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
            f"{path} was written on {saved} and this run is on {device.type}: the data sampler's "
            f"random stream cannot move between device types. Resume with trainer.device={saved}, "
            f"or start a new run (name=<new name>)."
        )


class Checkpoints:
    """A run directory's ``checkpoint.pt`` and the one before it, ``checkpoint.prev.pt``."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self.path, self.previous = self.dir / CHECKPOINT_FILE, self.dir / PREVIOUS_CHECKPOINT_FILE

    def kept(self) -> list[str]:
        """The names of the checkpoint files there (a failed write says they are intact)."""
        return [f.name for f in (self.path, self.previous) if f.is_file()]

    def save(self, state: dict) -> None:
        """Write ``checkpoint.pt`` atomically, keeping the one before as ``checkpoint.prev.pt``."""
        try:
            atomic_write(self.path, lambda f: torch.save(state, f), keep_previous=self.previous)
        except (OSError, RuntimeError) as ex:
            problem = write_problem(ex, self.dir)
            if problem is None:
                raise
            kept = self.kept()
            raise CheckpointError(
                f"Cannot write the checkpoint {self.path} ({problem}). Free disk space or make "
                f"{self.dir} writable, then rerun to resume; "
                + (
                    f"{' and '.join(kept)} from before {'are' if len(kept) > 1 else 'is'} intact."
                    if kept
                    else "there is no earlier checkpoint."
                )
            ) from None

    @staticmethod
    def read(p: Path) -> dict:
        """One checkpoint file through the safe loader (tensors only), checked for every key a
        checkpoint holds; a refusal is one line naming the file."""
        if p.stat().st_size == 0:
            raise CheckpointError(f"Checkpoint {p} is empty (0 bytes): its write was cut short.")
        try:
            ckpt = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as ex:
            text = ANSI.sub("", str(ex))
            refused = re.findall(
                r"unsupported global:?\s+(?:GLOBAL\s+)?([\w.]+)", text, flags=re.IGNORECASE
            )
            if refused:  # the safe loader refused it: nothing in it was run
                raise CheckpointError(
                    f"Checkpoint {p} refused: it holds objects that are not tensors "
                    f"({', '.join(dict.fromkeys(refused))}); it was not loaded."
                ) from None
            if (
                "Weights only load failed" in text
            ):  # torch's text ends on advice to load it unsafely: never relayed
                why = [
                    ln.strip()
                    for ln in text.partition("WeightsUnpickler error:")[2].splitlines()
                    if ln.strip()
                ]
                reason = (
                    f"UnpicklingError: {clip(why[0])}"
                    if why
                    else "UnpicklingError: the safe loader refused it"
                )
            else:
                reason = first_line(ex)
            raise CheckpointError(f"Checkpoint {p} is truncated or corrupt ({reason}).") from None
        it = ckpt.get("iteration") if isinstance(ckpt, dict) else None
        if not isinstance(it, int) or isinstance(it, bool) or it < 0:
            raise CheckpointError(
                f"Checkpoint {p} is not a resnet_repro checkpoint"
                + ("." if it is None else " (its iteration is not a count of steps).")
            )
        missing = [k for k in KEYS if k not in ckpt]
        if missing:
            raise CheckpointError(f"Checkpoint {p} is incomplete: it has no {', '.join(missing)}.")
        return ckpt

    def load(
        self,
        fix: str = "Move the run directory aside to start this run again, or choose another run "
        "directory; nothing was changed.",
    ) -> dict | None:
        """The last good checkpoint, or None when the run has none.

        A truncated or corrupt ``checkpoint.pt`` is moved aside to ``checkpoint.corrupt.pt`` and the
        run falls back to ``checkpoint.prev.pt`` when that one loads, saying so; otherwise it is a
        clear error ending on ``fix`` (training's advice unless told another). Loading never
        unpickles code (``weights_only=True``).
        """
        p, prev = self.path, self.previous
        self.check_paths()
        if not p.is_file() and not prev.is_file():
            return None
        if p.is_file():
            try:
                return self.read(p)
            except CheckpointError as ex:
                problem = str(ex)
        else:
            problem = f"Checkpoint {p} is missing (the run was stopped while replacing it)."
        if prev.is_file():
            try:
                ckpt = self.read(prev)
            except CheckpointError as ex2:
                problem += f" The previous one is unusable too: {ex2}"
            else:
                if p.is_file():
                    os.replace(p, self.dir / CORRUPT_FILE)  # kept for inspection, not reused
                log.warning(
                    "%s Resuming from the previous good checkpoint %s (iteration %d).",
                    problem,
                    prev.name,
                    ckpt["iteration"],
                )
                return ckpt
        raise CheckpointError(f"{problem} {fix}")

    def check_paths(self) -> None:
        """Refuse checkpoint paths that exist but are not regular files (a directory, a socket,
        ...): taking them for "no checkpoint" would restart the run over its record."""
        for p in (self.path, self.previous):
            if os.path.lexists(p) and not stat.S_ISREG(os.stat(p).st_mode if p.exists() else 0):
                kind = (
                    "a directory"
                    if p.is_dir()
                    else "a broken link"
                    if not p.exists()
                    else "not a regular file"
                )
                raise CheckpointError(
                    f"{p} is {kind}, not a checkpoint file. Move it aside (a run's checkpoint is a "
                    f"file); nothing was changed."
                )

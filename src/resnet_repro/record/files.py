"""The run record's file names and the one way its files are written (atomically).

Light on purpose (no torch): the command line, the sweep manifest and the report read these
before, or without, any training.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import tempfile
from pathlib import Path

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
CHECKPOINT_FILE = "checkpoint.pt"
PREVIOUS_CHECKPOINT_FILE = "checkpoint.prev.pt"  # the one before: the fallback when the last is torn
LOCK_FILE = "run.lock"
LAYER_STATS_FILE = "layer_stats.csv"
GRAD_NORMS_FILE = "grad_norms.csv"

METRIC_COLUMNS = [
    "iter", "epoch", "lr", "train_loss", "train_err", "val_loss", "val_err",
    "test_loss", "test_err", "time_s", "img_per_s",
]
LAYER_STATS_COLUMNS = ["iter", "layer", "module", "std", "channel_std"]
GRAD_NORM_COLUMNS = ["iter", "layer", "module", "grad_norm", "weight_norm"]
# The record's per-iteration tables: a resumed run drops their rows past its checkpoint.
TABLES = {METRICS_FILE: METRIC_COLUMNS, LAYER_STATS_FILE: LAYER_STATS_COLUMNS, GRAD_NORMS_FILE: GRAD_NORM_COLUMNS}
# Keys that may differ when a run is resumed: where and how it runs, not what it computes.
RUNTIME_KEYS = {
    "dataset.root", "dataset.download", "trainer.device", "trainer.progress",
    "trainer.num_threads", "trainer.channels_last", "trainer.compile", "trainer.cuda_graphs",
    "trainer.stack", "trainer.stack_members",
    "optimizer.impl", "logger.name", "logger.mode", "logger.project", "logger.entity",
    "logger.tags", "logger.group", "logger.job_type", "logger.init_timeout",
    "diagnostics.layer_stats", "diagnostics.layer_stats_images", "diagnostics.grad_norms",
}


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


UMASK = os.umask(0)
os.umask(UMASK)
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def first_line(ex: BaseException) -> str:
    """An exception's first non-empty line, without terminal colour codes (never an IndexError)."""
    lines = [ln.strip() for ln in ANSI.sub("", str(ex)).splitlines() if ln.strip()]
    return f"{type(ex).__name__}: {lines[0][:200]}" if lines else type(ex).__name__


def write_problem(ex: BaseException, where: Path) -> str | None:
    """What went wrong when a record file could not be written, or None if ``ex`` is not that.

    ``torch.save`` reports a full disk as a RuntimeError from its zip writer ("unexpected pos",
    "file write failed") about as often as an OSError, depending on where the space runs out.
    """
    if isinstance(ex, OSError):
        return ex.strerror or str(ex)
    if isinstance(ex, RuntimeError) and re.search(r"unexpected pos|write failed|PytorchStreamWriter", str(ex)):
        try:
            free = f", {shutil.disk_usage(where).free // 1024} KiB free on its disk"
        except OSError:
            free = ""
        return f"the write stopped short{free}; torch: {first_line(ex).split('] ')[-1].strip(' .')}"
    return None


@contextlib.contextmanager
def _signals_deferred():
    """Hold SIGINT, SIGTERM and SIGUSR2 (submitit's requeue signal) until the block is done."""
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGUSR2}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def atomic_write(path: Path, write, keep_previous: Path | None = None) -> None:
    """Write via ``write(fileobj)`` to a temp file beside ``path``, fsync, then rename over it.

    With ``keep_previous``, the old ``path`` is first renamed there: a kill between the two renames
    leaves the previous file in place of the missing one, never a torn file.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~UMASK)  # mkstemp makes 0600; give the record the usual mode
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        with _signals_deferred():  # the two renames as one step: no interrupt lands between them
            if keep_previous is not None and path.exists():
                os.replace(path, keep_previous)
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)

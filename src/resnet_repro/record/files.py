"""The run record's file names and the one way its files are written (atomically).

Light on purpose (no torch): the command line, the sweep manifest and the report read these
before, or without, any training.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import stat
import tempfile
from pathlib import Path
from typing import Any

import yaml

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
CHECKPOINT_FILE = "checkpoint.pt"
PREVIOUS_CHECKPOINT_FILE = (
    "checkpoint.prev.pt"  # the one before: the fallback when the last is torn
)
LOCK_FILE = "run.lock"
LAYER_STATS_FILE = "layer_stats.csv"
GRAD_NORMS_FILE = "grad_norms.csv"

METRIC_COLUMNS = [
    "iter",
    "epoch",
    "lr",
    "train_loss",
    "train_err",
    "val_loss",
    "val_err",
    "test_loss",
    "test_err",
    "time_s",
    "img_per_s",
]
LAYER_STATS_COLUMNS = ["iter", "layer", "module", "std", "channel_std"]
GRAD_NORM_COLUMNS = ["iter", "layer", "module", "grad_norm", "weight_norm"]
# The record's per-iteration tables: a resumed run drops their rows past its checkpoint.
TABLES = {
    METRICS_FILE: METRIC_COLUMNS,
    LAYER_STATS_FILE: LAYER_STATS_COLUMNS,
    GRAD_NORMS_FILE: GRAD_NORM_COLUMNS,
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


def clip(text: str, limit: int = 200) -> str:
    """``text`` up to ``limit`` characters, cut between words (``...`` where cut)."""
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0] if " " in text[:limit] else text[:limit]
    return cut.rstrip(" ,;:") + " ..."


def first_line(ex: BaseException) -> str:
    """An exception's first non-empty line, without terminal colour codes (never an IndexError)."""
    lines = [ln.strip() for ln in ANSI.sub("", str(ex)).splitlines() if ln.strip()]
    return f"{type(ex).__name__}: {clip(lines[0])}" if lines else type(ex).__name__


def write_problem(ex: BaseException, where: Path) -> str | None:
    """What went wrong when a record file could not be written, or None if ``ex`` is not that.

    ``torch.save`` reports a full disk as a RuntimeError from its zip writer ("unexpected pos",
    "file write failed") about as often as an OSError, depending on where the space runs out.
    """
    if isinstance(ex, OSError):
        return ex.strerror or str(ex)
    if isinstance(ex, RuntimeError) and re.search(
        r"unexpected pos|write failed|PytorchStreamWriter", str(ex)
    ):
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


# --- reading the record back: what no run writes is refused, never hangs or explodes ------------
RECORD_SIZE_LIMIT = (
    256 * 2**20
)  # far above any record file a run writes (a long run's tables: a few MB)
RECORD_ERRORS = (
    OSError,
    ValueError,
    RecursionError,
    yaml.YAMLError,
)  # what the readers below raise


def read_record_text(p: Path, limit: int = RECORD_SIZE_LIMIT) -> str:
    """A record file's text. Refused (ValueError) when it is not a regular file (a FIFO would block
    its reader for ever, a device never end), larger than ``limit``, or not UTF-8 text."""
    fd = os.open(
        p, os.O_RDONLY | os.O_NONBLOCK
    )  # opening a FIFO this way does not wait for a writer
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("it is not a regular file")
        if st.st_size > limit:
            raise ValueError(f"it is {st.st_size:,} bytes, larger than any record file")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ValueError("it is larger than any record file")
    return data.decode()  # a UnicodeDecodeError is a ValueError


class _NoAliases(yaml.SafeLoader):
    """YAML without anchors and aliases: the record's files never hold them (``dump_yaml``), and a
    file that does may expand to gigabytes from a few hundred bytes."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.events.AliasEvent):
            raise yaml.YAMLError("it holds a YAML alias, which no record file has")
        return super().compose_node(parent, index)


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # a value written twice is written out twice, never as an alias


def dump_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False)


def read_record_yaml(p: Path) -> Any:
    """A record's YAML file, safely (no Python tags, no aliases, no unbounded nesting): raises one
    of ``RECORD_ERRORS``."""
    return yaml.load(read_record_text(p), Loader=_NoAliases)  # noqa: S506 - a SafeLoader


def read_record_json(p: Path) -> Any:
    """A record's JSON file: raises one of ``RECORD_ERRORS`` (deep nesting: RecursionError)."""
    return json.loads(read_record_text(p))

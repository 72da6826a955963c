"""The run record: everything a run leaves in its directory.

- ``config.yaml``: the resolved config (depth and n both filled in);
- ``metrics.csv``: the history, one row per log or eval iteration (``pandas.read_csv``);
- ``summary.json``: final and best errors, params, wall time, images/s, device, versions, status;
- ``checkpoint.pt``: model, optimizer, schedule, sampler and RNG state (``checkpoint.py``);
- ``layer_stats.csv``: std of each 3x3 layer's response (paper Fig. 7), per recorded iteration;
- ``grad_norms.csv``: per-layer gradient norms at the iterations ``diagnostics.grad_norms`` names.
"""

from __future__ import annotations

import ast
import contextlib
import csv
import errno
import json
import logging
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..config import EXTENDABLE_KEY, RUNTIME_KEYS, flat
from ..errors import RunDirError
from .checkpoint import Checkpoints
from .files import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    METRIC_COLUMNS,
    METRICS_FILE,
    RECORD_ERRORS,
    SUMMARY_FILE,
    TABLES,
    atomic_write,
    dump_yaml,
    first_line,
    read_record_json,
    read_record_yaml,
    write_problem,
)

log = logging.getLogger("resnet_repro")


def torchvision_version() -> str:
    """``torchvision.__version__``, read from its ``version.py`` when torchvision is not imported
    yet: importing it imports all its datasets, models and ops, which a run of the CIFAR nets never
    uses."""
    import importlib.util
    import sys

    if "torchvision" not in sys.modules:
        spec = importlib.util.find_spec("torchvision")  # finds the package without importing it
        try:
            tree = ast.parse(Path(spec.submodule_search_locations[0], "version.py").read_text())
            for node in tree.body:
                names = [getattr(t, "id", None) for t in getattr(node, "targets", ())]
                if isinstance(node, ast.Assign) and names == ["__version__"]:
                    return str(ast.literal_eval(node.value))
        except (AttributeError, IndexError, OSError, SyntaxError, TypeError, ValueError):
            pass  # another layout: import it
    import torchvision

    return torchvision.__version__


def library_versions() -> dict[str, str]:
    import hydra
    import numpy
    import omegaconf

    from .. import __version__

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision_version(),
        "hydra": hydra.__version__,
        "omegaconf": omegaconf.__version__,
        "numpy": numpy.__version__,
        "resnet_repro": __version__,
    }


def _read_git_commit() -> str | None:
    env = os.environ.get("RESNET_REPRO_GIT_COMMIT") or None
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return env
    return (out.stdout.strip() or env) if out.returncode == 0 else env


_COMMIT_AT_IMPORT = _read_git_commit()  # the code a process runs is the code it imported


def git_commit() -> str | None:
    """Commit of the code that ran: the git checkout's when this process imported it (a commit made
    while a sweep runs does not change what its later jobs run, nor what they record), else
    ``$RESNET_REPRO_GIT_COMMIT`` (a copy without ``.git``, e.g. an exported source tarball, is told
    its commit that way)."""
    return _COMMIT_AT_IMPORT


def check_writable(run_dir: str | Path) -> None:
    """Refuse, before anything is written, a run directory that cannot be created or written.

    Nothing is created: a probe file is written, synced and removed in the run directory, or in
    its nearest existing parent when it does not exist yet (a full disk, a read-only filesystem,
    a path through a file all show there).
    """
    d = Path(run_dir).absolute()
    base = d
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise RunDirError(
            f"Cannot create the run directory {run_dir}: {base} is a file. Choose another "
            f"hydra.run.dir (or name=<new name>)."
        )
    try:
        fd, probe = tempfile.mkstemp(dir=base, prefix=".resnet_repro-probe.", suffix=".tmp")
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
            Path(probe).unlink(missing_ok=True)
    except OSError as ex:
        where = "" if base == d else f" (its parent {base})"
        fix = (
            "Free disk space there"
            if ex.errno == errno.ENOSPC
            else "Choose a writable hydra.run.dir"
        )
        raise RunDirError(
            f"Cannot write the run directory {run_dir}{where}: {ex.strerror or ex}. {fix}, or run "
            f"elsewhere (hydra.run.dir=<dir>); nothing was written."
        ) from None


class RunRecord:
    def __init__(self, run_dir: str | Path, *, create: bool = True):
        self.dir = Path(run_dir)
        self.checkpoints = Checkpoints(self.dir)
        if not create:
            return
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as ex:
            raise RunDirError(
                f"Cannot create the run directory {self.dir}: {ex.strerror}. Choose a writable "
                f"hydra.run.dir."
            ) from None
        if not os.access(self.dir, os.W_OK):
            raise RunDirError(
                f"The run directory {self.dir} is not writable. Choose a writable hydra.run.dir."
            )

    def path(self, name: str) -> Path:
        return self.dir / name

    # --- config -----------------------------------------------------------------------------
    def saved_config(self) -> dict | None:
        p = self.path(CONFIG_FILE)
        if not p.is_file():
            return None
        try:
            cfg = read_record_yaml(
                p
            )  # safe: a Python tag or an alias is refused, never run or expanded
        except RECORD_ERRORS as ex:
            raise RunDirError(
                f"{p} cannot be read as a config ({first_line(ex)}): it is not a file this tool "
                f"wrote. Restore it, or move the run directory aside and rerun; nothing was "
                f"changed."
            ) from None
        if not isinstance(cfg, dict):
            raise RunDirError(
                f"{p} is not a config (it holds {type(cfg).__name__}). Restore it, or move the run "
                f"directory aside and rerun; nothing was changed."
            )
        return cfg

    def check_same_run(
        self,
        cfg: dict,
        checkpoint_cfg: dict | None = None,
        summary_cfg: dict | None = None,
        *,
        extendable: bool = False,
    ) -> None:
        """Refuse to resume a run of another config: config.yaml's, the checkpoint's own copy, and
        the keys the summary states (``summary_cfg``, dotted), so a record outlives lost files.

        One difference is not another run: a larger ``schedule.iterations`` (milestones unchanged)
        continues the run from its checkpoint (``extendable``: one is there), e.g. a first look of
        2000 iterations becoming the full 64000-iteration run.
        """
        for where, old in (
            ("config.yaml", self.saved_config()),
            ("checkpoint.pt", checkpoint_cfg),
            ("summary.json", summary_cfg),
        ):
            if old is None:
                continue
            a, b = flat(old), flat(cfg)
            # keys only one side has come from another version of the schema: not a difference
            diff = [k for k in sorted(set(a) & set(b)) if k not in RUNTIME_KEYS and a[k] != b[k]]
            longer = diff == [EXTENDABLE_KEY] and b[EXTENDABLE_KEY] > a[EXTENDABLE_KEY]
            if longer and extendable:
                continue
            if longer:
                raise RunDirError(
                    f"{self.dir} holds a run of {a[EXTENDABLE_KEY]} iterations, but its checkpoint "
                    f"is gone, so it cannot be continued to {b[EXTENDABLE_KEY]}. Give the longer "
                    f"run its own directory (name=<new name>)."
                )
            if diff:
                shown = "; ".join(f"{k}: {a[k]!r} there, {b[k]!r} now" for k in diff[:5])
                hint = (
                    f" (A run continues to more iterations when {EXTENDABLE_KEY} is the only key "
                    f"that changes.)"
                    if EXTENDABLE_KEY in diff
                    else ""
                )
                raise RunDirError(
                    f"{self.dir} already holds a run with a different config (its {where}: "
                    f"{shown}). Give this run its own directory (name=<new name> or "
                    f"hydra.run.dir=<dir>), or delete the old run.{hint}"
                )

    def check_resumable(
        self, cfg: dict, ckpt: dict | None, summary: dict, *, checkpoint_known: bool = True
    ) -> None:
        """Refuse a run directory whose record belongs to another config or cannot be resumed.

        The config is compared with ``config.yaml``, the checkpoint's copy and what ``summary.json``
        states, so deleting checkpoints (or the config) never lets another run overwrite a record. A
        record of trained iterations without a checkpoint is never retrained over. Before a start
        (``checkpoint_known=False``) the checkpoint is not loaded, only looked for.
        """
        has_ckpt = ckpt is not None if checkpoint_known else bool(self.checkpoints.kept())
        self.check_same_run(
            cfg, ckpt.get("config") if ckpt else None, summary_config(summary), extendable=has_ckpt
        )
        done = summary.get("iterations") or 0
        if not has_ckpt and done and summary.get("status") != "completed":
            raise RunDirError(
                f"{self.dir} holds {done} trained iterations ({SUMMARY_FILE}, {METRICS_FILE}) but "
                f"no checkpoint to resume from ({CHECKPOINT_FILE} is gone). Training again would "
                f"overwrite that record: move the directory aside first, or give this run its own "
                f"directory (name=<new name>)."
            )

    def write_config(self, cfg: dict) -> None:
        text = dump_yaml(cfg)
        with self._writing(CONFIG_FILE):
            atomic_write(self.path(CONFIG_FILE), lambda f: f.write(text.encode()))

    @contextlib.contextmanager
    def _writing(self, name: str):
        """Turn a failed write of a record file (full disk, read-only) into one clear error."""
        try:
            yield
        except (OSError, RuntimeError) as ex:
            problem = write_problem(ex, self.dir)
            if problem is None:
                raise
            raise RunDirError(
                f"Cannot write {self.path(name)} ({problem}). Free disk space or make {self.dir} "
                f"writable, then rerun the same command to resume{self._intact()}."
            ) from None

    def _intact(self) -> str:
        kept = self.checkpoints.kept()
        if not kept:
            return ": there is no checkpoint yet"
        return f": {' and '.join(kept)} from before {'are' if len(kept) > 1 else 'is'} intact"

    # --- metrics history and the other per-iteration tables --------------------------------
    def append_rows(self, name: str, columns: list[str], rows: list[dict[str, Any]]) -> None:
        """Append rows to the CSV table ``name`` (header written first), then fsync."""
        p = self.path(name)
        new = not p.is_file() or p.stat().st_size == 0
        with self._writing(name), open(p, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=columns)
            if new:
                w.writeheader()
            for row in rows:
                w.writerow({k: row.get(k, "") for k in columns})
            f.flush()
            os.fsync(f.fileno())

    def truncate_rows(self, name: str, columns: list[str], last_iter: int) -> None:
        """Drop rows of table ``name`` after ``last_iter`` (written after the checkpoint)."""
        p = self.path(name)
        if not p.is_file():
            return
        with open(p, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("iter") and int(r["iter"]) <= last_iter]
        text = _csv_text(rows, columns)
        with self._writing(name):
            atomic_write(p, lambda fh: fh.write(text.encode()))

    def append_metrics(self, row: dict[str, Any]) -> None:
        self.append_rows(METRICS_FILE, METRIC_COLUMNS, [row])

    def metrics_rows(self) -> list[dict[str, int | float]]:
        """``metrics.csv``'s rows as logged: numbers as numbers (ints where written as ints), empty
        cells left out."""
        p = self.path(METRICS_FILE)
        if not p.is_file():
            return []
        with open(p, newline="") as f:
            return [
                {k: int(v) if v.lstrip("-").isdigit() else float(v) for k, v in r.items() if v}
                for r in csv.DictReader(f)
            ]

    def truncate_metrics(self, last_iter: int) -> None:
        self.truncate_rows(METRICS_FILE, METRIC_COLUMNS, last_iter)

    def rewind(self, last_iter: int) -> None:
        """Drop every table's rows after ``last_iter``: those an interrupted attempt wrote after its
        last checkpoint (0: every row of an attempt that stopped before its first one)."""
        for name, columns in TABLES.items():
            self.truncate_rows(name, columns, last_iter)

    # --- summary ----------------------------------------------------------------------------
    def read_summary(self) -> dict | None:
        p = self.path(SUMMARY_FILE)
        if not p.is_file():
            return None
        try:
            summary = read_record_json(p)
        except RECORD_ERRORS:
            return None
        return summary if isinstance(summary, dict) else None

    def write_summary(self, summary: dict) -> None:
        text = json.dumps(summary, indent=2, sort_keys=False, default=str) + "\n"
        with self._writing(SUMMARY_FILE):
            atomic_write(self.path(SUMMARY_FILE), lambda f: f.write(text.encode()))


def summary_config(summary: dict) -> dict | None:
    """The config keys a summary states, as a nested config dict (None without a summary)."""
    if not summary:
        return None
    keys = {
        "model": {"name": "model", "depth": "depth", "residual": "residual"},
        "dataset": {"name": "dataset", "protocol": "protocol"},
        "trainer": {"batch_size": "batch_size"},
    }
    out: dict = {"seed": summary["seed"]} if "seed" in summary else {}
    for group, fields in keys.items():
        out[group] = {k: summary[f] for k, f in fields.items() if f in summary}
    return out


def _csv_text(rows: list[dict], columns: list[str]) -> str:
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\r\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in columns})
    return buf.getvalue()

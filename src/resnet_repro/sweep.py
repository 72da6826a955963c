"""Sweeps: job names, the sweep manifest, and the checks a sweep runs before its first job.

The sweep root (``runs/<experiment>/<timestamp>/``) holds ``manifest.csv``: one row per job with
its number, name, overrides, status and run directory. The sweeper writes every job as
``pending`` before the first one starts; each job marks itself ``running`` and then its final
status (the run's own: ``completed``, ``diverged``, ``failed`` or ``interrupted``). Jobs may run in
parallel processes (joblib, submitit), so every update holds a file lock.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import logging
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from .config import DEFAULT_DEPTH
from .files import SUMMARY_FILE, atomic_write

log = logging.getLogger(__name__)
MANIFEST_FILE = "manifest.csv"
MANIFEST_COLUMNS = ["job", "name", "overrides", "status", "run_dir", "started_at", "finished_at",
                    "final_err", "error"]
# Overrides that say where or how a job runs, not what it computes: left out of job names.
_NOT_IN_NAME = ("experiment", "trainer.progress", "trainer.device", "dataset.root", "dataset.download")


def _split(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value.lower() if value in ("True", "False") else value


def job_name(overrides: Iterable[str], n: int | None = None, depth: int | None = None) -> str:
    """Readable, unique job name from a job's overrides, always showing the depth.

    ``["model.depth=56", "model.residual=false", "seed=1"]`` gives ``depth=56,residual=false,seed=1``.
    """
    items, o_n, o_depth = [], None, None
    for o in overrides:
        key, value = _split(o)
        if key == "model.depth":
            o_depth = value
        elif key == "model.n":
            o_n = value
        elif not (key in _NOT_IN_NAME or key.startswith(("hydra", "logger"))):
            items.append(f"{key.rsplit('.', 1)[-1]}={value}")
    if o_depth is not None:
        d: Any = o_depth
    elif o_n is not None:
        d = 6 * int(o_n) + 2 if o_n.isdigit() else f"6*{o_n}+2"
    else:
        d = depth if depth is not None else (6 * n + 2 if n is not None else DEFAULT_DEPTH)
    return ",".join([f"depth={d}", *sorted(items)]).replace("/", "_")


if not OmegaConf.has_resolver("job_name"):
    OmegaConf.register_new_resolver(
        "job_name", lambda overrides, n, depth: job_name(list(overrides), n, depth)
    )


def excluded(job: Sequence[str], exclude: Sequence[dict]) -> bool:
    """Whether a job's overrides match every key of one of the ``exclude`` entries."""
    kv = dict(_split(o) for o in job)
    return any(
        all(str(kv.get(k, "")).lower() == str(v).lower() for k, v in rule.items()) for rule in exclude
    )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Manifest:
    def __init__(self, sweep_dir: str | Path):
        self.dir = Path(sweep_dir)
        self.path = self.dir / MANIFEST_FILE

    @contextmanager
    def _locked(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".manifest.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))

    def _write(self, rows: list[dict]) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in MANIFEST_COLUMNS})
        atomic_write(self.path, lambda f: f.write(buf.getvalue().encode()))

    def set_jobs(self, jobs: list[dict]) -> None:
        """List a sweep's jobs as ``pending``, numbered as Hydra numbers them.

        A sweep rerun in its own directory lists its jobs afresh; their runs resume or, when
        finished, are left alone, and each job records its outcome again.
        """
        with self._locked():
            self._write([{"job": i, "status": "pending", **j} for i, j in enumerate(jobs)])

    def update(self, job: int, **fields: Any) -> None:
        with self._locked():
            rows = self.read()
            while len(rows) <= job:  # a job the sweeper did not list (another sweeper): add it
                rows.append({"job": len(rows), "status": "pending"})
            rows[job].update({k: "" if v is None else v for k, v in fields.items()})
            self._write(rows)


def mark_job_ended(hc: Any, exc: BaseException | None) -> None:
    """Record a job's outcome in the manifest: the run's own status, or the job's exception.

    Bookkeeping never fails the job: a manifest that cannot be written is warned about.
    """
    summary_path = Path(hc.runtime.output_dir) / SUMMARY_FILE
    try:
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    except (OSError, ValueError):
        summary = {}
    status = summary.get("status", "completed")
    error = ""
    if exc is not None:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            status = "interrupted"
        elif status not in ("diverged", "failed"):  # a summary from an earlier attempt, or none
            status = "failed"
        error = f"{type(exc).__name__}: {exc}"
    final = summary.get("final_test_err", summary.get("final_val_err")) if status == "completed" else None
    try:
        Manifest(hc.sweep.dir).update(int(hc.job.num), status=status, finished_at=_now(), final_err=final, error=error)
    except OSError as ex:
        log.warning("Could not update the sweep manifest in %s (%s); the job's own record is complete.", hc.sweep.dir, ex)


class ManifestCallback(Callback):
    """Marks each job of a multirun ``running`` when it starts and with its outcome when it ends."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        hc = config.hydra
        if hc.mode != RunMode.MULTIRUN:
            return
        try:
            Manifest(hc.sweep.dir).update(
                int(hc.job.num), status="running", started_at=_now(), run_dir=hc.runtime.output_dir,
                name=Path(hc.runtime.output_dir).name, overrides=" ".join(hc.overrides.task),
                finished_at=None, final_err=None, error=None,
            )
        except OSError as ex:
            log.warning("Could not update the sweep manifest in %s (%s); the job runs on.", hc.sweep.dir, ex)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        hc = config.hydra
        if hc.mode != RunMode.MULTIRUN:
            return
        exc = None
        if job_return.status == JobStatus.FAILED:
            try:
                _ = job_return.return_value  # a failed job's return value is its exception, raised
            except BaseException as ex:  # noqa: BLE001 - whatever ended the job is its outcome
                exc = ex
        mark_job_ended(hc, exc)

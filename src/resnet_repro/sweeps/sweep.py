"""Sweeps: job names, ``exclude`` rules, and the sweep manifest.

A job's directory is its name, made here from the overrides that vary across the sweep
(``job_names``); the project's sweeper gives every job its name as ``hydra.sweep.subdir``.

The sweep root (``runs/<experiment>/<timestamp>/``) holds ``manifest.csv``, written by the sweeper
alone: one row per job with its number, name, overrides and run directory, listed before the first
job starts and written once more after the last one ends. A job's outcome (``status``,
``started_at``, ``finished_at``, ``final_err``, ``error``) is what its run's own ``summary.json``
says; the manifest's copy is what the summaries said when the sweeper wrote it, plus the error of a
job that ended without a summary telling why. ``Manifest.read`` gives each job's outcome as its
summary says now; a job without a summary yet is ``pending``.
"""

from __future__ import annotations

import csv
import io
import logging
import shlex
import signal
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..config import override_pairs
from ..errors import RERUN_TO_RESUME, Preempted
from ..models.registry import depth_of_n, depth_or_default
from ..record.files import (
    RECORD_ERRORS,
    SUMMARY_FILE,
    atomic_write,
    read_record_json,
    read_record_text,
)
from ..record.lock import RunLock

log = logging.getLogger(__name__)
MANIFEST_FILE = "manifest.csv"
SWEEP_LOCK_FILE = "sweep.lock"  # held by the sweep's command while it runs: one sweep per folder
MANIFEST_COLUMNS = [
    "job",
    "name",
    "overrides",
    "status",
    "run_dir",
    "started_at",
    "finished_at",
    "final_err",
    "error",
]
# The columns a job's run tells (its summary.json), as opposed to what the sweeper lists.
OUTCOME_COLUMNS = ["status", "started_at", "finished_at", "final_err", "error"]
# Overrides that say where or how a job runs, not what it computes: left out of job names.
_NOT_IN_NAME = (
    "experiment",
    "trainer.progress",
    "trainer.device",
    "dataset.root",
    "dataset.download",
)


def _pairs(overrides: Iterable[str]) -> list[tuple[str, str]]:
    """Each override's key and value (Hydra's parser; booleans written lower-case, as in YAML)."""
    return [
        (k, v.lower() if v in ("True", "False") else v or "") for k, v in override_pairs(overrides)
    ]


def job_name(overrides: Iterable[str], n: int | None = None, depth: int | None = None) -> str:
    """Readable job name from a job's overrides, always showing the depth.

    ``["model.depth=56", "model.residual=false", "seed=1"]`` gives
    ``depth=56,residual=false,seed=1``.
    """
    items, o_n, o_depth = [], None, None
    for key, value in _pairs(overrides):
        if key == "model.depth":
            o_depth = value
        elif key == "model.n":
            o_n = value
        elif not (key in _NOT_IN_NAME or key.startswith(("hydra", "logger"))):
            items.append(f"{key.rsplit('.', 1)[-1]}={value}")
    if o_depth is not None:
        d: Any = o_depth
    elif o_n is not None:
        d = depth_of_n(int(o_n)) if o_n.isdigit() else f"6*{o_n}+2"
    else:
        d = depth_or_default(n, depth)
    return ",".join([f"depth={d}", *sorted(items)]).replace("/", "_")


def job_names(jobs: list[list[str]], depths: list[int], axes: Iterable[str] = ()) -> list[str]:
    """Every job's directory name: from the overrides that vary across the sweep and the sweep's
    own ``axes`` (its preset's ``hydra.sweeper.params``, so a sweep narrowed to one plain net still
    says ``residual=false``), always with the depth (and the seed when given); unique, fixed per
    job, so a rerun (or a requeue) finds it."""
    keyed = [
        [(o, *(_pairs([o]) or [("", "")])[0]) for o in job] for job in jobs
    ]  # (override, key, value)
    values: dict[str, set] = {}
    for job in keyed:
        for _, k, v in job:
            values.setdefault(k, set()).add(v)
    varying = {
        k
        for k, v in values.items()
        if len(v) > 1 or any(k not in {kk for _, kk, _ in j} for j in keyed)
    }
    varying |= set(axes)
    varying.add("seed")  # always named when given: sweeps of other seeds never share a directory
    names = []
    for job, depth in zip(keyed, depths, strict=True):
        name = job_name([o for o, k, _ in job if k in varying], depth=depth)
        names.append(name.replace("'", ""))
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        if n in seen or names.count(n) > 1:
            names[i] = f"{n},job={i}"
        seen[n] = i
    return names


def resume_command(sweep_dir: str | Path, argv: Sequence[str] | None = None) -> str:
    """The command that resumes a sweep: its command line (``argv``, default this process's) with
    its folder, ``hydra.sweep.dir=<folder>`` (the same command alone starts a new timestamped
    one)."""
    args = [
        a
        for a in (sys.argv[1:] if argv is None else argv)
        if not a.startswith(("hydra.sweep.dir=", "hydra.sweeper.dry_run="))
    ]
    return shlex.join(["resnet-train", *args, f"hydra.sweep.dir={sweep_dir}"])


def sweep_stopped(
    ex: KeyboardInterrupt, sweep_dir: str | Path, argv: Sequence[str] | None = None
) -> Preempted:
    """A sweep stopped by Ctrl-C or SIGTERM (its running job checkpointed), saying how to resume
    it."""
    signum = getattr(ex, "signum", signal.SIGINT)
    what = str(ex).removesuffix(RERUN_TO_RESUME).strip() or (
        f"interrupted ({'Ctrl-C' if signum == signal.SIGINT else signal.Signals(signum).name})."
    )
    return Preempted(
        f"{what} The sweep is in {sweep_dir}; resume it with: {resume_command(sweep_dir, argv)}",
        signum=signum,
    )


def excluded(job: Sequence[str], exclude: Sequence[dict]) -> bool:
    """Whether a job's overrides match every key of one of the ``exclude`` entries."""
    kv = dict(_pairs(job))
    return any(
        all(str(kv.get(k, "")).lower() == str(v).lower() for k, v in rule.items())
        for rule in exclude
    )


def status_now(run_dir: str | Path, status: str | None) -> str | None:
    """A run's status as its summary states it, except that ``running`` with its ``run.lock`` held
    by no live process is ``interrupted``: the run was killed, or ended where it could not write its
    summary (a full disk)."""
    if status == "running" and RunLock(run_dir).held() is False:
        return "interrupted"
    return status


def job_outcome(run_dir: str | Path, exc: BaseException | None = None) -> dict | None:
    """A job's outcome columns as its run's ``summary.json`` tells them, or as the exception that
    ended the job tells them where the summary does not (none written, or one of an earlier
    attempt).

    ``finished_at`` is the summary's for a completed run, the time the summary was last written
    for one that ended otherwise; none when only the exception tells. ``None`` when neither tells
    anything: the job has not started its record.
    """
    path = Path(run_dir) / SUMMARY_FILE
    try:
        summary = read_record_json(path)
    except RECORD_ERRORS:
        summary = None
    s = summary if isinstance(summary, dict) else {}
    status, error = status_now(run_dir, s.get("status")), s.get("error")
    if exc is not None:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            status = "interrupted"
        elif status not in ("diverged", "failed"):
            status = "failed"
        error = f"{type(exc).__name__}: {exc}"
    if not status:
        return None
    told = status == s.get("status") and status in (
        "completed",
        "diverged",
        "failed",
        "interrupted",
    )
    return {
        "status": status,
        "started_at": s.get("started_at"),
        "finished_at": (s.get("finished_at") or _written_at(path)) if told else None,
        "final_err": s.get("final_test_err", s.get("final_val_err"))
        if status == "completed"
        else None,
        "error": error,
    }


def _written_at(path: Path) -> str | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat(
            timespec="seconds"
        )
    except OSError:
        return None


_PENDING = {**dict.fromkeys(OUTCOME_COLUMNS), "status": "pending"}


class Manifest:
    """A sweep's ``manifest.csv``. Only the sweeper writes it (when the sweep starts and once when
    it ends), so it needs no lock; its jobs never do."""

    def __init__(self, sweep_dir: str | Path):
        self.dir = Path(sweep_dir)
        self.path = self.dir / MANIFEST_FILE

    def recorded(self) -> list[dict]:
        """The rows as the sweeper wrote them (none without a manifest)."""
        if not self.path.is_file():
            return []
        return list(csv.DictReader(io.StringIO(read_record_text(self.path), newline="")))

    def run_dir(self, row: dict) -> Path:
        """A job's run directory: its name inside the sweep folder (so a moved sweep still finds its
        runs), else the ``run_dir`` written."""
        return self.dir / row["name"] if row.get("name") else Path(row.get("run_dir") or self.dir)

    def read(self) -> list[dict]:
        """The rows, each job's outcome as its run's ``summary.json`` tells it now; where the run
        has no readable summary, as the manifest recorded it (``pending`` when it recorded none)."""
        rows = self.recorded()
        for r in rows:
            r.update(job_outcome(self.run_dir(r)) or {})
            r["status"] = r.get("status") or "pending"
        return rows

    def set_jobs(self, jobs: list[dict]) -> None:
        """List a sweep's jobs (``name``, ``overrides``, ``run_dir``), numbered as Hydra numbers
        them, each with its outcome so far: a sweep rerun in its own directory lists its finished
        runs as they finished (they are left alone) and the others as they stopped, or as
        pending."""
        rows = [{"job": i, **j} for i, j in enumerate(jobs)]
        self._write([{**r, **(job_outcome(self.run_dir(r)) or _PENDING)} for r in rows])

    def end_jobs(self, ended: dict[int, BaseException | None]) -> None:
        """Write the outcome of the jobs that ended (by number, each with the exception that ended
        it, or None): its run's summary, or the exception where the summary does not tell."""
        rows = self._rows_up_to(max(ended, default=-1))
        for job, exc in ended.items():
            rows[job].update(job_outcome(self.run_dir(rows[job]), exc) or _PENDING)
        self._write(rows)

    def _rows_up_to(self, job: int) -> list[dict]:
        rows = self.recorded()
        while len(rows) <= job:  # a job the manifest did not list: added by its number
            rows.append({"job": len(rows)})
        return rows

    def _write(self, rows: list[dict]) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: "" if r.get(k) is None else r[k] for k in MANIFEST_COLUMNS})
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, lambda f: f.write(buf.getvalue().encode()))


def mark_jobs_ended(sweep_dir: str | Path, ended: dict[int, BaseException | None]) -> None:
    """``Manifest.end_jobs``, never failing the sweep: a manifest that cannot be written is warned
    about (every job's own record is complete)."""
    try:
        Manifest(sweep_dir).end_jobs(ended)
    except (OSError, csv.Error) as ex:
        log.warning(
            "Could not update the sweep manifest in %s (%s); the job's own record is complete.",
            sweep_dir,
            ex,
        )


def summary_line(sweep_dir: str | Path) -> str:
    """How a sweep's jobs ended, where it lives, and the command that reports it (never raises)."""
    try:
        rows = Manifest(sweep_dir).read()
    except (OSError, csv.Error):
        rows = []
    counts = Counter(r["status"] for r in rows)
    shown = ", ".join(
        f"{counts.pop(s, 0)} {s}" for s in ("completed", "diverged", "failed", "interrupted")
    )
    shown += "".join(f", {n} {s}" for s, n in sorted(counts.items()))  # pending, running
    return (
        f"Sweep of {len(rows)} jobs: {shown}. Folder: {sweep_dir}. Next: resnet-report {sweep_dir}"
    )

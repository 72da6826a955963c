"""The study runner: a study's jobs in priority order, inside a fixed GPU budget.

    resnet-study status                                      # done and pending jobs of the study
    resnet-study run --budget-min 55 dataset.root=../shared/data
    resnet-study run --budget-min 9 --timings bench.json --archive out/study.tar.xz
    resnet-study warm --json runs/study/warm.json            # compile (and time) every pending net once
    resnet-study pack runs/study/degradation study.tar.xz    # the completed records, no checkpoints
    resnet-study unpack study.tar.xz                         # into analysis/results/<date>-<gpu>-<schedule>/

A study (``conf/study/<name>.yaml``) is data: a training preset, the seeds, and one seed's jobs in
priority order. ``run`` finds which jobs already have completed records (in ``--results`` folders,
``analysis/results`` by default, and in its own output folder), estimates every pending job's
minutes from measured timings (a benchmark JSON, or a short measured warm-up of its own), prints
them, and starts only jobs that will finish inside the budget, k at a time when k runs sharing the
GPU measured faster. Estimates are refreshed from the speed the running jobs show. At the deadline
whatever still runs gets SIGTERM: it finishes its step, writes a checkpoint and records status
``interrupted``; rerun in the same folder, it resumes there. Only completed records are packed
(checkpoints never travel), so on a machine that is given back an interrupted run's time is lost:
that is why nothing starts that is not expected to end in time.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import yaml

from .config import Config, flat, iteration_schedule, to_dict
from .errors import ResnetReproError
from .record import (
    CONFIG_FILE,
    GRAD_NORMS_FILE,
    LAYER_STATS_FILE,
    METRIC_COLUMNS,
    METRICS_FILE,
    RUNTIME_KEYS,
    SUMMARY_FILE,
    git_commit,
)
from .results import find_run_dirs, read_table
from .speed import Timings
from .sweep import job_name

log = logging.getLogger("resnet_repro.study")

STUDY_FILE = "study.json"
CONSOLE_FILE = "console.log"
# What a packed record holds: everything but checkpoints, locks and temp files.
PACKED_FILES = (CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, LAYER_STATS_FILE, GRAD_NORMS_FILE, "train.log",
                CONSOLE_FILE, ".hydra/overrides.yaml")
ARCHIVE_LIMIT = 16 * 2**20
ENDED = ("completed", "diverged")  # a job with such a record is not run again (a divergence is a result)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --- the study as data ---------------------------------------------------------------------------
@dataclass
class Study:
    name: str
    preset: str
    seeds: list[int]
    jobs: list[str]  # one seed's jobs, each a line of overrides, in priority order
    source: Path
    overrides: list[str] = field(default_factory=list)  # every job's, after the preset


def study_dir() -> Path:
    from .train import config_dir

    return config_dir() / "study"


def load_study(name: str) -> Study:
    """``conf/study/<name>.yaml``, or a YAML file of the same form."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else study_dir() / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in study_dir().glob("*.yaml"))
        raise ResnetReproError(f"No study {name!r} ({path} does not exist). Studies: {', '.join(known)}, "
                               f"or the path of a YAML file with name, preset, seeds and jobs.")
    d = yaml.safe_load(path.read_text()) or {}
    missing = [k for k in ("name", "preset", "seeds", "jobs") if k not in d]
    if missing:
        raise ResnetReproError(f"{path} lacks {', '.join(missing)}: a study names its preset, its seeds "
                               f"and its jobs (one line of overrides each).")
    return Study(str(d["name"]), str(d["preset"]), [int(s) for s in d["seeds"]], [str(j) for j in d["jobs"]], path,
                 [str(o) for o in d.get("overrides") or []])


@dataclass
class Job:
    index: int  # priority: 0 runs first
    name: str  # its folder, named as a sweep names it: depth=56,residual=false,seed=0
    overrides: list[str]  # what makes it this job: the preset, the net, the seed, and the user's
    cfg: Config

    @property
    def variant(self) -> str:
        return "residual" if self.cfg.model.residual else "plain"

    @property
    def depth(self) -> int:
        return int(self.cfg.model.depth)

    @property
    def seed(self) -> int:
        return int(self.cfg.seed)

    @property
    def net(self) -> str:
        return f"{'ResNet' if self.cfg.model.residual else 'plain'}-{self.depth}"

    @property
    def iterations(self) -> int:
        return iteration_schedule(self.cfg).iterations

    @property
    def batch(self) -> int:
        return self.cfg.trainer.batch_size

    @property
    def eval_images(self) -> int:
        """Images evaluated at every eval: the validation split, and the test split when there is one."""
        from .data import test_batch_available

        d = self.cfg.dataset
        test = (d.num_test if d.name == "synthetic" else 10_000) if test_batch_available(d) else 0
        return (d.val_size if d.protocol == "paper" else 0) + test

    def recipe(self) -> dict:
        return recipe(to_dict(self.cfg))


LABEL_KEYS = {"name", "experiment_name"}  # what a run is called, not what it computes


def recipe(cfg: dict) -> dict:
    """The config keys that decide what a run computes (not where, how fast or under which name)."""
    return {k: v for k, v in flat(cfg).items() if k not in RUNTIME_KEYS | LABEL_KEYS}


def same_recipe(a: dict, b: dict) -> bool:
    """Equal on every key both know (a key only one side has comes from another schema version)."""
    return all(a[k] == b[k] for k in a.keys() & b.keys())


def resolve_jobs(study: Study, extra: list[str] = ()) -> list[Job]:
    """Every job's validated config, in priority order (seed after seed). A bad override is one
    clear error, before any work."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from .config import to_config
    from .preflight import explain
    from .train import config_dir

    jobs = []
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        for seed in study.seeds:
            for line in study.jobs:
                own = [*line.split(), f"seed={seed}"]
                overrides = [f"experiment={study.preset}", *study.overrides, *own, *extra]
                try:
                    cfg = to_config(compose("config", overrides=overrides), overrides)
                except Exception as ex:  # noqa: BLE001 - Hydra's errors, explained in one line
                    msg = explain(ex)
                    if msg is None:
                        raise
                    raise ResnetReproError(f"{msg} (in study job: {' '.join(overrides)}; nothing was started)") from None
                jobs.append(Job(len(jobs), job_name(own, depth=cfg.model.depth), overrides, cfg))
    return jobs


# --- what is done --------------------------------------------------------------------------------
@dataclass
class Record:
    run_dir: Path
    recipe: dict
    summary: dict

    @property
    def status(self) -> str:
        return self.summary.get("status", "starting")


def find_records(paths: list[Path]) -> list[Record]:
    """Every run record (a folder with a readable config.yaml) at or below ``paths``."""
    found = []
    for root in paths:
        if not Path(root).is_dir():
            continue
        for d in find_run_dirs(root):
            try:
                cfg = yaml.safe_load((d / CONFIG_FILE).read_text())
            except (OSError, yaml.YAMLError):
                continue
            try:
                summary = json.loads((d / SUMMARY_FILE).read_text())
            except (OSError, ValueError):
                summary = {}
            if isinstance(cfg, dict):
                found.append(Record(d, recipe(cfg), summary if isinstance(summary, dict) else {}))
    return found


@dataclass
class JobState:
    job: Job
    status: str  # completed / diverged (ended), or pending
    record: Record | None = None  # the completed record, or a resumable one in the output folder
    done_iterations: int = 0  # of the resumable record, as of its last checkpoint


def job_states(jobs: list[Job], records: list[Record], out: Path | None = None) -> list[JobState]:
    """Each job's state: ended where a record of its recipe completed (or diverged), else pending,
    with the progress of a resumable record of it in ``out``."""
    states = []
    for job in jobs:
        mine = [r for r in records if same_recipe(job.recipe(), r.recipe)]
        ended = next((r for r in mine if r.status in ENDED), None)
        if ended is not None:
            states.append(JobState(job, ended.status, ended))
            continue
        part = next((r for r in mine if out is not None and r.run_dir.resolve() == (out / job.name).resolve()), None)
        done = int(part.summary.get("iterations") or 0) if part else 0
        states.append(JobState(job, "pending", part, done))
    return states


# --- estimates -----------------------------------------------------------------------------------
EVAL_COST = 0.5  # an eval image costs about half a training image (forward only, but eager)


@dataclass
class Estimator:
    """Seconds a job needs: start-up, compilation and training at the measured speed, and its evals.

    ``factor`` scales the measured speed to what the running jobs show (refreshed as they log).
    """

    timings: Timings
    start_s: float = 20.0  # process start, imports, data loading and checks, before compilation
    factor: float = 1.0

    def setup_seconds(self, job: Job) -> float:
        return self.start_s + self.timings.setup_seconds(job.variant, job.depth)

    def step_seconds(self, job: Job, sharing: int) -> float:
        s, _ = self.timings.seconds_per_iteration(job.variant, job.depth, job.batch)
        return s * self.timings.slowdown(sharing) * self.factor

    def eval_seconds(self, job: Job, iterations: int, sharing: int) -> float:
        evals = math.ceil(iterations / job.cfg.trainer.eval_every)
        return evals * (job.eval_images * EVAL_COST * self.step_seconds(job, sharing) / job.batch + 0.2)

    def seconds(self, job: Job, iterations: int, sharing: int = 1) -> dict:
        parts = {"setup": self.setup_seconds(job), "train": iterations * self.step_seconds(job, sharing),
                 "eval": self.eval_seconds(job, iterations, sharing)}
        return {**parts, "total": sum(parts.values())}


# --- running jobs --------------------------------------------------------------------------------
@dataclass
class Attempt:
    state: JobState
    proc: subprocess.Popen
    started: float  # monotonic
    estimate_s: float
    sharing: int
    rows_before: int  # rated metrics rows of an earlier attempt (a resumed run)
    count_from: int = 0  # rows the speed observation skips: compilation, and windows at another sharing
    started_at: str = field(default_factory=_now)
    started_wall: float = field(default_factory=time.time)
    ended: float | None = None
    status: str = "running"
    returncode: int | None = None
    stopped: bool = False  # the runner sent it SIGTERM

    @property
    def job(self) -> Job:
        return self.state.job


def _compile_threads(parallel: int) -> str:
    return str(max(1, (os.cpu_count() or 1) // max(1, parallel)))


def job_command(job: Job, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "resnet_repro.train", *job.overrides, "hydra.mode=RUN", "trainer.progress=false",
            f"hydra.run.dir='{run_dir}'"]


def job_env(parallel: int) -> dict:
    """Children share the CPU cores: k runs at once each get 1/k of them for inductor's compile
    workers and for torch's CPU threads (unless the environment already says)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("TORCHINDUCTOR_COMPILE_THREADS", _compile_threads(parallel))
    if parallel > 1:
        env.setdefault("OMP_NUM_THREADS", _compile_threads(parallel))
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def last_rate(run_dir: Path) -> tuple[int, float | None, int]:
    """(last logged iteration, its window's images/s, rows with a rate) of a live run."""
    m = read_table(run_dir / METRICS_FILE, METRIC_COLUMNS)
    if m.empty:
        return 0, None, 0
    rated = m.dropna(subset=["img_per_s"])
    rate = float(rated["img_per_s"].iloc[-1]) if len(rated) else None
    return int(m["iter"].iloc[-1]), rate, len(rated)


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][-300:] if lines else ""


class Runner:
    """Starts the pending jobs that fit before the deadline, up to ``parallel`` at a time.

    A job starts only when its estimate, with ``margin`` to spare, and every running job's
    remaining time at the new sharing end before the deadline less ``reserve_s``. Estimates are
    rescaled by the speed the running jobs log. A running job that can no longer end in time by a
    wide margin is stopped early, so that one that fits gets the device.
    """

    OVERRUN = 1.25  # stop a job early once its remaining time exceeds the time left by this factor

    def __init__(self, states: list[JobState], est: Estimator, out: Path, *, parallel: int = 1,
                 deadline: float | None = None, reserve_s: float = 45.0, grace_s: float = 30.0, margin: float = 0.1,
                 poll_s: float = 0.5, say=print):
        self.pending = [s for s in states if s.status == "pending"]
        self.est, self.out, self.parallel, self.margin = est, out, parallel, margin
        self.deadline, self.reserve_s, self.grace_s, self.poll_s = deadline, reserve_s, grace_s, poll_s
        self.running: list[Attempt] = []
        self.ended: list[Attempt] = []
        self.say = say
        self.stop_reason: str | None = None
        self.stop_signal: int | None = None  # SIGTERM or SIGINT, when one stopped the runner

    # estimates
    def left_s(self, now: float) -> float:
        return math.inf if self.deadline is None else self.deadline - self.reserve_s - now

    def job_seconds(self, state: JobState, sharing: int) -> float:
        return self.est.seconds(state.job, state.job.iterations - state.done_iterations, sharing)["total"]

    def remaining_s(self, a: Attempt, sharing: int, now: float) -> float:
        """Seconds a running job still needs at ``sharing`` runs on the device: at the speed it
        shows once it has logged a window at the present sharing, else at the estimated speed."""
        it, rate, rows = last_rate(self.out / a.job.name)
        iters = a.job.iterations - max(it, a.state.done_iterations)
        evals = self.est.eval_seconds(a.job, iters, sharing)
        if rate and rows > a.count_from:
            now_sharing = max(1, len(self.running))
            step = (a.job.batch / rate) * self.est.timings.slowdown(sharing) / self.est.timings.slowdown(now_sharing)
            return iters * step + evals
        started = rows > a.rows_before  # it has logged: start-up and compilation are behind it
        setup_left = 0.0 if started else max(0.0, self.est.setup_seconds(a.job) - (now - a.started))
        return setup_left + iters * self.est.step_seconds(a.job, sharing) + evals

    def _sharing_changed(self) -> None:
        """Windows logged so far were at another sharing: the speed observation starts afresh."""
        for a in self.running:
            a.count_from = max(a.count_from, last_rate(self.out / a.job.name)[2])

    def observe(self) -> None:
        """Scale the measured speed to the speed the running jobs show in their latest log window
        (one logged at the present sharing, after the window that holds compilation)."""
        ratios = []
        for a in self.running:
            _, rate, rows = last_rate(self.out / a.job.name)
            if rate and rows > a.count_from:
                predicted = self.est.step_seconds(a.job, len(self.running)) / self.est.factor
                ratios.append((a.job.batch / rate) / predicted)
        if ratios:
            self.est.factor = min(4.0, max(0.25, statistics.median(ratios)))

    def next_fitting(self, now: float) -> JobState | None:
        """The first pending job (in priority order) that, started now, ends in time with the margin,
        with every running job still ending in time at the new sharing."""
        sharing = len(self.running) + 1
        left = self.left_s(now)
        if any(self.remaining_s(a, sharing, now) > left for a in self.running):
            return None
        return next((s for s in self.pending if self.job_seconds(s, sharing) * (1 + self.margin) <= left), None)

    def stop_hopeless(self, now: float) -> None:
        """SIGTERM a job whose remaining time, at the speed it shows, exceeds the time left by
        ``OVERRUN``: it cannot end in time, and a job that fits may use the device instead."""
        left = self.left_s(now)
        for a in self.running:
            if a.stopped or last_rate(self.out / a.job.name)[2] <= a.count_from + 1:
                continue  # too early to judge
            need = self.remaining_s(a, len(self.running), now)
            if need > self.OVERRUN * max(left, 0.0):
                self.say(f"study: {a.job.name} needs about {need / 60:.1f} more min, {left / 60:.1f} are left: "
                         f"stopping it (SIGTERM; its checkpoint stays)")
                self.terminate(a)

    # processes
    def start(self, state: JobState, now: float) -> None:
        run_dir = self.out / state.job.name
        run_dir.mkdir(parents=True, exist_ok=True)
        sharing = len(self.running) + 1
        est = self.job_seconds(state, sharing)
        rows_before = last_rate(run_dir)[2]
        with open(run_dir / CONSOLE_FILE, "ab") as console:
            proc = subprocess.Popen(job_command(state.job, run_dir), stdout=console, stderr=subprocess.STDOUT,
                                    env=job_env(self.parallel), start_new_session=True)
        self._sharing_changed()
        self.pending.remove(state)
        self.running.append(Attempt(state, proc, now, est, sharing, rows_before, count_from=rows_before + 1))
        resumed = f", resuming at iteration {state.done_iterations:,}" if state.done_iterations else ""
        self.say(f"study: start {state.job.name} ({state.job.net}, seed {state.job.seed}; about "
                 f"{est / 60:.1f} min with {sharing} on the device{resumed})")

    def terminate(self, a: Attempt) -> None:
        a.stopped = True
        with contextlib.suppress(ProcessLookupError):
            a.proc.send_signal(signal.SIGTERM)

    def reap(self) -> None:
        for a in list(self.running):
            rc = a.proc.poll()
            if rc is None:
                continue
            a.returncode, a.ended = rc, time.monotonic()
            summary_path = self.out / a.job.name / SUMMARY_FILE
            fresh = summary_path.is_file() and summary_path.stat().st_mtime >= a.started_wall - 1
            status = _read_json(summary_path).get("status") if fresh else None  # not an earlier attempt's
            if status in (None, "running"):  # it ended before it could say
                status = "interrupted" if a.stopped else ("completed" if rc == 0 else "failed")
            a.status = status
            self.running.remove(a)
            self.ended.append(a)
            self._sharing_changed()
            took = (a.ended - a.started) / 60
            why = "" if a.status == "completed" else f", exit {rc}: {_last_line(self.out / a.job.name / CONSOLE_FILE)}"
            self.say(f"study: {a.job.name} {a.status} in {took:.1f} min (estimated {a.estimate_s / 60:.1f}){why}")

    def stop_all(self, why: str) -> None:
        """SIGTERM every running job (each checkpoints and records ``interrupted``); after
        ``grace_s`` kill what has not stopped, with its process group (compile workers too)."""
        if not self.running:
            return
        self.say(f"study: {why}: stopping {', '.join(a.job.name for a in self.running)} (SIGTERM)")
        for a in self.running:
            self.terminate(a)
        end = time.monotonic() + self.grace_s
        while self.running and time.monotonic() < end:
            self.reap()
            time.sleep(self.poll_s)
        for a in self.running:
            self.say(f"study: {a.job.name} did not stop within {self.grace_s:.0f} s: killed (its last checkpoint stays)")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(a.proc.pid, signal.SIGKILL)
            a.proc.wait()
        self.reap()

    def run(self) -> None:
        stop = {}

        def on_signal(signum, _frame):
            stop["signal"] = signum

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            while True:
                self.reap()
                now = time.monotonic()
                if stop:
                    self.stop_signal = stop["signal"]
                    self.stop_reason = f"{signal.Signals(stop['signal']).name} received"
                    self.stop_all(self.stop_reason)
                    break
                if self.left_s(now) <= 0:
                    self.stop_reason = "the deadline"
                    self.stop_all("deadline reached")
                    break
                self.observe()
                self.stop_hopeless(now)
                while len(self.running) < self.parallel and (state := self.next_fitting(now)) is not None:
                    self.start(state, now)
                if not self.running:
                    break  # nothing left, or nothing left that fits
                time.sleep(self.poll_s)
        finally:
            for s, h in old.items():
                signal.signal(s, h)


def _read_json(p: Path) -> dict:
    try:
        d = json.loads(p.read_text())
    except (OSError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


# --- the plan, printed before anything starts ----------------------------------------------------
def plan(states: list[JobState], est: Estimator, parallel: int, budget_s: float | None) -> list[dict]:
    """Each pending job's estimate, and when it would start and end with ``parallel`` slots
    (priority order; a job that cannot end inside the budget is skipped, as the runner does)."""
    slots = [0.0] * parallel
    rows = []
    for s in states:
        if s.status != "pending":
            continue
        sharing = min(parallel, sum(1 for x in states if x.status == "pending"))
        parts = est.seconds(s.job, s.job.iterations - s.done_iterations, sharing)
        i = min(range(parallel), key=lambda j: slots[j])
        start, end = slots[i], slots[i] + parts["total"]
        fits = budget_s is None or end <= budget_s
        if fits:
            slots[i] = end
        rows.append({"job": s.job.name, "net": s.job.net, "seed": s.job.seed, **{f"{k}_min": v / 60 for k, v in parts.items()},
                     "start_min": start / 60 if fits else None, "end_min": end / 60 if fits else None, "fits": fits})
    return rows


def format_plan(rows: list[dict], budget_s: float | None) -> str:
    out = [f"{'job':<34} {'net':<11} {'est min':>8} {'setup':>6} {'train':>7} {'eval':>5}  plan"]
    for r in rows:
        when = (f"start +{r['start_min']:.1f}, end +{r['end_min']:.1f} min" if r["fits"] else
                f"does not fit in the {budget_s / 60:.2f} min budget")
        out.append(f"{r['job']:<34} {r['net']:<11} {r['total_min']:>8.1f} {r['setup_min']:>6.1f} "
                   f"{r['train_min']:>7.1f} {r['eval_min']:>5.1f}  {when}")
    return "\n".join(out)


def format_states(states: list[JobState]) -> str:
    lines = [f"{'job':<34} {'net':<11} {'seed':>4}  status"]
    for s in states:
        where = ""
        if s.record is not None and s.status != "pending":
            sm = s.record.summary
            where = f"  {s.record.run_dir}" + (f"  ({sm['wall_time_s'] / 60:.1f} min, {sm.get('images_per_s', 0):,.0f} img/s, "
                                               f"{sm.get('device_name', '?')})" if sm.get("wall_time_s") else "")
        elif s.done_iterations:
            where = f"  (resumable at iteration {s.done_iterations:,}: {s.record.run_dir})"
        lines.append(f"{s.job.name:<34} {s.job.net:<11} {s.job.seed:>4}  {s.status}{where}")
    return "\n".join(lines)


def states_from_runs(jobs: list[Job], runs) -> list[JobState]:
    """Job states from collected runs (``results.collect``): a job is done when a run of its recipe
    completed (or diverged)."""
    return job_states(jobs, find_records([Path(d) for d in runs["run_dir"].dropna()]))


def progress_markdown(states: list[JobState]) -> str:
    """The study's jobs as a Markdown table: done (where, wall time, images/s, GPU) and pending."""
    lines = ["| # | job | net | seed | status | wall min | img/s | device | record |", "|---|---|---|---|---|---|---|---|---|"]
    for s in states:
        sm = s.record.summary if s.record is not None and s.status != "pending" else {}
        wall = f"{sm['wall_time_s'] / 60:.1f}" if sm.get("wall_time_s") else ""
        rate = f"{sm['images_per_s']:,.0f}" if sm.get("images_per_s") else ""
        where = s.record.run_dir.as_posix() if sm else ""
        lines.append(f"| {s.job.index + 1} | {s.job.name} | {s.job.net} | {s.job.seed} | {s.status} | {wall} | {rate} | "
                     f"{sm.get('device_name', '')} | {where} |")
    done = sum(s.status != "pending" for s in states)
    return "\n".join(lines) + f"\n\n{done} of {len(states)} jobs done, {len(states) - done} pending.\n"


# --- warm-up: compile every net once, and time it ------------------------------------------------
def warm(jobs: list[Job], json_path: Path, *, ends_only: bool = False, warmup: int = 5, iters: int = 20,
         windows: int = 3, say=print) -> dict:
    """Compile and time each distinct net of ``jobs`` at its own settings, in priority order.

    Compilation fills inductor's on-disk caches, so the jobs that follow compile from cache. The
    result has the benchmark's JSON form (``rows`` with ``ours``), which ``run --timings`` reads;
    it is rewritten after every net, so a warm-up cut short still leaves what it measured.
    ``ends_only``: per variant, only the shallowest and deepest net (the rest is interpolated).
    """
    import torch

    from .speed import measure
    from .train import pick_device

    nets: dict[tuple[str, int], Job] = {}
    for j in jobs:
        nets.setdefault((j.variant, j.depth), j)
    if ends_only:
        keep = set()
        for v in {v for v, _ in nets}:
            depths = sorted(d for vv, d in nets if vv == v)
            keep |= {(v, depths[0]), (v, depths[-1])}
        nets = {k: j for k, j in nets.items() if k in keep}
    res = {"kind": "resnet-study warm", "batch": None, "rows": [], "device_name": None}
    for (variant, depth), job in nets.items():
        device = pick_device(job.cfg.trainer.device)
        res["device"] = str(device)
        res["device_name"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        if res["batch"] not in (None, job.batch):
            raise ResnetReproError("The study's jobs use different batch sizes; warm them up one batch at a time.")
        res["batch"] = job.batch
        t = job.cfg.trainer
        setting = {"precision": t.precision, "channels_last": t.channels_last, "compile": t.compile,
                   "cuda_graphs": t.cuda_graphs, "deterministic": t.deterministic}
        c = 1 if job.cfg.dataset.name == "fashion_mnist" else 3
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (max(20, iters) * job.batch, c, 32, 32), dtype=torch.uint8, generator=g)
        y = torch.randint(0, job.cfg.model.num_classes, (len(x),), generator=g)
        m = measure(variant, depth, device, x, y, batch=job.batch, setting=setting, warmup=warmup, iters=iters,
                    windows=windows)
        res["rows"].append({"model": job.net, "variant": variant, "depth": depth, "ours": m})
        compiled = " (compilation included)" if m["setting"]["compile"] != "off" else ""
        say(f"warm: {job.net}: warm-up {m['warmup_s']:.1f} s{compiled}, then {m['img_per_s']:,.0f} img/s "
            f"({m['setting']}; cudagraph_skips {m['cudagraph_skips']})")
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(res, indent=2) + "\n")
    return res


# --- packing the records --------------------------------------------------------------------------
def gpu_slug(device_name: str | None) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'h100', 'NVIDIA GeForce RTX 4090' -> 'nvidia-geforce-rtx-4090';
    a CPU (or nothing known) -> 'cpu'."""
    name = device_name or ""
    m = re.search(r"\b([A-Z]{1,2}\d{2,4}[A-Z]?)\b", name.upper())
    if m:
        return m.group(1).lower()
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") if "NVIDIA" in name.upper() else "cpu"


def schedule_tag(iterations: int) -> str:
    """64000 -> '64k'; 40 -> '40it'."""
    return f"{iterations // 1000}k" if iterations % 1000 == 0 else f"{iterations}it"


def pack(out: Path, archive: Path, limit: int = ARCHIVE_LIMIT) -> list[str]:
    """Pack the completed run records under ``out`` (and its ``study.json``) into a tar.xz archive.

    Returns the packed runs. Checkpoints never travel: a record is its config, history, summary,
    layer statistics, gradient norms and logs.
    """
    runs = [d for d in find_run_dirs(out) if _read_json(d / SUMMARY_FILE).get("status") in ENDED]
    archive.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        if (out / STUDY_FILE).is_file():
            tar.add(out / STUDY_FILE, arcname=STUDY_FILE)
        for d in runs:
            name = d.name if d == out else d.relative_to(out).as_posix()  # packing one run folder: its name
            for f in PACKED_FILES:
                if (d / f).is_file():
                    tar.add(d / f, arcname=f"runs/{name}/{f}")
    if buf.tell() > limit:
        raise ResnetReproError(f"The packed records of {out} take {buf.tell() / 2**20:.1f} MiB, more than "
                               f"{limit / 2**20:.0f} MiB. Pack fewer runs (resnet-study pack <one run folder> ...).")
    tmp = archive.with_name(archive.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(archive)
    return [d.name if d == out else d.relative_to(out).as_posix() for d in runs]


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def unpack(archive: Path, into: Path) -> Path:
    """Unpack a study archive into ``into/<yyyy-mm-dd>-<gpu>-<schedule>/``; return that folder.

    Runs land beside those of earlier archives of the same day, GPU and schedule. A run folder that
    already holds the same files is left alone; one that holds a different record is refused.
    """
    try:
        tar = tarfile.open(archive, mode="r:*")
    except (OSError, tarfile.TarError) as ex:
        raise ResnetReproError(f"Cannot read {archive} as a study archive ({ex}). Give the .tar.xz that "
                               f"resnet-study run --archive (or resnet-study pack) wrote.") from None
    with tar:
        files = {}
        for m in tar.getmembers():
            parts = Path(m.name).parts
            run_file = len(parts) >= 3 and parts[0] == "runs" and parts[1] not in ("", ".")
            if not m.isfile() or ".." in parts or not (m.name == STUDY_FILE or run_file):
                raise ResnetReproError(f"{archive} holds {m.name!r}, which is not a study log or a file of a run "
                                       f"folder (runs/<run>/...); refusing to unpack it.")
            files[m.name] = tar.extractfile(m).read()
    study = json.loads(files[STUDY_FILE]) if STUDY_FILE in files else {}
    summaries = [json.loads(v) for k, v in files.items() if k.endswith("/" + SUMMARY_FILE)]
    if not summaries and not study:
        raise ResnetReproError(f"{archive} holds no runs and no study log: nothing to unpack.")
    when = study.get("finished_at") or max((s.get("finished_at") or "" for s in summaries), default="") or _now()
    device = "cpu" if any(s.get("device") == "cpu" for s in summaries) else (
        study.get("device_name") or next((s.get("device_name") for s in summaries if s.get("device_name")), None))
    iterations = sorted({int(s.get("iterations_total") or 0) for s in summaries} or set(study.get("iterations") or []))
    folder = into / f"{when[:10]}-{gpu_slug(device)}-{'+'.join(schedule_tag(i) for i in iterations) or 'none'}"
    runs: dict[str, dict[str, bytes]] = {}
    for name, data in files.items():
        if name.startswith("runs/"):
            run, _, rel = name[len("runs/"):].partition("/")
            runs.setdefault(run, {})[rel] = data
    for run, content in runs.items():  # check everything before writing anything
        d = folder / run
        if d.exists():
            old = {rel: (d / rel).read_bytes() for rel in content if (d / rel).is_file()}
            if {k: _digest(v) for k, v in old.items()} != {k: _digest(v) for k, v in content.items()}:
                raise ResnetReproError(f"{d} already holds a different record of {run}. Unpack into another folder "
                                       f"(--into), or move that run away first.")
    for run, content in runs.items():
        for rel, data in content.items():
            p = folder / run / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
    if study:  # filed even when no run completed: it holds what the jobs did, and why
        stamp = (study.get("started_at") or when).replace(":", "").replace("-", "")[:15]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"study-{stamp}.json").write_bytes(files[STUDY_FILE])
    return folder


# --- the commands --------------------------------------------------------------------------------
def default_results() -> list[Path]:
    p = Path("analysis/results")
    return [p] if p.is_dir() else []


def _setup(args) -> tuple[Study, list[Job], Path]:
    study = load_study(args.study)
    jobs = resolve_jobs(study, args.overrides)
    out = Path(args.out or f"runs/study/{study.name}")
    return study, jobs, out


def cmd_status(args) -> int:
    study, jobs, out = _setup(args)
    results = [Path(p) for p in args.results] if args.results is not None else default_results()
    states = job_states(jobs, find_records([*results, out]), out)
    print(f"Study {study.name} ({study.source}): {len(jobs)} jobs; records read from "
          f"{', '.join(map(str, [*results, out]))}")
    print(format_states(states))
    pending = sum(s.status == "pending" for s in states)
    print(f"{len(states) - pending} done, {pending} pending.")
    return 0


def cmd_warm(args) -> int:
    study, jobs, out = _setup(args)
    results = [Path(p) for p in args.results] if args.results is not None else default_results()
    states = job_states(jobs, find_records([*results, out]), out)
    todo = [s.job for s in states if s.status == "pending" or args.all]
    if not todo:
        print("warm: no pending jobs: nothing to warm up.")
        return 0
    path = Path(args.json or out / "warm.json")
    warm(todo, path, ends_only=args.ends_only, warmup=args.warmup, iters=args.iters, windows=args.windows)
    print(f"warm: wrote {path}")
    return 0


def _probe(args, out: Path, timeout_s: float | None) -> Path:
    """Time the pending nets' ends in a child process (the runner keeps no GPU memory of its own),
    within ``timeout_s``."""
    path = out / "probe.json"
    cmd = [sys.executable, "-m", "resnet_repro.study", "warm", "--study", args.study, "--out", str(out),
           "--json", str(path), "--ends-only", *[a for r in args.results or [] for a in ("--results", r)],
           *args.overrides]
    print("study: no --timings given: timing the shallowest and deepest pending net of each variant first", flush=True)
    try:
        r = subprocess.run(cmd, env=job_env(1), timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ResnetReproError(f"Timing the nets took more than {timeout_s:.0f} s of the budget. Give --timings "
                               f"<benchmark JSON> (benchmarks/throughput.py --json) instead.") from None
    if r.returncode != 0 or not path.is_file():
        raise ResnetReproError(f"The timing warm-up failed (exit {r.returncode}); see its output above. Give "
                               f"--timings <benchmark JSON> instead, or fix the error it shows.")
    return path


def check_out_folder(out: Path, states: list[JobState]) -> None:
    """Refuse, before any work, an output folder a job cannot run in: a path Hydra would read as
    syntax, or a job's folder holding a run of another recipe (the job would be refused there)."""
    if any(c in str(out) for c in ("'", "\\", "${")):
        raise ResnetReproError(f"--out {out} holds a quote, a backslash or '${{': Hydra would read it as syntax. "
                               f"Choose a plain path.")
    for st in states:
        if st.status != "pending":
            continue
        mine = find_records([out / st.job.name])
        if mine and not same_recipe(st.job.recipe(), mine[0].recipe):
            diff = sorted(k for k in st.job.recipe().keys() & mine[0].recipe.keys()
                          if st.job.recipe()[k] != mine[0].recipe[k])
            shown = "; ".join(f"{k}: {mine[0].recipe[k]!r} there, {st.job.recipe()[k]!r} now" for k in diff[:3])
            raise ResnetReproError(f"{out / st.job.name} holds a run of another recipe ({shown}). Give this study "
                                   f"another --out, or move that run away.")


def cmd_run(args) -> int:
    t_start = time.monotonic()
    deadline = t_start + args.budget_min * 60 if args.budget_min is not None else None
    if args.dry_run and not args.timings:
        raise ResnetReproError("--dry-run needs --timings <benchmark or warm-up JSON>: without them the runner "
                               "would time the nets on the device first.")
    study, jobs, out = _setup(args)
    results = [Path(p) for p in args.results] if args.results is not None else default_results()
    states = job_states(jobs, find_records([*results, out]), out)
    check_out_folder(out, states)
    pending = [s for s in states if s.status == "pending"]
    print(f"Study {study.name}: {len(jobs)} jobs, {len(jobs) - len(pending)} done, {len(pending)} pending "
          f"(records read from {', '.join(map(str, [*results, out]))}).", flush=True)
    record = {"study": study.name, "started_at": _now(), "budget_min": args.budget_min, "argv": sys.argv[1:],
              "git_commit": git_commit(), "iterations": sorted({j.iterations for j in jobs}), "jobs": []}
    attempts: list[Attempt] = []
    runner = None
    if pending:
        timings = [Path(p) for p in args.timings]
        if not timings:
            out.mkdir(parents=True, exist_ok=True)
            timings = [_probe(args, out, None if deadline is None else max(30.0, (deadline - time.monotonic()) / 2))]
        est = Estimator(Timings.load(timings), start_s=args.start_s)
        parallel = est.timings.best_parallel() if args.parallel == "auto" else int(args.parallel)
        left = None if deadline is None else deadline - time.monotonic() - args.reserve_s
        rows = plan(states, est, parallel, left)
        share = (f"; {parallel} runs at a time ({est.timings.speedup(parallel):.2f}x one run's throughput, as measured)"
                 if parallel > 1 else "")
        print(f"Timings from {', '.join(est.timings.sources)}{share}. "
              + (f"Budget: {left / 60:.1f} min for training." if left is not None else "No budget: every job runs.")
              + f" Each run compiles with {_compile_threads(parallel)} inductor threads.", flush=True)
        print(format_plan(rows, left), flush=True)
        record.update(parallel=parallel, timings=est.timings.sources, plan=rows)
        if args.dry_run:
            return 0
        out.mkdir(parents=True, exist_ok=True)
        runner = Runner(states, est, out, parallel=parallel, deadline=deadline, reserve_s=args.reserve_s,
                        grace_s=args.grace_s, margin=args.margin, say=lambda m: print(m, flush=True))
        runner.run()
        attempts = runner.ended
        record["stopped_by"] = runner.stop_reason
    out.mkdir(parents=True, exist_ok=True)
    record["finished_at"] = _now()
    record["jobs"] = job_log(states, attempts, out)
    record["device_name"] = device_name([_read_json(out / a.job.name / SUMMARY_FILE) for a in attempts])
    (out / STUDY_FILE).write_text(json.dumps(record, indent=2) + "\n")
    print(format_attempts(attempts))
    if args.archive:
        packed = pack(out, Path(args.archive))
        print(f"study: packed {len(packed)} completed runs into {args.archive}")
    if runner is not None and runner.stop_signal is not None:
        return 128 + runner.stop_signal  # the status the signal itself would give
    return 1 if any(a.status in ("failed", "diverged") for a in attempts) else 0


def device_name(summaries: list[dict]) -> str:
    """The device the study ran on: its runs' record of it, else this machine's GPU, else the CPU."""
    named = next((s["device_name"] for s in summaries if s.get("device_name")), None)
    if named:
        return named
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def job_log(states: list[JobState], attempts: list[Attempt], out: Path) -> list[dict]:
    """What became of every job: its state before, and this invocation's attempt (with the tail of
    a failed job's console, so a failure's cause travels with the archive)."""
    by_name = {a.job.name: a for a in attempts}
    rows = []
    for s in states:
        row = {"job": s.job.name, "index": s.job.index, "net": s.job.net, "seed": s.job.seed,
               "status_before": s.status, "record": str(s.record.run_dir) if s.record is not None else None}
        a = by_name.get(s.job.name)
        if a is not None:
            row.update(status=a.status, started_at=a.started_at, minutes=(a.ended - a.started) / 60,
                       estimated_minutes=a.estimate_s / 60, sharing_at_start=a.sharing, returncode=a.returncode)
            if a.status not in ENDED:
                with contextlib.suppress(OSError):
                    row["console_tail"] = (out / s.job.name / CONSOLE_FILE).read_text(errors="replace")[-4000:]
        else:
            row["status"] = s.status if s.status != "pending" else "not started"
        rows.append(row)
    return rows


def format_attempts(attempts: list[Attempt]) -> str:
    if not attempts:
        return "study: no job ran."
    lines = [f"{'job':<34} {'status':<12} {'minutes':>8} {'estimated':>10}"]
    for a in attempts:
        lines.append(f"{a.job.name:<34} {a.status:<12} {(a.ended - a.started) / 60:>8.1f} {a.estimate_s / 60:>10.1f}")
    return "\n".join(lines)


def cmd_pack(args) -> int:
    packed = pack(Path(args.folder), Path(args.archive))
    print(f"resnet-study: packed {len(packed)} completed runs of {args.folder} into {args.archive} "
          f"({Path(args.archive).stat().st_size / 2**20:.2f} MiB)")
    return 0


def cmd_unpack(args) -> int:
    folder = unpack(Path(args.archive), Path(args.into))
    print(f"resnet-study: unpacked {args.archive} into {folder}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="resnet-study", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)

    def study_args(p):
        p.add_argument("--study", default="degradation", help="conf/study/<name>.yaml, or a YAML path (default: degradation)")
        p.add_argument("--out", help="where the study's runs go (default: runs/study/<study>)")
        p.add_argument("--results", action="append", metavar="FOLDER",
                       help="a folder of records that count as done (repeatable; default: analysis/results)")
        p.add_argument("overrides", nargs="*", help="config overrides for every job, e.g. dataset.root=../shared/data")

    p = sub.add_parser("status", help="which jobs are done and which are pending")
    study_args(p)
    p = sub.add_parser("run", help="run the next pending jobs that fit in the budget")
    study_args(p)
    p.add_argument("--budget-min", type=float, help="minutes from now; no job starts that cannot end in them")
    p.add_argument("--timings", action="append", default=[], metavar="JSON",
                   help="benchmark or warm-up JSON (repeatable; a later file's net wins); default: time the pending nets first")
    p.add_argument("--parallel", default="auto", help="runs at a time on the GPU: auto (the best measured) or k")
    p.add_argument("--reserve-s", type=float, default=45.0, help="seconds kept at the end for stopping and packing")
    p.add_argument("--grace-s", type=float, default=30.0, help="seconds a stopped run gets to checkpoint")
    p.add_argument("--margin", type=float, default=0.1, help="a job starts when its estimate plus this fraction fits")
    p.add_argument("--start-s", type=float, default=20.0, help="start-up seconds of a run before compilation")
    p.add_argument("--archive", help="pack the completed records into this .tar.xz at the end")
    p.add_argument("--dry-run", action="store_true", help="print the plan and start nothing")
    p = sub.add_parser("warm", help="compile and time every pending net once (fills the compile caches)")
    study_args(p)
    p.add_argument("--json", help="timings JSON to write (default: <out>/warm.json)")
    p.add_argument("--all", action="store_true", help="every job's net, done or not")
    p.add_argument("--ends-only", action="store_true", help="per variant, only the shallowest and deepest net")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps per net (compilation happens here)")
    p.add_argument("--iters", type=int, default=20, help="steps per timed window")
    p.add_argument("--windows", type=int, default=3, help="timed windows per net (the median is kept)")
    p = sub.add_parser("pack", help="pack the completed records of a folder into a .tar.xz (no checkpoints)")
    p.add_argument("folder")
    p.add_argument("archive")
    p = sub.add_parser("unpack", help="unpack a study archive into <into>/<yyyy-mm-dd>-<gpu>-<schedule>/")
    p.add_argument("archive")
    p.add_argument("--into", default="analysis/results")
    return ap


COMMANDS = {"status": cmd_status, "run": cmd_run, "warm": cmd_warm, "pack": cmd_pack, "unpack": cmd_unpack}


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "run" and args.parallel != "auto" and not (args.parallel.isdigit() and int(args.parallel) > 0):
        print(f"resnet-study: error: --parallel {args.parallel} is not valid: auto, or a positive number of runs.",
              file=sys.stderr)
        sys.exit(2)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        sys.exit(COMMANDS[args.command](args))
    except ResnetReproError as ex:
        print(f"resnet-study: error: {ex}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

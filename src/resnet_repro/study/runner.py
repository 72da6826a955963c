"""Running a study's jobs inside a deadline: estimates, the plan, and the runner.

Each job runs as its own ``resnet-train`` process. A job starts only when its estimate (with a
margin) and every running job's remaining time end before the deadline; estimates follow the speed
the running jobs log; at the deadline every running job gets SIGTERM (it checkpoints and records
``interrupted``).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..record import METRIC_COLUMNS, METRICS_FILE, SUMMARY_FILE
from ..results import read_table
from ..speed import Timings
from .jobs import Job, JobState, now_utc, read_json

CONSOLE_FILE = "console.log"  # a job's stdout and stderr, in its run folder


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
    started_at: str = field(default_factory=now_utc)
    started_wall: float = field(default_factory=time.time)
    ended: float | None = None
    status: str = "running"
    returncode: int | None = None
    stopped: bool = False  # the runner sent it SIGTERM

    @property
    def job(self) -> Job:
        return self.state.job


def compile_threads(parallel: int) -> str:
    return str(max(1, (os.cpu_count() or 1) // max(1, parallel)))


def job_command(job: Job, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "resnet_repro.train", *job.overrides, "hydra.mode=RUN", "trainer.progress=false",
            f"hydra.run.dir='{run_dir}'"]


def job_env(parallel: int) -> dict:
    """Children share the CPU cores: k runs at once each get 1/k of them for inductor's compile
    workers and for torch's CPU threads (unless the environment already says)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("TORCHINDUCTOR_COMPILE_THREADS", compile_threads(parallel))
    if parallel > 1:
        env.setdefault("OMP_NUM_THREADS", compile_threads(parallel))
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
    OVERRUN_S = 15.0  # and by this many seconds (near the deadline the estimates are too coarse to act on)

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
        ``OVERRUN`` and ``OVERRUN_S``: it cannot end in time, and a job that fits may use the device."""
        left = self.left_s(now)
        for a in self.running:
            if a.stopped or last_rate(self.out / a.job.name)[2] <= a.count_from + 1:
                continue  # too early to judge
            need = self.remaining_s(a, len(self.running), now)
            if need > self.OVERRUN * max(left, 0.0) and need - left > self.OVERRUN_S:
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
            status = read_json(summary_path).get("status") if fresh else None  # not an earlier attempt's
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

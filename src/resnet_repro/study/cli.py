"""``resnet-study``: status, run, warm, pack and unpack; the package docstring shows them at work."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

from ..errors import ResnetReproError
from ..record import SUMMARY_FILE, git_commit
from ..speed import Timings
from .archive import STUDY_FILE, pack, unpack
from .jobs import (
    ENDED,
    Job,
    JobState,
    Study,
    find_records,
    format_states,
    job_states,
    load_study,
    now_utc,
    read_json,
    resolve_jobs,
    same_recipe,
)
from .runner import (
    CONSOLE_FILE,
    Attempt,
    Estimator,
    Runner,
    compile_threads,
    format_plan,
    job_env,
    plan,
)
from .warmup import warm


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
    record = {"study": study.name, "started_at": now_utc(), "budget_min": args.budget_min, "argv": sys.argv[1:],
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
              + f" Each run compiles with {compile_threads(parallel)} inductor threads.", flush=True)
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
    record["finished_at"] = now_utc()
    record["jobs"] = job_log(states, attempts, out)
    record["device_name"] = device_name([read_json(out / a.job.name / SUMMARY_FILE) for a in attempts])
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
    ap = argparse.ArgumentParser(prog="resnet-study", description="A study's jobs in priority order, inside a fixed GPU budget.")
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

"""A study as data, its jobs, and which of them are done.

A study (``conf/study/<name>.yaml``) names a training preset, the overrides every job gets, the
seeds, and one seed's jobs in priority order. A job is done where a record of its recipe completed
(or diverged): its config equals the job's on every key that decides what a run computes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from ..config import Config, config_dir, flat, iteration_schedule, to_config, to_dict
from ..data import test_batch_available
from ..errors import ResnetReproError
from ..preflight import explain
from ..record import CONFIG_FILE, RUNTIME_KEYS, SUMMARY_FILE
from ..results import find_run_dirs
from ..sweep import job_name

ENDED = ("completed", "diverged")  # a job with such a record is not run again (a divergence is a result)


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_json(p: Path) -> dict:
    """A JSON object from ``p``, or {} when it is missing, half-written or not an object."""
    try:
        d = json.loads(p.read_text())
    except (OSError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


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

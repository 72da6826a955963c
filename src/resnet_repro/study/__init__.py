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

from .archive import gpu_slug, pack, schedule_tag, unpack
from .cli import main
from .jobs import (
    Job,
    JobState,
    Record,
    Study,
    find_records,
    job_states,
    load_study,
    progress_markdown,
    recipe,
    resolve_jobs,
    same_recipe,
    states_from_runs,
)
from .runner import Estimator, Runner, format_plan, plan
from .warmup import warm

__all__ = ["Estimator", "Job", "JobState", "Record", "Runner", "Study", "find_records", "format_plan", "gpu_slug",
           "job_states", "load_study", "main", "pack", "plan", "progress_markdown", "recipe", "resolve_jobs",
           "same_recipe", "schedule_tag", "states_from_runs", "unpack", "warm"]

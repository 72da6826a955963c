"""Hydra's basic sweeper, plus: ``exclude`` rules, every job's config validated before the first
job starts, each job's directory named by ``resnet_repro.sweeps.sweep.job_names``, and the sweep
manifest (every job listed before the first starts, every outcome recorded once after the last
ends)."""

from __future__ import annotations

import csv
import itertools
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf, open_dict, read_write

from resnet_repro.cli.preflight import check_can_start
from resnet_repro.config import to_config
from resnet_repro.errors import ConfigError, ResnetReproError, RunDirError
from resnet_repro.record.files import RECORD_ERRORS
from resnet_repro.record.lock import RunLock
from resnet_repro.sweeps.sweep import (
    MANIFEST_FILE,
    SWEEP_LOCK_FILE,
    Manifest,
    excluded,
    job_names,
    job_outcome,
    mark_jobs_ended,
    summary_line,
    sweep_stopped,
)
from resnet_repro.training import stacking

log = logging.getLogger(__name__)


class ResnetSweeper(Sweeper):
    """Hydra's basic sweep (the product of every swept value), with ``exclude`` rules."""

    def __init__(
        self,
        max_batch_size: int | None = None,
        params: dict | None = None,
        exclude: Sequence[Any] = (),
        dry_run: bool = False,
    ) -> None:
        self.max_batch_size, self.dry_run = max_batch_size, dry_run
        self.params = dict(params or {})
        self.exclude = [
            dict(OmegaConf.to_container(e) if OmegaConf.is_config(e) else e) for e in exclude or []
        ]
        self.config = self.launcher = self.hydra_context = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def split_arguments(
        self, overrides: list[Override], max_batch_size: int | None
    ) -> list[list[list[str]]]:
        """The jobs of parsed overrides less the ``exclude`` rules' jobs, in batches of at most
        ``max_batch_size`` (all in one batch without it)."""
        jobs = [job for job in product(overrides) if not excluded(job, self.exclude)]
        size = max_batch_size or len(jobs) or 1
        return [jobs[i : i + size] for i in range(0, len(jobs), size)]

    def jobs(self, arguments: list[str]) -> list[list[str]]:
        """Every job's overrides: the product of the swept values (the sweeper's ``params`` first,
        then the command line's), in Hydra's order."""
        params_conf = [f"{k}={v}" for k, v in self.params.items()] + list(arguments)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        return [
            job
            for batch in self.split_arguments(parser.parse_overrides(params_conf), None)
            for job in batch
        ]

    def sweep(self, arguments: list[str]) -> Any:
        stacking.refuse_members_by_hand(arguments)
        jobs = self.jobs(arguments)
        depths, configs = [], []
        for overrides in jobs:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with read_write(cfg), open_dict(cfg):
                del cfg["hydra"]  # the job's own config, as the task function gets it
            try:
                c = to_config(cfg, overrides)
            except ConfigError as ex:
                raise ConfigError(
                    f"{ex} (in sweep job: {' '.join(overrides)}; no job was started)"
                ) from None
            depths.append(c.model.depth)
            configs.append(c)
        names = job_names(jobs, depths, axes=self.params)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        for c, name, overrides in zip(
            configs, names, jobs, strict=True
        ):  # before Hydra writes anything
            try:
                check_can_start(c, sweep_dir / name)
            except ResnetReproError as ex:
                raise type(ex)(
                    f"{ex} (in sweep job: {' '.join(overrides)}; no job was started)"
                ) from None
        launches = stacking.plan(
            configs
        )  # each entry: one job, or a stack of jobs; a refusal writes nothing
        check_same_sweep(sweep_dir, names)
        if self.dry_run:
            print(dry_run_listing(sweep_dir, names, jobs, configs, launches), flush=True)
            return []
        sweep_dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(sweep_dir, SWEEP_LOCK_FILE, what="sweep")
        lock.acquire()  # one sweep per folder at a time
        try:
            return self._run(sweep_dir, names, jobs, configs, launches)
        except KeyboardInterrupt as ex:  # Ctrl-C or SIGTERM: the running job has checkpointed
            raise sweep_stopped(ex, sweep_dir) from None
        finally:
            lock.release()

    def _run(
        self,
        sweep_dir: Path,
        names: list[str],
        jobs: list[list[str]],
        configs: list,
        launches: list,
    ) -> Any:
        """List the jobs in the manifest, launch them, and record every outcome once."""
        check_same_sweep(sweep_dir, names)  # again, now that no other sweep can write its manifest
        Manifest(sweep_dir).set_jobs(
            [
                {"name": n, "overrides": " ".join(o), "run_dir": os.path.abspath(sweep_dir / n)}
                for n, o in zip(names, jobs, strict=True)
            ]
        )
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        stacked = sum(len(s) for s in launches if len(s) > 1)
        log.info(
            "Sweep of %d jobs in %s%s",
            len(jobs),
            sweep_dir,
            f" ({stacked} of them in {sum(len(s) > 1 for s in launches)} stacks, trainer.stack)"
            if stacked
            else "",
        )
        named = _launched(launches, jobs, names, configs)
        size = self.max_batch_size or len(named)
        returns: list[Any] = []
        try:
            for start in range(0, len(named), size):
                returns.append(
                    self.launcher.launch(named[start : start + size], initial_job_idx=start)
                )
        finally:
            # the manifest's record of every job's outcome, once, even when the sweep was stopped
            ended = [r for results in returns for r in results]
            outcome = {i: None for i in range(len(jobs))}
            for s, r in zip(launches, ended, strict=False):
                for i in s:
                    outcome[i] = _failure(r, sweep_dir / names[i] if len(s) > 1 else None)
            mark_jobs_ended(sweep_dir, outcome)
            log.info("%s", summary_line(sweep_dir))
        for r in ended:  # after every job ran: raise the first failure, if any
            _ = r.return_value
        return returns


def dry_run_listing(
    sweep_dir: Path, names: list[str], jobs: list[list[str]], configs: list, launches: list
) -> str:
    """What the sweep would do: every job's name, overrides and record, each config validated."""
    from resnet_repro.record.files import SUMMARY_FILE, read_record_json

    stack_of = {i: s for s in launches if len(s) > 1 for i in s}
    lines = [
        f"Sweep of {len(jobs)} jobs in {sweep_dir} (dry run: every job's config is valid; nothing "
        f"was run or written):"
    ]
    for i, (name, overrides, c) in enumerate(zip(names, jobs, configs, strict=True)):
        try:
            summary = read_record_json(sweep_dir / name / SUMMARY_FILE)
            state = (
                f"{summary.get('status')} at iteration {summary.get('iterations')}: resumes"
                if (summary.get("status") != "completed")
                else "completed: skipped"
            )
        except RECORD_ERRORS:
            state = "new"
        stacked = f", stacked with {len(stack_of[i]) - 1} other(s)" if i in stack_of else ""
        lines.append(
            f"  {i:>3}  {name}  [{' '.join(overrides) or 'no overrides'}]  {c.name}, "
            f"{c.schedule.iterations:,} iterations{stacked}; {state}"
        )
    lines.append("Without --dry-run the same command runs them.")
    return "\n".join(lines)


def check_same_sweep(sweep_dir: Path, names: list[str]) -> None:
    """Refuse a sweep into a folder whose manifest lists jobs this sweep does not have: its manifest
    would lose them, and the folder would mix two sweeps. The same sweep, or one with more jobs
    (more seeds), continues in place."""
    try:
        listed = [r.get("name") for r in Manifest(sweep_dir).recorded()]
    except (*RECORD_ERRORS, csv.Error):
        raise RunDirError(
            f"{sweep_dir / MANIFEST_FILE} cannot be read. Restore it, or give this sweep its own "
            f"folder (hydra.sweep.dir=<dir>); no job was started."
        ) from None
    gone = [n for n in listed if n and n not in names]
    if gone:
        raise RunDirError(
            f"{sweep_dir} holds another sweep: its {MANIFEST_FILE} lists {len(gone)} job(s) this "
            f"one does not have ({', '.join(gone[:3])}{', ...' if len(gone) > 3 else ''}). Rerun "
            f"that sweep's own command to continue it, or give this sweep its own folder "
            f"(hydra.sweep.dir=<dir>); no job was started."
        )


def _launched(
    launches: list[list[int]], jobs: list[list[str]], names: list[str], configs: list
) -> list[list[str]]:
    """The overrides of each Hydra job. Each job's directory is its name: Hydra's
    ``hydra.sweep.subdir``, set here and nowhere else; a stack's Hydra job runs in its first run's
    directory and names every run it trains (``trainer.stack_members``)."""
    named = []
    for s in launches:
        o = [*jobs[s[0]], f"hydra.sweep.subdir='{names[s[0]]}'"]
        if len(s) > 1:
            o.append(stacking.members_override([configs[i] for i in s], [names[i] for i in s]))
        named.append(o)
    return named


def _failure(job_return: JobReturn, member_dir: Path | None = None) -> BaseException | None:
    """The exception that ended a failed job (Hydra raises it on reading the return value); for a
    run of a stack (``member_dir``), only where its own record does not say it completed or
    diverged."""
    if job_return.status != JobStatus.FAILED:
        return None
    if member_dir is not None and (job_outcome(member_dir) or {}).get("status") in (
        "completed",
        "diverged",
    ):
        return None
    try:
        _ = job_return.return_value
    except BaseException as ex:  # noqa: BLE001 - whatever ended the job is its outcome
        return ex
    return None


def product(overrides: list[Override]) -> list[list[str]]:
    """The jobs of parsed overrides: one per combination of the swept values, the last key varying
    fastest (Hydra's basic sweeper's order); a key given again (the command line after the sweeper's
    ``params``) replaces its values in the first one's place. Ranges and choices sweep; intervals
    cannot."""
    axes: dict[str, list[str]] = {}
    for o in overrides:
        key = o.get_key_element()
        if o.is_sweep_override():
            if o.is_interval_sweep():
                raise ConfigError(
                    f"{o.input_line} is an interval: a grid sweep needs values to list, e.g. "
                    f"{key}=0.1,0.05 or {key}=range(1,4)."
                )
            axes[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
        else:
            axes[key] = [f"{key}={o.get_value_element_as_str()}"]
    return [list(job) for job in itertools.product(*axes.values())]

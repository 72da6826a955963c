"""The ``resnet-train`` command line: Hydra's app, answering config errors and ``--help`` before
torch is imported (training imports it once a run starts).

    resnet-train                                   # ResNet-20, paper recipe, CIFAR-10
                                                   # (paper protocol)
    resnet-train model.depth=56 model.residual=false
    resnet-train -m model.n=3,5,7,9,18             # a Hydra multirun sweep
    resnet-train --cfg job model.depth=56          # the validated config the run would use
    python -m resnet_repro.cli experiment=smoke

``resnet-train --help`` is conf/hydra/help/resnet.yaml. A single run whose start fails before its
run record begins leaves nothing behind: the run directory and data root it made are removed.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from ..config import config_dir, to_config
from ..errors import Preempted, ResnetReproError

DRY_RUN = "--dry-run"  # resnet-train -m ... --dry-run: every job listed and validated, nothing run
# The directory Hydra runs a single run's job in, once the job has started (for main's clean-up).
_job: dict[str, str] = {}


@hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig) -> float | list | None:
    from ..training.train import train  # torch: only once a run starts

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    if not multirun:
        _job["output_dir"] = hc.runtime.output_dir
    sweep = (
        {
            "group": f"{cfg.experiment_name}-{Path(hc.sweep.dir).name}",
            "job_num": hc.job.num,
            "sweep_dir": hc.sweep.dir,
        }
        if multirun
        else {}
    )
    try:
        if cfg.trainer.stack_members:  # the sweeper made this job a stack of runs (stacking.py)
            from ..training.stacking import member_configs
            from ..training.train_stack import train_stack

            members = cfg.trainer.stack_members
            summaries = train_stack(
                member_configs(cfg, list(hc.overrides.task)),
                [Path(hc.sweep.dir) / m.name for m in members],
                **sweep,
            )
            return [s.get("final_test_err", s.get("final_val_err")) for s in summaries]
        summary = train(to_config(cfg, list(hc.overrides.task)), hc.runtime.output_dir, **sweep)
    except ResnetReproError as ex:
        if multirun:
            # the sweeper records the failure in its manifest once the sweep ends,
            # and runs the other jobs
            raise
        print(f"resnet-train: error: {ex}", file=sys.stderr)
        sys.exit(2)
    return summary.get("final_test_err", summary.get("final_val_err"))


def main() -> None:
    """Console entry point: check every job's config first, then hand over to Hydra."""
    from .preflight import explain, job_config, preflight

    os.environ.setdefault(
        "HYDRA_FULL_ERROR", "1"
    )  # we print our own errors; real bugs keep tracebacks
    os.environ.setdefault(
        "CUBLAS_WORKSPACE_CONFIG", ":4096:8"
    )  # deterministic cuBLAS when asked for
    # torch's CPU threads sleep while they wait (read when torch loads, below): with the default
    # spin-wait, two threads on a 2-core CPU busy with other work trained ResNet-20 at half the
    # speed of one thread; sleeping, faster than one, and about 12% slower than spinning on an idle
    # CPU (docs/speed.md, CPU threads; OMP_WAIT_POLICY= keeps OpenMP's own)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    dry_run = DRY_RUN in sys.argv[1:]
    if dry_run:  # the sweeper's own option, so that the preset sweeps (no -m) have it too
        sys.argv = [a for a in sys.argv if a != DRY_RUN] + ["hydra.sweeper.dry_run=true"]
    try:
        shown = job_config(sys.argv[1:], config_dir())
        if shown is not None:
            _print(shown)
            return
        start = preflight(sys.argv[1:], config_dir())
        if start and start.earlier:
            sys.argv += start.hydra_overrides()
            print(start.moved_note(), end="", file=sys.stderr)
        if dry_run and start:  # a single run, validated: where it would run
            _print(
                f"1 run, {start.name}, in {start.where} (dry run: its config is valid; nothing was "
                f"run or written). Without {DRY_RUN} the same command runs it.\n"
            )
            return
        try:
            hydra_main()
        except BaseException as ex:
            if start and not (isinstance(ex, SystemExit) and ex.code in (0, None)):
                start.undo(
                    _job.get("output_dir")
                )  # a failed start leaves no run directory, no empty data root
            raise
    except ResnetReproError as ex:
        print(f"resnet-train: error: {ex}", file=sys.stderr)
        sys.exit(2)
    except Preempted as ex:
        print(f"resnet-train: {ex}", file=sys.stderr)
        sys.exit(
            128 + ex.signum
        )  # the exit status the signal itself would give (143, or 130 for Ctrl-C)
    except KeyboardInterrupt:  # Ctrl-C before training started, or a second one that would not wait
        print(
            "resnet-train: interrupted (Ctrl-C). Rerun the same command to resume from the last "
            "checkpoint (one Ctrl-C finishes the step and writes a checkpoint first).",
            file=sys.stderr,
        )
        sys.exit(128 + signal.SIGINT)
    except Exception as ex:
        msg = explain(ex)
        if msg is None:
            raise
        print(f"resnet-train: error: {msg}", file=sys.stderr)
        sys.exit(2)
    finally:
        exit_on_ctrl_c()


def exit_on_ctrl_c() -> None:
    """From here on, a Ctrl-C ends the process at once (exit status 130), quietly: the run is over
    and its record written, and one that lands in the interpreter's exit handlers (W&B's, torch's)
    would print their traceback instead."""

    def now(signum, _frame):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(128 + signum)

    signal.signal(signal.SIGINT, now)


def _print(text: str) -> None:
    """Print to stdout; a reader that stops early (``| head``) ends the command quietly."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit

"""Weights & Biases mirror of the local run record.

W&B is never the only copy: the run directory always holds the full record. Any W&B failure
(no network, no key, an error while logging) is warned about once; training and the local record
go on, and the summary notes the failure.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

from ..config import LoggerConfig
from ..record.files import CHECKPOINT_FILE, METRICS_FILE

log = logging.getLogger(__name__)
RUN_ID_FILE = "wandb_run_id.txt"
SWEEP_UNREACHABLE_FILE = "wandb_unreachable.txt"  # in a sweep's folder: W&B could not start
# In a run directory while its W&B run is open: an attempt that ends without finishing W&B (a
# hard kill, W&B failing mid-run) leaves it, and the next attempt logs the record's rows again.
UNFINISHED_FILE = "wandb_unfinished.txt"
BEST_IS_MIN = (
    "val_err",
    "test_err",
)  # W&B's summary keeps their minimum (and the last of the rest)


class WandbMirror:
    """Mirrors history rows and the summary of one run into one W&B run (or does nothing)."""

    def __init__(
        self,
        cfg: LoggerConfig,
        run_dir: Path,
        *,
        name: str,
        group: str | None,
        job_type: str,
        config: dict,
        sweep_dir: str | Path | None = None,
        concurrent: bool = False,
    ):
        """``concurrent``: other runs of this process stay open beside it (a stack's members)."""
        self.cfg, self.dir = cfg, Path(run_dir)
        self.run: Any = None
        self.error: str | None = None
        self.run_id: str | None = None
        self.behind = False  # an earlier attempt ended without finishing W&B: rows may be missing
        if cfg.name != "wandb" or cfg.mode == "disabled":
            return
        # In a sweep, one job that could not start W&B (no network, a bad key) spares the others
        # the wait: they keep their local record and say why W&B was skipped.
        unreachable = Path(sweep_dir) / SWEEP_UNREACHABLE_FILE if sweep_dir is not None else None
        if unreachable is not None and unreachable.is_file():
            self.error = (
                f"W&B skipped: an earlier job of this sweep could not start it "
                f"({unreachable.read_text().strip()})"
            )
            log.warning("%s. The local record in %s is complete.", self.error, self.dir)
            return
        try:
            import wandb

            id_file = self.dir / RUN_ID_FILE
            self.run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:8]
            id_file.write_text(self.run_id + "\n")
            self.behind = (self.dir / UNFINISHED_FILE).is_file()
            self.run = wandb.init(
                project=cfg.project,
                entity=cfg.entity,
                group=cfg.group or group,
                job_type=cfg.job_type or job_type,
                name=name,
                config=config,
                tags=list(cfg.tags),
                dir=str(self.dir),
                id=self.run_id,
                resume="allow",
                mode=cfg.mode,
                reinit="create_new" if concurrent else "finish_previous",
                settings=wandb.Settings(init_timeout=cfg.init_timeout),
            )
            self._define_metrics()
            (self.dir / UNFINISHED_FILE).write_text(
                f"W&B run {self.run_id} is open; an attempt that ends without finishing it leaves "
                f"this file, and the next one logs {METRICS_FILE}'s rows to it again.\n"
            )
        except Exception as ex:  # noqa: BLE001 - any W&B failure must leave training alone
            self._fail("start", ex)
            if unreachable is not None:
                try:
                    unreachable.write_text(f"{self.error}\n")
                except OSError:
                    pass

    def _define_metrics(self) -> None:
        """``iter`` is every metric's x-axis, and the best (lowest) eval errors are live summaries.

        Rows are logged with ``iter`` as a value, never as W&B's own step: after a hard kill the run
        trains again from its last checkpoint and logs those iterations a second time, and W&B drops
        rows logged at a step it has passed, which would leave it short of ``metrics.csv``.
        """
        self.run.define_metric("iter")
        self.run.define_metric("*", step_metric="iter")
        for key in BEST_IS_MIN:
            self.run.define_metric(key, step_metric="iter", summary="min")

    @property
    def active(self) -> bool:
        return self.run is not None

    def _fail(self, when: str, ex: BaseException) -> None:
        self.error = f"W&B failed at {when}: {type(ex).__name__}: {ex}"
        log.warning(
            "%s. Training goes on; the local record in %s is complete.", self.error, self.dir
        )
        run, self.run = self.run, None
        if run is not None:
            try:
                run.finish(exit_code=1, quiet=True)
            except Exception:  # noqa: BLE001
                pass

    def catch_up(self, rows: list[dict[str, Any]]) -> None:
        """After an attempt that ended without finishing W&B, log the record's rows again.

        A hard kill loses what W&B had not sent yet (offline: all the attempt wrote), so the rows
        up to the checkpoint are logged again, in order, before training goes on. An iteration W&B
        already holds is then in its history twice with the same values."""
        if self.run is None or not self.behind:
            return
        log.info(
            "W&B: the last attempt ended without finishing W&B; logging %d rows of %s again",
            len(rows),
            METRICS_FILE,
        )
        for row in rows:
            self.log(row)

    def log(self, row: dict[str, Any]) -> None:
        if self.run is None:
            return
        try:
            self.run.log({k: v for k, v in row.items() if v not in ("", None)})
        except Exception as ex:  # noqa: BLE001
            self._fail(f"iteration {row['iter']}", ex)

    def finish(
        self, summary: dict[str, Any], exit_code: int = 0, files: tuple[str, ...] = ()
    ) -> None:
        """Write the summary, upload the record's ``files`` (those that exist), finish the run."""
        if self.run is None:
            return
        try:
            self.run.summary.update(
                {k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool))}
            )
            # under <run dir name>/: W&B reserves some top-level names (config.yaml)
            for name in files:
                if (self.dir / name).is_file():
                    self.run.save(
                        str(self.dir / name), base_path=str(self.dir.parent), policy="now"
                    )
            if self.cfg.log_checkpoints:
                self._log_checkpoint(final=summary.get("status") == "completed")
            self.run.finish(exit_code=exit_code)
            (self.dir / UNFINISHED_FILE).unlink(missing_ok=True)
        except Exception as ex:  # noqa: BLE001
            self._fail("finish", ex)
        self.run = None

    def _log_checkpoint(self, final: bool) -> None:
        """The run's checkpoint as a W&B model Artifact (``logger.log_checkpoints``), one version
        per attempt under one name: W&B aliases the newest ``latest``, and a completed run's
        ``final``."""
        import wandb

        path = self.dir / CHECKPOINT_FILE
        if not path.is_file():
            return
        art = wandb.Artifact(
            f"checkpoint-{self.run_id}",
            type="model",
            metadata={"run_dir": self.dir.name, "final": final},
        )
        art.add_file(str(path), name=CHECKPOINT_FILE)
        self.run.log_artifact(art, aliases=["final"] if final else [])

    def record(self) -> dict[str, Any] | None:
        """What the summary says about W&B."""
        if self.cfg.name != "wandb":
            return None
        return {
            "mode": self.cfg.mode,
            "project": self.cfg.project,
            "run_id": self.run_id,
            "error": self.error,
        }

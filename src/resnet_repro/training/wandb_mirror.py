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

log = logging.getLogger(__name__)
RUN_ID_FILE = "wandb_run_id.txt"
SWEEP_UNREACHABLE_FILE = "wandb_unreachable.txt"  # in a sweep's folder: W&B could not start; jobs skip it


class WandbMirror:
    """Mirrors history rows and the summary of one run into one W&B run (or does nothing)."""

    def __init__(self, cfg: LoggerConfig, run_dir: Path, *, name: str, group: str | None,
                 job_type: str, config: dict, sweep_dir: str | Path | None = None, concurrent: bool = False):
        """``concurrent``: other runs of this process stay open beside it (a stack's members)."""
        self.cfg, self.dir = cfg, Path(run_dir)
        self.run: Any = None
        self.error: str | None = None
        self.run_id: str | None = None
        if cfg.name != "wandb" or cfg.mode == "disabled":
            return
        # In a sweep, one job that could not start W&B (no network, a bad key) spares the others
        # the wait: they keep their local record and say why W&B was skipped.
        unreachable = Path(sweep_dir) / SWEEP_UNREACHABLE_FILE if sweep_dir is not None else None
        if unreachable is not None and unreachable.is_file():
            self.error = (f"W&B skipped: an earlier job of this sweep could not start it "
                          f"({unreachable.read_text().strip()})")
            log.warning("%s. The local record in %s is complete.", self.error, self.dir)
            return
        try:
            import wandb

            id_file = self.dir / RUN_ID_FILE
            self.run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:8]
            id_file.write_text(self.run_id + "\n")
            self.run = wandb.init(
                project=cfg.project, entity=cfg.entity, group=cfg.group or group,
                job_type=cfg.job_type or job_type, name=name, config=config, tags=list(cfg.tags),
                dir=str(self.dir), id=self.run_id, resume="allow", mode=cfg.mode,
                reinit="create_new" if concurrent else "finish_previous", settings=wandb.Settings(init_timeout=cfg.init_timeout),
            )
        except Exception as ex:  # noqa: BLE001 - any W&B failure must leave training alone
            self._fail("start", ex)
            if unreachable is not None:
                try:
                    unreachable.write_text(f"{self.error}\n")
                except OSError:
                    pass

    @property
    def active(self) -> bool:
        return self.run is not None

    def _fail(self, when: str, ex: BaseException) -> None:
        self.error = f"W&B failed at {when}: {type(ex).__name__}: {ex}"
        log.warning("%s. Training goes on; the local record in %s is complete.", self.error, self.dir)
        run, self.run = self.run, None
        if run is not None:
            try:
                run.finish(exit_code=1, quiet=True)
            except Exception:  # noqa: BLE001
                pass

    def log(self, row: dict[str, Any]) -> None:
        if self.run is None:
            return
        try:
            self.run.log({k: v for k, v in row.items() if k != "iter" and v not in ("", None)}, step=row["iter"])
        except Exception as ex:  # noqa: BLE001
            self._fail(f"iteration {row['iter']}", ex)

    def finish(self, summary: dict[str, Any], exit_code: int = 0, files: tuple[str, ...] = ()) -> None:
        """Write the summary, upload the record's ``files`` (those that exist), finish the run."""
        if self.run is None:
            return
        try:
            self.run.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool))})
            for name in files:  # under <run dir name>/: W&B reserves some top-level names (config.yaml)
                if (self.dir / name).is_file():
                    self.run.save(str(self.dir / name), base_path=str(self.dir.parent), policy="now")
            self.run.finish(exit_code=exit_code)
        except Exception as ex:  # noqa: BLE001
            self._fail("finish", ex)
        self.run = None

    def record(self) -> dict[str, Any] | None:
        """What the summary says about W&B."""
        if self.cfg.name != "wandb":
            return None
        return {"mode": self.cfg.mode, "project": self.cfg.project, "run_id": self.run_id, "error": self.error}

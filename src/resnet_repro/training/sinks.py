"""Where a run's results go: the local record (always complete) and its W&B mirror.

Each history row is emitted once, to both. The summary is written locally first, then to W&B,
then locally again with what W&B said: W&B may hang or fail, and the local record must already be
complete when it does. That rule is written once, in :meth:`Sinks.close`, for every exit path.
"""

from __future__ import annotations

import logging
from typing import Any

from ..errors import RunDirError
from ..record.files import (
    CONFIG_FILE,
    GRAD_NORMS_FILE,
    LAYER_STATS_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
)
from ..record.run_record import RunRecord
from .wandb_mirror import WandbMirror

log = logging.getLogger("resnet_repro")
MIRRORED_FILES = (
    CONFIG_FILE,
    SUMMARY_FILE,
    METRICS_FILE,
    LAYER_STATS_FILE,
    GRAD_NORMS_FILE,
)  # to W&B at the end
SPLITS = ("train", "val", "test")
RESULT_KEYS = (
    "wall_time_s",
    "train_time_s",
    "images_per_s",
)  # with final_* and best_*: what a run found


class Sinks:
    """The run record and the W&B mirror of one run, and the summary they both hold."""

    def __init__(self, rec: RunRecord, wandb: WandbMirror, summary: dict[str, Any]):
        self.rec, self.wandb, self.summary = rec, wandb, summary
        self.summary["wandb"] = wandb.record()
        rec.write_summary(self.summary)
        wandb.catch_up(rec.metrics_rows())  # what a hard-killed attempt may have kept from W&B

    def row(self, row: dict[str, Any], *, final: bool = True) -> None:
        """One history row: ``metrics.csv`` and the W&B history; unless ``final=False`` (a diverged
        step's row), the summary keeps its errors as the latest (``final_*``), written with the next
        summary."""
        self.rec.append_metrics(row)
        self.wandb.log(row)
        for split in SPLITS if final else ():
            if f"{split}_err" in row:
                self.summary[f"final_{split}_loss"], self.summary[f"final_{split}_err"] = (
                    row[f"{split}_loss"],
                    row[f"{split}_err"],
                )

    def update(self, **fields: Any) -> None:
        """Update the summary and write it locally (the mirror gets it when the run ends)."""
        self.summary.update(fields)
        self.rec.write_summary(self.summary)

    def results(self) -> dict[str, Any]:
        """What the run found so far: final and best errors, times, speed (a checkpoint keeps
        them)."""
        return {
            k: v
            for k, v in self.summary.items()
            if k.startswith(("final_", "best_")) or k in RESULT_KEYS
        }

    def close(self, ok: bool, **fields: Any) -> None:
        """End the run in both sinks: the local summary, then W&B, then the local summary again.

        On failure (``ok=False``) a local write that fails (a full disk) is warned about: the
        error that ended the run is the one to report.
        """
        self.summary.update(fields)
        self._write_local(ok)
        self.wandb.finish(self.summary, exit_code=0 if ok else 1, files=MIRRORED_FILES)
        self.summary["wandb"] = self.wandb.record()
        self._write_local(ok, warn=False)

    def _write_local(self, ok: bool, warn: bool = True) -> None:
        if ok:
            self.rec.write_summary(self.summary)
            return
        try:
            self.rec.write_summary(self.summary)
        except (OSError, RunDirError) as ex:
            if warn:
                log.warning("Could not update %s: %s", self.rec.path(SUMMARY_FILE), ex)

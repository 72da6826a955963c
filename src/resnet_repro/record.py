"""The run record: everything a run leaves in its directory.

- ``config.yaml``: the resolved config (depth and n both filled in);
- ``metrics.csv``: the history, one row per log or eval iteration (``pandas.read_csv``);
- ``summary.json``: final and best errors, params, wall time, images/s, device, versions, status;
- ``checkpoint.pt``: model, optimizer, schedule, sampler and RNG state, written atomically;
- ``layer_stats.csv``: std of each 3x3 layer's response (paper Fig. 7), per recorded iteration;
- ``grad_norms.csv``: per-layer gradient norms at the iterations ``diagnostics.grad_norms`` names.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml

from .config import flat
from .errors import CheckpointError, RunDirError

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
CHECKPOINT_FILE = "checkpoint.pt"
LAYER_STATS_FILE = "layer_stats.csv"
GRAD_NORMS_FILE = "grad_norms.csv"

METRIC_COLUMNS = [
    "iter", "epoch", "lr", "train_loss", "train_err", "val_loss", "val_err",
    "test_loss", "test_err", "time_s", "img_per_s",
]
# Keys that may differ when a run is resumed: where and how it runs, not what it computes.
RUNTIME_KEYS = {
    "dataset.root", "dataset.download", "trainer.device", "trainer.progress",
    "trainer.num_threads", "trainer.channels_last", "trainer.compile", "trainer.cuda_graphs",
    "optimizer.impl", "logger.name", "logger.mode", "logger.project", "logger.entity",
    "logger.tags", "logger.group", "logger.job_type",
    "diagnostics.layer_stats", "diagnostics.layer_stats_images", "diagnostics.grad_norms",
}


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: Path, write) -> None:
    """Write via ``write(fileobj)`` to a temp file beside ``path``, fsync, then rename over it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the record the usual mode
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def library_versions() -> dict[str, str]:
    import hydra
    import numpy
    import omegaconf
    import torchvision

    from . import __version__

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "hydra": hydra.__version__,
        "omegaconf": omegaconf.__version__,
        "numpy": numpy.__version__,
        "resnet_repro": __version__,
    }


def git_commit() -> str | None:
    """Commit of the code that ran, when it runs from a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


class RunRecord:
    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as ex:
            raise RunDirError(f"Cannot create the run directory {self.dir}: {ex.strerror}. Choose a writable hydra.run.dir.") from None
        if not os.access(self.dir, os.W_OK):
            raise RunDirError(f"The run directory {self.dir} is not writable. Choose a writable hydra.run.dir.")

    def path(self, name: str) -> Path:
        return self.dir / name

    # --- config -----------------------------------------------------------------------------
    def saved_config(self) -> dict | None:
        p = self.path(CONFIG_FILE)
        return yaml.safe_load(p.read_text()) if p.is_file() else None

    def check_same_run(self, cfg: dict, checkpoint_cfg: dict | None = None) -> None:
        """Refuse to resume a run (config.yaml, else the checkpoint's own copy) of another config."""
        old = self.saved_config() or checkpoint_cfg
        if old is None:
            return
        a, b = flat(old), flat(cfg)
        diff = [k for k in sorted(set(a) | set(b)) if k not in RUNTIME_KEYS and a.get(k) != b.get(k)]
        if diff:
            shown = "; ".join(f"{k}: {a.get(k)!r} there, {b.get(k)!r} now" for k in diff[:5])
            raise RunDirError(
                f"{self.dir} already holds a run with a different config ({shown}). Give this run "
                f"its own directory (name=<new name> or hydra.run.dir=<dir>), or delete the old run."
            )

    def write_config(self, cfg: dict) -> None:
        text = yaml.safe_dump(cfg, sort_keys=False)
        atomic_write(self.path(CONFIG_FILE), lambda f: f.write(text.encode()))

    # --- metrics history and the other per-iteration tables --------------------------------
    def append_rows(self, name: str, columns: list[str], rows: list[dict[str, Any]]) -> None:
        """Append rows to the CSV table ``name`` (header written first), then fsync."""
        p = self.path(name)
        new = not p.is_file() or p.stat().st_size == 0
        with open(p, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=columns)
            if new:
                w.writeheader()
            for row in rows:
                w.writerow({k: row.get(k, "") for k in columns})
            f.flush()
            os.fsync(f.fileno())

    def truncate_rows(self, name: str, columns: list[str], last_iter: int) -> None:
        """Drop rows of table ``name`` after ``last_iter`` (written after the checkpoint)."""
        p = self.path(name)
        if not p.is_file():
            return
        with open(p, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("iter") and int(r["iter"]) <= last_iter]
        text = _csv_text(rows, columns)
        atomic_write(p, lambda fh: fh.write(text.encode()))

    def append_metrics(self, row: dict[str, Any]) -> None:
        self.append_rows(METRICS_FILE, METRIC_COLUMNS, [row])

    def truncate_metrics(self, last_iter: int) -> None:
        self.truncate_rows(METRICS_FILE, METRIC_COLUMNS, last_iter)

    # --- summary ----------------------------------------------------------------------------
    def read_summary(self) -> dict | None:
        p = self.path(SUMMARY_FILE)
        if not p.is_file():
            return None
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError:
            return None

    def write_summary(self, summary: dict) -> None:
        text = json.dumps(summary, indent=2, sort_keys=False, default=str) + "\n"
        atomic_write(self.path(SUMMARY_FILE), lambda f: f.write(text.encode()))

    # --- checkpoint -------------------------------------------------------------------------
    def save_checkpoint(self, state: dict) -> None:
        atomic_write(self.path(CHECKPOINT_FILE), lambda f: torch.save(state, f))

    def load_checkpoint(self) -> dict | None:
        p = self.path(CHECKPOINT_FILE)
        if not p.is_file():
            return None
        try:
            return torch.load(p, map_location="cpu", weights_only=True)
        except Exception as ex:
            raise CheckpointError(
                f"Checkpoint {p} is truncated or corrupt ({type(ex).__name__}: {str(ex).splitlines()[0][:200]}). "
                f"Delete it to restart this run from scratch, or choose another run directory."
            ) from None


def _csv_text(rows: list[dict], columns: list[str]) -> str:
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\r\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in columns})
    return buf.getvalue()

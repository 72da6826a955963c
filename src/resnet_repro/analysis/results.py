"""Collect run records into tidy pandas frames, from run directories or from W&B.

    from resnet_repro.analysis.results import collect
    runs, history = collect("runs/degradation/2026-11-23_10-00-00-000000")

``runs`` has one row per run: identity columns (``run``, ``variant``, ``depth``, ``residual``,
``seed``, ...), status, the summary metrics (``final_err`` is the reported split's error, test
when the run had a test split, else validation), wall time, and every config key as a dotted
column (``optimizer.lr``, ``schedule.iterations``, ...). ``history`` is long: one row per run,
iteration and metric. Runs that are pending, still running, failed or half-written appear with
their status; a partly written file never breaks collection.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from ..config import flat, override_pairs
from ..record.files import (
    CONFIG_FILE,
    GRAD_NORMS_FILE,
    LAYER_STATS_FILE,
    METRIC_COLUMNS,
    METRICS_FILE,
    RECORD_ERRORS,
    SUMMARY_FILE,
    first_line,
    read_record_json,
    read_record_text,
    read_record_yaml,
)
from ..sweeps.sweep import MANIFEST_FILE, Manifest, status_now

log = logging.getLogger(__name__)

ID_COLUMNS = ["run", "variant", "depth", "seed"]
RUN_COLUMNS = [
    "run",
    "sweep",
    "job",
    "name",
    "variant",
    "model",
    "depth",
    "n",
    "residual",
    "shortcut",
    "dataset",
    "protocol",
    "seed",
    "status",
    "iterations",
    "iterations_total",
    "params",
    "reported_error",
    "final_err",
    "final_train_err",
    "final_train_loss",
    "final_val_err",
    "final_val_loss",
    "final_test_err",
    "final_test_loss",
    "best_val_err",
    "best_val_iter",
    "best_test_err",
    "best_test_iter",
    "wall_time_s",
    "train_time_s",
    "images_per_s",
    "device",
    "device_name",
    "precision",
    "compile",
    "channels_last",
    "git_commit",
    "started_at",
    "finished_at",
    "updated_at",
    "error",
    "run_dir",
]
HISTORY_COLUMNS = [*ID_COLUMNS, "iter", "metric", "value"]
_RECORD_FILES = (CONFIG_FILE, SUMMARY_FILE, METRICS_FILE)
# W&B run states, in our status words (our own ``status`` in the W&B summary wins when present)
_WANDB_STATES = {
    "running": "running",
    "finished": "completed",
    "crashed": "interrupted",
    "failed": "failed",
    "killed": "interrupted",
    "pending": "pending",
}


_NUMBER = float  # an int or a float (not a bool); NaN and inf are numbers a run may write
_WORDS = {
    str: "a string",
    int: "an integer",
    bool: "true or false",
    dict: "a mapping",
    list: "a list",
    _NUMBER: "a number",
}
# The types of the fields a run's record is read by (None is always allowed: not told); a summary
# or config with another type in one of them is read as unreadable, and warned about once.
FIELD_TYPES = {
    SUMMARY_FILE: {
        **dict.fromkeys(
            (
                "name",
                "status",
                "model",
                "dataset",
                "protocol",
                "reported_error",
                "shortcut",
                "device",
                "device_name",
                "git_commit",
                "started_at",
                "finished_at",
                "error",
            ),
            str,
        ),
        **dict.fromkeys(
            (
                "depth",
                "n",
                "seed",
                "iterations",
                "iterations_total",
                "params",
                "best_val_iter",
                "best_test_iter",
            ),
            int,
        ),
        **dict.fromkeys(
            (
                "final_train_err",
                "final_train_loss",
                "final_val_err",
                "final_val_loss",
                "final_test_err",
                "final_test_loss",
                "best_val_err",
                "best_test_err",
                "wall_time_s",
                "train_time_s",
                "images_per_s",
            ),
            _NUMBER,
        ),
        "residual": bool,
        "fast_path": dict,
    },
    CONFIG_FILE: {
        **dict.fromkeys(
            (
                "name",
                "model.name",
                "model.shortcut",
                "dataset.name",
                "dataset.protocol",
                "schedule.unit",
            ),
            str,
        ),
        **dict.fromkeys(
            ("seed", "model.depth", "model.n", "schedule.iterations", "trainer.batch_size"), int
        ),
        **dict.fromkeys(
            ("optimizer.lr", "optimizer.momentum", "optimizer.weight_decay", "schedule.gamma"),
            _NUMBER,
        ),
        "model.residual": bool,
        "schedule.milestones": list,
    },
}


def field_problem(values: dict, types: dict) -> str | None:
    """The first field of ``values`` (dotted keys) whose value is not of its type in ``types``."""
    for key, t in types.items():
        v = values.get(key)
        if v is None:
            continue
        if t in (int, _NUMBER) and isinstance(v, bool):
            ok = False
        elif t is _NUMBER:
            ok = isinstance(v, (int, float))
        elif t is list:
            ok = isinstance(v, list) and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in v
            )
        else:
            ok = isinstance(v, t)
        if not ok:
            return f"{key} is {str(v)[:40]!r}, not {_WORDS[t]}"
    return None


def _checked(d: Path, name: str, values: dict | None) -> dict | None:
    """``values`` read from ``d/name``, or None (with one warning naming the file) when a field the
    report reads has a type no run writes."""
    if values is None:
        return None
    try:
        problem = field_problem(flat(values), FIELD_TYPES[name])
    except RecursionError:
        problem = "it is nested deeper than any record"
    if problem:
        log.warning("Reading %s as unreadable: %s", d / name, problem)
        return None
    return values


class Results(NamedTuple):
    runs: pd.DataFrame
    history: pd.DataFrame


# --- reading one run directory ----------------------------------------------------------------
def _read(p: Path, reader) -> dict | None:
    """A record's JSON or YAML mapping; None when there is none, with one warning when the file
    is there but cannot be read as one."""
    if not os.path.lexists(p):
        return None
    try:
        d = reader(p)
    except RECORD_ERRORS as ex:
        log.warning("Reading %s as unreadable: %s", p, first_line(ex))
        return None
    if not isinstance(d, dict):
        log.warning("Reading %s as unreadable: it holds %s, not a mapping", p, type(d).__name__)
        return None
    return d


def _read_json(p: Path) -> dict | None:
    return _read(p, read_record_json)


def _read_yaml(p: Path) -> dict | None:
    return _read(p, read_record_yaml)


def read_table(p: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """A CSV table of the run record; a half-written last line (no newline yet) is dropped."""
    try:
        text = read_record_text(p)
    except RECORD_ERRORS as ex:  # missing, unreadable, not a regular file, or not text
        if os.path.lexists(p):
            log.warning("Reading %s as empty: %s", p, first_line(ex))
        return pd.DataFrame(columns=columns or [])
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    if not text.strip():
        return pd.DataFrame(columns=columns or [])
    try:
        df = pd.read_csv(io.StringIO(text), on_bad_lines="skip")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError):
        return pd.DataFrame(columns=columns or [])
    if "iter" in df:
        it = pd.to_numeric(df["iter"], errors="coerce")
        df = df[it.notna() & np.isfinite(it) & (it >= 0) & (it == it.round())].astype({"iter": int})
    return df.reset_index(drop=True)


def is_run_dir(p: Path) -> bool:
    return p.is_dir() and any((p / f).is_file() for f in _RECORD_FILES)


def find_run_dirs(root: str | Path) -> list[Path]:
    """Every run directory at or below ``root`` (a run, a sweep, or a folder of either)."""
    root = Path(root)
    if is_run_dir(root):
        return [root]
    found = []
    for p in sorted(root.rglob("*")):
        if p.name.startswith(".") or "wandb" in p.relative_to(root).parts:
            continue
        if is_run_dir(p) and not any(
            is_run_dir(root / a) for a in p.relative_to(root).parents if str(a) != "."
        ):
            found.append(p)
    return found


def _manifests(root: Path) -> dict[Path, dict]:
    """Manifest rows of every sweep at or below ``root`` (each job's outcome as its summary tells
    it now), keyed by the job's run directory."""
    rows = {}
    paths = [root / MANIFEST_FILE] if (root / MANIFEST_FILE).is_file() else []
    paths += [p for p in sorted(root.rglob(MANIFEST_FILE)) if p not in paths]
    for m in paths:
        manifest = Manifest(m.parent)
        try:
            for r in manifest.read():
                rows[manifest.run_dir(r).resolve()] = {**r, "_sweep": m.parent}
        except (*RECORD_ERRORS, csv.Error):
            log.warning("Skipping unreadable manifest %s", m)
    return rows


def _status(
    summary: dict | None, manifest: dict | None, has_config: bool, run_dir: Path | None = None
) -> str:
    if summary and summary.get("status"):
        return status_now(run_dir, summary["status"]) if run_dir else summary["status"]
    if manifest and manifest.get("status"):
        return manifest["status"]
    return "starting" if has_config else "pending"


def run_row(run: str, config: dict | None, summary: dict | None, status: str, **extra: Any) -> dict:
    """One ``runs`` row from a run's config and summary (either may be missing or partial)."""
    cfg, s = flat(config or {}), summary or {}
    residual = cfg.get("model.residual", s.get("residual"))
    reported = {"validation": "val"}.get(s.get("reported_error"), s.get("reported_error"))
    row = {
        "run": run,
        "name": s.get("name", cfg.get("name")),
        "variant": None if residual is None else ("resnet" if residual else "plain"),
        "model": cfg.get("model.name", s.get("model")),
        "depth": cfg.get("model.depth", s.get("depth")),
        "n": cfg.get("model.n", s.get("n")),
        "residual": residual,
        "shortcut": cfg.get("model.shortcut", s.get("shortcut")) if residual else None,
        "dataset": cfg.get("dataset.name", s.get("dataset")),
        "protocol": cfg.get("dataset.protocol", s.get("protocol")),
        "seed": cfg.get("seed", s.get("seed")),
        "status": status,
        "final_err": s.get(f"final_{reported}_err") if reported else None,
        # the fast path as resolved (auto: bf16, compile and channels_last on CUDA)
        **{k: (s.get("fast_path") or {}).get(k) for k in ("precision", "compile", "channels_last")},
        **{k: s.get(k) for k in RUN_COLUMNS if k in s and k not in ("run", "status", "residual")},
        **extra,
    }
    row.update({k: v for k, v in cfg.items() if k not in row})
    return row


def history_long(run_ids: dict, metrics: pd.DataFrame) -> pd.DataFrame:
    """A wide metrics table (``iter`` plus metric columns) as long rows tagged with the run's
    ids."""
    if metrics.empty or "iter" not in metrics:
        return pd.DataFrame(columns=HISTORY_COLUMNS)
    value_cols = [c for c in metrics.columns if c != "iter"]
    long = metrics.melt(
        id_vars=["iter"], value_vars=value_cols, var_name="metric", value_name="value"
    )
    long["value"] = pd.to_numeric(long["value"], errors="coerce")
    long = long.dropna(subset=["value"])
    for k in ID_COLUMNS:
        long[k] = run_ids.get(k)
    return long[HISTORY_COLUMNS].sort_values(["iter", "metric"], kind="stable")


def _frames(rows: list[dict], histories: list[pd.DataFrame]) -> Results:
    runs = pd.DataFrame(rows)
    for c in RUN_COLUMNS:
        if c not in runs:
            runs[c] = None
    runs = runs[RUN_COLUMNS + sorted(c for c in runs.columns if c not in RUN_COLUMNS)]
    for c in ("depth", "n", "seed", "iterations", "iterations_total", "params"):
        runs[c] = pd.to_numeric(runs[c], errors="coerce").astype("Int64")
    histories = [h for h in histories if not h.empty]
    history = (
        pd.concat(histories, ignore_index=True)
        if histories
        else pd.DataFrame(columns=HISTORY_COLUMNS)
    )
    history["iter"] = history["iter"].astype(int)
    history["value"] = history["value"].astype(float)
    return Results(runs.reset_index(drop=True), history.reset_index(drop=True))


# --- local run directories --------------------------------------------------------------------
def _roots(paths) -> list[Path]:
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    out = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(
                f"{p} does not exist: give a sweep directory (runs/<experiment>/<time>) or a run "
                f"directory."
            )
        out.append(p)
    return out


def _run_label(run_dir: Path, root: Path, prefix: bool = False) -> str:
    """The run's path below the collected folder (below its parent when several are collected)."""
    rel = run_dir.relative_to(root) if run_dir != root else Path(run_dir.name)
    if prefix and run_dir != root:
        rel = Path(root.resolve().name) / rel
    return rel.as_posix()


def _unique_run_dirs(roots: list[Path]):
    """(root, run dir) for every run, each directory once even when reached through two roots."""
    seen = set()
    for root in roots:
        for d in find_run_dirs(root):
            if d.resolve() not in seen:
                seen.add(d.resolve())
                yield root, d


def collect(path: str | Path | Iterable[str | Path]) -> Results:
    """``(runs, history)`` of every run at or below ``path`` (or each of several paths)."""
    rows, histories = [], []
    roots = _roots(path)
    several = len(roots) > 1
    seen: set[Path] = set()
    manifests: dict[Path, dict] = {}
    for root in roots:
        manifests.update(_manifests(root))
    for root, d in _unique_run_dirs(roots):
        seen.add(d.resolve())
        m = manifests.get(d.resolve())
        summary = _checked(d, SUMMARY_FILE, _read_json(d / SUMMARY_FILE))
        config = _checked(d, CONFIG_FILE, _read_yaml(d / CONFIG_FILE))
        sweep = (
            m["_sweep"].name
            if m
            else (d.parent.name if (d.parent / MANIFEST_FILE).is_file() else None)
        )
        row = run_row(
            _run_label(d, root, several),
            config,
            summary,
            _status(summary, m, config is not None, d),
            sweep=sweep,
            job=int(m["job"]) if m and str(m.get("job", "")).isdigit() else None,
            run_dir=str(d),
            updated_at=_last_write(d),
        )
        if summary is None and (d / SUMMARY_FILE).is_file():
            row["error"] = f"{SUMMARY_FILE} is unreadable"
        rows.append(row)
        histories.append(history_long(row, read_table(d / METRICS_FILE, METRIC_COLUMNS)))
    for run_dir, m in manifests.items():  # jobs of a sweep that have not made a directory yet
        if run_dir not in seen:
            seen.add(run_dir)
            root = next((r for r in roots if r.resolve() in run_dir.parents), None)
            rows.append(
                run_row(
                    _run_label(run_dir, root.resolve(), several) if root else m.get("name"),
                    None,
                    None,
                    m.get("status") or "pending",
                    sweep=m["_sweep"].name,
                    job=int(m["job"]) if str(m.get("job", "")).isdigit() else None,
                    name=m.get("name"),
                    run_dir=str(run_dir),
                    error=m.get("error") or None,
                    **_depth_from_overrides(m.get("overrides", "")),
                )
            )
    return _frames(rows, histories)


def _last_write(d: Path) -> str | None:
    """When the run last wrote its record: a "running" run that stopped long ago was killed."""
    times = [(d / f).stat().st_mtime for f in (SUMMARY_FILE, METRICS_FILE) if (d / f).is_file()]
    return (
        datetime.fromtimestamp(max(times), timezone.utc).isoformat(timespec="seconds")
        if times
        else None
    )


def _depth_from_overrides(overrides: str) -> dict:
    """depth / residual / seed of a job that has no directory yet, read from its overrides."""
    out: dict[str, Any] = {}
    for k, v in override_pairs(overrides.split()):
        v = v or ""
        if k == "model.depth" and v.isdigit():
            out["depth"] = int(v)
        elif k == "model.n" and v.isdigit():
            out["depth"] = 6 * int(v) + 2
        elif k == "model.residual":
            out["residual"] = v.lower() == "true"
            out["variant"] = "resnet" if out["residual"] else "plain"
        elif k == "seed" and v.lstrip("-").isdigit():
            out["seed"] = int(v)
    return out


def _collect_table(path, file: str) -> pd.DataFrame:
    """A per-run CSV table of every run, tagged with the run's ids and its status."""
    frames = []
    roots = _roots(path)
    for root, d in _unique_run_dirs(roots):
        df = read_table(d / file)
        if df.empty:
            continue
        summary = _read_json(d / SUMMARY_FILE)
        row = run_row(
            _run_label(d, root, len(roots) > 1),
            _read_yaml(d / CONFIG_FILE),
            summary,
            _status(summary, None, True),
        )
        for k in reversed([*ID_COLUMNS, "status", "iterations_total"]):
            df.insert(0, k, row.get(k))
        frames.append(df)
    return (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=[*ID_COLUMNS, "status"])
    )


def collect_layer_stats(path) -> pd.DataFrame:
    """Every run's ``layer_stats.csv`` (paper Fig. 7), tagged with the run's ids."""
    return _collect_table(path, LAYER_STATS_FILE)


def collect_grad_norms(path) -> pd.DataFrame:
    """Every run's ``grad_norms.csv``, tagged with the run's ids."""
    return _collect_table(path, GRAD_NORMS_FILE)


def latest_sweep(experiment_dir: str | Path) -> Path:
    """The newest sweep folder (the one with the latest timestamp name) under
    ``runs/<experiment>``."""
    d = Path(experiment_dir)
    sweeps = sorted(p for p in d.iterdir() if (p / MANIFEST_FILE).is_file()) if d.is_dir() else []
    if not sweeps:
        raise FileNotFoundError(
            f"No sweep (a folder with {MANIFEST_FILE}) under {d}. Run a sweep first, e.g. "
            f"resnet-train -m experiment=degradation."
        )
    return sweeps[-1]


def resolve_sweep(
    path: str | Path, repo: str | Path | None = None, var: str = "RESNET_SWEEP"
) -> Path:
    """The folder a sweep path names, for a notebook (``RESNET_SWEEP=runs/degradation/<time>``).

    An absolute path is taken as it is. A relative one is tried against, in this order, the
    directory Jupyter was started from (``$PWD``, which the kernel inherits from the shell that
    ran ``jupyter lab`` or ``jupyter execute``), ``repo`` (the repository root) and the working
    directory (the notebook's own folder, where Jupyter starts its kernels); the first that is a
    folder wins. Otherwise FileNotFoundError, on one line, names every path tried.
    """
    p = Path(path).expanduser()
    tried = list(
        dict.fromkeys(Path(base, p) for base in (os.environ.get("PWD"), repo, Path.cwd()) if base)
    )
    for candidate in tried:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"{var}={path}: no such sweep folder (tried {', '.join(map(str, tried))}); "
        "give an absolute path or a path relative to where you started Jupyter"
    )


# --- W&B ----------------------------------------------------------------------------------
def _as_dict(obj: Any) -> dict:
    if obj is None:
        return {}
    if isinstance(obj, dict):
        return obj
    for attr in ("_json_dict", "items"):
        if hasattr(obj, attr):
            v = getattr(obj, attr)
            return dict(v() if callable(v) else v)
    return dict(obj)


def _unwrap_config(cfg: dict) -> dict:
    """W&B's raw config holds values as ``{"value": v, "desc": ...}``; unwrap them."""
    out = {}
    for k, v in cfg.items():
        if k.startswith("_"):
            continue
        if isinstance(v, dict) and "value" in v and set(v) <= {"value", "desc"}:
            v = v["value"]
        out[k] = _unwrap_config(v) if isinstance(v, dict) else v
    return out


def collect_wandb(project: str, filters: dict | None = None, *, api: Any = None) -> Results:
    """The same ``(runs, history)`` frames from the W&B public API.

    ``project`` is ``entity/project``; ``filters`` is a W&B (MongoDB-style) filter, e.g.
    ``{"group": "degradation-2026-11-23_10-00-00-000000"}``. ``api`` defaults to ``wandb.Api()``.
    """
    if api is None:
        import wandb

        api = wandb.Api()
    rows, histories = [], []
    for r in api.runs(project, filters=filters or {}):
        summary = {k: v for k, v in _as_dict(r.summary).items() if not k.startswith("_")}
        config = _unwrap_config(_as_dict(r.config))
        state = getattr(r, "state", None)
        # a resumed run keeps its old summary (e.g. "interrupted") until it ends: a live state wins
        status = (
            ("running" if state in ("running", "pending") else None)
            or summary.get("status")
            or _WANDB_STATES.get(state, state)
        )
        group = getattr(r, "group", None)
        row = run_row(
            f"{group}/{r.name}" if group else r.name,
            config,
            summary,
            status or "unknown",
            sweep=group,
            wandb_id=getattr(r, "id", None),
            run_dir=getattr(r, "url", None),
        )
        rows.append(row)
        records = [
            {
                ("iter" if k == "_step" else k): v
                for k, v in h.items()
                if k == "_step" or not k.startswith("_")
            }
            for h in r.scan_history()
        ]
        histories.append(history_long(row, pd.DataFrame(records)))
    return _frames(rows, histories)

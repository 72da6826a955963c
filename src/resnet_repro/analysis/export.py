"""``resnet-export``: copy the ended runs of a run or sweep folder into a results folder, without
checkpoints, for publishing (e.g. beside a paper, or committed under ``analysis/results/``).

    resnet-export runs/degradation/<timestamp> --into analysis/results/2026-12-01-cpu-8k
    resnet-report analysis/results/2026-12-01-cpu-8k -o analysis/results/report

A record is what ``resnet-report``, ``results.collect`` and the notebook read: its config, metrics,
summary, layer statistics, gradient norms, Hydra's overrides and its log. Checkpoints, locks and
temporary files stay behind. Runs that have not ended (running, interrupted, failed) are listed and
left out; ``--weights`` adds each run's final weights (``weights.pt``, the model only: what
``resnet_repro.load_model`` and ``hubconf.py`` load). Exporting again adds what has ended since; a
run already exported with the same record is left as it is (its log brought up to date), and one
whose exported record differs is refused before anything is written.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from ..errors import ResnetReproError
from ..record.files import (
    CONFIG_FILE,
    GRAD_NORMS_FILE,
    LAYER_STATS_FILE,
    METRICS_FILE,
    RECORD_ERRORS,
    SUMMARY_FILE,
    read_record_json,
)
from .results import find_run_dirs

ENDED = ("completed", "diverged")  # a diverged run is a result too
RECORD_FILES = (
    CONFIG_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    LAYER_STATS_FILE,
    GRAD_NORMS_FILE,
    "train.log",
    ".hydra/overrides.yaml",
)
LOGS = ("train.log",)  # grows when a complete run is started again; not part of the result
Record = dict[str, bytes]  # a record's files by path in its run folder


def _status(run: Path) -> str:
    try:
        summary = read_record_json(run / SUMMARY_FILE)
    except RECORD_ERRORS:
        return "no summary"
    status = summary.get("status") if isinstance(summary, dict) else None
    return status if isinstance(status, str) else "no status"


def _record(run: Path) -> Record:
    return {rel: (run / rel).read_bytes() for rel in RECORD_FILES if (run / rel).is_file()}


def _data(record: Record) -> Record:
    """A record without its logs: what has to match for two copies to be the same run."""
    return {rel: data for rel, data in record.items() if rel not in LOGS}


def plan(sources: list[Path], into: Path) -> tuple[dict[Path, tuple[Path, Record]], list[str]]:
    """What to copy (destination -> (run, its record files)) and one line per run left out."""
    copies: dict[Path, tuple[Path, Record]] = {}
    skipped = []
    for src in sources:
        if not src.is_dir():
            raise ResnetReproError(
                f"{src} is not a folder. Give a run folder or a sweep folder "
                f"(e.g. runs/degradation/<timestamp>)."
            )
        runs = find_run_dirs(src)
        if not runs:
            raise ResnetReproError(
                f"{src} holds no run records (no config.yaml, summary.json or "
                f"metrics.csv below it). Give a run folder or a sweep folder."
            )
        for run in runs:
            status = _status(run)
            if status not in ENDED:
                skipped.append(f"{run}: {status}, not exported (it has not ended)")
                continue
            dest = into / (run.name if run == src else run.relative_to(src).as_posix())
            if dest in copies and copies[dest][0].resolve() != run.resolve():
                raise ResnetReproError(
                    f"{copies[dest][0]} and {run} would both be exported to "
                    f"{dest}. Export them into separate folders (--into)."
                )
            copies[dest] = (run, _record(run))
    return copies, skipped


def export(
    sources: list[str | Path],
    into: str | Path,
    *,
    weights: bool = False,
    data_root: str | None = None,
) -> tuple[list[Path], list[Path], list[str]]:
    """Copy the ended runs' records under ``sources`` into ``into``; with ``weights``, each run's
    final weights too (``weights.pt``: the model only, its per-pixel mean, config and iteration).

    Returns (runs written, runs already there with the same files, lines for runs left out).
    Every destination is checked before anything is written."""
    into = Path(into)
    copies, skipped = plan([Path(s) for s in sources], into)
    written, same = [], []
    for dest, (run, files) in copies.items():
        if dest.exists():
            if _data(_record(dest)) != _data(files):
                raise ResnetReproError(
                    f"{dest} already holds a different record of {run.name}. Export "
                    f"into another folder (--into), or move {dest} away first."
                )
            same.append(dest)
    for dest, (_, files) in copies.items():
        if dest in same:  # the same record; its log may have grown (a rerun that found it complete)
            for rel in LOGS:
                if rel in files:
                    (dest / rel).write_bytes(files[rel])
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        for rel, data in files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(data)
        if dest.exists():  # an empty folder left by hand
            dest.rmdir()
        tmp.replace(dest)
        written.append(dest)
    if weights:
        from .weights import WEIGHTS_FILE, save_weights

        for dest, (run, _) in copies.items():
            if not (dest / WEIGHTS_FILE).is_file():
                save_weights(run, dest, data_root)
    return written, same, skipped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="resnet-export", description=__doc__.split("\n\n")[0])
    ap.add_argument("sources", nargs="+", metavar="FOLDER", help="a run folder or a sweep folder")
    ap.add_argument("--into", required=True, help="the results folder the records are copied into")
    ap.add_argument(
        "--weights",
        action="store_true",
        help="also each run's final weights, weights.pt (no optimizer state; a few MB), which "
        "resnet_repro.load_model and hubconf.py load",
    )
    ap.add_argument(
        "--data-root",
        metavar="PATH",
        default=None,
        help=(
            "with --weights: where the runs' data are now (for the per-pixel mean weights.pt holds)"
        ),
    )
    args = ap.parse_args(argv)
    try:
        written, same, skipped = export(
            args.sources, args.into, weights=args.weights, data_root=args.data_root
        )
    except (ResnetReproError, OSError) as ex:
        print(f"resnet-export: error: {ex}", file=sys.stderr)
        return 2
    for line in skipped:
        print(f"resnet-export: {line}")
    print(
        f"resnet-export: {len(written)} run records exported into {args.into}"
        + (f", {len(same)} already there" if same else "")
        + (" (with their final weights; no checkpoints)" if args.weights else " (no checkpoints)")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A study's completed records in one archive (no checkpoints), and back into a results folder."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from pathlib import Path

from ..errors import ResnetReproError
from ..record import CONFIG_FILE, GRAD_NORMS_FILE, LAYER_STATS_FILE, METRICS_FILE, SUMMARY_FILE
from ..results import find_run_dirs
from .jobs import ENDED, now_utc, read_json
from .runner import CONSOLE_FILE

STUDY_FILE = "study.json"  # the study log: the plan, what became of every job, the timings used
# What a packed record holds: everything but checkpoints, locks and temp files.
PACKED_FILES = (CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, LAYER_STATS_FILE, GRAD_NORMS_FILE, "train.log",
                CONSOLE_FILE, ".hydra/overrides.yaml")
ARCHIVE_LIMIT = 16 * 2**20


def gpu_slug(device_name: str | None) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'h100', 'NVIDIA GeForce RTX 4090' -> 'nvidia-geforce-rtx-4090';
    a CPU (or nothing known) -> 'cpu'."""
    name = device_name or ""
    m = re.search(r"\b([A-Z]{1,2}\d{2,4}[A-Z]?)\b", name.upper())
    if m:
        return m.group(1).lower()
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") if "NVIDIA" in name.upper() else "cpu"


def schedule_tag(iterations: int) -> str:
    """64000 -> '64k'; 40 -> '40it'."""
    return f"{iterations // 1000}k" if iterations % 1000 == 0 else f"{iterations}it"


def pack(out: Path, archive: Path, limit: int = ARCHIVE_LIMIT) -> list[str]:
    """Pack the completed run records under ``out`` (and its ``study.json``) into a tar.xz archive.

    Returns the packed runs. Checkpoints never travel: a record is its config, history, summary,
    layer statistics, gradient norms and logs.
    """
    runs = [d for d in find_run_dirs(out) if read_json(d / SUMMARY_FILE).get("status") in ENDED]
    archive.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        if (out / STUDY_FILE).is_file():
            tar.add(out / STUDY_FILE, arcname=STUDY_FILE)
        for d in runs:
            name = d.name if d == out else d.relative_to(out).as_posix()  # packing one run folder: its name
            for f in PACKED_FILES:
                if (d / f).is_file():
                    tar.add(d / f, arcname=f"runs/{name}/{f}")
    if buf.tell() > limit:
        raise ResnetReproError(f"The packed records of {out} take {buf.tell() / 2**20:.1f} MiB, more than "
                               f"{limit / 2**20:.0f} MiB. Pack fewer runs (resnet-study pack <one run folder> ...).")
    tmp = archive.with_name(archive.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(archive)
    return [d.name if d == out else d.relative_to(out).as_posix() for d in runs]


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def unpack(archive: Path, into: Path) -> Path:
    """Unpack a study archive into ``into/<yyyy-mm-dd>-<gpu>-<schedule>/``; return that folder.

    Runs land beside those of earlier archives of the same day, GPU and schedule. A run folder that
    already holds the same files is left alone; one that holds a different record is refused.
    """
    try:
        tar = tarfile.open(archive, mode="r:*")
    except (OSError, tarfile.TarError) as ex:
        raise ResnetReproError(f"Cannot read {archive} as a study archive ({ex}). Give the .tar.xz that "
                               f"resnet-study run --archive (or resnet-study pack) wrote.") from None
    with tar:
        files = {}
        for m in tar.getmembers():
            parts = Path(m.name).parts
            run_file = len(parts) >= 3 and parts[0] == "runs" and parts[1] not in ("", ".")
            if not m.isfile() or ".." in parts or not (m.name == STUDY_FILE or run_file):
                raise ResnetReproError(f"{archive} holds {m.name!r}, which is not a study log or a file of a run "
                                       f"folder (runs/<run>/...); refusing to unpack it.")
            files[m.name] = tar.extractfile(m).read()
    study = json.loads(files[STUDY_FILE]) if STUDY_FILE in files else {}
    summaries = [json.loads(v) for k, v in files.items() if k.endswith("/" + SUMMARY_FILE)]
    if not summaries and not study:
        raise ResnetReproError(f"{archive} holds no runs and no study log: nothing to unpack.")
    when = study.get("finished_at") or max((s.get("finished_at") or "" for s in summaries), default="") or now_utc()
    device = "cpu" if any(s.get("device") == "cpu" for s in summaries) else (
        study.get("device_name") or next((s.get("device_name") for s in summaries if s.get("device_name")), None))
    iterations = sorted({int(s.get("iterations_total") or 0) for s in summaries} or set(study.get("iterations") or []))
    folder = into / f"{when[:10]}-{gpu_slug(device)}-{'+'.join(schedule_tag(i) for i in iterations) or 'none'}"
    runs: dict[str, dict[str, bytes]] = {}
    for name, data in files.items():
        if name.startswith("runs/"):
            run, _, rel = name[len("runs/"):].partition("/")
            runs.setdefault(run, {})[rel] = data
    for run, content in runs.items():  # check everything before writing anything
        d = folder / run
        if d.exists():
            old = {rel: (d / rel).read_bytes() for rel in content if (d / rel).is_file()}
            if {k: _digest(v) for k, v in old.items()} != {k: _digest(v) for k, v in content.items()}:
                raise ResnetReproError(f"{d} already holds a different record of {run}. Unpack into another folder "
                                       f"(--into), or move that run away first.")
    for run, content in runs.items():
        for rel, data in content.items():
            p = folder / run / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
    if study:  # filed even when no run completed: it holds what the jobs did, and why
        stamp = (study.get("started_at") or when).replace(":", "").replace("-", "")[:15]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"study-{stamp}.json").write_bytes(files[STUDY_FILE])
    return folder

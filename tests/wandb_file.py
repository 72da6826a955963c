"""Read back an offline W&B run file (``run-<id>.wandb``) for tests.

The file is a 7-byte header (``:W&B``, magic 0xBEE1, version) followed by LevelDB-log-format
blocks of 32 KiB; each record is crc32c (4), length (2, little endian), type (1: full, 2: first,
3: middle, 4: last) and data, and the data is a serialized ``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

HEADER = 7
BLOCK = 32 * 1024


def records(path: str | Path):
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", "not a W&B run file"
    pos, pending = HEADER, b""
    while pos + 7 <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < 7:  # block trailer padding
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        if kind in (1, 4):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(pending + chunk)
            pending = b""
            yield rec
        else:
            pending += chunk


def history(path: str | Path) -> list[tuple[int, dict]]:
    """(step, {key: value}) for every history record, in order."""
    out = []
    for rec in records(path):
        if rec.WhichOneof("record_type") == "history":
            items = {
                k: json.loads(i.value_json)
                for i in rec.history.item
                if not (k := i.key or ".".join(i.nested_key)).startswith("_")
            }
            out.append((rec.history.step.num, items))
    return out


def run_info(path: str | Path) -> dict:
    """The run record's id, name, group, job type, tags and config of the file."""
    for rec in records(path):
        if rec.WhichOneof("record_type") == "run":
            r = rec.run
            config = {
                i.key or ".".join(i.nested_key): json.loads(i.value_json) for i in r.config.update
            }
            return {
                "id": r.run_id,
                "name": r.display_name,
                "group": r.run_group,
                "job_type": r.job_type,
                "tags": list(r.tags),
                "config": config,
            }
    raise AssertionError("no run record")


def metric_definitions(path: str | Path) -> dict[str, dict]:
    """``define_metric`` calls of the file:
    {name or glob: {"step_metric": ..., "summary": [...]}}."""
    out = {}
    for rec in records(path):
        if rec.WhichOneof("record_type") == "metric":
            m = rec.metric
            if m.expanded_from_glob:
                continue
            summary = [f.name for f, on in m.summary.ListFields() if on]
            out[m.name or m.glob_name] = {"step_metric": m.step_metric, "summary": summary}
    return out


def summary(path: str | Path) -> dict:
    """The run's summary as the file's last summary records leave it (nested keys joined by '.')."""
    out = {}
    for rec in records(path):
        if rec.WhichOneof("record_type") == "summary":
            for i in rec.summary.update:
                out[i.key or ".".join(i.nested_key)] = json.loads(i.value_json)
    return out


def artifacts(path: str | Path) -> list[dict]:
    """The artifacts the file logs: name, type, aliases and the files in each one's manifest."""
    out = []
    for rec in records(path):
        if rec.WhichOneof("record_type") == "artifact":
            a = rec.artifact
            files = [c.path for c in a.manifest.contents]
            out.append({"name": a.name, "type": a.type, "aliases": list(a.aliases), "files": files})
    return out

"""The GPU window's script, rehearsed on the CPU (what CI runs, so the script cannot rot):
environment, the CUDA tests' logic on the CPU, a tiny benchmark, a budgeted tiny study, its
archive, and the archive filed and reported as a GPU window's would be."""

from __future__ import annotations

import json
import os
import re
import subprocess

from resnet_repro import study as st
from resnet_repro.report import write_report

from .helpers import CI_LIMIT_S, REPO


def test_the_gpu_script_rehearses_on_the_cpu(tmp_path):
    out, runs = tmp_path / "out", tmp_path / "study"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    r = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--rehearse", "--out", str(out), "--study-out", str(runs)],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=CI_LIMIT_S)
    log = (out / "gpu_check.log").read_text()
    assert r.returncode == 0, log[-4000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == ["bench.json", "gpu_check.log", "pytest_cuda.log", "stacked.json", "study.log", "study.tar.xz",
                     "warm.json", "warm.log"]  # at most 8 files come back from the GPU machine
    for stage in ("environment", "warm-up of the study's nets", "CUDA tests: pytest -m cuda",
                  "benchmark (short settings)", "stacked benchmark", "study"):
        assert f"== {stage} (" in log, stage
    assert re.search(r"-- CUDA tests took \d+ s", log) and "CUDA TESTS FAILED" not in log

    tests = (out / "pytest_cuda.log").read_text()
    # every CUDA test ran on the CPU stand-in, but the sync check (which needs a GPU) and, where
    # the offline data is absent, the real-data run
    counts = re.search(r"\b(\d+) passed, (\d+) skipped in", tests)
    assert counts and "failed" not in tests and "error" not in tests.lower(), tests[-2000:]
    assert int(counts.group(1)) + int(counts.group(2)) == 10 and int(counts.group(1)) >= 8, tests[-2000:]
    bench = json.loads((out / "bench.json").read_text())
    assert [row["depth"] for row in bench["rows"]] == [8, 14] and [s["runs"] for s in bench["shared"]] == [1, 2]
    assert [(x["k"], x["mode"]) for x in json.loads((out / "stacked.json").read_text())][-1] == (2, "stacked")
    warm = json.loads((out / "warm.json").read_text())
    assert warm["rows"] and warm["kind"] == "resnet-study warm"

    study = (out / "study.log").read_text()
    assert "est min" in study and "Timings from" in study
    packed = int(re.search(r"study: packed (\d+) completed runs", study).group(1))
    assert packed >= 1, study
    assert "does not fit" in study or packed == 27  # a one-minute study leaves jobs for the next window

    folder = st.unpack(out / "study.tar.xz", tmp_path / "analysis" / "results")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d-cpu-20it", folder.name)
    rehearsal = re.search(r"study overrides: (.*)", log).group(1).split()  # what the script gave every job
    files = write_report([folder], tmp_path / "report", study="degradation", study_overrides=rehearsal)
    assert f"{packed} of 27 jobs done" in files["study"].read_text()

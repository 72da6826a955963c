"""The GPU self-check script, rehearsed on the CPU (what CI runs, so the script cannot rot):
environment, the CUDA tests' logic on the CPU, a tiny benchmark and a tiny stacked benchmark."""

from __future__ import annotations

import json
import os
import re
import subprocess

from .helpers import HANG_LIMIT_S, REPO


def test_the_gpu_script_rehearses_on_the_cpu(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    r = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--rehearse", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_LIMIT_S,
    )
    log = (out / "gpu_check.log").read_text()
    assert r.returncode == 0, log[-4000:]
    assert sorted(p.name for p in out.iterdir()) == [
        "bench.json",
        "gpu_check.log",
        "pytest_cuda.log",
        "stacked.json",
    ]
    for stage in (
        "environment",
        "CUDA tests: pytest -m cuda",
        "benchmark (short settings)",
        "stacked benchmark",
    ):
        assert f"== {stage} (" in log, stage
    assert re.search(r"-- CUDA tests took \d+ s", log) and "CUDA TESTS FAILED" not in log
    assert "out of time" not in log  # no stage is capped unless asked

    tests = (out / "pytest_cuda.log").read_text()
    # every CUDA test ran on the CPU stand-in, but the sync check (which needs a GPU) and, where
    # the real data is absent, the real-data run
    counts = re.search(r"\b(\d+) passed, (\d+) skipped in", tests)
    assert counts and "failed" not in tests and "error" not in tests.lower(), tests[-2000:]
    assert int(counts.group(1)) + int(counts.group(2)) == 10 and int(counts.group(1)) >= 8, tests[
        -2000:
    ]
    bench = json.loads((out / "bench.json").read_text())
    assert [row["depth"] for row in bench["rows"]] == [8, 14] and [
        s["runs"] for s in bench["shared"]
    ] == [1, 2]
    assert [(x["k"], x["mode"]) for x in json.loads((out / "stacked.json").read_text())][-1] == (
        2,
        "stacked",
    )


def test_the_gpu_script_refuses_a_bad_option_or_data_folder(tmp_path):
    for args, says in (
        (["--budget-min", "9"], "unknown option --budget-min"),
        (["--data", str(tmp_path)], "holds no cifar-10-batches-py/"),
    ):
        r = subprocess.run(
            ["bash", "benchmarks/gpu_check.sh", "--out", str(tmp_path / "out"), *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 2 and says in r.stderr and len(r.stderr.strip().splitlines()) == 1

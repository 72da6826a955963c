"""The throughput benchmark's small CPU form (what CI runs): ours, plain fp32 and the seeds' loop
side by side, the projection of the nine-run study, several runs sharing the device, numerics."""

import json
import subprocess
import sys

from .conftest import REPO


def test_throughput_benchmark_small_cpu_form(tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "throughput.py"), "--device", "cpu", "--depths", "8", "14",
         "--variants", "residual", "plain", "--batch", "32", "--iters", "2", "--windows", "2", "--warmup", "1",
         "--synthetic-per-batch", "200", "--share", "2", "--numerics", "4", "--numerics-every", "2",
         "--json", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "model         ours img/s  fp32 img/s  baseline img/s   ratio" in r.stdout
    assert "Projected nine-run degradation study, 64,000 iterations per run" in r.stdout
    assert "2 runs sharing the device:" in r.stdout and "fp32      fast" in r.stdout
    res = json.loads(out.read_text())
    assert [(row["variant"], row["depth"]) for row in res["rows"]] == [
        ("residual", 8), ("plain", 8), ("residual", 14), ("plain", 14)]
    for row in res["rows"]:
        for k in ("ours", "ours_fp32", "baseline"):
            assert row[k]["img_per_s"] > 0
        assert row["ratio"] == row["ours"]["img_per_s"] / row["baseline"]["img_per_s"]
        assert row["ours"]["setting"]["compile"] == "off"  # CPU: the defaults are fp32 eager
    p = res["projection"]
    assert len(p["minutes_per_run"]) == 9 and p["sequential_min"] == sum(p["minutes_per_run"].values())
    assert set(p["estimated_runs"]) == set(p["minutes_per_run"])  # depths 8/14 measured, 20..110 estimated
    assert res["shared"]["runs"] == 2 and len(res["shared"]["img_per_s_each"]) == 2
    assert p["shared_min"] == p["sequential_min"] / p["shared_speedup"]
    n = res["numerics"]
    assert [i for i, _ in n["fp32"]] == [i for i, _ in n["fast"]] == [2, 4]


def test_projection_interpolates_seconds_per_iteration_in_depth():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import throughput
    finally:
        sys.path.pop(0)
    rows = [{"variant": "residual", "depth": d, "ours": {"img_per_s": 128 / s}}
            for d, s in ((20, 0.010), (56, 0.028), (110, 0.055))]
    rows += [{"variant": "plain", "depth": 20, "ours": {"img_per_s": 128 / 0.009}}]
    s, est = throughput.seconds_per_iteration(rows, "residual", 56, 128)
    assert (round(s, 6), est) == (0.028, False)
    s, est = throughput.seconds_per_iteration(rows, "residual", 32, 128)
    assert est and abs(s - (0.010 + 0.018 * 12 / 36)) < 1e-9
    s, est = throughput.seconds_per_iteration(rows, "plain", 56, 128)
    assert est and abs(s - 0.009 * 56 / 20) < 1e-9  # one plain depth measured: scaled with depth
    s, est = throughput.seconds_per_iteration(rows[:3], "residual", 8, 128)  # below the measured depths
    assert est and abs(s - (0.010 - 0.018 * 12 / 36)) < 1e-9
    p = throughput.project_study(rows, 128, None, None)
    assert abs(p["minutes_per_run"]["residual-110"] - 64000 * 0.055 / 60) < 1e-9

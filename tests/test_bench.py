"""The throughput benchmark's small CPU form (what CI runs): ours (fast, eager, fp32) and the
DataLoader loop side by side, the projection of the nine-run study, k runs sharing the device,
numerics."""

import json
import subprocess
import sys

import pytest
import torch

from resnet_repro.training.speed import Timings, interpolate_in_depth

from .helpers import HANG_LIMIT_S, REPO


def _bench():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import throughput
    finally:
        sys.path.pop(0)
    return throughput


@pytest.mark.slow
def test_throughput_benchmark_small_cpu_form(tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "throughput.py"),
            "--device",
            "cpu",
            "--depths",
            "8",
            "14",
            "--variants",
            "residual",
            "plain",
            "--batch",
            "32",
            "--iters",
            "2",
            "--windows",
            "2",
            "--warmup",
            "1",
            "--synthetic-per-batch",
            "200",
            "--share",
            "1",
            "2",
            "--numerics",
            "4",
            "--numerics-every",
            "2",
            "--compile",
            "off",
            "--json",
            str(out),
        ],  # the fast path but eager: no compile time in the suite
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=HANG_LIMIT_S,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert (
        "model         ours img/s  eager img/s  fp32 img/s  baseline img/s   ratio  warm-up s"
        in r.stdout
    )
    assert "Projected nine-run degradation study, 64,000 iterations per run" in r.stdout
    assert (
        "k=2:" in r.stdout
        and "fp32      fast" in r.stdout
        and "cudagraph_skips per net: [0, 0, 0, 0]" in r.stdout
    )
    res = json.loads(out.read_text())
    assert [(row["variant"], row["depth"]) for row in res["rows"]] == [
        ("residual", 8),
        ("plain", 8),
        ("residual", 14),
        ("plain", 14),
    ]
    for row in res["rows"]:
        for k in ("ours", "ours_eager", "ours_fp32", "baseline"):
            assert row[k]["img_per_s"] > 0
        assert row["ratio"] == row["ours"]["img_per_s"] / row["baseline"]["img_per_s"]
        assert {
            k: row["ours"]["setting"][k] for k in ("precision", "channels_last", "compile")
        } == {
            "precision": "bf16",
            "channels_last": True,
            "compile": "off",
        }  # trainer=fast's, as asked
        assert row["ours_fp32"]["setting"]["precision"] == "fp32"
        assert row["ours"]["cudagraph_skips"] == 0 and row["ours"]["warmup_s"] >= 0
    p = res["projection"]
    assert len(p["minutes_per_run"]) == 9 and p["sequential_min"] == pytest.approx(
        sum(p["minutes_per_run"].values())
    )
    assert set(p["estimated_runs"]) == set(
        p["minutes_per_run"]
    )  # depths 8/14 measured, 20..110 estimated
    assert [s["runs"] for s in res["shared"]] == [1, 2] and len(
        res["shared"][1]["img_per_s_each"]
    ) == 2
    assert res["shared"][0]["speedup"] == 1.0 and res["cudagraph_problems"] == []
    # k runs never do more than k runs' work: a larger measured speed-up (noise) is capped
    # for planning
    assert Timings.from_result(res).sharing[2] == pytest.approx(
        min(2.0, res["shared"][1]["speedup"])
    )
    n = res["numerics"]
    assert [i for i, _ in n["fp32"]] == [i for i, _ in n["fast"]] == [2, 4]


def test_projection_interpolates_seconds_per_iteration_in_depth():
    pts = {20: 0.010, 56: 0.028, 110: 0.055}
    assert interpolate_in_depth(pts, 56) == (0.028, False)
    s, est = interpolate_in_depth(pts, 32)
    assert est and abs(s - (0.010 + 0.018 * 12 / 36)) < 1e-9
    s, est = interpolate_in_depth(pts, 8)  # below the measured depths: the first segment extended
    assert est and abs(s - (0.010 - 0.018 * 12 / 36)) < 1e-9
    s, est = interpolate_in_depth({20: 0.009}, 56)  # one depth measured: scaled with depth
    assert est and abs(s - 0.009 * 56 / 20) < 1e-9
    # noise (a loaded machine timed the shallower net slower): a floor, never a negative time
    assert interpolate_in_depth({8: 0.10, 14: 0.03}, 56) == (0.03, True)
    assert interpolate_in_depth({20: 0.01, 56: 0.05}, 8)[0] == pytest.approx(0.01 * 8 / 20)

    res = {
        "batch": 128,
        "rows": [
            {"variant": "residual", "depth": d, "ours": {"img_per_s": 128 / s, "warmup_s": 30.0}}
            for d, s in pts.items()
        ],
    }
    res["rows"].append(
        {"variant": "plain", "depth": 20, "ours": {"img_per_s": 128 / 0.009, "warmup_s": 20.0}}
    )
    t = Timings.from_result(res)
    assert t.seconds_per_iteration("plain", 56)[0] == pytest.approx(0.009 * 56 / 20)
    assert t.seconds_per_iteration("residual", 56, batch=64) == (pytest.approx(0.014), True)
    p = _bench().project_study({**res, "shared": None})
    assert p["minutes_per_run"]["residual-110"] == pytest.approx((64000 * 0.055 + 30) / 60)
    assert "shared_min" not in p


def test_sharing_speedup_and_the_choice_of_k():
    t = Timings.from_result(
        {
            "rows": [],
            "shared": [
                {"runs": 1, "img_per_s_total": 100.0, "img_per_s_single": 100.0},
                {"runs": 2, "img_per_s_total": 170.0, "img_per_s_single": 100.0},
                {"runs": 4, "img_per_s_total": 175.0, "img_per_s_single": 100.0},
            ],
        }
    )
    assert t.speedup(2) == pytest.approx(1.7) and t.speedup(3) == pytest.approx(1.7)
    assert t.slowdown(2) == pytest.approx(2 / 1.7)
    assert t.best_parallel() == 2  # 4 runs gain under 5% more: not worth slowing every run down


def test_seeds_loader_never_times_across_an_epoch_end():
    bench = _bench()
    loader = list(range(10))  # an epoch of 10 batches
    b = bench.EpochBatches(loader)
    assert [b.next() for _ in range(7)] == list(range(7))
    b.fresh_epoch_if_short(4)  # 3 left: a window of 4 starts a new epoch
    assert [b.next() for _ in range(4)] == [0, 1, 2, 3]
    b.fresh_epoch_if_short(6)  # 6 left: the epoch goes on
    assert b.next() == 4
    with pytest.raises(SystemExit, match="longer than an epoch"):
        b.fresh_epoch_if_short(11)


def test_every_timed_step_sets_the_backend_flags_of_a_training_run(monkeypatch):
    """The benchmark's rows and its shared-device workers (each a fresh process) build their step
    with ``harness_step``, which sets the same backend flags a training run sets (cuDNN autotuning
    on CUDA, TF32 by precision, deterministic algorithms off)."""
    from resnet_repro.training.speed import harness_step
    from resnet_repro.training.step import FastPath

    calls = []
    monkeypatch.setattr(FastPath, "configure_backends", lambda self: calls.append(self.describe()))
    x, y = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 10, (64,))
    fn, fast = harness_step("residual", 8, torch.device("cpu"), x, y, 16, {"precision": "fp32"})
    fn()
    assert calls == [fast.describe()]


@pytest.mark.slow
def test_stacked_benchmark_small_cpu_form(tmp_path):
    out = tmp_path / "stacked.json"
    r = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "stacked.py"),
            "--ks",
            "1",
            "2",
            "--depth",
            "8",
            "--batch",
            "16",
            "--iters",
            "1",
            "--warmup",
            "1",
            "--json",
            str(out),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=HANG_LIMIT_S,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "img/s/member  img/s total  stacked/separate" in r.stdout
    rows = json.loads(out.read_text())
    assert [(x["k"], x["mode"]) for x in rows] == [
        (1, "separate"),
        (1, "stacked"),
        (2, "separate"),
        (2, "stacked"),
    ]
    assert all(x["speedup"] > 0 for x in rows if x["mode"] == "stacked")
    assert (
        rows[0]["fast_path"]["compile"] == "off"
        and rows[2]["img_per_s_total"] == 2 * rows[2]["img_per_s_member"]
    )

"""Collecting run records into frames: hand-made sweep folders (every state a run can be in) and a real one."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from resnet_repro.record import METRIC_COLUMNS
from resnet_repro.results import (
    HISTORY_COLUMNS,
    collect,
    collect_grad_norms,
    collect_layer_stats,
    latest_sweep,
    read_table,
)
from resnet_repro.sweep import MANIFEST_COLUMNS

SWEEP_NAME = "2026-01-02_03-04-05-000006"


# --- writing run records by hand -------------------------------------------------------------
def run_name(depth: int, residual: bool, seed: int) -> str:
    return f"depth={depth},residual={str(residual).lower()},seed={seed}"


def overrides(depth: int, residual: bool, seed: int) -> str:
    return f"model.depth={depth} model.residual={str(residual).lower()} seed={seed}"


def make_config(depth: int, residual: bool, seed: int, *, lr: float = 0.1, iterations: int = 40,
                shortcut: str = "A") -> dict:
    """A run's config.yaml; at 64,000 iterations, the paper's whole schedule (milestones, batch, warm-up)."""
    n = (depth - 2) // 6
    paper = iterations == 64_000
    return {
        "model": {"name": "resnet_cifar", "n": n, "depth": depth, "residual": residual,
                  "shortcut": shortcut, "num_classes": 10},
        "dataset": {"name": "cifar10", "protocol": "paper", "val_size": 5000, "augment": True},
        "optimizer": {"name": "sgd", "lr": lr, "momentum": 0.9, "weight_decay": 1e-4},
        "schedule": {"name": "paper", "iterations": iterations, "gamma": 0.1,
                     "milestones": [32000, 48000] if paper else [20, 30], "warmup": depth >= 110},
        "trainer": {"device": "cpu", "batch_size": 128 if paper else 32},
        "logger": {"name": "local"},
        "diagnostics": {"layer_stats": "end", "grad_norms": [1, 10]},
        "seed": seed,
        "experiment_name": "degradation",
        "name": f"{'resnet' if residual else 'plain'}{depth}-seed{seed}",
    }


def metric_rows(iters=(10, 20, 30, 40), eval_every: int = 20, base: float = 50.0, test: bool = False) -> list[dict]:
    """metrics.csv rows: training columns at every row, eval columns every ``eval_every``."""
    rows = []
    for i, it in enumerate(iters):
        row = {"iter": it, "epoch": 1 + it // 20, "lr": 0.1, "train_loss": 2.0 - 0.1 * i,
               "train_err": base - 2.5 * i, "time_s": 0.5 * (i + 1), "img_per_s": 640.0 + i}
        if it % eval_every == 0:
            row.update(val_loss=2.1 - 0.1 * i, val_err=base + 5 - 2.0 * i)
            if test:
                row.update(test_loss=2.2 - 0.1 * i, test_err=base + 6 - 2.0 * i)
        rows.append(row)
    return rows


def write_run(run_dir: Path, *, depth: int, residual: bool, seed: int, status: str | None = "completed",
              reported_error: str = "validation", final_train_err: float | None = 10.0,
              final_val_err: float | None = 12.0, final_test_err: float | None = None,
              iterations: int = 40, iterations_total: int = 40, params: int = 270_000,
              error: str | None = None, lr: float = 0.1, shortcut: str = "A",
              metrics: list[dict] | None = None, partial_line: str | None = None,
              summary_text: str | None = None, config: bool = True,
              layer_stats: bool = False, grad_norms: tuple[int, ...] = ()) -> Path:
    """A run directory as a run leaves it: config.yaml, summary.json, metrics.csv (and the diagnostics)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if config:
        cfg = make_config(depth, residual, seed, lr=lr, iterations=iterations_total, shortcut=shortcut)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    if summary_text is not None:
        (run_dir / "summary.json").write_text(summary_text)
    elif status is not None:
        summary = {
            "name": f"{'resnet' if residual else 'plain'}{depth}-seed{seed}", "run_dir": str(run_dir),
            "status": status, "model": "resnet_cifar", "depth": depth, "n": (depth - 2) // 6,
            "residual": residual, "shortcut": shortcut if residual else None, "params": params,
            "dataset": "cifar10", "protocol": "paper", "seed": seed, "reported_error": reported_error,
            "iterations": iterations, "iterations_total": iterations_total,
            "final_train_err": final_train_err, "final_val_err": final_val_err,
            "wall_time_s": 12.5, "started_at": "2026-01-02T03:04:05+00:00",
        }
        if final_test_err is not None:
            summary["final_test_err"] = final_test_err
        if error is not None:
            summary["error"] = error
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if metrics is not None:
        with open(run_dir / "metrics.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=METRIC_COLUMNS)
            w.writeheader()
            for row in metrics:
                w.writerow({k: row.get(k, "") for k in METRIC_COLUMNS})
            if partial_line is not None:
                f.write(partial_line)  # a row being written: no newline yet
    n_layers = 6 * ((depth - 2) // 6) + 1
    if layer_stats:
        with open(run_dir / "layer_stats.csv", "w", newline="") as f:
            f.write("iter,layer,module,std,channel_std\n")
            for i in range(1, n_layers + 1):
                f.write(f"{iterations},{i},m{i},{1.0 + i / 10},{0.9 + i / 10}\n")
    if grad_norms:
        with open(run_dir / "grad_norms.csv", "w", newline="") as f:
            f.write("iter,layer,module,grad_norm,weight_norm\n")
            for it in grad_norms:
                for i in range(1, n_layers + 1):
                    f.write(f"{it},{i},c{i},{0.01 * i * it},{1.0 + i}\n")
    return run_dir


def write_manifest(sweep: Path, jobs: list[dict]) -> Path:
    """manifest.csv with one row per job (name from depth/residual/seed unless given)."""
    sweep.mkdir(parents=True, exist_ok=True)
    with open(sweep / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS)
        w.writeheader()
        for i, j in enumerate(jobs):
            name = j.get("name") or run_name(j["depth"], j["residual"], j["seed"])
            w.writerow({"job": i, "name": name,
                        "overrides": j.get("overrides") or overrides(j["depth"], j["residual"], j["seed"]),
                        "status": j.get("status", "completed"), "run_dir": j.get("run_dir", str(sweep / name)),
                        "started_at": "", "finished_at": "", "final_err": j.get("final_err", ""),
                        "error": j.get("error", "")})
    return sweep


def simple_sweep(sweep: Path, runs: list[dict]) -> Path:
    """A sweep folder of completed runs: ``runs`` holds write_run keyword arguments."""
    write_manifest(sweep, [{k: r[k] for k in ("depth", "residual", "seed")} for r in runs])
    for r in runs:
        write_run(sweep / run_name(r["depth"], r["residual"], r["seed"]), **r)
    return sweep


# --- a sweep with a run in every state ------------------------------------------------------------
DONE_RESNET = run_name(20, True, 0)
DONE_PLAIN_TEST = run_name(20, False, 0)
FAILED = run_name(56, False, 0)
RUNNING = run_name(56, True, 0)
PENDING = run_name(56, False, 1)
CORRUPT = run_name(32, True, 0)
HALF_LINE = "30,2,0.1,1.23"


def make_mixed_sweep(sweep: Path) -> Path:
    """Runs completed (validation / test), failed, running (half a line), pending, corrupt summary."""
    write_manifest(sweep, [
        {"depth": 20, "residual": True, "seed": 0, "final_err": 8.5},
        {"depth": 20, "residual": False, "seed": 0, "final_err": 12.0},
        {"depth": 56, "residual": False, "seed": 0, "status": "failed", "error": "RuntimeError: boom"},
        {"depth": 56, "residual": True, "seed": 0, "status": "running"},
        {"depth": 56, "residual": False, "seed": 1, "status": "pending"},
        {"depth": 32, "residual": True, "seed": 0, "status": "running"},
    ])
    write_run(sweep / DONE_RESNET, depth=20, residual=True, seed=0, final_train_err=3.0,
              final_val_err=8.5, metrics=metric_rows(), lr=0.05)
    write_run(sweep / DONE_PLAIN_TEST, depth=20, residual=False, seed=0, reported_error="test",
              final_train_err=4.0, final_val_err=11.0, final_test_err=12.0,
              metrics=metric_rows(base=40.0, test=True))
    write_run(sweep / FAILED, depth=56, residual=False, seed=0, status="failed",
              error="RuntimeError: boom", final_val_err=None, iterations=20,
              metrics=metric_rows(iters=(10, 20)))
    write_run(sweep / RUNNING, depth=56, residual=True, seed=0, status="running", final_val_err=30.0,
              iterations=20, metrics=metric_rows(iters=(10, 20, 25)), partial_line=HALF_LINE)
    write_run(sweep / CORRUPT, depth=32, residual=True, seed=0, summary_text='{"status": "compl',
              metrics=metric_rows(iters=(10,)))
    return sweep


@pytest.fixture
def mixed_sweep(tmp_path) -> Path:
    return make_mixed_sweep(tmp_path / "runs" / "degradation" / SWEEP_NAME)


def by_run(runs: pd.DataFrame) -> dict[str, pd.Series]:
    return {r["run"]: r for _, r in runs.iterrows()}


def test_runs_frame_has_one_row_per_run_in_every_state(mixed_sweep):
    runs, _ = collect(mixed_sweep)
    assert len(runs) == 6
    assert runs["run"].is_unique
    rows = by_run(runs)
    assert set(rows) == {DONE_RESNET, DONE_PLAIN_TEST, FAILED, RUNNING, PENDING, CORRUPT}
    for col in ("run", "variant", "depth", "residual", "seed", "status", "final_err", "sweep", "job"):
        assert col in runs.columns, col
    want = {  # run: (variant, depth, residual, seed, status)
        DONE_RESNET: ("resnet", 20, True, 0, "completed"),
        DONE_PLAIN_TEST: ("plain", 20, False, 0, "completed"),
        FAILED: ("plain", 56, False, 0, "failed"),
        RUNNING: ("resnet", 56, True, 0, "running"),
        PENDING: ("plain", 56, False, 1, "pending"),
        CORRUPT: ("resnet", 32, True, 0, "running"),  # no readable summary: the manifest's word
    }
    for run, (variant, depth, residual, seed, status) in want.items():
        r = rows[run]
        assert (r["variant"], int(r["depth"]), bool(r["residual"]), int(r["seed"]), r["status"]) == \
            (variant, depth, residual, seed, status), run
        assert r["sweep"] == SWEEP_NAME
    assert [int(rows[r]["job"]) for r in (DONE_RESNET, DONE_PLAIN_TEST, FAILED, RUNNING, PENDING, CORRUPT)] == \
        [0, 1, 2, 3, 4, 5]


def test_final_err_is_the_reported_split(mixed_sweep):
    rows = by_run(collect(mixed_sweep).runs)
    assert rows[DONE_RESNET]["reported_error"] == "validation"
    assert rows[DONE_RESNET]["final_err"] == 8.5 == rows[DONE_RESNET]["final_val_err"]
    assert rows[DONE_RESNET]["final_train_err"] == 3.0
    assert rows[DONE_PLAIN_TEST]["reported_error"] == "test"
    assert rows[DONE_PLAIN_TEST]["final_err"] == 12.0 == rows[DONE_PLAIN_TEST]["final_test_err"]
    assert rows[DONE_PLAIN_TEST]["final_val_err"] == 11.0
    assert rows[RUNNING]["final_err"] == 30.0
    assert pd.isna(rows[FAILED]["final_err"])
    assert pd.isna(rows[PENDING]["final_err"])


def test_failed_pending_and_corrupt_runs_carry_their_story(mixed_sweep):
    rows = by_run(collect(mixed_sweep).runs)
    assert rows[FAILED]["error"] == "RuntimeError: boom"
    assert int(rows[FAILED]["iterations"]) == 20
    assert "summary.json" in rows[CORRUPT]["error"]
    assert rows[CORRUPT]["optimizer.lr"] == 0.1  # its config still reads
    pending = rows[PENDING]
    assert pending["run_dir"] == str((mixed_sweep / PENDING).resolve())
    assert not Path(pending["run_dir"]).exists()
    assert pd.isna(pending["optimizer.lr"])
    for done in (DONE_RESNET, DONE_PLAIN_TEST, RUNNING):
        assert pd.isna(rows[done]["error"]), done


def test_runs_frame_flattens_the_config(mixed_sweep):
    runs = collect(mixed_sweep).runs
    rows = by_run(runs)
    for col in ("optimizer.lr", "optimizer.momentum", "schedule.iterations", "schedule.milestones",
                "dataset.protocol", "trainer.batch_size", "experiment_name"):
        assert col in runs.columns, col
    assert rows[DONE_RESNET]["optimizer.lr"] == 0.05
    assert rows[DONE_PLAIN_TEST]["optimizer.lr"] == 0.1
    assert rows[DONE_RESNET]["schedule.iterations"] == 40
    assert rows[DONE_RESNET]["schedule.milestones"] == [20, 30]
    assert rows[DONE_RESNET]["experiment_name"] == "degradation"
    assert int(rows[DONE_RESNET]["params"]) == 270_000
    assert rows[DONE_RESNET]["shortcut"] == "A"
    assert rows[DONE_PLAIN_TEST]["shortcut"] is None or pd.isna(rows[DONE_PLAIN_TEST]["shortcut"])


def expected_long(metrics: list[dict]) -> set[tuple]:
    return {(int(r["iter"]), k, float(v)) for r in metrics for k, v in r.items()
            if k != "iter" and v not in ("", None)}


def test_history_is_long_and_equals_metrics_csv(mixed_sweep):
    runs, history = collect(mixed_sweep)
    assert list(history.columns) == ["run", "variant", "depth", "seed", "iter", "metric", "value"]
    assert list(history.columns) == HISTORY_COLUMNS
    assert history["value"].notna().all()
    for run, metrics in ((DONE_RESNET, metric_rows()), (DONE_PLAIN_TEST, metric_rows(base=40.0, test=True)),
                         (FAILED, metric_rows(iters=(10, 20)))):
        h = history[history["run"] == run]
        got = {(int(i), m, float(v)) for i, m, v in h[["iter", "metric", "value"]].itertuples(index=False)}
        assert got == expected_long(metrics), run
        row = by_run(runs)[run]
        assert set(h["variant"]) == {row["variant"]}
        assert set(h["depth"]) == {row["depth"]} and set(h["seed"]) == {row["seed"]}
    # the same values, read straight from the file
    wide = pd.read_csv(mixed_sweep / DONE_RESNET / "metrics.csv").set_index("iter")
    h = history[history["run"] == DONE_RESNET]
    for it, metric, value in h[["iter", "metric", "value"]].itertuples(index=False):
        assert wide.loc[it, metric] == pytest.approx(value)
    assert len(h) == int(wide.notna().sum().sum())
    # no history for a job without a directory
    assert PENDING not in set(history["run"])


def test_a_half_written_last_line_is_dropped(mixed_sweep):
    history = collect(mixed_sweep).history
    h = history[history["run"] == RUNNING]
    assert sorted(h["iter"].unique()) == [10, 20, 25]
    assert got_set(h) == expected_long(metric_rows(iters=(10, 20, 25)))
    table = read_table(mixed_sweep / RUNNING / "metrics.csv", METRIC_COLUMNS)
    assert table["iter"].tolist() == [10, 20, 25]
    assert list(table.columns) == METRIC_COLUMNS


def got_set(h: pd.DataFrame) -> set[tuple]:
    return {(int(i), m, float(v)) for i, m, v in h[["iter", "metric", "value"]].itertuples(index=False)}


@pytest.mark.parametrize("text", [
    "",                                   # created, nothing written yet
    "iter,epoch,l",                       # header half written
    ",".join(METRIC_COLUMNS) + "\n",      # header only
    ",".join(METRIC_COLUMNS) + "\n10,1,0.1,2.3",  # first row half written
])
def test_read_table_of_an_unfinished_file_is_empty_and_never_raises(tmp_path, text):
    p = tmp_path / "metrics.csv"
    p.write_text(text)
    df = read_table(p, METRIC_COLUMNS)
    assert df.empty
    assert read_table(tmp_path / "missing.csv", METRIC_COLUMNS).empty


def test_read_table_keeps_complete_rows_with_crlf_line_ends(tmp_path):
    p = tmp_path / "metrics.csv"
    p.write_bytes(b"iter,train_err\r\n5,80.0\r\n10,70.0\r\n15,6")
    df = read_table(p)
    assert df["iter"].tolist() == [5, 10]
    assert df["train_err"].tolist() == [80.0, 70.0]


def test_unfinished_runs_never_break_collection(tmp_path):
    """Runs caught at every moment of their start: an empty dir, config only, empty or partial files."""
    sweep = tmp_path / SWEEP_NAME
    write_manifest(sweep, [{"depth": 8, "residual": True, "seed": s, "status": "running"} for s in range(4)])
    (sweep / run_name(8, True, 0)).mkdir()                                  # no record yet
    write_run(sweep / run_name(8, True, 1), depth=8, residual=True, seed=1, status=None)  # config only
    write_run(sweep / run_name(8, True, 2), depth=8, residual=True, seed=2, status=None, metrics=[],
              partial_line="5,1,0.")                                        # header + half a row
    d = write_run(sweep / run_name(8, True, 3), depth=8, residual=True, seed=3, summary_text="")
    (d / "metrics.csv").write_text("")                                      # empty files
    runs, history = collect(sweep)
    rows = by_run(runs)
    assert len(runs) == 4 and runs["run"].is_unique
    assert all(int(r["depth"]) == 8 and r["variant"] == "resnet" for r in rows.values())
    assert history.empty
    assert list(history.columns) == HISTORY_COLUMNS


def test_pending_jobs_read_depth_from_n_and_capitalised_booleans(tmp_path):
    sweep = tmp_path / SWEEP_NAME
    write_manifest(sweep, [
        {"depth": 56, "residual": True, "seed": 2, "status": "pending",
         "overrides": "model.n=9 model.residual=True seed=2 experiment=degradation trainer.device=cpu"},
        {"depth": 110, "residual": True, "seed": 0, "status": "pending",
         "overrides": "experiment=degradation seed=0 model.residual=True model.depth=110"},
    ])
    rows = by_run(collect(sweep).runs)
    assert set(rows) == {run_name(56, True, 2), run_name(110, True, 0)}
    for run, depth, seed in ((run_name(56, True, 2), 56, 2), (run_name(110, True, 0), 110, 0)):
        r = rows[run]
        assert (int(r["depth"]), bool(r["residual"]), r["variant"], int(r["seed"]), r["status"]) == \
            (depth, True, "resnet", seed, "pending")


def test_a_moved_sweep_is_matched_to_its_manifest_by_job_name(tmp_path):
    """The manifest's run_dir is where the sweep ran; copied elsewhere, its names still match."""
    sweep = tmp_path / "copied" / SWEEP_NAME
    write_manifest(sweep, [{"depth": 8, "residual": r, "seed": 0,
                            "run_dir": f"/elsewhere/runs/degradation/{SWEEP_NAME}/{run_name(8, r, 0)}"}
                           for r in (True, False)])
    for r in (True, False):
        write_run(sweep / run_name(8, r, 0), depth=8, residual=r, seed=0, metrics=metric_rows())
    runs = collect(sweep).runs
    assert len(runs) == 2
    assert sorted(runs["job"].tolist()) == [0, 1]
    assert (runs["status"] == "completed").all()


def test_wandb_and_report_folders_are_not_runs(mixed_sweep):
    d = mixed_sweep / DONE_RESNET / "wandb" / "offline-run-20260102_030405-abc" / "files"
    d.mkdir(parents=True)
    (d / "config.yaml").write_text("seed:\n  value: 0\n")
    (d / "wandb-summary.json").write_text("{}")
    w = mixed_sweep / "wandb" / "run-x" / "files"
    w.mkdir(parents=True)
    (w / "config.yaml").write_text("seed:\n  value: 0\n")
    rep = mixed_sweep / "report"
    rep.mkdir()
    (rep / "runs.csv").write_text("run\nx\n")
    (rep / "sweep_manifest.csv").write_text((mixed_sweep / "manifest.csv").read_text())
    runs = collect(mixed_sweep).runs
    assert len(runs) == 6
    assert set(runs["run"]) == {DONE_RESNET, DONE_PLAIN_TEST, FAILED, RUNNING, PENDING, CORRUPT}


def test_collect_a_single_run_directory(mixed_sweep):
    runs, history = collect(mixed_sweep / DONE_RESNET)
    assert len(runs) == 1
    r = runs.iloc[0]
    assert r["run"] == DONE_RESNET
    assert (r["variant"], int(r["depth"]), int(r["seed"]), r["status"], r["final_err"]) == \
        ("resnet", 20, 0, "completed", 8.5)
    assert set(history["run"]) == {DONE_RESNET}
    assert got_set(history) == expected_long(metric_rows())


def test_collect_a_folder_of_two_sweeps_gives_unique_labels(tmp_path):
    exp = tmp_path / "runs" / "degradation"
    runs_kw = [dict(depth=8, residual=r, seed=0, metrics=metric_rows(iters=(20,))) for r in (True, False)]
    a = simple_sweep(exp / "2026-01-01_00-00-00-000000", runs_kw)
    b = simple_sweep(exp / "2026-01-02_00-00-00-000000", runs_kw)
    (b / run_name(8, False, 0) / "summary.json").unlink()  # one run of b lost its summary...
    write_manifest(b, [{"depth": 8, "residual": r, "seed": 0} for r in (True, False)]
                   + [{"depth": 14, "residual": True, "seed": 0, "status": "pending"}])  # ...and b has a pending job
    runs, history = collect(exp)
    assert len(runs) == 5
    assert runs["run"].is_unique
    assert set(runs["sweep"]) == {a.name, b.name}
    assert set(runs["run"]) == {f"{s.name}/{run_name(8, r, 0)}" for s in (a, b) for r in (True, False)} | \
        {f"{b.name}/{run_name(14, True, 0)}"}
    assert (runs["sweep"] == a.name).sum() == 2 and (runs["sweep"] == b.name).sum() == 3
    assert history.groupby("run")["iter"].nunique().to_dict() == {
        f"{s.name}/{run_name(8, r, 0)}": 1 for s in (a, b) for r in (True, False)}
    # several paths at once: the same runs
    runs2, _ = collect([a, b])
    assert len(runs2) == 5


def test_collect_a_missing_path_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        collect(tmp_path / "no-such-sweep")
    with pytest.raises(FileNotFoundError):
        collect_layer_stats(tmp_path / "no-such-sweep")
    with pytest.raises(FileNotFoundError):
        collect_grad_norms(tmp_path / "no-such-sweep")


def test_collect_an_empty_folder_gives_empty_frames(tmp_path):
    runs, history = collect(tmp_path)
    assert runs.empty and history.empty
    assert "final_err" in runs.columns
    assert list(history.columns) == HISTORY_COLUMNS


def test_latest_sweep_is_the_newest_timestamp(tmp_path):
    exp = tmp_path / "runs" / "degradation"
    for name in ("2026-01-02_10-00-00-000000", "2026-01-10_09-00-00-000000", "2026-01-09_23-59-59-999999"):
        write_manifest(exp / name, [{"depth": 20, "residual": True, "seed": 0, "status": "pending"}])
    (exp / "2027-01-01_00-00-00-000000").mkdir()  # newer, but no manifest: not a sweep
    (exp / "notes.txt").write_text("x")
    assert latest_sweep(exp) == exp / "2026-01-10_09-00-00-000000"
    assert latest_sweep(str(exp)) == exp / "2026-01-10_09-00-00-000000"


def test_latest_sweep_without_a_sweep_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        latest_sweep(tmp_path)
    with pytest.raises(FileNotFoundError):
        latest_sweep(tmp_path / "missing")


def test_layer_stats_and_grad_norms_of_hand_made_runs(tmp_path):
    sweep = tmp_path / SWEEP_NAME
    simple_sweep(sweep, [dict(depth=d, residual=r, seed=0, layer_stats=True, grad_norms=(1, 10))
                         for d in (8, 20) for r in (True, False)])
    write_run(sweep / "no-diagnostics", depth=8, residual=True, seed=5)  # recorded none: left out
    stats = collect_layer_stats(sweep)
    assert list(stats.columns[:4]) == ["run", "variant", "depth", "seed"]
    assert {"iter", "layer", "module", "std", "channel_std"} <= set(stats.columns)
    assert stats.groupby("run").size().to_dict() == {
        run_name(d, r, 0): 6 * ((d - 2) // 6) + 1 for d in (8, 20) for r in (True, False)}
    one = stats[stats["run"] == run_name(20, False, 0)]
    assert set(one["variant"]) == {"plain"} and set(one["depth"]) == {20}
    assert one["std"].tolist() == pytest.approx([1.0 + i / 10 for i in range(1, 20)])
    norms = collect_grad_norms(sweep)
    assert norms.groupby(["run", "iter"]).size().to_dict() == {
        (run_name(d, r, 0), it): 6 * ((d - 2) // 6) + 1 for d in (8, 20) for r in (True, False) for it in (1, 10)}


# --- the real (shrunk) sweep -----------------------------------------------------------------------
def test_collect_tiny_sweep(tiny_sweep):
    runs, history = collect(tiny_sweep)
    assert len(runs) == 8
    assert (runs["status"] == "completed").all()
    assert runs["run"].is_unique
    assert set(zip(runs["variant"], runs["depth"].astype(int), runs["seed"].astype(int), strict=True)) == {
        (v, d, s) for v in ("plain", "resnet") for d in (8, 14) for s in (0, 1)}
    assert (runs["variant"] == runs["residual"].map({True: "resnet", False: "plain"})).all()
    assert set(runs["sweep"]) == {tiny_sweep.name}
    assert (runs["schedule.iterations"] == 40).all()
    for _, r in runs.iterrows():
        summary = json.loads((Path(r["run_dir"]) / "summary.json").read_text())
        key = "final_test_err" if summary["reported_error"] == "test" else "final_val_err"
        assert r["final_err"] == summary[key]
        assert int(r["params"]) == summary["params"]
        assert r["run"] == Path(r["run_dir"]).name
        wide = pd.read_csv(Path(r["run_dir"]) / "metrics.csv")
        h = history[history["run"] == r["run"]]
        assert len(h) == int(wide.drop(columns="iter").notna().sum().sum())
        last = h[h["iter"] == wide["iter"].max()].set_index("metric")["value"]
        assert last["train_err"] == pytest.approx(wide["train_err"].iloc[-1])
        assert not math.isnan(r["final_err"])


def test_layer_stats_and_grad_norms_of_tiny_sweep(tiny_sweep):
    runs = collect(tiny_sweep).runs
    layers = {r: 6 * ((int(d) - 2) // 6) + 1 for r, d in zip(runs["run"], runs["depth"], strict=True)}
    assert set(layers.values()) == {7, 13}

    stats = collect_layer_stats(tiny_sweep)
    assert stats.groupby("run").size().to_dict() == layers  # one recorded iteration: the end
    assert set(stats["iter"]) == {40}
    for run, g in stats.groupby("run"):
        assert g["layer"].tolist() == list(range(1, layers[run] + 1))
        assert g["module"].iloc[0] == "bn1"
    assert (stats["std"] > 0).all()

    norms = collect_grad_norms(tiny_sweep)
    assert set(norms["iter"]) == {1, 10}
    assert norms.groupby(["run", "iter"]).size().to_dict() == {
        (run, it): n for run, n in layers.items() for it in (1, 10)}
    assert norms["module"].iloc[0] == "conv1"
    assert (norms["grad_norm"] > 0).all()

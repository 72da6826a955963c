"""Collecting run records into frames: hand-made sweep folders (every state a run can be in) and a
real one."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd
import pytest

from resnet_repro.analysis.results import (
    HISTORY_COLUMNS,
    collect,
    collect_grad_norms,
    collect_layer_stats,
    latest_sweep,
    read_table,
)
from resnet_repro.record.files import METRIC_COLUMNS

from .helpers import (
    CORRUPT,
    DONE_PLAIN_TEST,
    DONE_RESNET,
    FAILED,
    PENDING,
    RUNNING,
    SWEEP_NAME,
    make_mixed_sweep,
    metric_rows,
    run_name,
    write_manifest,
    write_run,
)


# --- sweeps written by hand (the run records and the mixed sweep: helpers.py) -------------------
def simple_sweep(sweep: Path, runs: list[dict]) -> Path:
    """A sweep folder of completed runs: ``runs`` holds write_run keyword arguments."""
    write_manifest(sweep, [{k: r[k] for k in ("depth", "residual", "seed")} for r in runs])
    for r in runs:
        write_run(sweep / run_name(r["depth"], r["residual"], r["seed"]), **r)
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
    for col in (
        "run",
        "variant",
        "depth",
        "residual",
        "seed",
        "status",
        "final_err",
        "sweep",
        "job",
    ):
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
        assert (
            r["variant"],
            int(r["depth"]),
            bool(r["residual"]),
            int(r["seed"]),
            r["status"],
        ) == (variant, depth, residual, seed, status), run
        assert r["sweep"] == SWEEP_NAME
    assert [
        int(rows[r]["job"])
        for r in (DONE_RESNET, DONE_PLAIN_TEST, FAILED, RUNNING, PENDING, CORRUPT)
    ] == [0, 1, 2, 3, 4, 5]


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
    for col in (
        "optimizer.lr",
        "optimizer.momentum",
        "schedule.iterations",
        "schedule.milestones",
        "dataset.protocol",
        "trainer.batch_size",
        "experiment_name",
    ):
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
    return {
        (int(r["iter"]), k, float(v))
        for r in metrics
        for k, v in r.items()
        if k != "iter" and v not in ("", None)
    }


def test_history_is_long_and_equals_metrics_csv(mixed_sweep):
    runs, history = collect(mixed_sweep)
    assert list(history.columns) == ["run", "variant", "depth", "seed", "iter", "metric", "value"]
    assert list(history.columns) == HISTORY_COLUMNS
    assert history["value"].notna().all()
    for run, metrics in (
        (DONE_RESNET, metric_rows()),
        (DONE_PLAIN_TEST, metric_rows(base=40.0, test=True)),
        (FAILED, metric_rows(iters=(10, 20))),
    ):
        h = history[history["run"] == run]
        got = {
            (int(i), m, float(v))
            for i, m, v in h[["iter", "metric", "value"]].itertuples(index=False)
        }
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
    return {
        (int(i), m, float(v)) for i, m, v in h[["iter", "metric", "value"]].itertuples(index=False)
    }


@pytest.mark.parametrize(
    "text",
    [
        "",  # created, nothing written yet
        "iter,epoch,l",  # header half written
        ",".join(METRIC_COLUMNS) + "\n",  # header only
        ",".join(METRIC_COLUMNS) + "\n10,1,0.1,2.3",  # first row half written
    ],
)
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
    """Runs caught at every moment of their start: an empty dir, config only, empty or partial
    files."""
    sweep = tmp_path / SWEEP_NAME
    write_manifest(
        sweep, [{"depth": 8, "residual": True, "seed": s, "status": "running"} for s in range(4)]
    )
    (sweep / run_name(8, True, 0)).mkdir()  # no record yet
    write_run(
        sweep / run_name(8, True, 1), depth=8, residual=True, seed=1, status=None
    )  # config only
    write_run(
        sweep / run_name(8, True, 2),
        depth=8,
        residual=True,
        seed=2,
        status=None,
        metrics=[],
        partial_line="5,1,0.",
    )  # header + half a row
    d = write_run(sweep / run_name(8, True, 3), depth=8, residual=True, seed=3, summary_text="")
    (d / "metrics.csv").write_text("")  # empty files
    runs, history = collect(sweep)
    rows = by_run(runs)
    assert len(runs) == 4 and runs["run"].is_unique
    assert all(int(r["depth"]) == 8 and r["variant"] == "resnet" for r in rows.values())
    assert history.empty
    assert list(history.columns) == HISTORY_COLUMNS


def test_pending_jobs_read_depth_from_n_and_capitalised_booleans(tmp_path):
    sweep = tmp_path / SWEEP_NAME
    write_manifest(
        sweep,
        [
            {
                "depth": 56,
                "residual": True,
                "seed": 2,
                "status": "pending",
                "overrides": (
                    "model.n=9 model.residual=True seed=2 experiment=degradation trainer.device=cpu"
                ),
            },
            {
                "depth": 110,
                "residual": True,
                "seed": 0,
                "status": "pending",
                "overrides": "experiment=degradation seed=0 model.residual=True model.depth=110",
            },
        ],
    )
    rows = by_run(collect(sweep).runs)
    assert set(rows) == {run_name(56, True, 2), run_name(110, True, 0)}
    for run, depth, seed in ((run_name(56, True, 2), 56, 2), (run_name(110, True, 0), 110, 0)):
        r = rows[run]
        assert (
            int(r["depth"]),
            bool(r["residual"]),
            r["variant"],
            int(r["seed"]),
            r["status"],
        ) == (depth, True, "resnet", seed, "pending")


def test_a_moved_sweep_is_matched_to_its_manifest_by_job_name(tmp_path):
    """The manifest's run_dir is where the sweep ran; copied elsewhere, its names still match."""
    sweep = tmp_path / "copied" / SWEEP_NAME
    write_manifest(
        sweep,
        [
            {
                "depth": 8,
                "residual": r,
                "seed": 0,
                "run_dir": f"/elsewhere/runs/degradation/{SWEEP_NAME}/{run_name(8, r, 0)}",
            }
            for r in (True, False)
        ],
    )
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
    assert (r["variant"], int(r["depth"]), int(r["seed"]), r["status"], r["final_err"]) == (
        "resnet",
        20,
        0,
        "completed",
        8.5,
    )
    assert set(history["run"]) == {DONE_RESNET}
    assert got_set(history) == expected_long(metric_rows())


def test_collect_a_folder_of_two_sweeps_gives_unique_labels(tmp_path):
    exp = tmp_path / "runs" / "degradation"
    runs_kw = [
        dict(depth=8, residual=r, seed=0, metrics=metric_rows(iters=(20,))) for r in (True, False)
    ]
    a = simple_sweep(exp / "2026-01-01_00-00-00-000000", runs_kw)
    b = simple_sweep(exp / "2026-01-02_00-00-00-000000", runs_kw)
    (b / run_name(8, False, 0) / "summary.json").unlink()  # one run of b lost its summary...
    write_manifest(
        b,
        [{"depth": 8, "residual": r, "seed": 0} for r in (True, False)]
        + [{"depth": 14, "residual": True, "seed": 0, "status": "pending"}],
    )  # ...and b has a pending job
    runs, history = collect(exp)
    assert len(runs) == 5
    assert runs["run"].is_unique
    assert set(runs["sweep"]) == {a.name, b.name}
    assert set(runs["run"]) == {
        f"{s.name}/{run_name(8, r, 0)}" for s in (a, b) for r in (True, False)
    } | {f"{b.name}/{run_name(14, True, 0)}"}
    assert (runs["sweep"] == a.name).sum() == 2 and (runs["sweep"] == b.name).sum() == 3
    assert history.groupby("run")["iter"].nunique().to_dict() == {
        f"{s.name}/{run_name(8, r, 0)}": 1 for s in (a, b) for r in (True, False)
    }
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
    for name in (
        "2026-01-02_10-00-00-000000",
        "2026-01-10_09-00-00-000000",
        "2026-01-09_23-59-59-999999",
    ):
        write_manifest(
            exp / name, [{"depth": 20, "residual": True, "seed": 0, "status": "pending"}]
        )
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
    simple_sweep(
        sweep,
        [
            dict(depth=d, residual=r, seed=0, layer_stats=True, grad_norms=(1, 10))
            for d in (8, 20)
            for r in (True, False)
        ],
    )
    write_run(sweep / "no-diagnostics", depth=8, residual=True, seed=5)  # recorded none: left out
    stats = collect_layer_stats(sweep)
    assert list(stats.columns[:4]) == ["run", "variant", "depth", "seed"]
    assert {"iter", "layer", "module", "std", "channel_std"} <= set(stats.columns)
    assert stats.groupby("run").size().to_dict() == {
        run_name(d, r, 0): 6 * ((d - 2) // 6) + 1 for d in (8, 20) for r in (True, False)
    }
    one = stats[stats["run"] == run_name(20, False, 0)]
    assert set(one["variant"]) == {"plain"} and set(one["depth"]) == {20}
    assert one["std"].tolist() == pytest.approx([1.0 + i / 10 for i in range(1, 20)])
    norms = collect_grad_norms(sweep)
    assert norms.groupby(["run", "iter"]).size().to_dict() == {
        (run_name(d, r, 0), it): 6 * ((d - 2) // 6) + 1
        for d in (8, 20)
        for r in (True, False)
        for it in (1, 10)
    }


# --- the real (shrunk) sweep ----------------------------------------------------------------------
def test_collect_tiny_sweep(tiny_sweep):
    runs, history = collect(tiny_sweep)
    assert len(runs) == 8
    assert (runs["status"] == "completed").all()
    assert runs["run"].is_unique
    assert set(
        zip(runs["variant"], runs["depth"].astype(int), runs["seed"].astype(int), strict=True)
    ) == {(v, d, s) for v in ("plain", "resnet") for d in (8, 14) for s in (0, 1)}
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
    layers = {
        r: 6 * ((int(d) - 2) // 6) + 1 for r, d in zip(runs["run"], runs["depth"], strict=True)
    }
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
        (run, it): n for run, n in layers.items() for it in (1, 10)
    }
    assert norms["module"].iloc[0] == "conv1"
    assert (norms["grad_norm"] > 0).all()


# --- hostile records: one bad run costs one warning line, never the report or a hang ----------
def _summary_with(**fields):
    def edit(d: Path):
        s = json.loads((d / "summary.json").read_text())
        (d / "summary.json").write_text(json.dumps({**s, **fields}))

    return edit


def _alias_bomb(d: Path):  # 882 bytes that expand to 9**9 strings
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [
        f"{chr(97 + i)}: &{chr(97 + i)} [" + ",".join([f"*{chr(96 + i)}"] * 9) + "]"
        for i in range(1, 9)
    ]
    (d / "config.yaml").write_text("\n".join(lines) + "\n")


def _fifo(name: str):
    def make(d: Path):
        (d / name).unlink()
        os.mkfifo(d / name)

    return make


HOSTILE = {
    "fast_path a string": (_summary_with(fast_path="bf16"), "summary.json", "fast_path is"),
    "reported_error a list": (
        _summary_with(reported_error=["val"]),
        "summary.json",
        "reported_error is",
    ),
    "status an int": (_summary_with(status=3), "summary.json", "status is"),
    "iterations 'inf'": (_summary_with(iterations="inf"), "summary.json", "iterations is"),
    "seed a list": (_summary_with(seed=[1]), "summary.json", "seed is"),
    "depth a word": (_summary_with(depth="deep"), "summary.json", "depth is"),
    "summary a list": (
        lambda d: (d / "summary.json").write_text("[1, 2]"),
        "summary.json",
        "not a mapping",
    ),
    "deeply nested JSON": (
        lambda d: (d / "summary.json").write_text("[" * 100_000 + "]" * 100_000),
        "summary.json",
        "RecursionError",
    ),
    "deeply nested YAML": (
        lambda d: (d / "config.yaml").write_text("a: " + "[" * 100_000 + "]" * 100_000),
        "config.yaml",
        "RecursionError",
    ),
    "YAML alias bomb": (_alias_bomb, "config.yaml", "alias"),
    "inf in metrics' iter": (
        lambda d: (d / "metrics.csv").write_text(
            (d / "metrics.csv").read_text() + "inf,1,0.1,1,1,,,,,,\n"
        ),
        None,
        None,
    ),
    "binary manifest.csv": (
        lambda d: (d.parent / "manifest.csv").write_bytes(bytes(range(256)) * 8),
        "manifest.csv",
        "unreadable manifest",
    ),
    "a FIFO named summary.json": (_fifo("summary.json"), "summary.json", "not a regular file"),
    "a FIFO named metrics.csv": (_fifo("metrics.csv"), "metrics.csv", "not a regular file"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_record_costs_one_warning_and_never_the_report(tmp_path, case, caplog):
    import signal

    from resnet_repro.analysis.report import write_report

    edit, bad_file, said = HOSTILE[case]
    metrics = [
        {"iter": 10, "epoch": 1, "lr": 0.1, "train_loss": 1.0, "train_err": 50.0},
        {
            "iter": 40,
            "epoch": 1,
            "lr": 0.1,
            "train_loss": 0.5,
            "train_err": 20.0,
            "val_loss": 0.6,
            "val_err": 22.0,
        },
    ]
    write_run(tmp_path / "depth=20,residual=true", depth=20, residual=True, seed=0, metrics=metrics)
    bad = write_run(
        tmp_path / "depth=20,residual=false", depth=20, residual=False, seed=0, metrics=metrics
    )
    edit(bad)

    def hang(*_):
        raise TimeoutError("reading the record hung")

    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(60)
    try:
        runs, _ = collect(tmp_path)
        files = write_report([tmp_path], tmp_path / "report")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    good = runs[runs["run"] == "depth=20,residual=true"].iloc[0]
    assert (
        good["status"] == "completed" and good["final_err"] == 12.0
    )  # the good run is read as it is
    assert files["verdict"].is_file()
    if bad_file is not None:
        lines = [
            r.getMessage()
            for r in caplog.records
            if r.levelname == "WARNING" and bad_file in r.getMessage()
        ]
        assert lines and said in lines[0] and len(lines[0].splitlines()) == 1, lines


def test_a_yaml_alias_in_a_runs_config_is_refused_in_one_line(tmp_path):
    from resnet_repro.errors import RunDirError
    from resnet_repro.record.run_record import RunRecord

    _alias_bomb(tmp_path)
    with pytest.raises(RunDirError, match="holds a YAML alias") as ex:
        RunRecord(tmp_path, create=False).saved_config()
    assert len(str(ex.value).splitlines()) == 1 and "nothing was changed" in str(ex.value)


def test_a_running_summary_whose_lock_nobody_holds_reads_as_interrupted(tmp_path):
    """A run killed, or ended on a full disk before it could write its summary, leaves
    ``status: running``: with its run.lock held by no live process it reads as interrupted, in the
    runs frame and in the manifest's outcome; while a process holds the lock it is running."""
    from resnet_repro.record.lock import RunLock
    from resnet_repro.sweeps.sweep import job_outcome

    d = write_run(
        tmp_path / "depth=20,residual=true", depth=20, residual=True, seed=0, status="running"
    )
    assert collect(tmp_path).runs["status"].tolist() == ["running"]  # no run.lock: cannot tell
    lock = RunLock(d)
    lock.acquire()
    try:
        assert collect(tmp_path).runs["status"].tolist() == ["running"]
    finally:
        lock.release()
    assert collect(tmp_path).runs["status"].tolist() == ["interrupted"]
    assert job_outcome(d)["status"] == "interrupted"

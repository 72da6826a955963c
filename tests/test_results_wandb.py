"""collect_wandb: the runs / history frames read from W&B, checked with a fake public API.

The fakes are shaped like ``wandb.Api()``: ``api.runs(path, filters=...)`` yields runs with
``name``, ``id``, ``group``, ``state``, ``url``, ``config``, ``summary`` (``_json_dict``) and
``scan_history()``. ``wandb.Api`` itself is made to raise, so nothing here reaches W&B.
"""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from resnet_repro.analysis.results import HISTORY_COLUMNS, RUN_COLUMNS, collect, collect_wandb
from resnet_repro.record.files import CONFIG_FILE, METRIC_COLUMNS, METRICS_FILE, SUMMARY_FILE

PATH = "my-team/resnet_repro"
GROUP = "degradation-2026-11-23_10-00-00-000000"


# --- what a training run logs ---------------------------------------------------------------
def make_config(depth: int, residual: bool, seed: int) -> dict:
    """The nested, resolved config a run passes to wandb.init and writes to config.yaml."""
    name = f"depth={depth},residual={str(residual).lower()},seed={seed}"
    return {
        "model": {
            "name": "resnet_cifar",
            "n": (depth - 2) // 6,
            "depth": depth,
            "residual": residual,
            "shortcut": "A",
            "num_classes": 10,
        },
        "dataset": {
            "name": "cifar10",
            "root": "data",
            "download": False,
            "verify": True,
            "protocol": "paper",
            "val_size": 5000,
            "split_seed": 0,
            "augment": True,
            "num_train": 0,
            "num_test": 0,
        },
        "optimizer": {
            "name": "sgd",
            "lr": 0.1,
            "momentum": 0.9,
            "weight_decay": 1e-4,
            "nesterov": False,
        },
        "schedule": {
            "name": "paper",
            "iterations": 300,
            "milestones": [150, 225],
            "gamma": 0.1,
            "warmup": False,
            "warmup_lr": 0.01,
            "warmup_until_error": 0.8,
        },
        "trainer": {
            "device": "cpu",
            "batch_size": 128,
            "eval_batch_size": 1000,
            "log_every": 100,
            "eval_every": 200,
            "progress": False,
            "deterministic": False,
            "num_threads": None,
        },
        "logger": {
            "name": "wandb",
            "mode": "online",
            "project": "resnet_repro",
            "entity": None,
            "tags": [],
            "group": None,
            "job_type": None,
        },
        "diagnostics": {"layer_stats": "end", "layer_stats_images": 1000, "grad_norms": []},
        "seed": seed,
        "experiment_name": "degradation",
        "name": name,
    }


def make_summary(
    depth: int,
    residual: bool,
    seed: int,
    status: str | None = "completed",
    reported: str = "validation",
) -> dict:
    s = {
        "name": f"depth={depth},residual={str(residual).lower()},seed={seed}",
        "model": "resnet_cifar",
        "depth": depth,
        "n": (depth - 2) // 6,
        "residual": residual,
        "shortcut": "A" if residual else None,
        "params": 1000 * depth,
        "dataset": "cifar10",
        "protocol": "paper",
        "seed": seed,
        "reported_error": reported,
        "iterations": 300,
        "iterations_total": 300,
        "final_train_err": 5.0 + depth / 10,
        "final_train_loss": 0.2,
        "final_val_err": 10.0 + depth / 10,
        "final_val_loss": 0.4,
        "best_val_err": 9.5 + depth / 10,
        "best_val_iter": 200,
        "wall_time_s": 12.5,
        "train_time_s": 11.0,
        "images_per_s": 3490.9,
        "device": "cpu",
    }
    if reported == "test":
        s.update(final_test_err=11.0 + depth / 10, final_test_loss=0.5)
    if status is not None:
        s["status"] = status
    return s


def make_rows(depth: int) -> list[dict]:
    """metrics.csv rows: a train row every 100 iterations, evaluation at 200 and 300."""
    rows = []
    for it in (100, 200, 300):
        row = {
            "iter": it,
            "epoch": it / 391,
            "lr": 0.1,
            "train_loss": 1.0 / it,
            "train_err": 30.0 - it / 20 + depth / 100,
            "time_s": it / 25.0,
            "img_per_s": 3200.0,
        }
        if it in (200, 300):
            row.update(val_loss=0.9, val_err=25.0 - it / 30 + depth / 100)
        rows.append(row)
    return rows


def history_records(rows: list[dict]) -> list[dict]:
    """What scan_history yields for those rows (logged with step=iter, blanks left out)."""
    return [
        {
            "_step": r["iter"],
            "_runtime": 1.5 * i,
            "_timestamp": 1.7e9 + i,
            **{k: v for k, v in r.items() if k != "iter"},
        }
        for i, r in enumerate(rows)
    ]


# --- fakes of the W&B public API -------------------------------------------------------------
class FakeSummary:
    def __init__(self, d: dict):
        self._json_dict = d


class FakeRun:
    def __init__(
        self,
        config: dict,
        summary: dict,
        history: list[dict],
        *,
        state="finished",
        run_id="abc123",
        wrapped=False,
    ):
        self.name = config["name"]
        self.id = run_id
        self.group = GROUP
        self.state = state
        self.url = f"https://wandb.ai/{PATH}/runs/{run_id}"
        cfg = {"_wandb": {"value": {"cli_version": "0.31.0"}}, **config}
        self.config = {k: {"value": v} for k, v in cfg.items()} if wrapped else cfg
        self.summary = FakeSummary(
            {
                **summary,
                "_wandb": {"runtime": 12},
                "_runtime": 12.5,
                "_step": 300,
                "_timestamp": 1.7e9,
                "train_err": history[-1]["train_err"] if history else None,
            }
        )
        self._history = history

    def scan_history(self):
        return iter(copy.deepcopy(self._history))


class FakeApi:
    def __init__(self, runs):
        self._runs, self.calls = list(runs), []

    def runs(self, path, filters=None, **kwargs):
        self.calls.append((path, filters))
        return iter(self._runs)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    import wandb

    def refuse(*args, **kwargs):
        raise AssertionError("the test tried to reach W&B")

    monkeypatch.setattr(wandb, "Api", refuse)


def fake_run(
    depth,
    residual,
    seed,
    *,
    status="completed",
    state="finished",
    wrapped=False,
    reported="validation",
    history=True,
):
    return FakeRun(
        make_config(depth, residual, seed),
        make_summary(depth, residual, seed, status, reported),
        history_records(make_rows(depth)) if history else [],
        state=state,
        run_id=f"id{depth}{int(residual)}{seed}",
        wrapped=wrapped,
    )


@pytest.fixture
def two_runs():
    return [
        fake_run(20, False, 1),
        fake_run(56, True, 2, status="diverged", state="failed", wrapped=True),
    ]


# --- runs -------------------------------------------------------------------------------------
def test_runs_frame_one_row_per_run(two_runs):
    runs, _ = collect_wandb(PATH, {"group": GROUP}, api=FakeApi(two_runs))
    assert len(runs) == 2
    plain, res = (runs.set_index("wandb_id").loc[r.id] for r in two_runs)
    assert (plain.variant, plain.depth, plain.residual, plain.seed) == ("plain", 20, False, 1)
    assert (res.variant, res.depth, res.residual, res.seed) == ("resnet", 56, True, 2)
    assert (plain.status, res.status) == ("completed", "diverged")
    assert plain.final_err == plain.final_val_err == pytest.approx(12.0)
    assert res.final_err == pytest.approx(15.6)
    assert plain.n == 3 and res.n == 9 and plain.params == 20_000
    assert pd.isna(plain.shortcut) and res.shortcut == "A"
    assert plain.sweep == GROUP and plain.run == f"{GROUP}/depth=20,residual=false,seed=1"
    assert plain.run_dir == two_runs[0].url
    # the nested config (wrapped as {"value": v} or not) becomes dotted columns
    assert plain["optimizer.lr"] == res["optimizer.lr"] == 0.1
    assert res["schedule.iterations"] == 300 and res["model.shortcut"] == "A"
    # W&B internals never become columns
    assert not [
        c for c in runs.columns if c.startswith("_") or "_wandb" in c or "value" in c.split(".")
    ]
    assert list(runs.columns[: len(RUN_COLUMNS)]) == RUN_COLUMNS


def test_reported_test_error():
    runs, _ = collect_wandb(PATH, api=FakeApi([fake_run(32, True, 0, reported="test")]))
    (row,) = runs.itertuples()
    assert row.reported_error == "test" and row.final_err == pytest.approx(14.2)


def test_filters_are_passed_to_api_runs(two_runs):
    api = FakeApi(two_runs)
    collect_wandb(PATH, {"group": GROUP, "config.model.residual": True}, api=api)
    collect_wandb(PATH, api=api)
    assert api.calls == [(PATH, {"group": GROUP, "config.model.residual": True}), (PATH, {})]


@pytest.mark.parametrize(
    "state,status",
    [
        ("finished", "completed"),
        ("crashed", "interrupted"),
        ("running", "running"),
        ("failed", "failed"),
        ("killed", "interrupted"),
    ],
)
def test_status_falls_back_to_the_wandb_state(state, status):
    runs, _ = collect_wandb(PATH, api=FakeApi([fake_run(20, True, 0, status=None, state=state)]))
    assert runs["status"].tolist() == [status]


def test_summary_status_wins_over_the_wandb_state():
    runs, _ = collect_wandb(
        PATH, api=FakeApi([fake_run(20, False, 0, status="diverged", state="failed")])
    )
    assert runs["status"].tolist() == ["diverged"]


# --- history ----------------------------------------------------------------------------------
def test_history_is_long_with_iter_from_step(two_runs):
    runs, history = collect_wandb(PATH, api=FakeApi(two_runs))
    assert list(history.columns) == HISTORY_COLUMNS
    assert not any(m.startswith("_") for m in history["metric"].unique())
    assert set(history["metric"]) == {
        "epoch",
        "lr",
        "train_loss",
        "train_err",
        "time_s",
        "img_per_s",
        "val_loss",
        "val_err",
    }
    assert sorted(history["iter"].unique()) == [100, 200, 300]
    assert history["iter"].dtype.kind == "i" and history["value"].dtype.kind == "f"
    # 3 rows of 6 train metrics plus 2 rows of 2 eval metrics, per run
    assert history.groupby("run").size().tolist() == [22, 22]
    plain = history[(history["run"] == runs.loc[0, "run"]) & (history["metric"] == "val_err")]
    assert plain[["variant", "depth", "seed"]].drop_duplicates().values.tolist() == [
        ["plain", 20, 1]
    ]
    assert plain.set_index("iter")["value"].to_dict() == pytest.approx(
        {200: 25.0 - 200 / 30 + 0.2, 300: 25.0 - 300 / 30 + 0.2}
    )


def test_run_without_history_still_has_its_row():
    runs, history = collect_wandb(
        PATH, api=FakeApi([fake_run(20, True, 0, status=None, state="running", history=False)])
    )
    assert runs["status"].tolist() == ["running"]
    assert history.empty and list(history.columns) == HISTORY_COLUMNS


def test_no_runs_gives_empty_frames():
    runs, history = collect_wandb(PATH, {"group": "nothing"}, api=FakeApi([]))
    assert runs.empty and list(runs.columns) == RUN_COLUMNS
    assert history.empty and list(history.columns) == HISTORY_COLUMNS


# --- same frames as a local run directory --------------------------------------------------------
def write_local_run(run_dir: Path, depth: int, residual: bool, seed: int) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / CONFIG_FILE).write_text(
        yaml.safe_dump(make_config(depth, residual, seed), sort_keys=False)
    )
    (run_dir / SUMMARY_FILE).write_text(json.dumps(make_summary(depth, residual, seed)))
    with open(run_dir / METRICS_FILE, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRIC_COLUMNS)
        w.writeheader()
        w.writerows(make_rows(depth))


def test_same_columns_and_values_as_local_collect(tmp_path):
    sweep = tmp_path / "runs" / "degradation" / "2026-11-23_10-00-00-000000"
    write_local_run(sweep / "depth=20,residual=false,seed=1", 20, False, 1)
    write_local_run(sweep / "depth=56,residual=true,seed=2", 56, True, 2)
    local_runs, local_history = collect(sweep)
    wb_runs, wb_history = collect_wandb(
        PATH, api=FakeApi([fake_run(20, False, 1), fake_run(56, True, 2, wrapped=True)])
    )
    # W&B adds only the run's id; every other column is the same, in the same order
    assert [c for c in wb_runs.columns if c != "wandb_id"] == list(local_runs.columns)
    assert list(wb_history.columns) == list(local_history.columns) == HISTORY_COLUMNS

    key = ["variant", "depth", "seed"]
    same = [
        "variant",
        "depth",
        "residual",
        "seed",
        "status",
        "final_err",
        "params",
        "reported_error",
        "optimizer.lr",
        "schedule.milestones",
    ]
    pd.testing.assert_frame_equal(
        local_runs.sort_values(key)[same].reset_index(drop=True),
        wb_runs.sort_values(key)[same].reset_index(drop=True),
    )
    order = [*key, "iter", "metric"]
    cols = [*key, "iter", "metric", "value"]
    pd.testing.assert_frame_equal(
        local_history.sort_values(order)[cols].reset_index(drop=True),
        wb_history.sort_values(order)[cols].reset_index(drop=True),
    )

"""resnet-export: the ended runs of a sweep copied into a results folder without checkpoints,
what has not ended left out and listed, a second export adding only what is new, a different
record already there refused before anything is written."""

from __future__ import annotations

import pytest

from resnet_repro.analysis.export import export, main
from resnet_repro.analysis.results import collect

from .helpers import (
    CORRUPT,
    DONE_PLAIN_TEST,
    DONE_RESNET,
    FAILED,
    RUNNING,
    make_mixed_sweep,
    metric_rows,
    run_name,
    write_run,
)


def _sweep(tmp_path):
    sweep = make_mixed_sweep(tmp_path / "sweep")
    for run in (DONE_RESNET, DONE_PLAIN_TEST):
        (sweep / run / "checkpoint.pt").write_bytes(b"weights")
        (sweep / run / "checkpoint.prev.pt").write_bytes(b"weights")
        (sweep / run / "run.lock").write_text("")
        (sweep / run / "train.log").write_text("trained\n")
        (sweep / run / ".hydra").mkdir()
        (sweep / run / ".hydra" / "overrides.yaml").write_text("- model.depth=20\n")
    return sweep


def test_export_copies_the_ended_runs_without_checkpoints(tmp_path, capsys):
    sweep, into = _sweep(tmp_path), tmp_path / "results" / "2026-01-02-cpu-40it"
    assert main([str(sweep), "--into", str(into)]) == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in into.iterdir()) == sorted([DONE_RESNET, DONE_PLAIN_TEST])
    for run in (DONE_RESNET, DONE_PLAIN_TEST):
        files = sorted(
            p.relative_to(into / run).as_posix() for p in (into / run).rglob("*") if p.is_file()
        )
        assert files == [
            ".hydra/overrides.yaml",
            "config.yaml",
            "metrics.csv",
            "summary.json",
            "train.log",
        ]
        assert (into / run / "metrics.csv").read_bytes() == (
            sweep / run / "metrics.csv"
        ).read_bytes()
    for left_out in (FAILED, RUNNING, CORRUPT):  # each named once, with what it is
        assert sum(left_out in line for line in out.splitlines()) == 1
    assert "2 run records exported" in out and "(no checkpoints)" in out
    # what the report and the notebook read is the same as in the sweep, for the runs exported
    got, want = collect(into).runs.set_index("run"), collect(sweep).runs.set_index("run")
    for run in (DONE_RESNET, DONE_PLAIN_TEST):
        assert got.loc[run, "final_err"] == want.loc[run, "final_err"]


def test_export_again_adds_what_ended_since_and_refreshes_a_grown_log(tmp_path):
    sweep, into = _sweep(tmp_path), tmp_path / "results"
    assert len(export([sweep], into)[0]) == 2
    (sweep / DONE_RESNET / "train.log").write_text("trained\nalready complete. Nothing to do.\n")
    write_run(sweep / run_name(56, True, 0), depth=56, residual=True, seed=0, metrics=metric_rows())
    written, same, _ = export([sweep], into)
    assert [p.name for p in written] == [run_name(56, True, 0)] and len(same) == 2
    assert "Nothing to do" in (into / DONE_RESNET / "train.log").read_text()


def test_export_refuses_a_different_record_already_there_and_writes_nothing(tmp_path):
    sweep, into = _sweep(tmp_path), tmp_path / "results"
    export([sweep], into)
    (sweep / DONE_RESNET / "metrics.csv").write_text("iter\n1\n")  # the run was continued
    write_run(sweep / run_name(56, True, 0), depth=56, residual=True, seed=0, metrics=metric_rows())
    with pytest.raises(Exception, match="already holds a different record") as ex:
        export([sweep], into)
    assert "--into" in str(ex.value)
    assert not (into / run_name(56, True, 0)).exists()


def test_export_a_single_run_folder_and_bad_sources(tmp_path, capsys):
    sweep, into = _sweep(tmp_path), tmp_path / "results"
    assert main([str(sweep / DONE_RESNET), "--into", str(into)]) == 0
    assert (into / DONE_RESNET / "summary.json").is_file()
    for bad, says in (
        (tmp_path / "nowhere", "is not a folder"),
        (tmp_path / "results" / DONE_RESNET / ".hydra", "holds no run records"),
    ):
        assert main([str(bad), "--into", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert (
            says in err
            and len(err.strip().splitlines()) == 1
            and err.startswith("resnet-export: error:")
        )
    assert not (tmp_path / "x").exists()

"""End-to-end runs on synthetic data: the run record, resume, and rerun behaviour."""

import json

import pandas as pd
import pytest
import torch
import yaml

from resnet_repro.errors import CheckpointError, DataError, RunDirError
from resnet_repro.record.files import METRIC_COLUMNS
from resnet_repro.training.train import train

from .helpers import interrupt_after, run_cli, smoke_cfg

# slow: every test here trains a run, on the command line or in the test process
pytestmark = pytest.mark.slow
TIMING = ["time_s", "img_per_s"]


def test_cli_smoke_run_leaves_a_complete_record(tmp_path):
    r = run_cli("experiment=smoke", "trainer.progress=false", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    run = tmp_path / "runs" / "smoke" / "resnet8-seed0"
    for f in ("config.yaml", "metrics.csv", "summary.json", "checkpoint.pt", ".hydra/config.yaml"):
        assert (run / f).is_file(), f
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["model"]["depth"] == 8 and cfg["model"]["n"] == 1 and cfg["name"] == "resnet8-seed0"

    hist = pd.read_csv(run / "metrics.csv")
    assert list(hist.columns) == METRIC_COLUMNS
    assert hist["iter"].tolist() == [5, 10, 15, 20]
    assert hist["train_err"].notna().all() and hist["train_loss"].notna().all()
    assert hist.dropna(subset=["val_err"])["iter"].tolist() == [10, 20]
    assert hist["test_err"].isna().all()  # synthetic smoke data has no test split
    assert hist["lr"].tolist() == [0.1, 0.1, 0.01, 0.001]

    s = json.loads((run / "summary.json").read_text())
    assert s["status"] == "completed" and s["iterations"] == 20 and s["depth"] == 8
    assert s["params"] == 75_290 and s["device"] == "cpu" and s["reported_error"] == "validation"
    assert (
        s["final_val_err"] == hist["val_err"].iloc[-1]
        and s["best_val_err"] == hist["val_err"].min()
    )
    assert (
        s["wall_time_s"] > 0
        and s["images_per_s"] > 0
        and s["versions"]["torch"] == torch.__version__
    )
    assert "no test batch" in s["note"] and "final_test_err" not in s

    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["iteration"] == 20 and "model" in ckpt and "optimizer" in ckpt

    again = run_cli("experiment=smoke", "trainer.progress=false", cwd=tmp_path)
    assert again.returncode == 0 and "already complete" in again.stderr + again.stdout
    assert pd.read_csv(run / "metrics.csv").equals(hist)


def test_cli_multirun_over_depth(tmp_path):
    r = run_cli(
        "-m",
        "experiment=smoke",
        "trainer.progress=false",
        "model.depth=8,14",
        "schedule.iterations=4",
        "schedule.milestones=[2,3]",
        "trainer.log_every=2",
        "trainer.eval_every=4",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    (sweep,) = (tmp_path / "runs" / "smoke").iterdir()
    runs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert runs == ["depth=14", "depth=8"]  # job directories are named from the swept overrides
    for name, depth in (("depth=8", 8), ("depth=14", 14)):
        s = json.loads((sweep / name / "summary.json").read_text())
        assert s["status"] == "completed" and s["depth"] == depth


@pytest.mark.parametrize("stop_at", [3, 7, 13])  # before the first checkpoint, after, later
def test_resume_gives_the_same_history_and_weights(tmp_path, monkeypatch, stop_at):
    ov = (
        "trainer.log_every=2",
        "trainer.eval_every=4",
        "schedule.warmup=true",
        "diagnostics.layer_stats=eval",
        "diagnostics.grad_norms=[1,5,9]",
    )
    full = train(smoke_cfg(*ov), tmp_path / "full")

    interrupt_after(monkeypatch, stop_at)
    with pytest.raises(KeyboardInterrupt):
        train(smoke_cfg(*ov), tmp_path / "cut")
    monkeypatch.undo()
    s = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert s["status"] == "interrupted" and s["iterations_done"] == stop_at
    resumed = train(smoke_cfg(*ov), tmp_path / "cut")
    assert (
        resumed["resumed_from"] == (stop_at // 4 * 4 or None) and resumed["status"] == "completed"
    )

    a = pd.read_csv(tmp_path / "full" / "metrics.csv").drop(columns=TIMING)
    b = pd.read_csv(tmp_path / "cut" / "metrics.csv").drop(columns=TIMING)
    assert a["iter"].tolist() == list(range(2, 21, 2))
    pd.testing.assert_frame_equal(a, b)
    wa = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["model"]
    wb = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert full["final_val_err"] == resumed["final_val_err"]
    for table in ("layer_stats.csv", "grad_norms.csv"):  # rows after the checkpoint are redone once
        pd.testing.assert_frame_equal(
            pd.read_csv(tmp_path / "full" / table), pd.read_csv(tmp_path / "cut" / table)
        )
    stats = pd.read_csv(tmp_path / "full" / "layer_stats.csv")
    assert (
        sorted(stats["iter"].unique()) == [4, 8, 12, 16, 20] and len(stats) == 5 * 7
    )  # n=1: 7 layers
    assert sorted(pd.read_csv(tmp_path / "full" / "grad_norms.csv")["iter"].unique()) == [1, 5, 9]


def test_run_dir_of_another_config_is_refused(tmp_path):
    train(smoke_cfg(), tmp_path / "run")
    with pytest.raises(
        RunDirError,
        match=r"different config \(its config.yaml: optimizer.lr: 0.1 there, 0.05 now\)",
    ):
        train(smoke_cfg("optimizer.lr=0.05"), tmp_path / "run")


def test_corrupt_checkpoint_is_a_clear_error_and_keeps_the_record(tmp_path):
    run = tmp_path / "run"
    train(smoke_cfg("schedule.iterations=10", "schedule.milestones=[5]"), run)
    history = (run / "metrics.csv").read_text()
    ckpt = run / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="checkpoint.pt is truncated or corrupt"):
        train(smoke_cfg("schedule.iterations=10", "schedule.milestones=[5]"), run)
    assert (run / "metrics.csv").read_text() == history


def test_warmup_switch_is_recorded(tmp_path):
    s = train(smoke_cfg("schedule.warmup=true", "schedule.warmup_until_error=0.99"), tmp_path / "w")
    hist = pd.read_csv(tmp_path / "w" / "metrics.csv")
    assert s["warmup_ended_at"] == 5
    assert hist["lr"].tolist()[:1] == [0.01] and hist["lr"].tolist()[1] == 0.1


@pytest.mark.parametrize(
    "example,depth,residual,shortcut",
    [
        (["model.depth=56", "model.residual=false"], 56, False, "A"),
        (["model.n=18"], 110, True, "A"),
        (["model.shortcut=B"], 8, True, "B"),  # the smoke preset's depth
    ],
)
def test_readme_examples_train(tmp_path, example, depth, residual, shortcut):
    """The README's examples, shortened to two small steps on synthetic data."""
    cfg = smoke_cfg(
        *example, "trainer.batch_size=8", "schedule.iterations=2", "schedule.milestones=[1]"
    )
    s = train(cfg, tmp_path / "run")
    assert (s["depth"], s["residual"], s["status"]) == (depth, residual, "completed")
    assert (
        s["name"]
        == f"{'resnet' if residual else 'plain'}{depth}{'-B' if shortcut == 'B' else ''}-seed0"
    )


def test_failed_start_does_not_lock_the_run_dir(cifar_pickles, tmp_path):
    ov = [
        f"dataset.root={cifar_pickles}",
        "dataset.download=false",
        "dataset.val_size=20",
        "model.num_classes=10",
        "trainer.batch_size=16",
        "schedule.iterations=4",
        "schedule.milestones=[2]",
    ]
    cfg = smoke_cfg("dataset=cifar10", *ov)
    with pytest.raises(DataError, match="data_batch_1 failed its checksum"):
        train(cfg, tmp_path / "run")
    s = train(smoke_cfg("dataset=cifar10", *ov, "dataset.verify=false"), tmp_path / "run")
    assert s["status"] == "completed"


def test_summary_keeps_results_when_resumed_at_the_end(tmp_path):
    run = tmp_path / "run"
    first = train(smoke_cfg(), run)
    summary = json.loads((run / "summary.json").read_text())
    summary["status"] = "interrupted"  # as if killed between the last checkpoint and the summary
    (run / "summary.json").write_text(json.dumps(summary))
    again = train(smoke_cfg(), run)
    assert again["status"] == "completed" and again["final_val_err"] == first["final_val_err"]
    assert (
        again["best_val_err"] == first["best_val_err"]
        and again["images_per_s"] == first["images_per_s"]
    )


def test_record_files_have_the_usual_mode(tmp_path):
    import os
    import stat

    train(smoke_cfg("schedule.iterations=10", "schedule.milestones=[5]"), tmp_path / "run")
    umask = os.umask(0)
    os.umask(umask)
    for f in ("config.yaml", "summary.json", "checkpoint.pt", "metrics.csv"):
        assert stat.S_IMODE((tmp_path / "run" / f).stat().st_mode) == 0o666 & ~umask, f


# --- what a user meets: the console, and a first look that grows into the full run -----------
def test_the_console_names_the_run_directory_at_the_start_and_on_the_done_line(tmp_path):
    r = run_cli(
        "experiment=smoke",
        "trainer.progress=false",
        "schedule.iterations=4",
        "schedule.milestones=[2]",
        "name=look",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out, run_dir = r.stdout + r.stderr, tmp_path / "runs" / "smoke" / "look"
    assert f"Run directory: {run_dir}" in out
    (done,) = [line for line in out.splitlines() if "Done: " in line]
    assert done.endswith(f"Run directory: {run_dir}") and "final_val_err=" in done


def test_a_run_on_synthetic_data_never_imports_torchvision(tmp_path):
    """torchvision (all its datasets, models and ops) is imported to download or verify a dataset's
    files or to build an ImageNet net, not to train the CIFAR nets; the record names its version."""
    import torchvision

    r = run_cli(
        "experiment=smoke",
        "trainer.progress=false",
        "schedule.iterations=4",
        "schedule.milestones=[2]",
        cwd=tmp_path,
        env={"PYTHONPROFILEIMPORTTIME": "1"},
    )  # python -X importtime: each import on stderr
    assert r.returncode == 0, r.stderr[-3000:]
    imported = {
        line.rsplit("|", 1)[-1].strip()
        for line in r.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "torch" in imported and not {m for m in imported if m.split(".")[0] == "torchvision"}
    run = tmp_path / "runs" / "smoke" / "resnet8-seed0,schedule.milestones=[2]"
    s = json.loads((run / "summary.json").read_text())
    assert s["status"] == "completed" and s["versions"]["torchvision"] == torchvision.__version__


def test_the_bar_shows_loss_and_error_from_the_first_step(tmp_path, monkeypatch):
    import resnet_repro.training.train as train_mod

    shown = []
    real = train_mod.show
    monkeypatch.setattr(
        train_mod,
        "show",
        lambda bar, loss, err, lr: shown.append((bar.n, loss, err)) or real(bar, loss, err, lr),
    )
    train(
        smoke_cfg(
            "trainer.progress=true",
            "trainer.log_every=10",
            "schedule.iterations=20",
            "schedule.milestones=[10]",
        ),
        tmp_path / "run",
    )
    assert [n for n, _, _ in shown] == [
        1,
        2,
        4,
        8,
        10,
        20,
    ]  # powers of two before the first log step, then each log
    assert all(loss > 0 and 0 <= err <= 100 for _, loss, err in shown)


def test_a_finished_run_continues_when_only_its_iterations_grow(tmp_path):
    ov = (
        "trainer.log_every=4",
        "trainer.eval_every=8",
    )  # the preset's milestones: 10, 15 of 20 iterations
    full = train(smoke_cfg(*ov), tmp_path / "full")
    look = train(
        smoke_cfg(*ov, "schedule.iterations=8"), tmp_path / "look"
    )  # a first look, milestones unreached
    assert look["status"] == "completed" and look["iterations"] == 8
    longer = train(smoke_cfg(*ov), tmp_path / "look")
    assert (
        longer["status"] == "completed"
        and longer["resumed_from"] == 8
        and longer["iterations"] == 20
    )
    assert longer["started_at"] == look["started_at"] and longer["iterations_total"] == 20
    a = pd.read_csv(tmp_path / "full" / "metrics.csv").drop(columns=TIMING)
    b = pd.read_csv(tmp_path / "look" / "metrics.csv").drop(columns=TIMING)
    pd.testing.assert_frame_equal(a, b)  # the same run as one trained to 20 from the start
    assert longer["final_val_err"] == full["final_val_err"]
    assert (
        yaml.safe_load((tmp_path / "look" / "config.yaml").read_text())["schedule"]["iterations"]
        == 20
    )

    with pytest.raises(
        RunDirError,
        match=r"\(A run continues to more iterations when schedule.iterations is the only key",
    ):
        train(
            smoke_cfg(*ov, "schedule.milestones=[12,16]", "schedule.iterations=30"),
            tmp_path / "look",
        )
    with pytest.raises(RunDirError, match="already holds a run with a different config"):
        train(smoke_cfg(*ov, "schedule.iterations=16"), tmp_path / "look")  # shorter: another run
    for f in ("checkpoint.pt", "checkpoint.prev.pt"):
        (tmp_path / "look" / f).unlink(missing_ok=True)
    with pytest.raises(
        RunDirError,
        match=r"holds a run of 20 iterations, but its checkpoint is gone, so it cannot be "
        r"continued to 30\. Give the longer run its own directory",
    ):
        train(smoke_cfg(*ov, "schedule.iterations=30"), tmp_path / "look")


def test_the_summary_counters_and_times_mean_one_thing_each(tmp_path, monkeypatch):
    ov = ("trainer.log_every=2", "trainer.eval_every=4")
    interrupt_after(monkeypatch, 7)  # stops at 7; the last checkpoint (and evaluation) is at 4
    with pytest.raises(KeyboardInterrupt):
        train(smoke_cfg(*ov), tmp_path / "run")
    monkeypatch.undo()
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (s["iterations"], s["iterations_done"], s["evaluated_at"]) == (
        4,
        7,
        4,
    )  # kept, run, errors from

    interrupt_after(monkeypatch, 3)  # stops before its first checkpoint: nothing kept
    with pytest.raises(KeyboardInterrupt):
        train(smoke_cfg(*ov), tmp_path / "fresh")
    monkeypatch.undo()
    first = json.loads((tmp_path / "fresh" / "summary.json").read_text())
    assert first["iterations"] == 0 and first["iterations_done"] == 3
    (tmp_path / "fresh" / "summary.json").write_text(
        json.dumps({**first, "started_at": "2026-01-01T00:00:00+00:00"})
    )
    again = train(
        smoke_cfg(*ov), tmp_path / "fresh"
    )  # a fresh start (nothing to resume): a new start time
    assert again["resumed_from"] is None and again["started_at"] != "2026-01-01T00:00:00+00:00"


def test_the_recorded_commit_is_the_one_the_process_imported(monkeypatch):
    """A commit made while a sweep runs changes neither the code its later jobs run nor the commit
    they record: git is asked once, when the record module is imported."""
    from resnet_repro.record import run_record as record

    first = record.git_commit()
    monkeypatch.setattr(record.subprocess, "run", lambda *a, **k: pytest.fail("git asked again"))
    assert record.git_commit() == first

"""Nothing lost: kills at any point, torn and hostile checkpoints, full disks, two processes, sweep
reruns.

docs/reliability.md lists every fault tried here and what happened.
"""

from __future__ import annotations

import ast
import errno
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from resnet_repro.errors import CheckpointError, RunDirError
from resnet_repro.training.train import train

from .helpers import HANG_LIMIT_S, REPO, Evil, interrupt_after, run_cli, smoke_cfg, start, wait_for

TIMING = ["time_s", "img_per_s"]


def final_state(run: Path):
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    metrics = pd.read_csv(run / "metrics.csv").drop(columns=TIMING)
    return ckpt, metrics, pd.read_csv(run / "layer_stats.csv")


@pytest.mark.slow
def test_kills_at_random_points_lose_nothing_and_resume_bit_exactly(tmp_path):
    ref = tmp_path / "ref"
    assert start(ref).wait(timeout=HANG_LIMIT_S) == 0
    ref_ckpt, ref_metrics, ref_stats = final_state(ref)

    run, rng = tmp_path / "cut", random.Random(7)
    outcomes = []
    for sig, when in [
        (signal.SIGTERM, "checkpoint write"),
        (signal.SIGKILL, "checkpoint write"),
        (signal.SIGTERM, "anywhere"),
        (signal.SIGKILL, "anywhere"),
        (signal.SIGKILL, "checkpoint write"),
        (signal.SIGKILL, "anywhere"),
    ]:
        left = set(
            run.glob(".checkpoint.pt.*.tmp")
        )  # by an attempt killed mid-write (cleaned up at start)
        p = start(run)
        if when == "checkpoint write":
            assert wait_for(
                lambda p=p, left=left: (
                    bool(set(run.glob(".checkpoint.pt.*.tmp")) - left) or p.poll() is not None
                )
            )
        else:  # from start-up (imports) to the end of training
            time.sleep(rng.uniform(0.0, 7.0))
        p.send_signal(sig)
        rc = p.wait(timeout=HANG_LIMIT_S)
        outcomes.append((sig.name, when, rc))
        if rc == 0:  # it finished before the signal arrived
            break
        if (
            rc == 143
        ):  # SIGTERM while training (preemption): a checkpoint at the very iteration it stopped
            s = json.loads((run / "summary.json").read_text())
            ck = torch.load(run / "checkpoint.pt", weights_only=True)
            assert s["status"] == "interrupted" and ck["iteration"] == s["iterations_done"]
        else:  # SIGKILL anywhere; SIGTERM before training started or after it ended
            assert rc == -sig, p.stderr.read()[-2000:]
    assert outcomes[0][2] == 143 and outcomes[1][2] == -signal.SIGKILL, (
        outcomes
    )  # mid-training, mid-write
    assert start(run).wait(timeout=HANG_LIMIT_S) == 0, outcomes
    ckpt, metrics, stats = final_state(run)
    assert (
        ckpt["iteration"] == 60
        and json.loads((run / "summary.json").read_text())["status"] == "completed"
    )
    assert all(torch.equal(ref_ckpt["model"][k], ckpt["model"][k]) for k in ref_ckpt["model"]), (
        outcomes
    )
    pd.testing.assert_frame_equal(ref_metrics, metrics)
    pd.testing.assert_frame_equal(ref_stats, stats)
    assert not list(run.glob(".*.tmp"))  # a cut-short write leaves nothing behind


@pytest.mark.slow
def test_a_torn_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    run = tmp_path / "run"
    cfg = smoke_cfg("trainer.eval_every=5", "trainer.log_every=5")
    mp = pytest.MonkeyPatch()
    interrupt_after(mp, 12)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, run)
    mp.undo()
    assert torch.load(run / "checkpoint.prev.pt", weights_only=True)["iteration"] == 5
    good = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(good[: len(good) // 2])  # torn
    resumed = train(cfg, run)
    assert resumed["resumed_from"] == 5 and resumed["status"] == "completed"
    assert (
        "Resuming from the previous good checkpoint checkpoint.prev.pt (iteration 5)" in caplog.text
    )
    assert (run / "checkpoint.corrupt.pt").is_file()  # kept for inspection, never loaded again
    full = train(cfg, tmp_path / "full")
    assert resumed["final_val_err"] == full["final_val_err"]


@pytest.mark.slow
def test_a_kill_between_the_two_renames_falls_back_too(tmp_path):
    run = tmp_path / "run"
    cfg = smoke_cfg("trainer.eval_every=5")
    mp = pytest.MonkeyPatch()
    interrupt_after(mp, 12)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, run)
    mp.undo()
    (run / "checkpoint.pt").unlink()  # renamed to .prev, the new one not yet in place
    assert train(cfg, run)["resumed_from"] == 5


@pytest.mark.slow
def test_both_checkpoints_unusable_is_a_clear_error_that_keeps_the_record(tmp_path):
    run = tmp_path / "run"
    train(smoke_cfg(), run)
    for f in ("checkpoint.pt", "checkpoint.prev.pt"):
        (run / f).write_bytes(b"not a checkpoint")
    history = (run / "metrics.csv").read_text()
    with pytest.raises(
        CheckpointError,
        match="checkpoint.pt is truncated or corrupt .* The previous one is unusable too",
    ):
        train(smoke_cfg(), run)
    assert (run / "metrics.csv").read_text() == history


def test_a_malicious_checkpoint_is_refused_and_never_runs(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    target = tmp_path / "written_by_the_checkpoint"
    torch.save({"iteration": 5, "payload": Evil(str(target))}, run / "checkpoint.pt")
    with pytest.raises(
        CheckpointError, match="checkpoint.pt refused: it holds objects that are not tensors"
    ):
        train(smoke_cfg(), run)
    assert not target.exists()


@pytest.mark.slow
def test_a_checkpoint_of_another_config_is_refused_by_name(tmp_path):
    other, run = tmp_path / "other", tmp_path / "run"
    train(smoke_cfg("model.n=2", "model.residual=false"), other)
    train(smoke_cfg("schedule.iterations=10", "schedule.milestones=[5]"), run)
    (run / "checkpoint.pt").write_bytes(
        (other / "checkpoint.pt").read_bytes()
    )  # config.yaml still matches
    with pytest.raises(
        RunDirError,
        match=r"its checkpoint.pt: model.depth: 14 there, 8 now; model.n: 2 there, 1 now; "
        r"model.residual: False there, True now",
    ):
        train(smoke_cfg("schedule.iterations=10", "schedule.milestones=[5]"), run)


@pytest.mark.slow
def test_a_full_disk_is_a_clear_error_and_the_previous_checkpoint_survives(tmp_path, monkeypatch):
    import resnet_repro.record.checkpoint as checkpoint

    run = tmp_path / "run"
    real_save, calls = torch.save, {"n": 0}

    def save(obj, f, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(checkpoint.torch, "save", save)
    with pytest.raises(CheckpointError) as ex:
        train(smoke_cfg("trainer.eval_every=5"), run)
    msg = str(ex.value)
    assert "Cannot write the checkpoint" in msg and "No space left on device" in msg
    assert "Free disk space or make" in msg and "checkpoint.pt from before is intact" in msg
    assert torch.load(run / "checkpoint.pt", weights_only=True)["iteration"] == 5
    assert not list(run.glob(".*.tmp"))
    s = json.loads((run / "summary.json").read_text())
    assert s["status"] == "failed" and "No space left on device" in s["error"]
    monkeypatch.undo()
    assert train(smoke_cfg("trainer.eval_every=5"), run)["resumed_from"] == 5


def test_an_unwritable_run_directory_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(
        RunDirError,
        match="Cannot create the run directory .*afile/run.*Choose a writable hydra.run.dir",
    ):
        train(smoke_cfg(), tmp_path / "afile" / "run")
    run = tmp_path / "run"
    run.mkdir()
    real_access = os.access  # a read-only folder (root may write anywhere, so say it is read-only)
    monkeypatch.setattr(
        os,
        "access",
        lambda p, mode: False if Path(p) == run and mode == os.W_OK else real_access(p, mode),
    )
    with pytest.raises(RunDirError, match="is not writable. Choose a writable hydra.run.dir"):
        train(smoke_cfg(), run)
    assert not any(run.iterdir())


# A process that holds a run's lock until the test lets go (closes its stdin, or kills it): never
# for a fixed time, which a loaded machine's start of the second process could outlast.
HOLD = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.pwrite(fd, f"pid {os.getpid()} on testhost since now".encode(), 0)
print("locked", flush=True)
sys.stdin.read()
"""


def hold(lock: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lock)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_a_second_process_on_the_same_run_refuses_naming_the_holder(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder = hold(run / "run.lock")
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(
            RunDirError, match=rf"is in use by pid {holder.pid} on testhost since now \(run.lock\)"
        ):
            train(smoke_cfg(), run)
        assert not (run / "summary.json").exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder is dead: its kernel lock is gone, and the next run takes over
    assert train(smoke_cfg(), run)["status"] == "completed"


@pytest.mark.slow
def test_a_stale_lock_from_a_killed_process_is_taken_over(tmp_path, caplog):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.lock").write_text("pid 999999 on somehost since 2026-01-01T00:00:00+00:00")
    caplog.set_level(logging.INFO, logger="resnet_repro")
    assert train(smoke_cfg(), run)["status"] == "completed"
    assert "Took over the lock" in caplog.text and "pid 999999 on somehost" in caplog.text
    assert (run / "run.lock").read_text() == ""  # released at the end


@pytest.mark.slow
def test_the_cli_refuses_a_run_directory_in_use(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text("the live run's own\n")
    holder = hold(run / "run.lock")
    try:
        assert holder.stdout.readline().strip() == "locked"
        r = run_cli(
            "experiment=smoke", "trainer.progress=false", f"hydra.run.dir={run}", cwd=tmp_path
        )
    finally:
        holder.kill()
        holder.wait()
    assert r.returncode == 2
    assert (
        r.stderr.strip()
        .splitlines()[-1]
        .startswith(f"resnet-train: error: {run} is in use by pid {holder.pid}")
    )
    assert "Traceback" not in r.stderr
    # refused before Hydra wrote anything: the live run's .hydra/ files are its own
    assert sorted(p.name for p in run.rglob("*")) == [".hydra", "config.yaml", "run.lock"]
    assert (run / ".hydra" / "config.yaml").read_text() == "the live run's own\n"


@pytest.mark.slow
def test_a_rerun_sweep_skips_finished_jobs_resumes_interrupted_ones_and_runs_missing_ones(tmp_path):
    args = ("-m", "experiment=smoke", "trainer.progress=false", "seed=0,1,2")
    assert run_cli(*args, cwd=tmp_path).returncode == 0
    (sweep,) = (tmp_path / "runs" / "smoke").iterdir()
    done, cut, missing = (sweep / f"depth=8,seed={i}" for i in range(3))
    finished_at = json.loads((done / "summary.json").read_text())["finished_at"]
    # job 1: interrupted at iteration 13 (last checkpoint at 10); job 2: never started
    import shutil

    shutil.rmtree(cut)
    shutil.rmtree(missing)
    mp = pytest.MonkeyPatch()
    interrupt_after(mp, 13)
    with pytest.raises(KeyboardInterrupt):
        train(smoke_cfg("seed=1"), cut)
    mp.undo()
    r = run_cli(*args, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    s = [json.loads((d / "summary.json").read_text()) for d in (done, cut, missing)]
    assert s[0]["finished_at"] == finished_at  # left alone
    assert s[1]["resumed_from"] == 10 and s[1]["status"] == "completed"
    assert s[2]["resumed_from"] is None and s[2]["status"] == "completed"
    manifest = pd.read_csv(sweep / "manifest.csv")
    assert manifest["status"].tolist() == ["completed"] * 3


def test_reliability_doc_lists_every_test_here():
    doc = (REPO / "docs" / "reliability.md").read_text()
    faults = ast.parse(Path(__file__).with_name("test_faults.py").read_text())  # read, not imported
    in_faults = [f.name for f in faults.body if isinstance(f, ast.FunctionDef)]
    tests = [
        n
        for n in [*globals(), *in_faults]
        if n.startswith("test_") and n != "test_reliability_doc_lists_every_test_here"
    ]
    missing = [t for t in tests if t not in doc]
    assert not missing, f"docs/reliability.md does not mention {missing}"


def _sigterm_during_step(monkeypatch, step: int):
    """Deliver a real SIGTERM to this process while training step ``step`` runs."""
    from resnet_repro.data.pipeline import DeviceBatches

    real, count = DeviceBatches.next, {"n": 0}

    def next_(self):
        count["n"] += 1
        if count["n"] == step:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self)

    monkeypatch.setattr(DeviceBatches, "next", next_)


@pytest.mark.slow
@pytest.mark.parametrize("step", [10, 12, 20])  # an eval step, a plain step, the last step
def test_sigterm_finishes_the_step_with_its_rows_and_resumes_exactly(tmp_path, monkeypatch, step):
    from resnet_repro.errors import Preempted

    ov = ("trainer.eval_every=5", "trainer.log_every=5", "diagnostics.layer_stats=eval")
    full = train(smoke_cfg(*ov), tmp_path / "full")
    _sigterm_during_step(monkeypatch, step)
    if step == 20:  # the last step: nothing is left to stop, the run just completes
        assert train(smoke_cfg(*ov), tmp_path / "cut")["status"] == "completed"
    else:
        with pytest.raises(
            Preempted, match=f"stopped by SIGTERM at iteration {step}; checkpoint written"
        ):
            train(smoke_cfg(*ov), tmp_path / "cut")
        rows = pd.read_csv(tmp_path / "cut" / "metrics.csv")["iter"].tolist()
        assert rows == [
            i for i in (5, 10, 15, 20) if i <= step
        ]  # the interrupted step's row is there
        monkeypatch.undo()
        assert train(smoke_cfg(*ov), tmp_path / "cut")["resumed_from"] == step
    for f in ("metrics.csv", "layer_stats.csv"):
        a, b = pd.read_csv(tmp_path / "full" / f), pd.read_csv(tmp_path / "cut" / f)
        pd.testing.assert_frame_equal(
            a.drop(columns=TIMING, errors="ignore"), b.drop(columns=TIMING, errors="ignore")
        )
    assert (
        json.loads((tmp_path / "cut" / "summary.json").read_text())["final_val_err"]
        == full["final_val_err"]
    )


@pytest.mark.slow
def test_results_come_from_the_checkpoint_not_from_a_lagging_summary(tmp_path):
    run = tmp_path / "run"
    full = train(smoke_cfg(), run)
    # a kill after the final checkpoint but before the summary was written leaves an older summary
    stale = {**full, "status": "running", "final_val_err": 99.0, "best_val_err": 99.0}
    (run / "summary.json").write_text(json.dumps(stale))
    again = train(smoke_cfg(), run)
    assert again["status"] == "completed"
    assert (
        again["final_val_err"] == full["final_val_err"]
        and again["best_val_err"] == full["best_val_err"]
    )


@pytest.mark.slow
def test_a_filesystem_without_file_locks_runs_with_a_warning(tmp_path, monkeypatch, caplog):
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    assert train(smoke_cfg(), tmp_path / "run")["status"] == "completed"
    assert "this filesystem has no file locks" in caplog.text


@pytest.mark.slow
def test_an_interrupted_run_accounts_its_time_up_to_the_stop(tmp_path, monkeypatch):
    """Time since the last log row is not lost at a stop: each step takes one second of a fake
    clock; stopped at step 12 (last row at 10), the record says 12 s, and once resumed to the end
    20 s."""
    from resnet_repro.data.pipeline import DeviceBatches
    from resnet_repro.errors import Preempted
    from resnet_repro.training import train as train_mod

    now = {"t": 1000.0}
    real = DeviceBatches.next
    ov = ("trainer.log_every=5", "trainer.eval_every=5")

    def next_(self):
        now["t"] += 1.0
        return real(self)

    monkeypatch.setattr(DeviceBatches, "next", next_)
    monkeypatch.setattr(train_mod, "clock", lambda: now["t"])
    _sigterm_during_step(monkeypatch, 12)  # on top: the fake clock's step, then the signal
    with pytest.raises(Preempted):
        train(smoke_cfg(*ov), tmp_path / "run")
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert s["status"] == "interrupted" and ck["iteration"] == s["iterations"] == 12
    assert s["train_time_s"] == s["wall_time_s"] == 12.0 and s["images_per_s"] == 12 * 32 / 12.0
    assert ck["elapsed_s"] == ck["train_time_s"] == 12.0
    monkeypatch.setattr(DeviceBatches, "next", next_)  # the clock without the signal
    done = train(smoke_cfg(*ov), tmp_path / "run")
    assert done["status"] == "completed" and done["resumed_from"] == 12
    assert done["train_time_s"] == done["wall_time_s"] == 20.0
    assert done["images_per_s"] == 20 * 32 / 20.0
    assert pd.read_csv(tmp_path / "run" / "metrics.csv")["time_s"].tolist() == [
        5.0,
        10.0,
        15.0,
        20.0,
    ]

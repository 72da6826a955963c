"""A hostile user's campaign: lost checkpoints, real full and read-only disks, odd files, Ctrl-C,
bad values, an unreachable W&B. Nothing recorded is lost; every refusal is one line, before any
work.

docs/reliability.md lists every case here, its test and its outcome.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from resnet_repro.errors import CheckpointError
from resnet_repro.training.train import train

from .helpers import HANG_LIMIT_S, Evil, interrupt_after, run_cli, smoke_cfg, start, wait_for

SMOKE = ("experiment=smoke", "trainer.progress=false")
RECORD = (
    "config.yaml",
    "metrics.csv",
    "summary.json",
    "layer_stats.csv",
    ".hydra/config.yaml",
    ".hydra/overrides.yaml",
)


def snapshot(run: Path) -> dict[str, bytes]:
    return {f: (run / f).read_bytes() for f in RECORD if (run / f).is_file()}


def one_line_error(r: subprocess.CompletedProcess, rc: int = 2) -> str:
    """The CLI failed with ``rc`` and one line, no traceback; return that line."""
    assert r.returncode == rc, r.stderr[-3000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    return r.stderr.strip().splitlines()[-1]


def interrupted_run(run: Path, monkeypatch, *ov: str) -> None:
    """A smoke run stopped after step 12: checkpoints at 5 (previous) and 10 (last)."""
    interrupt_after(monkeypatch, 12)
    with pytest.raises(KeyboardInterrupt):
        train(smoke_cfg("trainer.eval_every=5", *ov), run)
    monkeypatch.undo()


# --- data loss ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_deleted_checkpoints_never_let_another_run_overwrite_the_record(tmp_path):
    run = tmp_path / "run"
    at = f"hydra.run.dir={run}"
    assert run_cli(*SMOKE, at, cwd=tmp_path).returncode == 0
    for f in run.glob("checkpoint*.pt"):
        f.unlink()  # to save space
    before = snapshot(run)

    line = one_line_error(run_cli(*SMOKE, at, "seed=1", cwd=tmp_path))
    assert (
        "already holds a run with a different config (its config.yaml: " in line
        and "seed: 0 there, 1 now" in line
    )
    assert snapshot(run) == before  # Hydra's .hydra/ files too: refused before Hydra wrote them

    (run / "config.yaml").unlink()
    before = snapshot(run)
    line = one_line_error(run_cli(*SMOKE, at, "seed=1", cwd=tmp_path))
    assert "(its summary.json: seed: 0 there, 1 now)" in line
    assert snapshot(run) == before

    r = run_cli(*SMOKE, at, cwd=tmp_path)  # the same command: complete, and it says what is missing
    assert r.returncode == 0, r.stderr[-3000:]
    assert (
        "is already complete (20 iterations); its checkpoint is gone, so it can be read but not "
        "extended" in r.stdout
    )
    assert {f: before[f] for f in ("metrics.csv", "summary.json")} == {
        f: snapshot(run)[f] for f in ("metrics.csv", "summary.json")
    }

    s = json.loads((run / "summary.json").read_text())
    s["status"] = (
        "interrupted"  # a run stopped at iteration 20 of a longer one, its checkpoints deleted
    )
    (run / "summary.json").write_text(json.dumps(s))
    before = snapshot(run)
    line = one_line_error(run_cli(*SMOKE, at, cwd=tmp_path))
    assert (
        "holds 20 trained iterations (summary.json, metrics.csv) but no checkpoint to resume from"
        in line
    )
    assert "move the directory aside first" in line and snapshot(run) == before


@pytest.mark.slow
def test_a_checkpoint_path_that_is_a_directory_is_refused_naming_it(tmp_path):
    run = tmp_path / "run"
    assert (
        run_cli(
            *SMOKE,
            "schedule.iterations=10",
            "schedule.milestones=[5]",
            f"hydra.run.dir={run}",
            cwd=tmp_path,
        ).returncode
        == 0
    )
    (run / "checkpoint.pt").unlink()
    (run / "checkpoint.pt").mkdir()
    before = snapshot(run)
    for _ in range(2):  # and again: no temp file, no other advice the second time
        line = one_line_error(run_cli(*SMOKE, f"hydra.run.dir={run}", cwd=tmp_path))
        assert line == (
            f"resnet-train: error: {run}/checkpoint.pt is a directory, not a checkpoint file. Move "
            f"it aside (a run's checkpoint is a file); nothing was changed."
        )
        assert snapshot(run) == before and not list(run.glob(".*.tmp"))


# --- tracebacks where one line is promised ------------------------------------------------------


@pytest.mark.slow
def test_a_zero_byte_checkpoint_falls_back_to_the_previous_one(tmp_path, monkeypatch, caplog):
    run = tmp_path / "run"
    interrupted_run(run, monkeypatch)
    (run / "checkpoint.pt").write_bytes(b"")
    caplog.set_level(logging.WARNING, logger="resnet_repro")
    s = train(smoke_cfg("trainer.eval_every=5"), run)
    assert s["status"] == "completed" and s["resumed_from"] == 5
    assert (
        "checkpoint.pt is empty (0 bytes): its write was cut short. Resuming from the previous "
        "good checkpoint checkpoint.prev.pt (iteration 5)." in caplog.text
    )
    assert (run / "checkpoint.corrupt.pt").stat().st_size == 0  # kept for inspection


@pytest.mark.slow
@pytest.mark.parametrize("missing", [("config",), ("model",), ("config", "model")])
def test_a_checkpoint_without_its_config_or_model_is_one_clear_error(
    tmp_path, monkeypatch, missing
):
    run = tmp_path / "run"
    interrupted_run(run, monkeypatch)
    for f in ("checkpoint.pt", "checkpoint.prev.pt"):
        ck = torch.load(run / f, weights_only=True)
        for k in missing:
            del ck[k]
        torch.save(ck, run / f)
    history = (run / "metrics.csv").read_bytes()
    with pytest.raises(CheckpointError) as e:
        train(smoke_cfg("trainer.eval_every=5"), run)
    assert (
        f"checkpoint.pt is incomplete: it has no {', '.join(missing)}. The previous one is "
        f"unusable too" in str(e.value)
    )
    assert (run / "metrics.csv").read_bytes() == history


@pytest.mark.parametrize("payload", ["os.system", "pathlib"])
def test_a_checkpoint_the_safe_loader_refuses_is_named_as_refused(tmp_path, payload):
    run, target = tmp_path / "run", tmp_path / "written_by_the_checkpoint"
    run.mkdir()

    class System:  # unpickling would run a shell command
        def __reduce__(self):
            return (os.system, (f"touch {target}",))

    evil = System() if payload == "os.system" else Evil(str(target))
    torch.save({"iteration": 5, "payload": evil}, run / "checkpoint.pt")
    with pytest.raises(CheckpointError) as e:
        train(smoke_cfg(), run)
    msg = str(e.value)
    named = f"{os.system.__module__}.system" if payload == "os.system" else ""
    assert f"checkpoint.pt refused: it holds objects that are not tensors ({named}" in msg
    assert "; it was not loaded." in msg
    assert "weights_only" not in msg and "\x1b" not in msg and "truncated" not in msg
    assert not target.exists()


@pytest.mark.slow
def test_a_config_yaml_holding_a_python_tag_is_one_line_and_never_runs(tmp_path):
    run, target = tmp_path / "run", tmp_path / "written_by_the_config"
    assert (
        run_cli(
            *SMOKE,
            "schedule.iterations=10",
            "schedule.milestones=[5]",
            f"hydra.run.dir={run}",
            cwd=tmp_path,
        ).returncode
        == 0
    )
    (run / "config.yaml").write_text(f'model: !!python/object/apply:os.system ["touch {target}"]\n')
    before = snapshot(run)
    line = one_line_error(run_cli(*SMOKE, f"hydra.run.dir={run}", cwd=tmp_path))
    assert (
        f"{run}/config.yaml cannot be read as a config (ConstructorError: could not determine a "
        "constructor for the tag" in line
    )
    assert "nothing was changed" in line and snapshot(run) == before and not target.exists()


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize(
    "argv",
    [
        ("trainer.device=cuda",),
        ("trainer.device=cuda:1",),
        ("-m", "trainer.device=cuda", "seed=0,1"),
    ],
)
def test_a_missing_cuda_device_is_refused_before_any_directory_exists(tmp_path, argv):
    multirun = argv[0] == "-m"
    r = (
        run_cli(*argv[:1], *SMOKE, *argv[1:], cwd=tmp_path)
        if multirun
        else run_cli(*SMOKE, *argv, cwd=tmp_path)
    )
    line = one_line_error(r)
    device = argv[1] if multirun else argv[0]
    assert (
        f"resnet-train: error: {device} but no CUDA device is available. Use trainer.device=cpu or "
        f"auto." in line
    )
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_ctrl_c_finishes_the_step_checkpoints_and_resumes_exactly(tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "cut"
    assert start(ref).wait(timeout=HANG_LIMIT_S) == 0
    p = start(run)
    assert wait_for(
        lambda: (
            (run / "metrics.csv").is_file()
            and len((run / "metrics.csv").read_text().splitlines()) > 3
            or p.poll() is not None
        )
    )
    p.send_signal(signal.SIGINT)
    rc = p.wait(timeout=HANG_LIMIT_S)
    err = p.stderr.read()
    assert rc == 130 and "Traceback" not in err, err[-3000:]
    s = json.loads((run / "summary.json").read_text())
    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    assert err.strip().splitlines()[-1] == (
        f"resnet-train: stopped by SIGINT (Ctrl-C) at iteration {ck['iteration']}; checkpoint "
        f"written to {run}/checkpoint.pt. Rerun the same command to resume."
    )
    assert s["status"] == "interrupted" and s["iterations_done"] == ck["iteration"] < 60
    assert start(run).wait(timeout=HANG_LIMIT_S) == 0
    a, b = (torch.load(d / "checkpoint.pt", weights_only=True)["model"] for d in (ref, run))
    assert all(torch.equal(a[k], b[k]) for k in a)  # deterministic: bit-identical to an uncut run


# --- real full and read-only disks --------------------------------------------------------------


def _namespace_available() -> bool:
    try:
        return (
            subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=60).returncode
            == 0
        )
    except (OSError, subprocess.SubprocessError):
        return False


needs_mounts = pytest.mark.skipif(
    not _namespace_available(),
    reason="needs `unshare -rm` (a user namespace) to mount a small tmpfs",
)


def in_namespace(script: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run a bash script as root of its own user and mount namespace: its mounts are its own."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PY": sys.executable}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        ["unshare", "-rm", "bash", "-euc", script],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=HANG_LIMIT_S,
        env=env,
    )


TRAIN = '"$PY" -m resnet_repro.cli experiment=smoke trainer.progress=false trainer.eval_every=5'


@pytest.mark.slow
@needs_mounts
@pytest.mark.parametrize(
    "size_k", [1500, 1700, 1900]
)  # the space runs out in different places of torch.save
def test_a_disk_that_fills_during_a_checkpoint_is_one_line_and_the_rerun_resumes(tmp_path, size_k):
    r = in_namespace(
        f"""
        mkdir disk out && mount -t tmpfs -o size={size_k}k tmpfs disk
        set +e; {TRAIN} hydra.run.dir=disk/run > out/1.out 2> out/1.err; echo $? > out/1.rc; set -e
        cp -a disk/run out/full
        mount -o remount,size=8m disk   # space freed
        set +e; {TRAIN} hydra.run.dir=disk/run > out/2.out 2> out/2.err; echo $? > out/2.rc
    """,
        tmp_path,
    )
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    err = (out / "1.err").read_text()
    assert (out / "1.rc").read_text().strip() == "2" and "Traceback" not in err, err[-3000:]
    line = err.strip().splitlines()[-1]
    assert line.startswith(
        f"resnet-train: error: Cannot write the checkpoint {tmp_path}/disk/run/checkpoint.pt ("
    )
    assert "Free disk space or make" in line and "from before" in line and "intact" in line
    full = out / "full"
    done = torch.load(full / "checkpoint.pt", weights_only=True)["iteration"]
    s = json.loads((full / "summary.json").read_text())
    assert (
        s["status"] == "failed"
        and "Cannot write the checkpoint" in s["error"]
        and done in (5, 10, 15)
    )
    assert not list(full.glob(".*.tmp"))
    assert (out / "2.rc").read_text().strip() == "0", (out / "2.err").read_text()[-3000:]
    assert (
        f"Resuming {tmp_path}/disk/run from iteration {done}"
        in (out / "2.err").read_text() + (out / "2.out").read_text()
    )


@pytest.mark.slow
@needs_mounts
def test_a_full_or_read_only_disk_at_start_is_one_line_and_writes_nothing(tmp_path):
    (tmp_path / "afile").write_text("x")
    r = in_namespace(
        f"""
        mkdir disk out && mount -t tmpfs -o size=256k tmpfs disk
        mkdir disk/runs && dd if=/dev/zero of=disk/fill bs=4k 2>/dev/null || true
        set +e; {TRAIN} hydra.run.dir=disk/runs/run > out/full.out 2> out/full.err; \
echo $? > out/full.rc
        ls -A disk/runs > out/full.ls
        rm disk/fill && mount -o remount,ro disk
        {TRAIN} hydra.run.dir=disk/runs/run > out/ro.out 2> out/ro.err; echo $? > out/ro.rc
        ls -A disk/runs > out/ro.ls
        {TRAIN} hydra.run.dir=afile/run > out/file.out 2> out/file.err; echo $? > out/file.rc
    """,
        tmp_path,
    )
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    expected = {
        "full": f"resnet-train: error: Cannot write the run directory disk/runs/run (its parent "
        f"{tmp_path}/disk/runs): No space left on device. Free disk space there, or run elsewhere "
        f"(hydra.run.dir=<dir>); nothing was written.",
        "ro": f"resnet-train: error: Cannot write the run directory disk/runs/run (its parent "
        f"{tmp_path}/disk/runs): Read-only file system. Choose a writable hydra.run.dir, or run "
        f"elsewhere (hydra.run.dir=<dir>); nothing was written.",
        "file": f"resnet-train: error: Cannot create the run directory afile/run: {tmp_path}/afile "
        f"is a file. Choose another hydra.run.dir (or name=<new name>).",
    }
    for case, line in expected.items():
        err = (out / f"{case}.err").read_text()
        assert (out / f"{case}.rc").read_text().strip() == "2" and "Traceback" not in err, (
            case,
            err[-3000:],
        )
        assert err.strip().splitlines()[-1] == line, case
    assert (
        (out / "full.ls").read_text() == (out / "ro.ls").read_text() == ""
    )  # no run directory, no .hydra/


# --- accepted when it should be refused ----------------------------------------------------------


@pytest.mark.slow
def test_a_preset_run_shorter_than_its_milestones_warns_naming_them(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="resnet_repro")
    s = train(
        smoke_cfg("schedule.iterations=8", "trainer.eval_every=4"), tmp_path / "run"
    )  # the preset's [10, 15]
    assert s["status"] == "completed"
    assert (
        "schedule.milestones=[10, 15]: 10, 15 are past schedule.iterations=8, so the lr never "
        "drops there. This run is not the paper's schedule." in caplog.text
    )


# --- faults that cost time -----------------------------------------------------------------------


@pytest.fixture
def silent_wandb_server():
    """A W&B address that accepts connections and never answers (a network that swallows
    packets)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []

    def accept():
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()
    for c in held:
        c.close()


@pytest.mark.slow
def test_an_unreachable_wandb_costs_one_bounded_wait_per_sweep(tmp_path, silent_wandb_server):
    env = {"WANDB_BASE_URL": silent_wandb_server, "WANDB_API_KEY": "x" * 40, "WANDB_SILENT": "true"}
    r = run_cli(
        "-m",
        *SMOKE,
        "schedule.iterations=10",
        "schedule.milestones=[5]",
        "logger=wandb",
        "logger.mode=online",
        "logger.init_timeout=3",
        "seed=0,1,2",
        cwd=tmp_path,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (sweep,) = (tmp_path / "runs" / "smoke").iterdir()
    summaries = [
        json.loads((sweep / f"depth=8,seed={i}" / "summary.json").read_text()) for i in range(3)
    ]
    assert all(s["status"] == "completed" for s in summaries)
    first = summaries[0]["wandb"]["error"]
    assert first.startswith("W&B failed at start: CommError")
    assert (sweep / "wandb_unreachable.txt").read_text().strip() == first
    for s in summaries[1:]:  # the others did not wait again, and say why
        assert (
            s["wandb"]["error"]
            == f"W&B skipped: an earlier job of this sweep could not start it ({first})"
        )


@pytest.mark.slow
def test_the_wandb_start_wait_is_bounded_by_logger_init_timeout(tmp_path, monkeypatch):
    import wandb

    seen = []

    def init(**kw):
        seen.append(kw["settings"].init_timeout)
        raise wandb.errors.CommError("Timed out initializing run")

    monkeypatch.setattr(wandb, "init", init)
    s = train(
        smoke_cfg(
            "logger=wandb",
            "logger.init_timeout=7",
            "schedule.iterations=5",
            "schedule.milestones=[]",
            "trainer.eval_every=5",
        ),
        tmp_path / "run",
    )
    assert seen == [7.0] and s["status"] == "completed"
    assert s["wandb"]["error"] == "W&B failed at start: CommError: Timed out initializing run"


@pytest.mark.slow
def test_the_start_check_leaves_nothing_behind(tmp_path):
    """The probe file a start writes to check its run directory never stays behind."""
    run = tmp_path / "runs" / "run"
    assert (
        run_cli(
            *SMOKE,
            "schedule.iterations=5",
            "schedule.milestones=[]",
            "trainer.eval_every=5",
            f"hydra.run.dir={run}",
            cwd=tmp_path,
        ).returncode
        == 0
    )
    assert not list(tmp_path.rglob(".resnet_repro-probe.*"))


@pytest.mark.slow
@pytest.mark.parametrize(
    "planted", [b"PK\x03\x04 not a checkpoint", None]
)  # garbage; a foreign pickle
def test_a_planted_checkpoint_in_a_fresh_folder_is_refused_and_the_folder_left_as_it_was(
    tmp_path, planted
):
    """A folder holding only a checkpoint nobody trained here: refused in one line saying nothing
    was changed, and true: no .hydra/, train.log or run.lock is left beside the planted file."""
    run = tmp_path / "run"
    run.mkdir()
    if planted is None:
        torch.save({"iteration": 3, "model": Evil(str(tmp_path / "pwned"))}, run / "checkpoint.pt")
    else:
        (run / "checkpoint.pt").write_bytes(planted)
    before = snapshot(run)
    r = run_cli(*SMOKE, f"hydra.run.dir={run}", cwd=tmp_path)
    line = r.stderr.strip().splitlines()[-1]
    assert (
        r.returncode == 2
        and line.startswith("resnet-train: error: ")
        and "nothing was changed" in line
    ), r.stderr[-2000:]
    assert snapshot(run) == before and sorted(p.name for p in run.iterdir()) == ["checkpoint.pt"]
    assert not (tmp_path / "pwned").exists()

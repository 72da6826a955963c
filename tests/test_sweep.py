"""Sweeps: presets, job names, the manifest, launchers, failures, and the W&B mirror."""

import glob
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from hydra_plugins.resnet_repro_sweeper.resnet_sweeper import ResnetSweeper
from resnet_repro.sweeps.sweep import MANIFEST_COLUMNS, Manifest, job_name, job_names

from . import wandb_file
from .helpers import HANG_LIMIT_S, run_cli

TINY = [
    "experiment=smoke",
    "trainer.progress=false",
    "trainer.batch_size=8",
    "schedule.iterations=4",
    "schedule.milestones=[2]",
    "trainer.log_every=2",
    "trainer.eval_every=4",
]


def test_job_names_show_depth_and_overrides():
    assert (
        job_name(["model.depth=56", "model.residual=false", "seed=1"])
        == "depth=56,residual=false,seed=1"
    )
    assert job_name(["model.n=9", "seed=0"]) == "depth=56,seed=0"
    assert (
        job_name(["seed=2", "experiment=degradation", "trainer.device=cuda"], n=None, depth=110)
        == "depth=110,seed=2"
    )
    assert job_name(["dataset.root=/data/x", "optimizer.lr=0.05"], n=1) == "depth=8,lr=0.05"


def _expand(params, exclude, *cli):
    sweeper = ResnetSweeper(params=params, exclude=exclude)
    ov = [f"{k}={v}" for k, v in params.items()] + list(cli)
    return [
        job
        for batch in sweeper.split_arguments(OverridesParser.create().parse_overrides(ov), None)
        for job in batch
    ]


def test_degradation_preset_is_the_nine_runs_of_figure_6():
    import yaml

    preset = yaml.safe_load(
        (Path(__file__).parents[1] / "conf/experiment/degradation.yaml").read_text()
    )
    sweeper = preset["hydra"]["sweeper"]
    jobs = _expand(sweeper["params"], sweeper["exclude"])
    names = sorted(job_name(j) for j in jobs)
    expected = [f"depth={d},residual={r}" for d in (20, 32, 44, 56) for r in ("false", "true")] + [
        "depth=110,residual=true"
    ]
    assert names == sorted(expected)
    narrowed = _expand(sweeper["params"], sweeper["exclude"], "model.depth=20,56", "seed=0,1")
    assert len(narrowed) == 8 and all("model.depth=110" not in j for j in narrowed)
    one = _expand(sweeper["params"], sweeper["exclude"], "model.depth=56", "model.residual=false")
    assert job_names(one, [56], axes=sweeper["params"]) == [
        "depth=56,residual=false"
    ]  # not a bare depth=56
    both = _expand(sweeper["params"], sweeper["exclude"], "model.depth=20,56")
    assert job_names(both, [20, 20, 56, 56], axes=sweeper["params"]) == job_names(
        both, [20, 20, 56, 56]
    )


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "joblib", "submitit_local"])
def test_four_job_multirun_through_each_launcher(tmp_path, launcher):
    extra = {
        "basic": [],
        "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
        "submitit_local": [
            "hydra/launcher=submitit_local",  # a job's limit: the hang bound, not a tighter one
            f"hydra.launcher.timeout_min={HANG_LIMIT_S // 60}",
        ],
    }[launcher]
    r = run_cli(
        "-m", *TINY, "model.depth=8,14", "seed=0,1", *extra, cwd=tmp_path, timeout=HANG_LIMIT_S
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (sweep,) = (tmp_path / "runs" / "smoke").iterdir()
    manifest = pd.read_csv(sweep / "manifest.csv")
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert sorted(manifest["name"]) == sorted(
        f"depth={d},seed={s}" for d in (8, 14) for s in (0, 1)
    )
    assert (manifest["status"] == "completed").all() and manifest["final_err"].notna().all()
    assert manifest["error"].isna().all() and manifest["finished_at"].notna().all()
    for row in manifest.itertuples():
        run = Path(row.run_dir)
        assert run.parent == sweep and run.name == row.name
        s = json.loads((run / "summary.json").read_text())
        assert (
            s["status"] == "completed"
            and s["iterations"] == 4
            and s["final_val_err"] == row.final_err
        )
        assert len(pd.read_csv(run / "metrics.csv")) == 2
        for f in ("config.yaml", "checkpoint.pt"):
            assert (run / f).is_file()


@pytest.mark.slow
def test_a_diverging_job_is_marked_and_the_others_finish(tmp_path):
    r = run_cli("-m", *TINY, "optimizer.lr=1e30,0.1,0.05", cwd=tmp_path, timeout=HANG_LIMIT_S)
    assert r.returncode == 2
    assert "resnet-train: error: training diverged at iteration 2" in r.stderr
    (sweep,) = (tmp_path / "runs" / "smoke").iterdir()
    m = pd.read_csv(sweep / "manifest.csv").set_index("name")
    assert m.loc["depth=8,lr=1e+30", "status"] == "diverged"
    assert "diverged at iteration 2" in m.loc["depth=8,lr=1e+30", "error"]
    assert (m.drop("depth=8,lr=1e+30")["status"] == "completed").all()


@pytest.mark.slow
def test_a_bad_job_stops_the_sweep_before_anything_runs(tmp_path):
    r = run_cli("-m", *TINY, "model.depth=8,15", cwd=tmp_path)
    assert r.returncode == 2
    assert (
        "model.depth=15 is not a CIFAR ResNet depth" in r.stderr
        and "no job was started" in r.stderr
    )
    assert not (tmp_path / "runs").exists()


def test_manifest_lists_pending_jobs_and_takes_their_outcomes(tmp_path):
    m = Manifest(tmp_path)
    m.set_jobs([{"name": "a", "overrides": "seed=0"}, {"name": "b", "overrides": "seed=1"}])
    assert pd.read_csv(tmp_path / "manifest.csv")["status"].tolist() == ["pending", "pending"]
    for name, summary in (
        ("a", {"status": "completed", "final_val_err": 9.5}),
        ("b", {"status": "running"}),
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(summary))
    m.end_jobs({0: None, 1: None})
    rows = pd.read_csv(tmp_path / "manifest.csv")
    assert rows["status"].tolist() == ["completed", "running"] and rows["final_err"].iloc[0] == 9.5


def _offline_run(run_dir: Path) -> Path:
    (f,) = glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb"))
    return Path(f)


def _assert_wandb_mirrors_local(run: Path, files: list[Path] | None = None):
    """W&B's history equals metrics.csv row by row, at each row's ``iter`` (W&B's x-axis).

    Over several files (a run that started again), in write order: an iteration logged twice, the
    span a hard kill made the run train again, counts as its later row."""
    hist = pd.read_csv(run / "metrics.csv")
    logged = {}
    for f in files or [_offline_run(run)]:
        for _, items in wandb_file.history(f):
            logged[items["iter"]] = items
    assert list(logged) == hist["iter"].tolist()
    for (it, items), (_, row) in zip(logged.items(), hist.iterrows(), strict=True):
        expected = {k: v for k, v in row.items() if pd.notna(v)}
        assert items.keys() == expected.keys(), it
        for k, v in expected.items():
            assert items[k] == pytest.approx(v, rel=0, abs=0), (it, k)


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_wandb_offline_history_equals_the_local_metrics(tmp_path, launcher):
    extra = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"] if launcher == "joblib" else []
    r = run_cli(
        "-m",
        *TINY,
        "logger=wandb",
        "logger.mode=offline",
        "logger.tags=[smoke,test]",
        "seed=0,1",
        *extra,
        cwd=tmp_path,
        timeout=HANG_LIMIT_S,
        env={"WANDB_SILENT": "true"},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (sweep,) = (tmp_path / "runs" / "smoke").iterdir()
    ids = set()
    for run in sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")):
        _assert_wandb_mirrors_local(run)
        info = wandb_file.run_info(_offline_run(run))
        s = json.loads((run / "summary.json").read_text())
        assert (
            info["name"] == run.name
            and info["group"] == f"smoke-{sweep.name}"
            and info["job_type"] == "smoke"
        )
        assert info["tags"] == ["smoke", "test"] and info["config"]["model"]["depth"] == 8
        assert info["id"] == (run / "wandb_run_id.txt").read_text().strip() == s["wandb"]["run_id"]
        assert s["wandb"]["error"] is None
        files = _offline_run(run).parent / "files" / run.name  # the record's files, byte for byte
        for name in ("config.yaml", "summary.json", "metrics.csv", "layer_stats.csv"):
            assert (files / name).read_bytes() == (run / name).read_bytes(), name
        ids.add(info["id"])
    assert len(ids) == 2  # one W&B run per job


@pytest.mark.slow
def test_each_run_of_a_stack_has_its_own_wandb_run(tmp_path):
    r = run_cli(
        "-m",
        *TINY,
        "logger=wandb",
        "logger.mode=offline",
        "seed=0,1",
        "model.residual=true,false",
        "trainer.stack=4",
        cwd=tmp_path,
        timeout=HANG_LIMIT_S,
        env={"WANDB_SILENT": "true"},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (sweep,) = (tmp_path / "runs" / "smoke").iterdir()
    runs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    ids = set()
    for run in runs:  # four runs trained as one net, four W&B runs, each mirroring its own record
        _assert_wandb_mirrors_local(run)
        info = wandb_file.run_info(_offline_run(run))
        s = json.loads((run / "summary.json").read_text())
        assert s["stack"]["size"] == 4 and s["wandb"]["error"] is None
        assert info["name"] == run.name and info["config"]["model"]["residual"] == s["residual"]
        assert info["id"] == s["wandb"]["run_id"]
        ids.add(info["id"])
    assert len(runs) == len(ids) == 4


@pytest.mark.slow
def test_wandb_failing_mid_run_leaves_a_complete_local_record(tmp_path, monkeypatch):
    import wandb

    from resnet_repro.training.train import train

    from .helpers import smoke_cfg

    real_init = wandb.init

    def init(*a, **kw):
        run = real_init(*a, **kw)
        calls = {"n": 0}
        real_log = run.log

        def log(*la, **lkw):
            calls["n"] += 1
            if calls["n"] > 1:
                raise ConnectionError("W&B is unreachable")
            return real_log(*la, **lkw)

        run.log = log
        return run

    monkeypatch.setattr(wandb, "init", init)
    monkeypatch.setenv("WANDB_SILENT", "true")
    s = train(smoke_cfg("logger=wandb", "logger.mode=offline"), tmp_path / "run")
    assert s["status"] == "completed" and s["iterations"] == 20
    assert "ConnectionError: W&B is unreachable" in s["wandb"]["error"]
    hist = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert hist["iter"].tolist() == [5, 10, 15, 20] and hist["val_err"].notna().sum() == 2
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (
        on_disk["wandb"]["error"] == s["wandb"]["error"]
        and on_disk["final_val_err"] == s["final_val_err"]
    )


@pytest.mark.slow
def test_wandb_failing_at_start_is_noted_and_training_goes_on(tmp_path, monkeypatch):
    import wandb

    from resnet_repro.training.train import train

    from .helpers import smoke_cfg

    def init(*a, **kw):
        raise wandb.errors.UsageError("api_key not configured (no-tty)")

    monkeypatch.setattr(wandb, "init", init)
    s = train(smoke_cfg("logger=wandb", "logger.mode=online"), tmp_path / "run")
    assert s["status"] == "completed" and "api_key not configured" in s["wandb"]["error"]


@pytest.mark.slow
def test_resume_continues_the_same_wandb_run(tmp_path, monkeypatch):
    from resnet_repro.training.train import train

    from .helpers import interrupt_after, smoke_cfg

    monkeypatch.setenv("WANDB_SILENT", "true")
    ov = ("logger=wandb", "logger.mode=offline")
    interrupt_after(monkeypatch, 12)
    with pytest.raises(KeyboardInterrupt):
        train(smoke_cfg(*ov), tmp_path / "run")
    monkeypatch.undo()
    first_id = (tmp_path / "run" / "wandb_run_id.txt").read_text().strip()
    s = train(smoke_cfg(*ov), tmp_path / "run")
    assert s["wandb"]["run_id"] == first_id and s["resumed_from"] == 10
    # in write order: W&B names a second attempt started within the same second "<dir>-1", which
    # sorts before "<dir>" by name
    files = sorted(
        glob.glob(str(tmp_path / "run" / "wandb" / "offline-run-*" / "run-*.wandb")),
        key=os.path.getmtime,
    )
    assert len(files) == 2 and all(Path(f).name == f"run-{first_id}.wandb" for f in files)
    iters = [items["iter"] for f in files for _, items in wandb_file.history(f)]
    assert iters[-2:] == [15, 20]
    _assert_wandb_mirrors_local(tmp_path / "run", [Path(f) for f in files])


@pytest.mark.slow
def test_a_hard_killed_run_resumed_leaves_wandb_equal_to_its_metrics(tmp_path):
    """SIGKILL after the first checkpoints: the rerun trains the lost span again and logs it again;
    W&B keeps every row (iter is a logged value, not W&B's step, which would drop them)."""
    from .helpers import start, wait_for

    run = tmp_path / "run"
    wandb = ("logger=wandb", "logger.mode=offline", "trainer.eval_every=20")
    p = start(run, *wandb)
    assert wait_for(
        lambda: (
            (run / "metrics.csv").is_file()
            and len((run / "metrics.csv").read_text().splitlines()) > 6
            or p.poll() is not None
        )
    )
    p.kill()
    assert p.wait(timeout=HANG_LIMIT_S) == -signal.SIGKILL, "the run ended before it was killed"
    killed_at = len(pd.read_csv(run / "metrics.csv"))
    p = start(run, *wandb)
    _, err = p.communicate(timeout=HANG_LIMIT_S)
    assert p.returncode == 0, err[-3000:]
    s = json.loads((run / "summary.json").read_text())
    assert s["status"] == "completed" and 0 < s["resumed_from"] <= 5 * killed_at
    # in write order; a hard kill can lose the first attempt's file, or all it had not written yet
    files = sorted(
        glob.glob(str(run / "wandb" / "offline-run-*" / "run-*.wandb")), key=os.path.getmtime
    )
    assert s["wandb"]["error"] is None, s["wandb"]
    resumed = [items["iter"] for _, items in wandb_file.history(files[-1])]
    kept = pd.read_csv(run / "metrics.csv")["iter"]
    assert resumed[: (kept <= s["resumed_from"]).sum()] == kept[kept <= s["resumed_from"]].tolist()
    _assert_wandb_mirrors_local(run, [Path(f) for f in files])
    defs = wandb_file.metric_definitions(files[-1])
    assert defs["*"]["step_metric"] == "iter" and "iter" in defs
    assert defs["val_err"] == {"step_metric": "iter", "summary": ["min"]}
    assert wandb_file.summary(files[-1])["val_err"] == {
        "min": pd.read_csv(run / "metrics.csv")["val_err"].min()
    }
    assert not (
        run / "wandb_unfinished.txt"
    ).exists()  # W&B finished: the next resume logs nothing again


@pytest.mark.slow
@pytest.mark.parametrize("interrupted", [False, True])
def test_log_checkpoints_puts_the_checkpoint_in_wandb_as_a_model_artifact(
    tmp_path, monkeypatch, interrupted
):
    from resnet_repro.training.train import train

    from .helpers import interrupt_after, smoke_cfg

    monkeypatch.setenv("WANDB_SILENT", "true")
    ov = ("logger=wandb", "logger.mode=offline", "logger.log_checkpoints=true")
    if interrupted:
        interrupt_after(monkeypatch, 12)
        with pytest.raises(KeyboardInterrupt):
            train(smoke_cfg(*ov), tmp_path / "run")
    else:
        train(smoke_cfg(*ov), tmp_path / "run")
    run_id = (tmp_path / "run" / "wandb_run_id.txt").read_text().strip()
    (art,) = wandb_file.artifacts(_offline_run(tmp_path / "run"))
    assert art["name"] == f"checkpoint-{run_id}" and art["type"] == "model"
    assert set(art["aliases"]) == ({"latest"} if interrupted else {"latest", "final"})
    assert art["files"] == ["checkpoint.pt"]
    plain = smoke_cfg("logger=wandb", "logger.mode=offline")
    assert plain.logger.log_checkpoints is False  # opt-in


@pytest.mark.slow
def test_one_wandb_sync_command_covers_every_run_of_an_offline_sweep(tmp_path):
    """The README's command, `wandb sync <sweep>/*/wandb/offline-run-*`, with --dry-run: nothing is
    sent."""
    r = run_cli(
        "-m",
        *TINY,
        "logger=wandb",
        "logger.mode=offline",
        "seed=0,1",
        cwd=tmp_path,
        timeout=HANG_LIMIT_S,
        env={"WANDB_SILENT": "true"},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (sweep,) = (tmp_path / "runs" / "smoke").iterdir()
    folders = sorted(glob.glob(str(sweep / "*" / "wandb" / "offline-run-*")))
    ids = {
        (Path(run) / "wandb_run_id.txt").read_text().strip()
        for run in glob.glob(str(sweep / "*"))
        if (Path(run) / "wandb_run_id.txt").is_file()
    }
    assert len(folders) == len(ids) == 2
    wandb_cli = Path(sys.executable).parent / "wandb"
    out = subprocess.run(
        [str(wandb_cli), "sync", "--dry-run", *folders],
        capture_output=True,
        text=True,
        timeout=HANG_LIMIT_S,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout + out.stderr
    assert "Would sync 2 run(s)" in text and all(f"run-{i}.wandb" in text for i in ids)


@pytest.mark.slow
def test_dry_run_lists_every_job_validated_and_runs_and_writes_nothing(tmp_path):
    r = run_cli("-m", *TINY, "seed=0,1", "model.residual=true,false", "--dry-run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    assert (
        lines[0].startswith("Sweep of 4 jobs in runs/smoke/")
        and "nothing was run or written" in lines[0]
    )
    assert [ln.split()[1] for ln in lines[1:5]] == [
        "depth=8,residual=true,seed=0",
        "depth=8,residual=false,seed=0",
        "depth=8,residual=true,seed=1",
        "depth=8,residual=false,seed=1",
    ]
    assert all("resnet8-seed" in ln or "plain8-seed" in ln for ln in lines[1:5]) and lines[
        1
    ].endswith("new")
    assert not (tmp_path / "runs").exists()  # not even the sweep folder
    bad = run_cli("-m", *TINY, "seed=0,1", "model.depth=7", "--dry-run", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith(
        "resnet-train: error: model.depth=7 is not a CIFAR"
    )
    assert "no job was started" in bad.stderr and not (tmp_path / "runs").exists()
    one = run_cli(*TINY, "--dry-run", cwd=tmp_path)
    assert one.returncode == 0 and one.stdout.startswith(
        "1 run, resnet8-seed0, in runs/smoke/resnet8-seed0,schedule.milestones=[2],"
        "trainer.batch_size=8,trainer.eval_every=4,trainer.log_every=2 (dry run"
    )  # its folder: the name and the overrides that make it another recipe than the preset's
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_dry_run_of_a_sweep_in_its_folder_says_which_jobs_are_done(tmp_path):
    sweep = tmp_path / "sweep"
    r = run_cli("-m", *TINY, "seed=0", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    before = sorted(p.relative_to(sweep) for p in sweep.rglob("*"))
    r = run_cli("-m", *TINY, "seed=0,1", f"hydra.sweep.dir={sweep}", "--dry-run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = r.stdout.strip().splitlines()[1:3]
    assert jobs[0].split()[1] == "depth=8,seed=0" and jobs[0].endswith("completed: skipped")
    assert jobs[1].split()[1] == "depth=8,seed=1" and jobs[1].endswith("new")
    assert sorted(p.relative_to(sweep) for p in sweep.rglob("*")) == before


def test_auto_device_spreads_jobs_over_gpus(monkeypatch):
    import torch

    from resnet_repro.training.device import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert [str(pick_device("auto", j)) for j in (0, 1, 5, None)] == [
        "cuda:0",
        "cuda:1",
        "cuda:1",
        "cuda:0",
    ]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert str(pick_device("auto", 3)) == "cpu"


def test_slurm_launcher_config_composes_with_requeue():
    from hydra import compose, initialize_config_dir

    from resnet_repro.config import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "hydra/launcher=slurm",
                "hydra.launcher.partition=gpu",
                "hydra.launcher.account=proj",
            ],
            return_hydra_config=True,
        )
    la = cfg.hydra.launcher
    assert la._target_.endswith("SlurmLauncher")
    assert (la.partition, la.account, la.gpus_per_node, la.max_num_timeout) == ("gpu", "proj", 1, 5)
    assert la.timeout_min > 0 and la.mem_gb > 0 and la.cpus_per_task > 0


def test_presets_warm_up_resnet110_only():
    from .helpers import cfg_of

    assert cfg_of("experiment=degradation", "model.depth=110").schedule.warmup
    assert not cfg_of("experiment=degradation", "model.depth=56").schedule.warmup
    assert cfg_of("experiment=table6", "model.depth=1202").schedule.warmup


def test_job_outcomes_in_the_manifest(tmp_path, caplog):
    from resnet_repro.errors import CheckpointError
    from resnet_repro.sweeps.sweep import mark_jobs_ended

    Manifest(tmp_path).set_jobs([{"name": "a"}, {"name": "b"}])
    for name, status in (("a", "running"), ("b", "completed")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(
            json.dumps({"status": status, "final_val_err": 9.0})
        )
    mark_jobs_ended(
        tmp_path,
        {
            0: SystemExit(-1),  # preempted or killed: not an Exception
            1: CheckpointError("checkpoint.pt is corrupt"),
        },
    )  # summary is from an earlier attempt
    rows = pd.read_csv(tmp_path / "manifest.csv")
    assert rows["status"].tolist() == ["interrupted", "failed"]
    assert (
        rows["error"].iloc[1] == "CheckpointError: checkpoint.pt is corrupt"
        and rows["final_err"].isna().all()
    )
    (tmp_path / "blocked").write_text(
        ""
    )  # a manifest folder that cannot be made: warned, not raised
    mark_jobs_ended(tmp_path / "blocked" / "sweep", {0: None})
    assert "Could not update the sweep manifest" in caplog.text


def test_the_tiny_sweep_fixture_runs(tiny_sweep_result):
    """The shared tiny sweep (conftest) ran; when it did not, this is the one test that says why."""
    sweep, why = tiny_sweep_result
    assert why is None, why
    assert (sweep / "manifest.csv").is_file()


@pytest.mark.slow
def test_a_sweep_ends_with_a_summary_and_the_next_command(tmp_path):
    r = run_cli("-m", *TINY, "seed=0,1", "hydra.sweep.dir=sw", cwd=tmp_path, timeout=HANG_LIMIT_S)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    assert (
        "Sweep of 2 jobs: 2 completed, 0 diverged, 0 failed, 0 interrupted. Folder: sw. "
        "Next: resnet-report sw"
    ) in out


@pytest.mark.slow
def test_two_sweeps_into_one_folder_never_mix_and_a_complete_job_stays_completed(tmp_path):
    """A second sweep started into a folder while the first runs is refused in one line (the
    folder's sweep.lock, or the running job's run.lock); the first completes every job and its
    manifest says so; the same command afterwards has nothing to do; a sweep of other jobs into
    that folder is refused before any job."""
    import subprocess
    import sys
    import time

    sweep = tmp_path / "sweep"
    argv = [
        sys.executable,
        "-m",
        "resnet_repro.cli",
        "-m",
        *TINY,
        "schedule.iterations=60",
        "schedule.milestones=[30]",
        "trainer.eval_every=20",
        "seed=0,1",
        f"hydra.sweep.dir={sweep}",
    ]
    first = subprocess.Popen(
        argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + HANG_LIMIT_S
    while (
        not (sweep / "manifest.csv").is_file()
        and first.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    second = subprocess.run(
        argv, cwd=tmp_path, capture_output=True, text=True, timeout=HANG_LIMIT_S
    )
    _, err = first.communicate(timeout=HANG_LIMIT_S)
    assert first.returncode == 0, err[-3000:]
    if (
        second.returncode != 0
    ):  # it ran while the first did (else it found the sweep done, with nothing to do)
        assert second.returncode == 2 and "is in use by" in second.stderr.strip().splitlines()[-1]
    manifest = pd.read_csv(sweep / "manifest.csv")
    assert (
        sorted(manifest["name"]) == ["depth=8,seed=0", "depth=8,seed=1"]
        and (manifest["status"] == "completed").all()
    )
    again = run_cli(*argv[3:], cwd=tmp_path, timeout=HANG_LIMIT_S)
    assert (
        again.returncode == 0
        and (pd.read_csv(sweep / "manifest.csv")["status"] == "completed").all()
    )
    other = run_cli(
        *argv[3:-2], "seed=2,3", f"hydra.sweep.dir={sweep}", cwd=tmp_path, timeout=HANG_LIMIT_S
    )
    assert other.returncode == 2 and "holds another sweep" in other.stderr.strip().splitlines()[-1]
    assert sorted(pd.read_csv(sweep / "manifest.csv")["name"]) == [
        "depth=8,seed=0",
        "depth=8,seed=1",
    ]


@pytest.mark.slow
def test_a_sweep_stopped_with_ctrl_c_prints_the_command_that_resumes_it(tmp_path):
    """Ctrl-C stops a sweep in its timestamped folder; the command it prints (the same command with
    hydra.sweep.dir=<that folder>) finishes that sweep in place: no second sweep folder."""
    import shlex
    import time

    from .helpers import wait_for

    args = ["-m", *TINY, "schedule.iterations=100", "trainer.log_every=5", "seed=0,1"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    p = subprocess.Popen(
        [sys.executable, "-m", "resnet_repro.cli", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = lambda: list(tmp_path.glob("runs/smoke/*/depth=8,seed=0/metrics.csv"))  # noqa: E731
    assert wait_for(
        lambda: (
            (metrics() and len(metrics()[0].read_text().splitlines()) > 3) or p.poll() is not None
        )
    )
    time.sleep(0.1)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=HANG_LIMIT_S)
    assert p.returncode == 130 and "Traceback" not in err, err[-3000:]
    (sweep,) = (tmp_path / "runs" / "smoke").iterdir()
    folder = f"runs/smoke/{sweep.name}"
    last = err.strip().splitlines()[-1]
    assert last.startswith("resnet-train: stopped by SIGINT (Ctrl-C) at iteration "), last
    assert "Rerun the same command" not in last
    command = f"resnet-train {shlex.join(args)} hydra.sweep.dir={folder}"
    assert last.endswith(f"The sweep is in {folder}; resume it with: {command}"), last
    again = run_cli(*shlex.split(command)[1:], cwd=tmp_path, timeout=HANG_LIMIT_S)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [d.name for d in (tmp_path / "runs" / "smoke").iterdir()] == [sweep.name]
    manifest = pd.read_csv(sweep / "manifest.csv")
    assert (manifest["status"] == "completed").all() and len(manifest) == 2
    first = json.loads((sweep / "depth=8,seed=0" / "summary.json").read_text())
    assert first["resumed_from"] and first["iterations"] == 100


def test_the_resume_command_keeps_the_sweep_and_names_its_folder():
    from resnet_repro.errors import Preempted
    from resnet_repro.sweeps.sweep import resume_command, sweep_stopped

    argv = ["-m", "experiment=degradation", "hydra.sweep.dir=old", "optimizer.lr=0.05"]
    assert (
        resume_command("runs/degradation/2026-01-01_00-00-00-000000", argv)
        == "resnet-train -m experiment=degradation optimizer.lr=0.05 "
        "hydra.sweep.dir=runs/degradation/2026-01-01_00-00-00-000000"
    )
    assert (
        resume_command("my sweep", ["seed=0,1"])
        == "resnet-train seed=0,1 'hydra.sweep.dir=my sweep'"
    )
    stop = sweep_stopped(
        Preempted(
            "stopped by SIGTERM at iteration 7; checkpoint written to x. Rerun the same command to "
            "resume.",
            15,
        ),
        "sw",
        ["-m", "seed=0,1"],
    )
    assert isinstance(stop, Preempted) and stop.signum == 15
    assert str(stop) == (
        "stopped by SIGTERM at iteration 7; checkpoint written to x. The sweep is in sw; resume it "
        "with: resnet-train -m seed=0,1 hydra.sweep.dir=sw"
    )
    assert str(sweep_stopped(KeyboardInterrupt(), "sw", [])).startswith(
        "interrupted (Ctrl-C). The sweep is in sw"
    )

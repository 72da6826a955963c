"""The command line: its own --help, --cfg job showing the validated config, and failed starts that
leave nothing behind."""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import sys

import pytest
import yaml

from resnet_repro.cli.preflight import NewFolder, Start, job_config
from resnet_repro.config import config_dir, to_dict
from resnet_repro.errors import ConfigError

from .helpers import HANG_LIMIT_S, cfg_of, run_cli

CONF = config_dir()
MISSING_DATA = (
    "dataset=cifar10",
    "dataset.download=false",
    "trainer.device=cpu",
    "trainer.progress=false",
)


# The launchers the README, configuration.md and --help list, in this order: Hydra's own basic and
# submitit_local as they are, and ours in conf/hydra/launcher/.
LAUNCHERS = ["basic", "local_parallel", "submitit_local", "slurm"]
HYDRAS_LAUNCHERS = {"basic", "submitit_local"}


def test_the_readme_and_configuration_doc_list_the_same_launchers():
    import re

    readme = (CONF.parent / "README.md").read_text()
    table = readme.split("### Launchers", 1)[1].split("\n\n", 2)[1]
    assert re.findall(r"^\| `(\w+)`", table, re.M) == LAUNCHERS
    row = next(
        line
        for line in (CONF.parent / "docs" / "configuration.md").read_text().splitlines()
        if line.startswith("| `hydra/launcher`")
    )
    assert re.findall(r"`(\w+)`", row.split("|")[2]) == LAUNCHERS


def cli(*args: str, cwd, python_flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """``resnet-train`` as installed (``python -m resnet_repro.cli``: no torch until a run starts),
    for the answers that start no run; run_cli (python -m resnet_repro.cli) for those that do."""
    env = {**os.environ}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, *python_flags, "-m", "resnet_repro.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=HANG_LIMIT_S,
        env=env,
    )


# --- --help ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def help_run(tmp_path_factory) -> subprocess.CompletedProcess:
    """``resnet-train --help``, with Python's import log on stderr (to see what it imported)."""
    return cli("--help", cwd=tmp_path_factory.mktemp("help"), python_flags=("-X", "importtime"))


def _section(text: str, title: str) -> list[str]:
    lines = text.split(f"== {title}", 1)[1].splitlines()[1:]
    return lines[: next((i for i, line in enumerate(lines) if line.startswith("==")), len(lines))]


@pytest.mark.slow
def test_help_is_the_tools_own(help_run):
    assert help_run.returncode == 0, help_run.stderr[-2000:]
    text = help_run.stdout
    first = text.splitlines()[0]
    assert first.startswith("resnet-train: train") and "He et al. 2016" in first
    assert "powered by Hydra" not in text
    assert max(len(line) for line in text.splitlines()) <= 100  # a terminal's width
    for needle in (
        "runs/<experiment>/<name>/",
        "runs/<experiment>/<timestamp>/<job>/",
        "resnet-report ",
        "resnet-eval ",
        "resnet-train --cfg job",
        "--hydra-help",
        "dataset.root=/path/to/data",
    ):
        assert needle in text, needle
    examples = [
        line.strip()
        for line in _section(text, "Examples")
        if line.strip().startswith("resnet-train")
    ]
    assert len(examples) == 6
    assert any("experiment=smoke" in e for e in examples)  # a first look that needs no data
    assert any("model.residual=false" in e for e in examples)  # a plain net
    assert any("-m experiment=degradation" in e for e in examples)  # the sweep
    assert any("trainer.stack=" in e for e in examples)  # the sweep, stacked
    assert examples[1].split("#")[0] == examples[5].split("#")[0]  # resume: the same command again


@pytest.mark.slow
def test_help_lists_every_config_group_and_preset_of_conf(help_run):
    text = help_run.stdout
    listed = {}
    for line in _section(text, "Config groups"):
        group, sep, options = line.strip().partition(": ")
        if sep and line.startswith("  "):
            listed[group] = [o.strip() for o in options.split("(")[0].split(",")]
    groups = {p.name for p in CONF.iterdir() if p.is_dir() and p.name not in ("hydra", "local")} | {
        "hydra/launcher"
    }
    assert set(listed) == groups
    for group, options in listed.items():
        if group != "experiment":  # the presets have a section of their own
            ours = {p.stem for p in (CONF / group).glob("*.yaml")}
            assert set(options) == ours | (
                HYDRAS_LAUNCHERS if group == "hydra/launcher" else set()
            ), group
    assert (
        listed["hydra/launcher"] == LAUNCHERS
    )  # the same list as the README's and configuration.md's
    defaults = yaml.safe_load((CONF / "config.yaml").read_text())["defaults"]
    for entry in defaults:  # the default option comes first
        if (
            isinstance(entry, dict)
            and len(entry) == 1
            and (k := next(iter(entry))) in listed
            and entry[k]
        ):
            assert listed[k][0] == entry[k], k
    presets = [line.split()[0] for line in _section(text, "Presets") if line.startswith("  ")]
    assert sorted(presets) == sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


@pytest.mark.slow
def test_help_imports_no_torch(help_run):
    # -X importtime names every module imported, after the last "|"
    imported = {
        line.rsplit("|", 1)[-1].strip() for line in help_run.stderr.splitlines() if "|" in line
    }
    assert "hydra" in imported and not {
        m for m in imported if m == "torch" or m.startswith("torch.")
    }


@pytest.mark.slow
def test_hydra_help_stays_hydras(tmp_path):
    r = cli("--hydra-help", cwd=tmp_path)
    assert r.returncode == 0 and "== Flags ==" in r.stdout and "--cfg" in r.stdout


# --- --cfg job ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, want",
    [
        (
            ["--cfg", "job", "model.depth=56"],
            {"n": 9, "depth": 56, "in_channels": 3, "warmup": False},
        ),
        (["-c", "job", "model.n=9"], {"n": 9, "depth": 56}),
        (
            ["--cfg=job", "model.depth=110"],
            {"n": 18, "depth": 110, "warmup": True},
        ),  # auto: on from depth 110
        (["--cfg", "job", "--resolve", "experiment=paper_resnet56"], {"n": 9, "depth": 56}),
        (
            ["--cfg", "job", "dataset=fashion_mnist", "model=resnet18"],
            {"depth": 18, "in_channels": 1},
        ),
    ],
)
def test_cfg_job_is_the_validated_config(argv, want):
    cfg = yaml.safe_load(job_config(argv, CONF))
    got = {**cfg["model"], "warmup": cfg["schedule"]["warmup"]}
    assert {k: got[k] for k in want} == want
    assert not str(cfg).count("${")  # interpolations resolved (the run's name, experiment_name)


def test_cfg_job_package_and_what_hydra_answers():
    assert job_config(["--cfg", "job", "model.depth=56", "--package", "model"], CONF).startswith(
        "# @package model\nname: resnet_cifar\nn: 9\ndepth: 56\n"
    )
    assert job_config(["--cfg", "job", "-p", "model.n", "model.depth=56"], CONF) == "9\n"
    for argv in (
        ["--cfg", "hydra"],
        ["--cfg", "all"],
        ["--cfg", "job", "-m", "model.n=3,5"],
        ["--cfg", "job", "experiment=degradation"],
        ["--cfg", "job", "-p", "nope"],
        ["model.depth=56"],
    ):
        assert job_config(argv, CONF) is None, argv


def test_cfg_job_refuses_a_bad_config():
    with pytest.raises(ConfigError, match="Nearest valid: 20 or 26"):
        job_config(["--cfg", "job", "model.depth=21"], CONF)


@pytest.mark.slow
def test_cli_cfg_job_prints_both_depth_spellings(tmp_path):
    r = cli("--cfg", "job", "model.depth=56", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "\n  n: 9\n  depth: 56\n" in r.stdout
    assert r.stdout == yaml.safe_dump(
        to_dict(cfg_of("model.depth=56")), sort_keys=False
    )  # as config.yaml will be
    assert list(tmp_path.iterdir()) == []  # nothing written


# --- failed starts --------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_failed_start_leaves_nothing_behind(tmp_path):
    r = run_cli("name=x", f"dataset.root={tmp_path / 'nope'}", *MISSING_DATA, cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("resnet-train: error: CIFAR-10 not found")
    assert "(e.g. dataset.root=/path/to/data)" in lines[0]
    assert list(tmp_path.iterdir()) == []  # no runs/cifar10/x (nor runs/), no data root


@pytest.mark.slow
def test_a_failed_start_keeps_what_was_there(tmp_path):
    old = tmp_path / "runs" / "cifar10" / "old"
    old.mkdir(parents=True)
    (old / "summary.json").write_text("{}")
    r = run_cli("name=x", f"dataset.root={tmp_path / 'nope'}", *MISSING_DATA, cwd=tmp_path)
    assert r.returncode == 2
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "runs",
        "runs/cifar10",
        "runs/cifar10/old",
        "runs/cifar10/old/summary.json",
    ]

    # a run directory that was there stays whole, with its record: this start resumes it
    ov = ("name=old", f"dataset.root={tmp_path / 'nope'}", *MISSING_DATA)
    saved = yaml.safe_dump(to_dict(cfg_of(*ov)), sort_keys=False)
    (old / "config.yaml").write_text(saved)
    r = run_cli(*ov, cwd=tmp_path)
    assert r.returncode == 2 and "CIFAR-10 not found" in r.stderr
    assert (old / "config.yaml").read_text() == saved and (old / "summary.json").read_text() == "{}"
    assert not (tmp_path / "nope").exists()


def _started(run_dir, *names: str) -> None:
    """What Hydra and a start write before the run record: .hydra/, the log, run.lock."""
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("seed: 0\n")
    for name in ("train.log", "run.lock", *names):
        (run_dir / name).write_text("")


def test_undo_removes_only_a_new_unstarted_run_dir(tmp_path):
    run = tmp_path / "runs" / "cifar10" / "x"
    start = Start(NewFolder.note(run), None)
    assert start.run_dir.base == tmp_path
    _started(run)
    handler = logging.FileHandler(run / "train.log")  # as Hydra's, open while the job runs
    logging.getLogger().addHandler(handler)
    try:
        start.undo(str(run))
        logging.getLogger().warning("after the clean-up")  # goes nowhere near the removed folder
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    assert list(tmp_path.iterdir()) == []

    _started(run, "config.yaml")  # the run record has begun: the run's, kept whole
    start.undo(str(run))
    assert sorted(p.name for p in run.iterdir()) == [
        ".hydra",
        "config.yaml",
        "run.lock",
        "train.log",
    ]


def test_undo_leaves_a_run_dir_another_process_holds(tmp_path):
    run = tmp_path / "x"
    start = Start(NewFolder.note(run), None)
    _started(run)
    fd = os.open(run / "run.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a run of the same directory, started meanwhile
    try:
        start.undo(str(run))
    finally:
        os.close(fd)
    assert run.is_dir()
    start.undo(
        str(tmp_path / "elsewhere")
    )  # Hydra ran the job in another directory: this one stays
    assert run.is_dir()


def test_undo_removes_a_new_data_root_only_while_empty(tmp_path):
    root = tmp_path / "data" / "cifar"
    start = Start(None, NewFolder.note(root))
    (root / "cifar-10-batches-py").mkdir(parents=True)
    (root / "cifar-10-python.tar.gz").write_bytes(b"part")  # a download cut short: kept
    start.undo()
    assert root.is_dir()
    (root / "cifar-10-python.tar.gz").unlink()
    start.undo()
    assert list(tmp_path.iterdir()) == []
    assert NewFolder.note(tmp_path) is None  # what exists is never noted, so never removed


def test_after_the_run_a_ctrl_c_exits_at_once_without_a_traceback(monkeypatch):
    """Once the command's work is done, a Ctrl-C (a second one, pressed while the process tears
    down) ends it at once with status 130 instead of a traceback from an exit handler."""
    import signal

    from resnet_repro.cli import train as cli_train

    exited = []
    monkeypatch.setattr(cli_train.os, "_exit", exited.append)
    old = signal.getsignal(signal.SIGINT)
    try:
        cli_train.exit_on_ctrl_c()
        signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
    finally:
        signal.signal(signal.SIGINT, old)
    assert exited == [130]


@pytest.mark.slow
def test_a_single_runs_folder_is_named_from_the_overrides_that_change_its_recipe(tmp_path):
    """A changed hyperparameter gets its own folder and the same command resumes it; what a resume
    may change (more iterations, the data root, threads) keeps the folder; a run recorded in the
    folder of the earlier naming (runs/<experiment>/<name>, whatever its overrides) goes on
    there."""
    smoke = ("experiment=smoke", "trainer.progress=false")
    runs = tmp_path / "runs" / "smoke"
    first = run_cli(*smoke, "schedule.iterations=10", cwd=tmp_path)  # a first look
    assert first.returncode == 0, first.stderr[-3000:]
    assert [d.name for d in runs.iterdir()] == ["resnet8-seed0"]
    longer = run_cli(
        *smoke, "trainer.num_threads=1", f"dataset.root={tmp_path / 'data'}", cwd=tmp_path
    )
    assert longer.returncode == 0, longer.stderr[-3000:]  # continued to the preset's 20 iterations
    assert [d.name for d in runs.iterdir()] == ["resnet8-seed0"]
    assert (
        yaml.safe_load((runs / "resnet8-seed0" / "config.yaml").read_text())["schedule"][
            "iterations"
        ]
        == 20
    )

    lr = run_cli(*smoke, "optimizer.lr=0.05", cwd=tmp_path)
    assert lr.returncode == 0, lr.stderr[-3000:]
    assert sorted(d.name for d in runs.iterdir()) == [
        "resnet8-seed0",
        "resnet8-seed0,optimizer.lr=0.05",
    ]
    again = run_cli(*smoke, "optimizer.lr=0.05", cwd=tmp_path)
    assert again.returncode == 0 and "is already complete (20 iterations)" in again.stdout, (
        again.stderr[-3000:]
    )
    assert (
        yaml.safe_load((runs / "resnet8-seed0,optimizer.lr=0.05" / "config.yaml").read_text())[
            "optimizer"
        ]["lr"]
        == 0.05
    )

    # a run recorded before: lr 0.07 in runs/smoke/resnet8-seed0, 10 of its 20 iterations done
    old = tmp_path / "old"
    (old / "runs" / "smoke").mkdir(parents=True)
    stopped = run_cli(
        *smoke,
        "optimizer.lr=0.07",
        "schedule.iterations=10",
        "schedule.milestones=[5]",
        "hydra.run.dir=runs/smoke/resnet8-seed0",
        cwd=old,
    )
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    goes_on = run_cli(*smoke, "optimizer.lr=0.07", "schedule.milestones=[5]", cwd=old)
    assert goes_on.returncode == 0, goes_on.stderr[-3000:]
    assert (
        "resnet-train: runs/smoke/resnet8-seed0 holds this run, recorded before a run's folder was "
        "named from its overrides; it goes on there."
    ) in goes_on.stderr
    assert [d.name for d in (old / "runs" / "smoke").iterdir()] == ["resnet8-seed0"]
    s = yaml.safe_load((old / "runs" / "smoke" / "resnet8-seed0" / "summary.json").read_text())
    assert s["status"] == "completed" and s["resumed_from"] == 10 and s["iterations"] == 20


def test_the_run_folder_leaves_out_what_a_resume_may_change_and_what_the_name_shows():
    from resnet_repro.config import NOT_IN_RUN_DIR, RUNTIME_KEYS, run_dir_name

    assert (
        RUNTIME_KEYS | {"schedule.iterations", "seed", "model.depth", "model.residual"}
        <= NOT_IN_RUN_DIR
    )
    assert "optimizer.lr" not in NOT_IN_RUN_DIR and "trainer.precision" not in NOT_IN_RUN_DIR
    assert run_dir_name("resnet20-seed0") == "resnet20-seed0"
    assert run_dir_name("resnet20-seed0", "optimizer.lr=0.05") == "resnet20-seed0,optimizer.lr=0.05"
    assert run_dir_name("r", "dataset.name=a/b") == "r,dataset.name=a_b"  # one folder, never two
    assert run_dir_name("look", "optimizer.lr=0.05", ["name=look", "optimizer.lr=0.05"]) == "look"
    long = run_dir_name("resnet20-seed0", ",".join(f"optimizer.lr={i}" for i in range(60)))
    assert (
        len(long) == 200 and long.startswith("resnet20-seed0,optimizer.lr=0,") and ",hash=" in long
    )
    assert long != run_dir_name("resnet20-seed0", ",".join(f"optimizer.lr={i}" for i in range(61)))


@pytest.mark.slow
def test_a_run_sleeps_its_waiting_cpu_threads_and_records_its_threads(tmp_path):
    """resnet-train sets OMP_WAIT_POLICY=PASSIVE before torch loads (unless it is set): the
    summary records it and the thread count; trainer.num_threads=1 gives one thread."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "resnet_repro.cli",
            "experiment=smoke",
            "trainer.progress=false",
            "trainer.num_threads=1",
            "hydra.run.dir=run",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=HANG_LIMIT_S,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    s = yaml.safe_load((tmp_path / "run" / "summary.json").read_text())
    assert s["omp_wait_policy"] == "PASSIVE" and s["cpu_threads"] == 1
    assert (
        "CPU threads: 1 (trainer.num_threads=1; OMP_WAIT_POLICY=PASSIVE)"
        in (tmp_path / "run" / "train.log").read_text()
    )

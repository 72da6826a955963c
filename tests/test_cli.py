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


# --- --help ----------------------------------------------------------------------------------------
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
            assert sorted(options) == sorted(p.stem for p in (CONF / group).glob("*.yaml")), group
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


# --- --cfg job -------------------------------------------------------------------------------------
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


# --- failed starts ---------------------------------------------------------------------------------
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

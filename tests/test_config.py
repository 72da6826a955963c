"""Config spelling, sweeps and bad-config errors (checked before any work)."""

import shutil

import pytest

from resnet_repro.cli.preflight import preflight
from resnet_repro.config import config_dir, run_name
from resnet_repro.errors import ConfigError

from .helpers import cfg_of, run_cli

CONF = config_dir()


def test_defaults_are_the_paper_recipe():
    c = cfg_of()
    assert (c.model.depth, c.model.n, c.model.residual, c.model.shortcut) == (20, 3, True, "A")
    assert (c.optimizer.lr, c.optimizer.momentum, c.optimizer.weight_decay) == (0.1, 0.9, 1e-4)
    assert (c.trainer.batch_size, c.schedule.iterations, list(c.schedule.milestones)) == (
        128,
        64000,
        [32000, 48000],
    )
    assert (c.dataset.name, c.dataset.protocol, c.dataset.val_size) == ("cifar10", "paper", 5000)
    assert c.name == "resnet20-seed0"


@pytest.mark.parametrize(
    "dataset", ["cifar10", "cifar100 model.num_classes=100", "fashion_mnist model=resnet18"]
)
def test_the_data_root_is_resnet_repro_data_when_set_else_data(monkeypatch, dataset, tmp_path):
    ov = [
        f"dataset={d}" if d in ("cifar10", "cifar100", "fashion_mnist") else d
        for d in dataset.split()
    ]
    monkeypatch.delenv("RESNET_REPRO_DATA", raising=False)
    assert cfg_of(*ov).dataset.root == "data"
    monkeypatch.setenv("RESNET_REPRO_DATA", str(tmp_path))
    assert cfg_of(*ov).dataset.root == str(tmp_path)
    assert (
        cfg_of(*ov, "dataset.root=/elsewhere").dataset.root == "/elsewhere"
    )  # the command line wins


def _compose_with_local(tmp_path, local: str, *overrides: str, hydra: bool = False):
    """The project's config composed from a copy of conf/ whose local/default.yaml is ``local``."""
    from hydra import compose, initialize_config_dir

    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "local" / "default.yaml").write_text(local)  # in place of this machine's, if it has one
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


LOCAL = """# @package _global_
dataset:
  root: /my/data
logger:
  entity: my-team
"""


def test_a_local_config_holds_the_machines_settings_under_the_command_line(tmp_path):
    c = _compose_with_local(tmp_path, LOCAL)
    assert (c.dataset.root, c.logger.entity) == ("/my/data", "my-team")
    assert (
        _compose_with_local(tmp_path / "b", LOCAL, "dataset.root=/other").dataset.root == "/other"
    )
    assert (
        _compose_with_local(tmp_path / "c", LOCAL, "experiment=table6").dataset.root == "/my/data"
    )  # over presets
    assert _compose_with_local(tmp_path / "d", LOCAL, "~local").dataset.root == "data"


def test_a_local_config_can_make_slurm_the_machines_launcher_with_its_partition(tmp_path):
    slurm = LOCAL + (
        "defaults:\n  - override /hydra/launcher: slurm\nhydra:\n  launcher:\n    partition: gpu\n"
    )
    c = _compose_with_local(tmp_path, slurm, hydra=True)
    assert c.hydra.launcher.partition == "gpu" and c.hydra.launcher._target_.endswith(
        "SlurmLauncher"
    )


def test_the_example_local_config_is_all_comments_and_the_real_one_is_git_ignored():
    from omegaconf import OmegaConf

    assert not OmegaConf.load(
        CONF / "local" / "example.yaml"
    )  # nothing set until the user uncomments it
    assert "conf/local/default.yaml" in (CONF.parent / ".gitignore").read_text().splitlines()


@pytest.mark.parametrize("n,depth", [(3, 20), (5, 32), (7, 44), (9, 56), (18, 110)])
def test_n_and_depth_are_two_spellings(n, depth):
    a, b = cfg_of(f"model.n={n}"), cfg_of(f"model.depth={depth}")
    assert (a.model.n, a.model.depth) == (b.model.n, b.model.depth) == (n, depth)
    assert a.name == b.name == f"resnet{depth}-seed0"


def test_run_names_show_depth_and_variant():
    assert cfg_of("model.depth=56", "model.residual=false").name == "plain56-seed0"
    assert cfg_of("model.n=18", "seed=2").name == "resnet110-seed2"
    assert cfg_of("model.shortcut=B").name == "resnet20-B-seed0"
    assert run_name(True, None, None, "A", 1) == "resnet20-seed1"


def test_command_line_spelling_wins_over_preset():
    smoke = cfg_of("experiment=smoke")
    assert smoke.model.depth == 8
    assert cfg_of("experiment=smoke", "model.depth=20").model.n == 3
    assert (
        cfg_of("experiment=resnet110").model.depth == 110
        and cfg_of("experiment=resnet110").schedule.warmup
    )


@pytest.mark.parametrize(
    "argv,needle",
    [
        (
            ["model.depth=21"],
            "model.depth=21 is not a CIFAR ResNet depth: depth must be 6n+2 (20, 32, 44, 56, 110",
        ),
        (["model.n=0"], "model.n=0 is not valid"),
        (["model.n=3", "model.depth=56"], "contradict each other"),
        (["model.dept=56"], "Unknown config key 'model.dept'. Did you mean 'model.depth'?"),
        (["lr=0.05"], "Did you mean 'optimizer.lr'?"),
        (["+model.width=2"], "Unknown config key 'model.width'"),
        (["model.n=abc"], "Bad value for model.n: Value 'abc'"),
        (["model.residual=maybe"], "Expected true or false"),
        (["model.shortcut=D"], "model.shortcut='D' is not valid. Valid choices: A, B, C."),
        (
            ["model=resnet51"],
            "Could not find 'model/resnet51' Available options in 'model': preact_cifar resnet101 "
            "resnet152 resnet18",
        ),
        (["dataset=imagenet"], "Available options in 'dataset'"),
        (["optimizer.lr=0"], "optimizer.lr=0.0 is not valid: it must be > 0."),
        (["trainer.batch_size=-1"], "trainer.batch_size=-1 is not valid: it must be > 0."),
        (["schedule.milestones=[48000,32000]"], "increasing order"),
        (["trainer.device=gpu"], "Valid choices: auto, cpu, cuda, cuda:N, mps."),
        (
            ["trainer.device=cuda:abc"],
            "trainer.device='cuda:abc' is not valid. Valid choices: auto, cpu, cuda, cuda:N, mps.",
        ),
        (
            ["trainer.device=cuda:-1"],
            "trainer.device='cuda:-1' is not valid. Valid choices: auto, cpu, cuda, cuda:N, mps.",
        ),
        (
            ["dataset.image_size=100000"],
            "dataset.image_size=100000 is not valid: it must be in [8, 1024]",
        ),
        (["optimizer.lr=nan"], "optimizer.lr=nan is not valid: it must be a finite number > 0."),
        (["optimizer.lr=inf"], "optimizer.lr=inf is not valid: it must be a finite number > 0."),
        (
            ["optimizer.weight_decay=inf"],
            "optimizer.weight_decay=inf is not valid: it must be a finite number >= 0.",
        ),
        (
            ["schedule.warmup_lr=nan"],
            "schedule.warmup_lr=nan is not valid: it must be a finite number > 0.",
        ),
        (
            ["schedule.iterations=10", "schedule.milestones=[5,80]"],
            "schedule.milestones=[5, 80]: 80 is past schedule.iterations=10, so the lr never drops "
            "there. Give milestones up to 10",
        ),
        (
            ["schedule.iterations=10", "schedule.milestones=[5]", "diagnostics.grad_norms=[1,50]"],
            "diagnostics.grad_norms=[1, 50]: 50 is past the run's last iteration (10), so no "
            "gradient norms are taken there. Give iterations in [1, 10].",
        ),
        (["model.depth=-4"], "Nearest valid: 8."),
        (["model.depth=4"], "Nearest valid: 8."),
        (
            ["model.depth=[56"],
            "Cannot parse the override 'model.depth=[56' (no viable alternative at input '[56')",
        ),
        (["seed=1,"], "Cannot parse the override 'seed=1,'"),
        (["dataset.protocol=test"], "Valid choices: paper, full."),
        (["model.n=3,5"], "add -m (--multirun)"),
        (["model.num_classes=5"], "does not fit dataset.name=cifar10, which has 10 classes"),
        (["dataset.val_size=50000"], "must be in [1, 49999]"),
        (
            ["experiment=smoke", "trainer.batch_size=1000"],
            "larger than the training split (512 images)",
        ),
    ],
)
def test_bad_configs_fail_before_any_work(argv, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as e:
        preflight(argv, CONF)
    assert needle in str(e.value)
    assert not (tmp_path / "runs").exists()


def test_full_protocol_without_test_batch_fails_before_any_work(cifar_pickles):
    with pytest.raises(ConfigError, match="dataset.protocol=full evaluates on the test batch"):
        preflight([f"dataset.root={cifar_pickles}", "dataset.protocol=full"], CONF)


@pytest.mark.parametrize("sweep", ["model.n=3,5,7,9,18", "model.depth=20,32,44,56,110"])
def test_depth_sweeps_expand_to_one_job_per_depth(sweep):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from hydra_plugins.resnet_repro_sweeper.resnet_sweeper import ResnetSweeper

    parsed = OverridesParser.create().parse_overrides([sweep, "model.residual=true,false"])
    jobs = [j for b in ResnetSweeper().split_arguments(parsed, None) for j in b]
    assert len(jobs) == 10
    names = sorted(cfg_of(*j).name for j in jobs)
    assert names == sorted(
        f"{k}{d}-seed0" for d in (20, 32, 44, 56, 110) for k in ("resnet", "plain")
    )
    assert preflight(["-m", sweep], CONF) is False  # a sweep's jobs are checked by the sweeper


@pytest.mark.slow
def test_cli_prints_one_clear_line_and_exits_2(tmp_path):
    r = run_cli("model.depth=21", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "resnet-train: error: model.depth=21 is not a CIFAR ResNet depth: depth must be 6n+2 "
        "(20, 32, 44, 56, 110, 1202, ...). Nearest valid: 20 or 26."
    ]
    assert "Traceback" not in r.stderr and not (tmp_path / "runs").exists()


def test_the_warm_up_follows_the_paper_in_every_entry_point():
    """schedule.warmup=auto (the default): on for the CIFAR nets of depth >= 110, as the paper
    did."""
    assert cfg_of("model.depth=110").schedule.warmup is True  # no preset needed
    assert cfg_of("model.n=18", "model.residual=false").schedule.warmup is True
    assert cfg_of("model.depth=56").schedule.warmup is False
    assert cfg_of("model=resnet152").schedule.warmup is False  # an ImageNet net: not the CIFAR rule
    assert cfg_of("model.depth=110", "schedule.warmup=false").schedule.warmup is False
    assert cfg_of("model.depth=20", "schedule.warmup=true").schedule.warmup is True
    with pytest.raises(
        ConfigError, match=r"schedule.warmup='maybe' is not valid. Valid choices: auto, true, false"
    ):
        cfg_of("schedule.warmup=maybe")


@pytest.mark.slow
def test_the_readmes_error_examples_print_what_they_show(tmp_path):
    """Each ``$ resnet-train ...`` example in the README prints the line the README shows under it
    (run in a folder whose ``data/`` holds CIFAR-10's training batches without the test batch)."""
    import re

    from .helpers import REPO, write_cifar_pickles

    write_cifar_pickles(tmp_path / "data")

    text = (REPO / "README.md").read_text()
    examples = re.findall(
        r"^\$ (resnet-train [^\n]+)\n(resnet-train: error: [^\n]+)$", text, flags=re.M
    )
    assert len(examples) >= 3
    for command, shown in examples:
        args = command.split()[1:]
        r = run_cli(*args, cwd=tmp_path)
        assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == shown, (
            command,
            r.stderr[-2000:],
        )

"""Stacked runs (train_stack.py, stacking.py): k runs trained as one grouped net leave exactly the
records their separate runs leave; kill and resume are bit-exact; a diverged run ends alone; the
sweeper's plan and its refusals."""

import json

import pandas as pd
import pytest
import torch
import yaml

from resnet_repro.config import to_dict
from resnet_repro.errors import ConfigError, Diverged
from resnet_repro.training import stacking
from resnet_repro.training.train import train
from resnet_repro.training.train_stack import train_stack

from .helpers import HANG_LIMIT_S, REAL_200_ARGS, cfg_of, interrupt_after, run_cli, smoke_cfg

TIMING = ["time_s", "img_per_s"]
OV = (
    "trainer.log_every=2",
    "trainer.eval_every=4",
    "schedule.warmup=true",
    "schedule.warmup_until_error=0.85",
    "diagnostics.layer_stats=eval",
    "diagnostics.grad_norms=[1,5,9]",
)
MEMBERS = ((True, 0), (False, 0), (True, 1))  # residual, seed: the study's kinds of difference


@pytest.fixture
def float64():
    """Everything in float64 (the nets, the normalised images, the sums): exactness, not
    rounding."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def member_cfgs(*overrides, members=MEMBERS):
    return [smoke_cfg(*OV, *overrides, f"model.residual={r}", f"seed={s}") for r, s in members]


def assert_same_record(a, b, tol=1e-10, skip_tables=()):
    """Two run directories hold the same run: metrics, tables, checkpoint and summary, to
    ``tol``."""
    for table in ("metrics.csv", "layer_stats.csv", "grad_norms.csv"):
        if table in skip_tables:
            continue
        x, y = pd.read_csv(a / table), pd.read_csv(b / table)
        x, y = (
            x.drop(columns=[c for c in TIMING if c in x]),
            y.drop(columns=[c for c in TIMING if c in y]),
        )
        pd.testing.assert_frame_equal(x, y, check_exact=False, rtol=0, atol=tol)
    ca, cb = (torch.load(d / "checkpoint.pt", weights_only=True) for d in (a, b))
    assert (
        ca.keys() == cb.keys()
        and ca["iteration"] == cb["iteration"]
        and ca["config"] == cb["config"]
    )
    for name, t in ca["model"].items():  # weights and BN statistics
        assert (t.double() - cb["model"][name].double()).abs().max() <= tol, name
    ma, mb = ca["optimizer"], cb["optimizer"]
    assert ma["param_groups"] == mb["param_groups"]
    for j, s in ma["state"].items():
        assert (s["momentum_buffer"] - mb["state"][j]["momentum_buffer"]).abs().max() <= tol
    assert ca["schedule"] == cb["schedule"] and ca["best"] == pytest.approx(cb["best"], abs=tol)
    for key in ("generator", "perm"):
        assert torch.equal(ca["batches"][key], cb["batches"][key])
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert set(sa) ^ set(sb) <= {
        "stack"
    }  # a stacked run's summary also says which stack trained it
    for k, v in sa.items():
        if k.endswith(("_s", "_at", "run_dir")) or k in (
            "started_at",
            "fast_path",
            "stack",
            "resumed_from",
        ):
            continue
        assert sb[k] == (pytest.approx(v, abs=tol) if isinstance(v, float) else v), k


@pytest.mark.slow
def test_a_stack_leaves_each_run_the_record_its_separate_run_leaves(tmp_path, float64):
    cfgs = member_cfgs()
    for i, c in enumerate(cfgs):
        train(c, tmp_path / f"alone{i}")
    summaries = train_stack(cfgs, [tmp_path / f"stacked{i}" for i in range(3)])
    assert [s["status"] for s in summaries] == ["completed"] * 3
    for i in range(3):
        assert_same_record(tmp_path / f"alone{i}", tmp_path / f"stacked{i}")
    s = summaries[1]
    assert s["stack"] == {"size": 3, "member": 1, "runs": ["stacked0", "stacked1", "stacked2"]}
    assert s["residual"] is False and s["fast_path"]["optimizer_impl"] == "foreach"
    # the members learn apart: their own numbers, and each its own warm-up end (a per-member lr)
    assert len({x["final_val_loss"] for x in summaries}) == 3
    ends = [
        json.loads((tmp_path / f"alone{i}" / "summary.json").read_text())["warmup_ended_at"]
        for i in range(3)
    ]
    assert [x["warmup_ended_at"] for x in summaries] == ends


@pytest.mark.slow
@pytest.mark.parametrize("stop_at", [3, 7])  # before the first checkpoint, after it
def test_kill_and_resume_of_a_stack_is_bit_exact(tmp_path, monkeypatch, stop_at):
    cfgs = member_cfgs()
    train_stack(cfgs, [tmp_path / f"full{i}" for i in range(3)])
    interrupt_after(monkeypatch, 3 * stop_at)  # each step draws one batch per member
    with pytest.raises(KeyboardInterrupt):
        train_stack(cfgs, [tmp_path / f"cut{i}" for i in range(3)])
    monkeypatch.undo()
    cut = [json.loads((tmp_path / f"cut{i}" / "summary.json").read_text()) for i in range(3)]
    assert {s["status"] for s in cut} == {"interrupted"} and {
        s["iterations_done"] for s in cut
    } == {stop_at}
    resumed = train_stack(cfgs, [tmp_path / f"cut{i}" for i in range(3)])
    assert {s["resumed_from"] for s in resumed} == {stop_at // 4 * 4 or None}
    for i in range(3):
        assert_same_record(tmp_path / f"full{i}", tmp_path / f"cut{i}", tol=0)


@pytest.mark.slow
def test_a_stack_killed_between_its_members_checkpoint_writes_resumes_as_one_bit_exactly(
    tmp_path, monkeypatch, caplog
):
    """A SIGKILL between the members' checkpoint writes of one evaluation leaves the first member
    one checkpoint ahead (made here: the others' checkpoint.pt rolled back to their previous one):
    the stack resumes as one net from the iteration they all share, bit-identical to a stack that
    ran through."""
    import shutil

    caplog.set_level("INFO", logger="resnet_repro")
    cfgs = member_cfgs()
    train_stack(cfgs, [tmp_path / f"full{i}" for i in range(3)])
    interrupt_after(
        monkeypatch, 3 * 10
    )  # stopped at 10 at once: its checkpoints of 4 (previous) and 8
    with pytest.raises(KeyboardInterrupt):
        train_stack(cfgs, [tmp_path / f"cut{i}" for i in range(3)])
    monkeypatch.undo()
    for i in (
        1,
        2,
    ):  # as if killed after member 0 wrote iteration 8's checkpoint, before the others did
        shutil.copy(
            tmp_path / f"cut{i}" / "checkpoint.prev.pt", tmp_path / f"cut{i}" / "checkpoint.pt"
        )
    resumed = train_stack(cfgs, [tmp_path / f"cut{i}" for i in range(3)])
    assert {s["resumed_from"] for s in resumed} == {4}
    assert (
        "where the stack's other runs stand" in caplog.text
        and "train one after another" not in caplog.text
    )
    for i in range(3):
        assert_same_record(tmp_path / f"full{i}", tmp_path / f"cut{i}", tol=0)


@pytest.mark.slow
def test_a_diverged_run_ends_alone_and_the_others_go_on(tmp_path, monkeypatch, float64):
    from resnet_repro.data.pipeline import StackedBatches

    cfgs = member_cfgs()
    for i in (0, 2):
        train(cfgs[i], tmp_path / f"alone{i}")
    real, calls = StackedBatches.next, {"n": 0}

    def poisoned(self):  # the second run's images turn NaN at step 3: its loss, then its weights
        x, y = real(self)
        calls["n"] += 1
        if calls["n"] == 3:
            x = x.clone()
            x[:, 3:6] = float("nan")
        return x, y

    monkeypatch.setattr(StackedBatches, "next", poisoned)
    summaries = train_stack(cfgs, [tmp_path / f"stacked{i}" for i in range(3)])
    bad = summaries[1]
    assert (
        bad["status"] == "diverged"
        and bad["iterations_done"] == 4
        and "Diverged: training diverged at iteration 4" in bad["error"]
    )
    assert "iterations" not in bad or bad["iterations"] in (
        0,
        None,
    )  # no checkpoint before it diverged
    rows = pd.read_csv(tmp_path / "stacked1" / "metrics.csv")
    assert rows["iter"].tolist() == [2, 4] and pd.isna(rows["train_loss"].iloc[-1])
    for i in (0, 2):  # the others: as if alone
        assert summaries[i]["status"] == "completed"
        assert_same_record(tmp_path / f"alone{i}", tmp_path / f"stacked{i}")


@pytest.mark.slow
def test_every_run_diverging_fails_the_stack(tmp_path):
    cfgs = member_cfgs("optimizer.lr=1e6", "schedule.warmup=false", members=((True, 0), (False, 0)))
    with pytest.raises(Diverged, match="every run of the stack diverged"):
        train_stack(cfgs, [tmp_path / "a", tmp_path / "b"])
    for d in ("a", "b"):
        assert json.loads((tmp_path / d / "summary.json").read_text())["status"] == "diverged"


@pytest.mark.slow
def test_runs_at_different_iterations_train_one_after_another(tmp_path, monkeypatch, caplog):
    cfgs = member_cfgs(members=((True, 0), (False, 0)))
    train(cfgs[1], tmp_path / "alone1")
    interrupt_after(monkeypatch, 5)  # the second run alone: stopped with a checkpoint at 4
    with pytest.raises(KeyboardInterrupt):
        train(cfgs[1], tmp_path / "b")
    monkeypatch.undo()
    caplog.set_level("INFO", logger="resnet_repro")
    out = train_stack(cfgs, [tmp_path / "a", tmp_path / "b"])
    assert "stand at different iterations" in caplog.text
    assert [s["status"] for s in out] == ["completed"] * 2 and "stack" not in out[1]
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "alone1" / "metrics.csv").drop(columns=TIMING),
        pd.read_csv(tmp_path / "b" / "metrics.csv").drop(columns=TIMING),
    )
    again = train_stack(cfgs, [tmp_path / "a", tmp_path / "b"])  # both complete: nothing to do
    assert [s["iterations"] for s in again] == [20, 20]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("optimizer.lr=0.05", "optimizer.lr"),
        ("model.depth=14", "model.depth"),
        ("schedule.iterations=30", "schedule.iterations"),
        ("trainer.precision=bf16", "trainer.precision"),
    ],
)
def test_stacked_runs_may_differ_in_residual_and_seed_only(override, key):
    a, b = smoke_cfg("seed=0"), smoke_cfg("seed=1", "model.residual=false", override)
    with pytest.raises(
        ConfigError, match=f"may differ in model.residual and seed only, but .*{key}.* differ"
    ):
        stacking.check_members([a, b])
    stacking.check_members([a, smoke_cfg("seed=1", "model.residual=false", "trainer.stack=off")])


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.shortcut=B", "model.shortcut=B"),
        ("model=preact_cifar", "model.name=preact_cifar"),
        ("trainer.precision=fp16", "trainer.precision=fp16"),
    ],
)
def test_what_a_stack_cannot_train_is_refused_by_name(override, key):
    cfg = smoke_cfg("trainer.stack=2", override)
    with pytest.raises(ConfigError, match=key):
        stacking.check_members([cfg, cfg])
    with pytest.raises(ConfigError, match=key):
        stacking.plan([cfg, cfg])
    assert stacking.plan([smoke_cfg("trainer.stack=auto", override)] * 2) == [
        [0],
        [1],
    ]  # auto: alone


def sweep_cfgs(stack, depths=(8, 14), seeds=(0, 1)):
    return [
        smoke_cfg(f"trainer.stack={stack}", f"model.depth={d}", f"model.residual={r}", f"seed={s}")
        for d in depths
        for r in (True, False)
        for s in seeds
    ]


def test_the_plan_groups_runs_that_differ_in_residual_and_seed_only(monkeypatch):
    assert stacking.plan(sweep_cfgs("off")) == [[i] for i in range(8)]
    assert stacking.plan(sweep_cfgs(4)) == [[0, 1, 2, 3], [4, 5, 6, 7]]  # one stack per depth
    assert stacking.plan(sweep_cfgs(3)) == [[0, 1, 2], [3], [4, 5, 6], [7]]
    mixed = sweep_cfgs(4, depths=(8,)) + [smoke_cfg("trainer.stack=4", "optimizer.lr=0.05")]
    assert stacking.plan(mixed) == [[0, 1, 2, 3], [4]]
    # auto: what was measured on the sweep's device type; the CPU measured stacking slower
    assert stacking.auto_size("cpu") == 1 and stacking.auto_size("tpu") == 1
    assert stacking.plan(sweep_cfgs("auto"), lambda c: "cpu") == [[i] for i in range(8)]
    monkeypatch.setitem(stacking.MEASURED_SPEEDUP, "cuda", {2: 1.4, 4: 2.1, 6: 1.9})
    assert stacking.auto_size("cuda") == 4
    assert stacking.plan(sweep_cfgs("auto"), lambda c: "cuda") == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_a_stacked_job_rebuilds_each_runs_config_as_its_own_job_would():
    from hydra import compose, initialize_config_dir

    from resnet_repro.config import config_dir, to_dict

    cfgs = [cfg_of("experiment=smoke", f"model.residual={r}", f"seed={s}") for r, s in MEMBERS]
    override = stacking.members_override(cfgs, ["a", "b,c=1", "d"])
    ov = ["experiment=smoke", override]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        node = compose("config", overrides=ov)
    assert [m.name for m in node.trainer.stack_members] == ["a", "b,c=1", "d"]
    rebuilt = stacking.member_configs(node, ov)
    assert [to_dict(c) for c in rebuilt] == [to_dict(c) for c in cfgs]
    assert [c.name for c in rebuilt] == ["resnet8-seed0", "plain8-seed0", "resnet8-seed1"]


@pytest.mark.slow
def test_a_stacked_sweep_leaves_the_records_and_manifest_of_a_separate_one(tmp_path):
    from resnet_repro.analysis.results import collect
    from resnet_repro.sweeps.sweep import Manifest

    args = [
        "-m",
        "experiment=smoke",
        "trainer.progress=false",
        "trainer.batch_size=8",
        "schedule.iterations=4",
        "schedule.milestones=[2]",
        "trainer.log_every=2",
        "trainer.eval_every=4",
        "model.residual=true,false",
        "seed=0,1",
    ]
    frames = {}
    for stack in ("off", "4"):
        cwd = tmp_path / stack
        cwd.mkdir()
        r = run_cli(*args, f"trainer.stack={stack}", cwd=cwd, timeout=HANG_LIMIT_S)
        assert r.returncode == 0, r.stderr[-3000:]
        (sweep,) = (cwd / "runs" / "smoke").iterdir()
        rows = Manifest(sweep).read()
        assert [x["status"] for x in rows] == ["completed"] * 4 and len(rows) == 4
        runs, _ = collect(sweep)
        frames[stack] = runs.sort_values("run").reset_index(drop=True)
        if stack == "4":
            assert "4 of them in 1 stacks" in r.stdout + r.stderr
            for x in rows:
                assert (
                    json.loads((sweep / x["name"] / "summary.json").read_text())["stack"]["size"]
                    == 4
                )
    a, b = frames["off"], frames["4"]
    assert list(a.columns) == list(b.columns) and a["run"].tolist() == b["run"].tolist()
    assert a["final_val_err"].notna().all() and b["final_val_err"].notna().all()


@pytest.mark.slow
def test_a_sweep_that_cannot_stack_is_refused_before_any_job(tmp_path):
    r = run_cli(
        "-m",
        "experiment=smoke",
        "trainer.progress=false",
        "model.shortcut=B",
        "seed=0,1",
        "trainer.stack=2",
        cwd=tmp_path,
        timeout=HANG_LIMIT_S,
    )
    assert r.returncode == 2
    assert (
        "shortcut option A only, not model.shortcut=B" in r.stderr
        and "trainer.stack=off" in r.stderr
    )
    assert not list(tmp_path.glob("runs/smoke/*/*/summary.json"))
    assert not list(tmp_path.rglob("manifest.csv")) and not list(
        tmp_path.rglob("multirun.yaml")
    )  # no sweep folder


@pytest.mark.parametrize("argv", [["experiment=smoke"], ["-m", "experiment=smoke", "seed=0,1"]])
def test_stack_members_by_hand_are_refused_before_any_work(tmp_path, argv):
    """trainer.stack_members is the sweeper's to set: by hand (here naming a folder outside the
    sweep) it is one line before anything is composed or written."""
    from resnet_repro.cli.preflight import preflight
    from resnet_repro.config import config_dir
    from resnet_repro.errors import ConfigError

    members = "trainer.stack_members=[{residual:true,seed:0,name:'../../../escape_member'}]"
    with pytest.raises(ConfigError, match="set by the sweeper") as ex:
        preflight([*argv, members, f"hydra.run.dir={tmp_path}/run"], config_dir())
    assert len(str(ex.value).splitlines()) == 1 and not any(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["../../../escape_member", "a/b", "..", ""])
def test_a_stack_members_name_is_one_folder_name(name):
    from omegaconf import OmegaConf

    from resnet_repro.config import StackMember
    from resnet_repro.errors import ConfigError
    from resnet_repro.training.stacking import member_configs

    node = OmegaConf.structured(smoke_cfg())
    node.trainer.stack_members = [StackMember(residual=True, seed=0, name=name)]
    with pytest.raises(ConfigError, match="not one folder name"):
        member_configs(node, [])


@pytest.mark.realdata
def test_a_stack_on_real_cifar10_trains_as_its_separate_run_does(
    data_root, resnet20_real_200, tmp_path, capsys
):
    """fp32: grouped convolutions round differently from single ones, and at lr 0.1 the difference
    grows, so a stacked run is its separate run up to rounding. Over 200 real-data iterations the
    training curves stay together; the one validation error at the end is noisy (at lr 0.1 its BN
    statistics move a lot: over five seeds, rounding alone moved it by up to 8.2 points, while
    the means over five seeds agreed to 0.1; README, Stacked runs)."""
    r, alone_dir = resnet20_real_200  # seed 0 alone, trained by the command line (conftest.py)
    assert r.returncode == 0, r.stderr[-3000:]
    alone = json.loads((alone_dir / "summary.json").read_text())
    cfgs = [cfg_of(f"dataset.root={data_root}", *REAL_200_ARGS, f"seed={s}") for s in (0, 1)]
    assert to_dict(cfgs[0]) == yaml.safe_load((alone_dir / "config.yaml").read_text())
    stacked = train_stack(cfgs, [tmp_path / "seed0", tmp_path / "seed1"])
    a, b = (pd.read_csv(d / "metrics.csv") for d in (alone_dir, tmp_path / "seed0"))
    loss_diff = (a["train_loss"] - b["train_loss"]).abs().max()
    err_diff = (a["train_err"] - b["train_err"]).abs().max()
    val_diff = abs(stacked[0]["final_val_err"] - alone["final_val_err"])
    with capsys.disabled():
        print(
            f"\n[realdata] ResNet-20 seed 0, 200 iterations, fp32 CPU, alone / stacked with seed "
            f"1: training loss windows {a['train_loss'].round(4).tolist()} / "
            f"{b['train_loss'].round(4).tolist()} (largest difference {loss_diff:.4f}; train error "
            f"{err_diff:.2f} points); validation error {alone['final_val_err']:.2f}% / "
            f"{stacked[0]['final_val_err']:.2f}%"
        )
    assert a["iter"].tolist() == b["iter"].tolist() == [50, 100, 150, 200]
    assert loss_diff <= 0.06 and err_diff <= 4.0  # measured over five seeds: 0.023 and 1.6
    assert (
        val_diff <= 12.0 and stacked[0]["final_val_err"] < 75.0
    )  # noise (up to 8.2 measured); well below chance
    assert stacked[1]["status"] == "completed"

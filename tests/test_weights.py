"""Trained weights: load_model, resnet-export --weights, resnet-eval on them, hubconf.py, and the
weights published under analysis/results/."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch
import yaml

import resnet_repro
from resnet_repro.analysis.export import export
from resnet_repro.analysis.weights import WEIGHTS_FILE, cifar_net, published
from resnet_repro.cli.evaluate import main as eval_main
from resnet_repro.data import load_splits
from resnet_repro.data.pipeline import normalize, pixel_mean
from resnet_repro.errors import CheckpointError
from resnet_repro.training.train import train

from .helpers import REPO, smoke_cfg

SHORT = (
    "model.n=1",
    "schedule.iterations=4",
    "schedule.milestones=[2]",
    "trainer.log_every=2",
    "trainer.eval_every=2",
    "diagnostics.layer_stats=off",
    "trainer.batch_size=16",
    "trainer.eval_batch_size=64",
    "dataset.num_train=128",
    "dataset.val_size=64",
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished smoke run, ResNet-8 on synthetic data, and its export with weights."""
    base = tmp_path_factory.mktemp("weights")
    d = base / "runs" / "resnet8-seed0"
    train(smoke_cfg(*SHORT), d)
    export([d], base / "results" / "tiny-8k", weights=True)
    return d, base / "results" / "tiny-8k" / d.name


def _images(n=8):
    return torch.randint(
        0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )


def test_load_model_gives_the_run_in_eval_mode_with_its_config(run):
    d, _ = run
    net = resnet_repro.load_model(d)
    assert not net.training and not net.net.training
    assert net.config["model"]["depth"] == 8 and net.iteration == 4 and net.source == str(d)
    ckpt = torch.load(d / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(v, ckpt["model"][k]) for k, v in net.net.state_dict().items())


def test_the_net_scores_images_as_training_did(run):
    d, _ = run
    net = resnet_repro.load_model(d)
    cfg = smoke_cfg(*SHORT)
    mean = pixel_mean(
        load_splits(cfg.dataset).train[0]
    )  # the training split's, as training took it
    x = _images()
    with torch.no_grad():
        assert torch.equal(net(x), net.net(normalize(x, mean)))
        assert torch.allclose(net(x.float() / 255), net(x), atol=1e-5)  # floats in [0, 1] too


def test_export_weights_holds_the_model_and_its_mean_and_no_optimizer_state(run):
    d, pub = run
    w = torch.load(pub / WEIGHTS_FILE, weights_only=True)
    assert set(w) == {"format", "model", "pixel_mean", "config", "iteration"}
    assert w["pixel_mean"].shape == (1, 3, 32, 32) and w["iteration"] == 4
    assert not list(pub.glob("checkpoint*"))
    a, b = resnet_repro.load_model(d), resnet_repro.load_model(pub / WEIGHTS_FILE)
    with torch.no_grad():
        assert torch.equal(a(_images()), b(_images()))
    assert resnet_repro.load_model(pub).source == str(pub / WEIGHTS_FILE)  # the folder: its weights


def test_resnet_eval_scores_the_published_weights_as_the_run_recorded(run, capsys):
    d, pub = run
    summary = json.loads((d / "summary.json").read_text())
    for target in (pub, pub / WEIGHTS_FILE):
        eval_main([str(target), "--device", "cpu", "--json"])
        out = json.loads(capsys.readouterr().out)
        assert out["checkpoint_name"] == WEIGHTS_FILE and out["iteration"] == 4
        assert out["splits"]["val"]["error"] == pytest.approx(summary["final_val_err"], abs=1e-9)


def test_hub_nets_untrained_and_published(run, tmp_path):
    _, pub = run
    sys.path.insert(0, str(REPO))
    try:
        import hubconf
    finally:
        sys.path.remove(str(REPO))
    entries = sorted(
        k for k in dir(hubconf) if callable(getattr(hubconf, k)) and not k.startswith("_")
    )
    assert entries == sorted(
        [*(f"resnet{d}" for d in (20, 32, 44, 56, 110)), *(f"plain{d}" for d in (20, 32, 44, 56))]
    )
    net = torch.hub.load(str(REPO), "resnet32", source="local", pretrained=False)
    assert sum(p.numel() for p in net.parameters()) == 464_154  # the paper's 0.46M
    results = tmp_path / "results"
    shutil.copytree(pub.parent, results / pub.parent.name)
    # the tiny run stands for a published CIFAR-10 ResNet-8 at its schedule and seed
    config = results / pub.parent.name / pub.name / "config.yaml"
    config.write_text(config.read_text().replace("name: synthetic", "name: cifar10"))
    assert published(results) == {
        (8, True, "paper", 0): results / pub.parent.name / pub.name / WEIGHTS_FILE
    }
    loaded = cifar_net(8, True, pretrained=True, schedule="paper", results=results)
    with torch.no_grad():
        assert torch.equal(loaded(_images()), resnet_repro.load_model(pub)(_images()))
    with pytest.raises(
        CheckpointError,
        match=r"no published weights for plain-8 at schedule=paper, seed=0\. "
        r"Published: resnet8 \(schedule=paper, seed=0\); use one of those",
    ):
        cifar_net(8, False, pretrained=True, results=results)
    with pytest.raises(
        CheckpointError, match="No run has published weights yet: use pretrained=False"
    ):
        cifar_net(20, pretrained=True, results=tmp_path / "empty")


def test_a_missing_or_foreign_weights_file_is_one_line(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        resnet_repro.load_model(tmp_path / "nothing")
    torch.save({"model": {}}, tmp_path / WEIGHTS_FILE)
    with pytest.raises(
        CheckpointError, match="is not a resnet_repro weights file: export it again"
    ):
        resnet_repro.load_model(tmp_path / WEIGHTS_FILE)


PUBLISHED = sorted((REPO / "analysis" / "results").glob(f"*/*/{WEIGHTS_FILE}"))


@pytest.mark.parametrize(
    "weights", PUBLISHED, ids=[f"{w.parent.parent.name}/{w.parent.name}" for w in PUBLISHED]
)
def test_every_published_weights_file_loads_as_its_record_says(weights):
    cfg = yaml.safe_load((weights.parent / "config.yaml").read_text())
    summary = json.loads((weights.parent / "summary.json").read_text())
    net = resnet_repro.load_model(weights)
    assert net.config["model"] == cfg["model"] and net.iteration == summary["iterations"]
    assert weights.stat().st_size < 10 * 2**20  # weights only: a few MB


@pytest.mark.realdata
def test_a_published_weights_file_scored_by_resnet_eval_gives_its_recorded_error(data_root, capsys):
    if not PUBLISHED:
        pytest.skip("no published weights under analysis/results/")
    weights = min(PUBLISHED, key=lambda w: w.stat().st_size)  # the smallest net: quickest to score
    summary = json.loads((weights.parent / "summary.json").read_text())
    eval_main(
        [
            str(weights),
            "--device",
            "cpu",
            "--json",
            "--data-root",
            str(data_root),
            "--precision",
            "as-trained",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert out["splits"]["val"]["error"] == pytest.approx(
        summary["final_val_err"], abs=1e-9
    )  # as recorded

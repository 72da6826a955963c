"""The CUDA self-check: ``pytest -m cuda`` on a GPU machine (about two minutes on an H100).

Without a GPU these tests skip. ``RESNET_REPRO_TEST_DEVICE=cpu`` runs their logic on the CPU
instead, at tiny sizes and without the checks only a GPU can make (CUDA graphs, host-device
syncs): that is how ``benchmarks/gpu_check.sh --rehearse`` keeps them from rotting in CI.

On the GPU they check what the fast path promises:
- the compiled, CUDA-graph step against the eager step from the same weights and batches;
- the training loop never syncs host and device between log steps, and never recompiles;
- the device pipeline equals the CPU pipeline bit for bit; fused SGD equals foreach SGD;
- a run killed and resumed with ``trainer.deterministic=true`` ends bit-identical;
- a stack of runs (``trainer.stack``) trains on the same fast path without recompiling, falling
  back from CUDA graphs or syncing between log steps;
- a short real-data run leaves a complete record with an error well below chance.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import resnet_repro.training.train as train_mod
from resnet_repro.config import OptimizerConfig, TrainerConfig
from resnet_repro.data.pipeline import DeviceBatches, crop_flip, normalize, pixel_mean
from resnet_repro.data.synthetic import make_synthetic
from resnet_repro.models import resnet_cifar
from resnet_repro.training.diagnostics import conv_grad_norms, layer_response_std
from resnet_repro.training.step import FastPath, TrainStep, cudagraph_skips
from resnet_repro.training.train import evaluate, train

from .helpers import HANG_LIMIT_S, cfg_of, smoke_cfg

pytestmark = pytest.mark.cuda
STAND_IN = os.environ.get("RESNET_REPRO_TEST_DEVICE") == "cpu"
# The study's own net and batch on the GPU (so one compile warms the cache for all of them);
# the smallest net and a small batch for the CPU stand-in.
N, BATCH = (1, 16) if STAND_IN else (3, 128)


@pytest.fixture(scope="module")
def device() -> torch.device:
    if STAND_IN:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        pytest.skip(
            "needs a CUDA GPU (RESNET_REPRO_TEST_DEVICE=cpu rehearses these tests on the CPU)"
        )
    return torch.device("cuda")


def fast_overrides(device: torch.device) -> tuple[str, ...]:
    """The fast path these tests check: ``trainer=fast`` on CUDA (bf16, channels_last, compile, CUDA
    graphs, fused SGD); the CPU stand-in keeps fp32 (compile is asked for where a test needs it)."""
    return ("trainer=fast",) if device.type == "cuda" else ()


def cfg(device: torch.device, *overrides: str):
    """The smoke preset on ``device`` on the fast path, at this file's net and batch, on synthetic
    data."""
    return smoke_cfg(
        *fast_overrides(device),
        f"trainer.device={device.type}",
        f"model.n={N}",
        f"trainer.batch_size={BATCH}",
        "dataset.num_train=1280",
        "dataset.val_size=256",
        *overrides,
    )


def fast_path(device: torch.device, **kw) -> FastPath:
    """``trainer=fast`` on CUDA (bf16, channels_last, compile, CUDA graphs, fused SGD); on the CPU
    stand-in fp32 with compile, so that the compiled path runs there as well."""
    t = cfg_of(*fast_overrides(device)).trainer
    if device.type == "cpu":
        kw.setdefault("compile", "default")
    return FastPath.resolve(dataclasses.replace(t, **kw), OptimizerConfig(), device)


def batches(device: torch.device, steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    x, y = make_synthetic(20 * BATCH, seed=3)
    b = DeviceBatches(x, y, BATCH, pixel_mean(x), device, seed=0)
    return [b.next() for _ in range(steps)]


# --- the compiled CUDA-graph step ----------------------------------------------------------------
def test_compiled_graph_step_matches_the_eager_step(device):
    fast = fast_path(device)
    eager_fast = FastPath.resolve(
        TrainerConfig(precision=fast.precision, compile="off", channels_last=fast.channels_last),
        OptimizerConfig(),
        device,
    )
    fast.new_job()
    torch.manual_seed(0)
    model = resnet_cifar(6 * N + 2).to(device, memory_format=fast.memory_format)
    twin = copy.deepcopy(model)
    steps = {
        "compiled": TrainStep(model, fast.optimizer(model.parameters(), OptimizerConfig()), fast),
        "eager": TrainStep(
            twin, eager_fast.optimizer(twin.parameters(), OptimizerConfig()), eager_fast
        ),
    }
    assert steps["compiled"].call is not model and steps["eager"].call is twin
    data = batches(device, 50)
    skips = cudagraph_skips()
    losses = {k: [step(x, y)[0].float().item() for x, y in data] for k, step in steps.items()}

    a, b = losses["compiled"], losses["eager"]
    assert a[0] == pytest.approx(b[0], rel=2e-2)  # same weights, same batch: equal within bf16
    for i in range(0, 50, 10):  # the curves stay close, and both learn
        assert sum(a[i : i + 10]) / 10 == pytest.approx(sum(b[i : i + 10]) / 10, abs=0.15), (
            i,
            a,
            b,
        )
    assert sum(a[-10:]) < sum(a[:10]) and sum(b[-10:]) < sum(b[:10])
    bn, bn_twin = model.bn1, twin.bn1  # BN running statistics are updated through the graph
    assert int(bn.num_batches_tracked) == 50 and bn.running_mean.abs().sum() > 0
    torch.testing.assert_close(bn.running_var, bn_twin.running_var, rtol=0.1, atol=0.05)
    if fast.cuda_graphs:
        assert cudagraph_skips() == skips, (
            "inductor fell back from CUDA graphs (TORCH_LOGS=perf_hints says why)"
        )


def test_the_training_loop_never_recompiles(device, tmp_path):
    """Eval, lr changes, gradient-norm reads and layer-statistics hooks all run between the compiled
    steps of a real run; none of them may cost a recompilation (or a CUDA-graph fallback)."""
    c = cfg(
        device,
        "trainer.compile=default",
        "schedule.iterations=60",
        "schedule.milestones=[20,40]",
        "trainer.log_every=10",
        "trainer.eval_every=20",
        "diagnostics.layer_stats=eval",
        "diagnostics.grad_norms=[1,25,45]",
    )
    skips = cudagraph_skips()
    with torch._dynamo.config.patch(error_on_recompile=True):  # a recompilation raises
        s = train(c, tmp_path / "run")
    assert s["status"] == "completed" and s["fast_path"]["compile"] == "default"
    assert s["fast_path"]["cuda_graphs"] is (device.type == "cuda")
    assert cudagraph_skips() == skips
    grads = pd.read_csv(tmp_path / "run" / "grad_norms.csv")
    assert sorted(grads["iter"].unique()) == [1, 25, 45]
    assert sorted(pd.read_csv(tmp_path / "run" / "layer_stats.csv")["iter"].unique()) == [
        20,
        40,
        60,
    ]


def test_eval_and_diagnostics_see_the_weights_the_graph_trained(device):
    """The eager model that eval and the diagnostics use holds the compiled step's weights."""
    fast = fast_path(device)
    fast.new_job()
    torch.manual_seed(0)
    model = resnet_cifar(6 * N + 2).to(device, memory_format=fast.memory_format)
    step = TrainStep(model, fast.optimizer(model.parameters(), OptimizerConfig()), fast)
    data = batches(device, 6)
    norms = []
    for i, (x, y) in enumerate(data):
        step(x, y, (lambda: norms.append(conv_grad_norms(model))) if i == 4 else None)
    images, labels = (t.to(device) for t in make_synthetic(100, seed=5))
    loss, err = evaluate(
        model, images, labels, 64, pixel_mean(images), fast
    )  # eval batches of another shape
    assert loss == loss and 0 <= err <= 100 and model.training  # finite, and back in training mode
    stats = layer_response_std(model, [data[0][0][:32]])
    assert len(stats) == 6 * N + 1 and all(r["std"] > 0 for r in stats)
    assert len(norms) == 1 and all(r["grad_norm"] > 0 for r in norms[0])


# --- no host-device sync in the hot loop --------------------------------------------------------
@pytest.mark.parametrize("compile_mode", ["default", "off"])
def test_no_host_device_sync_between_log_steps(device, tmp_path, monkeypatch, compile_mode):
    """From the first batch after a log step to the sync that closes the next window, every op of
    the real loop runs under ``torch.cuda.set_sync_debug_mode("error")``: a sync there raises."""
    if device.type == "cpu" and compile_mode == "default":
        pytest.skip(
            "the CPU stand-in checks the eager loop's wiring only (no syncs to catch on a CPU)"
        )
    cuda = device.type == "cuda"
    guarded = {"steps": 0, "armed": 0}
    real_next, real_sync = DeviceBatches.next, train_mod.device_sync

    def set_mode(mode: str) -> None:
        if cuda:
            torch.cuda.set_sync_debug_mode(mode)

    def next_(self):
        guarded["steps"] += 1
        if guarded["steps"] > 4:  # after compilation and CUDA-graph recording
            set_mode("error")
            guarded["armed"] += 1
        return real_next(self)

    def sync(dev):
        set_mode("default")  # the log step: reading back is what it is for
        real_sync(dev)

    monkeypatch.setattr(DeviceBatches, "next", next_)
    monkeypatch.setattr(train_mod, "device_sync", sync)
    c = cfg(
        device,
        f"trainer.compile={compile_mode}",
        "schedule.iterations=60",
        "schedule.milestones=[20,40]",
        "trainer.log_every=10",
        "trainer.eval_every=20",
    )
    try:
        s = train(c, tmp_path / "run")
    finally:
        set_mode("default")
    assert (
        s["status"] == "completed" and guarded["armed"] == 60 - 4
    )  # epochs of 8 steps: new permutations too


# --- stacked runs on the fast path ---------------------------------------------------------------
def test_a_stack_trains_on_the_fast_path_without_recompiles_or_syncs(device, tmp_path, monkeypatch):
    """trainer.stack's grouped net on the device's fast path (on CUDA: bf16, channels_last,
    compile, CUDA graphs): no recompilation, no CUDA-graph fallback, no host-device sync between
    log steps, every run's record complete, and each run learning as its separate run does."""
    import resnet_repro.training.train as train_mod
    import resnet_repro.training.train_stack as stack_mod
    from resnet_repro.data.pipeline import StackedBatches

    cuda = device.type == "cuda"
    guarded = {"steps": 0, "armed": 0}
    real_next, real_sync = StackedBatches.next, train_mod.device_sync  # the one loop's

    def next_(self):
        guarded["steps"] += 1
        if guarded["steps"] > 4 and cuda:  # after compilation and CUDA-graph recording
            torch.cuda.set_sync_debug_mode("error")
            guarded["armed"] += 1
        return real_next(self)

    def sync(dev):
        if cuda:
            torch.cuda.set_sync_debug_mode("default")
        real_sync(dev)

    monkeypatch.setattr(StackedBatches, "next", next_)
    monkeypatch.setattr(train_mod, "device_sync", sync)
    ov = (
        "trainer.compile=default",
        "schedule.iterations=60",
        "schedule.milestones=[20,40]",
        "trainer.log_every=10",
        "trainer.eval_every=20",
        "diagnostics.layer_stats=eval",
        "diagnostics.grad_norms=[1,25]",
    )
    cfgs = [
        cfg(device, *ov, f"model.residual={r}", f"seed={s}")
        for r, s in ((True, 0), (False, 0), (True, 1))
    ]
    skips = cudagraph_skips()
    try:
        with torch._dynamo.config.patch(error_on_recompile=True):
            out = stack_mod.train_stack(cfgs, [tmp_path / f"run{i}" for i in range(3)])
    finally:
        if cuda:
            torch.cuda.set_sync_debug_mode("default")
    assert [s["status"] for s in out] == ["completed"] * 3 and guarded["armed"] == (
        60 - 4 if cuda else 0
    )
    assert (
        out[0]["fast_path"]["compile"] == "default" and out[0]["fast_path"]["cuda_graphs"] is cuda
    )
    assert cudagraph_skips() == skips
    for i in range(3):
        run = tmp_path / f"run{i}"
        for f in (
            "config.yaml",
            "metrics.csv",
            "summary.json",
            "checkpoint.pt",
            "layer_stats.csv",
            "grad_norms.csv",
        ):
            assert (run / f).is_file(), f
        hist = pd.read_csv(run / "metrics.csv")
        assert (
            hist["iter"].tolist() == list(range(10, 61, 10)) and hist["val_err"].notna().sum() == 3
        )
        assert hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[0]
    monkeypatch.undo()
    alone = train(
        cfgs[0], tmp_path / "alone"
    )  # the first run by itself: the same curve, up to rounding
    a, b = (pd.read_csv(d / "metrics.csv") for d in (tmp_path / "alone", tmp_path / "run0"))
    assert a["train_loss"].tolist() == pytest.approx(b["train_loss"].tolist(), abs=0.25)
    assert alone["final_val_err"] == pytest.approx(out[0]["final_val_err"], abs=25)


# --- the pipeline and the optimizer on the device -------------------------------------------------
def test_the_device_pipeline_equals_the_cpu_pipeline_bit_for_bit(device):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=g)
    top, left = torch.randint(0, 9, (2, 64), generator=g)
    flip = torch.randint(0, 2, (64,), generator=g).bool()
    mean = pixel_mean(x)
    on_cpu = normalize(crop_flip(x, top, left, flip, 4), mean)
    on_dev = normalize(
        crop_flip(x.to(device), top.to(device), left.to(device), flip.to(device), 4),
        mean.to(device),
    )
    assert torch.equal(on_dev.cpu(), on_cpu)
    idx = torch.randperm(64, generator=g)[:16]
    assert torch.equal(x.to(device)[idx.to(device)].cpu(), x[idx])


def test_fused_sgd_equals_foreach_sgd_on_the_same_gradients(device):
    torch.manual_seed(0)
    shapes = [(16, 3, 3, 3), (16,), (32, 16, 3, 3), (10, 64)]
    params = {
        impl: [torch.randn(s, device=device).requires_grad_() for s in shapes]
        for impl in ("fused", "foreach")
    }
    with torch.no_grad():
        for a, b in zip(params["fused"], params["foreach"], strict=True):
            b.copy_(a)
    opts = {
        impl: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-4, **{impl: True})
        for impl, ps in params.items()
    }
    for step in range(5):
        grads = [torch.randn(s, device=device) for s in shapes]
        for impl, ps in params.items():
            for p, gr in zip(ps, grads, strict=True):
                p.grad = gr.clone()
            opts[impl].param_groups[0]["lr"] = 0.1 if step < 3 else 0.01  # an lr change on the way
            opts[impl].step()
    for a, b in zip(params["fused"], params["foreach"], strict=True):
        torch.testing.assert_close(
            a, b, rtol=1e-5, atol=1e-6
        )  # the same update, rounded in another order


# --- kill and resume ----------------------------------------------------------------------------
CHILD = (
    "import sys; sys.argv = ['resnet-train', *sys.argv[1:]]; "
    "from resnet_repro.cli.train import main; main()"
)


def _start(device: torch.device, run: Path) -> subprocess.Popen:
    args = [
        "experiment=smoke",
        *fast_overrides(device),
        "trainer.progress=false",
        f"trainer.device={device.type}",
        "trainer.deterministic=true",
        f"model.n={N}",
        f"trainer.batch_size={BATCH}",
        "dataset.num_train=1280",
        "dataset.val_size=256",
        "schedule.iterations=80",
        "schedule.milestones=[40,60]",
        "trainer.log_every=5",
        "trainer.eval_every=10",
        "diagnostics.layer_stats=eval",
        f"hydra.run.dir={run}",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, *args],
        cwd=run.parent,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_kill_and_resume_is_bit_identical_when_deterministic(device, tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "cut"
    p = _start(device, ref)
    assert p.wait(timeout=HANG_LIMIT_S) == 0, p.stderr.read()[-3000:]
    p = _start(device, run)
    deadline = time.monotonic() + HANG_LIMIT_S  # a loaded machine is slower, never red
    while not (run / "checkpoint.pt").exists() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    assert p.wait(timeout=HANG_LIMIT_S) == -signal.SIGKILL, (
        f"the run ended before it could be killed: {p.stderr.read()[-3000:]}"
    )
    done = torch.load(run / "checkpoint.pt", weights_only=True)["iteration"]
    assert 0 < done < 80
    p = _start(device, run)
    assert p.wait(timeout=HANG_LIMIT_S) == 0, p.stderr.read()[-3000:]
    a = torch.load(ref / "checkpoint.pt", weights_only=True)
    b = torch.load(run / "checkpoint.pt", weights_only=True)
    assert a["device_type"] == b["device_type"] == device.type
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), f"resumed at {done}"
    timing = ["time_s", "img_per_s"]
    pd.testing.assert_frame_equal(
        pd.read_csv(ref / "metrics.csv").drop(columns=timing),
        pd.read_csv(run / "metrics.csv").drop(columns=timing),
    )
    pd.testing.assert_frame_equal(
        pd.read_csv(ref / "layer_stats.csv"), pd.read_csv(run / "layer_stats.csv")
    )


# --- a short real-data run ----------------------------------------------------------------------
def test_a_short_real_data_run_leaves_a_complete_record(device, data_root, tmp_path):
    iters = 30 if device.type == "cpu" else 300
    c = smoke_cfg(
        *fast_overrides(device),
        "dataset=cifar10",
        f"dataset.root={data_root}",
        "dataset.download=false",
        f"trainer.device={device.type}",
        "model.n=3",
        f"trainer.batch_size={128 if iters == 300 else 32}",
        f"schedule.iterations={iters}",
        f"schedule.milestones=[{iters}]",
        "trainer.log_every=10",
        f"trainer.eval_every={iters // 3}",
        "trainer.eval_batch_size=1000",
        "diagnostics.grad_norms=[1,10]",
    )
    s = train(c, tmp_path / "run")
    run = tmp_path / "run"
    for f in (
        "config.yaml",
        "metrics.csv",
        "summary.json",
        "checkpoint.pt",
        "layer_stats.csv",
        "grad_norms.csv",
    ):
        assert (run / f).is_file(), f
    summary = json.loads((run / "summary.json").read_text())
    assert (
        summary == {**s, "wandb": summary["wandb"]}
        and s["status"] == "completed"
        and s["iterations"] == iters
    )
    hist = pd.read_csv(run / "metrics.csv")
    assert hist["iter"].iloc[-1] == iters and hist["val_err"].notna().sum() == 3
    assert s["images_per_s"] > 0 and s["device"].startswith(device.type)
    print(
        f"\n[cuda] ResNet-20 on real CIFAR-10, {iters} iterations on {s['device_name']} "
        f"({s['fast_path']}): validation error {s['final_val_err']:.2f}% (chance 90%), "
        f"{s['images_per_s']:,.0f} img/s, wall {s['wall_time_s']:.1f} s"
    )
    if iters == 300:
        assert s["final_val_err"] < 75.0  # well below chance after 300 steps

"""The fast path: resolved from config per device, and correct on the CPU (the GPU paths need a
GPU)."""

import dataclasses
import json

import pytest
import torch

from resnet_repro.config import OptimizerConfig, TrainerConfig
from resnet_repro.errors import CheckpointError, ConfigError
from resnet_repro.models import resnet_cifar
from resnet_repro.training import step
from resnet_repro.training.step import FAST_BY_DEFAULT, FastPath, TrainStep
from resnet_repro.training.train import train

from .helpers import cfg_of, interrupt_after, smoke_cfg


def test_auto_is_the_papers_fp32_eager_on_every_device_until_the_fast_path_is_verified_there():
    fp32 = {
        "precision": "fp32",
        "channels_last": False,
        "compile": "off",
        "cuda_graphs": False,
        "optimizer_impl": "foreach",
        "tf32": False,
    }
    assert FAST_BY_DEFAULT == frozenset()  # no device type has passed its GPU check yet
    for device in (torch.device("cpu"), torch.device("cuda", 0)):
        assert FastPath.resolve(TrainerConfig(), OptimizerConfig(), device).describe() == fp32
    plain = FastPath.resolve(
        TrainerConfig(precision="fp32", compile="off", channels_last=False),
        OptimizerConfig(impl="loop"),
        torch.device("cuda", 0),
    )
    assert plain.describe() == {**fp32, "optimizer_impl": "loop"}


def test_trainer_fast_is_the_whole_fast_path_and_a_verified_device_gets_it_from_auto(monkeypatch):
    fast = cfg_of("trainer=fast").trainer
    cuda = FastPath.resolve(fast, OptimizerConfig(), torch.device("cuda", 0))
    assert cuda.describe() == {
        "precision": "bf16",
        "channels_last": True,
        "compile": "default",
        "cuda_graphs": True,
        "optimizer_impl": "fused",
        "tf32": True,
    }
    cpu = FastPath.resolve(fast, OptimizerConfig(), torch.device("cpu"))
    assert cpu.describe() == {
        "precision": "bf16",
        "channels_last": True,
        "compile": "default",
        "cuda_graphs": False,
        "optimizer_impl": "foreach",
        "tf32": False,
    }
    det = FastPath.resolve(
        dataclasses.replace(fast, deterministic=True), OptimizerConfig(), torch.device("cuda", 0)
    )
    assert det.compile == "off" and not det.cuda_graphs  # deterministic runs stay eager
    monkeypatch.setattr(
        step, "FAST_BY_DEFAULT", frozenset({"cuda"})
    )  # the rule, once a GPU check passes
    assert (
        FastPath.resolve(TrainerConfig(), OptimizerConfig(), torch.device("cuda", 0)).describe()
        == cuda.describe()
    )
    assert (
        FastPath.resolve(TrainerConfig(), OptimizerConfig(), torch.device("cpu")).precision
        == "fp32"
    )


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "trainer.precision=fp8",
            "trainer.precision='fp8' is not valid. Valid choices: auto, fp32, bf16, fp16.",
        ),
        (
            "trainer.compile=fast",
            "trainer.compile='fast' is not valid. Valid choices: auto, off, default, max-autotune.",
        ),
        (
            "optimizer.impl=apex",
            "optimizer.impl='apex' is not valid. Valid choices: auto, fused, foreach, loop.",
        ),
    ],
)
def test_bad_fast_path_values_are_clear_errors(override, message):
    with pytest.raises(ConfigError) as ex:
        smoke_cfg(override)
    assert str(ex.value) == message


def _step(fast: FastPath, seed=0):
    torch.manual_seed(seed)
    model = resnet_cifar(8).to(memory_format=fast.memory_format)
    return model, TrainStep(model, fast.optimizer(model.parameters(), OptimizerConfig()), fast)


def _fast(**kw) -> FastPath:
    return FastPath.resolve(TrainerConfig(**kw), OptimizerConfig(), torch.device("cpu"))


@pytest.mark.slow
def test_each_setting_trains_and_stays_close_to_fp32():
    torch.manual_seed(1)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    ref_model, ref = _step(_fast())
    ref_losses = [ref(x, y)[0].item() for _ in range(3)]
    for kw, tol in [
        ({"channels_last": True}, 1e-4),
        ({"precision": "bf16"}, 5e-2),
        ({"precision": "fp16"}, 5e-2),
    ]:
        model, step = _step(_fast(**kw))
        losses = [step(x, y)[0].float().item() for _ in range(3)]
        assert losses == pytest.approx(ref_losses, rel=tol), kw
        assert ref_losses[-1] < ref_losses[0] and losses[-1] < losses[0]  # both learn the batch


def test_optimizer_implementations_agree():
    torch.manual_seed(1)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    weights = []
    for impl in ("foreach", "loop"):
        fast = FastPath.resolve(TrainerConfig(), OptimizerConfig(impl=impl), torch.device("cpu"))
        model, step = _step(fast)
        for _ in range(2):
            step(x, y)
        weights.append(model.fc.weight.detach().clone())
    torch.testing.assert_close(weights[0], weights[1])


@pytest.mark.slow
def test_compiled_step_matches_eager_on_cpu():
    torch.manual_seed(1)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    _, eager = _step(_fast())
    _, compiled = _step(_fast(compile="default"))
    assert compiled.call is not compiled.model  # the step calls the compiled module
    a = [eager(x, y)[0].item() for _ in range(2)]
    b = [compiled(x, y)[0].item() for _ in range(2)]
    assert b == pytest.approx(a, rel=1e-4)


@pytest.mark.slow
def test_fp16_resume_restores_the_grad_scaler(tmp_path, monkeypatch):
    ov = ("trainer.precision=fp16", "trainer.eval_every=4", "trainer.log_every=2")
    full = train(smoke_cfg(*ov), tmp_path / "full")
    interrupt_after(monkeypatch, 9)
    with pytest.raises(KeyboardInterrupt):
        train(smoke_cfg(*ov), tmp_path / "cut")
    monkeypatch.undo()
    resumed = train(smoke_cfg(*ov), tmp_path / "cut")
    wa = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    wb = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert wa["scaler"] and wa["scaler"] == wb["scaler"]
    assert all(torch.equal(wa["model"][k], wb["model"][k]) for k in wa["model"])
    assert resumed["final_val_err"] == full["final_val_err"]
    s = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert s["fast_path"]["precision"] == "fp16"


def test_loaded_momentum_buffers_take_the_parameters_layout():
    from resnet_repro.training.step import match_optimizer_strides

    model = resnet_cifar(8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()  # momentum buffers in the contiguous layout
    state = opt.state_dict()
    model = model.to(memory_format=torch.channels_last)  # resumed in another layout
    opt2 = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(state)
    conv = model.conv1.weight
    assert opt2.state[conv]["momentum_buffer"].stride() != conv.stride()
    before = opt2.state[conv]["momentum_buffer"].clone()
    match_optimizer_strides(opt2)
    buf = opt2.state[conv]["momentum_buffer"]
    assert buf.stride() == conv.stride() and torch.equal(buf, before)


# --- the CUDA-path defects a review found, each pinned on the CPU ------------------------------
@pytest.mark.slow
def test_the_loop_reads_the_clock_only_after_the_device_has_synced(tmp_path, monkeypatch):
    """With CUDA graphs the steps run ahead of the host: a window's time must be read after a
    sync."""
    import resnet_repro.training.train as train_mod

    events = []
    real_call, real_clock = TrainStep.__call__, train_mod.clock

    def call(self, *a, **kw):
        events.append("step")
        return real_call(self, *a, **kw)

    monkeypatch.setattr(TrainStep, "__call__", call)
    monkeypatch.setattr(train_mod, "device_sync", lambda device: events.append("sync"))
    monkeypatch.setattr(train_mod, "clock", lambda: events.append("clock") or real_clock())
    train(smoke_cfg("trainer.log_every=3", "trainer.eval_every=6"), tmp_path / "run")

    closing = 0
    for i, e in enumerate(events):
        if e == "clock" and "step" in events[:i]:
            since_step = events[i - events[:i][::-1].index("step") : i]
            if since_step:  # a clock read that closes a window of steps
                closing += 1
                assert "sync" in since_step, events[max(0, i - 5) : i + 1]
    assert closing >= 20 // 3  # every log step closes a window


@pytest.mark.slow
def test_every_run_sets_deterministic_algorithms_from_its_config(tmp_path):
    train(smoke_cfg("trainer.deterministic=true"), tmp_path / "a")
    assert torch.are_deterministic_algorithms_enabled()
    train(smoke_cfg(), tmp_path / "b")  # a later job in the same process runs at full speed again
    assert not torch.are_deterministic_algorithms_enabled()


def test_fp32_means_ieee_fp32_and_the_autocast_precisions_allow_tf32():
    cuda = torch.device("cuda", 0)  # flags only: no CUDA device needed to set them
    try:
        for precision, tf32 in (
            ("fp32", False),
            ("bf16", True),
            ("auto", False),
            ("fp16", True),
            ("fp32", False),
        ):
            fast = FastPath.resolve(TrainerConfig(precision=precision), OptimizerConfig(), cuda)
            fast.configure_backends()
            assert (
                torch.backends.cudnn.allow_tf32 is tf32
                and torch.backends.cuda.matmul.allow_tf32 is tf32
            )
            assert fast.describe()["tf32"] is tf32 and torch.backends.cudnn.benchmark
        FastPath.resolve(
            TrainerConfig(deterministic=True), OptimizerConfig(), cuda
        ).configure_backends()
        assert not torch.backends.cudnn.benchmark and torch.are_deterministic_algorithms_enabled()
    finally:
        FastPath.resolve(
            TrainerConfig(), OptimizerConfig(), torch.device("cpu")
        ).configure_backends()


@pytest.mark.slow
def test_compiled_code_is_reset_once_per_job_never_per_step(tmp_path, monkeypatch):
    """A reset tears down the CUDA-graph trees of every live compiled step in the process."""
    resets = []
    monkeypatch.setattr(torch.compiler, "reset", lambda: resets.append(1))
    monkeypatch.setattr(
        torch, "compile", lambda model, **kw: model
    )  # compiling itself is not the point
    fast = _fast(compile="default")
    _step(fast)
    _step(fast)
    assert resets == []  # two live steps, nothing torn down
    train(smoke_cfg("trainer.compile=default"), tmp_path / "run")
    assert resets == [1]  # one job, one reset
    train(smoke_cfg(), tmp_path / "eager")
    assert resets == [
        1,
        1,
    ]  # an eager job drops (and frees) the compiled code of jobs before it too


@pytest.mark.slow
def test_resume_on_another_device_type_is_refused_before_any_work(tmp_path, monkeypatch):
    import resnet_repro.training.train as train_mod

    run = tmp_path / "run"
    interrupt_after(monkeypatch, 12)
    with pytest.raises(KeyboardInterrupt):
        train(smoke_cfg(), run)
    monkeypatch.undo()
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["device_type"] == "cpu"
    ckpt["device_type"] = "cuda"
    torch.save(ckpt, run / "checkpoint.pt")
    monkeypatch.setattr(
        train_mod, "load_splits", lambda *a: pytest.fail("data loaded before the check")
    )
    with pytest.raises(CheckpointError) as ex:
        train(smoke_cfg(), run)
    assert str(ex.value) == (
        f"{run / 'checkpoint.pt'} was written on cuda and this run is on cpu: the data sampler's "
        f"random stream cannot move between device types. Resume with trainer.device=cuda, or "
        f"start a new run (name=<new name>)."
    )
    # a checkpoint from before the device type was recorded: told apart by its generator state
    del ckpt["device_type"]
    ckpt["batches"]["generator"] = torch.zeros(16, dtype=torch.uint8)  # a CUDA generator's state
    torch.save(ckpt, run / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="was written on cuda and this run is on cpu"):
        train(smoke_cfg(), run)


def test_a_cpu_runs_device_name_is_the_cpus_model_and_core_count(tmp_path, monkeypatch):
    from resnet_repro.training import device

    monkeypatch.setattr(device.os, "cpu_count", lambda: 2)
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9B14\nprocessor\t: 1\n"
    )
    assert device.platform_cpu(str(info)) == "AMD EPYC 9B14 (2 cores)"
    monkeypatch.setattr(device.platform, "processor", lambda: "")
    monkeypatch.setattr(device.platform, "machine", lambda: "aarch64")
    assert (
        device.platform_cpu(str(tmp_path / "none")) == "aarch64 (2 cores)"
    )  # no /proc/cpuinfo: the platform's word


def test_a_jobs_threads_are_its_own_setting_or_torchs_count_never_an_earlier_jobs():
    from resnet_repro.training.device import TORCH_THREADS, set_threads

    try:
        assert set_threads(1).startswith("CPU threads: 1 (trainer.num_threads=1; OMP_WAIT_POLICY=")
        assert torch.get_num_threads() == 1
        line = set_threads(None)  # the next job of a sweep, with the default
        assert torch.get_num_threads() == TORCH_THREADS
        assert line.startswith(
            f"CPU threads: {TORCH_THREADS} (torch's count; trainer.num_threads=N"
        )
    finally:
        torch.set_num_threads(TORCH_THREADS)

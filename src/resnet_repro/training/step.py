"""The training step (``TrainStep``) and the fast path it runs on (``FastPath``): precision, memory
layout, compilation and the optimizer's kernel, resolved from config for the device a run lands on.

By default (``auto``) every device trains in the paper's precision: IEEE fp32 (no TF32), eager,
the default layout (``FAST_BY_DEFAULT`` below says where that changes). The fast path, asked for
with ``trainer=fast`` or key by key:

- precision: bf16 autocast (the fp32 work autocast leaves may use TF32); fp16 adds a gradient
  scaler.
- channels_last memory format (cuDNN's fast layout for these convs).
- a fused SGD on CUDA (one kernel for the whole update), foreach elsewhere and in fp32 eager.
- ``torch.compile`` of the model (forward and backward), replayed as CUDA graphs on CUDA: the
  training batch has a static shape (every epoch drops its last partial batch), so one graph
  serves every step. Evaluation and layer statistics run the eager model (other shapes, eval mode).

torch keeps its backend flags (deterministic algorithms, cuDNN autotuning, TF32) per process, so
:meth:`FastPath.configure_backends` sets all of them on every run: a sweep's earlier job never
leaves its settings to the next one.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import OptimizerConfig, TrainerConfig

log = logging.getLogger(__name__)
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

# The device types where ``auto`` gives the fast path (bf16 autocast, channels_last, torch.compile,
# CUDA graphs and fused SGD on CUDA) rather than the paper's precision (IEEE fp32, no TF32, eager).
# A device type joins only once its run of the CUDA tests (``pytest -m cuda``) has passed and
# ``benchmarks/throughput.py`` has measured the gain on it, as ``trainer.stack=auto`` follows
# ``stacking.MEASURED_SPEEDUP``. So far none has: every device trains in fp32 unless asked
# (``trainer=fast``, or the ``trainer.*`` keys one by one). On the CPU the fast path is tested and
# measured (1.66x for ResNet-20, docs/benchmarks.md) but moves the error (README, Results), so the
# paper's precision stays the default there too.
FAST_BY_DEFAULT: frozenset[str] = frozenset()


@dataclass
class FastPath:
    precision: str  # fp32 | bf16 | fp16
    channels_last: bool
    compile: str  # off | default | max-autotune
    cuda_graphs: bool
    optimizer_impl: str  # fused | foreach | loop
    device_type: str
    deterministic: bool = False

    @classmethod
    def resolve(cls, t: TrainerConfig, o: OptimizerConfig, device: torch.device) -> FastPath:
        cuda = device.type == "cuda"
        verified = device.type in FAST_BY_DEFAULT
        precision = t.precision if t.precision != "auto" else ("bf16" if verified else "fp32")
        compile_mode = t.compile if t.compile != "auto" else ("default" if verified else "off")
        fast = (
            precision != "fp32" or compile_mode != "off"
        )  # the fast path asked for, or verified here
        impl = o.impl if o.impl != "auto" else ("fused" if cuda and fast else "foreach")
        channels_last = t.channels_last if t.channels_last is not None else verified
        if t.deterministic and compile_mode != "off":
            log.info(
                "trainer.deterministic=true: torch.compile is off (its kernels may not be "
                "deterministic)"
            )
            compile_mode = "off"
        return cls(
            precision=precision,
            channels_last=channels_last,
            compile=compile_mode,
            cuda_graphs=bool(t.cuda_graphs and cuda and compile_mode != "off"),
            optimizer_impl=impl,
            device_type=device.type,
            deterministic=t.deterministic,
        )

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast(self):
        """The forward pass's precision context (a no-op for fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=AMP_DTYPES[self.precision])

    def scaler(self) -> torch.amp.GradScaler:
        """A gradient scaler, active for fp16 only (bf16 has fp32's range)."""
        return torch.amp.GradScaler(self.device_type, enabled=self.precision == "fp16")

    def optimizer(self, params, o: OptimizerConfig) -> torch.optim.SGD:
        kw = (
            {"fused": True}
            if self.optimizer_impl == "fused"
            else {"foreach": self.optimizer_impl == "foreach"}
        )
        return torch.optim.SGD(
            params,
            lr=o.lr,
            momentum=o.momentum,
            weight_decay=o.weight_decay,
            nesterov=o.nesterov,
            **kw,
        )

    def configure_backends(self) -> None:
        """Set this process's backend flags for the run, every one of them, every time.

        - deterministic algorithms on or off (``trainer.deterministic``);
        - cuDNN autotuning on CUDA, unless deterministic;
        - TF32: off for ``fp32`` (IEEE fp32 convs and matmuls), on for the autocast precisions,
          whose remaining fp32 work may use it.
        """
        cuda = self.device_type == "cuda"
        torch.use_deterministic_algorithms(self.deterministic)
        torch.backends.cudnn.benchmark = cuda and not self.deterministic
        # the flags torch has had since 1.7; mixing them with the newer fp32_precision API
        # is refused
        tf32 = self.precision != "fp32"
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32

    def new_job(self) -> None:
        """Start a job: set the backend flags and drop the compiled code of this process's earlier
        jobs.

        Every architecture adds a cache entry to the same ``forward``; past torch's recompile limit
        (8) a new one would silently run eagerly. Called once per job, never per step object: a
        reset tears down the CUDA-graph trees of every live compiled step in the process.
        """
        self.configure_backends()
        torch.compiler.reset()  # also frees the CUDA-graph memory of earlier compiled jobs

    def compiled(self, model: nn.Module) -> nn.Module:
        """The module the training step calls: the model itself, or its compiled form."""
        if self.compile == "off":
            return model
        mode = {
            ("default", False): "default",
            ("default", True): "reduce-overhead",
            ("max-autotune", True): "max-autotune",
            ("max-autotune", False): "max-autotune-no-cudagraphs",
        }[(self.compile, self.cuda_graphs)]
        return torch.compile(model, mode=mode)

    def step_begin(self) -> None:
        """Mark a new training step for CUDA-graph replay (outputs of the last one may be
        reused)."""
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()

    def describe(self) -> dict:
        return {
            "precision": self.precision,
            "channels_last": self.channels_last,
            "compile": self.compile,
            "cuda_graphs": self.cuda_graphs,
            "optimizer_impl": self.optimizer_impl,
            "tf32": self.device_type == "cuda" and self.precision != "fp32",
        }


def cudagraph_skips() -> int:
    """How often inductor fell back from CUDA graphs to plain kernels in this process (0: never).

    torch counts these in ``torch._dynamo.utils.counters["inductor"]["cudagraph_skips"]`` and logs
    why; a step that claims CUDA graphs must show 0 here.
    """
    from torch._dynamo.utils import counters

    return int(counters["inductor"]["cudagraph_skips"])


class TrainStep:
    """One SGD step on a batch: forward under autocast, (scaled) backward, update.

    The training loop and the throughput benchmark both call this, so the benchmark times the
    harness's own step. ``on_grads`` (optional) sees the unscaled gradients before the update.
    ``loss(out, y)`` gives the loss to backpropagate and the one the step returns (a stacked net's
    sum and its members' losses); by default both are the cross-entropy.
    """

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer, fast: FastPath, loss=None):
        self.model, self.opt, self.fast = model, opt, fast
        self.loss = loss or _cross_entropy
        self.scaler = fast.scaler()
        self.call = fast.compiled(model)

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, on_grads=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        fast = self.fast
        fast.step_begin()
        with fast.autocast():
            out = self.call(x.contiguous(memory_format=fast.memory_format))
            loss, shown = self.loss(out, y)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if on_grads is not None:
            self.scaler.unscale_(self.opt)
            on_grads()
        self.scaler.step(self.opt)
        self.scaler.update()
        return shown, out


def _cross_entropy(out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    loss = F.cross_entropy(out, y)
    return loss, loss


def match_optimizer_strides(opt: torch.optim.Optimizer) -> None:
    """Give loaded momentum buffers their parameters' memory layout.

    A checkpoint may come from a run in another layout (channels_last or not, CPU or CUDA); the
    fused CUDA SGD kernel requires parameters, gradients and buffers with the same strides.
    """
    for group in opt.param_groups:
        for p in group["params"]:
            buf = opt.state.get(p, {}).get("momentum_buffer")
            if buf is not None and buf.stride() != p.stride():
                opt.state[p]["momentum_buffer"] = torch.empty_like(p).copy_(buf)

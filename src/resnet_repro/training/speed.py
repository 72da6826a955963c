"""Timing the training step: what the benchmark reports, and the study's wall time it projects.

- :func:`measure` times the harness's own step (``TrainStep`` on ``DeviceBatches``) for one net
  and one setting: images/s as the median of timed windows after warm-up steps (compilation and
  CUDA-graph recording happen there), with the warm-up's seconds, peak memory and CUDA-graph skips.
- :class:`Timings` turns such measurements (a benchmark JSON) into seconds per iteration and
  start-up seconds for any net, linear in depth between the depths measured, and into the
  slow-down of each run when k runs share one GPU.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..config import ModelConfig, OptimizerConfig, TrainerConfig
from ..data.pipeline import DeviceBatches, pixel_mean
from ..models import build_model
from .device import device_sync
from .step import FastPath, TrainStep, cudagraph_skips


def timed_windows(
    step_fn: Callable,
    device: torch.device,
    batch: int,
    warmup: int,
    iters: int,
    windows: int,
    timing: dict | None = None,
    before_window: Callable[[int], None] | None = None,
) -> float:
    """Median images/s over ``windows`` windows of ``iters`` calls, after ``warmup`` calls.

    The device is synchronised before every clock read. ``before_window(iters)`` (optional) runs
    untimed before each window. ``timing`` (optional) receives ``warmup_s``, the seconds of the
    warm-up calls (compilation happens there), and ``t0``/``t1``, the wall-clock start and end of
    the timed windows.
    """
    t = time.perf_counter()
    for _ in range(warmup):
        step_fn()
    device_sync(device)
    if timing is not None:
        timing["warmup_s"] = time.perf_counter() - t
        timing["t0"] = time.time()
    rates = []
    for _ in range(windows):
        if before_window is not None:
            before_window(iters)
        device_sync(device)
        t0 = time.perf_counter()
        for _ in range(iters):
            step_fn()
        device_sync(device)
        rates.append(iters * batch / (time.perf_counter() - t0))
    if timing is not None:
        timing["t1"] = time.time()
    return statistics.median(rates)


def harness_step(
    variant: str,
    depth: int,
    device: torch.device,
    x: torch.Tensor,
    y: torch.Tensor,
    batch: int,
    setting: dict,
    seed: int = 0,
    model_cfg: ModelConfig | None = None,
    optimizer: OptimizerConfig | None = None,
) -> tuple[Callable[[], torch.Tensor], FastPath]:
    """The harness's training step on its device-resident pipeline, as a no-argument callable.

    ``setting`` holds ``TrainerConfig`` fields (precision, compile, channels_last, ...). The net is
    the CIFAR net of ``variant`` and ``depth`` unless ``model_cfg`` (a resolved ``ModelConfig``)
    says otherwise; the optimizer is SGD with the paper's settings unless ``optimizer`` is given.
    The step starts a job of its own: this process's backend flags are set for it and compiled
    code of earlier steps is dropped.
    """
    torch.manual_seed(seed)
    o = optimizer or OptimizerConfig()
    fast = FastPath.resolve(TrainerConfig(**setting), o, device)
    fast.new_job()
    model = build_model(
        model_cfg or ModelConfig(depth=depth, n=(depth - 2) // 6, residual=variant == "residual")
    )
    model = model.to(device, memory_format=fast.memory_format).train()
    step = TrainStep(model, fast.optimizer(model.parameters(), o), fast)
    batches = DeviceBatches(x, y, batch, pixel_mean(x), device, seed=seed)
    wrong = torch.zeros(
        (), device=device, dtype=torch.long
    )  # metrics stay on the device, as in training

    def fn() -> torch.Tensor:
        nonlocal wrong
        xb, yb = batches.next()
        loss, out = step(xb, yb)
        wrong += (out.argmax(1) != yb).sum()
        return loss

    return fn, fast


def peak_memory_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def reset_peak_memory(device: torch.device) -> None:
    """Start a measurement's peak at what it allocates itself: earlier measurements' compiled code
    and CUDA-graph memory are released first."""
    torch.compiler.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def measure(
    variant: str,
    depth: int,
    device: torch.device,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch: int,
    setting: dict,
    warmup: int,
    iters: int,
    windows: int,
    model_cfg: ModelConfig | None = None,
    optimizer: OptimizerConfig | None = None,
) -> dict:
    """Images/s of the harness's step for one net and setting, with what it cost to get there."""
    reset_peak_memory(device)
    skips = cudagraph_skips()
    fn, fast = harness_step(
        variant, depth, device, x, y, batch, setting, model_cfg=model_cfg, optimizer=optimizer
    )
    timing: dict = {}
    rate = timed_windows(fn, device, batch, warmup, iters, windows, timing)
    return {
        "img_per_s": rate,
        "warmup_s": timing["warmup_s"],
        "peak_mem_mb": peak_memory_mb(device),
        "setting": fast.describe(),
        "cudagraph_skips": cudagraph_skips() - skips,
    }


# --- from measurements to estimates ------------------------------------------------------------
def interpolate_in_depth(points: dict[int, float], depth: int) -> tuple[float, bool]:
    """``points[depth]`` when measured, else linear in depth between (or beyond) the measured
    depths; one measured depth is scaled in proportion to depth. Returns (value, estimated).

    A deeper net never costs less than the deepest measured one below it, nor a shallower one
    less than the shallowest measured scaled down with depth: noisy measurements (a loaded
    machine timing the shallower net slower) extrapolate to a floor, never to a negative time."""
    if not points:
        raise ValueError("no measured depths")
    if depth in points:
        return points[depth], False
    pts = sorted(points.items())
    if len(pts) == 1:
        return pts[0][1] * depth / pts[0][0], True
    floor = 0.0
    if depth < pts[0][0]:
        lo, hi = pts[0], pts[1]
        floor = pts[0][1] * depth / pts[0][0]
    elif depth > pts[-1][0]:
        lo, hi = pts[-2], pts[-1]
        floor = pts[-1][1]
    else:
        lo = max((p for p in pts if p[0] < depth), key=lambda p: p[0])
        hi = min((p for p in pts if p[0] > depth), key=lambda p: p[0])
    return max(floor, lo[1] + (hi[1] - lo[1]) * (depth - lo[0]) / (hi[0] - lo[0])), True


@dataclass
class Timings:
    """Seconds per training iteration and start-up seconds per net, and the sharing speed-up.

    ``nets`` maps ``(variant, depth)`` to ``{"s_per_iter", "setup_s"}``; ``sharing`` maps k to the
    aggregate images/s of k runs on one GPU over one run's (1 -> 1.0); ``batch`` is the batch the
    measurements used.
    """

    nets: dict[tuple[str, int], dict] = field(default_factory=dict)
    sharing: dict[int, float] = field(default_factory=lambda: {1: 1.0})
    batch: int = 128

    @classmethod
    def from_result(cls, res: dict) -> Timings:
        """From a benchmark result (``benchmarks/throughput.py --json``)."""
        batch = int(res.get("batch", 128))
        nets = {
            (r["variant"], int(r["depth"])): {
                "s_per_iter": batch / r["ours"]["img_per_s"],
                "setup_s": float(r["ours"].get("warmup_s") or 0.0),
            }
            for r in res.get("rows", [])
            if r.get("ours", {}).get("img_per_s")
        }
        sharing = {1: 1.0}
        for s in res.get("shared") or []:
            single = s.get("img_per_s_single")
            if single:  # k runs cannot do more than k runs' work: more is measurement noise
                sharing[int(s["runs"])] = min(float(s["runs"]), s["img_per_s_total"] / single)
        return cls(nets, sharing, batch)

    def _points(self, variant: str, key: str) -> dict[int, float]:
        pts = {d: t[key] for (v, d), t in self.nets.items() if v == variant}
        return pts or {
            d: t[key] for (_, d), t in self.nets.items()
        }  # the other variant's, if need be

    def seconds_per_iteration(
        self, variant: str, depth: int, batch: int | None = None
    ) -> tuple[float, bool]:
        """Seconds per iteration at ``batch`` (default: the measured batch), and whether
        estimated."""
        s, est = interpolate_in_depth(self._points(variant, "s_per_iter"), depth)
        if batch is not None and batch != self.batch:
            return s * batch / self.batch, True
        return s, est

    def setup_seconds(self, variant: str, depth: int) -> float:
        """Start-up to the first timed step: warm-up steps and compilation, linear in depth."""
        return max(0.0, interpolate_in_depth(self._points(variant, "setup_s"), depth)[0])

    def speedup(self, k: int) -> float:
        """Aggregate throughput of k runs sharing the GPU over one run's (the largest k measured
        <= k)."""
        return self.sharing[max(j for j in self.sharing if j <= k)]

    def slowdown(self, k: int) -> float:
        """How much longer each of k runs sharing the GPU takes than one run alone."""
        return k / self.speedup(k)

    def best_parallel(self, min_gain: float = 1.05) -> int:
        """The k with the most aggregate throughput, where each step up gained at least
        ``min_gain``."""
        best = 1
        for k in sorted(self.sharing):
            if k > best and self.sharing[k] >= self.sharing[best] * min_gain:
                best = k
        return best

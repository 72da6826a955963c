"""Which runs train together as one stacked net (``trainer.stack``), and the configs of a stack's
members.

The nets of one depth in the §4.2 study are the same layers: plain and residual differ only in the
shortcut, seeds only in the numbers. A multirun's jobs that differ only in ``model.residual`` and
``seed`` can train as one grouped net (``models/stacked.py``, trained by ``train_stack.py``), and
each still leaves the record its separate run would. The sweeper plans the stacks here (no torch):

- ``trainer.stack=off``: every job alone;
- ``trainer.stack=k``: up to k jobs per stack; a job the stacked net cannot train is refused,
  by key;
- ``trainer.stack=auto`` (default): the k that measured fastest on the device type the sweep runs on
  (``MEASURED_SPEEDUP``, from ``benchmarks/stacked.py``); alone where nothing measured faster.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
from collections.abc import Callable
from typing import Any

from omegaconf import OmegaConf

from ..config import Config, flat, override_pairs, to_config, to_dict
from ..errors import ConfigError
from ..models.registry import REGISTRY

log = logging.getLogger(__name__)

# What the members of one stack may differ in (the run name follows them); the rest must agree.
MEMBER_KEYS = ("model.residual", "seed", "name")
STACK_KEYS = ("trainer.stack", "trainer.stack_members")

# Training speed of one stack of k against the same k runs one after another (the harness's own
# step, ResNet-20, batch 128), as benchmarks/stacked.py measured it, by device type; auto stacks
# only where some k measured faster than 1. A device type without rows is never stacked by auto.
#   cpu: a 2-core x86_64 machine, fp32, eager:
#        python benchmarks/stacked.py --threads 2 --iters 5 (README)
#   cuda: not measured yet (benchmarks/gpu_check.sh measures it on a GPU: stacked.json)
MEASURED_SPEEDUP: dict[str, dict[int, float]] = {
    "cpu": {2: 0.97, 4: 0.83, 6: 0.66},
}


def auto_size(device_type: str) -> int:
    """The stack size ``auto`` picks on a device type: the fastest measured k, if faster than
    alone."""
    rows = MEASURED_SPEEDUP.get(device_type, {})
    best = max(rows, key=rows.get, default=1)
    return best if rows.get(best, 0) > 1 else 1


def refusal(cfg: Config) -> str | None:
    """Why a run cannot be a stack member (one line naming the key and the fix), or None."""
    fix = "Set trainer.stack=off to train it alone."
    if not REGISTRY[cfg.model.name].stacks:
        return (
            f"trainer.stack={cfg.trainer.stack} stacks the CIFAR ResNets of §4.2 only "
            f"(model=resnet_cifar), not model.name={cfg.model.name}. {fix}"
        )
    if cfg.model.shortcut != "A":
        return (
            f"trainer.stack={cfg.trainer.stack} stacks nets with shortcut option A only, not "
            f"model.shortcut={cfg.model.shortcut}. {fix}"
        )
    if cfg.trainer.precision == "fp16":
        return (
            f"trainer.stack={cfg.trainer.stack} does not stack trainer.precision=fp16: one "
            f"gradient scaler would skip every member's step when one member overflows. Use bf16 "
            f"or fp32, or {fix[0].lower()}{fix[1:]}"
        )
    return None


def check_members(cfgs: list[Config]) -> None:
    """Refuse a stack whose members differ in anything but ``model.residual`` and ``seed`` (the
    first differing key named), or that the stacked net cannot train."""
    first = flat(to_dict(cfgs[0]))
    for c in cfgs[1:]:
        other = flat(to_dict(c))
        diff = [
            k for k, v in first.items() if k not in MEMBER_KEYS + STACK_KEYS and other.get(k) != v
        ]
        if diff:
            key = diff[0]
            raise ConfigError(
                f"stacked runs may differ in model.residual and seed only, but {', '.join(diff)} "
                f"differ{'s' if len(diff) == 1 else ''}: {key}={first[key]!r} in {cfgs[0].name}, "
                f"{other.get(key)!r} in {c.name}. Train them in separate stacks, or set "
                f"trainer.stack=off."
            )
    why = refusal(cfgs[0])
    if why:
        raise ConfigError(why)


def plan(cfgs: list[Config], device_type: Callable[[Config], str] | None = None) -> list[list[int]]:
    """The sweep's jobs (indices into ``cfgs``) in launch order: each entry one job alone or a
    stack.

    Jobs whose configs agree in everything but ``model.residual`` and ``seed`` (``trainer.stack``
    included) form a group; a group is cut into stacks of its ``trainer.stack`` size, in job order.
    ``device_type(cfg)`` (default: :func:`sweep_device_type`) is asked only when ``auto`` could
    stack on some device type.
    """
    device_type = device_type or (lambda c: sweep_device_type(c.trainer.device))
    could_stack = any(auto_size(t) > 1 for t in MEASURED_SPEEDUP)
    groups: dict[str, list[int]] = {}
    sizes: dict[str, int] = {}
    for i, c in enumerate(cfgs):
        size = _size(c, device_type if could_stack else (lambda _: "none"))
        key = (
            json.dumps(
                {k: v for k, v in flat(to_dict(c)).items() if k not in MEMBER_KEYS},
                sort_keys=True,
                default=str,
            )
            if size > 1
            else f"alone-{i}"
        )
        groups.setdefault(key, []).append(i)
        sizes[key] = size
    stacks = [
        g[j : j + sizes[key]]
        for key, g in groups.items()
        for j in range(0, len(g), max(sizes[key], 1))
    ]
    return sorted(stacks, key=lambda s: s[0])


def _size(cfg: Config, device_type: Callable[[Config], str]) -> int:
    setting = cfg.trainer.stack
    if setting == "off":
        return 1
    if setting == "auto":
        return auto_size(device_type(cfg)) if refusal(cfg) is None else 1
    why = refusal(cfg)
    if why:
        raise ConfigError(why)
    return int(setting)


@functools.cache
def sweep_device_type(device: str) -> str:
    """The device type a job of ``trainer.device`` lands on, judged where the sweep starts."""
    if device != "auto":
        return device.split(":")[0]
    import torch  # only when auto could stack on some device type

    return "cuda" if torch.cuda.is_available() else "cpu"


def members_override(cfgs: list[Config], names: list[str]) -> str:
    """The override that makes one job train these runs as a stack (``trainer.stack_members``)."""
    items = ",".join(
        f"{{residual:{str(c.model.residual).lower()},seed:{c.seed},name:'{n}'}}"
        for c, n in zip(cfgs, names, strict=True)
    )
    return f"trainer.stack_members=[{items}]"


def refuse_members_by_hand(overrides: list[str]) -> None:
    """``trainer.stack_members`` is the sweeper's to set (``trainer.stack``): refused on a command
    line."""
    if any(k == "trainer.stack_members" for k, _ in override_pairs(overrides)):
        raise ConfigError(
            "trainer.stack_members is set by the sweeper for the jobs it stacks, not by hand. Use "
            "trainer.stack=<k> (or auto) with -m to train a sweep's runs as stacks."
        )


def member_configs(node: Any, overrides: list[str]) -> list[Config]:
    """Each member's config, as its own job would have it, from a stacked job's composed config;
    each member's name is one folder name (its run directory in the sweep folder)."""
    out = []
    for m in node.trainer.stack_members:
        if not m.name or m.name in (".", "..") or "/" in m.name or "\\" in m.name or "\0" in m.name:
            raise ConfigError(
                f"trainer.stack_members names {m.name!r}, which is not one folder name: a stack's "
                f"runs live in the sweep folder, one folder each."
            )
        c = copy.deepcopy(node)
        OmegaConf.set_readonly(c, False)
        c.model.residual, c.seed, c.trainer.stack_members = m.residual, m.seed, []
        out.append(to_config(c, overrides))
    return out

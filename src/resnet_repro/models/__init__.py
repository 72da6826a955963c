"""Model zoo: ``conf/model/<name>.yaml`` selects a builder here by ``model.name``.

- ``resnet_cifar``: the paper's CIFAR nets, depth 6n+2 (``cifar_resnet.py``);
- ``preact_cifar``: their pre-activation form (He et al. 2016b, ``preact_resnet.py``);
- ``resnet18`` ... ``resnet152``: the ImageNet nets of Table 1, torchvision's ``ResNet``
  (``imagenet_resnet.py``), optionally with a CIFAR-size stem;
- ``layers.py``: the 3x3 conv and He init the CIFAR nets share;
- ``registry.py``: the model names, their depths and the model group's checks (no torch: the
  command line validates a config before torch is imported).

The nets below are imported on first use, so ``import resnet_repro.models.registry`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .registry import REGISTRY

if TYPE_CHECKING:
    from torch import nn

    from .registry import ModelConfig

_LAZY = {
    "CifarBasicBlock": "cifar_resnet",
    "CifarResNet": "cifar_resnet",
    "resnet_cifar": "cifar_resnet",
    "PreActCifarResNet": "preact_resnet",
}
__all__ = sorted([*_LAZY, "build_model", "count_params"])


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_model(cfg: ModelConfig) -> nn.Module:
    """Build the model described by a resolved ``ModelConfig``, by its registry row's builder (its
    module imported on first use: the ImageNet nets' imports all of torchvision)."""
    if cfg.name not in REGISTRY:
        raise ValueError(f"unknown model.name {cfg.name!r}")
    row = REGISTRY[cfg.name]
    module, _, fn = row.builder.partition(":")
    kwargs = {a: getattr(cfg, a) for a in row.args}
    if "in_channels" in kwargs:
        kwargs["in_channels"] = kwargs["in_channels"] or 3
    return getattr(importlib.import_module(f".{module}", __name__), fn)(**kwargs)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

"""Model zoo: ``conf/model/<name>.yaml`` selects a builder here by ``model.name``.

- ``resnet_cifar``: the paper's CIFAR nets, depth 6n+2 (``cifar_resnet.py``);
- ``preact_cifar``: their pre-activation form (He et al. 2016b, ``preact_resnet.py``);
- ``resnet18`` ... ``resnet152``: the ImageNet nets of Table 1, torchvision's layout
  (``imagenet_resnet.py``), optionally with a CIFAR-size stem.
"""

from torch import nn

from . import imagenet_resnet
from .cifar_resnet import BasicBlock, CifarResNet, resnet_cifar
from .preact_resnet import PreActCifarResNet

__all__ = ["BasicBlock", "CifarResNet", "PreActCifarResNet", "build_model", "count_params", "resnet_cifar"]


def build_model(cfg) -> nn.Module:
    """Build the model described by a resolved ``ModelConfig``."""
    in_channels = cfg.in_channels or 3
    if cfg.name == "resnet_cifar":
        return CifarResNet(depth=cfg.depth, residual=cfg.residual, shortcut=cfg.shortcut,
                           num_classes=cfg.num_classes, in_channels=in_channels)
    if cfg.name == "preact_cifar":
        return PreActCifarResNet(depth=cfg.depth, num_classes=cfg.num_classes, in_channels=in_channels,
                                 residual=cfg.residual)
    if cfg.name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
        return getattr(imagenet_resnet, cfg.name)(num_classes=cfg.num_classes, in_channels=in_channels,
                                                  residual=cfg.residual, cifar_stem=cfg.cifar_stem)
    raise ValueError(f"unknown model.name {cfg.name!r}")


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

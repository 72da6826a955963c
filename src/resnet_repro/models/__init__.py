"""Model zoo: ``conf/model/<name>.yaml`` selects a builder here by ``model.name``."""

from torch import nn

from .cifar_resnet import BasicBlock, CifarResNet, resnet_cifar

__all__ = ["BasicBlock", "CifarResNet", "build_model", "count_params", "resnet_cifar"]


def build_model(cfg) -> nn.Module:
    """Build the model described by a resolved ``ModelConfig``."""
    if cfg.name == "resnet_cifar":
        return resnet_cifar(cfg.depth, cfg.residual, cfg.shortcut, cfg.num_classes)
    raise ValueError(f"unknown model.name {cfg.name!r}")


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

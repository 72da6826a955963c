"""Layers the CIFAR nets share (``cifar_resnet.py``, ``preact_resnet.py``); the ImageNet nets'
CIFAR stem is a :func:`conv3x3` too."""

from __future__ import annotations

from torch import nn


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 conv, padding 1, no bias (a BN follows it)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def he_init(model: nn.Module) -> None:
    """He et al. 2015 init for every conv (std = sqrt(2 / (k*k*c_in))); BN weight 1, bias 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

"""The CIFAR-10 nets of He et al. 2016, §4.2: depth 6n+2, residual or plain.

Stem: 3x3 conv, 16 filters. Body: three stages of n CifarBasicBlocks (2n 3x3 layers) with 16/32/64
filters on 32/16/8 maps; stages 2 and 3 start with stride 2. Head: global average pool and a
fully connected layer. BN after every conv, ReLU, He (Kaiming normal) init.

Shortcuts (paper §3.3):
- ``A``: identity; where the shape changes, subsample with stride 2 and zero-pad the new channels
  (no parameters; the paper's CIFAR choice);
- ``B``: 1x1 projection + BN only where the shape changes, identity elsewhere;
- ``C``: 1x1 projection + BN on every shortcut.
A plain net has exactly the same layers and no shortcuts at all.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import conv3x3, he_init
from .registry import n_of_depth

__all__ = ["CifarBasicBlock", "CifarResNet", "PadShortcut", "make_shortcut", "resnet_cifar"]


class PadShortcut(nn.Module):
    """Option A on a change of shape: stride-2 subsampling and zero channels appended."""

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.stride = stride
        self.extra = out_planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))


def projection(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes)
    )


def make_shortcut(option: str, in_planes: int, out_planes: int, stride: int) -> nn.Module:
    reshape = stride != 1 or in_planes != out_planes
    if option == "C" or (option == "B" and reshape):
        return projection(in_planes, out_planes, stride)
    if option == "A" and reshape:
        return PadShortcut(in_planes, out_planes, stride)
    if option in ("A", "B"):
        return nn.Identity()
    raise ValueError(f"unknown shortcut option {option!r}; valid: A, B, C")


class CifarBasicBlock(nn.Module):
    """Two 3x3 conv-BN layers; ``shortcut=None`` makes it a plain (non-residual) block."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: nn.Module | None):
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return F.relu(out)


class CifarResNet(nn.Module):
    def __init__(
        self,
        depth: int = 20,
        residual: bool = True,
        shortcut: str = "A",
        num_classes: int = 10,
        in_channels: int = 3,
    ):
        super().__init__()
        self.depth, self.n = depth, n_of_depth(depth)  # ValueError unless 6n+2
        self.residual, self.shortcut_option = residual, shortcut
        self.in_planes = 16
        self.conv1 = conv3x3(in_channels, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_layer(16, self.n, stride=1)
        self.layer2 = self._make_layer(32, self.n, stride=2)
        self.layer3 = self._make_layer(64, self.n, stride=2)
        self.fc = nn.Linear(64, num_classes)
        he_init(self)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for i in range(blocks):
            s = stride if i == 0 else 1
            sc = (
                make_shortcut(self.shortcut_option, self.in_planes, planes, s)
                if self.residual
                else None
            )
            layers.append(CifarBasicBlock(self.in_planes, planes, s, sc))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(x.mean((2, 3)))  # global average pool (deterministic backward on CUDA)


def resnet_cifar(
    depth: int,
    residual: bool = True,
    shortcut: str = "A",
    num_classes: int = 10,
    in_channels: int = 3,
) -> CifarResNet:
    return CifarResNet(
        depth=depth,
        residual=residual,
        shortcut=shortcut,
        num_classes=num_classes,
        in_channels=in_channels,
    )

"""Pre-activation CIFAR nets (He et al. 2016b, "Identity Mappings in Deep Residual Networks").

Depth 6n+2 as in :mod:`.cifar_resnet`: stem 3x3 conv with 16 filters, three stages of n
:class:`PreActBlock` with 16/32/64 filters on 32/16/8 maps (stages 2 and 3 start with stride 2),
then a final BN-ReLU, global average pool and a fully connected layer.

A block is "full pre-activation" (paper Fig. 4e)::

    out = conv2(relu(bn2(conv1(relu(bn1(x)))))) + shortcut(x)

with nothing after the addition. The shortcut takes the raw, un-normalised block input ``x``:
the identity, or option A (stride-2 subsampling and zero channels, ``cifar_resnet.PadShortcut``)
where the shape changes, so the residual net has no more parameters than the plain one. The stem
is a bare conv (no BN/ReLU): the first block's ``bn1``-ReLU acts on its output, and the final
``final_bn``-ReLU after the last addition is the paper's extra activation for the last unit.
``residual=False`` drops every shortcut (and the addition) and keeps all layers.

Parameter count: equal to the post-activation option-A net of the same depth. The stem BN
(2x16) and, in the first block of stages 2 and 3, ``bn1`` being on the narrower input (16 fewer,
then 32 fewer channels: 2x16 + 2x32) are saved, and ``final_bn`` (2x64) is added: 32+32+64 = 128.

Diagnostics: here each ``bnK`` precedes its sibling ``convK`` (it normalises that conv's input).
:func:`resnet_repro.training.diagnostics.conv3x3_layers` still pairs ``layerS.B.bnK`` with
``layerS.B.convK``, deterministically and in forward order: 2 per block, 6n = depth - 2 in all,
and the "response" it reports is the BN output that feeds ``convK`` (pre-ReLU), not the conv's
own output. The stem conv (no BN) and ``final_bn`` (no ``conv`` sibling) are not listed.
"""

from __future__ import annotations

import torch
from torch import nn

from .cifar_resnet import PadShortcut
from .layers import conv3x3, he_init
from .registry import n_of_depth

__all__ = ["PreActBlock", "PreActCifarResNet", "preact_resnet_cifar"]


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3, plus the raw input; ``shortcut=None``: plain block."""

    expansion = 1

    def __init__(
        self, in_planes: int, planes: int, stride: int = 1, shortcut: nn.Module | None = None
    ):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return out


def _identity_shortcut(in_planes: int, planes: int, stride: int) -> nn.Module:
    if stride != 1 or in_planes != planes:
        return PadShortcut(in_planes, planes, stride)
    return nn.Identity()


class PreActCifarResNet(nn.Module):
    def __init__(
        self, depth: int = 20, num_classes: int = 10, in_channels: int = 3, residual: bool = True
    ):
        super().__init__()
        self.depth, self.n, self.residual = (
            depth,
            n_of_depth(depth),
            residual,
        )  # ValueError unless 6n+2
        self.in_planes = 16
        self.conv1 = conv3x3(in_channels, 16)
        self.layer1 = self._make_layer(16, self.n, stride=1)
        self.layer2 = self._make_layer(32, self.n, stride=2)
        self.layer3 = self._make_layer(64, self.n, stride=2)
        self.final_bn = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(64, num_classes)
        he_init(self)  # as the post-activation nets

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for i in range(blocks):
            s = stride if i == 0 else 1
            sc = _identity_shortcut(self.in_planes, planes, s) if self.residual else None
            layers.append(PreActBlock(self.in_planes, planes, s, sc))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.relu(self.final_bn(x))
        return self.fc(x.mean((2, 3)))  # global average pool (deterministic backward on CUDA)


def preact_resnet_cifar(
    depth: int, residual: bool = True, num_classes: int = 10, in_channels: int = 3
) -> PreActCifarResNet:
    return PreActCifarResNet(
        depth=depth, num_classes=num_classes, in_channels=in_channels, residual=residual
    )

"""The ImageNet nets of He et al. 2016, Table 1: ResNet-18/34/50/101/152, residual or plain.

:class:`ImageNetResNet` is torchvision's ``ResNet`` (v1.5: a Bottleneck downsamples on its 3x3
conv) built from torchvision's ``BasicBlock`` and ``Bottleneck``, so ``load_state_dict`` works both
ways with ``strict=True`` and the two nets compute the same function:

    conv1 (7x7/2, 64) - bn1 - relu - maxpool (3x3/2)
    layer1 .. layer4   stages of BasicBlocks (18, 34) or Bottlenecks (50, 101, 152),
                       64/128/256/512 planes; stages 2-4 start with stride 2
    global average pool - fc

A block's shortcut is the identity, or ``downsample`` = 1x1 conv + BN (option B of §3.3) where
the shape changes. ``residual=False`` gives the plain net of the paper: :class:`PlainBasicBlock`
and :class:`PlainBottleneck`, the same main-path layers with no shortcut at all (no addition, no
``downsample``). ``cifar_stem=True`` swaps the stem for a 3x3/1 conv and drops the max-pool, for
32x32 inputs; ``in_channels`` sets the stem's input channels (torchvision's are 3). Pooling is a
mean over H and W (:class:`GlobalAvgPool`): torchvision's ``AdaptiveAvgPool2d`` has no
deterministic CUDA backward.

Every 3x3 conv ``convK`` is followed by its BN ``bnK`` in the same block, so
:func:`resnet_repro.training.diagnostics.conv3x3_layers` finds exactly the 3x3 layers (two per
BasicBlock, the middle one per Bottleneck, plus the stem when ``cifar_stem=True``).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import ResNet
from torchvision.models.resnet import BasicBlock, Bottleneck

from .layers import conv3x3

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ImageNetResNet",
    "PlainBasicBlock",
    "PlainBottleneck",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
]


class PlainBasicBlock(BasicBlock):
    """torchvision's BasicBlock with no shortcut: two 3x3 conv-BN layers, nothing added."""

    residual = False

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        *args,
        **kwargs,
    ):
        super().__init__(
            inplanes, planes, stride, None, *args, **kwargs
        )  # no shortcut, no downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)))


class PlainBottleneck(Bottleneck):
    """torchvision's Bottleneck with no shortcut: 1x1 reduce, 3x3, 1x1 expand, nothing added."""

    residual = False

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        *args,
        **kwargs,
    ):
        super().__init__(
            inplanes, planes, stride, None, *args, **kwargs
        )  # no shortcut, no downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)))


PLAIN_BLOCKS = {BasicBlock: PlainBasicBlock, Bottleneck: PlainBottleneck}


class GlobalAvgPool(nn.Module):
    """Mean over H and W, kept as 1x1 maps: torchvision's ``AdaptiveAvgPool2d((1, 1))`` as a
    function, with a deterministic CUDA backward (neither holds parameters or buffers)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=True)


class ImageNetResNet(ResNet):
    """torchvision's ResNet of Table 1, plain or residual, with a choice of stem (module
    docstring)."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: list[int],
        num_classes: int = 1000,
        in_channels: int = 3,
        residual: bool = True,
        cifar_stem: bool = False,
    ):
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"layers must be four positive block counts, got {layers}")
        rng = torch.get_rng_state()
        super().__init__(
            block if residual else PLAIN_BLOCKS[block], layers, num_classes=num_classes
        )
        self.residual, self.cifar_stem = residual, cifar_stem
        self.avgpool = GlobalAvgPool()
        if cifar_stem:
            self.conv1 = conv3x3(in_channels, 64)
            self.maxpool = nn.Identity()
        elif in_channels != 3:
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        if cifar_stem or in_channels != 3 or not residual:
            self._draw_weights(rng)

    def _draw_weights(self, rng_state: torch.Tensor) -> None:
        """Draw every weight again from ``rng_state``, the generator's state before construction.

        torchvision's constructor drew weights for a 3-channel 7x7 stem and, in a plain net, for
        shortcut convs that this net has since replaced or dropped. Drawing again gives a seed the
        same initial weights, and leaves the generator in the same state, as building the net in its
        final shape directly (as the stand-alone implementation this replaced did): seeded runs are
        unchanged.
        """
        torch.set_rng_state(rng_state)
        # each layer's default init, as its constructor draws it: the He init below overwrites the
        # convs (so their order does not matter); the fc, last in any order, keeps its draw
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.reset_parameters()
        for m in self.modules():  # then torchvision's
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)


def resnet18(**kw) -> ImageNetResNet:
    return ImageNetResNet(BasicBlock, [2, 2, 2, 2], **kw)


def resnet34(**kw) -> ImageNetResNet:
    return ImageNetResNet(BasicBlock, [3, 4, 6, 3], **kw)


def resnet50(**kw) -> ImageNetResNet:
    return ImageNetResNet(Bottleneck, [3, 4, 6, 3], **kw)


def resnet101(**kw) -> ImageNetResNet:
    return ImageNetResNet(Bottleneck, [3, 4, 23, 3], **kw)


def resnet152(**kw) -> ImageNetResNet:
    return ImageNetResNet(Bottleneck, [3, 8, 36, 3], **kw)

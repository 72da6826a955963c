"""The ImageNet nets of He et al. 2016, Table 1: ResNet-18/34/50/101/152, residual or plain.

The layout and parameter names follow torchvision's ``resnet18`` ... ``resnet152`` (v1.5: a
Bottleneck downsamples on its 3x3 conv), so ``load_state_dict`` works both ways with
``strict=True`` and the two nets compute the same function:

    conv1 (7x7/2, 64) - bn1 - relu - maxpool (3x3/2)
    layer1 .. layer4   stages of BasicBlocks (18, 34) or Bottlenecks (50, 101, 152),
                       64/128/256/512 planes; stages 2-4 start with stride 2
    global average pool - fc

A block's shortcut is the identity, or ``downsample`` = 1x1 conv + BN (option B of §3.3) where
the shape changes. ``residual=False`` gives the plain net of the paper: the same main-path layers
with no shortcut at all (no addition, no ``downsample``). ``cifar_stem=True`` swaps the stem for a
3x3/1 conv and drops the max-pool, for 32x32 inputs.

Every 3x3 conv ``convK`` is followed by its BN ``bnK`` in the same block, so
:func:`resnet_repro.diagnostics.conv3x3_layers` finds exactly the 3x3 layers (two per BasicBlock,
the middle one per Bottleneck, plus the stem when ``cifar_stem=True``).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ImageNetResNet",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "stage_shapes",
]


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers (ResNet-18/34). ``residual=False``: no shortcut, no addition."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, residual: bool = True):
        super().__init__()
        if downsample is not None and not residual:
            raise ValueError("a plain block has no shortcut, so no downsample")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.residual = residual
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride), 1x1 expand by 4 (ResNet-50/101/152)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, residual: bool = True):
        super().__init__()
        if downsample is not None and not residual:
            raise ValueError("a plain block has no shortcut, so no downsample")
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.residual = residual
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


class ImageNetResNet(nn.Module):
    """ResNet of Table 1 with torchvision's module names (see the module docstring)."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: list[int],
        num_classes: int = 1000,
        in_channels: int = 3,
        residual: bool = True,
        cifar_stem: bool = False,
    ):
        super().__init__()
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"layers must be four positive block counts, got {layers}")
        self.residual, self.cifar_stem = residual, cifar_stem
        self.inplanes = 64
        if cifar_stem:
            self.conv1 = conv3x3(in_channels, 64)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int,
                    stride: int = 1) -> nn.Sequential:
        out_planes = planes * block.expansion
        downsample = None
        if self.residual and (stride != 1 or self.inplanes != out_planes):
            downsample = nn.Sequential(conv1x1(self.inplanes, out_planes, stride),
                                       nn.BatchNorm2d(out_planes))
        stage = [block(self.inplanes, planes, stride, downsample, residual=self.residual)]
        self.inplanes = out_planes
        stage += [block(self.inplanes, planes, residual=self.residual) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        # torchvision pools with AdaptiveAvgPool2d, which has no deterministic CUDA backward; a
        # mean over H and W is the same function (and the module held no parameters or buffers)
        return self.fc(x.mean((2, 3)))


@torch.no_grad()
def stage_shapes(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Output shape (C, H, W) of the stem (after the max-pool) and of ``layer1`` .. ``layer4``.

    Works for any net with torchvision's names (ours or torchvision's). The net runs once on ``x``
    in eval mode (BN running statistics untouched) and is put back in its previous mode.
    """
    parts = {"stem": model.maxpool, **{f"layer{i}": getattr(model, f"layer{i}") for i in range(1, 5)}}
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name):
        def fn(_mod, _inp, out):
            shapes[name] = tuple(out.shape[1:])

        return fn

    handles = [mod.register_forward_hook(record(name)) for name, mod in parts.items()]
    was_training = model.training
    model.eval()
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {name: shapes[name] for name in parts}


def _resnet(block, layers, **kw) -> ImageNetResNet:
    return ImageNetResNet(block, layers, **kw)


def resnet18(**kw) -> ImageNetResNet:
    return _resnet(BasicBlock, [2, 2, 2, 2], **kw)


def resnet34(**kw) -> ImageNetResNet:
    return _resnet(BasicBlock, [3, 4, 6, 3], **kw)


def resnet50(**kw) -> ImageNetResNet:
    return _resnet(Bottleneck, [3, 4, 6, 3], **kw)


def resnet101(**kw) -> ImageNetResNet:
    return _resnet(Bottleneck, [3, 4, 23, 3], **kw)


def resnet152(**kw) -> ImageNetResNet:
    return _resnet(Bottleneck, [3, 8, 36, 3], **kw)

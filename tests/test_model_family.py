"""The ImageNet ResNets (torchvision layout) and the pre-activation CIFAR nets: CPU-fast checks."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from resnet_repro.diagnostics import conv3x3_layers
from resnet_repro.models import count_params
from resnet_repro.models import imagenet_resnet as ir
from resnet_repro.models.cifar_resnet import CifarResNet, PadShortcut
from resnet_repro.models.preact_resnet import PreActBlock, PreActCifarResNet

DEPTHS = (18, 34, 50, 101, 152)
# torchvision's counts with 1000 classes (its docs: 11.7M / 21.8M / 25.6M / 44.5M / 60.2M).
TV_PARAMS = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808}
# He et al. 2016b on CIFAR: the same as the post-activation option-A nets (tests/test_models.py).
PREACT_PARAMS = {20: 269_722, 56: 853_018, 110: 1_727_962}


def ours(depth: int, **kw) -> ir.ImageNetResNet:
    return getattr(ir, f"resnet{depth}")(**kw)


def downsample_params(model: nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if ".downsample." in n)


def test_d2l_resnet18_stage_shapes():
    net = ir.resnet18(in_channels=1, num_classes=10)
    shapes = ir.stage_shapes(net, torch.randn(1, 1, 224, 224))
    assert list(shapes) == ["stem", "layer1", "layer2", "layer3", "layer4"]
    assert list(shapes.values()) == [(64, 56, 56), (64, 56, 56), (128, 28, 28), (256, 14, 14), (512, 7, 7)]
    assert net.training  # stage_shapes restores the mode
    assert net(torch.randn(2, 1, 96, 96)).shape == (2, 10)


def test_literal_param_counts():
    assert count_params(ir.resnet18()) == 11_689_512
    assert count_params(ir.resnet50()) == 25_557_032


@pytest.mark.parametrize("depth", DEPTHS)
def test_matches_torchvision(depth):
    torch.manual_seed(depth)
    net = ours(depth)
    tv = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    assert count_params(net) == count_params(tv) == TV_PARAMS[depth]
    sd_net, sd_tv = net.state_dict(), tv.state_dict()
    assert list(sd_net) == list(sd_tv)  # same names, same order (buffers included)
    assert all(sd_net[k].shape == sd_tv[k].shape for k in sd_tv)
    # both ways, strict: ours -> torchvision, then torchvision's own random weights -> ours
    tv_init = {k: v.clone() for k, v in sd_tv.items()}
    tv.load_state_dict(sd_net, strict=True)
    sd_tv = tv.state_dict()
    assert all(torch.equal(sd_tv[k], v) for k, v in sd_net.items())
    net.load_state_dict(tv_init, strict=True)
    tv.load_state_dict(tv_init, strict=True)
    sd_net = net.state_dict()
    assert all(torch.equal(sd_net[k], v) for k, v in tv_init.items())
    if depth in (18, 34, 50):
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            torch.testing.assert_close(net.eval()(x), tv.eval()(x), rtol=1e-6, atol=1e-6)


def test_init_is_kaiming_fan_out_and_unit_bn():
    net = ir.resnet50()
    conv = net.layer3[0].conv2  # 3x3, 256 -> 256: fan_out = 9 * 256
    assert conv.weight.std().item() == pytest.approx((2 / (9 * 256)) ** 0.5, rel=0.02)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.all(b.weight == 1) and torch.all(b.bias == 0) for b in bns)


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_plain_variant_has_no_shortcut(depth):
    res, plain = ours(depth), ours(depth, residual=False)
    assert not any("downsample" in n for n, _ in plain.named_modules())
    blocks = [b for i in range(1, 5) for b in getattr(plain, f"layer{i}")]
    assert all(b.downsample is None and not b.residual for b in blocks)
    n_ds = downsample_params(res)
    assert n_ds > 0
    assert count_params(plain) == count_params(res) - n_ds
    # same main-path layers: every non-downsample parameter has the same name and shape
    main = {n: p.shape for n, p in res.named_parameters() if ".downsample." not in n}
    assert {n: p.shape for n, p in plain.named_parameters()} == main


@pytest.mark.parametrize("build", [ir.resnet18, ir.resnet50])
def test_plain_block_adds_nothing(build):
    """With its last BN zeroed, a block's main path is 0: plain gives 0, residual its input."""
    for residual in (True, False):
        net = build(residual=residual).eval()
        block = net.layer1[1]  # identity shortcut in the residual net
        last_bn = block.bn3 if isinstance(block, ir.Bottleneck) else block.bn2
        with torch.no_grad():
            last_bn.weight.zero_()
            last_bn.bias.zero_()
            x = torch.rand(2, block.conv1.in_channels, 8, 8)  # non-negative, like a ReLU output
            y = block(x.clone())
        if residual:
            torch.testing.assert_close(y, x)
        else:
            assert torch.count_nonzero(y) == 0


def test_cifar_stem():
    net = ir.resnet18(cifar_stem=True, num_classes=10)
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1) and net.conv1.padding == (1, 1)
    assert isinstance(net.maxpool, nn.Identity)
    assert not any(isinstance(m, nn.MaxPool2d) for m in net.modules())
    shapes = ir.stage_shapes(net, torch.randn(1, 3, 32, 32))
    assert shapes["stem"] == (64, 32, 32) and shapes["layer4"] == (512, 4, 4)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    # the stem loses 7*7*3*64 - 3*3*3*64 weights, the fc has 10 outputs
    assert count_params(net) == TV_PARAMS[18] - (49 - 9) * 3 * 64 - 990 * 513
    assert len(conv3x3_layers(net)) == 17  # the 3x3 stem now counts too


def test_conv3x3_layers_on_imagenet_nets():
    r18 = conv3x3_layers(ir.resnet18())
    assert len(r18) == 16
    assert r18[0][0] == "layer1.0.bn1" and r18[-1][0] == "layer4.1.bn2"
    r50 = conv3x3_layers(ir.resnet50())
    assert len(r50) == 16
    assert all(name.endswith(".bn2") for name, _, _ in r50)
    for name, conv, bn in r18 + r50:
        assert conv.kernel_size == (3, 3) and bn.num_features == conv.out_channels
        assert "downsample" not in name and name != "bn1"  # neither the 7x7 stem nor a 1x1 conv
    assert len(conv3x3_layers(ir.resnet18(residual=False))) == 16


def test_preact_block_order():
    block = PreActBlock(16, 16, shortcut=nn.Identity()).eval()
    calls = []
    for name in ("bn1", "relu", "conv1", "bn2", "conv2"):
        getattr(block, name).register_forward_hook(lambda m, i, o, name=name: calls.append(name))
    x = torch.randn(2, 16, 8, 8)
    seen = {}
    block.bn1.register_forward_pre_hook(lambda m, i: seen.setdefault("bn1_input", i[0]))
    block(x)
    assert calls == ["bn1", "relu", "conv1", "bn2", "relu", "conv2"]
    assert seen["bn1_input"] is x  # the first op applied to the block input is BN


def test_preact_shortcut_carries_raw_input():
    x = torch.randn(2, 16, 8, 8) * 3 + 1  # negative values too: no ReLU/BN on the shortcut path
    same = PreActBlock(16, 16, shortcut=nn.Identity()).eval()
    down = PreActBlock(16, 32, stride=2, shortcut=PadShortcut(16, 32, 2)).eval()
    with torch.no_grad():
        for block in (same, down):
            block.conv2.weight.zero_()
        torch.testing.assert_close(same(x), x)
        torch.testing.assert_close(down(x), PadShortcut(16, 32, 2)(x))
        plain = PreActBlock(16, 16, shortcut=None).eval()
        plain.conv2.weight.zero_()
        assert torch.count_nonzero(plain(x)) == 0


@pytest.mark.parametrize("depth,params", PREACT_PARAMS.items())
def test_preact_param_counts(depth, params):
    net = PreActCifarResNet(depth)
    assert count_params(net) == params == count_params(CifarResNet(depth, shortcut="A"))
    assert count_params(PreActCifarResNet(depth, residual=False)) == params  # option A: no params
    # bookkeeping against the post-activation net: no stem BN (-32), narrower bn1 in the first
    # block of stages 2 and 3 (-32, -64), one final BN on 64 channels (+128)
    assert not hasattr(net, "bn1") and net.final_bn.num_features == 64
    assert net.layer2[0].bn1.num_features == 16 and net.layer3[0].bn1.num_features == 32


def test_preact_net_shapes_and_diagnostics():
    net = PreActCifarResNet(20, num_classes=100, in_channels=1)
    assert net(torch.randn(2, 1, 32, 32)).shape == (2, 100)
    kinds = [type(b.shortcut).__name__ for layer in (net.layer1, net.layer2, net.layer3) for b in layer]
    assert kinds.count("PadShortcut") == 2 and kinds.count("Identity") == 7
    layers = conv3x3_layers(net)
    assert len(layers) == 18  # 6n = depth - 2: (bn1, conv1) and (bn2, conv2) of every block
    assert [n for n, _, _ in layers[:3]] == ["layer1.0.bn1", "layer1.0.bn2", "layer1.1.bn1"]
    assert [n for n, _, _ in conv3x3_layers(PreActCifarResNet(20))] == [n for n, _, _ in layers]
    for _, conv, bn in layers:
        assert bn.num_features == conv.in_channels  # the BN normalises its conv's input
    with pytest.raises(ValueError):
        PreActCifarResNet(21)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_imagenet_nets_pool_with_a_mean_not_adaptive_avg_pool(name):
    """AdaptiveAvgPool2d has no deterministic CUDA backward; the mean is the same function."""
    net = getattr(ir, name)(num_classes=10)
    assert not any(isinstance(m, nn.AdaptiveAvgPool2d) for m in net.modules())
    tv = getattr(torchvision.models, name)(weights=None, num_classes=10)
    tv.load_state_dict(net.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x), tv.eval()(x), rtol=1e-6, atol=1e-6)

"""The model zoo, CPU-fast: the CIFAR nets (option A/B/C shortcuts, plain), the ImageNet nets
(torchvision's ResNet, plain or residual, CIFAR stem) and the pre-activation CIFAR nets."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from resnet_repro.models import CifarResNet, build_model, count_params
from resnet_repro.models import imagenet_resnet as ir
from resnet_repro.models.cifar_resnet import PadShortcut
from resnet_repro.models.preact_resnet import PreActBlock, PreActCifarResNet
from resnet_repro.training.diagnostics import conv3x3_layers

from .helpers import cfg_of

# Table 6 of the paper: 0.27M / 0.46M / 0.66M / 0.85M / 1.7M, exactly with option A shortcuts.
PARAMS_A = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962}


@pytest.mark.parametrize("depth,params", PARAMS_A.items())
def test_param_counts_option_a(depth, params):
    assert count_params(CifarResNet(depth, residual=True, shortcut="A")) == params


@pytest.mark.parametrize("depth", [20, 56])
def test_plain_has_identical_layers_and_no_shortcut(depth):
    plain = CifarResNet(depth, residual=False)
    assert count_params(plain) == PARAMS_A[depth]
    blocks = [b for layer in (plain.layer1, plain.layer2, plain.layer3) for b in layer]
    assert len(blocks) == 3 * (depth - 2) // 6
    assert all(b.shortcut is None for b in blocks)
    convs = [n for n, m in plain.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == depth - 1  # 6n 3x3 layers + the stem; the fc makes depth


def test_stage_shapes_and_output():
    net = CifarResNet(20).eval()
    x = torch.randn(2, 3, 32, 32)
    h = torch.relu(net.bn1(net.conv1(x)))
    shapes = []
    for layer in (net.layer1, net.layer2, net.layer3):
        h = layer(h)
        shapes.append(tuple(h.shape[1:]))
    assert shapes == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
    assert net(x).shape == (2, 10)


def _shortcut_kinds(net):
    return [
        type(b.shortcut).__name__ for layer in (net.layer1, net.layer2, net.layer3) for b in layer
    ]


def test_option_b_projects_only_where_shape_changes():
    net = CifarResNet(20, shortcut="B")
    kinds = _shortcut_kinds(net)
    assert kinds.count("Sequential") == 2 and kinds.count("Identity") == 7
    assert kinds[3] == kinds[6] == "Sequential"  # first block of stages 2 and 3
    assert count_params(net) == PARAMS_A[20] + (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)


def test_option_c_projects_every_shortcut():
    net = CifarResNet(20, shortcut="C")
    assert _shortcut_kinds(net) == ["Sequential"] * 9


def test_option_a_subsamples_and_zero_pads():
    net = CifarResNet(20, shortcut="A")
    kinds = _shortcut_kinds(net)
    assert kinds.count("PadShortcut") == 2 and kinds.count("Identity") == 7
    x = torch.randn(2, 16, 32, 32)
    y = PadShortcut(16, 32, 2)(x)
    assert y.shape == (2, 32, 16, 16)
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2])
    assert torch.count_nonzero(y[:, 16:]) == 0


def test_residual_and_plain_differ_only_by_shortcuts():
    torch.manual_seed(0)
    res = CifarResNet(20, residual=True)
    torch.manual_seed(0)
    plain = CifarResNet(20, residual=False)
    # Same layers in the same order: plain's weights load into the residual net and back.
    res.load_state_dict(plain.state_dict())
    for (n1, p1), (n2, p2) in zip(res.named_parameters(), plain.named_parameters(), strict=True):
        assert n1 == n2 and torch.equal(p1, p2)
    x = torch.randn(4, 3, 32, 32)
    assert not torch.allclose(res.eval()(x), plain.eval()(x))


def test_he_init():
    torch.manual_seed(0)
    net = CifarResNet(56)
    w = net.layer3[0].conv2.weight  # 64 in-channels, 3x3: std sqrt(2 / 576)
    assert abs(w.std().item() - (2 / 576) ** 0.5) < 0.002
    assert torch.all(net.layer1[0].bn1.weight == 1) and torch.all(net.layer1[0].bn1.bias == 0)


def test_bad_depth_refused():
    with pytest.raises(ValueError, match="6n\\+2"):
        CifarResNet(21)


# The ImageNet nets of Table 1 (torchvision's layout) and the pre-activation CIFAR nets

DEPTHS = (18, 34, 50, 101, 152)
# torchvision's counts with 1000 classes (its docs: 11.7M / 21.8M / 25.6M / 44.5M / 60.2M).
TV_PARAMS = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808}
# He et al. 2016b on CIFAR: the same as the post-activation option-A nets (PARAMS_A).
PREACT_PARAMS = {20: 269_722, 56: 853_018, 110: 1_727_962}


def ours(depth: int, **kw) -> ir.ImageNetResNet:
    return getattr(ir, f"resnet{depth}")(**kw)


def downsample_params(model: nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if ".downsample." in n)


@torch.no_grad()
def stage_shapes(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Output shape (C, H, W) of the stem (after the max-pool) and of ``layer1`` .. ``layer4``.

    Works for any net with torchvision's names (ours or torchvision's). The net runs once on ``x``
    in eval mode (BN running statistics untouched) and is put back in its previous mode.
    """
    parts = {
        "stem": model.maxpool,
        **{f"layer{i}": getattr(model, f"layer{i}") for i in range(1, 5)},
    }
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


def test_d2l_resnet18_stage_shapes():
    net = ir.resnet18(in_channels=1, num_classes=10)
    shapes = stage_shapes(net, torch.randn(1, 1, 224, 224))
    assert list(shapes) == ["stem", "layer1", "layer2", "layer3", "layer4"]
    assert list(shapes.values()) == [
        (64, 56, 56),
        (64, 56, 56),
        (128, 28, 28),
        (256, 14, 14),
        (512, 7, 7),
    ]
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
    assert (
        net.conv1.kernel_size == (3, 3)
        and net.conv1.stride == (1, 1)
        and net.conv1.padding == (1, 1)
    )
    assert isinstance(net.maxpool, nn.Identity)
    assert not any(isinstance(m, nn.MaxPool2d) for m in net.modules())
    shapes = stage_shapes(net, torch.randn(1, 3, 32, 32))
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
    kinds = [
        type(b.shortcut).__name__ for layer in (net.layer1, net.layer2, net.layer3) for b in layer
    ]
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


def test_every_model_is_one_registry_row_with_its_yaml_and_builder():
    """A model is a row (builder, the keys it takes, depth rule, shortcut, stacking, name prefix),
    a YAML in conf/model/ and a module: each row builds its net from the config alone."""
    from resnet_repro.config import config_dir
    from resnet_repro.models.registry import REGISTRY, shortcut_of

    assert sorted(REGISTRY) == sorted(p.stem for p in (config_dir() / "model").glob("*.yaml"))
    for name, row in REGISTRY.items():
        cfg = cfg_of(f"model={name}" if name != "resnet_cifar" else "model.depth=8").model
        assert cfg.name == name and (row.depth is None or cfg.depth == row.depth)
        assert isinstance(build_model(cfg), torch.nn.Module)
        assert shortcut_of(cfg) == (row.shortcut or cfg.shortcut)

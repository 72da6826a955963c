import pytest
import torch

from resnet_repro.models import CifarResNet, count_params
from resnet_repro.models.cifar_resnet import PadShortcut

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
    return [type(b.shortcut).__name__ for layer in (net.layer1, net.layer2, net.layer3) for b in layer]


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

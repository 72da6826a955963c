"""Layer diagnostics: which layers are the paper's 3x3 layers, their response std (Fig. 7), grad
norms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnet_repro.models.cifar_resnet import CifarResNet
from resnet_repro.training.diagnostics import conv3x3_layers, conv_grad_norms, layer_response_std


def expected_names(n: int) -> list[str]:
    """BN names of the 6n+1 3x3 layers of a depth-(6n+2) CIFAR net, in forward order."""
    names = ["bn1"]
    for stage in (1, 2, 3):
        for b in range(n):
            names += [f"layer{stage}.{b}.bn1", f"layer{stage}.{b}.bn2"]
    return names


def forward_order(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Names of every BatchNorm2d in the order the forward pass calls them."""
    order: list[str] = []
    handles = [
        m.register_forward_hook(lambda *_a, name=name: order.append(name))
        for name, m in model.named_modules()
        if isinstance(m, nn.BatchNorm2d)
    ]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return order


def small_net(
    depth: int = 8, residual: bool = True, shortcut: str = "A", seed: int = 0
) -> CifarResNet:
    torch.manual_seed(seed)
    return CifarResNet(depth=depth, residual=residual, shortcut=shortcut)


@pytest.mark.parametrize(
    ("depth", "residual", "shortcut"),
    [
        (8, True, "A"),
        (14, True, "A"),
        (8, False, "A"),
        (14, False, "A"),
        (14, True, "B"),
        (14, True, "C"),
        (8, False, "C"),
    ],
)
def test_conv3x3_layers_are_the_6n_plus_1_layers_in_forward_order(depth, residual, shortcut):
    model = small_net(depth, residual, shortcut)
    n = (depth - 2) // 6
    layers = conv3x3_layers(model)
    names = [name for name, _, _ in layers]

    assert len(layers) == 6 * n + 1
    assert names == expected_names(n)
    modules = dict(model.named_modules())
    for name, conv, bn in layers:
        assert bn is modules[name]
        assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3)
        head, _, last = name.rpartition(".")
        assert conv is modules[f"{head}.conv{last[2:]}" if head else f"conv{last[2:]}"]
    # the projection shortcuts' BNs (B: where the shape changes, C: every block) are not 3x3 layers
    projection_bns = [
        m
        for name, m in model.named_modules()
        if isinstance(m, nn.BatchNorm2d) and ".shortcut." in name
    ]
    if residual and shortcut == "C":
        assert len(projection_bns) == 3 * n
    elif residual and shortcut == "B":
        assert len(projection_bns) == 2
    else:
        assert projection_bns == []
    found = {id(bn) for _, _, bn in layers}
    assert not any(id(m) in found for m in projection_bns)
    # forward order: the 3x3 layers' BNs are called in the listed order
    called = [
        nm for nm in forward_order(model, torch.randn(2, 3, 16, 16)) if ".shortcut." not in nm
    ]
    assert called == names


def direct_stats(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[float, float]]:
    """{bn name: (std over all elements, mean over channels of per-channel std)}, eval mode."""
    outs: dict[str, torch.Tensor] = {}
    layers = conv3x3_layers(model)
    handles = [
        bn.register_forward_hook(
            lambda _m, _i, o, name=name: outs.__setitem__(name, o.detach().double())
        )
        for name, _, bn in layers
    ]
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    stats = {}
    for name, o in outs.items():
        per_channel = o.transpose(0, 1).reshape(o.shape[1], -1).std(dim=1, unbiased=False)
        stats[name] = (o.std(unbiased=False).item(), per_channel.mean().item())
    return stats


def trained_a_bit(model: nn.Module, steps: int = 3) -> nn.Module:
    """A few SGD steps in train mode, so BN running stats and weights are not at their init."""
    g = torch.Generator().manual_seed(1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    model.train()
    for _ in range(steps):
        x = torch.randn(8, 3, 16, 16, generator=g)
        y = torch.randint(0, 10, (8,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model


@pytest.mark.parametrize("residual", [True, False])
def test_layer_response_std_equals_a_direct_computation(residual):
    model = trained_a_bit(small_net(8, residual))
    x = torch.randn(12, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    rows = layer_response_std(model, [x])
    want = direct_stats(model, x)

    names = [name for name, _, _ in conv3x3_layers(model)]
    assert [r["layer"] for r in rows] == list(range(1, len(names) + 1))
    assert [r["module"] for r in rows] == names
    for r in rows:
        std, channel_std = want[r["module"]]
        assert r["std"] == pytest.approx(std, rel=1e-6, abs=1e-6)
        assert r["channel_std"] == pytest.approx(channel_std, rel=1e-6, abs=1e-6)
        assert r["std"] > 0 and r["channel_std"] > 0
        # pooling the channels can only add the spread between channel means
        assert r["std"] >= r["channel_std"] - 1e-9


def test_layer_response_std_is_the_same_in_one_batch_or_several():
    model = trained_a_bit(small_net(8, True))
    x = torch.randn(12, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    whole = layer_response_std(model, [x])
    parts = layer_response_std(model, list(x.split([5, 4, 3])))
    singles = layer_response_std(model, iter(x.split(1)))  # any iterable of batches
    for a, b, c in zip(whole, parts, singles, strict=True):
        assert a["module"] == b["module"] == c["module"]
        for key in ("std", "channel_std"):
            assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-6)
            assert c[key] == pytest.approx(a[key], rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("training", [True, False])
def test_layer_response_std_restores_the_mode_and_leaves_no_hooks(training):
    model = trained_a_bit(small_net(8, True))
    model.train(training)
    bn_state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(4, 3, 16, 16)
    layer_response_std(model, [x])

    assert model.training is training
    assert all(m.training is training for m in model.modules())
    # eval mode inside: BN running statistics are not updated by the measurement
    for k, v in model.state_dict().items():
        assert torch.equal(v, bn_state[k]), k
    assert all(not m._forward_hooks for m in model.modules())


def test_layer_response_std_restores_the_mode_when_the_forward_fails():
    model = small_net(8, True).train()

    def batches():
        yield torch.randn(2, 3, 16, 16)
        yield torch.randn(2, 5, 16, 16)  # wrong channel count: the forward raises

    with pytest.raises(RuntimeError):
        layer_response_std(model, batches())
    assert model.training is True
    assert all(not m._forward_hooks for m in model.modules())


@pytest.mark.parametrize(("residual", "shortcut"), [(True, "A"), (False, "A"), (True, "C")])
def test_conv_grad_norms_equal_each_3x3_conv_weight_grad_norm(residual, shortcut):
    model = small_net(8, residual, shortcut).train()
    x = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    F.cross_entropy(model(x), y).backward()
    rows = conv_grad_norms(model)
    layers = conv3x3_layers(model)
    modules = {id(m): name for name, m in model.named_modules()}

    assert len(rows) == len(layers) == 7
    assert [r["layer"] for r in rows] == list(range(1, 8))
    for r, (_, conv, _) in zip(rows, layers, strict=True):
        assert r["module"] == modules[id(conv)]
        assert r["grad_norm"] == pytest.approx(conv.weight.grad.norm().item(), rel=1e-6)
        assert r["grad_norm"] > 0
    assert rows[0]["module"] == "conv1" and rows[1]["module"] == "layer1.0.conv1"


def test_conv_grad_norms_are_zero_for_convs_without_a_gradient():
    model = small_net(8, True)
    model.zero_grad(set_to_none=True)
    rows = conv_grad_norms(model)
    assert len(rows) == 7
    assert all(r["grad_norm"] == 0.0 for r in rows)

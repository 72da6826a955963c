"""Stacked training (k nets of one depth as one grouped net) is each member's separate run.

The reference: k separately built CifarResNets, each with its own ``torch.optim.SGD`` (momentum
0.9, weight decay 1e-4, no Nesterov) on its own batches. The stack:
``StackedCifarResNet.from_members`` of the same nets, stepped by ``StackedSGD`` on the
channel-stacked batches. After every step the per-member losses, logits, weights, BN running
statistics and momentum buffers must agree: to 1e-10 in fp64, to 1e-4 relative in fp32.
"""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
import torch.nn.functional as F

from resnet_repro.errors import ConfigError
from resnet_repro.models.cifar_resnet import CifarResNet
from resnet_repro.models.stacked import (
    StackedCifarResNet,
    StackedSGD,
    nonfinite_members,
    stack_inputs,
    stack_targets,
    stacked_cross_entropy,
)

SEEDS = (11, 22, 33)
RESIDUAL = (True, False, True)  # residual, plain, residual
BATCH, STEPS = 16, 20


@contextlib.contextmanager
def default_dtype(dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def lr_of(member: int, step: int) -> float:
    """Member 0 warms up for 4 steps, member 2 for 9, member 1 not at all; /10 from step 15."""
    warm = {0: 4, 1: 0, 2: 9}[member]
    if step < warm:
        return 0.01
    return 0.1 if step < 15 else 0.01


def members(depth: int) -> list[CifarResNet]:
    out = []
    for seed, residual in zip(SEEDS, RESIDUAL, strict=True):
        torch.manual_seed(seed)  # what the member's own run would build from its seed
        out.append(CifarResNet(depth, residual=residual))
    return out


def batches(steps: int, size: int = 32):
    """Each member's own synthetic batches: ``data[step][member] = (x, y)``."""
    g = torch.Generator().manual_seed(1234)
    return [
        [
            (
                torch.randn(BATCH, 3, size, size, generator=g),
                torch.randint(0, 10, (BATCH,), generator=g),
            )
            for _ in SEEDS
        ]
        for _ in range(steps)
    ]


def sgd(model, foreach: bool):
    return torch.optim.SGD(
        model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=False, foreach=foreach
    )


def separate_step(model, opt, x, y, lr):
    for group in opt.param_groups:
        group["lr"] = lr
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach(), logits.detach()


def stacked_step(stack, opt, xs, ys, lr):
    opt.set_lr(lr)
    logits = stack(stack_inputs(xs))
    total, per_member = stacked_cross_entropy(logits, stack_targets(ys))
    opt.zero_grad(set_to_none=True)
    total.backward()
    opt.step()
    return per_member.detach(), logits.detach()


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(max abs difference, the same relative to b's largest magnitude)."""
    if a.dtype in (torch.int64, torch.bool):
        return float((a != b).any()), float((a != b).any())
    diff = (a - b).abs().max().item()
    return diff, diff / max(b.abs().max().item(), 1e-30)


def compare(stack, sopt, nets, opts, loss_s, logits_s, ref):
    """Max abs and relative differences per kind (loss, logits, state, momentum) over members."""
    worst = {kind: [0.0, 0.0] for kind in ("loss", "logits", "state", "momentum")}

    def note(kind, a, b):
        d = rel_diff(a, b)
        worst[kind] = [max(worst[kind][0], d[0]), max(worst[kind][1], d[1])]

    for i, (net, opt) in enumerate(zip(nets, opts, strict=True)):
        loss, logits = ref[i]
        note("loss", loss_s[i], loss)
        note("logits", logits_s[:, i], logits)
        mine = stack.member_state_dict(i)
        theirs = net.state_dict()
        assert mine.keys() == theirs.keys()
        for key in theirs:
            assert mine[key].shape == theirs[key].shape, key
            note("state", mine[key], theirs[key])
        mine_opt, theirs_opt = sopt.member_state_dict(i), opt.state_dict()
        assert mine_opt["state"].keys() == theirs_opt["state"].keys()
        for j, st in theirs_opt["state"].items():
            note("momentum", mine_opt["state"][j]["momentum_buffer"], st["momentum_buffer"])
        assert mine_opt["param_groups"][0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])
    return worst


def run_both(depth: int, foreach: bool, steps: int = STEPS, size: int = 32, on_step=None):
    nets = members(depth)
    stack = StackedCifarResNet.from_members(nets)
    opts = [sgd(n, foreach) for n in nets]
    sopt = StackedSGD(stack.parameters(), k=len(nets), lr=0.1, momentum=0.9, weight_decay=1e-4)
    history = []
    for step, pairs in enumerate(batches(steps, size)):
        lrs = [lr_of(i, step) for i in range(len(nets))]
        ref = [
            separate_step(n, o, x, y, lr)
            for n, o, (x, y), lr in zip(nets, opts, pairs, lrs, strict=True)
        ]
        loss_s, logits_s = stacked_step(
            stack, sopt, [x for x, _ in pairs], [y for _, y in pairs], lrs
        )
        worst = compare(stack, sopt, nets, opts, loss_s, logits_s, ref)
        history.append(worst)
        if on_step:
            on_step(step, worst)
    return history, (stack, sopt, nets, opts)


@pytest.mark.slow
@pytest.mark.parametrize("depth", [8, 14])
def test_fp64_stack_equals_separate_runs_step_by_step(depth):
    """Reference: torch.optim.SGD(foreach=False), the per-parameter loop."""
    with default_dtype(torch.float64):
        history, _ = run_both(depth, foreach=False)
    worst = {kind: max(h[kind][0] for h in history) for kind in history[0]}
    print(f"\nfp64 depth {depth}: max abs differences over {STEPS} steps: {worst}")
    for step, h in enumerate(history):
        for kind, (absdiff, _) in h.items():
            assert absdiff <= 1e-10, (step, kind, absdiff)


def _norm_rel(a: dict, b: dict) -> float:
    """||a - b|| / ||b|| over the floating tensors of two same-keyed dicts (one member's state)."""
    keys = [k for k in b if b[k].is_floating_point()]
    num = sum(((a[k].double() - b[k].double()) ** 2).sum() for k in keys)
    den = sum((b[k].double() ** 2).sum() for k in keys)
    return (num / den).sqrt().item()


@pytest.mark.slow
@pytest.mark.parametrize("depth", [8, 14])
def test_fp32_stack_is_close_to_separate_runs(depth):
    """fp32, reference torch.optim.SGD(foreach=True) (the harness's CPU default), plus an fp64
    truth (the same members and batches in fp64) to tell the stack's rounding from the reference's.

    - the first step (same weights in, rounding only): losses, logits and weights agree to 1e-4
      relative (norm of the difference over the norm; losses: absolute);
    - every step, every kind (losses, logits, weights and BN statistics, momentum): random labels
      at lr 0.1 make any fp32 run drift from the fp64 truth (several 1e-2 relative in 20 steps at
      depth 14, the separate runs included; their gradients differ from the stack's by ~1e-3
      relative already on the first step, a cancelling sum over 16k positions), so the bound is
      that the stack's largest distance to the truth is at most 3x the separate runs' (+1e-6).
    """
    nets = members(depth)
    truth = [copy.deepcopy(n).double() for n in nets]
    stack = StackedCifarResNet.from_members(nets)
    opts, topts = [sgd(n, foreach=True) for n in nets], [sgd(n, foreach=True) for n in truth]
    sopt = StackedSGD(stack.parameters(), k=len(nets), lr=0.1, momentum=0.9, weight_decay=1e-4)
    kinds = ("loss", "logits", "state", "momentum")
    worst_abs, first = dict.fromkeys(kinds, 0.0), dict.fromkeys(kinds, 0.0)
    to_truth = {who: dict.fromkeys(kinds, 0.0) for who in ("stack", "separate")}
    for step, pairs in enumerate(batches(STEPS)):
        lrs = [lr_of(i, step) for i in range(len(nets))]
        ref = [
            separate_step(n, o, x, y, lr)
            for n, o, (x, y), lr in zip(nets, opts, pairs, lrs, strict=True)
        ]
        true = [
            separate_step(n, o, x.double(), y, lr)
            for n, o, (x, y), lr in zip(truth, topts, pairs, lrs, strict=True)
        ]
        loss_s, logits_s = stacked_step(
            stack, sopt, [x for x, _ in pairs], [y for _, y in pairs], lrs
        )
        worst = compare(stack, sopt, nets, opts, loss_s, logits_s, ref)
        for kind in kinds:
            worst_abs[kind] = max(worst_abs[kind], worst[kind][0])
        for i in range(len(nets)):
            s_opt, t_opt = opts[i].state_dict()["state"], topts[i].state_dict()["state"]
            m_opt = sopt.member_state_dict(i)["state"]
            seen = {
                "stack": {
                    "loss": loss_s[i],
                    "logits": logits_s[:, i],
                    "state": stack.member_state_dict(i),
                    "momentum": {j: m_opt[j]["momentum_buffer"] for j in m_opt},
                },
                "separate": {
                    "loss": ref[i][0],
                    "logits": ref[i][1],
                    "state": nets[i].state_dict(),
                    "momentum": {j: s_opt[j]["momentum_buffer"] for j in s_opt},
                },
            }
            t = {
                "loss": true[i][0],
                "logits": true[i][1],
                "state": truth[i].state_dict(),
                "momentum": {j: t_opt[j]["momentum_buffer"] for j in t_opt},
            }

            def rel(a, b, kind):
                if kind == "loss":
                    return abs(a.double() - b.double()).item()
                return _norm_rel(a, b) if isinstance(b, dict) else _norm_rel({"x": a}, {"x": b})

            for who, got in seen.items():
                for kind in kinds:
                    to_truth[who][kind] = max(to_truth[who][kind], rel(got[kind], t[kind], kind))
            if step == 0:
                for kind in kinds:
                    first[kind] = max(
                        first[kind], rel(seen["stack"][kind], seen["separate"][kind], kind)
                    )
    print(
        f"\nfp32 depth {depth}: max abs differences over {STEPS} steps: {worst_abs}"
        f"\n  first step, stack vs separate, relative: {first}"
        f"\n  largest distance to the fp64 truth, relative: {to_truth}"
    )
    for kind in ("loss", "logits", "state"):
        assert first[kind] <= 1e-4, (kind, first[kind])
    for kind in kinds:
        assert to_truth["stack"][kind] <= 3 * to_truth["separate"][kind] + 1e-6, (kind, to_truth)


def test_round_trip_to_members_loads_strictly_and_gives_identical_outputs():
    nets = members(8)
    stack = StackedCifarResNet.from_members(nets)
    opt = StackedSGD(stack.parameters(), k=3, lr=0.1)
    for pairs in batches(2, 16):  # move the weights and BN statistics off their init
        stacked_step(stack, opt, [x for x, _ in pairs], [y for _, y in pairs], [0.1, 0.05, 0.1])
    stack.eval()
    x = [torch.randn(4, 3, 32, 32) for _ in SEEDS]
    out = stack(stack_inputs(x))
    returned = stack.to_members()
    for i, (seed, residual) in enumerate(zip(SEEDS, RESIDUAL, strict=True)):
        torch.manual_seed(seed + 100)  # another init: every number must come from the state dict
        fresh = CifarResNet(8, residual=residual)
        fresh.load_state_dict(stack.member_state_dict(i), strict=True)
        fresh.eval()
        returned[i].eval()
        assert returned[i].residual == residual
        assert torch.equal(fresh(x[i]), returned[i](x[i]))  # the same net: bit for bit
        # the stack's grouped kernels sum in another order: fp32 rounding apart
        torch.testing.assert_close(fresh(x[i]), out[:, i], rtol=1e-5, atol=1e-5)
    # untouched members come back bit for bit
    for net, back in zip(nets, StackedCifarResNet.from_members(nets).to_members(), strict=True):
        a, b = net.state_dict(), back.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # and back: a stack of the returned members is the same stack
    again = StackedCifarResNet.from_members(stack.to_members())
    for (ka, a), (kb, b) in zip(
        stack.state_dict().items(), again.state_dict().items(), strict=True
    ):
        assert ka == kb and torch.equal(a, b)


def test_member_init_is_its_own_seed():
    stack = StackedCifarResNet.from_members(members(8))
    for i, (seed, residual) in enumerate(zip(SEEDS, RESIDUAL, strict=True)):
        torch.manual_seed(seed)
        own = CifarResNet(8, residual=residual).state_dict()
        mine = stack.member_state_dict(i)
        assert all(torch.equal(mine[k], own[k]) for k in own)
    # from_members draws nothing from the RNG
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    StackedCifarResNet.from_members(members(8)[:1])
    torch.manual_seed(0)
    assert torch.equal(torch.rand(3), expected)


def test_option_a_padding_lands_in_each_members_block():
    """A stage's first block of a residual member, fed one member at a time, matches PadShortcut."""
    nets = members(8)
    stack = StackedCifarResNet.from_members(nets)
    x = torch.randn(2, 3 * 16, 8, 8).relu()
    sc = stack.layer2[0].shortcut(x)  # 16 -> 32 channels per member
    assert sc.shape == (2, 3 * 32, 4, 4)
    for i in (0, 2):
        torch.testing.assert_close(
            sc[:, 32 * i : 32 * (i + 1)],
            nets[i].layer2[0].shortcut(x[:, 16 * i : 16 * (i + 1)]),
            rtol=0,
            atol=0,
        )


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"depth": 14}, "depth"),
        ({"shortcut": "B"}, "shortcut"),
        ({"num_classes": 100}, "num_classes"),
        ({"in_channels": 1}, "in_channels"),
    ],
)
def test_members_that_differ_in_more_than_residual_are_refused_by_name(kwargs, name):
    base = dict(depth=8, residual=True, shortcut="A", num_classes=10, in_channels=3)
    odd = CifarResNet(**{**base, "residual": False, **kwargs})
    with pytest.raises(ConfigError) as ex:
        StackedCifarResNet.from_members([CifarResNet(**base), odd])
    msg = str(ex.value)
    assert f"must share {name}:" in msg and "member 1" in msg and "\n" not in msg


def test_other_shortcut_options_are_refused():
    with pytest.raises(ConfigError, match="option A only"):
        StackedCifarResNet.from_members(
            [CifarResNet(8, shortcut="B"), CifarResNet(8, shortcut="B")]
        )
    with pytest.raises(ConfigError, match="option A only"):
        StackedCifarResNet(8, [True, False], shortcut="C")


@pytest.mark.slow
def test_optimizer_state_round_trip_resumes_exactly():
    data = batches(6, 16)
    nets = members(8)
    stack = StackedCifarResNet.from_members(nets)
    opt = StackedSGD(stack.parameters(), k=3, lr=0.1)
    xs = lambda pairs: ([x for x, _ in pairs], [y for _, y in pairs])  # noqa: E731
    for pairs in data[:3]:
        stacked_step(stack, opt, *xs(pairs), [0.01, 0.1, 0.1])
    opt.freeze([2])
    # deep copies: state dicts share the live tensors (as torch's do)
    saved_model, saved_opt = copy.deepcopy(stack.state_dict()), copy.deepcopy(opt.state_dict())
    for pairs in data[3:]:
        stacked_step(stack, opt, *xs(pairs), 0.1)
    resumed = StackedCifarResNet.from_members(members(8))
    resumed.load_state_dict(saved_model)
    ropt = StackedSGD(resumed.parameters(), k=3, lr=0.5)
    ropt.load_state_dict(saved_opt)
    assert ropt.active.tolist() == [True, True, False]
    for pairs in data[3:]:
        stacked_step(resumed, ropt, *xs(pairs), 0.1)
    for (ka, a), (kb, b) in zip(
        stack.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        assert ka == kb and torch.equal(a, b), ka


@pytest.mark.slow
def test_member_optimizer_state_loads_into_torch_sgd():
    """A member's (weights, SGD state) continue in a separate run exactly as in the stack."""
    with default_dtype(torch.float64):
        data = batches(4, 16)
        stack = StackedCifarResNet.from_members(members(8))
        opt = StackedSGD(stack.parameters(), k=3, lr=0.1)
        for pairs in data[:3]:
            stacked_step(stack, opt, [x for x, _ in pairs], [y for _, y in pairs], [0.1, 0.02, 0.1])
        solo = stack.to_members()[1]
        solo_opt = sgd(solo, foreach=False)
        solo_opt.load_state_dict(opt.member_state_dict(1))
        x, y = data[3][1]
        separate_step(solo, solo_opt, x, y, 0.02)
        stacked_step(stack, opt, [x for x, _ in data[3]], [y for _, y in data[3]], [0.1, 0.02, 0.1])
        mine = stack.member_state_dict(1)
        for key, t in solo.state_dict().items():
            assert rel_diff(mine[key], t)[0] <= 1e-12, key


@pytest.mark.slow
def test_a_diverged_member_is_detected_and_frozen_and_the_others_go_on():
    """fp64: poison member 1 (NaN fc weights); its loss turns NaN, it is frozen, members 0 and 2
    still equal their separate runs to 1e-10."""
    with default_dtype(torch.float64):
        data = batches(8, 16)
        nets = members(8)
        stack = StackedCifarResNet.from_members(nets)
        opts = [sgd(n, foreach=False) for n in nets]
        sopt = StackedSGD(stack.parameters(), k=3, lr=0.1)
        for step, pairs in enumerate(data):
            if step == 3:
                with torch.no_grad():
                    stack.fc.weight[1] = float("nan")
            ref = [
                separate_step(n, o, x, y, 0.1)
                for n, o, (x, y) in zip(nets, opts, pairs, strict=True)
            ]
            losses, logits = stacked_step(
                stack, sopt, [x for x, _ in pairs], [y for _, y in pairs], 0.1
            )
            bad = nonfinite_members(losses)
            assert bad == ([] if step < 3 else [1]), (step, bad)
            sopt.freeze(bad)
            for i in (0, 2):
                assert abs(losses[i] - ref[i][0]).item() <= 1e-10
                assert rel_diff(logits[:, i], ref[i][1])[0] <= 1e-10
                mine, theirs = stack.member_state_dict(i), nets[i].state_dict()
                assert all(rel_diff(mine[k], theirs[k])[0] <= 1e-10 for k in theirs), step
        assert sopt.lr.tolist() == [0.1, 0.0, 0.1] and sopt.active.tolist() == [True, False, True]


@pytest.mark.slow
def test_a_member_frozen_with_finite_weights_keeps_them():
    data = batches(5, 16)
    stack = StackedCifarResNet.from_members(members(8))
    opt = StackedSGD(stack.parameters(), k=3, lr=0.1)
    stacked_step(stack, opt, [x for x, _ in data[0]], [y for _, y in data[0]], 0.1)
    opt.freeze([0])
    before = {name: p.detach().clone() for name, p in stack.named_parameters()}
    for pairs in data[1:]:
        stacked_step(stack, opt, [x for x, _ in pairs], [y for _, y in pairs], 0.1)
    for name, p in stack.named_parameters():
        v, b = p.detach().unflatten(0, (3, -1)), before[name].unflatten(0, (3, -1))
        assert torch.equal(v[0], b[0]), name  # frozen: exactly as it was
        assert not torch.equal(v[1], b[1]) and not torch.equal(v[2], b[2]), (
            name
        )  # the others moved on


def test_set_lr_skips_unchanged_numbers_and_keeps_frozen_members_at_zero():
    stack = StackedCifarResNet.from_members(members(8))
    opt = StackedSGD(stack.parameters(), k=3, lr=0.1)
    full = opt._lr_full[0].unflatten(0, (3, -1))
    assert full.flatten(1)[:, 0].tolist() == pytest.approx([-0.1, -0.1, -0.1])
    opt.set_lr([0.01, 0.1, 0.1])
    opt.freeze([1])
    opt.set_lr([0.01, 0.1, 0.1])  # the same numbers as before the freeze: member 1 stays at 0
    assert opt.lr.tolist() == pytest.approx([0.01, 0.0, 0.1])
    assert full.flatten(1)[:, 0].tolist() == pytest.approx([-0.01, 0.0, -0.1])
    opt.set_lr(torch.tensor([0.2, 0.2, 0.3]))
    assert opt.lr.tolist() == pytest.approx([0.2, 0.0, 0.3])
    assert full.flatten(1)[:, 0].tolist() == pytest.approx([-0.2, 0.0, -0.3])


def test_stacked_batches_give_each_member_its_separate_runs_batches():
    """Member i of a stacked batch is, bit for bit, the batch its own run draws (order and
    augmentation from its own seed), across epoch boundaries and a state round trip."""
    from resnet_repro.data.pipeline import DeviceBatches, StackedBatches, pixel_mean

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (40,), generator=g)
    mean, seeds = pixel_mean(x), (11, 22, 33)
    stack = StackedBatches(x, y, 16, mean, "cpu", seeds=seeds)
    alone = [DeviceBatches(x, y, 16, mean, "cpu", seed=s) for s in seeds]
    assert all(m.x.data_ptr() == stack.members[0].x.data_ptr() for m in stack.members)  # one copy
    saved = None
    for step in range(7):  # 2 batches per epoch: three epoch boundaries
        if step == 3:
            saved = stack.state_dict()
        xb, yb = stack.next()
        assert xb.shape == (16, 9, 8, 8) and yb.shape == (16, 3)
        for i, b in enumerate(alone):
            xi, yi = b.next()
            assert torch.equal(xb[:, 3 * i : 3 * i + 3], xi) and torch.equal(yb[:, i], yi)
    assert stack.epoch == alone[0].epoch == 4
    again = StackedBatches(x, y, 16, mean, "cpu", seeds=seeds)
    again.load_state_dict(saved)
    replay = [again.next() for _ in range(4)]
    fresh = StackedBatches(x, y, 16, mean, "cpu", seeds=seeds)
    expected = [fresh.next() for _ in range(7)][3:]
    for (xa, ya), (xe, ye) in zip(replay, expected, strict=True):
        assert torch.equal(xa, xe) and torch.equal(ya, ye)


@pytest.mark.slow
def test_one_stack_on_the_device_pipeline_equals_its_separate_runs_fp64():
    """The whole step as runs take it: each member's own seeded init, its own data order and
    augmentation (``StackedBatches``), the per-member lr; fp64, 20 steps, equal to 1e-10."""
    from resnet_repro.data.pipeline import DeviceBatches, StackedBatches, pixel_mean

    g = torch.Generator().manual_seed(5)
    x = torch.randint(0, 256, (48, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (48,), generator=g)
    mean = pixel_mean(x)
    with default_dtype(torch.float64):
        nets = members(8)
        stack = StackedCifarResNet.from_members(copy.deepcopy(nets))
        opts = [sgd(n, foreach=False) for n in nets]
        sopt = StackedSGD(stack.parameters(), k=len(nets), lr=0.1)
        data = StackedBatches(x, y, BATCH, mean, "cpu", seeds=SEEDS)
        alone = [DeviceBatches(x, y, BATCH, mean, "cpu", seed=s) for s in SEEDS]
        for step in range(STEPS):
            lrs = [lr_of(i, step) for i in range(len(nets))]
            xb, yb = data.next()
            loss_s, logits_s = stacked_step(
                stack, sopt, list(xb.double().split(3, dim=1)), list(yb.unbind(1)), lrs
            )
            ref = []
            for net, opt, b, lr in zip(nets, opts, alone, lrs, strict=True):
                xi, yi = b.next()
                ref.append(separate_step(net, opt, xi.double(), yi, lr))
            worst = compare(stack, sopt, nets, opts, loss_s, logits_s, ref)
            assert all(abs_diff < 1e-10 for abs_diff, _ in worst.values()), (step, worst)

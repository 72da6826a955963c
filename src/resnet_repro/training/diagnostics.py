"""What a run measures about its layers: response statistics (paper Fig. 7) and gradient norms.

A "layer" is a 3x3 conv and the BN after it; its response is the BN output, before any addition
and ReLU (the paper's definition for Fig. 7). For the CIFAR nets that is the stem and the two
layers of every block, 6n+1 layers in forward order. The same rule (a ``bnK`` whose sibling
``convK`` is a 3x3 conv) finds the 3x3 layers of torchvision-style nets.
"""

from __future__ import annotations

import torch
from torch import nn


def conv3x3_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d, nn.BatchNorm2d]]:
    """(BN module name, 3x3 conv, its BN) for every 3x3 conv-BN layer, in forward order.

    The conv's name is the BN's with ``bn`` replaced by ``conv`` (``layer1.0.bn2``:
    ``layer1.0.conv2``).
    """
    found = []
    for name, mod in model.named_modules():
        for child_name, child in mod.named_children():
            if not (isinstance(child, nn.BatchNorm2d) and child_name.startswith("bn")):
                continue
            conv = getattr(mod, "conv" + child_name[2:], None)
            if isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3):
                found.append((f"{name}.{child_name}" if name else child_name, conv, child))
    return found


@torch.no_grad()
def layer_response_std(model: nn.Module, batches) -> list[dict]:
    """Std of every 3x3 layer's response over ``batches`` (normalised images), in eval mode.

    ``std`` is over all of a layer's outputs (images, channels, positions); ``channel_std`` is the
    mean over channels of each channel's std. Sums are kept in float64 on the model's device.
    """
    layers = conv3x3_layers(model)
    sums: dict[str, list] = {}

    def hook(name):
        def fn(_mod, _inp, out):
            o = out.detach().double()
            c = o.transpose(0, 1).reshape(o.shape[1], -1)  # channels x (images * positions)
            acc = sums.setdefault(name, [0, torch.zeros_like(c[:, 0]), torch.zeros_like(c[:, 0])])
            acc[0] += c.shape[1]
            acc[1] += c.sum(1)
            acc[2] += (c * c).sum(1)

        return fn

    handles = [bn.register_forward_hook(hook(name)) for name, _, bn in layers]
    was_training = model.training
    model.eval()
    try:
        for xb in batches:
            model(xb)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    rows = []
    for i, (name, _, _) in enumerate(layers, start=1):
        count, s, ss = sums[name]
        ch_mean = s / count
        ch_var = (ss / count - ch_mean**2).clamp_min(0)
        n_all = count * len(s)
        all_mean = s.sum() / n_all
        all_var = (ss.sum() / n_all - all_mean**2).clamp_min(0)
        rows.append(
            {
                "layer": i,
                "module": name,
                "std": all_var.sqrt().item(),
                "channel_std": ch_var.sqrt().mean().item(),
            }
        )
    return rows


def conv_grad_norms(model: nn.Module, members: int | None = None) -> list[dict] | list[list[dict]]:
    """L2 norms of each 3x3 conv's weight gradient (after ``backward``) and of its weight, one
    device read for all. A conv followed by BN is scale-invariant, so its effective step is
    ``grad_norm / weight_norm``; the raw gradient norm alone misleads where weights have grown.

    ``members=k``: the model is a stack of k nets (``models/stacked.py``; member i's filters are
    dim 0's i-th k-th); the rows of each member, as its own net would give them.
    """
    layers = conv3x3_layers(model)

    def norms(t: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        t = torch.zeros_like(like) if t is None else t.detach()
        return t.norm() if members is None else t.unflatten(0, (members, -1)).flatten(1).norm(dim=1)

    table = torch.stack(
        [
            torch.stack([norms(conv.weight.grad, conv.weight), norms(conv.weight, conv.weight)])
            for _, conv, _ in layers
        ]
    ).cpu()  # (layers, 2) or (layers, 2, k)
    per_member = [table] if members is None else table.unbind(-1)
    rows = [
        [
            {"layer": i, "module": _conv_name(name), "grad_norm": g, "weight_norm": w}
            for i, ((name, _, _), (g, w)) in enumerate(
                zip(layers, t.tolist(), strict=True), start=1
            )
        ]
        for t in per_member
    ]
    return rows[0] if members is None else rows


def _conv_name(bn_name: str) -> str:
    head, _, last = bn_name.rpartition(".")
    return f"{head}.conv{last[2:]}" if head else f"conv{last[2:]}"

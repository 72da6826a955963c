"""k CIFAR nets of one depth trained as one network: :class:`StackedCifarResNet` and
:class:`StackedSGD`.

The nets of one depth in the §4.2 study (plain and residual, every seed) have the same layers; plain
and residual differ only in the shortcut, seeds only in the numbers. At batch 128 one such net
leaves a GPU almost idle (16-64 channels, kernels of a few microseconds), so k of them are stacked
along the channel axis and run as one net whose every conv has ``groups=k``: each kernel does k
times the work for about the same latency.

Layout (member ``i`` of ``k``):

- input ``(B, 3k, H, W)``: member i's batch in channels ``3i .. 3i+2`` (:func:`stack_inputs`);
  targets ``(B, k)`` (:func:`stack_targets`);
- every conv is grouped, ``groups=k``; member i's filters are output channels ``i*C .. (i+1)*C-1``
  (each stacked parameter and buffer is its members' tensors concatenated along dim 0, so
  ``p.unflatten(0, (k, -1))[i]`` is member i's tensor);
- BN over ``k*C`` channels is per member by construction;
- option-A shortcuts subsample and zero-pad per member (member i's new zero channels land in member
  i's block, as :class:`~resnet_repro.models.cifar_resnet.PadShortcut` places them);
- a per-block shortcut gate (1 residual, 0 plain, per member's channels):
  ``out = relu(bn2(conv2(...)) + gate * shortcut(x))``; when every member is residual (or every
  one plain) the gate is skipped (a plain add, or no shortcut at all);
- a per-member fc: weight ``(k, classes, 64)``, bias ``(k, classes)``, logits ``(B, k, classes)``.

:func:`stacked_cross_entropy` sums the members' mean cross-entropies, so each member's gradient
is its separate run's. :class:`StackedSGD` is torch's SGD (momentum, weight decay, no Nesterov)
with a per-member learning rate, each member's momentum equal to its separate optimizer's.
:meth:`StackedCifarResNet.from_members` / :meth:`~StackedCifarResNet.member_state_dict` move
weights between the stack and separately built :class:`CifarResNet` nets.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .cifar_resnet import CifarResNet
from .registry import n_of_depth

__all__ = [
    "StackedBasicBlock",
    "StackedCifarResNet",
    "StackedPadShortcut",
    "StackedSGD",
    "nonfinite_members",
    "stack_inputs",
    "stack_targets",
    "stacked_cross_entropy",
]


def stack_inputs(batches: Sequence[torch.Tensor]) -> torch.Tensor:
    """k batches ``(B, C, H, W)`` (one per member) as one ``(B, kC, H, W)`` batch."""
    return torch.cat(list(batches), dim=1)


def stack_targets(targets: Sequence[torch.Tensor]) -> torch.Tensor:
    """k label vectors ``(B,)`` as ``(B, k)``."""
    return torch.stack(list(targets), dim=1)


def stacked_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(total, per_member)``: each member's mean cross-entropy ``(k,)`` and their sum.

    The sum's gradient with respect to member i's weights is member i's own loss gradient (the
    members share no weights), so backpropagating ``total`` gives every member its separate run's
    gradient.
    """
    b, k, classes = logits.shape
    per_sample = F.cross_entropy(
        logits.reshape(b * k, classes), targets.reshape(b * k), reduction="none"
    )
    per_member = per_sample.view(b, k).mean(0)
    return per_member.sum(), per_member


def nonfinite_members(losses: torch.Tensor) -> list[int]:
    """The members whose loss is NaN or infinite (``losses``: the ``(k,)`` per-member losses)."""
    return torch.nonzero(~torch.isfinite(losses.detach())).flatten().tolist()


def _conv(in_planes: int, out_planes: int, k: int, stride: int = 1) -> nn.Conv2d:
    """k members' 3x3 convs (padding 1, no bias) as one grouped conv."""
    return nn.Conv2d(
        k * in_planes, k * out_planes, kernel_size=3, stride=stride, padding=1, bias=False, groups=k
    )


class StackedPadShortcut(nn.Module):
    """Option A per member: stride-2 subsampling and each member's new channels zero-padded."""

    def __init__(self, k: int, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.k, self.in_planes, self.stride = k, in_planes, stride
        self.extra = out_planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        x = x.unflatten(1, (self.k, self.in_planes))  # (B, k, C_in, H, W)
        return F.pad(x, (0, 0, 0, 0, 0, self.extra)).flatten(1, 2)


class StackedBasicBlock(nn.Module):
    """k members' CifarBasicBlocks; ``gate`` holds 1 (residual) or 0 (plain) per member channel."""

    def __init__(self, k: int, in_planes: int, planes: int, stride: int, residual: Sequence[bool]):
        super().__init__()
        self.conv1 = _conv(in_planes, planes, k, stride)
        self.bn1 = nn.BatchNorm2d(k * planes)
        self.conv2 = _conv(planes, planes, k)
        self.bn2 = nn.BatchNorm2d(k * planes)
        if stride != 1 or in_planes != planes:
            self.shortcut: nn.Module = StackedPadShortcut(k, in_planes, planes, stride)
        else:
            self.shortcut = nn.Identity()
        self.residual, self.planes = tuple(residual), planes
        self.register_buffer("gate", torch.empty(1, k * planes, 1, 1), persistent=False)
        self.fill_gate()
        self.mode = "residual" if all(residual) else "plain" if not any(residual) else "gated"

    @torch.no_grad()
    def fill_gate(self) -> None:
        """(Re)write the gate from ``residual`` (a stack built on the meta device needs this)."""
        gate = torch.tensor([float(r) for r in self.residual]).repeat_interleave(self.planes)
        self.gate.copy_(gate.view(self.gate.shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.mode == "residual":
            out = out + self.shortcut(x)
        elif self.mode == "gated":
            out = out + self.gate * self.shortcut(x)
        return F.relu(out)


class StackedCifarResNet(nn.Module):
    """k CIFAR nets of one depth, shortcut option A, each residual or plain, as one grouped net.

    Its parameters and buffers have the names of a :class:`CifarResNet`'s (``conv1.weight``,
    ``layer2.0.bn1.running_mean``, ``fc.weight``, ...), each holding the k members' tensors along
    dim 0 (the fc: ``(k, classes, 64)`` and ``(k, classes)``).
    """

    def __init__(
        self,
        depth: int,
        residual: Sequence[bool],
        shortcut: str = "A",
        num_classes: int = 10,
        in_channels: int = 3,
    ):
        super().__init__()
        if shortcut != "A":
            raise ConfigError(f"stacked nets support shortcut option A only, not {shortcut!r}")
        residual = tuple(bool(r) for r in residual)
        if not residual:
            raise ConfigError("a stacked net needs at least one member")
        self.k, self.residual = len(residual), residual
        self.depth, self.n = depth, n_of_depth(depth)  # ValueError unless 6n+2
        self.shortcut_option, self.num_classes, self.in_channels = (
            shortcut,
            num_classes,
            in_channels,
        )
        # the members first, from the current RNG state, as separate builds in a row would draw
        # them; the grouped layers are laid out on the meta device (no draws) and then filled
        members = [
            CifarResNet(
                depth,
                residual=r,
                shortcut=shortcut,
                num_classes=num_classes,
                in_channels=in_channels,
            )
            for r in residual
        ]
        k = self.k
        with torch.device("meta"):
            self.conv1 = _conv(in_channels, 16, k)
            self.bn1 = nn.BatchNorm2d(k * 16)
            self.in_planes = 16
            self.layer1 = self._make_layer(16, stride=1)
            self.layer2 = self._make_layer(32, stride=2)
            self.layer3 = self._make_layer(64, stride=2)
            self.fc = nn.Module()
            self.fc.weight = nn.Parameter(torch.empty(k, num_classes, 64))
            self.fc.bias = nn.Parameter(torch.empty(k, num_classes))
        self.to_empty(device=members[0].fc.weight.device)
        for block in self.modules():  # to_empty leaves the (non-persistent) gates unwritten
            if isinstance(block, StackedBasicBlock):
                block.fill_gate()
        self.load_members(members)

    def _make_layer(self, planes: int, stride: int) -> nn.Sequential:
        blocks = []
        for i in range(self.n):
            blocks.append(
                StackedBasicBlock(
                    self.k, self.in_planes, planes, stride if i == 0 else 1, self.residual
                )
            )
            self.in_planes = planes
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, k*in_channels, H, W)`` -> logits ``(B, k, num_classes)``."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        feats = x.mean((2, 3)).unflatten(1, (self.k, 64))  # (B, k, 64)
        return torch.einsum("bkc,koc->bko", feats, self.fc.weight) + self.fc.bias

    # --- members in and out -------------------------------------------------------------------

    @staticmethod
    def describe_member(model: CifarResNet) -> dict:
        """What members of one stack must share (everything but ``residual``)."""
        if not isinstance(model, CifarResNet):
            raise ConfigError(
                f"a stacked net holds CifarResNet members, not {type(model).__name__}"
            )
        return {
            "depth": model.depth,
            "shortcut": model.shortcut_option,
            "num_classes": model.fc.out_features,
            "in_channels": model.conv1.in_channels,
        }

    @classmethod
    def from_members(cls, models: Sequence[CifarResNet]) -> StackedCifarResNet:
        """A stack holding exactly these nets' weights and BN buffers (member i = ``models[i]``).

        The members may differ in ``residual`` only; a member of another depth, shortcut option,
        number of classes or input channels is refused, by name.
        """
        if not models:
            raise ConfigError("a stacked net needs at least one member")
        first = cls.describe_member(models[0])
        for i, m in enumerate(models[1:], start=1):
            d = cls.describe_member(m)
            for key, value in d.items():
                if value != first[key]:
                    raise ConfigError(
                        f"stacked members must share {key}: member 0 has {first[key]!r}, "
                        f"member {i} has {value!r}"
                    )
        # built on the meta device: no throw-away initialisation, and the RNG is left untouched
        with torch.device("meta"):
            stack = cls(
                first["depth"],
                [m.residual for m in models],
                shortcut=first["shortcut"],
                num_classes=first["num_classes"],
                in_channels=first["in_channels"],
            )
        stack = stack.to_empty(device=models[0].fc.weight.device).to(models[0].fc.weight.dtype)
        for block in stack.modules():
            if isinstance(block, StackedBasicBlock):
                block.fill_gate()
        stack.load_members(models)
        return stack

    def load_members(self, models: Sequence[CifarResNet]) -> None:
        """Copy k separately built nets' weights and BN buffers into the stack (member order)."""
        if len(models) != self.k:
            raise ConfigError(f"this stack holds {self.k} members, not {len(models)}")
        states = [m.state_dict() for m in models]
        own = self.state_dict()
        with torch.no_grad():
            for name, t in own.items():
                parts = [s[name] for s in states]
                if name.endswith("num_batches_tracked"):
                    t.copy_(parts[0])  # the members step together; only BN momentum=None reads it
                elif name.startswith("fc."):
                    t.copy_(torch.stack(parts))
                else:
                    t.copy_(torch.cat(parts))

    def member_state_dict(self, i: int) -> dict[str, torch.Tensor]:
        """Member i as a :class:`CifarResNet` state dict (copies; loads with ``strict=True``)."""
        if not 0 <= i < self.k:
            raise IndexError(f"member {i} of a stack of {self.k}")
        out = {}
        for name, t in self.state_dict().items():
            if name.endswith("num_batches_tracked"):
                out[name] = t.clone()
            elif name.startswith("fc."):
                out[name] = t[i].clone()
            else:
                out[name] = t.unflatten(0, (self.k, -1))[i].clone()
        return out

    def to_members(self) -> list[CifarResNet]:
        """k separately built CifarResNets holding the members' current weights and buffers."""
        ref = self.fc.weight
        members = []
        for i, r in enumerate(self.residual):
            with torch.device("meta"):
                m = CifarResNet(
                    self.depth,
                    residual=r,
                    shortcut=self.shortcut_option,
                    num_classes=self.num_classes,
                    in_channels=self.in_channels,
                )
            m = m.to_empty(device=ref.device).to(ref.dtype)
            m.load_state_dict(self.member_state_dict(i), strict=True)
            members.append(m)
        return members


class StackedSGD(torch.optim.Optimizer):
    """SGD with momentum and weight decay (no Nesterov, no dampening) over a stack's parameters,
    with a per-member learning rate.

    Per parameter, as ``torch.optim.SGD``: ``d = g + wd*p``; ``buf = d`` on the first step, else
    ``momentum*buf + d``; ``p -= lr*buf``, where ``lr`` is member i's rate on member i's slice
    (dim 0 of every stacked tensor holds the k members in order). Member i's slice of each
    momentum buffer is what member i's own SGD would hold (:meth:`member_state_dict`).

    ``lr`` is a ``(k,)`` tensor (:meth:`set_lr`); it is expanded once per change to full-size
    per-parameter tensors, so a step is four ``torch._foreach_*`` calls, with no Python loop over
    members (nor over parameters, except to create the momentum buffers on the first step and,
    while some member is frozen, to mask its gradients). :meth:`freeze` stops a member (its rate
    becomes 0 and its gradients are ignored) while the others go on.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        k: int,
        lr: float | Sequence[float] | torch.Tensor,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        nesterov: bool = False,
    ):
        if nesterov:
            raise ConfigError(
                "StackedSGD does not implement Nesterov momentum (the paper's SGD has none)"
            )
        super().__init__(params, {"momentum": momentum, "weight_decay": weight_decay})
        if len(self.param_groups) != 1:
            raise ConfigError("StackedSGD takes one parameter group (the whole stack)")
        self.k = k
        self.params: list[torch.Tensor] = self.param_groups[0]["params"]
        ref = self.params[0]
        for p in self.params:
            if p.shape[0] % k:
                raise ConfigError(
                    f"a stacked parameter of shape {tuple(p.shape)} does not split into {k} members"
                )
        self.lr = torch.zeros(k, dtype=ref.dtype, device=ref.device)
        self.active = torch.ones(k, dtype=torch.bool, device=ref.device)
        self._lr_full = [torch.empty_like(p) for p in self.params]
        self._active_full: list[torch.Tensor] | None = None
        self.set_lr(lr)

    def _member_view(self, t: torch.Tensor) -> torch.Tensor:
        return t.unflatten(0, (self.k, -1))

    def _expand(self, values: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return values.view((self.k,) + (1,) * p.dim())

    @torch.no_grad()
    def set_lr(self, lr: float | Sequence[float] | torch.Tensor) -> None:
        """Set every member's rate: a number (all members) or k numbers; frozen members stay at 0.

        Plain numbers equal to the last ones given are a no-op (the training loop may call this
        every step); a tensor is always applied.
        """
        key = (
            tuple(float(v) for v in lr)
            if isinstance(lr, Sequence)
            else (float(lr),)
            if isinstance(lr, (int, float))
            else None
        )
        if key is not None and key == getattr(self, "_lr_key", None):
            return
        self._lr_key = key
        lr = torch.as_tensor(lr, dtype=self.lr.dtype).to(self.lr.device).expand(self.k)
        self.lr.copy_(torch.where(self.active, lr, torch.zeros_like(lr)))
        for full, p in zip(self._lr_full, self.params, strict=True):
            self._member_view(full).copy_(self._expand(-self.lr, p).expand_as(self._member_view(p)))

    @torch.no_grad()
    def freeze(self, members: Iterable[int]) -> None:
        """Stop these members: rate 0, gradients ignored, momentum cleared; the others go on.

        A frozen member whose weights are finite keeps them exactly; one that already holds NaN
        stays NaN. Either way no other member sees it (members share no weights or statistics).
        """
        members = list(members)
        if not members:
            return
        self.active[members] = False
        self.set_lr(self.lr)
        for p in self.params:
            buf = self.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                self._member_view(buf)[members] = 0
        self._active_full = [
            self._expand(self.active, p).expand_as(self._member_view(p)).reshape(p.shape)
            for p in self.params
        ]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        group = self.param_groups[0]
        params = [p for p in self.params if p.grad is not None]
        if len(params) != len(self.params):
            raise RuntimeError("StackedSGD steps every stacked parameter; some have no gradient")
        grads = [p.grad for p in params]
        if self._active_full is not None:  # some member is frozen: its gradients never enter
            grads = [
                torch.where(a, g, torch.zeros((), dtype=g.dtype, device=g.device))
                for g, a in zip(grads, self._active_full, strict=True)
            ]
        wd, momentum = group["weight_decay"], group["momentum"]
        d = torch._foreach_add(grads, params, alpha=wd) if wd != 0 else list(grads)
        bufs = [self.state[p].get("momentum_buffer") for p in params]
        if any(b is None for b in bufs):
            bufs = [torch.clone(x).detach() for x in d]
            for p, b in zip(params, bufs, strict=True):
                self.state[p]["momentum_buffer"] = b
        else:
            torch._foreach_mul_(bufs, momentum)
            torch._foreach_add_(bufs, d)
        torch._foreach_addcmul_(params, self._lr_full, bufs)  # p += (-lr) * buf
        return loss

    def state_dict(self) -> dict:
        sd = super().state_dict()
        sd["member_lr"] = self.lr.clone()
        sd["active"] = self.active.clone()
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        lr, active = state_dict.pop("member_lr"), state_dict.pop("active")
        super().load_state_dict(state_dict)
        self.active.fill_(True)
        self._active_full = None
        self.set_lr(lr)
        frozen = torch.nonzero(~active.to(self.active.device)).flatten().tolist()
        if frozen:
            self.active[frozen] = False
            self.set_lr(self.lr)
            self._active_full = [
                self._expand(self.active, p).expand_as(self._member_view(p)).reshape(p.shape)
                for p in self.params
            ]

    @torch.no_grad()
    def load_member_state_dicts(self, states: Sequence[dict]) -> None:
        """Load k members' ``torch.optim.SGD`` states (:meth:`member_state_dict`'s format, e.g. from
        their separate checkpoints) into the stack: member i's momentum into member i's slice."""
        if len(states) != self.k:
            raise ConfigError(
                f"this stack holds {self.k} members, not {len(states)} optimizer states"
            )
        for j, p in enumerate(self.params):
            bufs = [s["state"].get(j, {}).get("momentum_buffer") for s in states]
            if all(b is None for b in bufs):
                self.state.pop(p, None)
                continue
            if any(b is None for b in bufs):
                raise ConfigError(
                    "stacked members must all have taken a step, or none (their momentum differs)"
                )
            full = torch.empty_like(p)
            view = self._member_view(full)
            for i, b in enumerate(bufs):
                view[i].copy_(b.reshape(view[i].shape))
            self.state[p]["momentum_buffer"] = full

    def member_state_dict(self, i: int) -> dict:
        """Member i's optimizer state in ``torch.optim.SGD``'s format, for an SGD over its
        CifarResNet's ``parameters()`` (same order as the stack's)."""
        state = {}
        for j, p in enumerate(self.params):
            buf = self.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                own = self._member_view(buf)[i]
                state[j] = {
                    "momentum_buffer": (own.squeeze(0) if p.shape[0] == self.k else own).clone()
                }
        group = self.param_groups[0]
        return {
            "state": state,
            "param_groups": [
                {
                    "lr": float(self.lr[i]),
                    "momentum": group["momentum"],
                    "dampening": 0,
                    "weight_decay": group["weight_decay"],
                    "nesterov": False,
                    "maximize": False,
                    "foreach": None,
                    "differentiable": False,
                    "fused": None,
                    "params": list(range(len(self.params))),
                }
            ],
        }

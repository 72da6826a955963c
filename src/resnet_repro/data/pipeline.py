"""Device-resident data: the whole uint8 dataset lives on the training device (``DeviceData``).

Per iteration: take the next indices of a shuffled epoch, gather, pad-4 random crop and random
horizontal flip drawn independently per sample, then per-pixel mean subtraction. All of it is
batched tensor work on the device; no DataLoader, no PIL, no per-image Python, no host sync.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ..errors import ConfigError

if TYPE_CHECKING:
    from .splits import Splits


def crop_flip(
    x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor, pad: int
) -> torch.Tensor:
    """Zero-pad ``x`` (B,C,H,W) by ``pad``, crop HxW at (top, left) per sample, then flip where
    ``flip``.

    Equals torchvision's ``RandomCrop(H, padding=pad)`` followed by ``RandomHorizontalFlip`` for the
    same offsets and flips.
    """
    b, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    dev = x.device
    ar_h, ar_w = torch.arange(h, device=dev), torch.arange(w, device=dev)
    rows = top[:, None] + ar_h  # (B,H)
    cols = left[:, None] + torch.where(flip[:, None], w - 1 - ar_w, ar_w)  # (B,W)
    bi = torch.arange(b, device=dev)[:, None, None, None]
    ci = torch.arange(c, device=dev)[None, :, None, None]
    return xp[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


def random_crop_flip(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Pad-``pad`` random crop and random horizontal flip, drawn independently per sample."""
    b = x.shape[0]
    offsets = torch.randint(0, 2 * pad + 1, (2, b), device=x.device, generator=generator)
    flip = torch.randint(0, 2, (b,), device=x.device, generator=generator).bool()
    return crop_flip(x, offsets[0], offsets[1], flip, pad)


def pixel_mean(x: torch.Tensor) -> torch.Tensor:
    """Per-pixel mean (1,C,H,W) of uint8 images, in [0, 1] units (torch's default dtype,
    float32)."""
    return (x.sum(dim=0, dtype=torch.float64) / (255.0 * len(x))).to(torch.get_default_dtype())[
        None
    ]


def normalize(x: torch.Tensor, mean: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """uint8 images to [0, 1] minus the per-pixel mean; resized to ``size`` (bilinear) when given.
    In torch's default dtype: float32, or float64 where a test sets it (the stacked runs'
    exactness).

    The scaling multiplies by the float32 reciprocal of 255: CUDA divides by a scalar that way, the
    CPU divides exactly, so a division would differ by one bit between them for half the pixel
    values.
    """
    x = x.to(torch.get_default_dtype()).mul_(1 / 255).sub_(mean)
    if size is not None and x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x


class DeviceBatches:
    """Endless training batches of fixed size from a device-resident uint8 split.

    Each epoch is a fresh permutation; the last partial batch of an epoch is dropped so every
    step has the same shape. The sampler state (generator, permutation, position) is part of the
    checkpoint, so a resumed run sees exactly the batches an uninterrupted one would.
    """

    def __init__(
        self,
        x,
        y,
        batch_size: int,
        mean: torch.Tensor,
        device,
        *,
        augment: bool = True,
        seed: int = 0,
        pad: int = 4,
        size: int | None = None,
    ):
        if batch_size > len(x):
            raise ConfigError(
                f"trainer.batch_size={batch_size} is larger than the training split ({len(x)} "
                f"images). Use a smaller batch size or more training data."
            )
        self.x, self.y = x.to(device), y.to(device)
        self.mean, self.batch_size, self.augment, self.pad = (
            mean.to(device),
            batch_size,
            augment,
            pad,
        )
        self.size = size
        self.generator = torch.Generator(device=self.x.device).manual_seed(seed)
        self.perm: torch.Tensor | None = None
        self.pos = 0
        self.epoch = 0

    @property
    def steps_per_epoch(self) -> int:
        return len(self.x) // self.batch_size

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.perm is None or self.pos + self.batch_size > len(self.x):
            self.perm = torch.randperm(len(self.x), device=self.x.device, generator=self.generator)
            self.pos = 0
            self.epoch += 1
        idx = self.perm[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        xb, yb = self.x[idx], self.y[idx]
        if self.augment:
            xb = random_crop_flip(xb, self.pad, self.generator)
        return normalize(xb, self.mean, self.size), yb

    def state_dict(self) -> dict:
        return {
            "generator": self.generator.get_state(),
            "perm": None if self.perm is None else self.perm.cpu(),
            "pos": self.pos,
            "epoch": self.epoch,
        }

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.perm = None if state["perm"] is None else state["perm"].to(self.x.device)
        self.pos, self.epoch = state["pos"], state["epoch"]


def eval_batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, mean: torch.Tensor, size: int | None = None
):
    """Normalised, un-augmented batches of an evaluation split, in order."""
    for i in range(0, len(x), batch_size):
        yield normalize(x[i : i + batch_size], mean, size), y[i : i + batch_size]


class DeviceData:
    """A run's data on its training device, moved there once: the training batches, the evaluation
    splits, the fixed batch whose layer responses Fig. 7 plots, and the normalisation they share
    (the training split's per-pixel mean, the optional resize).
    """

    def __init__(
        self,
        splits: Splits,
        device,
        *,
        batch_size: int,
        augment: bool,
        seed: int | list[int],
        size: int | None,
        probe_images: int,
    ):
        """``seed``: the run's; a list of seeds gives a stack's batches
        (:class:`StackedBatches`)."""
        mean = pixel_mean(splits.train[0])
        self.batches: DeviceBatches | StackedBatches
        if isinstance(seed, list):
            self.batches = StackedBatches(
                *splits.train, batch_size, mean, device, seeds=seed, augment=augment, size=size
            )
        else:
            self.batches = DeviceBatches(
                *splits.train, batch_size, mean, device, augment=augment, seed=seed, size=size
            )
        self.mean, self.size = self.batches.mean, size
        self.evals = {
            s: tuple(v.to(device) for v in getattr(splits, s)) for s in splits.eval_splits
        }
        # Fig. 7's batch: the first held-out images (validation, else test, else training)
        self.probe_split = next(iter(self.evals), "train")
        self.probe = (self.evals[self.probe_split][0] if self.evals else self.batches.x)[
            :probe_images
        ]

    def probe_batches(self, batch_size: int):
        """The layer-statistics batch, normalised, in pieces of ``batch_size``."""
        p = self.probe
        return (
            normalize(p[i : i + batch_size], self.mean, self.size)
            for i in range(0, len(p), batch_size)
        )


class StackedBatches:
    """The training batches of k stacked nets (``models/stacked.py``): member i's images in channels
    ``C*i .. C*(i+1)-1`` of one ``(B, kC, H, W)`` batch, its labels in column i of ``(B, k)``.

    Each member draws its own order and augmentation from its own generator, seeded as its separate
    run's, so member i sees exactly the batches its separate run would; the split lives on the
    device once, shared by every member.
    """

    def __init__(
        self,
        x,
        y,
        batch_size: int,
        mean: torch.Tensor,
        device,
        *,
        seeds,
        augment: bool = True,
        pad: int = 4,
        size: int | None = None,
    ):
        self.members: list[DeviceBatches] = []
        for seed in seeds:
            b = DeviceBatches(
                x, y, batch_size, mean, device, augment=augment, seed=seed, pad=pad, size=size
            )
            x, y, mean = b.x, b.y, b.mean  # already on the device: the next members share them
            self.members.append(b)

    @property
    def epoch(self) -> int:
        return self.members[0].epoch  # the same for every member: one batch size, one split

    @property
    def x(self) -> torch.Tensor:
        return self.members[0].x  # the split, on the device once

    @property
    def mean(self) -> torch.Tensor:
        return self.members[0].mean

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = zip(*(m.next() for m in self.members), strict=True)
        return torch.cat(xs, dim=1), torch.stack(ys, dim=1)

    def state_dict(self) -> dict:
        return {"members": [m.state_dict() for m in self.members]}

    def load_state_dict(self, state: dict) -> None:
        for m, s in zip(self.members, state["members"], strict=True):
            m.load_state_dict(s)

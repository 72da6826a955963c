"""A small synthetic image-classification set in CIFAR's layout, for tests and smoke runs.

Each class has its own random colour pattern; images are that pattern plus noise, so a net can
learn it in a few iterations. Fully determined by the seed.
"""

from __future__ import annotations

import torch


def make_synthetic(num: int, num_classes: int = 10, seed: int = 0, size: int = 32):
    """Return ``num`` uint8 images (num,3,size,size) and int64 labels."""
    g = torch.Generator().manual_seed(seed)
    patterns = torch.rand(num_classes, 3, 4, 4, generator=g) * 255
    patterns = torch.nn.functional.interpolate(patterns, size=(size, size), mode="nearest")
    labels = torch.randint(0, num_classes, (num,), generator=g)
    noise = torch.randn(num, 3, size, size, generator=g) * 40
    images = (patterns[labels] + noise).clamp(0, 255).round().to(torch.uint8)
    return images, labels


def read_synthetic(cfg):
    """``dataset.num_train`` training images and ``dataset.num_test`` test images (none: no test
    split) of ``dataset.num_classes`` classes, each set from its own seed."""
    x, y = make_synthetic(cfg.num_train, cfg.num_classes, seed=1000 + cfg.split_seed)
    test = (
        make_synthetic(cfg.num_test, cfg.num_classes, seed=2000 + cfg.split_seed)
        if cfg.num_test
        else None
    )
    return x, y, test

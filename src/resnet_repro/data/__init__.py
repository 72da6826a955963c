"""Datasets as uint8 tensors, split by protocol, ready to live on the training device.

- ``registry.py``: the datasets' names, shapes and the dataset group's checks (no torch: the
  command line validates a config before torch is imported);
- ``splits.py``: reading a dataset and splitting it by protocol (``load_splits``);
- ``pipeline.py``: the data on the training device, batched augmentation and normalisation;
- ``cifar.py``, ``fashion_mnist.py``, ``synthetic.py``: the readers.

The names below are imported on first use, so ``import resnet_repro.data.registry`` stays light.
"""

from __future__ import annotations

import importlib

_LAZY = {
    name: "splits"
    for name in ("Splits", "check_protocol", "load_splits", "paper_split", "test_batch_available")
}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The splits a run trains and evaluates on: uint8 tensors, split by protocol
(``dataset.protocol``)."""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import DatasetConfig
from ..errors import ConfigError, DataError
from .registry import DATASETS

log = logging.getLogger(__name__)


@dataclass
class Splits:
    """uint8 images (N,3,H,W) and int64 labels per split; ``val``/``test`` may be absent."""

    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor] | None
    test: tuple[torch.Tensor, torch.Tensor] | None
    note: str = ""

    @property
    def eval_splits(self) -> list[str]:
        return [s for s in ("val", "test") if getattr(self, s) is not None]


def test_batch_available(cfg: DatasetConfig) -> bool:
    """Whether the run will have a test split (a CIFAR-10 download brings the test batch too)."""
    row = DATASETS[cfg.name]
    if row.folder is None:  # made from a seed
        return cfg.num_test > 0
    if row.optional_test is None:  # its test files come with the training files
        return True
    folder = Path(cfg.root) / row.folder
    return (folder / row.optional_test).is_file() or (cfg.download and not folder.exists())


def check_protocol(cfg: DatasetConfig) -> None:
    """Refuse, before any work, a protocol that needs a test split the data does not have."""
    if cfg.protocol == "full" and not test_batch_available(cfg):
        row = DATASETS[cfg.name]
        where = (
            "dataset.num_test=0"
            if row.folder is None
            else f"{cfg.root} has no {row.folder}/{row.optional_test}"
        )
        raise ConfigError(
            f"dataset.protocol=full evaluates on the test batch, but {where}. Use "
            f"dataset.protocol=paper (45k/5k train/validation split, validation error), or point "
            f"dataset.root at a copy that includes test_batch."
        )


def paper_split(n: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed, seeded split of ``n`` training images into (train indices, validation indices)."""
    if not 0 < val_size < n:
        raise ConfigError(
            f"dataset.val_size={val_size} is not valid for {n} training images: it must be in [1, "
            f"{n - 1}]."
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[val_size:].sort().values, perm[:val_size].sort().values


def load_splits(cfg: DatasetConfig) -> Splits:
    check_protocol(cfg)
    if cfg.name not in DATASETS:
        raise ConfigError(
            f"dataset.name={cfg.name!r} is not valid. Valid choices: {', '.join(DATASETS)}."
        )
    row = DATASETS[cfg.name]
    root = Path(cfg.root).expanduser()
    if row.folder is not None and root.exists() and not root.is_dir():
        raise DataError(
            f"dataset.root={cfg.root} is a file, not a folder: point dataset.root at the folder "
            f"that holds {row.folder}/."
        )
    module, _, reader = row.reader.partition(":")
    x, y, test = getattr(importlib.import_module(f".{module}", __package__), reader)(cfg)
    if cfg.protocol == "full":
        return Splits(train=(x, y), val=None, test=test)
    tr, va = paper_split(len(x), cfg.val_size, cfg.split_seed)
    note = ""
    if test is None:
        note = (
            "no test batch: evaluating on the validation split only; reported errors are "
            "validation errors"
        )
        log.warning("%s", note)
    return Splits(train=(x[tr], y[tr]), val=(x[va], y[va]), test=test, note=note)

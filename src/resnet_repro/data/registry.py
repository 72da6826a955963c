"""The dataset group (``conf/dataset/``): one row per dataset (what it is and where its files
are), the group's schema and checks, without torch (the command line checks a config before torch
is imported). A new dataset is a row here, a YAML in ``conf/dataset/`` and a reader.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from ..checks import choice
from ..errors import ConfigError

PROTOCOLS = ("paper", "full")
MIN_IMAGE_SIZE = 8
MAX_IMAGE_SIZE = 1024  # dataset.image_size: beyond this one batch alone no longer fits a GPU


class Shape(NamedTuple):
    classes: int
    train_images: int
    channels: int


@dataclass(frozen=True)
class Dataset:
    """A dataset's row: its name in ``dataset.name``, its title in reports, its shape (None: set by
    the config, synthetic data), its reader (``module:function`` in this package, called with the
    ``DatasetConfig``, giving ``(train_x, train_y, test or None)``), the folder under
    ``dataset.root`` that holds its files (None: made from a seed), and the file in that folder
    whose presence decides whether there is a test split (None: the test files always come with
    the training files)."""

    name: str
    title: str
    shape: Shape | None
    reader: str
    folder: str | None
    optional_test: str | None = None


DATASETS = {
    d.name: d
    for d in (
        Dataset(
            "cifar10",
            "CIFAR-10",
            Shape(10, 50_000, 3),
            "cifar:read_cifar10",
            "cifar-10-batches-py",
            "test_batch",
        ),
        Dataset(
            "cifar100",
            "CIFAR-100",
            Shape(100, 50_000, 3),
            "cifar:read_cifar100",
            "cifar-100-python",
        ),
        Dataset(
            "fashion_mnist",
            "Fashion-MNIST",
            Shape(10, 60_000, 1),
            "fashion_mnist:read_fashion_mnist",
            "FashionMNIST/raw",
        ),
        Dataset("synthetic", "synthetic data", None, "synthetic:read_synthetic", None),
    )
}


@dataclass
class DatasetConfig:
    name: str = "cifar10"
    root: str = "data"
    download: bool = True
    verify: bool = True
    protocol: str = "paper"
    val_size: int = 5000
    split_seed: int = 0
    augment: bool = True
    image_size: int | None = None  # null: the native size; else resized on the device (bilinear)
    # synthetic data only: images per split, and classes
    num_train: int = 0
    num_test: int = 0
    num_classes: int = 10


def shape(dataset: DatasetConfig) -> Shape:
    """Classes, training images and channels; synthetic data has ``dataset.num_classes`` classes,
    ``dataset.num_train`` images and 3 channels."""
    row = DATASETS.get(dataset.name)
    return row.shape if row and row.shape else Shape(dataset.num_classes, dataset.num_train, 3)


def train_images(dataset: DatasetConfig) -> int:
    """Images in the training set (synthetic data: ``dataset.num_train``)."""
    return shape(dataset).train_images


def title(name: str) -> str:
    """The dataset's name as reports write it (``CIFAR-10``); an unknown name as it is."""
    return DATASETS[name].title if name in DATASETS else name


def train_split_size(dataset: DatasetConfig) -> int:
    """Images in the training split: the training set, less the validation split (paper
    protocol)."""
    n = train_images(dataset)
    return n - dataset.val_size if dataset.protocol == "paper" else n


def check_dataset(dataset: DatasetConfig) -> None:
    """The dataset group's value-level rules (the held-out split's size: :func:`check_val_size`)."""
    d = dataset
    choice("dataset.name", d.name, tuple(DATASETS))
    choice("dataset.protocol", d.protocol, PROTOCOLS)
    if d.image_size is not None and not MIN_IMAGE_SIZE <= d.image_size <= MAX_IMAGE_SIZE:
        raise ConfigError(
            f"dataset.image_size={d.image_size} is not valid: it must be in [{MIN_IMAGE_SIZE}, "
            f"{MAX_IMAGE_SIZE}] (224 is ImageNet's), or null for the native size."
        )
    if d.protocol == "paper" and d.val_size < 1:
        raise ConfigError(
            f"dataset.val_size={d.val_size} is not valid: the paper protocol holds out a "
            f"validation split, so it must be >= 1 (the paper uses 5000)."
        )
    if d.name == "synthetic" and d.num_train < 1:
        raise ConfigError(f"dataset.num_train={d.num_train} is not valid for synthetic data: >= 1.")
    if d.name == "synthetic" and d.num_classes < 2:
        raise ConfigError(
            f"dataset.num_classes={d.num_classes} is not valid for synthetic data: >= 2."
        )


def check_val_size(dataset: DatasetConfig) -> None:
    """The paper protocol's validation split leaves at least one training image."""
    d, n_images = dataset, train_images(dataset)
    if d.protocol == "paper" and d.val_size >= n_images:
        raise ConfigError(
            f"dataset.val_size={d.val_size} is not valid: {d.name} has {n_images} training images, "
            f"so it must be in [1, {n_images - 1}] (the paper uses 5000 of 50000)."
        )

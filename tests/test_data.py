"""Dataset loaders: CIFAR-10 (the paper's data, split and protocols), Fashion-MNIST and CIFAR-100,
in their official layouts, with the same integrity checks."""

import gzip
import pickle

import numpy as np
import pytest
import torch

from resnet_repro.config import DatasetConfig
from resnet_repro.data import check_protocol, load_splits, paper_split
from resnet_repro.data.cifar import (
    CONTENT_SHA256,
    content_sha256,
    load_cifar10,
    load_cifar100,
    read_batch,
)
from resnet_repro.data.fashion_mnist import OFFICIAL_MD5, RAW_FOLDER, load_fashion_mnist
from resnet_repro.errors import ConfigError, DataError

from .helpers import write_cifar100, write_cifar_pickles, write_idx


# --- what is torchvision's ------------------------------------------------------------------------
def test_the_folders_files_and_md5s_are_torchvisions():
    """The readers keep torchvision's names and md5 table as constants (importing
    torchvision.datasets imports all of torchvision); they must stay torchvision's."""
    from torchvision.datasets import CIFAR10, CIFAR100, FashionMNIST

    from resnet_repro.data import cifar, fashion_mnist

    assert cifar.BASE_FOLDER == CIFAR10.base_folder
    assert (
        cifar.TRAIN_FILES == [name for name, _ in CIFAR10.train_list]
        and cifar.TEST_FILE == CIFAR10.test_list[0][0]
    )
    assert cifar.OFFICIAL_MD5 == dict(CIFAR10.train_list + CIFAR10.test_list)
    assert cifar.CIFAR100_FOLDER == CIFAR100.base_folder
    assert cifar.CIFAR100_SPEC.md5 == dict(CIFAR100.train_list + CIFAR100.test_list)
    assert fashion_mnist.OFFICIAL_MD5 == dict(FashionMNIST.resources)
    assert set(fashion_mnist.OFFICIAL_MD5) == {
        n for pair in fashion_mnist.FILES.values() for n in pair
    }


@pytest.mark.parametrize(
    "name, load",
    [("CIFAR10", load_cifar10), ("CIFAR100", load_cifar100), ("FashionMNIST", load_fashion_mnist)],
)
def test_a_missing_dataset_is_downloaded_with_torchvision(tmp_path, monkeypatch, name, load):
    import torchvision.datasets

    calls = []

    def offline(**kw):
        calls.append(kw)
        raise OSError("no network")

    monkeypatch.setattr(torchvision.datasets, name, offline)
    with pytest.raises(DataError, match=r"the download failed \(OSError: no network\)"):
        load(tmp_path, download=True)
    assert calls == [{"root": str(tmp_path), "train": True, "download": True}]


# --- CIFAR-10 ------------------------------------------------------------------------------------
def test_synthetic_pickles_load_in_official_layout(tmp_path):
    base = write_cifar_pickles(tmp_path, per_file=7)
    x, y, test = load_cifar10(tmp_path, download=False, verify=False)
    assert x.shape == (35, 3, 32, 32) and x.dtype == torch.uint8 and y.dtype == torch.int64
    assert test is None
    with open(base / "data_batch_2", "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    assert torch.equal(x[7], torch.from_numpy(raw[b"data"][0].reshape(3, 32, 32)))  # rows R, G, B
    assert y[7].item() == raw[b"labels"][0]


def test_checksum_mismatch_names_file_and_both_digests(cifar_pickles):
    with pytest.raises(DataError) as e:
        load_cifar10(cifar_pickles, download=False, verify=True)
    msg = str(e.value)
    assert "data_batch_1" in msg and CONTENT_SHA256["data_batch_1"] in msg
    data, labels = read_batch(cifar_pickles / "cifar-10-batches-py" / "data_batch_1", verify=False)
    assert content_sha256(data.reshape(len(data), -1), labels) in msg


def test_truncated_pickle_is_a_clear_error(cifar_pickles):
    p = cifar_pickles / "cifar-10-batches-py" / "data_batch_3"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(DataError, match=r"data_batch_3 is truncated or corrupt"):
        load_cifar10(cifar_pickles, download=False, verify=False)


def test_garbage_file_is_a_clear_error(cifar_pickles):
    (cifar_pickles / "cifar-10-batches-py" / "data_batch_4").write_bytes(b"not a pickle at all")
    with pytest.raises(DataError, match=r"data_batch_4 is truncated or corrupt"):
        load_cifar10(cifar_pickles, download=False, verify=False)


def test_pickle_with_foreign_globals_is_refused(cifar_pickles, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with open(cifar_pickles / "cifar-10-batches-py" / "data_batch_1", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(DataError, match="data_batch_1"):
        load_cifar10(cifar_pickles, download=False, verify=False)
    assert not marker.exists()


def test_labels_out_of_range_and_bad_shapes(tmp_path):
    base = write_cifar_pickles(tmp_path, per_file=5)
    entry = {b"data": np.zeros((5, 3072), np.uint8), b"labels": [0, 1, 2, 3, 10]}
    with open(base / "data_batch_5", "wb") as f:
        pickle.dump(entry, f)
    with pytest.raises(DataError, match=r"data_batch_5 has labels out of range"):
        load_cifar10(tmp_path, download=False, verify=False)
    entry = {b"data": np.zeros((5, 100), np.uint8), b"labels": [0] * 5}
    with open(base / "data_batch_5", "wb") as f:
        pickle.dump(entry, f)
    with pytest.raises(DataError, match=r"data_batch_5 has images of shape \(5, 100\)"):
        load_cifar10(tmp_path, download=False, verify=False)


def test_missing_data_offline_says_how_to_fix(tmp_path):
    with pytest.raises(DataError, match="dataset.root"):
        load_cifar10(tmp_path / "nowhere", download=False)


def test_paper_split_is_fixed_disjoint_and_seeded():
    tr, va = paper_split(50_000, 5_000, seed=0)
    assert len(tr) == 45_000 and len(va) == 5_000
    assert len(set(tr.tolist()) | set(va.tolist())) == 50_000
    tr2, va2 = paper_split(50_000, 5_000, seed=0)
    assert torch.equal(va, va2) and not torch.equal(va, paper_split(50_000, 5_000, seed=1)[1])


def test_paper_protocol_without_test_batch_evaluates_on_validation(cifar_pickles):
    cfg = DatasetConfig(root=str(cifar_pickles), download=False, verify=False, val_size=10)
    s = load_splits(cfg)
    assert s.eval_splits == ["val"] and s.test is None and "validation" in s.note
    assert len(s.train[0]) == 90 and len(s.val[0]) == 10


def test_full_protocol_needs_the_test_batch(cifar_pickles, tmp_path):
    cfg = DatasetConfig(root=str(cifar_pickles), download=False, verify=False, protocol="full")
    with pytest.raises(ConfigError, match="test_batch"):
        check_protocol(cfg)
    with_test = tmp_path / "with_test"
    write_cifar_pickles(with_test, per_file=6, test=True)
    s = load_splits(
        DatasetConfig(root=str(with_test), download=False, verify=False, protocol="full")
    )
    assert s.eval_splits == ["test"] and len(s.train[0]) == 30 and len(s.test[0]) == 6
    s = load_splits(DatasetConfig(root=str(with_test), download=False, verify=False, val_size=5))
    assert s.eval_splits == ["val", "test"] and s.note == ""


@pytest.mark.realdata
def test_the_data_folders_cifar10_loads_and_verifies(data_root):
    x, y, test = load_cifar10(data_root, download=False, verify=True)
    assert x.shape == (50_000, 3, 32, 32) and x.dtype == torch.uint8
    assert torch.equal(torch.bincount(y), torch.full((10,), 5000))
    assert test is None or (
        test[0].shape == (10_000, 3, 32, 32) and len(test[1]) == 10_000
    )  # with or without test_batch
    s = load_splits(DatasetConfig(root=str(data_root), download=False))
    assert len(s.train[0]) == 45_000 and len(s.val[0]) == 5_000
    assert s.eval_splits == (["val"] if test is None else ["val", "test"])


@pytest.mark.realdata
def test_the_data_folder_with_one_changed_pixel_fails_verification(data_root, tmp_path):
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    for f in (data_root / "cifar-10-batches-py").iterdir():
        (base / f.name).symlink_to(f)
    with open(data_root / "cifar-10-batches-py" / "data_batch_2", "rb") as f:
        entry = pickle.load(f, encoding="bytes")
    entry[b"data"][123, 456] ^= 1
    (base / "data_batch_2").unlink()
    with open(base / "data_batch_2", "wb") as f:
        pickle.dump(entry, f)
    with pytest.raises(
        DataError, match=r"data_batch_2 failed its checksum: content sha256 [0-9a-f]{64}, expected "
    ):
        load_cifar10(tmp_path, download=False, verify=True)


# --- Fashion-MNIST and CIFAR-100 --------------------------------------------------------------
def test_fashion_mnist_idx_files_load(tmp_path):
    write_idx(tmp_path)
    x, y, (tx, ty) = load_fashion_mnist(tmp_path, download=False, verify=False)
    assert (
        x.shape == (30, 1, 28, 28) and tx.shape == (10, 1, 28, 28) and str(x.dtype) == "torch.uint8"
    )
    assert y.dtype.is_floating_point is False and int(y.max()) < 10


def test_fashion_mnist_checksum_mismatch_names_file_and_both_digests(tmp_path):
    raw = write_idx(tmp_path)
    with pytest.raises(DataError) as ex:
        load_fashion_mnist(tmp_path, download=False, verify=True)
    msg = str(ex.value)
    assert (
        str(raw / "train-images-idx3-ubyte.gz") in msg
        and OFFICIAL_MD5["train-images-idx3-ubyte.gz"] in msg
    )
    assert "failed its checksum: md5 " in msg and "dataset.verify=false" in msg


@pytest.mark.parametrize(
    "damage, needle",
    [
        (lambda b: b[: len(b) // 2], "is truncated"),
        (lambda b: b"not gzip at all", "cannot be read or is corrupt"),
        (
            lambda b: gzip.compress(b"\x00\x00\x08\x01" + b"\x00" * 12),
            "is not an IDX file of images",
        ),
    ],
)
def test_damaged_fashion_mnist_files_name_the_file(tmp_path, damage, needle):
    raw = write_idx(tmp_path)
    f = raw / "train-images-idx3-ubyte.gz"
    f.write_bytes(damage(f.read_bytes()))
    with pytest.raises(DataError, match=needle) as ex:
        load_fashion_mnist(tmp_path, download=False, verify=False)
    assert str(f) in str(ex.value)


def test_missing_fashion_mnist_offline_says_how_to_fix(tmp_path):
    with pytest.raises(
        DataError, match="Fashion-MNIST not found: .* lacks train-images-idx3-ubyte.gz"
    ):
        load_fashion_mnist(tmp_path, download=False)


def test_cifar100_pickles_load_with_fine_labels(tmp_path):
    write_cifar100(tmp_path)
    x, y, (tx, ty) = load_cifar100(tmp_path, download=False, verify=False)
    assert x.shape == (20, 3, 32, 32) and tx.shape == (20, 3, 32, 32) and int(y.max()) < 100


def test_cifar100_labels_out_of_range_and_checksums_are_clear_errors(tmp_path):
    base = write_cifar100(tmp_path, labels=[100] * 20)
    with pytest.raises(
        DataError,
        match=r"CIFAR-100 file .*train has labels out of range \[100, 100\], expected 0..99",
    ):
        load_cifar100(tmp_path, download=False, verify=False)
    write_cifar100(tmp_path)
    with pytest.raises(
        DataError,
        match=r"CIFAR-100 file .*train failed its checksum: md5 \w+, official md5 16019d7e",
    ):
        load_cifar100(tmp_path, download=False, verify=True)
    assert base.is_dir()


@pytest.mark.realdata
def test_offline_fashion_mnist_loads_and_verifies(data_root):
    if not (data_root / RAW_FOLDER / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("the data folder has no FashionMNIST/raw")
    x, y, (tx, ty) = load_fashion_mnist(data_root, download=False, verify=True)
    assert x.shape == (60000, 1, 28, 28) and tx.shape == (10000, 1, 28, 28)
    assert y.bincount().tolist() == [6000] * 10 and ty.bincount().tolist() == [1000] * 10


def test_every_dataset_is_one_registry_row_with_its_yaml_and_reader():
    """A dataset is a row (title, shape, reader, folder, its optional test file), a YAML in
    conf/dataset/ and a reader: each row's reader is found by its name."""
    import importlib

    from resnet_repro.config import config_dir
    from resnet_repro.data.registry import DATASETS

    assert sorted(DATASETS) == sorted(p.stem for p in (config_dir() / "dataset").glob("*.yaml"))
    for row in DATASETS.values():
        module, _, fn = row.reader.partition(":")
        assert callable(getattr(importlib.import_module(f"resnet_repro.data.{module}"), fn)), (
            row.name
        )
        assert row.title and (row.optional_test is None or row.folder is not None)


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "fashion_mnist"])
def test_a_data_root_that_is_a_file_is_named_as_a_file(tmp_path, name):
    from resnet_repro.errors import DataError

    root = tmp_path / "data"
    root.write_text("not a folder")
    with pytest.raises(DataError, match="is a file, not a folder"):
        load_splits(DatasetConfig(name=name, root=str(root), download=False))

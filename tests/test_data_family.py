"""Fashion-MNIST and CIFAR-100 loaders: official layouts, the same integrity checks as CIFAR-10."""

import gzip
import pickle

import numpy as np
import pytest

from resnet_repro.data.cifar import CIFAR100_FOLDER, load_cifar100
from resnet_repro.data.fashion_mnist import FILES, OFFICIAL_MD5, RAW_FOLDER, load_fashion_mnist
from resnet_repro.errors import DataError


def write_idx(root, n_train=30, n_test=10, seed=0):
    """Fashion-MNIST-layout gzip'd IDX files under root/FashionMNIST/raw."""
    raw = root / RAW_FOLDER
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        img, lbl = FILES[split]
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        header = (2051).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (n, 28, 28))
        (raw / img).write_bytes(gzip.compress(header + x.tobytes()))
        (raw / lbl).write_bytes(gzip.compress((2049).to_bytes(4, "big") + n.to_bytes(4, "big") + y.tobytes()))
    return raw


def test_fashion_mnist_idx_files_load(tmp_path):
    write_idx(tmp_path)
    x, y, (tx, ty) = load_fashion_mnist(tmp_path, download=False, verify=False)
    assert x.shape == (30, 1, 28, 28) and tx.shape == (10, 1, 28, 28) and str(x.dtype) == "torch.uint8"
    assert y.dtype.is_floating_point is False and int(y.max()) < 10


def test_fashion_mnist_checksum_mismatch_names_file_and_both_digests(tmp_path):
    raw = write_idx(tmp_path)
    with pytest.raises(DataError) as ex:
        load_fashion_mnist(tmp_path, download=False, verify=True)
    msg = str(ex.value)
    assert str(raw / "train-images-idx3-ubyte.gz") in msg and OFFICIAL_MD5["train-images-idx3-ubyte.gz"] in msg
    assert "failed its checksum: md5 " in msg and "dataset.verify=false" in msg


@pytest.mark.parametrize("damage, needle", [
    (lambda b: b[: len(b) // 2], "is truncated"),
    (lambda b: b"not gzip at all", "cannot be read or is corrupt"),
    (lambda b: gzip.compress(b"\x00\x00\x08\x01" + b"\x00" * 12), "is not an IDX file of images"),
])
def test_damaged_fashion_mnist_files_name_the_file(tmp_path, damage, needle):
    raw = write_idx(tmp_path)
    f = raw / "train-images-idx3-ubyte.gz"
    f.write_bytes(damage(f.read_bytes()))
    with pytest.raises(DataError, match=needle) as ex:
        load_fashion_mnist(tmp_path, download=False, verify=False)
    assert str(f) in str(ex.value)


def test_missing_fashion_mnist_offline_says_how_to_fix(tmp_path):
    with pytest.raises(DataError, match="Fashion-MNIST not found: .* lacks train-images-idx3-ubyte.gz"):
        load_fashion_mnist(tmp_path, download=False)


def write_cifar100(root, n=20, labels=None):
    base = root / CIFAR100_FOLDER
    base.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in ("train", "test"):
        fine = labels if labels is not None else rng.integers(0, 100, n)
        entry = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),  # labels as Python ints
                 b"fine_labels": [int(v) for v in fine], b"coarse_labels": [int(v) for v in rng.integers(0, 20, n)]}
        with open(base / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    return base


def test_cifar100_pickles_load_with_fine_labels(tmp_path):
    write_cifar100(tmp_path)
    x, y, (tx, ty) = load_cifar100(tmp_path, download=False, verify=False)
    assert x.shape == (20, 3, 32, 32) and tx.shape == (20, 3, 32, 32) and int(y.max()) < 100


def test_cifar100_labels_out_of_range_and_checksums_are_clear_errors(tmp_path):
    base = write_cifar100(tmp_path, labels=[100] * 20)
    with pytest.raises(DataError, match=r"CIFAR-100 file .*train has labels out of range \[100, 100\], expected 0..99"):
        load_cifar100(tmp_path, download=False, verify=False)
    write_cifar100(tmp_path)
    with pytest.raises(DataError, match=r"CIFAR-100 file .*train failed its checksum: md5 \w+, official md5 16019d7e"):
        load_cifar100(tmp_path, download=False, verify=True)
    assert base.is_dir()


@pytest.mark.realdata
def test_offline_fashion_mnist_loads_and_verifies(data_root):
    if not (data_root / RAW_FOLDER / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("the offline copy has no FashionMNIST/raw")
    x, y, (tx, ty) = load_fashion_mnist(data_root, download=False, verify=True)
    assert x.shape == (60000, 1, 28, 28) and tx.shape == (10000, 1, 28, 28)
    assert y.bincount().tolist() == [6000] * 10 and ty.bincount().tolist() == [1000] * 10

"""CIFAR-10 and CIFAR-100 in the official python-pickle layout, verified before use.

Integrity: a file passes if its md5 is the official one (torchvision's table), or, for copies whose
pickles lack the per-image ``filenames`` lists, if its content digest
``sha256(data.tobytes() + uint8(labels).tobytes())`` equals the official content's.

torchvision is imported only where it is used, to download a missing copy and to take a file's
md5: importing ``torchvision.datasets`` imports all of torchvision (its models and ops, and
torch._dynamo with them), which a run on synthetic data, or a start that fails before it reads its
data, never needs. The folder and file names and the md5 table below are torchvision's
(tests/test_data.py checks that they still are).
"""

from __future__ import annotations

import hashlib
import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .fetch import fetch_missing
from .registry import DATASETS

log = logging.getLogger(__name__)

# torchvision's CIFAR10.base_folder, train_list and test_list
BASE_FOLDER = DATASETS["cifar10"].folder
OFFICIAL_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILE = DATASETS["cifar10"].optional_test
# Content digests of the official training batches (pixels + labels, filenames excluded).
CONTENT_SHA256 = {
    "data_batch_1": "ba52cb2d72c412975d7556bb26bd094956f1c002d1937053f6f1252f2ac17114",
    "data_batch_2": "350ff9000489d02f2568c0dcf4912ffdbae9e50932147905fb1b8159ad54f0ac",
    "data_batch_3": "a2b8653fc457df407af6c38b7e0d1a12530f3b5f81fce9f81516efd065daf722",
    "data_batch_4": "133e6292c377755074c305db8a684d48d5397372cb0aba34f52b4335eab35d97",
    "data_batch_5": "eb08cdc11fd1267ef871cf4790f193684b3f556d13317be68f4eb374a078ea87",
}
IMAGES_PER_FILE = 10000
NUM_CLASSES = 10


@dataclass(frozen=True)
class Spec:
    """What tells one CIFAR release's files apart."""

    name: str
    label_key: bytes
    num_classes: int
    md5: dict
    content_sha256: dict = field(default_factory=dict)

    @property
    def fix(self) -> str:
        return (
            f"Re-download {self.name} (delete the folder and set dataset.download=true) or point "
            f"dataset.root at a good copy."
        )


CIFAR10_SPEC = Spec("CIFAR-10", b"labels", 10, OFFICIAL_MD5, CONTENT_SHA256)
# torchvision's CIFAR100.base_folder, train_list and test_list
CIFAR100_FOLDER = DATASETS["cifar100"].folder
CIFAR100_MD5 = {
    "train": "16019d7e3df5f24257cddd939b257f8d",
    "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
}
CIFAR100_SPEC = Spec("CIFAR-100", b"fine_labels", 100, CIFAR100_MD5)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR batches' dicts of numpy arrays and nothing else."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return super().find_class(module, name)


def content_sha256(data: np.ndarray, labels) -> str:
    return hashlib.sha256(
        np.asarray(data, dtype=np.uint8).tobytes() + np.asarray(labels, dtype=np.uint8).tobytes()
    ).hexdigest()


def read_batch(
    path: Path, *, verify: bool = True, spec: Spec = CIFAR10_SPEC
) -> tuple[np.ndarray, np.ndarray]:
    """Read one batch file as (N,3,32,32) uint8 images and int64 labels, checking everything."""
    name, ds, fix = path.name, spec.name, spec.fix
    if verify:
        from torchvision.datasets.utils import calculate_md5  # on first use (module docstring)
    try:
        md5 = calculate_md5(str(path)) if verify else None
        with open(path, "rb") as f:
            entry = _ArrayUnpickler(f, encoding="bytes").load()
    except OSError as ex:
        raise DataError(f"{ds} file {path} cannot be read ({ex.strerror}). {fix}") from None
    except Exception as ex:  # a damaged pickle can fail in many ways
        raise DataError(
            f"{ds} file {path} is truncated or corrupt ({type(ex).__name__}: {ex}). {fix}"
        ) from None
    if not isinstance(entry, dict) or b"data" not in entry or spec.label_key not in entry:
        raise DataError(f"{ds} file {path} is not a {ds} batch (no data/labels). {fix}")
    data, labels = entry[b"data"], np.asarray(entry[spec.label_key])
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3072
    ):
        shape = getattr(data, "shape", None)
        raise DataError(
            f"{ds} file {path} has images of shape {shape}, expected (N, 3072) uint8. {fix}"
        )
    if labels.shape != (data.shape[0],):
        raise DataError(
            f"{ds} file {path} has {labels.shape[0]} labels for {data.shape[0]} images. {fix}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise DataError(
            f"{ds} file {path} has labels out of range [{labels.min()}, {labels.max()}], "
            f"expected 0..{spec.num_classes - 1}. {fix}"
        )
    if verify and md5 != spec.md5.get(name):
        expected = spec.content_sha256.get(name)
        digest = content_sha256(data, labels)
        if expected is None:
            raise DataError(
                f"{ds} file {path} failed its checksum: md5 {md5}, official md5 "
                f"{spec.md5.get(name)}. {fix} (dataset.verify=false skips this check.)"
            )
        if digest != expected:
            raise DataError(
                f"{ds} file {path} failed its checksum: content sha256 {digest}, expected "
                f"{expected} (md5 {md5}, official md5 {spec.md5.get(name)}). {fix} "
                f"(dataset.verify=false skips this check.)"
            )
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def ensure_cifar10(root: str | Path, download: bool) -> Path:
    """Return the batch folder under ``root``, downloading it with torchvision if asked."""
    base = Path(root) / BASE_FOLDER
    missing = [f for f in TRAIN_FILES if not (base / f).is_file()]
    if missing:

        def get():
            from torchvision.datasets import CIFAR10

            return CIFAR10(root=str(root), train=True, download=True)

        fetch_missing("CIFAR-10", base, ", ".join(missing), BASE_FOLDER, download, get)
    return base


def load_cifar10(root: str | Path, download: bool = True, verify: bool = True):
    """Load all training batches and the test batch when present.

    Returns ``(train_x, train_y, test)`` with uint8 images (N,3,32,32), int64 labels, and ``test``
    either ``(x, y)`` or ``None`` when the folder has no ``test_batch``.
    """
    base = ensure_cifar10(root, download)
    batches = [read_batch(base / f, verify=verify) for f in TRAIN_FILES]
    xs, ys = [b[0] for b in batches], [b[1] for b in batches]
    train_x = torch.from_numpy(np.concatenate(xs))
    train_y = torch.from_numpy(np.concatenate(ys))
    test = None
    if (base / TEST_FILE).is_file():
        tx, ty = read_batch(base / TEST_FILE, verify=verify)
        test = (torch.from_numpy(tx), torch.from_numpy(ty))
    return train_x, train_y, test


def read_cifar10(cfg):
    return load_cifar10(cfg.root, download=cfg.download, verify=cfg.verify)


def read_cifar100(cfg):
    return load_cifar100(cfg.root, download=cfg.download, verify=cfg.verify)


def load_cifar100(root: str | Path, download: bool = True, verify: bool = True):
    """``(train_x, train_y, (test_x, test_y))``: uint8 images (N,3,32,32), fine labels 0..99."""
    base = Path(root) / CIFAR100_FOLDER
    if not ((base / "train").is_file() and (base / "test").is_file()):

        def get():
            from torchvision.datasets import CIFAR100

            return CIFAR100(root=str(root), train=True, download=True)

        fetch_missing("CIFAR-100", base, "train/test", CIFAR100_FOLDER, download, get)
    x, y = read_batch(base / "train", verify=verify, spec=CIFAR100_SPEC)
    tx, ty = read_batch(base / "test", verify=verify, spec=CIFAR100_SPEC)
    return torch.from_numpy(x), torch.from_numpy(y), (torch.from_numpy(tx), torch.from_numpy(ty))

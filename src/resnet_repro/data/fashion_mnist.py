"""Fashion-MNIST from the official gzip'd IDX files (torchvision's layout), verified before use.

``<root>/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``: each file must have its
official md5 (torchvision's table); a truncated or damaged file, a wrong header, shape or label
range is one error naming the file. Missing files are downloaded with torchvision when allowed.

torchvision is imported only where it is used, to download and to take a file's md5 (cifar.py's
docstring says why); the md5 table below is torchvision's ``FashionMNIST.resources``
(tests/test_data.py checks that it still is).
"""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .fetch import fetch_missing
from .registry import DATASETS

log = logging.getLogger(__name__)

RAW_FOLDER = DATASETS["fashion_mnist"].folder
OFFICIAL_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
NUM_CLASSES, SIZE = 10, 28
FIX = (
    "Re-download Fashion-MNIST (delete the folder and set dataset.download=true) or point "
    "dataset.root at a good copy (e.g. dataset.root=/path/to/data)."
)


def _read_idx(path: Path, magic: int, verify: bool) -> np.ndarray:
    if verify:
        from torchvision.datasets.utils import calculate_md5  # on first use (module docstring)
    try:
        md5 = calculate_md5(str(path)) if verify else None
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except OSError as ex:  # also gzip's BadGzipFile
        raise DataError(
            f"Fashion-MNIST file {path} cannot be read or is corrupt ({ex}). {FIX}"
        ) from None
    except EOFError:
        raise DataError(f"Fashion-MNIST file {path} is truncated. {FIX}") from None
    if verify and md5 != OFFICIAL_MD5.get(path.name):
        raise DataError(
            f"Fashion-MNIST file {path} failed its checksum: md5 {md5}, official md5 "
            f"{OFFICIAL_MD5.get(path.name)}. {FIX} (dataset.verify=false skips this check.)"
        )
    ndim = 3 if magic == IMAGE_MAGIC else 1
    header = 4 * (1 + ndim)
    if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
        raise DataError(
            f"Fashion-MNIST file {path} is not an IDX file of "
            f"{'images' if ndim == 3 else 'labels'}. {FIX}"
        )
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if len(raw) - header != int(np.prod(dims)) or (ndim == 3 and dims[1:] != [SIZE, SIZE]):
        raise DataError(
            f"Fashion-MNIST file {path} holds {len(raw) - header} bytes for dimensions {dims}. "
            f"{FIX}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_split(raw: Path, split: str, verify: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One split as uint8 images (N,1,28,28) and int64 labels."""
    img_file, lbl_file = FILES[split]
    x = _read_idx(raw / img_file, IMAGE_MAGIC, verify)
    y = _read_idx(raw / lbl_file, LABEL_MAGIC, verify).astype(np.int64)
    if len(x) != len(y):
        raise DataError(
            f"Fashion-MNIST {split} split has {len(x)} images but {len(y)} labels ({raw}). {FIX}"
        )
    if y.size and y.max() >= NUM_CLASSES:
        raise DataError(
            f"Fashion-MNIST file {raw / lbl_file} has labels up to {y.max()}, expected 0..9. {FIX}"
        )
    return torch.from_numpy(x.copy())[:, None], torch.from_numpy(y)


def load_fashion_mnist(root: str | Path, download: bool = True, verify: bool = True):
    """``(train_x, train_y, (test_x, test_y))`` with uint8 images (N,1,28,28)."""
    raw = Path(root) / RAW_FOLDER
    names = [n for pair in FILES.values() for n in pair]
    missing = [n for n in names if not (raw / n).is_file()]
    if missing:

        def get():
            from torchvision.datasets import FashionMNIST

            return FashionMNIST(root=str(root), train=True, download=True)

        fetch_missing("Fashion-MNIST", raw, ", ".join(missing), RAW_FOLDER, download, get)
    x, y = read_split(raw, "train", verify)
    return x, y, read_split(raw, "test", verify)


def read_fashion_mnist(cfg):
    return load_fashion_mnist(cfg.root, download=cfg.download, verify=cfg.verify)

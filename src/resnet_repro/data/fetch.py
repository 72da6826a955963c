"""Getting a missing dataset: torchvision's download when allowed, else one clear error."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from ..errors import DataError

log = logging.getLogger(__name__)


def fetch_missing(
    name: str, where: Path, missing: str, folder: str, download: bool, get: Callable[[], object]
) -> None:
    """Download ``name`` with ``get()`` (a torchvision dataset with ``download=True``), or explain.

    ``where`` is the folder that lacks ``missing``; ``folder`` is what ``dataset.root`` must hold.
    """
    if not download:
        raise DataError(
            f"{name} not found: {where} lacks {missing}. Point dataset.root at the folder that "
            f"holds {folder}/ (e.g. dataset.root=/path/to/data), or set dataset.download=true on a "
            f"machine that is online."
        )
    log.info("%s not found under %s: downloading with torchvision", name, where)
    try:
        get()
    except Exception as ex:  # network errors come in many types
        raise DataError(
            f"{name} is not under {where} and the download failed ({type(ex).__name__}: {ex}). "
            f"Point dataset.root at a local copy (e.g. dataset.root=/path/to/data)."
        ) from None
